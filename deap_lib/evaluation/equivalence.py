"""Verdicts over seeds: "no loss" as an equivalence test, "better" / "worse" as a paired interval.

The paper's claim ("no accuracy loss") is an equivalence claim, which a non-significant difference does not
support. Given the paired differences ``d_s`` (compressed minus reference, mAP points, one per seed), the two
one-sided t-tests (TOST, Schuirmann 1987) test ``H0: mean <= -delta`` and ``H0: mean >= +delta``; both
rejected at ``alpha`` (equivalently: the ``1 - 2 alpha`` t interval of the mean lies inside
``(-delta, +delta)``) give the verdict *equivalent within ±delta*.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Sequence

import numpy as np

VERDICTS = ("equivalent", "better", "worse", "inconclusive")


def tost(diffs: Sequence[float], margin: float = 1.0, alpha: float = 0.05) -> Dict[str, float]:
    """Two one-sided t-tests of ``mean(diffs)`` against ``±margin`` over ``n >= 2`` paired differences.

    Returns ``n``, ``mean``, ``std`` (ddof 1), ``t_lower`` / ``p_lower`` (against ``-margin``), ``t_upper`` /
    ``p_upper`` (against ``+margin``), ``p`` (the larger), ``ci_low`` / ``ci_high`` (the ``1 - 2 alpha`` t
    interval) and ``equivalent`` (1.0 or 0.0)."""
    from scipy import stats

    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"tost: needs at least 2 paired differences (one per seed), got {d.size}")
    if not margin > 0 or not 0 < alpha < 0.5:
        raise ValueError(f"tost: margin must be > 0 and alpha in (0, 0.5), got margin={margin}, alpha={alpha}")
    n, mean, std = len(d), float(d.mean()), float(d.std(ddof=1))
    se = std / math.sqrt(n)
    if se == 0.0:  # identical differences: decided by where they lie
        inside = -margin < mean < margin
        t_lo = t_hi = math.inf if inside else -math.inf
        p_lo = p_hi = 0.0 if inside else 1.0
    else:
        t_lo, t_hi = (mean + margin) / se, (margin - mean) / se
        p_lo, p_hi = float(stats.t.sf(t_lo, n - 1)), float(stats.t.sf(t_hi, n - 1))
    half = float(stats.t.ppf(1 - alpha, n - 1)) * se
    p = max(p_lo, p_hi)
    return {"n": float(n), "mean": mean, "std": std, "t_lower": t_lo, "p_lower": p_lo, "t_upper": t_hi,
            "p_upper": p_hi, "p": p, "ci_low": mean - half, "ci_high": mean + half,
            "equivalent": float(p < alpha)}


def verdict(diffs: Sequence[float], margin: float = 1.0, alpha: float = 0.05) -> str:
    """One word for paired differences over seeds: ``equivalent`` (TOST within ±margin), else ``better`` /
    ``worse`` when the ``1 - alpha`` two-sided t interval of the mean excludes 0 on that side, else
    ``inconclusive``."""
    return verdict_of_tost(tost(diffs, margin, alpha), alpha)


def verdict_of_tost(t: Dict[str, Any], alpha: float = 0.05) -> str:
    """:func:`verdict` of a computed :func:`tost` result (same ``alpha``)."""
    from scipy import stats

    if t["equivalent"]:
        return "equivalent"
    se = t["std"] / math.sqrt(t["n"])
    half = float(stats.t.ppf(1 - alpha / 2, int(t["n"]) - 1)) * se
    if t["mean"] - half > 0:
        return "better"
    if t["mean"] + half < 0:
        return "worse"
    return "inconclusive"
