"""A trivial, training-free feature baseline: how far raw pixels get on a dataset.

Each image is resized to a tiny ``size x size`` RGB thumbnail, flattened and compared by cosine
distance. It tells how hard a dataset is before any network is trained (a useful floor for the study's
tables) and lets ``make reproduce`` evaluate something end to end on a fresh machine.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image

from .evaluation import compute_distance, evaluate, summarize


def thumbnail_features(items: Sequence[Tuple[str, int, int]], size: int = 16) -> np.ndarray:
    """(N, 3*size*size) float32 features: per-image zero-mean, unit-norm RGB thumbnails."""
    feats = np.empty((len(items), 3 * size * size), dtype=np.float32)
    for i, (path, _, _) in enumerate(items):
        try:
            with Image.open(path) as im:
                thumb = im.convert("RGB").resize((size, size), Image.BILINEAR)
        except OSError as e:
            raise OSError(f"cannot read image '{path}': {e}") from e
        v = np.asarray(thumb, dtype=np.float32).reshape(-1) / 255.0
        v -= v.mean()
        feats[i] = v / max(float(np.linalg.norm(v)), 1e-12)
    return feats


def evaluate_thumbnail_baseline(dataset, size: int = 16, seed: int = 0) -> Dict[str, float]:
    """mAP / Rank-k / mINP (percent) of the thumbnail baseline with 95 % bootstrap intervals (``summarize``)."""
    qf = thumbnail_features(dataset.query, size)
    gf = thumbnail_features(dataset.gallery, size)
    q_pids = np.array([p for _, p, _ in dataset.query])
    q_cams = np.array([c for _, _, c in dataset.query])
    g_pids = np.array([p for _, p, _ in dataset.gallery])
    g_cams = np.array([c for _, _, c in dataset.gallery])
    dist = compute_distance(qf, gf, metric="cosine")
    res = evaluate(dist, q_pids, g_pids, q_cams, g_cams, return_per_query=True)
    return summarize(res, ranks=(1, 5, 10), n_boot=1000, seed=seed)
