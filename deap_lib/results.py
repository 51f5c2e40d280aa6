"""Study outputs: records, tables, figures, the main comparison table and the README's results section.

Layout of a results folder (``results/`` by default; everything written atomically)::

    results/
      summary.csv              one row per (run, form), appended by deap_lib.study
      records/<name>.json      each notebook's key metrics (:func:`record`)
      tables/<name>.csv|.md    tables (:func:`save_table`) + <name>.json holding the caption
      figures/<name>.png       figures (:func:`save_figure`, :func:`save_image`) + <name>.json caption
      executed/                notebooks executed by ``python -m deap_lib reproduce``

Artifact names start with the notebook number (``02_1_dilemma_map``); :func:`render_readme` groups the
README's results section by that prefix and orders tables and figures by name within a group.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .fileio import atomic_write, atomic_write_text

PathLike = Union[str, "os.PathLike[str]"]

START_MARKER = "<!-- results:start -->"
END_MARKER = "<!-- results:end -->"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: README group titles per notebook prefix of an artifact name.
STAGES = {"00": "Data", "01": "Teacher and plain student", "02": "The KD + NP dilemma",
          "03": "DEAP training", "04": "Absorption, complexity and speed", "05": "CDD against DEAP",
          "06": "Resolution-aware KD (HR teacher, LR student)",
          "07": "Structure learning by KD under a MACs or parameter budget"}


# ------------------------------------------------------------------------------------------------ helpers
def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith((".json", ".csv", ".md", ".png")):
        raise ValueError(f"artifact name {name!r} must be letters, digits, '_', '-', '.' (no folder, no "
                         "extension), e.g. '02_dilemma_map'")
    return name


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON types; numpy scalars/arrays converted; non-finite floats are an error."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), where)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise ValueError(f"record: {where} is {float(value)}; recorded numbers must be finite "
                             "(use None for a missing value)")
        return float(value)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"record: {where} has type {type(value).__name__}; use numbers, strings, lists or dicts")


def _caption(folder: Path, name: str, caption: Optional[str]) -> None:
    text = caption if caption else name
    atomic_write_text(folder / f"{name}.json", json.dumps({"caption": text}, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------ records
def record(results_dir: PathLike, name: str, data: Mapping[str, Any]) -> Path:
    """Write ``data`` (a dict of numbers / strings / lists / dicts) to ``results_dir/records/<name>.json``
    atomically and return the path. Non-finite numbers raise ``ValueError`` naming the key."""
    if not isinstance(data, Mapping):
        raise TypeError(f"record {name!r}: data must be a dict, got {type(data).__name__}")
    plain = _plain(data, name)
    path = Path(results_dir) / "records" / f"{_check_name(name)}.json"
    return atomic_write_text(path, json.dumps(plain, indent=1, sort_keys=True) + "\n")


def table_records(df) -> List[Dict[str, Any]]:
    """A table's rows as dicts for :func:`record`, its missing values (NaN, e.g. the budget of a reference
    row) as None."""
    return [{k: (None if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)) else v)
             for k, v in r.items()} for r in df.to_dict("records")]


def load_record(results_dir: PathLike, name: str) -> Dict[str, Any]:
    path = Path(results_dir) / "records" / f"{_check_name(name)}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no record {name!r}: {path} does not exist")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------ tables
def _cell(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, (float, np.floating)) and math.isnan(float(v))):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


_NUMBERISH = re.compile(r"^-?[0-9.]+(e[+-]?[0-9]+)?( \[-?[0-9.]+, -?[0-9.]+\])?%?$|^$")


def to_markdown(df, digits: int = 2, index: bool = False) -> str:
    """A GitHub Markdown table of ``df`` (floats with ``digits`` decimals; columns of numbers, including text
    such as "81.2 [79.9, 82.6]", right-aligned)."""
    if index:
        df = df.reset_index()
    cols = [str(c) for c in df.columns]
    rows = [[_cell(v, digits) for v in r] for r in df.itertuples(index=False, name=None)]
    right = [bool(rows) and all(_NUMBERISH.match(r[j]) for r in rows)
             and not all(isinstance(v, (bool, np.bool_)) for v in df.iloc[:, j]) for j in range(len(cols))]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in cols) + " |",
             "|" + "|".join("---:" if a else "---" for a in right) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def save_table(df, results_dir: PathLike, name: str, *, caption: Optional[str] = None, digits: int = 2,
               markdown_df=None) -> Tuple[Path, Path]:
    """Write ``df`` to ``results_dir/tables/<name>.csv`` and a Markdown rendering to ``<name>.md``
    (``markdown_df`` if given, e.g. with text columns such as "81.2 [79.9, 82.6]"); the caption goes to
    ``<name>.json``. Returns ``(csv_path, md_path)``."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"save_table {name!r}: expected a pandas DataFrame, got {type(df).__name__}")
    folder = Path(results_dir) / "tables"
    _check_name(name)
    csv_path = atomic_write_text(folder / f"{name}.csv", df.to_csv(index=False, float_format="%.6g"))
    md_path = atomic_write_text(folder / f"{name}.md", to_markdown(df if markdown_df is None else markdown_df,
                                                                  digits))
    _caption(folder, name, caption)
    return csv_path, md_path


def save_figure(fig, results_dir: PathLike, name: str, *, caption: Optional[str] = None, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``results_dir/figures/<name>.png`` (atomically, no version metadata)."""
    folder = Path(results_dir) / "figures"
    _check_name(name)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    path = atomic_write(folder / f"{name}.png", lambda f: f.write(buf.getvalue()))
    _caption(folder, name, caption)
    return path


def save_image(image, results_dir: PathLike, name: str, *, caption: Optional[str] = None) -> Path:
    """Save a PIL image as ``results_dir/figures/<name>.png`` (atomically)."""
    folder = Path(results_dir) / "figures"
    _check_name(name)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path = atomic_write(folder / f"{name}.png", lambda f: f.write(buf.getvalue()))
    _caption(folder, name, caption)
    return path


# ------------------------------------------------------------------------------------------------ main table
def load_per_query(run_dir: PathLike, form: str) -> Dict[str, np.ndarray]:
    """The per-query arrays of ``form`` written by the runner (:meth:`deap_lib.rundir.RunDir.per_query`)."""
    from .rundir import RunDir

    return RunDir(run_dir).per_query(form)


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

    from .evaluation import paired_bootstrap

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


# ------------------------------------------------------------------------------------------------ README
def has_study(results_dir: PathLike) -> bool:
    """Whether ``results_dir`` holds any table, figure or record."""
    root = Path(results_dir)
    return any(any((root / sub).glob(pat)) for sub, pat in
               (("tables", "*.md"), ("figures", "*.png"), ("records", "*.json")))


def _load_caption(folder: Path, name: str) -> str:
    meta = folder / f"{name}.json"
    if meta.is_file():
        try:
            return str(json.loads(meta.read_text()).get("caption") or name)
        except (ValueError, AttributeError) as e:
            raise ValueError(f"{meta}: not a caption file ({e})") from e
    return name


def _group(name: str) -> str:
    head = name.split("_", 1)[0]
    return head if head.isdigit() else "~"


def notebook_durations(results_dir: PathLike = "results") -> Dict[str, float]:
    """Seconds each executed notebook in ``results_dir/executed/`` took, as papermill recorded it
    (``metadata.papermill.duration``), in notebook order; notebooks without a duration are left out."""
    out: Dict[str, float] = {}
    for nb in sorted((Path(results_dir) / "executed").glob("*.ipynb")):
        try:
            d = json.loads(nb.read_text()).get("metadata", {}).get("papermill", {}).get("duration")
        except ValueError:
            continue
        if isinstance(d, (int, float)) and math.isfinite(d):
            out[nb.stem] = float(d)
    return out


def headline(results_dir: PathLike = "results") -> str:
    """One generated sentence with the study's headline (teacher vs DEAP's absorbed student), from
    ``records/04_absorb_and_plots.json``; empty when that record is missing."""
    path = Path(results_dir) / "records" / "04_absorb_and_plots.json"
    if not path.is_file():
        return ""
    r = json.loads(path.read_text())
    lat = r.get("latency_speedup", {})
    fast = ", ".join(f"{lat[k]:.2f}x at batch {k.split('@')[1]}" for k in sorted(lat, key=lambda k: int(k.split("@")[1]))
                     if k.startswith("absorbed@"))
    text = (f"**Headline.** DEAP's absorbed student removes {r['deap_params_reduction_pct']:.1f} % of the "
            f"teacher's parameters and {r['deap_macs_reduction_pct']:.1f} % of its MACs; its mAP is "
            f"{r['deap_mAP']:.1f} % against the teacher's {r['teacher_mAP']:.1f} % (difference "
            f"{r['deap_d_mAP']:+.1f} points, 95 % paired-bootstrap interval [{r['deap_d_mAP_low']:+.1f}, "
            f"{r['deap_d_mAP_high']:+.1f}]).")
    if fast:
        text += f" CPU latency speed-up over the BN-folded teacher (eager PyTorch): {fast}."
    seeds = Path(results_dir) / "records" / "02_dilemma.json"
    st = json.loads(seeds.read_text()).get("seed_stats") if seeds.is_file() else None
    if st and "deap" in st.get("methods", {}) and "teacher" in st["methods"]:
        d, t = st["methods"]["deap"], st["methods"]["teacher"]
        text += (f" Over seeds {', '.join(map(str, st['seeds']))} (mean ± sample std): DEAP absorbed "
                 f"{d['mAP_mean']:.1f} ± {d['mAP_std']:.1f} % mAP, the teacher {t['mAP_mean']:.1f} ± "
                 f"{t['mAP_std']:.1f} %; DEAP minus the teacher of its seed {d['d_teacher_mean']:+.1f} points "
                 f"(95 % t interval over seeds [{d['d_teacher_ci_low']:+.1f}, {d['d_teacher_ci_high']:+.1f}]).")
        phrase = {"DEAP better": "better than", "DEAP worse": "worse than",
                  "no clear difference": "not clearly different from"}
        calls = {p: sorted(m for m, r in st.get("deap_vs", {}).items() if r.get("verdict") == v)
                 for v, p in phrase.items()}
        if any(calls.values()):
            text += " Across seeds DEAP is " + "; ".join(f"{p} {', '.join(ms)}" for p, ms in calls.items() if ms) + "."
    cdd = Path(results_dir) / "records" / "05_cdd.json"
    c = json.loads(cdd.read_text()) if cdd.is_file() else {}
    o = c.get("deap_minus_cdd_over_seeds") or {}
    if o.get("n_seeds"):
        text += (f" Against CDD (its predecessor; both at {c['target_macs']:.0%} of the MACs, notebook 05) DEAP "
                 f"scores {o['d_mean']:+.1f} points over {o['n_seeds']} seeds (95 % t interval "
                 f"[{o['d_ci_low']:+.1f}, {o['d_ci_high']:+.1f}]; {o['verdict']}).")
    return (text + _resolution_sentence(Path(results_dir) / "records" / "06_resolution.json")
            + _structure_sentence(Path(results_dir) / "records" / "07_structure.json"))


def _structure_sentence(path: Path) -> str:
    """The headline's sentence on notebook 07: at each budget, structure_kd against DEAP and the thinned
    network (seed, paired bootstrap)."""
    if not path.is_file():
        return ""
    r = json.loads(path.read_text())
    maps = {(x["method"], x.get("budget_kind"), x.get("budget")): x["mAP"] for x in r["sweep"]}
    parts = []
    for b in sorted(r["budgets"], reverse=True):
        d = {x["structure_kd vs"]: x for x in r["structure_kd_minus"]
             if x["budget_kind"] == "macs" and x["budget"] == b and x["structure_kd vs"] in ("deap", "thinned_kd")}
        bits = ", ".join(f"{m} {maps[(m, 'macs', b)]:.1f}" for m in ("structure_kd", "deap", "thinned_kd"))
        vs = "; ".join(f"minus {m} {d[m]['d_mAP']:+.1f} [{d[m]['d_low']:+.1f}, {d[m]['d_high']:+.1f}]"
                       for m in ("deap", "thinned_kd") if m in d)
        parts.append(f"at {b:.0%} of the MACs {bits} % ({vs})")
    return (f" Structure learning by KD (notebook 07, seed {r['seed']}, 95 % paired-bootstrap intervals): "
            + "; ".join(parts) + ".")


def _resolution_sentence(path: Path) -> str:
    """The headline's sentence on notebook 06 (crkd against the LR baselines at its comparison scale)."""
    if not path.is_file():
        return ""
    r = json.loads(path.read_text())
    a = r["ablation_scale"]
    text = (f" Resolution-aware KD (notebook 06) at {a:g} of the input side: crkd {r['crkd_mAP']:.1f} % mAP at "
            f"{r['crkd_macs'] / 1e6:.2f} M MACs (the teacher {r['teacher_mAP']:.1f} % at "
            f"{r['teacher_macs'] / 1e6:.2f} M)")
    over = r.get("crkd_vs_lr_baselines_over_seeds") or []
    if over:
        text += "; over seeds " + ", ".join(map(str, r["seeds"])) + ", crkd minus " + "; minus ".join(
            f"{o['vs']} {o['d_mean']:+.1f} points (95 % t interval [{o['d_ci_low']:+.1f}, {o['d_ci_high']:+.1f}]; "
            f"{o['verdict']})" for o in over)
    else:
        text += ", seed " + str(r["seeds"][0]) + ": crkd minus " + "; minus ".join(
            f"{o['vs']} {o['d_mAP']:+.1f} points ([{o['d_low']:+.1f}, {o['d_high']:+.1f}]; {o['verdict']})"
            for o in r.get("crkd_vs_lr_baselines", []))
    return text + "."


def executed_stamps(root: PathLike) -> Dict[str, Dict[str, Any]]:
    """``{notebook: stamp}`` of every executed notebook under ``root/executed`` (its parameters, notebook hash
    and the code version that executed it), in name order."""
    out = {}
    for path in sorted(Path(root, "executed").glob("*.stamp.json")):
        try:
            out[path.name[:-len(".stamp.json")]] = json.loads(path.read_text())
        except ValueError:
            continue
    return out


def results_section(results_dir: PathLike = "results", link_base: PathLike = ".") -> str:
    """The README's generated results section (without markers), built from ``results_dir`` only.
    Links are relative to ``link_base`` (the README's folder). Deterministic: same files -> same text."""
    root = Path(results_dir)
    rel = Path(os.path.relpath(root.resolve(), Path(link_base).resolve())).as_posix()
    lines = ["## Results", "",
             "<!-- generated by `python -m deap_lib readme` from the results folder; do not edit by hand -->", ""]
    if not has_study(root):
        lines += [f"No study results yet: `make reproduce` runs the notebooks and fills `{rel}/` and this section.",
                  ""]
        return "\n".join(lines)
    rep = root / "records" / "reproduce.json"
    if rep.is_file():
        r = json.loads(rep.read_text())
        bits = [f"preset `{r.get('preset')}`", f"dataset `{r.get('dataset')}`"]
        if r.get("epochs") is not None:
            bits.append(f"{r['epochs']} epochs")
        bits.append(f"seed {r.get('seed')}")
        bits.append("full study" if r.get("full") else "core study (no ablations)")
        from .notebooks import PARAMETERS as _RUNNER_PARAMETERS  # injected into every notebook: not named

        stamps = executed_stamps(root)
        if stamps:  # every executed notebook's own code version and extra parameters, however many runs made them
            bits += sorted({f"`{k}={v}`" + f" ({name[:2]})" for name, st in stamps.items()
                            for k, v in (st.get("parameters") or {}).items() if k not in _RUNNER_PARAMETERS})
            by_code: Dict[str, List[str]] = {}
            for name, st in stamps.items():
                by_code.setdefault(str(st.get("code_version")), []).append(name[:2])
            bits.append("code " + ", ".join(f"`{c}` ({', '.join(ns)})" for c, ns in
                                            sorted(by_code.items(), key=lambda kv: kv[1])))
        else:
            bits += [f"`{k}={v}`" for k, v in sorted((r.get("parameters") or {}).items())]
            if r.get("code_version"):
                bits.append(f"code `{r['code_version']}`")
        lines += ["Produced by `python -m deap_lib reproduce`: " + ", ".join(bits) + ". Executed notebooks: "
                  f"[`{rel}/executed/`]({rel}/executed/); all runs: [`{rel}/summary.csv`]({rel}/summary.csv).", ""]
    head = headline(root)
    if head:
        lines += [head, ""]
    durations = notebook_durations(root)
    if durations:
        total = sum(durations.values())
        lines += ["Wall time of the executed notebooks (papermill, training included): "
                  + ", ".join(f"{n} {d / 60:.1f} min" for n, d in durations.items())
                  + f"; total {total / 60:.1f} min.", ""]
    tables = {p.stem for p in (root / "tables").glob("*.md")}
    figures = {p.stem for p in (root / "figures").glob("*.png")}
    items = sorted([(n, "table") for n in tables] + [(n, "figure") for n in figures])
    for g in sorted({_group(n) for n, _ in items}):
        lines += [f"### {STAGES.get(g, 'Other')}", ""]
        for name, kind in (it for it in items if _group(it[0]) == g):
            if kind == "table":
                cap = _load_caption(root / "tables", name)
                lines += [f"**{cap}** ([CSV]({rel}/tables/{name}.csv))", "",
                          (root / "tables" / f"{name}.md").read_text().rstrip("\n"), ""]
            else:
                cap = _load_caption(root / "figures", name)
                lines += [f"**{cap}**", "", f"![{cap}]({rel}/figures/{name}.png)", ""]
    return "\n".join(lines)


def _split_readme(text: str, path: Path) -> Tuple[str, str, str]:
    if text.count(START_MARKER) != 1 or text.count(END_MARKER) != 1:
        raise ValueError(f"{path}: needs exactly one '{START_MARKER}' and one '{END_MARKER}' line around the "
                         f"results section (found {text.count(START_MARKER)} and {text.count(END_MARKER)})")
    a = text.index(START_MARKER) + len(START_MARKER)
    b = text.index(END_MARKER)
    if b < a:
        raise ValueError(f"{path}: '{END_MARKER}' comes before '{START_MARKER}'")
    return text[:a], text[a:b], text[b:]


def readme_section(readme: PathLike = "README.md") -> str:
    """The current text between the README's results markers."""
    path = Path(readme)
    return _split_readme(path.read_text(), path)[1]


def render_readme(readme: PathLike = "README.md", results_dir: PathLike = "results", *, check: bool = False) -> bool:
    """Regenerate the README's results section (between :data:`START_MARKER` and :data:`END_MARKER`) from
    ``results_dir`` only; idempotent. ``check=True`` writes nothing and returns whether the README is up to
    date; otherwise returns whether the file was changed."""
    path = Path(readme)
    if not path.is_file():
        raise FileNotFoundError(f"render_readme: {path} does not exist")
    text = path.read_text()
    head, body, tail = _split_readme(text, path)
    new_body = "\n" + results_section(results_dir, path.parent) + "\n"
    if check:
        return body == new_body
    if body == new_body:
        return False
    atomic_write_text(path, head + new_body + tail)
    return True
