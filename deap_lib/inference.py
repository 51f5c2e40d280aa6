"""Model -> features -> retrieval metrics on a dataset's query/gallery split (with bootstrap intervals)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .evaluation import compute_distance, evaluate, summarize


@torch.no_grad()
def extract_features(model: nn.Module, loader, device: Optional[torch.device] = None) -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Eval-mode embeddings of every image of ``loader`` (batches ``(img, pid, camid, ...)``), in order.
    Returns ``(features (N, D) float32 on CPU, pids, camids)``; the model's mode is restored."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats, pids, cams = [], [], []
    try:
        for batch in loader:
            img, pid, cam = batch[0], batch[1], batch[2]
            feats.append(model(img.to(device)).float().cpu())
            pids.append(torch.as_tensor(pid).cpu())
            cams.append(torch.as_tensor(cam).cpu())
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(pids).numpy(), torch.cat(cams).numpy()


def evaluate_features(qf, q_pids, q_cams, gf, g_pids, g_cams, *, metric: str = "cosine",
                      seed: int = 0, n_boot: int = 1000) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(summary in percent with 95 % bootstrap intervals over query identities, per-query arrays)."""
    dist = compute_distance(qf, gf, metric=metric)
    res = evaluate(dist, q_pids, g_pids, q_cams, g_cams, return_per_query=True)
    summary = summarize(res, ranks=(1, 5, 10), n_boot=n_boot, seed=seed)
    summary["num_skipped"] = int(res["num_skipped"])
    return summary, res


def evaluate_model(model: nn.Module, query_loader, gallery_loader, *, device: Optional[torch.device] = None,
                   metric: str = "cosine", seed: int = 0, n_boot: int = 1000
                   ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Extract query and gallery features with ``model`` and evaluate them (see :func:`evaluate_features`)."""
    qf, qp, qc = extract_features(model, query_loader, device)
    gf, gp, gc = extract_features(model, gallery_loader, device)
    return evaluate_features(qf, qp, qc, gf, gp, gc, metric=metric, seed=seed, n_boot=n_boot)


PER_QUERY_KEYS: Sequence[str] = ("ap", "inp", "first_hit", "valid", "q_pids")


def per_query_arrays(res: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """The per-query arrays of an ``evaluate(..., return_per_query=True)`` result (for paired bootstraps)."""
    return {k: np.asarray(res[k]) for k in PER_QUERY_KEYS}
