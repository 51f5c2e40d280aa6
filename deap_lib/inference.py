"""Model -> features -> retrieval metrics on a dataset's query/gallery split (with bootstrap intervals)."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .evaluation import compute_distance, evaluate, summarize


def _autocast(device: torch.device, precision: str):
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def extract_features(model: nn.Module, loader, device: Optional[torch.device] = None, *, precision: str = "fp32",
                     channels_last: bool = False) -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Eval-mode embeddings of every image of ``loader`` (batches ``(img, pid, camid, ...)``), in order, under
    ``torch.inference_mode`` and the autocast of ``precision`` (``fp32``: none; ``bf16`` / ``fp16``, see
    :mod:`deap_lib.engine.precision`), images channels-last with ``channels_last``.
    Returns ``(features (N, D) float32 on CPU, pids, camids)``; the model's mode is restored."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats, pids, cams = [], [], []
    try:
        for batch in loader:
            img, pid, cam = batch[0], batch[1], batch[2]
            img = img.to(device)
            if channels_last:
                img = img.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), _autocast(device, precision):
                feats.append(model(img).float().cpu())
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
                   metric: str = "cosine", seed: int = 0, n_boot: int = 1000, precision: str = "fp32",
                   channels_last: bool = False) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Extract query and gallery features with ``model`` (:func:`extract_features`, in ``precision``) and
    evaluate them (see :func:`evaluate_features`)."""
    kw = dict(precision=precision, channels_last=channels_last)
    qf, qp, qc = extract_features(model, query_loader, device, **kw)
    gf, gp, gc = extract_features(model, gallery_loader, device, **kw)
    return evaluate_features(qf, qp, qc, gf, gp, gc, metric=metric, seed=seed, n_boot=n_boot)


PER_QUERY_KEYS: Sequence[str] = ("ap", "inp", "first_hit", "valid", "q_pids")


def per_query_arrays(res: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """The per-query arrays of an ``evaluate(..., return_per_query=True)`` result (for paired bootstraps)."""
    return {k: np.asarray(res[k]) for k in PER_QUERY_KEYS}
