"""MobileNetV2 (torchvision's architecture, no weights) as a re-ID backbone with prunable inverted residuals.

Layout (Sandler et al. 2018; torchvision ``mobilenet_v2``): a 3x3/2 ConvBN-ReLU6 stem of 32 channels, the
inverted-residual groups (t, c, n, s) = (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
(6, 96, 3, 1), (6, 160, 3, ``last_stride``), (6, 320, 1, 1) and a 1x1 ConvBN-ReLU6 to 1,280 channels. The
width multiplier scales every channel count with torchvision's rule (:func:`make_divisible`, multiples of
8; the last conv never below 1,280). The re-ID head takes the GAP of the last conv's map. The "stage maps"
(relation KD) are the output of the c = 96 group (stride 16) and the last conv's map.

An inverted residual with expansion t > 1 has one prunable width, its hidden (expansion = depthwise)
channels: the gate is the pair of BatchNorms that channel passes (the expansion conv's and the depthwise
conv's ``(gamma, beta)``); a channel whose four numbers are 0 outputs exactly 0 into the projection, so
cutting it changes nothing. The t = 1 block's hidden channels are its input channels and are not prunable.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .blocks import BlockTrace, _like
from .convbn import ConvBN, gap
from .gates import Gate

#: torchvision's inverted-residual settings: expansion t, output channels c, repeats n, stride s
SETTINGS: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS, LAST_CHANNELS = 32, 1280
#: index of the group whose output is the stage-3 map (c = 96, stride 16) and of the last_stride group
STAGE3_GROUP, LAST_STRIDE_GROUP = 4, 5


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's channel rule: the nearest multiple of ``divisor`` (at least ``divisor``), never more than
    10 % below ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class InvertedResidual(nn.Module):
    """[1x1 expand ConvBN-ReLU6 (t > 1)] -> 3x3 depthwise ConvBN-ReLU6 (stride) -> 1x1 project ConvBN
    (+ input when stride 1 and in == out). ``widths`` = ``(hidden,)`` for t > 1, ``()`` for t = 1."""

    kind = "inverted"
    pcp = None
    pruner1 = pruner2 = compactor = None

    def pruners(self) -> tuple:
        """No PCP pruners (its pruning methods cut the BN gates)."""
        return ()

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int,
                 widths: Optional[Sequence[int]] = None, deploy: bool = False):
        super().__init__()
        self.in_ch, self.out_ch, self.stride, self.expand_ratio = in_ch, out_ch, stride, expand_ratio
        self.use_res = stride == 1 and in_ch == out_ch
        default = int(round(in_ch * expand_ratio))
        self.planes = default  # the unpruned hidden width
        if expand_ratio == 1:
            if widths not in (None, (), []):
                raise ValueError(f"an inverted residual with expansion 1 has no prunable width, got {widths}")
            hidden = in_ch
            self.expand: Optional[ConvBN] = None
        else:
            w = tuple(int(v) for v in widths) if widths is not None else (default,)
            if len(w) != 1 or w[0] < 1:
                raise ValueError(f"inverted residual widths must be (hidden,) with hidden >= 1, got {widths}")
            hidden = w[0]
            self.expand = ConvBN(in_ch, hidden, 1, relu6=True, deploy=deploy)
        self.dw = ConvBN(hidden, hidden, 3, stride=stride, groups=hidden, relu6=True, deploy=deploy)
        self.project = ConvBN(hidden, out_ch, 1, deploy=deploy)

    @property
    def widths(self) -> Tuple[int, ...]:
        return (self.dw.conv.out_channels,) if self.expand is not None else ()

    # ---------------------------------------------------------------- compression
    def gates(self) -> Tuple[Gate, ...]:
        """One gate for t > 1 (the hidden channels: expansion-BN and depthwise-BN ``(gamma, beta)``)."""
        if self.expand is None or not isinstance(self.dw.bn, nn.BatchNorm2d):
            return ()
        e, d = self.expand.bn, self.dw.bn
        return (Gate("bn_hidden", 0, 2, ((e.weight, 0), (e.bias, 0), (d.weight, 0), (d.bias, 0))),)

    def gate_convs(self) -> Tuple[Tuple[Tuple[ConvBN, ...], Tuple[ConvBN, ...]], ...]:
        """``(producers, consumers)`` of the hidden gate: the expansion and depthwise convs' outputs, the
        projection's inputs (what one channel costs, :mod:`deap_lib.budget`)."""
        if self.expand is None:
            return ()
        return (((self.expand, self.dw), (self.project,)),)

    @torch.no_grad()
    def pruned(self, keep: Sequence[Tensor]) -> "InvertedResidual":
        """A copy keeping hidden channels ``keep[0]`` (expansion rows, depthwise channels, projection
        columns); a t = 1 block is copied as it is."""
        if self.project.deploy:
            raise ValueError("pruned: cut a training-form block (deploy blocks have no gates)")
        if self.expand is None:
            return self._copy()
        k = keep[0].to(self.dw.conv.weight.device)
        new = _like(InvertedResidual(self.in_ch, self.out_ch, self.stride, self.expand_ratio, widths=(len(k),)), self)
        new.expand = self.expand.sliced(out_idx=k)
        new.dw = self.dw.sliced(out_idx=k)
        new.project = self.project.sliced(in_idx=k)
        return new.train(self.training)

    def _copy(self) -> "InvertedResidual":
        new = _like(InvertedResidual(self.in_ch, self.out_ch, self.stride, self.expand_ratio), self)
        new.load_state_dict(self.state_dict())
        return new.train(self.training)

    @torch.no_grad()
    def fused(self) -> "InvertedResidual":
        """The deploy form: every BN folded into a biased conv (float64 products)."""
        new = _like(InvertedResidual(self.in_ch, self.out_ch, self.stride, self.expand_ratio,
                                     widths=self.widths or None, deploy=True), self)
        for name in ("expand", "dw", "project"):
            src = getattr(self, name)
            if src is not None:
                getattr(new, name).set_folded(*src.fold())
        return new.eval()

    # ---------------------------------------------------------------- forward
    def forward_trace(self, x: Tensor) -> BlockTrace:
        """``out`` = ``sum`` (no final activation in MobileNetV2); ``mid`` = ``gated`` = the depthwise
        conv's BN-ed output before its ReLU6."""
        h = self.expand(x) if self.expand is not None else x
        mid = self.dw.pre_activation(h)
        s = self.project(torch.clamp(mid, 0.0, 6.0))
        if self.use_res:
            s = s + x
        return BlockTrace(s, s, mid, mid)

    def forward(self, x: Tensor) -> Tensor:
        h = self.expand(x) if self.expand is not None else x
        out = self.project(self.dw(h))
        return out + x if self.use_res else out


class MobileNetV2Backbone(nn.Module):
    """Stem + inverted residuals + last 1x1 conv; ``forward`` returns ``(stage3, stage4, pooled)`` like
    :class:`~deap_lib.models.resnet.ResNetBackbone`."""

    def __init__(self, width: float = 1.0, last_stride: int = 2, widths: Optional[Sequence[Sequence[int]]] = None,
                 deploy: bool = False, pcp: Optional[str] = None):
        super().__init__()
        if pcp is not None:
            raise ValueError(f"mobilenet_v2 has no PCP units (pcp must be None, got {pcp!r}); its pruning methods "
                             "gate the BatchNorms of the inverted residuals' hidden channels")
        if width <= 0:
            raise ValueError(f"width multiplier must be > 0, got {width}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        n_blocks = sum(n for _, _, n, _ in SETTINGS)
        if widths is not None and len(widths) != n_blocks:
            raise ValueError(f"widths must list one entry per block ({n_blocks} blocks), got {len(widths)}")
        in_ch = make_divisible(STEM_CHANNELS * width)
        self.stem = ConvBN(3, in_ch, 3, stride=2, relu6=True, deploy=deploy)
        blocks, k, self.stage3_index = [], 0, -1
        for g, (t, c, n, s) in enumerate(SETTINGS):
            out_ch = make_divisible(c * width)
            stride = last_stride if g == LAST_STRIDE_GROUP else s
            for i in range(n):
                w = None if widths is None else widths[k]
                blocks.append(InvertedResidual(in_ch, out_ch, stride if i == 0 else 1, t, widths=w, deploy=deploy))
                in_ch, k = out_ch, k + 1
            if g == STAGE3_GROUP:
                self.stage3_index = k - 1
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = make_divisible(LAST_CHANNELS * max(1.0, width))
        self.last = ConvBN(in_ch, self.out_channels, 1, relu6=True, deploy=deploy)

    def stages(self) -> List[nn.Sequential]:
        return [self.blocks]

    def fixed_convs(self) -> List[Tuple[str, ConvBN]]:
        """The ConvBNs outside the blocks (never cut; folded at deploy)."""
        return [("stem", self.stem), ("last", self.last)]

    def stem_forward(self, x: Tensor) -> Tensor:
        """The input of the first inverted residual."""
        return self.stem(x)

    def block_groups(self) -> List[List[int]]:
        """Indices of the blocks of each inverted-residual group (t, c, n, s): the block-wise phase's units
        (the last 1x1 conv follows the last group and is not one)."""
        out, k = [], 0
        for _, _, n, _ in SETTINGS:
            out.append(list(range(k, k + n)))
            k += n
        return out

    def named_blocks(self) -> Iterator[Tuple[str, InvertedResidual]]:
        for i, block in enumerate(self.blocks):
            yield f"blocks.{i}", block

    def forward(self, x: Tensor, collect: bool = False, conv2: bool = True
                ) -> Tuple[Tensor, Tensor, Dict[str, List[Tensor]]]:
        x = self.stem(x)
        pooled: Dict[str, List[Tensor]] = {"sum": [], "mid": [], "gated": []} if collect else {}
        s3 = x
        for i, block in enumerate(self.blocks):
            if collect:
                t = block.forward_trace(x)
                x = t.out
                pooled["sum"].append(gap(t.sum))
                if conv2:
                    pooled["mid"].append(gap(t.mid))
                    pooled["gated"].append(pooled["mid"][-1])
            else:
                x = block(x)
            if i == self.stage3_index:
                s3 = x
        return s3, self.last(x), pooled
