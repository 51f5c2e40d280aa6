"""Choices made on the validation split, and over-seed verdicts against a reference.

:func:`choose_on_validation`: the study's rule for a sparsity weight (DEAP's lambda, slimming's lambda, one
grid and one rule for every method): the strongest setting whose *validation* mAP stays within ``margin``
points of the teacher's validation mAP; the test split is not read. :func:`verdicts_over_seeds`: a compressed
method against a reference (the teacher: the paper's claim; the uncompressed KD student: what the compression
itself costs), seed by seed, with the equivalence test of :mod:`deap_lib.evaluation.equivalence`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

#: the settings a study compares (the sparsity weight of every pruning method), and the choice's margin
LAMBDA_GRID = (0.003, 0.01, 0.02, 0.03)


def choose_on_validation(probes: Sequence[Mapping[str, float]], reference_val: float, margin: float = 1.0,
                         key: str = "lam") -> Dict[str, Any]:
    """The probe with the largest ``key`` whose ``val_mAP`` >= ``reference_val - margin`` (the smallest ``key``
    when none qualifies, flagged). ``probes``: dicts with ``key`` and ``val_mAP`` (percent). Returns the chosen
    probe's values plus ``qualifies`` (bool) and ``rule`` (text)."""
    if not probes:
        raise ValueError("choose_on_validation: no probes")
    missing = [p for p in probes if key not in p or "val_mAP" not in p or p["val_mAP"] is None]
    if missing:
        raise KeyError(f"choose_on_validation: every probe needs '{key}' and a validation mAP ('val_mAP'); "
                       f"{len(missing)} lack them (were the runs trained with a validation split, data.val_root?)")
    floor = reference_val - margin
    ok = [p for p in probes if p["val_mAP"] >= floor]
    best = max(ok, key=lambda p: p[key]) if ok else min(probes, key=lambda p: p[key])
    return {**best, "qualifies": bool(ok), "rule": f"largest {key} with validation mAP >= {floor:.2f} "
            f"(reference {reference_val:.2f} - {margin:g})"}


def verdicts_over_seeds(values: Mapping[int, float], reference: Mapping[int, float], margin: float = 1.0,
                        alpha: float = 0.05) -> Dict[str, Any]:
    """``values[s] - reference[s]`` over the seeds both have: the per-seed differences, their TOST within
    ``±margin`` (:func:`~deap_lib.evaluation.tost`) and the one-word verdict; with one seed, the difference and
    the verdict ``one seed``."""
    from ..evaluation import tost, verdict_of_tost

    seeds: List[int] = sorted(set(values) & set(reference))
    if not seeds:
        raise KeyError("verdicts_over_seeds: no seed has both runs")
    d = [float(values[s]) - float(reference[s]) for s in seeds]
    out: Dict[str, Any] = {"seeds": seeds, "per_seed": d, "margin": margin}
    if len(d) < 2:
        return {**out, "mean": d[0], "verdict": "one seed"}
    t = tost(d, margin, alpha)
    return {**out, **{k: t[k] for k in ("mean", "std", "p", "ci_low", "ci_high")}, "verdict": verdict_of_tost(t, alpha)}
