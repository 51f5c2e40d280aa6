"""Distances between query and gallery features and the retrieval metrics: mAP, CMC (rank-k) and mINP.

Protocol (Market-1501 / VeRi-776 style): for each query, gallery items with the same pid *and* the same camid
are removed ("junk"); a query with no remaining true match is skipped (and counted). All rates are fractions
in [0, 1]. Ranking rule: gallery items are sorted by ascending distance with a *stable* sort, so equal
distances keep gallery-index order (lower index ranks first); the released code used numpy's default
(unstable) quicksort, whose tie order is unspecified (with continuous features ties do not occur in practice).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

METRICS = ("cosine", "arccos", "euclidean", "sqeuclidean")

# DEAP's arccos distance clips cos to [-1 + eps, 1 - eps] (docs/study.rst §Evaluation protocol).
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
      identical vectors give exactly 0 (``torch.cdist``'s matmul path does not, docs/study.rst §Scaling the recipe down).

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
