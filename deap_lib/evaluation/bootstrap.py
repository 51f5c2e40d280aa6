"""Intervals for retrieval metrics: the cluster bootstrap over query identities (one model, or two paired
on the same queries) and the table-ready summary of a per-query evaluation."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np


_PER_QUERY_KEYS = ("ap", "inp", "first_hit", "valid", "q_pids")


def _per_identity(per_query: Mapping[str, Any], ranks: Sequence[int], name: str):
    """Per-identity sums of each metric over valid queries: (names, sums (n_ids, M), counts, pids)."""
    missing = [k for k in _PER_QUERY_KEYS if k not in per_query]
    if missing:
        raise KeyError(f"{name}: missing per-query keys {missing}; pass evaluate(..., return_per_query=True)")
    valid = np.asarray(per_query["valid"], dtype=bool)
    arrays = {k: np.asarray(per_query[k]) for k in _PER_QUERY_KEYS}
    for k, a in arrays.items():
        if a.shape != valid.shape:
            raise ValueError(f"{name}: per-query array '{k}' has shape {a.shape}, expected {valid.shape}")
    if not valid.any():
        raise ValueError(f"{name}: no valid query")
    fh = arrays["first_hit"][valid]
    cols = {"mAP": arrays["ap"][valid].astype(np.float64), "mINP": arrays["inp"][valid].astype(np.float64)}
    for r in ranks:
        cols[f"rank{int(r)}"] = (fh < int(r)).astype(np.float64)
    pids, inv = np.unique(arrays["q_pids"][valid], return_inverse=True)
    inv = inv.reshape(-1)
    counts = np.bincount(inv, minlength=len(pids)).astype(np.float64)
    sums = np.stack([np.bincount(inv, weights=v, minlength=len(pids)) for v in cols.values()], axis=1)
    points = np.array([v.mean() for v in cols.values()])
    return list(cols), sums, counts, points, valid, arrays["q_pids"]


def _draw_weights(n_ids: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_ids) multiplicities of identities in each cluster-bootstrap resample."""
    if n_boot < 1:
        raise ValueError(f"bootstrap: n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_ids, size=(n_boot, n_ids))
    flat = (np.arange(n_boot)[:, None] * n_ids + draws).reshape(-1)
    return np.bincount(flat, minlength=n_boot * n_ids).reshape(n_boot, n_ids).astype(np.float64)


def _check_level(level: float) -> Tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap: level must be in (0, 1), got {level}")
    a = (1.0 - level) / 2.0
    return a, 1.0 - a


def bootstrap_interval(
    per_query: Mapping[str, Any],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    *,
    ranks: Sequence[int] = (1,),
) -> Dict[str, Any]:
    """Percentile cluster-bootstrap intervals over query *identities* (fractions, not percent).

    Each resample draws the valid queries' identities with replacement; all valid queries of a drawn
    identity enter (as often as it is drawn). A resample's mAP is sum(AP) / #queries over the drawn
    identities (likewise mINP and Rank-r). Returns ``{metric: {"estimate", "low", "high"}}`` for
    ``mAP``, ``mINP`` and ``rank{r}`` for r in ``ranks``, plus ``num_queries``, ``num_ids``, ``n_boot``,
    ``level`` and ``seed``. The estimate is the full-sample value (equal to ``evaluate``'s).
    """
    lo_q, hi_q = _check_level(level)
    names, sums, counts, points, valid, _ = _per_identity(per_query, ranks, "bootstrap_interval")
    w = _draw_weights(len(counts), n_boot, seed)
    stats = (w @ sums) / (w @ counts)[:, None]
    low, high = np.quantile(stats, [lo_q, hi_q], axis=0)
    out: Dict[str, Any] = {
        m: {"estimate": float(points[i]), "low": float(low[i]), "high": float(high[i])}
        for i, m in enumerate(names)
    }
    out.update(num_queries=int(valid.sum()), num_ids=len(counts), n_boot=n_boot, level=level, seed=seed)
    return out


def paired_bootstrap(
    per_query_a: Mapping[str, Any],
    per_query_b: Mapping[str, Any],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    *,
    ranks: Sequence[int] = (1,),
) -> Dict[str, Any]:
    """Paired cluster bootstrap of the difference a - b on the same queries (same identity draws).

    Returns ``{metric: {"diff", "low", "high", "frac_a_gt_b"}}`` (fractions; ``frac_a_gt_b`` is the share
    of resamples with a strictly larger than b) for ``mAP``, ``mINP`` and ``rank{r}``, plus counts.
    Both results must come from the same queries and gallery (equal ``valid`` masks and ``q_pids``).
    """
    lo_q, hi_q = _check_level(level)
    names, sa, ca, pa, va, qa = _per_identity(per_query_a, ranks, "paired_bootstrap (a)")
    _, sb, cb, pb, vb, qb = _per_identity(per_query_b, ranks, "paired_bootstrap (b)")
    if va.shape != vb.shape or not np.array_equal(va, vb) or not np.array_equal(qa, qb):
        raise ValueError("paired_bootstrap: a and b must be evaluated on the same queries "
                         "(their 'valid' masks and 'q_pids' differ)")
    w = _draw_weights(len(ca), n_boot, seed)
    diff = (w @ (sa - sb)) / (w @ ca)[:, None]
    low, high = np.quantile(diff, [lo_q, hi_q], axis=0)
    gt = (diff > 0).mean(0)
    out: Dict[str, Any] = {
        m: {"diff": float(pa[i] - pb[i]), "low": float(low[i]), "high": float(high[i]),
            "frac_a_gt_b": float(gt[i])}
        for i, m in enumerate(names)
    }
    out.update(num_queries=int(va.sum()), num_ids=len(ca), n_boot=n_boot, level=level, seed=seed)
    return out


def summarize(
    per_query: Mapping[str, Any],
    *,
    ranks: Sequence[int] = (1, 5, 10),
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    digits: int = 1,
) -> Dict[str, Any]:
    """Table-ready flat dict in percent: ``mAP``, ``mAP_low``, ``mAP_high``, ``mAP_text``
    (e.g. ``"81.2 [79.9, 82.6]"``), the same for ``mINP`` and ``rank{r}``, plus ``num_queries``,
    ``num_ids``, ``n_boot``, ``level``."""
    b = bootstrap_interval(per_query, n_boot=n_boot, seed=seed, level=level, ranks=ranks)
    out: Dict[str, Any] = {}
    for m in ["mAP"] + [f"rank{int(r)}" for r in ranks] + ["mINP"]:
        e, lo, hi = (100.0 * b[m][k] for k in ("estimate", "low", "high"))
        out[m], out[f"{m}_low"], out[f"{m}_high"] = e, lo, hi
        out[f"{m}_text"] = f"{e:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    out.update(num_queries=b["num_queries"], num_ids=b["num_ids"], n_boot=n_boot, level=level)
    return out
