"""Re-ID retrieval evaluation: distances, mAP / CMC / mINP, k-reciprocal re-ranking, bootstrap intervals.

Arrays in, numbers out: this module knows nothing about models. Protocol (METHODS 4.1, Market-1501 /
VeRi-776 style): for each query, gallery items with the same pid *and* the same camid are removed ("junk");
a query with no remaining true match is skipped (and counted). All rates are fractions in [0, 1].

Ranking rule: gallery items are sorted by ascending distance with a *stable* sort, so equal distances
keep gallery-index order (lower index ranks first). The released code used numpy's default (unstable)
quicksort, whose tie order is unspecified; with continuous features ties do not occur in practice.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "compute_distance",
    "evaluate",
    "re_ranking",
    "bootstrap_interval",
    "paired_bootstrap",
    "summarize",
    "METRICS",
]

METRICS = ("cosine", "arccos", "euclidean", "sqeuclidean")

# DEAP's arccos distance clips cos to [-1 + eps, 1 - eps] (METHODS 4.1).
_ARCCOS_EPS = 1e-5
# (sq)euclidean: entries with d^2 <= _REFINE_REL * (|q|^2 + |g|^2) are recomputed from explicit
# differences, so identical vectors give exactly 0 (the |q|^2 + |g|^2 - 2 q.g expansion cancels badly).
_REFINE_REL = 1e-7
# default evaluate chunk: about this many (query, gallery) cells per block (8 bytes each -> 16 MiB).
_CELLS_PER_CHUNK = 1 << 21


# ------------------------------------------------------------------------------------------ helpers
def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _to_tensor(x: Any, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D feature matrix (N, D), got shape {tuple(t.shape)}")
    if not (t.is_floating_point()):
        t = t.double()
    return t


def _stable_order(block: np.ndarray) -> np.ndarray:
    """Row-wise ascending order of ``block`` (rows x G), ties broken by column index (stable).

    float32 fast path: each value is mapped to a monotone uint32 key, packed with its column index into
    a uint64 (key << 32 | index) and sorted; all keys are distinct, so the (fast, unstable) sort gives
    exactly the stable order. Other dtypes use numpy's stable argsort.
    """
    g = block.shape[1]
    if block.dtype == np.float16:
        block = block.astype(np.float32)
    if block.dtype != np.float32 or g >= 2**32:
        return np.argsort(block, axis=1, kind="stable")
    u = (block + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into +0.0 (equal distances)
    # negative floats: flip all bits; non-negative: flip the sign bit -> unsigned order == float order
    mask = np.negative(u >> np.uint32(31)) | np.uint32(0x80000000)
    key = (u ^ mask).astype(np.uint64)
    key <<= np.uint64(32)
    key |= np.arange(g, dtype=np.uint64)
    key.sort(axis=1)
    return key.astype(np.uint32)  # low 32 bits = column index


def _codes(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Encode two label arrays with a shared integer code book (labels of any comparable dtype)."""
    _, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    inv = inv.reshape(-1).astype(np.int64)
    return inv[: len(a)], inv[len(a):]


# ------------------------------------------------------------------------------------------ distance
def compute_distance(
    qf: Any,
    gf: Any,
    metric: str = "cosine",
    *,
    normalize: bool = False,
    chunk: int = 1024,
) -> np.ndarray:
    """Distance matrix (Q, G) as float32 numpy between query features ``qf`` (Q, D) and gallery ``gf`` (G, D).

    Accepts torch tensors (computed on their device) or numpy arrays. Metrics:

    * ``"cosine"``: ``1 - q_hat . g_hat`` (features L2-normalised; a zero vector has cosine 0), in [0, 2].
    * ``"arccos"``: DEAP's ``arccos(clip(q_hat . g_hat, -1 + 1e-5, 1 - 1e-5))`` (same ranking as cosine).
    * ``"euclidean"`` / ``"sqeuclidean"``: ``||q - g||`` / ``||q - g||^2``, non-negative, via the float64
      expansion ``|q|^2 + |g|^2 - 2 q.g``; near-zero entries are recomputed from explicit differences, so
      identical vectors give exactly 0 (``torch.cdist``'s matmul path does not, METHODS 8.1).

    ``normalize=True`` L2-normalises the features first (relevant for the Euclidean metrics).
    ``chunk`` is the number of query rows per block (bounds the temporary memory).
    """
    if metric not in METRICS:
        raise ValueError(f"compute_distance: unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    q, g = _to_tensor(qf, "qf"), _to_tensor(gf, "gf")
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f"compute_distance: feature dims differ: qf {tuple(q.shape)} vs gf {tuple(g.shape)}")
    if q.device != g.device:
        raise ValueError(f"compute_distance: qf on {q.device} but gf on {g.device}")
    if not (torch.isfinite(q).all() and torch.isfinite(g).all()):
        raise ValueError("compute_distance: features contain NaN or Inf")
    if chunk < 1:
        raise ValueError(f"compute_distance: chunk must be >= 1, got {chunk}")
    out = np.empty((q.shape[0], g.shape[0]), dtype=np.float32)
    if q.shape[0] == 0 or g.shape[0] == 0:
        return out
    angular = metric in ("cosine", "arccos")
    dtype = torch.float32 if angular else torch.float64
    q, g = q.to(dtype), g.to(dtype)
    if angular or normalize:
        q = torch.nn.functional.normalize(q, dim=1)
        g = torch.nn.functional.normalize(g, dim=1)
    with torch.no_grad():
        if angular:
            gt = g.t()
            on_cpu = q.device.type == "cpu"
            out_t = torch.from_numpy(out)  # shares memory with ``out``
            one = torch.ones(1, dtype=dtype, device=q.device)
            for s in range(0, q.shape[0], chunk):
                qb = q[s:s + chunk]
                if metric == "cosine":  # 1 - q.g in one BLAS call, written in place on CPU
                    dst = out_t[s:s + qb.shape[0]] if on_cpu else None
                    d = torch.addmm(one, qb, gt, beta=1.0, alpha=-1.0, out=dst).clamp_(0.0, 2.0)
                else:
                    d = torch.arccos((qb @ gt).clamp_(-1.0 + _ARCCOS_EPS, 1.0 - _ARCCOS_EPS))
                if not (on_cpu and metric == "cosine"):
                    out_t[s:s + qb.shape[0]] = d.cpu()
            return out
        gn = (g * g).sum(1)
        gt = g.t().contiguous()
        for s in range(0, q.shape[0], chunk):
            qb = q[s:s + chunk]
            qn = (qb * qb).sum(1)
            scale = qn[:, None] + gn[None, :]
            d2 = (scale - 2.0 * (qb @ gt)).clamp_(min=0.0)
            rows, cols = torch.nonzero(d2 <= _REFINE_REL * scale, as_tuple=True)
            for p in range(0, rows.numel(), 65536):  # exact recomputation of near-duplicates
                r, c = rows[p:p + 65536], cols[p:p + 65536]
                d2[r, c] = ((qb[r] - g[c]) ** 2).sum(1)
            d = d2.sqrt_() if metric == "euclidean" else d2
            out[s:s + chunk] = d.to(torch.float32).cpu().numpy()
    return out


# ------------------------------------------------------------------------------------------ evaluate
def evaluate(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    *,
    return_per_query: bool = False,
    chunk_size: Optional[int] = None,
    threads: Optional[int] = None,
) -> Dict[str, Any]:
    """Market/VeRi evaluation of a (Q, G) distance matrix (smaller = more similar).

    For query q, gallery items with the same pid and camid are removed; the remaining items with the same
    pid are its positives (``#rel``). Ranks count kept items only, sorted stably (ties -> lower gallery
    index first). With positives at ranks ``r_1 < ... < r_n`` (1-based):

    * ``AP_q = (1/n) sum_k k / r_k`` (precision at each hit); ``mAP`` = mean over valid queries.
    * ``CMC(r)`` = fraction of valid queries with ``r_1 <= r``; ``cmc[0]`` is Rank-1; the array has length
      ``max_rank`` (values beyond the number of kept items repeat the last one).
    * ``INP_q = n / r_n`` (Ye et al. mINP); ``mINP`` = mean over valid queries.

    Queries without positives are skipped (``num_skipped``); if none is valid a ``ValueError`` is raised.
    Work is vectorised and chunked over queries (``chunk_size`` rows; default about 2M cells per block); the
    chunks run on ``threads`` worker threads (default: torch's intra-op thread count; numpy's sort and
    gathers release the GIL), each writing its own rows, so the result does not depend on ``threads``.

    ``return_per_query=True`` adds full-length (Q,) arrays aligned with the queries: ``ap`` and ``inp``
    (NaN when skipped), ``first_hit`` (0-based rank of the first positive; -1 when skipped), ``num_pos``,
    ``valid`` (bool mask; alias ``valid_mask``) and ``q_pids``. These feed the bootstrap functions.
    """
    dist = _to_numpy(distmat, "distmat")
    if dist.ndim != 2:
        raise ValueError(f"evaluate: distmat must be 2-D (num_query, num_gallery), got shape {dist.shape}")
    nq, ng = dist.shape
    qp, gp = _to_numpy(q_pids, "q_pids").reshape(-1), _to_numpy(g_pids, "g_pids").reshape(-1)
    qc, gc = _to_numpy(q_camids, "q_camids").reshape(-1), _to_numpy(g_camids, "g_camids").reshape(-1)
    for name, arr, n in (("q_pids", qp, nq), ("q_camids", qc, nq), ("g_pids", gp, ng), ("g_camids", gc, ng)):
        if len(arr) != n:
            raise ValueError(f"evaluate: {name} has length {len(arr)} but distmat has shape {dist.shape}")
    if max_rank < 1:
        raise ValueError(f"evaluate: max_rank must be >= 1, got {max_rank}")
    if not (np.issubdtype(dist.dtype, np.floating) or np.issubdtype(dist.dtype, np.integer)):
        raise ValueError(f"evaluate: distmat must be numeric, got dtype {dist.dtype}")
    if chunk_size is None:
        chunk_size = max(1, _CELLS_PER_CHUNK // max(ng, 1))
    if chunk_size < 1:
        raise ValueError(f"evaluate: chunk_size must be >= 1, got {chunk_size}")

    qpc, gpc = _codes(qp, gp)
    qcc, gcc = _codes(qc, gc)
    ap = np.full(nq, np.nan)
    inp = np.full(nq, np.nan)
    first_hit = np.full(nq, -1, dtype=np.int64)
    num_pos = np.zeros(nq, dtype=np.int64)

    def one_chunk(s: int) -> None:
        block = dist[s:s + chunk_size]
        if np.issubdtype(block.dtype, np.floating) and np.isnan(block).any():
            bad = s + int(np.nonzero(np.isnan(block).any(1))[0][0])
            raise ValueError(f"evaluate: distmat contains NaN (first in query row {bad})")
        c = block.shape[0]
        order = _stable_order(block)                                   # (c, G) gallery indices
        rows, cols = np.nonzero(gpc[order] == qpc[s:s + c, None])      # same-pid items, row-major
        is_junk = gcc[order[rows, cols]] == qcc[s + rows]              # ... also same camera -> removed
        # rank among kept items = position - (#junk earlier in the same row)
        row_start = np.searchsorted(rows, np.arange(c))
        junk_before = np.cumsum(is_junk) - is_junk                     # exclusive count over the block
        junk_before = junk_before - junk_before[row_start[rows]]        # ... restarted at each row
        good = ~is_junk
        g_rows = rows[good]
        rank = (cols[good] - junk_before[good] + 1).astype(np.float64)  # 1-based ranks of positives
        g_start = np.searchsorted(g_rows, np.arange(c))
        g_end = np.searchsorted(g_rows, np.arange(c), side="right")
        n = g_end - g_start
        k = np.arange(len(g_rows)) - g_start[g_rows] + 1                # hit counter within the row
        valid = n > 0
        idx = np.nonzero(valid)[0]
        sums = np.bincount(g_rows, weights=k / rank, minlength=c)
        num_pos[s:s + c] = n
        ap[s + idx] = sums[idx] / n[idx]
        first_hit[s + idx] = rank[g_start[idx]].astype(np.int64) - 1
        inp[s + idx] = n[idx] / rank[g_end[idx] - 1]

    starts = list(range(0, nq, chunk_size))
    workers = min(len(starts), max(1, torch.get_num_threads() if threads is None else int(threads)))
    if workers <= 1:
        for s in starts:
            one_chunk(s)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for f in [pool.submit(one_chunk, s) for s in starts]:  # in order: the first error is raised
                f.result()

    valid = num_pos > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("evaluate: no query has a true match in the gallery after same-camera removal")
    hist = np.bincount(np.minimum(first_hit[valid], max_rank), minlength=max_rank + 1)[:max_rank]
    out: Dict[str, Any] = {
        "mAP": float(ap[valid].mean()),
        "cmc": np.cumsum(hist) / num_valid,
        "mINP": float(inp[valid].mean()),
        "num_valid": num_valid,
        "num_skipped": int(nq - num_valid),
    }
    if return_per_query:
        out.update(ap=ap, inp=inp, first_hit=first_hit, num_pos=num_pos, valid=valid, valid_mask=valid,
                   q_pids=qp.copy())
    return out


# ------------------------------------------------------------------------------------------ re-ranking
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


# ------------------------------------------------------------------------------------------ bootstrap
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
