"""Channel importance, selection and zeroing for every kind of prunable block (what to cut;
:mod:`deap_lib.absorb` does the cutting, :mod:`deap_lib.compression` runs the whole pipeline).

Kept apart, in the spirit of Torch-Pruning: *importance* (:func:`group_scores`: the norms of each block's
gates - DEAP pruner columns / rows, CDD compactor rows, BN ``(gamma, beta)`` pairs of a plain network),
*selection* (:func:`keep_mask`: the paper's absolute threshold with its min-channels rule, optionally
relative to each gate's largest norm; or a MACs budget met by one global threshold or by the same share of
every gate) and *removal* (:func:`deap_lib.absorb.prune`).

Scores and masks are lists over **all** blocks of the model (``model.named_blocks()`` order), each entry a
tuple with one vector per gate of that block (``block.gates()`` order): ``(C1, C3)`` for a DEAP or plain
bottleneck, ``(C3,)`` for a CDD one, ``(C,)`` for a basic block. Selections are applied by zeroing the
dropped groups (:func:`zero_groups_`); a zeroed group has norm exactly 0, so ``prune(model,
threshold=ZERO_THRESHOLD)`` removes exactly those channels.

Also here: BatchNorm re-calibration after the cut (docs/study.rst §Scaling the recipe down: the group lasso shrinks whole pruners, so
an absolute cut can remove channels that still carry signal and shift the statistics that the next BN sees;
recomputing running statistics on training images restores them; absorption stays exact because it folds
whatever statistics the BN holds).
"""
from __future__ import annotations

import copy
import math
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .models import ReIDNet, build_model
from .models.gates import group_norms, zero_channels_
from .models.pcp_kinds import pruner_names

#: Threshold that removes exactly the groups whose norm is 0 (zeroed by a selection).
ZERO_THRESHOLD = 1e-30

Scores = List[Tuple[Tensor, ...]]
Masks = List[Tuple[Tensor, ...]]


# ----------------------------------------------------------------------------------------------- importance
def group_scores(model: ReIDNet, dtype: torch.dtype = torch.float32) -> Scores:
    """Importance per prunable group: for every block, the (detached) norms of each of its gates."""
    return [tuple(group_norms(g.parts, dtype=dtype).detach() for g in block.gates())
            for _, block in model.named_blocks()]


def gate_lasso(model: ReIDNet, eps: float = 1e-12) -> Tensor:
    """Group lasso over every gate of every block: ``sum_blocks sum_gates sum_c ||g_c||`` (fp32), with
    ``||g|| = sqrt(sum g^2 + eps)``. On a plain network (the ``kd_np_direct`` baseline) the gates are the
    conv1-BN and conv2-BN ``(gamma, beta)`` pairs of every block: a channel whose pair is 0 outputs exactly 0
    after its ReLU, so it can be removed structurally."""
    ref = next(model.parameters())
    total = torch.zeros((), device=ref.device, dtype=torch.float32)
    for _, block in model.named_blocks():
        for gate in block.gates():
            total = total + group_norms(gate.parts, eps).sum()
    return total


# ----------------------------------------------------------------------------------------------- conversion
def plain_to_pcp(plain: ReIDNet, kind: str = "deap") -> ReIDNet:
    """The same network with identity PCP pruners of ``kind`` inserted (exactly equal outputs).

    Every tensor of ``plain`` is copied into the new model; the only tensors the new model has in addition
    are the pruner weights (identity-initialised) - anything else missing or unexpected is an error.
    """
    cfg = dict(plain.config)
    if cfg.get("pcp") is not None or cfg.get("deploy"):
        raise ValueError(f"plain_to_pcp expects a plain training-form model (pcp=None), got {cfg}")
    if cfg.get("widths") is not None:
        raise ValueError("plain_to_pcp expects an unpruned model (widths=None)")
    cfg["pcp"] = kind
    pcp = build_model(**cfg)
    src, dst = plain.state_dict(), pcp.state_dict()
    pruner_keys = {f"backbone.{name}.{p}.weight" for name, _ in pcp.named_pcp_blocks()
                   for p in pruner_names()}
    missing = set(dst) - set(src)
    if missing != pruner_keys & set(dst) or set(src) - set(dst):
        raise RuntimeError(f"plain_to_pcp: unexpected structure difference: missing {sorted(missing - pruner_keys)[:5]}"
                           f", unexpected {sorted(set(src) - set(dst))[:5]}")
    dst.update(src)
    pcp.load_state_dict(dst, strict=True)
    return pcp.to(next(plain.parameters()).device).train(plain.training)


# ----------------------------------------------------------------------------------------------- selection
def rounded_width(k: int, n: int, multiple: int = 1) -> int:
    """``k`` kept channels of ``n`` rounded *up* to a multiple of ``multiple`` (hardware-friendly widths:
    CPU / GPU kernels run odd widths such as 13 or 37 at low efficiency), never above ``n``; ``multiple``
    1 leaves ``k`` as it is."""
    if multiple < 1:
        raise ValueError(f"prune.width_multiple must be >= 1, got {multiple}")
    return min(n, -(-k // multiple) * multiple) if multiple > 1 else k


def _top(norms: Tensor, k: int) -> Tensor:
    m = torch.zeros(norms.numel(), dtype=torch.bool, device=norms.device)
    m[torch.sort(norms, descending=True, stable=True).indices[:k]] = True
    return m


def keep_mask(norms: Tensor, threshold: float, *, relative: bool = False, min_channels: int = 1,
              multiple: int = 1) -> Tensor:
    """The one selection rule: keep ``norm >= threshold`` (x the gate's largest norm if ``relative``), and at
    least ``min_channels`` (the largest norms, ties -> lower index; the paper's min-1 rule); with
    ``multiple`` > 1 the count is rounded up to a multiple (:func:`rounded_width`), the next-largest norms
    filling the gap."""
    if min_channels < 1:
        raise ValueError(f"min_channels must be >= 1, got {min_channels}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    thr = threshold * float(norms.max()) if relative else threshold
    m = norms >= thr
    k = max(int(m.sum()), min_channels)
    k_round = rounded_width(k, norms.numel(), multiple)
    if k != int(m.sum()) or k_round != k:
        m = _top(norms, k_round)
    return m


def keep_masks(scores: Scores, threshold: float, *, relative: bool = False, min_channels: int = 1,
               multiple: int = 1) -> Masks:
    """:func:`keep_mask` for every gate of every block."""
    return [tuple(keep_mask(s, threshold, relative=relative, min_channels=min_channels, multiple=multiple)
                  for s in pair) for pair in scores]


def widths_for(model: ReIDNet, masks: Masks) -> List[List[int]]:
    """Per-block ``widths`` the model would have after keeping ``masks`` (ungated widths unchanged)."""
    blocks = [b for _, b in model.named_blocks()]
    if len(blocks) != len(masks):
        raise ValueError(f"{len(masks)} mask entries for {len(blocks)} blocks (one entry per block)")
    out = []
    for block, bmasks in zip(blocks, masks):
        gates = block.gates()
        if len(gates) != len(bmasks):
            raise ValueError(f"a block with {len(gates)} gate(s) got {len(bmasks)} mask(s)")
        w = list(block.widths)
        for gate, m in zip(gates, bmasks):
            w[gate.index] = int(m.sum())
        out.append(w)
    return out


_COSTS: Dict[tuple, "object"] = {}


def _macs_of(model: ReIDNet, masks: Masks, input_size, kind: str = "macs") -> float:
    """The deploy cost (``kind``: thop MACs or parameters, :mod:`deap_lib.budget`) after keeping ``masks``:
    :class:`~deap_lib.budget.ChannelCosts` of the architecture (one thop profile, then arithmetic equal to
    thop's count of the rebuilt network), built once per architecture, input size and kind."""
    from .budget import ChannelCosts

    arch = tuple(sorted((k, repr(v)) for k, v in model.config.items() if k not in ("widths", "pcp", "deploy")))
    key = (arch, tuple(int(v) for v in input_size), kind)
    costs = _COSTS.get(key)
    if costs is None:
        if len(_COSTS) > 32:
            _COSTS.clear()
        full = build_model(**dict(model.config, pcp=None, widths=None, deploy=True))
        costs = _COSTS[key] = ChannelCosts(full, input_size, kind)
    return costs.total(widths_for(model, masks))


@torch.no_grad()
def zero_groups_(model: ReIDNet, masks: Masks, *, check: bool = True) -> None:
    """Zero the dropped groups in place (every part of each gate: pruner columns / rows, or a plain
    block's BN ``(gamma, beta)`` pairs)."""
    if check:
        widths_for(model, masks)  # validates the structure
    for (_, block), bmasks in zip(model.named_blocks(), masks):
        for gate, m in zip(block.gates(), bmasks):
            zero_channels_(gate, ~m)


@torch.no_grad()
def apply_masks(model: ReIDNet, masks: Masks) -> ReIDNet:
    """A copy of ``model`` whose dropped groups are zero."""
    out = copy.deepcopy(model)
    zero_groups_(out, masks)
    return out


def threshold_for_macs(model: ReIDNet, scores: Scores, target_fraction: float,
                       input_size: Tuple[int, int, int], *, min_channels: int = 1,
                       multiple: int = 1, kind: str = "macs") -> Tuple[float, float]:
    """The smallest global threshold whose selection keeps at most ``target_fraction`` of the unpruned
    deploy model's MACs (our extension; the paper uses a fixed threshold), or of its parameters with
    ``kind="params"``. Returns ``(threshold, fraction)``.
    With ``multiple`` > 1 the widths are rounded inside the search (:func:`keep_mask`), so the rounded
    selection itself meets the budget.

    Binary search over the sorted distinct scores; MACs are thop counts of the would-be deploy model.
    """
    if not 0 < target_fraction <= 1:
        raise ValueError(f"target MACs fraction must be in (0, 1], got {target_fraction}")

    def select(thr: float) -> Masks:
        return keep_masks(scores, thr, min_channels=min_channels, multiple=multiple)

    full = _macs_of(model, keep_masks(scores, 0.0, min_channels=min_channels), input_size, kind)
    cands = torch.unique(torch.cat([s for pair in scores for s in pair]).double())
    lo, hi = 0, len(cands) - 1  # find the smallest index whose threshold meets the budget
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        thr = float(cands[mid])
        frac = _macs_of(model, select(thr), input_size, kind) / full
        if frac <= target_fraction:
            best, hi = (thr, frac), mid - 1
        else:
            lo = mid + 1
    if best is None:  # even the largest threshold keeps too much (min_channels floor)
        thr = float(cands[-1]) * (1 + 1e-9) + 1e-30
        best = (thr, _macs_of(model, select(thr), input_size, kind) / full)
    return best


def top_fraction_masks(scores: Scores, fraction: float, *,
                       min_channels: int = 1, multiple: int = 1) -> Masks:
    """Keep masks with the same share of every gate: its ``max(min_channels, ceil(fraction * n))``
    largest scores (ties -> lower index), the count rounded up to ``multiple`` (:func:`rounded_width`)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"keep fraction must be in (0, 1], got {fraction}")
    out = []
    for pair in scores:
        masks = []
        for s in pair:
            k = min(s.numel(), max(min_channels, math.ceil(fraction * s.numel() - 1e-9)))
            masks.append(_top(s, rounded_width(k, s.numel(), multiple)))
        out.append(tuple(masks))
    return out


def fraction_for_macs(model: ReIDNet, scores: Scores, target_fraction: float,
                      input_size: Tuple[int, int, int], *, min_channels: int = 1,
                      multiple: int = 1, kind: str = "macs") -> Tuple[float, float]:
    """The largest per-gate keep fraction (:func:`top_fraction_masks`) whose selection keeps at most
    ``target_fraction`` of the unpruned deploy model's MACs (``kind="params"``: parameters). Returns
    ``(keep_fraction, macs_fraction)``.
    With ``multiple`` > 1 the rounded selection is what meets the budget.

    Bisection over the keep fraction (MACs grow with it); the candidate fractions are the distinct
    ``k / n`` of the gates, so the answer is exact."""
    if not 0 < target_fraction <= 1:
        raise ValueError(f"target MACs fraction must be in (0, 1], got {target_fraction}")

    def select(f: float) -> Masks:
        return top_fraction_masks(scores, f, min_channels=min_channels, multiple=multiple)

    sizes = sorted({s.numel() for pair in scores for s in pair})
    cands = sorted({k / n for n in sizes for k in range(1, n + 1)})
    full = _macs_of(model, top_fraction_masks(scores, 1.0, min_channels=min_channels), input_size, kind)
    lo, hi, best = 0, len(cands) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        frac = _macs_of(model, select(cands[mid]), input_size, kind) / full
        if frac <= target_fraction:
            best, lo = (cands[mid], frac), mid + 1
        else:
            hi = mid - 1
    if best is None:  # even the smallest selection exceeds the budget
        best = (cands[0], _macs_of(model, select(cands[0]), input_size, kind) / full)
    return best


ALLOCATIONS = ("global", "uniform")


# ----------------------------------------------------------------------------------------------- BN re-calibration
@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor], device: Optional[torch.device] = None) -> int:
    """Recompute every BatchNorm's running mean/var as the exact average over ``batches`` (images only).

    Uses cumulative averaging (``momentum=None``) in train mode without gradients, then restores each BN's
    momentum and the model's mode. Returns the number of batches used (0 leaves the model unchanged).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    n = 0
    try:
        for x in batches:
            if device is not None:
                x = x.to(device)
            model(x)
            n += 1
    finally:
        for m, mom, rm, rv, nb in saved:
            m.momentum = mom
            if n == 0:
                m.running_mean.copy_(rm)
                m.running_var.copy_(rv)
                m.num_batches_tracked.copy_(nb)
        model.train(was_training)
    return n


# ----------------------------------------------------------------------------------------------- gradual pruning
class GradualPruning:
    """Prune toward a MACs budget *during* training (ours; the paper cuts once, after training).

    After epoch ``e`` of ``total``, the kept share of MACs is ``f(e) = target + (1 - target) * (1 - s)^3``
    with ``s = min(1, e / (end_frac * total))`` (the cubic schedule of Zhu & Gupta, 2017): channels are
    removed early and fast, then more slowly, and the last ``1 - end_frac`` of the run trains the network
    at the budget. Each update selects by the current importance (:func:`group_scores`; zeroed groups score
    0 and stay dropped) with the configured ``allocation`` and zeroes the dropped groups; :meth:`apply_`
    re-zeroes them after every optimizer step. The state is the weights themselves (dropped groups are
    exact zeros), so a resumed run picks it up unchanged. The final cut then removes only zero groups."""

    def __init__(self, model: ReIDNet, *, target_macs: float, total_epochs: int, end_frac: float = 0.6,
                 input_size: Tuple[int, int, int], allocation: str = "uniform", min_channels: int = 1,
                 multiple: int = 1, kind: str = "macs"):
        if not 0 < target_macs <= 1 or not 0 < end_frac <= 1:
            raise ValueError(f"GradualPruning: need 0 < target_macs <= 1 and 0 < end_frac <= 1, got "
                             f"{target_macs}, {end_frac}")
        if allocation not in ALLOCATIONS:
            raise ValueError(f"unknown allocation '{allocation}'; valid: {', '.join(ALLOCATIONS)}")
        self.model, self.target, self.total, self.end_frac = model, target_macs, total_epochs, end_frac
        self.input_size, self.allocation, self.min_channels = input_size, allocation, min_channels
        self.multiple = multiple  # kept widths rounded up to it at every update (alive counts stay multiples)
        self.kind = kind  # the budget's resource: "macs" or "params" (deap_lib.budget)
        self.masks = [tuple(s > 0 for s in pair) for pair in group_scores(model)]
        self._full_macs = _macs_of(model, [tuple(torch.ones_like(m) for m in p) for p in self.masks],
                                   input_size, kind)

    def macs_fraction_at(self, epoch: int) -> float:
        s = min(1.0, epoch / max(1e-9, self.end_frac * self.total))
        return self.target + (1.0 - self.target) * (1.0 - s) ** 3

    def update(self, epoch: int) -> Dict[str, float]:
        f = self.macs_fraction_at(epoch)
        scores = [tuple(s.cpu() * m for s, m in zip(pair, mpair))
                  for pair, mpair in zip(group_scores(self.model), self.masks)]
        if f >= 1.0:
            return {"prune_macs_budget": 1.0}
        kw = dict(min_channels=self.min_channels, multiple=self.multiple, kind=self.kind)
        if self.allocation == "uniform":
            keep, _ = fraction_for_macs(self.model, scores, f, self.input_size, **kw)
            new = top_fraction_masks(scores, keep, min_channels=self.min_channels, multiple=self.multiple)
        else:
            thr, _ = threshold_for_macs(self.model, scores, f, self.input_size, **kw)
            new = keep_masks(scores, thr, min_channels=self.min_channels, multiple=self.multiple)
        self.masks = [tuple(a & b for a, b in zip(old, cur)) for old, cur in zip(self.masks, new)]
        self.apply_()
        kept = sum(int(m.sum()) for pair in self.masks for m in pair)
        total = sum(m.numel() for pair in self.masks for m in pair)
        return {"prune_macs_budget": f, "prune_kept_frac": kept / total,
                "prune_macs_frac": _macs_of(self.model, self.masks, self.input_size, self.kind) / self._full_macs}

    def apply_(self) -> None:
        zero_groups_(self.model, self.masks, check=False)
