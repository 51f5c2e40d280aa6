"""Channel importance and selection for PCP students (what to cut; :mod:`deap_lib.absorb` does the cutting).

Kept apart, in the spirit of Torch-Pruning: *importance* (pruner norms for DEAP/NP, BatchNorm
``(gamma, beta)`` group norms for the naive ``kd_np_direct`` baseline), *selection* (the paper's absolute
threshold, a threshold relative to each pruner's largest norm, or a global threshold that meets a MACs
budget) and *removal* (:func:`deap_lib.absorb.prune` / :func:`deap_lib.absorb.absorb`).

Selections are applied by zeroing the dropped pruner groups (pruner-1 columns, pruner-2 rows); a zeroed
group has norm exactly 0, so ``prune(model, threshold=ZERO_THRESHOLD)`` removes exactly those channels.

Also here: BatchNorm re-calibration after the cut (METHODS 8.1: the group lasso shrinks whole pruners, so
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

from .absorb import prune
from .complexity import profile
from .models import ReIDNet, build_model

#: Threshold that removes exactly the groups whose norm is 0 (zeroed by a selection).
ZERO_THRESHOLD = 1e-30


# ----------------------------------------------------------------------------------------------- importance
def pruner_scores(model: ReIDNet) -> List[Tuple[Tensor, Tensor]]:
    """Per DEAP block: (pruner-1 column norms (C1,), pruner-2 row norms (C3,))."""
    _require_deap(model)
    out = []
    for block in model.pcp_blocks():
        w1 = block.pruner1.weight.detach().float()
        w2 = block.pruner2.weight.detach().float()
        out.append((w1.pow(2).sum(dim=(0, 2, 3)).sqrt(), w2.pow(2).sum(dim=(1, 2, 3)).sqrt()))
    return out


def _bn_group_norms(bn: nn.BatchNorm2d, eps: float = 0.0) -> Tensor:
    return (bn.weight.float().pow(2) + bn.bias.float().pow(2) + eps).sqrt()


def bn_channel_lasso(model: ReIDNet, eps: float = 1e-12) -> Tensor:
    """Group lasso on a plain student's own channels (the ``kd_np_direct`` baseline): for every bottleneck,
    sum over conv1-BN and conv2-BN channels of ``sqrt(gamma_c^2 + beta_c^2 + eps)``. A channel whose
    ``(gamma, beta)`` is 0 outputs exactly 0 after its ReLU, so it can be removed structurally."""
    ref = next(model.parameters())
    total = torch.zeros((), device=ref.device, dtype=torch.float32)
    for _, block in model.named_blocks():
        if getattr(block, "kind", None) != "bottleneck":
            continue
        total = total + _bn_group_norms(block.conv1.bn, eps).sum() + _bn_group_norms(block.conv2.bn, eps).sum()
    return total


def bn_scores(plain: ReIDNet) -> List[Tuple[Tensor, Tensor]]:
    """Per bottleneck of a plain (``pcp=None``) model: (conv1-BN group norms (C1,), conv2-BN group norms)."""
    out = []
    for _, block in plain.named_blocks():
        out.append((_bn_group_norms(block.conv1.bn).detach(), _bn_group_norms(block.conv2.bn).detach()))
    return out


# ----------------------------------------------------------------------------------------------- conversion
def plain_to_pcp(plain: ReIDNet) -> ReIDNet:
    """The same network with identity DEAP pruners inserted (exactly equal outputs).

    Every tensor of ``plain`` is copied into the new model; the only tensors the new model has in addition
    are the pruner weights (identity-initialised) - anything else missing or unexpected is an error.
    """
    cfg = dict(plain.config)
    if cfg.get("pcp") is not None or cfg.get("deploy"):
        raise ValueError(f"plain_to_pcp expects a plain training-form model (pcp=None), got {cfg}")
    if cfg.get("widths") is not None:
        raise ValueError("plain_to_pcp expects an unpruned model (widths=None)")
    cfg["pcp"] = "deap"
    pcp = build_model(**cfg)
    src, dst = plain.state_dict(), pcp.state_dict()
    pruner_keys = {f"backbone.{name}.{p}.weight" for name, _ in pcp.named_pcp_blocks()
                   for p in ("pruner1", "pruner2")}
    missing = set(dst) - set(src)
    if missing != pruner_keys & set(dst) or set(src) - set(dst):
        raise RuntimeError(f"plain_to_pcp: unexpected structure difference: missing {sorted(missing - pruner_keys)[:5]}"
                           f", unexpected {sorted(set(src) - set(dst))[:5]}")
    dst.update(src)
    pcp.load_state_dict(dst, strict=True)
    return pcp.to(next(plain.parameters()).device).train(plain.training)


# ----------------------------------------------------------------------------------------------- selection
def keep_masks(scores: List[Tuple[Tensor, Tensor]], threshold: float, *, relative: bool = False,
               min_channels: int = 1) -> List[Tuple[Tensor, Tensor]]:
    """Boolean keep masks: ``score >= threshold`` (x the pruner's max score if ``relative``), and at least
    ``min_channels`` (the largest scores, ties -> lower index) per pruner."""
    out = []
    for pair in scores:
        masks = []
        for s in pair:
            thr = threshold * float(s.max()) if relative else threshold
            m = s >= thr
            if int(m.sum()) < min_channels:
                order = torch.sort(s, descending=True, stable=True).indices[:min_channels]
                m = torch.zeros_like(m)
                m[order] = True
            masks.append(m)
        out.append((masks[0], masks[1]))
    return out


@torch.no_grad()
def apply_masks(pcp: ReIDNet, masks: List[Tuple[Tensor, Tensor]]) -> ReIDNet:
    """A copy of ``pcp`` whose dropped pruner groups (pruner-1 columns / pruner-2 rows) are zero."""
    _require_deap(pcp)
    out = copy.deepcopy(pcp)
    n_blocks = len(list(out.pcp_blocks()))
    if n_blocks != len(masks):
        raise ValueError(f"apply_masks: {len(masks)} masks for {n_blocks} PCP blocks")
    zero_groups_(out, masks)
    return out


def _macs_of(pcp: ReIDNet, masks, input_size) -> float:
    widths = []
    it = iter(masks)
    for _, block in pcp.named_blocks():
        if block.pcp is not None:
            m1, m3 = next(it)
            widths.append((int(m1.sum()), int(m3.sum())))
        else:
            widths.append(tuple(block.widths))
    cfg = dict(pcp.config, pcp=None, widths=widths, deploy=True)
    return float(profile(build_model(**cfg), input_size)["macs"])


def threshold_for_macs(pcp: ReIDNet, scores: List[Tuple[Tensor, Tensor]], target_fraction: float,
                       input_size: Tuple[int, int, int], *, min_channels: int = 1) -> Tuple[float, float]:
    """The smallest global threshold whose selection keeps at most ``target_fraction`` of the unpruned
    deploy model's MACs (our extension; the paper uses a fixed threshold). Returns ``(threshold, fraction)``.

    Binary search over the sorted distinct scores; MACs are thop counts of the would-be deploy model.
    """
    if not 0 < target_fraction <= 1:
        raise ValueError(f"target MACs fraction must be in (0, 1], got {target_fraction}")
    full = _macs_of(pcp, keep_masks(scores, 0.0, min_channels=min_channels), input_size)
    cands = torch.unique(torch.cat([s for pair in scores for s in pair]).double())
    lo, hi = 0, len(cands) - 1  # find the smallest index whose threshold meets the budget
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        thr = float(cands[mid])
        frac = _macs_of(pcp, keep_masks(scores, thr, min_channels=min_channels), input_size) / full
        if frac <= target_fraction:
            best, hi = (thr, frac), mid - 1
        else:
            lo = mid + 1
    if best is None:  # even the largest threshold keeps too much (min_channels floor)
        thr = float(cands[-1]) * (1 + 1e-9) + 1e-30
        best = (thr, _macs_of(pcp, keep_masks(scores, thr, min_channels=min_channels), input_size) / full)
    return best


def top_fraction_masks(scores: List[Tuple[Tensor, Tensor]], fraction: float, *,
                       min_channels: int = 1) -> List[Tuple[Tensor, Tensor]]:
    """Keep masks with the same share of every pruner: its ``max(min_channels, ceil(fraction * n))``
    largest scores (ties -> lower index)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"keep fraction must be in (0, 1], got {fraction}")
    out = []
    for pair in scores:
        masks = []
        for s in pair:
            k = min(s.numel(), max(min_channels, math.ceil(fraction * s.numel() - 1e-9)))
            m = torch.zeros(s.numel(), dtype=torch.bool)
            m[torch.sort(s, descending=True, stable=True).indices[:k]] = True
            masks.append(m)
        out.append((masks[0], masks[1]))
    return out


def fraction_for_macs(pcp: ReIDNet, scores: List[Tuple[Tensor, Tensor]], target_fraction: float,
                      input_size: Tuple[int, int, int], *, min_channels: int = 1) -> Tuple[float, float]:
    """The largest per-pruner keep fraction (:func:`top_fraction_masks`) whose selection keeps at most
    ``target_fraction`` of the unpruned deploy model's MACs. Returns ``(keep_fraction, macs_fraction)``.

    Bisection over the keep fraction (MACs grow with it); the candidate fractions are the distinct
    ``k / n`` of the pruners, so the answer is exact."""
    if not 0 < target_fraction <= 1:
        raise ValueError(f"target MACs fraction must be in (0, 1], got {target_fraction}")
    sizes = sorted({s.numel() for pair in scores for s in pair})
    cands = sorted({k / n for n in sizes for k in range(1, n + 1)})
    full = _macs_of(pcp, top_fraction_masks(scores, 1.0, min_channels=min_channels), input_size)
    lo, hi, best = 0, len(cands) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        frac = _macs_of(pcp, top_fraction_masks(scores, cands[mid], min_channels=min_channels), input_size) / full
        if frac <= target_fraction:
            best, lo = (cands[mid], frac), mid + 1
        else:
            hi = mid - 1
    if best is None:  # even one channel per pruner exceeds the budget
        best = (cands[0], _macs_of(pcp, top_fraction_masks(scores, cands[0], min_channels=min_channels),
                                   input_size) / full)
    return best


ALLOCATIONS = ("global", "uniform")


def select_and_prune(pcp: ReIDNet, scores: List[Tuple[Tensor, Tensor]], *, threshold: float,
                     relative: bool = False, min_channels: int = 1, target_macs: Optional[float] = None,
                     input_size: Tuple[int, int, int] = (3, 64, 64), allocation: str = "global"
                     ) -> Tuple[ReIDNet, Dict[str, float]]:
    """Choose channels (fixed or MACs-budget threshold), zero the rest and remove them: the pruned, not
    absorbed model, and a dict describing the rule used.

    ``allocation`` (with ``target_macs`` only): ``global`` - one threshold over all pruners' norms (or
    norms relative to each pruner's largest); ``uniform`` - every pruner keeps the same share of its
    channels, its largest norms (Torch-Pruning's default, non-global pruning)."""
    if allocation not in ALLOCATIONS:
        raise ValueError(f"unknown allocation '{allocation}'; valid: {', '.join(ALLOCATIONS)}")
    rule: Dict[str, float] = {"threshold": threshold, "relative": float(relative), "min_channels": min_channels}
    if target_macs is not None and allocation == "uniform":
        keep, frac = fraction_for_macs(pcp, scores, target_macs, input_size, min_channels=min_channels)
        masks = top_fraction_masks(scores, keep, min_channels=min_channels)
        del rule["threshold"]  # no threshold: a share of every pruner
        rule.update(allocation="uniform", keep_fraction=keep, target_macs=target_macs, achieved_macs_fraction=frac)
        return _cut(pcp, masks, rule, min_channels)
    if target_macs is not None:
        if relative:  # one global threshold on the norms relative to each pruner's largest
            scores = [tuple(s / s.max().clamp_min(1e-30) for s in pair) for pair in scores]
        threshold, frac = threshold_for_macs(pcp, scores, target_macs, input_size, min_channels=min_channels)
        relative = False
        rule.update(threshold=threshold, target_macs=target_macs, achieved_macs_fraction=frac)
    masks = keep_masks(scores, threshold, relative=relative, min_channels=min_channels)
    return _cut(pcp, masks, rule, min_channels)


def _cut(pcp: ReIDNet, masks, rule: Dict, min_channels: int) -> Tuple[ReIDNet, Dict]:
    pruned = prune(apply_masks(pcp, masks), threshold=ZERO_THRESHOLD, min_channels=min_channels)
    rule["kept_channels"] = float(sum(int(m.sum()) for pair in masks for m in pair))
    rule["total_channels"] = float(sum(m.numel() for pair in masks for m in pair))
    return pruned, rule


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


def _require_deap(model: ReIDNet) -> None:
    if model.config.get("pcp") != "deap":
        raise ValueError(f"expected a DEAP PCP model (pcp='deap'), got pcp={model.config.get('pcp')!r}")


# ----------------------------------------------------------------------------------------------- gradual pruning
def group_scores(model: ReIDNet) -> List[Tuple[Tensor, Tensor]]:
    """Importance per prunable group: pruner norms of a PCP model, BN ``(gamma, beta)`` norms of a plain one."""
    return pruner_scores(model) if model.config.get("pcp") else bn_scores(model)


@torch.no_grad()
def zero_groups_(model: ReIDNet, masks: List[Tuple[Tensor, Tensor]]) -> None:
    """Zero the dropped groups in place: pruner-1 columns / pruner-2 rows of a PCP model, or the conv1-BN /
    conv2-BN ``(gamma, beta)`` pairs of a plain one (a channel whose pair is 0 outputs 0 after its ReLU)."""
    if model.config.get("pcp"):
        _require_deap(model)
        for block, (m1, m3) in zip(model.pcp_blocks(), masks):
            block.pruner1.weight[:, ~m1.to(block.pruner1.weight.device)] = 0
            block.pruner2.weight[~m3.to(block.pruner2.weight.device)] = 0
        return
    for (_, block), (m1, m3) in zip(model.named_blocks(), masks):
        for bn, m in ((block.conv1.bn, m1), (block.conv2.bn, m3)):
            bn.weight[~m.to(bn.weight.device)] = 0
            bn.bias[~m.to(bn.bias.device)] = 0


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
                 input_size: Tuple[int, int, int], allocation: str = "uniform", min_channels: int = 1):
        if not 0 < target_macs <= 1 or not 0 < end_frac <= 1:
            raise ValueError(f"GradualPruning: need 0 < target_macs <= 1 and 0 < end_frac <= 1, got "
                             f"{target_macs}, {end_frac}")
        if allocation not in ALLOCATIONS:
            raise ValueError(f"unknown allocation '{allocation}'; valid: {', '.join(ALLOCATIONS)}")
        self.model, self.target, self.total, self.end_frac = model, target_macs, total_epochs, end_frac
        self.input_size, self.allocation, self.min_channels = input_size, allocation, min_channels
        # MACs depend on the structure only: count them on a PCP twin of a plain model
        self._shape = model if model.config.get("pcp") else build_model(**dict(model.config, pcp="deap"))
        self.masks = [tuple(s > 0 for s in pair) for pair in group_scores(model)]
        self._full_macs = _macs_of(self._shape, [tuple(torch.ones_like(m) for m in p) for p in self.masks],
                                   input_size)

    def macs_fraction_at(self, epoch: int) -> float:
        s = min(1.0, epoch / max(1e-9, self.end_frac * self.total))
        return self.target + (1.0 - self.target) * (1.0 - s) ** 3

    def update(self, epoch: int) -> Dict[str, float]:
        f = self.macs_fraction_at(epoch)
        scores = [tuple(s.cpu() * m for s, m in zip(pair, mpair))
                  for pair, mpair in zip(group_scores(self.model), self.masks)]
        if f >= 1.0:
            return {"prune_macs_budget": 1.0}
        if self.allocation == "uniform":
            keep, _ = fraction_for_macs(self._shape, scores, f, self.input_size, min_channels=self.min_channels)
            new = top_fraction_masks(scores, keep, min_channels=self.min_channels)
        else:
            thr, _ = threshold_for_macs(self._shape, scores, f, self.input_size, min_channels=self.min_channels)
            new = keep_masks(scores, thr, min_channels=self.min_channels)
        self.masks = [(a & c, b & d) for (a, b), (c, d) in zip(self.masks, new)]
        self.apply_()
        kept = sum(int(m.sum()) for pair in self.masks for m in pair)
        total = sum(m.numel() for pair in self.masks for m in pair)
        return {"prune_macs_budget": f, "prune_kept_frac": kept / total,
                "prune_macs_frac": _macs_of(self._shape, self.masks, self.input_size) / self._full_macs}

    def apply_(self) -> None:
        zero_groups_(self.model, self.masks)
