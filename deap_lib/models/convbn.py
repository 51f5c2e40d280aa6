"""``ConvBN`` (conv -> BatchNorm -> optional ReLU), the bias-free 1x1 pruner convolution and the stem max-pool."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBN(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> optional ReLU (METHODS 1.1).

    ``deploy=True`` builds the BN-folded form instead: a Conv2d *with* bias and ``bn = nn.Identity()``,
    so training-form and deploy-form networks share one module tree (``.conv``, ``.bn``).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                 padding: Optional[int] = None, relu: bool = False, deploy: bool = False):
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=deploy)
        self.bn: nn.Module = nn.Identity() if deploy else nn.BatchNorm2d(out_ch)
        self.relu = relu
        self.deploy = deploy

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return torch.relu_(x) if self.relu else x

    def extra_repr(self) -> str:
        return f"relu={self.relu}, deploy={self.deploy}"


def make_pruner(in_ch: int, out_ch: int) -> nn.Conv2d:
    """A PCP pruner: bias-free 1x1 Conv2d ``in_ch -> out_ch``, initialised to the identity
    (``W[o, c] = 1`` iff ``o == c``; the rectangular identity when the widths differ)."""
    pruner = nn.Conv2d(in_ch, out_ch, 1, bias=False)
    with torch.no_grad():
        pruner.weight.zero_()
        n = min(in_ch, out_ch)
        idx = torch.arange(n)
        pruner.weight[idx, idx, 0, 0] = 1.0
    return pruner


class StemMaxPool(nn.Module):
    """Max-pool 3x3, stride 2, padding 1 (the ResNet stem's).

    Training mode: ``F.max_pool2d``. Eval mode: the same values computed exactly as a separable maximum of
    strided slices of the (-inf)-padded map, which avoids PyTorch's CPU NCHW ``max_pool2d_with_indices``
    kernel (about 6x slower on the stem map at batch 32) and exports to ONNX as Pad/Slice/Max.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        x = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
        x = torch.maximum(torch.maximum(x[:, :, :, 0:-2:2], x[:, :, :, 1:-1:2]), x[:, :, :, 2::2])
        return torch.maximum(torch.maximum(x[:, :, 0:-2:2], x[:, :, 1:-1:2]), x[:, :, 2::2])

    def extra_repr(self) -> str:
        return "kernel_size=3, stride=2, padding=1"
