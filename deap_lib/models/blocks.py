"""Residual blocks (torchvision v1.5 layout) with optional PCP units.

Notation (docs/methods/deap.rst §PCP unit): ``planes`` = the block's nominal width; ``C1`` = conv1's output width, ``C3`` =
conv3's input width (both = ``planes`` before pruning). ``widths`` is the tuple of a block's prunable
internal widths: ``(C1, C3)`` for a bottleneck, ``(C,)`` for a basic block. A pruned (compact) model is
rebuilt from its per-block ``widths``; everything else follows from (arch, width multiplier).

PCP variants (``pcp``, a name of the :data:`~deap_lib.models.pcp_kinds.PCP_KINDS` registry):

* ``None``  - teacher / plain block (and, with ``deploy=True``, the absorbed form: BN folded into biased
  convs, merged 3x3 conv in ``conv2``).
* ``"deap"`` - two identity-initialised bias-free 1x1 pruners around the BN-ed 3x3 conv (docs/methods/deap.rst §PCP unit).
* ``"cdd"``  - a single ``compactor`` after conv2 + BN2, before the ReLU (docs/methods/cdd.rst §Architecture).
* any other registered :class:`~deap_lib.models.pcp_kinds.PcpKind`: its input-side and / or output-side
  pruner, built, cut, fused and run by the same code.

The residual sum ``s = branch(x) + shortcut(x)`` is returned together with the block output ``relu(s)``
so the network can record GAP(s) (the per-block DL feature) without storing state on the module;
:meth:`forward_trace` also returns the two conv2-level maps CDD uses (:class:`BlockTrace`).

Every block owns its compression, in the spirit of RepVGG's per-block deploy switch: :meth:`gates` lists
its prunable channel groups (:class:`~deap_lib.models.gates.Gate`: DEAP pruners, the CDD compactor, or the
BN ``(gamma, beta)`` pairs of a plain block), :meth:`pruned` returns a narrower copy keeping given channels
and :meth:`fused` the deploy form (BN folded, pruners merged into the 3x3 conv, float64 products).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .convbn import ConvBN, make_pruner
from .gates import Gate
from .pcp_kinds import PCP_KINDS, PcpKind


class BlockTrace(NamedTuple):
    """One block's training-time outputs (all maps, pre-ReLU where it says so).

    * ``out``: the block output ``relu(s)``; ``sum``: the residual sum ``s`` (DEAP's DL feature).
    * ``mid``: the BN-ed output of the internal 3x3 conv, before any output-side pruner and before its ReLU
      (CDD's ``feature_map``, the FIT feature; the teacher's conv2 + BN2 output).
    * ``gated``: the output-side pruner / compactor's output before the ReLU (CDD's ``mask_map``, the vector
      gradient resetting ranks channels by); ``mid`` itself for a block without one.
    """

    out: Tensor
    sum: Tensor
    mid: Tensor
    gated: Tensor


def _check_pcp(pcp: Optional[str], deploy: bool) -> Optional[PcpKind]:
    """The registered kind ``pcp`` names (None for a plain block); a ValueError listing the kinds otherwise."""
    if pcp is not None and pcp not in PCP_KINDS:
        raise ValueError(f"pcp must be None or a registered PCP kind ({', '.join(PCP_KINDS.names())}), got {pcp!r}")
    if deploy and pcp is not None:
        raise ValueError("deploy=True builds the absorbed (BN-folded, pruner-free) form; it needs pcp=None")
    return None if pcp is None else PCP_KINDS.get(pcp)


def _shortcut(in_ch: int, out_ch: int, stride: int, deploy: bool) -> nn.Module:
    if stride != 1 or in_ch != out_ch:
        return ConvBN(in_ch, out_ch, 1, stride=stride, padding=0, relu=False, deploy=deploy)
    return nn.Identity()


def _check_plain(block: nn.Module, fn: str) -> None:
    if block.pcp is not None:
        raise ValueError(f"{fn}: needs a plain or deploy block (pcp=None), got pcp={block.pcp!r}; cost a PCP "
                         "network through its deploy form")


def _bn_gate(name: str, index: int, side: int, cb: ConvBN) -> Gate:
    return Gate(name, index, side, ((cb.bn.weight, 0), (cb.bn.bias, 0)))


def _merge_in(k: Tensor, pruner: nn.Conv2d) -> Tensor:
    """Input-side merge ``K_a[o, c] = sum_m K[o, m] P[m, c]`` (float64; exact with zero padding: P has no bias)."""
    return torch.einsum("omhw,mc->ochw", k, pruner.weight.double()[:, :, 0, 0])


def _merge_out(k: Tensor, b: Tensor, pruner: nn.Conv2d) -> Tuple[Tensor, Tensor]:
    """Output-side merge ``K[o', c] = sum_o P[o', o] K[o, c]``, ``b = P b`` (shape (C',), never squeezed)."""
    p = pruner.weight.double()[:, :, 0, 0]
    return torch.einsum("po,ochw->pchw", p, k), (p @ b).reshape(-1)


def _like(new: nn.Module, ref: nn.Module) -> nn.Module:
    """``new`` on ``ref``'s device and dtype, in its train/eval mode."""
    w = next(ref.parameters())
    return new.to(device=w.device, dtype=w.dtype).train(ref.training)


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
    * another kind: its ``pre`` pruner (C1->planes) before conv2 and / or its ``post`` pruner (planes->C3)
      after it; a width without a pruner is conv2's own (C1 in, C3 out) and is not prunable.
    """

    expansion = 4
    kind = "bottleneck"

    def __init__(self, in_ch: int, planes: int, stride: int = 1, pcp: Optional[str] = None,
                 widths: Optional[Sequence[int]] = None, deploy: bool = False):
        super().__init__()
        kind = _check_pcp(pcp, deploy)
        c1, c3 = _check_widths(widths, (planes, planes), "bottleneck")
        out_ch = planes * self.expansion
        self.pcp, self.planes, self.stride, self.in_ch, self.out_ch = pcp, planes, stride, in_ch, out_ch
        self.pruner1: Optional[nn.Conv2d] = None  # the built-in kinds' pruners (None where absent)
        self.pruner2: Optional[nn.Conv2d] = None
        self.compactor: Optional[nn.Conv2d] = None
        self._pre_name = kind.pre if kind is not None else None
        self._post_name = kind.post if kind is not None else None
        self.conv1 = ConvBN(in_ch, c1, 1, relu=True, deploy=deploy)
        if kind is None:
            self.conv2 = ConvBN(c1, c3, 3, stride=stride, relu=True, deploy=deploy)
        else:  # created in this order: conv1, pre, conv2, post (the initialisation's random draws follow it)
            if kind.pre is not None:
                setattr(self, kind.pre, make_pruner(c1, planes))
            self.conv2 = ConvBN(planes if kind.pre else c1, planes if kind.post else c3, 3, stride=stride,
                                relu=False)
            if kind.post is not None:
                setattr(self, kind.post, make_pruner(planes, c3))
        self.conv3 = ConvBN(c3, out_ch, 1, relu=False, deploy=deploy)
        self.shortcut = _shortcut(in_ch, out_ch, stride, deploy)

    @property
    def widths(self) -> Tuple[int, int]:
        """Current ``(C1, C3)``."""
        return (self.conv1.conv.out_channels, self.conv3.conv.in_channels)

    def _pre(self) -> Optional[nn.Conv2d]:
        """The input-side pruner (C1 columns), if the kind has one."""
        return getattr(self, self._pre_name) if self._pre_name else None

    def _post(self) -> Optional[nn.Conv2d]:
        """The output-side pruner (C3 rows), if the kind has one."""
        return getattr(self, self._post_name) if self._post_name else None

    def pruners(self) -> Tuple[nn.Conv2d, ...]:
        """The block's PCP pruners (none in a plain block)."""
        return tuple(p for p in (self._pre(), self._post()) if p is not None)

    # ---------------------------------------------------------------- compression
    def gates(self) -> Tuple[Gate, ...]:
        """Prunable groups: the input-side pruner's columns (C1; DEAP's pruner 1) and the output-side one's
        rows (C3; DEAP's pruner 2, CDD's compactor); for a plain block the conv1-BN (C1) and conv2-BN (C3)
        ``(gamma, beta)`` pairs; none when deployed."""
        if self.pcp is not None:
            pre, post = self._pre(), self._post()
            return tuple(([Gate(self._pre_name, 0, 1, ((pre.weight, 1),))] if pre is not None else []) +
                         ([Gate(self._post_name, 1, 2, ((post.weight, 0),))] if post is not None else []))
        if isinstance(self.conv1.bn, nn.BatchNorm2d):
            return (_bn_gate("bn1", 0, 1, self.conv1), _bn_gate("bn2", 1, 2, self.conv2))
        return ()

    def gate_convs(self) -> Tuple[Tuple[Tuple[ConvBN, ...], Tuple[ConvBN, ...]], ...]:
        """Per gate of a plain block, ``(producers, consumers)``: the ConvBNs whose output / input channels
        the gate's channels are (what one channel costs, :mod:`deap_lib.budget`); the widths ``(C1, C3)`` in
        a plain or deploy block (a PCP block is costed through its deploy form)."""
        _check_plain(self, "gate_convs")
        return (((self.conv1,), (self.conv2,)), ((self.conv2,), (self.conv3,)))

    @torch.no_grad()
    def pruned(self, keep: Sequence[Tensor]) -> "Bottleneck":
        """A copy keeping conv1 output channels ``keep[0]`` and conv3 input channels ``keep[1]`` (index
        tensors), with the pruner columns / rows (DEAP), compactor rows (CDD) or conv2 slices (plain, or a
        width without a pruner) that go with them. conv3's BN is untouched (its channels are block outputs)."""
        if self.conv1.deploy:
            raise ValueError("pruned: cut a training-form block (deploy blocks have no gates)")
        k1, k3 = (k.to(self.conv1.conv.weight.device) for k in keep)
        new = _like(Bottleneck(self.in_ch, self.planes, self.stride, pcp=self.pcp, widths=(len(k1), len(k3))),
                    self)
        new.shortcut.load_state_dict(self.shortcut.state_dict())
        new.conv1 = self.conv1.sliced(out_idx=k1)
        pre, post = self._pre(), self._post()
        if pre is not None:
            new._pre().weight.copy_(pre.weight[:, k1])
        if pre is not None and post is not None:
            new.conv2.load_state_dict(self.conv2.state_dict())
        else:
            new.conv2 = self.conv2.sliced(out_idx=None if post is not None else k3,
                                          in_idx=None if pre is not None else k1)
        if post is not None:
            new._post().weight.copy_(post.weight[k3])
        new.conv3 = self.conv3.sliced(in_idx=k3)
        return new.train(self.training)

    @torch.no_grad()
    def fused(self) -> "Bottleneck":
        """The deploy form: every BN folded, the pruners merged into one 3x3 conv ``P2 . K2 . P1``."""
        new = _like(Bottleneck(self.in_ch, self.planes, self.stride, widths=self.widths, deploy=True), self)
        if not isinstance(self.shortcut, nn.Identity):
            new.shortcut.set_folded(*self.shortcut.fold())
        new.conv1.set_folded(*self.conv1.fold())
        k, b = self.conv2.fold()
        pre, post = self._pre(), self._post()
        if pre is not None:
            k = _merge_in(k, pre)
        if post is not None:
            k, b = _merge_out(k, b, post)
        new.conv2.set_folded(k, b)
        new.conv3.set_folded(*self.conv3.fold())
        return new.eval()

    def forward_trace(self, x: Tensor) -> BlockTrace:
        """The block output with its residual sum and conv2-level maps (:class:`BlockTrace`)."""
        out = self.conv1(x)
        pre, post = self._pre(), self._post()
        if pre is not None:
            out = pre(out)
        mid = self.conv2.pre_activation(out)
        gated = post(mid) if post is not None else mid
        s = self.conv3(torch.relu(gated)) + self.shortcut(x)
        return BlockTrace(torch.relu(s), s, mid, gated)

    def forward_pooled(self, x: Tensor, pool: Callable[[Tensor], Tensor]) -> Tuple[Tensor, Tensor]:
        """``(relu(s), pool(s))`` with the ReLUs and the residual add in place: :meth:`forward_trace`'s values
        and gradients without its two conv2-level maps (none of these ops' backward reads what is overwritten;
        ``pool`` must not save ``s`` either), and ~3 fewer map copies a block."""
        out = self.conv1(x)
        pre, post = self._pre(), self._post()
        if pre is not None:
            out = pre(out)
        out = self.conv2.pre_activation(out)
        if post is not None:
            out = post(out)
        s = self.conv3(torch.relu_(out)).add_(self.shortcut(x))
        pooled = pool(s)
        return torch.relu_(s), pooled

    def forward_with_sum(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Return ``(relu(s), s)`` with ``s`` the residual sum before the final ReLU."""
        t = self.forward_trace(x)
        return t.out, t.sum

    def forward(self, x: Tensor) -> Tensor:
        """Block output only; the residual add and final ReLU run in place (no copy of ``s`` is kept)."""
        out = self.conv1(x)
        pre, post = self._pre(), self._post()
        if pre is not None:
            out = pre(out)
        out = self.conv2(out)  # with its ReLU in a plain block; a PCP block's comes after its post pruner
        if self.pcp is not None:
            out = torch.relu_(post(out) if post is not None else out)
        return torch.relu_(self.conv3(out).add_(self.shortcut(x)))


class BasicBlock(nn.Module):
    """3x3 (stride) -> 3x3 basic block, expansion 1.

    * ``pcp=None``: conv1 3x3 in->C (BN,ReLU) -> conv2 3x3 C->planes (BN) -> +shortcut -> ReLU.
    * ``pcp="deap"`` / ``"cdd"``: a basic block has a single internal width (conv1's outputs = conv2's
      inputs), so it gets a single pruner, placed where it is absorbable: after conv1 + BN1, before the
      ReLU: conv1 3x3 in->planes (BN) -> ``pruner2`` (deap) / ``compactor`` (cdd) planes->C -> ReLU ->
      conv2 3x3 C->planes (BN) -> +shortcut -> ReLU. It is an *output-side* pruner like DEAP's pruner2:
      its rows are conv2's input channels (group lasso on row norms, counted in ``lasso2``); at absorption
      it merges into conv1 (``K = P . K1``, ``b = P b1``). ``pruner1`` is ``None`` in basic blocks. Any
      other kind likewise, its pruner under the kind's ``basic_name``.
    """

    expansion = 1
    kind = "basic"

    def __init__(self, in_ch: int, planes: int, stride: int = 1, pcp: Optional[str] = None,
                 widths: Optional[Sequence[int]] = None, deploy: bool = False):
        super().__init__()
        kind = _check_pcp(pcp, deploy)
        (c,) = _check_widths(widths, (planes,), "basic")
        out_ch = planes * self.expansion
        self.pcp, self.planes, self.stride, self.in_ch, self.out_ch = pcp, planes, stride, in_ch, out_ch
        self.pruner1: Optional[nn.Conv2d] = None
        self.pruner2: Optional[nn.Conv2d] = None
        self.compactor: Optional[nn.Conv2d] = None
        self.conv3 = None
        self._pruner_name = kind.basic_name if kind is not None else None
        if kind is None:
            self.conv1 = ConvBN(in_ch, c, 3, stride=stride, relu=True, deploy=deploy)
        else:
            self.conv1 = ConvBN(in_ch, planes, 3, stride=stride, relu=False)
            setattr(self, kind.basic_name, make_pruner(planes, c))
        self.conv2 = ConvBN(c, out_ch, 3, relu=False, deploy=deploy)
        self.shortcut = _shortcut(in_ch, out_ch, stride, deploy)

    @property
    def widths(self) -> Tuple[int]:
        """Current ``(C,)``."""
        return (self.conv2.conv.in_channels,)

    # ---------------------------------------------------------------- compression
    def _pruner(self) -> Optional[nn.Conv2d]:
        return getattr(self, self._pruner_name) if self._pruner_name else None

    def pruners(self) -> Tuple[nn.Conv2d, ...]:
        """The block's PCP pruner (none in a plain block)."""
        p = self._pruner()
        return (p,) if p is not None else ()

    def gates(self) -> Tuple[Gate, ...]:
        """The single internal width C: the pruner / compactor rows, or conv1-BN ``(gamma, beta)`` pairs."""
        p = self._pruner()
        if p is not None:
            return (Gate(self._pruner_name, 0, 2, ((p.weight, 0),)),)
        if isinstance(self.conv1.bn, nn.BatchNorm2d):
            return (_bn_gate("bn1", 0, 2, self.conv1),)
        return ()

    def gate_convs(self) -> Tuple[Tuple[Tuple[ConvBN, ...], Tuple[ConvBN, ...]], ...]:
        """``(producers, consumers)`` of the plain block's gate: conv1's outputs, conv2's inputs."""
        _check_plain(self, "gate_convs")
        return (((self.conv1,), (self.conv2,)),)

    @torch.no_grad()
    def pruned(self, keep: Sequence[Tensor]) -> "BasicBlock":
        """A copy keeping internal channels ``keep[0]`` (pruner rows or conv1 outputs, and conv2 inputs)."""
        if self.conv1.deploy:
            raise ValueError("pruned: cut a training-form block (deploy blocks have no gates)")
        (k,) = (t.to(self.conv1.conv.weight.device) for t in keep)
        new = _like(BasicBlock(self.in_ch, self.planes, self.stride, pcp=self.pcp, widths=(len(k),)), self)
        new.shortcut.load_state_dict(self.shortcut.state_dict())
        p = self._pruner()
        if p is not None:
            new.conv1.load_state_dict(self.conv1.state_dict())
            new._pruner().weight.copy_(p.weight[k])
        else:
            new.conv1 = self.conv1.sliced(out_idx=k)
        new.conv2 = self.conv2.sliced(in_idx=k)
        return new.train(self.training)

    @torch.no_grad()
    def fused(self) -> "BasicBlock":
        """The deploy form: BN folded, the pruner merged into conv1 (``K = P . K1``, ``b = P b1``)."""
        new = _like(BasicBlock(self.in_ch, self.planes, self.stride, widths=self.widths, deploy=True), self)
        if not isinstance(self.shortcut, nn.Identity):
            new.shortcut.set_folded(*self.shortcut.fold())
        k, b = self.conv1.fold()
        p = self._pruner()
        if p is not None:
            k, b = _merge_out(k, b, p)
        new.conv1.set_folded(k, b)
        new.conv2.set_folded(*self.conv2.fold())
        return new.eval()

    def forward_trace(self, x: Tensor) -> BlockTrace:
        """The block output with its residual sum and conv1-level maps (the internal 3x3 is conv1 here)."""
        mid = self.conv1.pre_activation(x)
        pruner = self._pruner()
        gated = pruner(mid) if pruner is not None else mid
        s = self.conv2(torch.relu(gated)) + self.shortcut(x)
        return BlockTrace(torch.relu(s), s, mid, gated)

    def forward_pooled(self, x: Tensor, pool: Callable[[Tensor], Tensor]) -> Tuple[Tensor, Tensor]:
        """``(relu(s), pool(s))`` in place (see :meth:`Bottleneck.forward_pooled`)."""
        out = self.conv1.pre_activation(x)
        pruner = self._pruner()
        if pruner is not None:
            out = pruner(out)
        s = self.conv2(torch.relu_(out)).add_(self.shortcut(x))
        pooled = pool(s)
        return torch.relu_(s), pooled

    def forward_with_sum(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        t = self.forward_trace(x)
        return t.out, t.sum

    def forward(self, x: Tensor) -> Tensor:
        """Block output only; the residual add and final ReLU run in place."""
        out = self.conv1(x)
        pruner = self._pruner()
        if pruner is not None:
            out = torch.relu_(pruner(out))
        return torch.relu_(self.conv2(out).add_(self.shortcut(x)))
