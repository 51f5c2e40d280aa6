"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) of a query-gallery distance matrix."""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from .metrics import _CELLS_PER_CHUNK, _stable_order, _to_numpy


def re_ranking(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) of a (Q, G) distance matrix.

    With all N = Q + G items and distance d (assembled from the three blocks, self-distance forced first):

    * ``N(p, k)``: p's k + 1 nearest items (p included); ``R(p, k) = {g in N(p, k) : p in N(g, k)}``.
    * ``R*(p, k) = R(p, k) U R(q, k/2)`` for every q in ``R(p, k)`` with
      ``|R(q, k/2) & R(p, k)| >= 2/3 |R(q, k/2)|``.
    * ``V_p[g] = exp(-d(p, g))`` for g in ``R*(p, k1)``, else 0, normalised to sum 1;
      local query expansion ``V_p <- mean of V_g`` over p's k2 nearest items, p included (k2 = 1: none).
    * Jaccard distance ``d_J = 1 - sum min(V_p, V_g) / sum max(V_p, V_g)``;
      result ``(1 - lambda) d_J + lambda d`` (so ``lambda_value = 1`` returns ``q_g_dist`` unchanged).

    Distances are used as given (the released DEAP code feeds ``2 - 2 cos`` divided by each column's
    maximum; prepare them that way to mimic it). V is kept sparse, so memory grows with N * k1 * k2,
    plus the (Q, G) output and one row-block of N distances at a time.
    """
    qg = _to_numpy(q_g_dist, "q_g_dist").astype(np.float32, copy=False)
    qq = _to_numpy(q_q_dist, "q_q_dist").astype(np.float32, copy=False)
    gg = _to_numpy(g_g_dist, "g_g_dist").astype(np.float32, copy=False)
    if qg.ndim != 2:
        raise ValueError(f"re_ranking: q_g_dist must be 2-D (Q, G), got shape {qg.shape}")
    nq, ng = qg.shape
    if qq.shape != (nq, nq):
        raise ValueError(f"re_ranking: q_q_dist must have shape {(nq, nq)}, got {qq.shape}")
    if gg.shape != (ng, ng):
        raise ValueError(f"re_ranking: g_g_dist must have shape {(ng, ng)}, got {gg.shape}")
    if k1 < 1 or k2 < 1:
        raise ValueError(f"re_ranking: k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"re_ranking: lambda_value must be in [0, 1], got {lambda_value}")
    for name, a in (("q_g_dist", qg), ("q_q_dist", qq), ("g_g_dist", gg)):
        if not np.isfinite(a).all():
            raise ValueError(f"re_ranking: {name} contains NaN or Inf")
    n = nq + ng
    k1 = min(k1, n - 1)
    kh = max(1, int(round(k1 / 2)))
    k2 = min(k2, n)
    kmax = max(k1 + 1, k2)

    def rows_of(r0: int, r1: int) -> np.ndarray:  # rows r0:r1 of the full N x N distance matrix
        parts = []
        if r0 < nq:
            a = min(r1, nq)
            parts.append(np.concatenate([qq[r0:a], qg[r0:a]], axis=1))
        if r1 > nq:
            a = max(r0, nq) - nq
            parts.append(np.concatenate([qg[:, a:r1 - nq].T, gg[a:r1 - nq]], axis=1))
        return np.concatenate(parts, axis=0)

    def pair_dist(p: np.ndarray, j: np.ndarray) -> np.ndarray:
        out = np.empty(len(p), dtype=np.float64)
        for pq, jq in ((True, True), (True, False), (False, True), (False, False)):
            m = ((p < nq) == pq) & ((j < nq) == jq)
            pp, jj = p[m], j[m]
            if pq and jq:
                out[m] = qq[pp, jj]
            elif pq:
                out[m] = qg[pp, jj - nq]
            elif jq:
                out[m] = qg[jj, pp - nq]
            else:
                out[m] = gg[pp - nq, jj - nq]
        return out

    # nearest neighbours of every item (self first, then stable by distance)
    nn = np.empty((n, kmax), dtype=np.int64)
    step = max(1, _CELLS_PER_CHUNK // n)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        block = rows_of(r0, r1)
        block[np.arange(r1 - r0), np.arange(r0, r1)] = -np.inf
        nn[r0:r1] = _stable_order(block)[:, :kmax]

    def reciprocal(k: int) -> Tuple[np.ndarray, np.ndarray]:
        fwd = nn[:, : k + 1]                                           # (N, k+1)
        ok = (nn[fwd, : k + 1] == np.arange(n)[:, None, None]).any(-1)  # p in N(g, k)
        return fwd, ok

    r_idx, r_ok = reciprocal(k1)
    h_idx, h_ok = reciprocal(kh)
    h_size = h_ok.sum(1)
    # membership keys p * N + g of R(p, k1), sorted, for the 2/3 overlap test
    r_keys = np.sort((np.arange(n)[:, None] * n + r_idx)[r_ok])
    cp, cj = np.nonzero(r_ok)
    cand = r_idx[cp, cj]                                                # q in R(p, k1), pairs (p, q)
    hk = cp[:, None] * n + h_idx[cand]                                  # candidate members as keys of p
    pos = np.minimum(np.searchsorted(r_keys, hk), len(r_keys) - 1)
    overlap = ((r_keys[pos] == hk) & h_ok[cand]).sum(1)
    accept = 3 * overlap >= 2 * h_size[cand]
    ap_, aq = cp[accept], cand[accept]
    keys = np.concatenate([r_keys, (ap_[:, None] * n + h_idx[aq])[h_ok[aq]]])
    keys = np.unique(keys)                                              # R*(p, k1) as sorted (p, g)
    vp, vg = keys // n, keys % n
    d = pair_dist(vp, vg)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(vp, minlength=n))])  # every row holds p itself
    # exp(-d) normalised per row; subtracting the row minimum first is exact and avoids underflow
    w = np.exp(-(d - np.minimum.reduceat(d, indptr[:-1])[vp]))
    w /= np.add.reduceat(w, indptr[:-1])[vp]

    if k2 > 1:  # local query expansion over N(p, k2): V_p <- mean_g V_g
        nb = nn[:, :k2]                                                 # (N, k2), p first
        src = nb.reshape(-1)
        lens = indptr[src + 1] - indptr[src]
        owner = np.repeat(np.repeat(np.arange(n), k2), lens)
        starts = np.repeat(indptr[src], lens)
        offs = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        e = starts + offs
        ukeys, inv = np.unique(owner * n + vg[e], return_inverse=True)
        w = np.bincount(inv.reshape(-1), weights=w[e], minlength=len(ukeys)) / k2
        vp, vg = ukeys // n, ukeys % n

    # Jaccard: sum_j min(V_p[j], V_g[j]) via an inverted index (column j -> gallery rows)
    is_g = vp >= nq
    gcol, grow, gval = vg[is_g], vp[is_g] - nq, w[is_g]
    o = np.argsort(gcol, kind="stable")
    gcol, grow, gval = gcol[o], grow[o], gval[o]
    col_start = np.searchsorted(gcol, np.arange(n))
    col_len = np.searchsorted(gcol, np.arange(n), side="right") - col_start
    q_rows, q_cols, q_vals = vp[~is_g], vg[~is_g], w[~is_g]             # sorted by query row
    # query blocks bounded both in output cells and in joined (query entry, gallery entry) pairs
    cost = np.cumsum(np.bincount(q_rows, weights=col_len[q_cols], minlength=nq))
    max_rows = max(1, _CELLS_PER_CHUNK // max(ng, 1))
    out = np.empty((nq, ng), dtype=np.float32)
    s = 0
    while s < nq:
        done = cost[s - 1] if s else 0.0
        e_ = int(np.searchsorted(cost, done + _CELLS_PER_CHUNK, side="right"))
        e_ = min(max(e_, s + 1), s + max_rows, nq)
        lo, hi = np.searchsorted(q_rows, [s, e_])
        r, cj_, v = q_rows[lo:hi] - s, q_cols[lo:hi], q_vals[lo:hi]
        lens = col_len[cj_]
        rep = np.repeat(np.arange(len(r)), lens)
        e = np.repeat(col_start[cj_], lens) + np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        inter = np.bincount(r[rep] * ng + grow[e], weights=np.minimum(v[rep], gval[e]),
                            minlength=(e_ - s) * ng).reshape(e_ - s, ng)
        jac = np.clip(1.0 - inter / (2.0 - inter), 0.0, 1.0)
        out[s:e_] = (1.0 - lambda_value) * jac + lambda_value * qg[s:e_]
        s = e_
    return out
