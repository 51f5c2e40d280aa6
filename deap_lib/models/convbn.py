"""``ConvBN`` (conv -> BatchNorm -> optional ReLU), the bias-free 1x1 pruner convolution and the stem max-pool."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBN(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> optional ReLU (docs/methods/deap.rst §Backbone), or ReLU6 (``relu6``, MobileNetV2).
    ``groups``: 1, or the channel count for a depthwise conv (``in_ch == out_ch == groups``).

    ``deploy=True`` builds the BN-folded form instead: a Conv2d *with* bias and ``bn = nn.Identity()``,
    so training-form and deploy-form networks share one module tree (``.conv``, ``.bn``).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                 padding: Optional[int] = None, relu: bool = False, deploy: bool = False, groups: int = 1,
                 relu6: bool = False):
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        if groups != 1 and not (groups == in_ch == out_ch):
            raise ValueError(f"ConvBN: groups must be 1 or the channel count (depthwise), got groups={groups} for "
                             f"{in_ch} -> {out_ch} channels")
        if relu and relu6:
            raise ValueError("ConvBN: relu and relu6 are exclusive")
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=deploy,
                              groups=groups)
        self.bn: nn.Module = nn.Identity() if deploy else nn.BatchNorm2d(out_ch)
        self.relu, self.relu6 = relu, relu6
        self.deploy = deploy

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        if self.relu6:
            return F.hardtanh_(x, 0.0, 6.0)
        return torch.relu_(x) if self.relu else x

    def pre_activation(self, x: Tensor) -> Tensor:
        """``BN(conv(x))`` without the ReLU (a plain block's conv2-level feature, docs/methods/cdd.rst §Architecture)."""
        return self.bn(self.conv(x))

    def extra_repr(self) -> str:
        return f"relu={self.relu}, deploy={self.deploy}" + (", relu6=True" if self.relu6 else "")

    @torch.no_grad()
    def fold(self) -> Tuple[Tensor, Tensor]:
        """``(W', b')`` in float64 with the BatchNorm (eval statistics, its own eps) folded in:
        ``W' = W * gamma / sqrt(var + eps)``, ``b' = beta + (b - mu) * gamma / sqrt(var + eps)``. A deploy
        ConvBN returns its own weight and bias."""
        w = self.conv.weight.double()
        b = self.conv.bias.double() if self.conv.bias is not None else torch.zeros(
            w.shape[0], dtype=torch.float64, device=w.device)
        bn = self.bn
        if isinstance(bn, nn.BatchNorm2d):
            if bn.running_mean is None:
                raise ValueError("fold: BatchNorm2d without running statistics cannot be folded")
            scale = torch.rsqrt(bn.running_var.double() + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight.double()
            shift = bn.bias.double() if bn.bias is not None else torch.zeros_like(scale)
            w = w * scale.reshape(-1, 1, 1, 1)
            b = shift + (b - bn.running_mean.double()) * scale
        elif not isinstance(bn, nn.Identity):
            raise TypeError(f"fold: unsupported normalisation {type(bn).__name__}")
        return w, b

    @torch.no_grad()
    def set_folded(self, w: Tensor, b: Tensor) -> "ConvBN":
        """Load a folded ``(W, b)`` into this deploy ConvBN (cast to its dtype); returns ``self``."""
        if not self.deploy or tuple(self.conv.weight.shape) != tuple(w.shape):
            raise RuntimeError(f"set_folded: deploy conv {tuple(self.conv.weight.shape)} (deploy={self.deploy}) "
                               f"cannot take a weight of shape {tuple(w.shape)}")
        self.conv.weight.copy_(w.to(self.conv.weight.dtype))
        self.conv.bias.copy_(b.reshape(-1).to(self.conv.bias.dtype))
        return self

    @torch.no_grad()
    def sliced(self, out_idx: Optional[Tensor] = None, in_idx: Optional[Tensor] = None) -> "ConvBN":
        """A narrower copy keeping output channels ``out_idx`` (conv rows, bias and BN entries) and input
        channels ``in_idx`` (conv columns); ``None`` keeps all. A depthwise conv keeps channels ``out_idx``
        (its inputs are the same channels; ``in_idx`` must be None)."""
        w = self.conv.weight
        c = self.conv
        depthwise = c.groups > 1
        if depthwise and in_idx is not None:
            raise ValueError("sliced: a depthwise conv's inputs are its output channels; give out_idx only")
        rows = torch.arange(w.shape[0]) if out_idx is None else out_idx
        cols = (torch.arange(w.shape[1]) if in_idx is None else in_idx) if not depthwise else torch.arange(1)
        rows, cols = rows.to(w.device), cols.to(w.device)
        n_in = len(rows) if depthwise else len(cols)
        new = ConvBN(n_in, len(rows), c.kernel_size[0], stride=c.stride[0], padding=c.padding[0],
                     relu=self.relu, deploy=self.deploy, groups=len(rows) if depthwise else 1,
                     relu6=self.relu6).to(device=w.device, dtype=w.dtype)
        new.conv.weight.copy_(w[rows][:, cols])
        if c.bias is not None:
            new.conv.bias.copy_(c.bias[rows])
        if isinstance(self.bn, nn.BatchNorm2d):
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(new.bn, name).copy_(getattr(self.bn, name)[rows])
            new.bn.num_batches_tracked.copy_(self.bn.num_batches_tracked)
            new.bn.eps, new.bn.momentum = self.bn.eps, self.bn.momentum
        return new.train(self.training)


class _NHWCMean(torch.autograd.Function):
    """``mean`` over (H, W) whose gradient comes back channels-last (``mean``'s is an expanded NCHW view,
    and adding it to the NHWC gradient of the same map made every BN / ReLU / conv backward behind it take
    a mixed-layout path: a cpu-preset DEAP step 1.6x slower)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        ctx.shape = t.shape
        return t.mean(dim=(2, 3))

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        b, c, h, w = ctx.shape
        return (g / (h * w)).view(b, c, 1, 1).expand(b, c, h, w).contiguous(memory_format=torch.channels_last)


class _NHWCGrad(torch.autograd.Function):
    """Identity whose gradient is made channels-last (a loss that flattens an NHWC map sends back NCHW)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        return t.view_as(t)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        return g.contiguous(memory_format=torch.channels_last)


def _nhwc_training(t: Tensor) -> bool:
    return t.requires_grad and t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(
        memory_format=torch.channels_last)


def nhwc_grad(t: Tensor) -> Tensor:
    """``t`` itself; for a channels-last map that takes gradients, one whose gradient arrives channels-last
    whatever the consumer does with it (the stage maps the relation losses flatten)."""
    return _NHWCGrad.apply(t) if _nhwc_training(t) else t


def gap(t: Tensor) -> Tensor:
    """Global average pool over (H, W) of a (B, C, H, W) map -> (B, C): ``mean``; for a channels-last map
    that takes gradients, with its gradient channels-last too (:class:`_NHWCMean`)."""
    if _nhwc_training(t):
        return _NHWCMean.apply(t)
    return t.mean(dim=(2, 3))


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

    Training mode: ``F.max_pool2d`` (on CPU through its channels-last kernel, which routes the same
    gradients and is faster than the NCHW one; the output keeps the input's layout). Eval mode: the same values computed exactly as a separable maximum of
    strided slices of the (-inf)-padded map, which avoids PyTorch's CPU NCHW ``max_pool2d_with_indices``
    kernel (about 6x slower on the stem map at batch 32) and exports to ONNX as Pad/Slice/Max.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training:  # the channels-last kernel: the same values and gradients, ~1.7x faster on CPU
            if x.device.type != "cpu" or x.dim() != 4:
                return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
            nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            y = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), kernel_size=3, stride=2, padding=1)
            return y if nhwc else y.contiguous()
        x = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
        x = torch.maximum(torch.maximum(x[:, :, :, 0:-2:2], x[:, :, :, 1:-1:2]), x[:, :, :, 2::2])
        return torch.maximum(torch.maximum(x[:, :, 0:-2:2], x[:, :, 1:-1:2]), x[:, :, 2::2])

    def extra_repr(self) -> str:
        return "kernel_size=3, stride=2, padding=1"
