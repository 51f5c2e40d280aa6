"""The study's comparison tables: the main table (every run's deployed form against its teacher, paired
bootstrap), the summaries over seeds, the plateau check; none of them mixes machines (:func:`one_machine`)."""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np


PathLike = Union[str, "os.PathLike[str]"]

from .artifacts import load_per_query


MAIN_COLUMNS = ["label", "run", "method", "form", "seed", "reference", "mAP", "mAP_low", "mAP_high", "rank1", "params_m",
                "macs_m", "params_reduction_pct", "macs_reduction_pct", "d_mAP", "d_mAP_low", "d_mAP_high",
                "p_better"]


def one_machine(runs, where: str):
    """``runs`` (:meth:`deap_lib.study.Study.load_runs` rows) when they all ran on one machine (their
    ``machine`` label: processor, torch, threads, precision); else a ValueError naming the runs of each
    machine. Every table and figure of runs passes through it: a table never mixes machines."""
    if "machine" not in runs.columns or runs.empty:
        return runs
    groups = {m: sorted(set(g["run"])) for m, g in runs.groupby(runs["machine"].fillna("unrecorded"))}
    if len(groups) > 1:
        named = "; ".join(f"{m}: {', '.join(r[:6])}{' ...' if len(r) > 6 else ''}" for m, r in groups.items())
        raise ValueError(f"{where}: the runs come from {len(groups)} machines ({named}); a table compares runs "
                         "of one machine: rerun the others there, or select one machine's runs")
    return runs


def main_table(runs, *, teacher: Optional[str] = None, methods: Optional[Sequence[str]] = None,
               n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Teacher vs every run's deployed form (absorbed for pruning methods), DEAP first after the teacher.

    ``runs``: :meth:`deap_lib.study.Study.load_runs` output (columns run, run_dir, method, seed, form,
    deployed, mAP, mAP_low, mAP_high, rank1, params_no_classifier, macs; with an ``arch`` column, a run is
    compared with a teacher of its own backbone where one exists). Each row is compared with the
    teacher run of the same seed (else ``teacher``, a run name): parameter / MAC reductions in percent and
    the paired cluster-bootstrap mAP difference (percentage points, ``level`` interval, ``p_better`` = share
    of resamples where the model beats the teacher; 0 for the teacher row itself, whose ``run`` equals its
    ``reference``) from the runs' ``per_query_<form>.npz`` files.
    ``methods`` restricts (and orders) the methods shown. Returns a DataFrame with :data:`MAIN_COLUMNS`.
    """
    import pandas as pd

    from ..evaluation import paired_bootstrap

    one_machine(runs, "main_table")

    need = {"run", "run_dir", "method", "seed", "form", "deployed", "mAP", "mAP_low", "mAP_high", "rank1",
            "params_no_classifier", "macs"}
    missing = sorted(need - set(runs.columns))
    if missing:
        raise KeyError(f"main_table: runs table lacks columns {missing} (pass Study.load_runs())")
    dep = runs[runs["deployed"].astype(bool)].copy()
    teachers = dep[dep["method"] == "teacher"]
    if teachers.empty:
        raise ValueError("main_table: no teacher run among the runs")
    if teacher is not None:
        fixed = teachers[teachers["run"] == teacher]
        if fixed.empty:
            raise KeyError(f"main_table: teacher run {teacher!r} not found; teacher runs: "
                           f"{sorted(teachers['run'])}")

    def teacher_for(seed_: int, arch=None):
        same = teachers[teachers["seed"] == seed_]
        if arch is not None and (same["arch"] == arch).any():  # a MobileNetV2 student: its own teacher
            same = same[same["arch"] == arch]
        if teacher is not None:
            return fixed.iloc[0] if same.empty or teacher in set(same["run"]) else same.iloc[0]
        if same.empty:
            if len(teachers) > 1:
                raise ValueError(f"main_table: no teacher run with seed {seed_} and several others "
                                 f"({sorted(teachers['run'])}); pass teacher=")
            return teachers.iloc[0]
        return same.iloc[0]

    order = list(methods) if methods is not None else \
        ["teacher", "deap"] + sorted(m for m in dep["method"].unique() if m not in ("teacher", "deap"))
    dep = dep[dep["method"].isin(order)]
    dep["_o"] = dep["method"].map({m: i for i, m in enumerate(order)})
    dep = dep.sort_values(["_o", "run", "seed"], kind="stable")
    rows: List[Dict[str, Any]] = []
    cache: Dict[Tuple[str, str], Dict[str, np.ndarray]] = {}

    def pq(run_dir: str, form: str) -> Dict[str, np.ndarray]:
        if (run_dir, form) not in cache:
            cache[(run_dir, form)] = load_per_query(run_dir, form)
        return cache[(run_dir, form)]

    for _, r in dep.iterrows():
        t = teacher_for(int(r["seed"]), r["arch"] if "arch" in dep.columns else None)
        if r["run_dir"] == t["run_dir"]:
            d = {"diff": 0.0, "low": 0.0, "high": 0.0, "frac_a_gt_b": 0.0}
        else:
            d = paired_bootstrap(pq(r["run_dir"], r["form"]), pq(t["run_dir"], t["form"]), n_boot=n_boot,
                                 seed=seed, level=level)["mAP"]
        rows.append({
            "label": r["run"] if r["form"] in ("teacher", "student", "absorbed") else f"{r['run']} ({r['form']})",
            "run": r["run"], "method": r["method"], "form": r["form"], "seed": int(r["seed"]), "reference": t["run"],
            "mAP": r["mAP"], "mAP_low": r["mAP_low"], "mAP_high": r["mAP_high"], "rank1": r["rank1"],
            "params_m": r["params_no_classifier"] / 1e6, "macs_m": r["macs"] / 1e6,
            "params_reduction_pct": 100.0 * (1.0 - r["params_no_classifier"] / t["params_no_classifier"]),
            "macs_reduction_pct": 100.0 * (1.0 - r["macs"] / t["macs"]),
            "d_mAP": 100.0 * d["diff"], "d_mAP_low": 100.0 * d["low"], "d_mAP_high": 100.0 * d["high"],
            "p_better": d["frac_a_gt_b"],
        })
    return pd.DataFrame(rows, columns=MAIN_COLUMNS)


#: the study's plateau rule: a run has reached its plateau when its last two evaluations differ by less
PLATEAU_POINTS = 1.0


def plateau(log) -> Dict[str, Any]:
    """Whether a training log's mAP curve has flattened: the last two evaluations (``eval_mAP``) and their
    difference in points (``delta`` = last - previous), ``flat`` when ``|delta| < PLATEAU_POINTS``. With fewer
    than two evaluations ``delta`` is NaN and ``flat`` False."""
    ev = log["eval_mAP"].dropna() if "eval_mAP" in log else []
    if len(ev) < 2:
        return {"last": float("nan"), "previous": float("nan"), "delta": float("nan"), "flat": False}
    last, prev = float(ev.iloc[-1]), float(ev.iloc[-2])
    return {"last": last, "previous": prev, "delta": last - prev, "flat": abs(last - prev) < PLATEAU_POINTS}


def format_main_table(table, digits: int = 1):
    """The Markdown-friendly view of :func:`main_table`: intervals as text, units in the headers."""
    import pandas as pd

    f = f"{{:.{digits}f}}"

    def ci(e, lo, hi):
        return f"{f.format(e)} [{f.format(lo)}, {f.format(hi)}]"

    return pd.DataFrame({
        "model": table["label"], "form": table["form"],
        "mAP % [95% CI]": [ci(*v) for v in zip(table["mAP"], table["mAP_low"], table["mAP_high"])],
        "Rank-1 %": [f.format(v) for v in table["rank1"]],
        "params (M)": [f"{v:.3f}" for v in table["params_m"]],
        "MACs (M)": [f"{v:.2f}" for v in table["macs_m"]],
        "params -%": [f.format(v) for v in table["params_reduction_pct"]],
        "MACs -%": [f.format(v) for v in table["macs_reduction_pct"]],
        "mAP vs teacher (pp) [95% CI]": ["reference" if run == ref else ci(*v) for run, ref, *v in
                                         zip(table["run"], table["reference"], table["d_mAP"], table["d_mAP_low"],
                                             table["d_mAP_high"])],
    })


# ------------------------------------------------------------------------------------------------ seeds
SEED_COLUMNS = ["method", "form", "n_seeds", "seeds", "mAP_mean", "mAP_std", "mAP_ci_low", "mAP_ci_high",
                "rank1_mean", "rank1_std", "mINP_mean", "mINP_std", "params_m", "macs_m",
                "d_teacher_mean", "d_teacher_std", "d_teacher_ci_low", "d_teacher_ci_high"]


def _mean_std_ci(values: Sequence[float], level: float) -> Tuple[float, float, float, float]:
    """Mean, sample std (ddof 1) and the Student-t ``level`` interval of the mean of ``values``
    (std and interval are NaN for a single value)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1)) * std / math.sqrt(len(v))
    return mean, std, mean - half, mean + half


def _one_per_seed(runs, where: str):
    """The deployed rows of ``runs``; a method with two runs of one seed, or runs of two machines, raise,
    naming them."""
    one_machine(runs, where)
    dep = runs[runs["deployed"].astype(bool)]
    dup = dep[dep.duplicated(["method", "seed"], keep=False)]
    if not dup.empty:
        raise ValueError(f"{where}: several runs of one method and seed ({', '.join(sorted(dup['run']))}); "
                         "pass one run per method and seed (e.g. leave out ablations)")
    return dep


def seed_summary(runs, *, methods: Optional[Sequence[str]] = None, level: float = 0.95):
    """Mean and spread over seeds of every method's deployed model.

    ``runs``: :meth:`deap_lib.study.Study.load_runs` rows of the runs to summarise, one run per method and
    seed (a second run of the same method and seed, e.g. an ablation, is an error: filter it out). Per method: the seeds found, mean and sample
    standard deviation (ddof 1) of mAP / Rank-1 / mINP in percent, the Student-t ``level`` interval of the
    mean mAP over seeds, params / MACs (their mean), and the difference to the teacher of the *same seed*
    (mAP points; mean, std and t interval over the seeds that have both). Returns a DataFrame with
    :data:`SEED_COLUMNS`, methods in ``methods`` order (default: teacher, deap, then the rest by name).
    """
    import pandas as pd

    need = {"method", "run", "seed", "deployed", "mAP", "rank1", "mINP", "params_no_classifier", "macs"}
    missing = sorted(need - set(runs.columns))
    if missing:
        raise KeyError(f"seed_summary: runs table lacks columns {missing} (pass Study.load_runs())")
    if not 0.0 < level < 1.0:
        raise ValueError(f"seed_summary: level must be in (0, 1), got {level}")
    dep = _one_per_seed(runs, "seed_summary")
    order = list(methods) if methods is not None else \
        ["teacher", "deap"] + sorted(m for m in dep["method"].unique() if m not in ("teacher", "deap"))
    unknown = [m for m in order if m not in set(dep["method"])]
    if unknown:
        raise KeyError(f"seed_summary: no runs of method(s) {', '.join(unknown)}; methods found: "
                       f"{', '.join(sorted(dep['method'].unique()))}")
    teacher = {int(r["seed"]): float(r["mAP"]) for _, r in dep[dep["method"] == "teacher"].iterrows()}
    rows = []
    for m in order:
        g = dep[dep["method"] == m].sort_values("seed")
        mean, std, lo, hi = _mean_std_ci(g["mAP"], level)
        d = [float(r["mAP"]) - teacher[int(r["seed"])] for _, r in g.iterrows() if int(r["seed"]) in teacher]
        dm, ds, dlo, dhi = _mean_std_ci(d, level) if d else (math.nan,) * 4
        r1, r1s = _mean_std_ci(g["rank1"], level)[:2]
        mi, mis = _mean_std_ci(g["mINP"], level)[:2]
        rows.append({"method": m, "form": str(g["form"].iloc[0]), "n_seeds": len(g),
                     "seeds": " ".join(str(int(s)) for s in g["seed"]), "mAP_mean": mean, "mAP_std": std,
                     "mAP_ci_low": lo, "mAP_ci_high": hi, "rank1_mean": r1, "rank1_std": r1s, "mINP_mean": mi,
                     "mINP_std": mis, "params_m": float(g["params_no_classifier"].mean()) / 1e6,
                     "macs_m": float(g["macs"].mean()) / 1e6, "d_teacher_mean": dm, "d_teacher_std": ds,
                     "d_teacher_ci_low": dlo, "d_teacher_ci_high": dhi})
    return pd.DataFrame(rows, columns=SEED_COLUMNS)


def seed_differences(runs, reference: str = "deap", *, methods: Optional[Sequence[str]] = None,
                     level: float = 0.95):
    """``reference`` minus each other method, seed by seed (deployed models; ``runs`` as for
    :func:`seed_summary`, one run per method and seed): the mAP
    difference in points of every seed both have, its mean, sample std, Student-t ``level`` interval over
    seeds, and how many seeds ``reference`` scores higher. Returns columns ``vs``, ``n_seeds``, ``per_seed``
    (text), ``d_mean``, ``d_std``, ``d_ci_low``, ``d_ci_high``, ``wins``."""
    import pandas as pd

    dep = _one_per_seed(runs, "seed_differences")
    ref = {int(r["seed"]): float(r["mAP"]) for _, r in dep[dep["method"] == reference].iterrows()}
    if not ref:
        raise KeyError(f"seed_differences: no runs of {reference!r}; methods found: "
                       f"{', '.join(sorted(dep['method'].unique()))}")
    others = list(methods) if methods is not None else sorted(m for m in dep["method"].unique() if m != reference)
    rows = []
    for m in others:
        other = {int(r["seed"]): float(r["mAP"]) for _, r in dep[dep["method"] == m].iterrows()}
        seeds = sorted(set(ref) & set(other))
        if not seeds:
            raise KeyError(f"seed_differences: {reference!r} and {m!r} share no seed")
        d = [ref[s] - other[s] for s in seeds]
        mean, std, lo, hi = _mean_std_ci(d, level)
        rows.append({"vs": m, "n_seeds": len(seeds), "per_seed": " ".join(f"{v:+.1f}" for v in d),
                     "d_mean": mean, "d_std": std, "d_ci_low": lo, "d_ci_high": hi,
                     "wins": int(sum(v > 0 for v in d))})
    return pd.DataFrame(rows, columns=["vs", "n_seeds", "per_seed", "d_mean", "d_std", "d_ci_low", "d_ci_high",
                                       "wins"])


def format_seed_summary(table, digits: int = 1):
    """The Markdown-friendly view of :func:`seed_summary`: ``mean ± std`` and ``[low, high]`` as text."""
    import pandas as pd

    f = f"{{:.{digits}f}}"

    def pm(m, s):
        return f.format(m) if math.isnan(s) else f"{f.format(m)} ± {f.format(s)}"

    def ci(lo, hi):
        return "" if math.isnan(lo) else f"[{f.format(lo)}, {f.format(hi)}]"

    return pd.DataFrame({
        "method": table["method"], "form": table["form"], "seeds": table["n_seeds"],
        "mAP % mean ± std": [pm(*v) for v in zip(table["mAP_mean"], table["mAP_std"])],
        "mAP 95% CI of the mean": [ci(*v) for v in zip(table["mAP_ci_low"], table["mAP_ci_high"])],
        "Rank-1 % mean ± std": [pm(*v) for v in zip(table["rank1_mean"], table["rank1_std"])],
        "params (M)": [f"{v:.3f}" for v in table["params_m"]],
        "MACs (M)": [f"{v:.2f}" for v in table["macs_m"]],
        "vs same-seed teacher (pp) mean ± std": ["reference" if m == "teacher" else pm(*v) for m, *v in
                                                 zip(table["method"], table["d_teacher_mean"], table["d_teacher_std"])],
        "its 95% CI": ["" if m == "teacher" else ci(*v) for m, *v in
                       zip(table["method"], table["d_teacher_ci_low"], table["d_teacher_ci_high"])],
    })
