"""Resource budgets: what a network costs (MACs or parameters) as a function of its prunable widths.

A budget is a fraction of the unpruned network's cost in its *deploy* form (BatchNorms folded into biased
convs, the form every table reports), of one of :data:`BUDGET_KINDS`: ``macs`` (thop's count for one image
at the run's input size) or ``params`` (the deploy parameters without the training-only classifier).

:class:`ChannelCosts` derives, from the architecture and the input size, the cost of every conv whose
channels a gate controls (each block says which, :meth:`Bottleneck.gate_convs`), so that for any widths

* ``total(widths)`` is the deploy cost of the network with those widths (equal to thop / the parameter
  count of the rebuilt network: the costs are multilinear in the widths, the rest of the network is a
  constant measured once), and
* ``marginal(widths)`` is the cost of one channel of every prunable width: exactly what removing that
  channel saves (a conv's cost is linear in each of its channel counts), the per-channel weight ``c_l`` of
  the resource-aware sparsity penalty (docs/methods/structure.rst §Our design) and the divisor of the cost-normalised cut score.

Widths are lists over ``model.named_blocks()`` of tuples over ``block.widths`` (``(C1, C3)`` per
bottleneck, ``(C,)`` per basic block, ``(hidden,)`` or ``()`` per inverted residual).
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .complexity import profile
from .models import ReIDNet, build_model
from .models.gates import group_norms

BUDGET_KINDS = ("macs", "params")

Widths = List[Tuple[int, ...]]


def check_kind(kind: str) -> str:
    if kind not in BUDGET_KINDS:
        raise ValueError(f"unknown budget kind {kind!r}; valid: {', '.join(BUDGET_KINDS)}")
    return kind


def deploy_cost(model: nn.Module, input_size: Sequence[int], kind: str) -> float:
    """The ``kind`` cost of ``model`` as it is (thop MACs, or parameters without the classifier)."""
    p = profile(model, input_size)
    return float(p["macs"] if check_kind(kind) == "macs" else p["params_no_classifier"])


def deploy_net(model: ReIDNet, widths: Optional[Sequence[Sequence[int]]] = None) -> ReIDNet:
    """A freshly built deploy-form network of ``model``'s architecture with ``widths`` (default: its own)."""
    w = model.block_widths() if widths is None else widths
    return build_model(**dict(model.config, pcp=None, widths=[list(x) for x in w], deploy=True))


def prunable_widths(model: ReIDNet) -> List[Tuple[int, ...]]:
    """Per block, the indices of its ``widths`` that a gate controls (``block.gates()``)."""
    return [tuple(g.index for g in block.gates()) for _, block in model.named_blocks()]


@torch.no_grad()
def alive_widths(model: ReIDNet) -> Widths:
    """The widths the network would have if every gate channel whose group is exactly zero were removed."""
    out = []
    for _, block in model.named_blocks():
        w = list(block.widths)
        for g in block.gates():
            w[g.index] = int((group_norms(g.parts) > 0).sum())
        out.append(tuple(w))
    return out


class _Conv:
    """One gated conv: kernel area, output area and channel counts, and which widths it follows."""

    __slots__ = ("k2", "hw", "cin", "cout", "depthwise", "in_of", "out_of")

    def __init__(self, conv: nn.Conv2d, hw: int):
        self.k2 = conv.kernel_size[0] * conv.kernel_size[1]
        self.hw, self.cin, self.cout = hw, conv.in_channels, conv.out_channels
        self.depthwise = conv.groups > 1
        self.in_of: Optional[Tuple[int, int]] = None  # (block, width index) setting its input channels
        self.out_of: Optional[Tuple[int, int]] = None

    def channels(self, widths: Sequence[Sequence[int]]) -> Tuple[int, int]:
        cin = widths[self.in_of[0]][self.in_of[1]] if self.in_of else self.cin
        cout = widths[self.out_of[0]][self.out_of[1]] if self.out_of else self.cout
        return cin, cout

    def cost(self, widths, kind: str) -> float:
        cin, cout = self.channels(widths)
        per_out = self.k2 if self.depthwise else cin * self.k2
        if kind == "macs":
            return float(cout * per_out * self.hw)
        return float(cout * per_out + cout)  # deploy convs carry a bias

    def d_out(self, widths, kind: str) -> float:
        """Cost of one more output channel (a depthwise conv's channel is an input channel too)."""
        cin, _ = self.channels(widths)
        per_out = self.k2 if self.depthwise else cin * self.k2
        return float(per_out * self.hw) if kind == "macs" else float(per_out + 1)

    def d_in(self, widths, kind: str) -> float:
        _, cout = self.channels(widths)
        return float(cout * self.k2 * self.hw) if kind == "macs" else float(cout * self.k2)


class ChannelCosts:
    """Exact deploy cost of ``model``'s architecture as a function of its block widths (see the module
    docstring). Built once per architecture and input size (one thop profile and one shape-probing
    forward of the deploy form); every query is then plain arithmetic."""

    def __init__(self, model: ReIDNet, input_size: Sequence[int], kind: str = "macs"):
        self.kind = check_kind(kind)
        self.input_size = tuple(int(s) for s in input_size)
        self.full_widths: Widths = [tuple(w) for w in model.block_widths()]
        net = deploy_net(model, self.full_widths).eval()
        areas: Dict[int, int] = {}
        hooks = [m.register_forward_hook(lambda mod, inp, out: areas.__setitem__(id(mod), out.shape[2] * out.shape[3]))
                 for m in net.modules() if isinstance(m, nn.Conv2d)]
        try:
            with torch.no_grad():
                net(torch.zeros((1,) + self.input_size))
        finally:
            for h in hooks:
                h.remove()
        self.convs: List[_Conv] = []
        #: per block, per width index: (convs producing those channels, convs consuming them)
        self.roles: List[Tuple[Tuple[List[_Conv], List[_Conv]], ...]] = []
        by_id: Dict[int, _Conv] = {}
        for b, (_, block) in enumerate(net.named_blocks()):
            roles = []
            for i, (producers, consumers) in enumerate(block.gate_convs()):
                prod, cons = [], []
                for cb, side in [(p, "out") for p in producers] + [(c, "in") for c in consumers]:
                    conv = by_id.get(id(cb.conv))
                    if conv is None:
                        conv = by_id[id(cb.conv)] = _Conv(cb.conv, areas[id(cb.conv)])
                        self.convs.append(conv)
                    if side == "out":
                        conv.out_of = (b, i)
                        if conv.depthwise:
                            conv.in_of = (b, i)
                        prod.append(conv)
                    else:
                        conv.in_of = (b, i)
                        cons.append(conv)
                roles.append((prod, cons))
            self.roles.append(tuple(roles))
        self.full = deploy_cost(net, self.input_size, kind)
        self.constant = self.full - self._gated(self.full_widths)

    def _gated(self, widths) -> float:
        return sum(c.cost(widths, self.kind) for c in self.convs)

    def _check(self, widths) -> None:
        if len(widths) != len(self.full_widths) or any(len(a) != len(b) for a, b in zip(widths, self.full_widths)):
            raise ValueError(f"widths must have the architecture's shape {[len(w) for w in self.full_widths]} "
                             f"(entries per block), got {[len(w) for w in widths]}")

    def total(self, widths: Sequence[Sequence[int]]) -> float:
        """The deploy cost of the network with ``widths``."""
        self._check(widths)
        return self.constant + self._gated(widths)

    def fraction(self, widths: Sequence[Sequence[int]]) -> float:
        """``total(widths)`` as a fraction of the unpruned network's cost."""
        return self.total(widths) / self.full

    def marginal(self, widths: Sequence[Sequence[int]]) -> List[Tuple[float, ...]]:
        """The cost of one channel of every width entry at ``widths`` (what removing it saves)."""
        self._check(widths)
        out = []
        for roles in self.roles:
            out.append(tuple(sum(c.d_out(widths, self.kind) for c in prod) +
                             sum(c.d_in(widths, self.kind) for c in cons if not c.depthwise)
                             for prod, cons in roles))
        return out

    def block_cost(self, widths: Sequence[Sequence[int]], blocks: Sequence[int]) -> float:
        """The cost of the gated convs of ``blocks`` (indices into ``named_blocks()``) at ``widths``."""
        sel = set(blocks)
        convs = {id(c): c for b in sel for prod, cons in self.roles[b] for c in prod + cons}
        return sum(c.cost(widths, self.kind) for c in convs.values())

    def floor(self, prunable: Sequence[Sequence[int]], min_channels: int = 1) -> float:
        """The smallest reachable fraction: every prunable width at ``min_channels`` (the stem, shortcuts,
        block outputs and head stay whole)."""
        w = [list(x) for x in self.full_widths]
        for b, idx in enumerate(prunable):
            for i in idx:
                w[b][i] = min(w[b][i], min_channels)
        return self.fraction(w)


def check_budget(budget: float, floor: float, kind: str) -> None:
    """A budget must lie in (floor, 1]: error naming the floor (or the valid range) otherwise."""
    check_kind(kind)
    if not 0 < budget <= 1:
        raise ValueError(f"budget {budget!r} of the unpruned {kind} is outside (0, 1]: a budget is a fraction of the "
                         "unpruned network's cost (1 = no compression)")
    if budget < floor:
        raise ValueError(f"budget {budget:.4f} of the unpruned {kind} is below the architecture's floor {floor:.4f} "
                         f"(stem, shortcuts, block outputs and head with one channel per prunable width)")


def budget_masks(scores: Sequence[Sequence[Tensor]], costs: ChannelCosts, budget: float,
                 prunable: Sequence[Sequence[int]], *, min_channels: int = 1) -> Tuple[List[Tuple[Tensor, ...]], float]:
    """Keep masks meeting ``budget`` (a fraction of ``costs.kind``) by score: every gate first keeps its
    ``min_channels`` best channels, then channels join in descending score order (ties: network order) for
    as long as the total stays within the budget (the longest such prefix; cost grows with every channel).
    ``scores`` is per block a tuple over its gates (``block.gates()`` order); ``prunable[b]`` the width
    index of each. Returns ``(masks, achieved fraction)``: within one channel's cost below the budget."""
    check_budget(budget, costs.floor(prunable, min_channels), costs.kind)
    entries = []  # (score, order, block, gate, channel)
    forced = []
    order = 0
    for b, pair in enumerate(scores):
        for g, s in enumerate(pair):
            s = s.detach().double().cpu()
            top = torch.sort(s, descending=True, stable=True).indices
            for rank, c in enumerate(top.tolist()):
                (forced if rank < min_channels else entries).append((float(s[c]), order + c, b, g, c))
            order += s.numel()
    entries.sort(key=lambda e: (-e[0], e[1]))

    def widths_for(n: int):
        w = [list(x) for x in costs.full_widths]
        for b, idx in enumerate(prunable):
            for i in idx:
                w[b][i] = 0
        for e in forced + entries[:n]:
            w[e[2]][prunable[e[2]][e[3]]] += 1
        return w

    lo, hi = 0, len(entries)  # the largest n with fraction(widths_for(n)) <= budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if costs.fraction(widths_for(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    masks = [[torch.zeros(s.numel(), dtype=torch.bool) for s in pair] for pair in scores]
    for e in forced + entries[:lo]:
        masks[e[2]][e[3]][e[4]] = True
    return [tuple(m) for m in masks], costs.fraction(widths_for(lo))


def uniform_widths(costs: ChannelCosts, budget: float, prunable: Sequence[Sequence[int]], *,
                   min_channels: int = 1, iters: int = 60) -> Tuple[Widths, float]:
    """A uniformly thinned network for ``budget``: every prunable width ``max(min_channels, round(m * n))``
    with the largest multiplier ``m`` whose total stays within the budget (bisection; the total grows
    with ``m``). Returns ``(widths, achieved fraction)``."""
    check_budget(budget, costs.floor(prunable, min_channels), costs.kind)

    def widths_at(m: float) -> Widths:
        w = [list(x) for x in costs.full_widths]
        for b, idx in enumerate(prunable):
            for i in idx:
                n = costs.full_widths[b][i]
                w[b][i] = min(n, max(min_channels, int(round(m * n))))
        return [tuple(x) for x in w]

    lo, hi = 0.0, 1.0
    if costs.fraction(widths_at(hi)) <= budget:
        lo = hi
    for _ in range(iters):
        if hi - lo < 1e-9:
            break
        mid = (lo + hi) / 2
        if costs.fraction(widths_at(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    w = widths_at(lo)
    return w, costs.fraction(w)


def copy_weights(src: ReIDNet, dst: ReIDNet, what: str = "network") -> ReIDNet:
    """``dst`` with ``src``'s weights (identical architectures and classes, strict load); a clear error
    naming both configs otherwise."""
    a = {k: v for k, v in src.config.items()}
    b = {k: v for k, v in dst.config.items()}
    if a != b:
        diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
        raise ValueError(f"{what}: the source network differs from the destination ({diff}); both must be the same "
                         "architecture, width and number of identities")
    dst.load_state_dict(copy.deepcopy(src.state_dict()), strict=True)
    return dst
