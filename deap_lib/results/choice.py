"""Choices made on the validation split, and over-seed verdicts against a reference.

:func:`choose_on_validation`: the study's rule for a sparsity weight (DEAP's lambda, slimming's lambda, one
grid and one rule for every method): the strongest setting whose *validation* mAP stays within ``margin``
points of the teacher's validation mAP; the test split is not read. :func:`verdicts_over_seeds`: a compressed
method against a reference (the teacher: the paper's claim; the uncompressed KD student: what the compression
itself costs), seed by seed, with the equivalence test of :mod:`deap_lib.evaluation.equivalence`;
:func:`arms_over_seeds`: every arm of a comparison (an ablation, another loss) against its reference arm, seed
by seed (paired bootstrap) and over seeds (that verdict).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

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


def arms_over_seeds(runs: Mapping[Tuple[str, int], Mapping[str, Any]], reference: str, margin: float = 1.0,
                    n_boot: int = 1000) -> List[Dict[str, Any]]:
    """Each arm of ``runs`` (``{(arm, seed): a run's metrics, with its run_dir}``) against the ``reference`` arm
    over the seeds both have, on the deployed form's test mAP: per arm its mean mAP and that of the reference,
    the difference per seed with its paired-bootstrap 95 % interval over query identities (``per_seed``), and
    over seeds (:func:`verdicts_over_seeds`: mean, 90 % t interval, TOST within ``±margin``, verdict)."""
    from ..evaluation import paired_bootstrap
    from ..rundir import RunDir, deployed_form

    def per_query(m):
        return RunDir(m["run_dir"]).per_query(deployed_form(m["forms"]))

    def m_ap(m):
        return float(m["forms"][deployed_form(m["forms"])]["mAP"])

    arms = list(dict.fromkeys(a for a, _ in runs))
    if reference not in arms:
        raise KeyError(f"arms_over_seeds: no run of the reference arm '{reference}'; arms: {', '.join(arms)}")
    rows = []
    for arm in arms:
        if arm == reference:
            continue
        seeds = sorted(s for a, s in runs if a == arm and (reference, s) in runs)
        if not seeds:
            raise KeyError(f"arms_over_seeds: arm '{arm}' shares no seed with '{reference}'")
        per_seed = []
        for s in seeds:
            d = paired_bootstrap(per_query(runs[(arm, s)]), per_query(runs[(reference, s)]), n_boot=n_boot)["mAP"]
            per_seed.append({"seed": s, "d_mAP": 100 * d["diff"], "d_low": 100 * d["low"], "d_high": 100 * d["high"]})
        v = verdicts_over_seeds({s: m_ap(runs[(arm, s)]) for s in seeds},
                                {s: m_ap(runs[(reference, s)]) for s in seeds}, margin=margin)
        rows.append({"arm": arm, "seeds": seeds, "mAP": sum(m_ap(runs[(arm, s)]) for s in seeds) / len(seeds),
                     "reference_mAP": sum(m_ap(runs[(reference, s)]) for s in seeds) / len(seeds),
                     "d_mean": v["mean"], "ci_low": v.get("ci_low"), "ci_high": v.get("ci_high"),
                     "verdict": v["verdict"], "per_seed": per_seed})
    return rows
