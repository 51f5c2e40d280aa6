"""The compression stage of a run, for any kind of gated student (DEAP / CDD pruners, BN gates of a plain
network): select channels (:mod:`deap_lib.pruning`), cut them (:func:`deap_lib.absorb.prune`), re-calibrate
BatchNorm, absorb into the deploy form (:func:`deap_lib.absorb.absorb`, verified in float64) and record
the paper's three evaluated forms (docs/methods/deap.rst §What is evaluated) plus the cut before re-calibration.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from torch import Tensor

from .absorb import absorb, prune, to_deploy
from .config import PruneConfig
from .export import save_compact
from .models import ReIDNet
from .rundir import RunDir
from .pruning import (ALLOCATIONS, Masks, Scores, fraction_for_macs, group_scores, keep_masks, recalibrate_bn,
                      threshold_for_macs, top_fraction_masks)


def select_and_prune(model: ReIDNet, scores: Optional[Scores] = None, *, threshold: float,
                     relative: bool = False, min_channels: int = 1, target_macs: Optional[float] = None,
                     input_size: Tuple[int, int, int] = (3, 64, 64), allocation: str = "global",
                     multiple: int = 1, kind: str = "macs") -> Tuple[ReIDNet, Dict[str, float]]:
    """Choose channels by their gate scores (default :func:`~deap_lib.pruning.group_scores`) with a fixed
    threshold or a MACs budget and cut them: the pruned, not absorbed model, and a dict describing the rule.

    ``allocation`` (with ``target_macs`` only): ``global`` - one threshold over all gates' norms (or norms
    relative to each gate's largest); ``uniform`` - every gate keeps the same share of its channels, its
    largest norms (Torch-Pruning's default, non-global pruning). ``multiple`` > 1 rounds every kept width up
    to a multiple inside the selection (:func:`~deap_lib.pruning.rounded_width`), so a budget is met by the
    rounded widths. ``kind``: the budget's resource, ``macs`` or ``params`` (:mod:`deap_lib.budget`)."""
    if allocation not in ALLOCATIONS:
        raise ValueError(f"unknown allocation '{allocation}'; valid: {', '.join(ALLOCATIONS)}")
    if scores is None:
        scores = group_scores(model)
    rule: Dict[str, Any] = {"threshold": threshold, "relative": float(relative), "min_channels": min_channels}
    if kind != "macs":
        rule["budget_kind"] = kind
    if multiple > 1:
        rule["width_multiple"] = multiple
    if target_macs is not None and allocation == "uniform":
        keep, frac = fraction_for_macs(model, scores, target_macs, input_size, min_channels=min_channels,
                                       multiple=multiple, kind=kind)
        masks = top_fraction_masks(scores, keep, min_channels=min_channels, multiple=multiple)
        del rule["threshold"]  # no threshold: a share of every gate
        rule.update(allocation="uniform", keep_fraction=keep, target_macs=target_macs, achieved_macs_fraction=frac)
    else:
        if target_macs is not None:
            if relative:  # one global threshold on the norms relative to each gate's largest
                scores = [tuple(s / s.max().clamp_min(1e-30) for s in pair) for pair in scores]
            threshold, frac = threshold_for_macs(model, scores, target_macs, input_size,
                                                 min_channels=min_channels, multiple=multiple, kind=kind)
            relative = False
            rule.update(threshold=threshold, target_macs=target_macs, achieved_macs_fraction=frac)
        masks = keep_masks(scores, threshold, relative=relative, min_channels=min_channels, multiple=multiple)
    pruned = prune(model, masks=masks)
    rule["kept_channels"] = float(sum(int(m.sum()) for pair in masks for m in pair))
    rule["total_channels"] = float(sum(m.numel() for pair in masks for m in pair))
    return pruned, rule


def cut(model: ReIDNet, pc: PruneConfig, input_size: Tuple[int, int, int],
        scores: Optional[Scores] = None) -> Tuple[ReIDNet, Dict[str, Any]]:
    """:func:`select_and_prune` with the run's prune settings."""
    return select_and_prune(model, scores, threshold=pc.threshold, relative=pc.relative,
                            min_channels=pc.min_channels, target_macs=pc.target_macs, input_size=input_size,
                            allocation=pc.allocation, multiple=pc.multiple(), kind=pc.budget_kind)


def compress_student(student: ReIDNet, pc: PruneConfig, rec, recalib_batches: Callable[[int], Iterable[Tensor]],
                     *, unpruned: Optional[ReIDNet] = None, scores: Optional[Scores] = None,
                     masks: Optional[Masks] = None, rule: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Cut, re-calibrate BN, absorb and evaluate the three forms: ``unpruned`` (deploy form of the trained
    student), ``pruned_no_recalib`` / ``pruned`` (cut, before / after BN re-calibration) and ``absorbed``
    (written to ``absorbed.pt``). ``rec`` is a :class:`~deap_lib.records.Recorder`.

    ``unpruned``: the student before it was cut, when ``student`` is already compact (``np_then_kd``).
    ``masks`` (with its ``rule``): a selection the method made itself (``structure_kd``'s budget cut)
    instead of the run's prune settings."""
    out: Dict[str, Any] = {}
    rec.add("unpruned", to_deploy(unpruned if unpruned is not None else student))
    if unpruned is not None:
        pruned, rule = student, {"note": "student was pruned before its last training stage"}
    else:
        if masks is not None:
            pruned, rule = prune(student, masks=masks), dict(rule or {})
        else:
            pruned, rule = cut(student, pc, rec.input_size, scores)
        if pc.bn_recalib_batches:
            rec.add("pruned_no_recalib", pruned)
            rule["bn_recalib_batches"] = recalibrate_bn(pruned, recalib_batches(pc.bn_recalib_batches), rec.device)
    rec.add("pruned", pruned)
    deploy, report = absorb(pruned.eval(), threshold=0.0, min_channels=1, input_size=rec.input_size, profile=False)
    rec.add("absorbed", deploy)
    save_compact(deploy.cpu(), str(RunDir(rec.out_dir).absorbed_path))
    out["prune_rule"] = rule
    out["absorb_verification"] = report.verification
    out["kept_widths"] = [list(w) for w in deploy.block_widths()]
    out["original_widths"] = [list(w) for w in (unpruned or student).block_widths()]
    return out
