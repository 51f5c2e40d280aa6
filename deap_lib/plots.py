"""Figures and small tables the study notebooks share (logic that would otherwise repeat across cells).

Everything takes plain data (pandas frames of training logs, run metrics dicts, numbers) and a matplotlib
axis, so a notebook cell only says *what* to show; :mod:`deap_lib.results` saves and captions it.
"""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd


def verdict(low: float, high: float, who: str = "DEAP") -> str:
    """The study's reading of a difference with a 95 % interval: better / worse only when the interval
    excludes zero."""
    return f"{who} better" if low > 0 else (f"{who} worse" if high < 0 else "no clear difference")


def forms_table(forms: Mapping[str, Mapping], names: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """One row per evaluated model form of a run: mAP with its interval, Rank-1, params and MACs."""
    names = list(forms) if names is None else list(names)
    return pd.DataFrame([{"form": f, "mAP % [95% CI]": forms[f]["mAP_text"], "Rank-1 %": forms[f]["rank1"],
                          "params (M)": forms[f]["params_no_classifier"] / 1e6, "MACs (M)": forms[f]["macs"] / 1e6}
                         for f in names])


def paired_vs(ref, others: Mapping[str, object], who: str = "DEAP") -> pd.DataFrame:
    """``ref`` minus each of ``others`` (per-query arrays of :func:`deap_lib.results.load_per_query`): the
    paired-bootstrap mAP difference in points, its 95 % interval, the share of resamples ``ref`` wins and the
    verdict."""
    from .evaluation import paired_bootstrap

    rows = []
    for name, other in others.items():
        d = paired_bootstrap(ref, other)["mAP"]
        rows.append({f"{who.lower()} vs": name, "d_mAP": 100 * d["diff"], "d_low": 100 * d["low"],
                     "d_high": 100 * d["high"], "p_better": d["frac_a_gt_b"],
                     "verdict": verdict(d["low"], d["high"], who)})
    return pd.DataFrame(rows)


def eval_curves(ax, logs: Mapping[str, pd.DataFrame], *, marker: str = "o", ms: float = 3.0) -> None:
    """mAP over epochs (the ``eval_mAP`` column of each training log) of several runs on one axis; the y
    label names the split the evaluations read (the logs' ``eval_split``: ``val`` or ``test``)."""
    from matplotlib.ticker import MaxNLocator

    splits = set()
    for name, log in logs.items():
        if "eval_mAP" in log and log["eval_mAP"].notna().any():
            ok = log["eval_mAP"].notna()
            ax.plot(log.loc[ok, "global_epoch"], log.loc[ok, "eval_mAP"], marker=marker, ms=ms, label=name)
            splits |= set(log.loc[ok, "eval_split"].dropna().astype(str)) if "eval_split" in log else {"test"}
    where = {"val": "validation split", "test": "test split"}
    named = " + ".join(where.get(s, s) for s in sorted(splits))
    ax.set(xlabel="epoch", ylabel=f"mAP (%), {named}" if named else "mAP (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def loss_curves(ax, logs: Mapping[str, pd.DataFrame], *, log_scale: bool = False) -> None:
    """Every weighted loss term (``loss_<name>`` columns, not the total) per epoch of several runs."""
    from matplotlib.ticker import MaxNLocator

    for name, log in logs.items():
        for c in [c for c in log.columns if c.startswith("loss_") and c != "loss_total"]:
            y = log[c].abs().clip(lower=1e-12) if log_scale else log[c]
            label = c[5:] if len(logs) == 1 else f"{name}: {c[5:]}"
            ax.plot(log["global_epoch"], y, marker=".", label=label)
    if log_scale:
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="weighted loss term")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def bars_with_ci(ax, labels: Sequence[str], mean, low, high, colors: Optional[Sequence[str]] = None) -> None:
    """Bars of ``mean`` with asymmetric error bars down to ``low`` and up to ``high``."""
    mean, low, high = (np.asarray(v, float) for v in (mean, low, high))
    x = np.arange(len(labels))
    ax.bar(x, mean, yerr=np.vstack([mean - low, high - mean]), color=colors, capsize=3)
    ax.set_xticks(x, labels, rotation=30, ha="right")


def method_colors(methods: Sequence[str]) -> list:
    """Grey for the references (teacher, student, kd), red for DEAP, blue for the other compressed ones."""
    return ["tab:gray" if m in ("teacher", "student", "kd") else ("tab:red" if m == "deap" else "tab:blue")
            for m in methods]


def pareto_front(macs: Sequence[float], maps: Sequence[float]) -> list:
    """The (MACs, mAP) points no cheaper point beats: sorted by MACs, each with a higher mAP than all
    cheaper ones."""
    pts = sorted(zip(macs, maps), key=lambda p: (p[0], -p[1]))
    front, best = [], -np.inf
    for m, a in pts:
        if a > best:
            front.append((m, a))
            best = a
    return front


def seed_errorbars(ax, runs: pd.DataFrame, over: pd.DataFrame, methods: Sequence[str]) -> None:
    """Every seed's deployed mAP (dots) and the mean over seeds with its 95 % t interval, per method."""
    dep = runs[runs["deployed"]]
    xs, ys = [], []
    for i, m in enumerate(methods):
        g = dep[dep["method"] == m]
        xs += list(np.full(len(g), i) + np.linspace(-0.12, 0.12, len(g)))
        ys += list(g["mAP"])
        r = over.set_index("method").loc[m]
        first_black = m != "deap" and all(x == "deap" for x in methods[:i])
        ax.errorbar(i, r["mAP_mean"], yerr=[[r["mAP_mean"] - r["mAP_ci_low"]], [r["mAP_ci_high"] - r["mAP_mean"]]],
                    fmt="D", c="tab:red" if m == "deap" else "k", capsize=4, zorder=4,
                    label="deap: mean over seeds, 95 % t interval" if m == "deap" else
                    "mean over seeds, 95 % t interval" if first_black else None)
    ax.scatter(xs, ys, s=18, c="tab:gray", zorder=3, label="one seed's run")
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set(ylabel="mAP (%)")
    ax.legend(fontsize=7)


#: what the row labels of a kept-channels heat map name (for the figure itself)
WIDTHS_NOTE = ("C1: a bottleneck's conv1 outputs (the 3x3 conv's inputs); C3: its 3x3 conv's outputs (conv3's "
               "inputs); C: a basic block's one internal width")


def kept_share_rows(pruning_runs: Sequence[Dict]) -> tuple:
    """Per pruning run and prunable width (``C1``, ``C3`` of a bottleneck; ``C`` of a basic block), the share
    of channels kept in every block: ``(labels, rows)`` for a heat map."""
    labels, rows = [], []
    for m in sorted(pruning_runs, key=lambda m: m["run"]):
        k, o = np.array(m["kept_widths"], float), np.array(m["original_widths"], float)
        names = ("C1", "C3") if k.shape[1] == 2 else ("C",)
        for j, side in enumerate(names):
            labels.append(f"{m['run']}: {side}")
            rows.append(k[:, j] / o[:, j])
    return labels, rows
