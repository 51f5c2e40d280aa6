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
    blocks = list(out.pcp_blocks())
    if len(blocks) != len(masks):
        raise ValueError(f"apply_masks: {len(masks)} masks for {len(blocks)} PCP blocks")
    for block, (m1, m3) in zip(blocks, masks):
        block.pruner1.weight[:, ~m1.to(block.pruner1.weight.device)] = 0
        block.pruner2.weight[~m3.to(block.pruner2.weight.device)] = 0
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


def select_and_prune(pcp: ReIDNet, scores: List[Tuple[Tensor, Tensor]], *, threshold: float,
                     relative: bool = False, min_channels: int = 1, target_macs: Optional[float] = None,
                     input_size: Tuple[int, int, int] = (3, 64, 64)) -> Tuple[ReIDNet, Dict[str, float]]:
    """Choose channels (fixed or MACs-budget threshold), zero the rest and remove them: the pruned, not
    absorbed model, and a dict describing the rule used."""
    rule: Dict[str, float] = {"threshold": threshold, "relative": float(relative), "min_channels": min_channels}
    if target_macs is not None:
        threshold, frac = threshold_for_macs(pcp, scores, target_macs, input_size, min_channels=min_channels)
        relative = False
        rule.update(threshold=threshold, relative=0.0, target_macs=target_macs, achieved_macs_fraction=frac)
    masks = keep_masks(scores, threshold, relative=relative, min_channels=min_channels)
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
