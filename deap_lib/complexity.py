"""Model complexity: parameter counts, MACs (thop) and CPU/GPU latency.

We say MACs (multiply-accumulates, what thop counts), never FLOPs. thop conventions: a conv counts
``Cout * Ho * Wo * (Cin / groups) * kh * kw`` (bias free), a linear ``in * out``, an affine BatchNorm
``4 * numel`` (thop 0.1.1: 2 per element, doubled for the affine part; absorbed deploy nets have no BN),
adaptive average pooling ``(pool_size + 1) * numel_out``; ReLU, max-pooling and functional ops inside
custom ``forward`` methods (e.g. residual adds) count 0.
"""
from __future__ import annotations

import copy
import time
import warnings
from typing import Any, Dict, Iterable, Sequence, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ["profile", "measure_latency", "count_params", "classifier_parameters"]


def count_params(params: Iterable[nn.Parameter]) -> int:
    """Number of scalars in ``params`` (each distinct tensor counted once)."""
    seen, total = set(), 0
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def classifier_parameters(model: nn.Module) -> list:
    """The training-only classifier's parameters: ``model.classifier_parameters()`` if defined, else the
    parameters of a child attribute named ``classifier``, else none."""
    fn = getattr(model, "classifier_parameters", None)
    if callable(fn):
        return list(fn())
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Module):
        return list(head.parameters())
    return []


def _check_input_size(input_size: Sequence[int], fn: str) -> Tuple[int, ...]:
    size = tuple(int(s) for s in input_size)
    if len(size) == 0 or any(s < 1 for s in size):
        raise ValueError(f"{fn}: input_size must be positive per-image dims such as (3, H, W), got {input_size}")
    return size


def profile(model: nn.Module, input_size: Sequence[int] = (3, 256, 256), *, device: Any = "cpu") -> Dict[str, Any]:
    """Parameters and MACs of ``model`` for one image of ``input_size`` (C, H, W), in eval mode.

    Returns ``dict(params, params_no_classifier, macs, input_size)``: ``params`` is the model's real
    parameter count (sum of numel), ``params_no_classifier`` excludes the training-only classifier
    (see :func:`classifier_parameters`), ``macs`` is thop's count for a batch of 1 (in eval mode a re-ID
    net does not run its classifier, so it is not counted). thop runs on a deep copy, so no ``total_ops``
    buffers or hooks are left on ``model``.
    """
    with warnings.catch_warnings():  # thop 0.1.1 imports distutils' LooseVersion (DeprecationWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        import thop

    size = _check_input_size(input_size, "profile")
    params = count_params(model.parameters())
    no_cls = params - count_params(classifier_parameters(model))
    work = copy.deepcopy(model).to(device).eval()
    x = torch.zeros((1,) + size, device=device)
    macs, _ = thop.profile(work, inputs=(x,), verbose=False)
    return {"params": int(params), "params_no_classifier": int(no_cls), "macs": int(round(float(macs))),
            "input_size": size}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: nn.Module,
    input_size: Sequence[int],
    batch_size: int,
    *,
    threads: int = 2,
    warmup: int = 3,
    repeats: int = 10,
    device: Any = "cpu",
    seed: int = 0,
) -> Dict[str, Any]:
    """Forward latency of ``model`` on a random batch (eval mode, ``torch.inference_mode``).

    The model must already live on ``device``. ``threads`` sets torch's intra-op thread count for the
    measurement only (the previous count and the model's train/eval mode are restored afterwards).
    Returns ``dict(median_ms, p10_ms, p90_ms, per_image_ms, batch_size, threads, repeats)`` where
    ``per_image_ms = median_ms / batch_size``.
    """
    size = _check_input_size(input_size, "measure_latency")
    if batch_size < 1 or repeats < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"measure_latency: need batch_size >= 1, repeats >= 1, warmup >= 0, threads >= 1; "
                         f"got {batch_size}, {repeats}, {warmup}, {threads}")
    device = torch.device(device)
    p = next(model.parameters(), None)
    if p is not None and p.device.type != device.type:
        raise ValueError(f"measure_latency: model parameters are on {p.device}, but device={device}; "
                         "move the model first")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch_size,) + size, generator=gen).to(device)
    prev_threads, was_training = torch.get_num_threads(), model.training
    times = []
    try:
        torch.set_num_threads(threads)
        model.eval()
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            _sync(device)
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                _sync(device)
                times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        torch.set_num_threads(prev_threads)
        model.train(was_training)
    t = np.asarray(times)
    med = float(np.median(t))
    return {"median_ms": med, "p10_ms": float(np.percentile(t, 10)), "p90_ms": float(np.percentile(t, 90)),
            "per_image_ms": med / batch_size, "batch_size": int(batch_size), "threads": int(threads),
            "repeats": int(repeats)}
