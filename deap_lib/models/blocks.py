"""Residual blocks (torchvision v1.5 layout) with optional PCP units.

Notation (METHODS 1.2): ``planes`` = the block's nominal width; ``C1`` = conv1's output width, ``C3`` =
conv3's input width (both = ``planes`` before pruning). ``widths`` is the tuple of a block's prunable
internal widths: ``(C1, C3)`` for a bottleneck, ``(C,)`` for a basic block. A pruned (compact) model is
rebuilt from its per-block ``widths``; everything else follows from (arch, width multiplier).

PCP variants (``pcp``):

* ``None``  - teacher / plain block (and, with ``deploy=True``, the absorbed form: BN folded into biased
  convs, merged 3x3 conv in ``conv2``).
* ``"deap"`` - two identity-initialised bias-free 1x1 pruners around the BN-ed 3x3 conv (METHODS 1.2).
* ``"cdd"``  - a single ``compactor`` after conv2 + BN2, before the ReLU (METHODS 2.1).

The residual sum ``s = branch(x) + shortcut(x)`` is returned together with the block output ``relu(s)``
so the network can record GAP(s) (the per-block DL feature) without storing state on the module.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .convbn import ConvBN, make_pruner

PCP_KINDS = (None, "deap", "cdd")


def _check_pcp(pcp: Optional[str], deploy: bool) -> None:
    if pcp not in PCP_KINDS:
        raise ValueError(f"pcp must be one of {PCP_KINDS}, got {pcp!r}")
    if deploy and pcp is not None:
        raise ValueError("deploy=True builds the absorbed (BN-folded, pruner-free) form; it needs pcp=None")


def _shortcut(in_ch: int, out_ch: int, stride: int, deploy: bool) -> nn.Module:
    if stride != 1 or in_ch != out_ch:
        return ConvBN(in_ch, out_ch, 1, stride=stride, padding=0, relu=False, deploy=deploy)
    return nn.Identity()


def _check_widths(widths: Optional[Sequence[int]], default: Tuple[int, ...], kind: str) -> Tuple[int, ...]:
    if widths is None:
        return default
    w = tuple(int(v) for v in widths)
    if len(w) != len(default) or any(v < 1 for v in w):
        raise ValueError(f"{kind} block widths must be {len(default)} integers >= 1 "
                         f"({'(C1, C3)' if len(default) == 2 else '(C,)'}), got {tuple(widths)}")
    return w


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 bottleneck, expansion 4.

    * ``pcp=None``:   conv1(BN,ReLU) -> conv2 3x3 C1->C3 (BN,ReLU) -> conv3(BN) -> +shortcut -> ReLU.
    * ``pcp="deap"``: conv1(BN,ReLU) -> pruner1 C1->planes -> conv2 3x3 planes->planes (BN) ->
      pruner2 planes->C3 -> ReLU -> conv3(BN) -> +shortcut -> ReLU. Pruner1's columns are conv1's output
      channels; pruner2's rows are conv3's input channels.
    * ``pcp="cdd"``:  conv1(BN,ReLU) -> conv2 3x3 C1->planes (BN) -> compactor planes->C3 -> ReLU ->
      conv3(BN) -> +shortcut -> ReLU. Only C3 is prunable (compactor rows).
    """

    expansion = 4
    kind = "bottleneck"

    def __init__(self, in_ch: int, planes: int, stride: int = 1, pcp: Optional[str] = None,
                 widths: Optional[Sequence[int]] = None, deploy: bool = False):
        super().__init__()
        _check_pcp(pcp, deploy)
        c1, c3 = _check_widths(widths, (planes, planes), "bottleneck")
        out_ch = planes * self.expansion
        self.pcp, self.planes, self.stride, self.in_ch, self.out_ch = pcp, planes, stride, in_ch, out_ch
        self.pruner1: Optional[nn.Conv2d] = None
        self.pruner2: Optional[nn.Conv2d] = None
        self.compactor: Optional[nn.Conv2d] = None
        self.conv1 = ConvBN(in_ch, c1, 1, relu=True, deploy=deploy)
        if pcp == "deap":
            self.pruner1 = make_pruner(c1, planes)
            self.conv2 = ConvBN(planes, planes, 3, stride=stride, relu=False)
            self.pruner2 = make_pruner(planes, c3)
        elif pcp == "cdd":
            self.conv2 = ConvBN(c1, planes, 3, stride=stride, relu=False)
            self.compactor = make_pruner(planes, c3)
        else:
            self.conv2 = ConvBN(c1, c3, 3, stride=stride, relu=True, deploy=deploy)
        self.conv3 = ConvBN(c3, out_ch, 1, relu=False, deploy=deploy)
        self.shortcut = _shortcut(in_ch, out_ch, stride, deploy)

    @property
    def widths(self) -> Tuple[int, int]:
        """Current ``(C1, C3)``."""
        return (self.conv1.conv.out_channels, self.conv3.conv.in_channels)

    def forward_with_sum(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Return ``(relu(s), s)`` with ``s`` the residual sum before the final ReLU."""
        out = self.conv1(x)
        if self.pruner1 is not None:
            out = self.pruner1(out)
        out = self.conv2(out)
        if self.pruner2 is not None:
            out = torch.relu(self.pruner2(out))
        elif self.compactor is not None:
            out = torch.relu(self.compactor(out))
        s = self.conv3(out) + self.shortcut(x)
        return torch.relu(s), s

    def forward(self, x: Tensor) -> Tensor:
        """Block output only; the residual add and final ReLU run in place (no copy of ``s`` is kept)."""
        out = self.conv1(x)
        if self.pruner1 is not None:
            out = self.pruner1(out)
        out = self.conv2(out)
        if self.pruner2 is not None:
            out = torch.relu_(self.pruner2(out))
        elif self.compactor is not None:
            out = torch.relu_(self.compactor(out))
        return torch.relu_(self.conv3(out).add_(self.shortcut(x)))


class BasicBlock(nn.Module):
    """3x3 (stride) -> 3x3 basic block, expansion 1.

    * ``pcp=None``: conv1 3x3 in->C (BN,ReLU) -> conv2 3x3 C->planes (BN) -> +shortcut -> ReLU.
    * ``pcp="deap"`` / ``"cdd"``: a basic block has a single internal width (conv1's outputs = conv2's
      inputs), so it gets a single pruner, placed where it is absorbable: after conv1 + BN1, before the
      ReLU: conv1 3x3 in->planes (BN) -> ``pruner2`` (deap) / ``compactor`` (cdd) planes->C -> ReLU ->
      conv2 3x3 C->planes (BN) -> +shortcut -> ReLU. It is an *output-side* pruner like DEAP's pruner2:
      its rows are conv2's input channels (group lasso on row norms, counted in ``lasso2``); at absorption
      it merges into conv1 (``K = P . K1``, ``b = P b1``). ``pruner1`` is ``None`` in basic blocks.
    """

    expansion = 1
    kind = "basic"

    def __init__(self, in_ch: int, planes: int, stride: int = 1, pcp: Optional[str] = None,
                 widths: Optional[Sequence[int]] = None, deploy: bool = False):
        super().__init__()
        _check_pcp(pcp, deploy)
        (c,) = _check_widths(widths, (planes,), "basic")
        out_ch = planes * self.expansion
        self.pcp, self.planes, self.stride, self.in_ch, self.out_ch = pcp, planes, stride, in_ch, out_ch
        self.pruner1: Optional[nn.Conv2d] = None
        self.pruner2: Optional[nn.Conv2d] = None
        self.compactor: Optional[nn.Conv2d] = None
        self.conv3 = None
        if pcp is None:
            self.conv1 = ConvBN(in_ch, c, 3, stride=stride, relu=True, deploy=deploy)
        else:
            self.conv1 = ConvBN(in_ch, planes, 3, stride=stride, relu=False)
            if pcp == "deap":
                self.pruner2 = make_pruner(planes, c)
            else:
                self.compactor = make_pruner(planes, c)
        self.conv2 = ConvBN(c, out_ch, 3, relu=False, deploy=deploy)
        self.shortcut = _shortcut(in_ch, out_ch, stride, deploy)

    @property
    def widths(self) -> Tuple[int]:
        """Current ``(C,)``."""
        return (self.conv2.conv.in_channels,)

    def forward_with_sum(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        out = self.conv1(x)
        pruner = self.pruner2 if self.pruner2 is not None else self.compactor
        if pruner is not None:
            out = torch.relu(pruner(out))
        s = self.conv2(out) + self.shortcut(x)
        return torch.relu(s), s

    def forward(self, x: Tensor) -> Tensor:
        """Block output only; the residual add and final ReLU run in place."""
        out = self.conv1(x)
        pruner = self.pruner2 if self.pruner2 is not None else self.compactor
        if pruner is not None:
            out = torch.relu_(pruner(out))
        return torch.relu_(self.conv2(out).add_(self.shortcut(x)))
