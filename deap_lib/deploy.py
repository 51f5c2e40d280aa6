"""Deploying a compact model: inference runtimes side by side, each checked against eager PyTorch.

A deployed re-ID model maps images (B, 3, H, W) to embeddings (B, D). :func:`prepare` builds that function
for one runtime of :data:`RUNTIMES`:

* ``eager``: the module itself in eval mode under ``torch.inference_mode``;
* ``channels_last``: the same with weights and inputs in NHWC memory format (oneDNN's preferred layout);
* ``torchscript``: traced, frozen and ``torch.jit.optimize_for_inference``-d (conv/BN/ReLU fusion, oneDNN
  layouts baked in);
* ``onnxruntime``: exported to ONNX (:func:`deap_lib.export.export_onnx`) and run by an ONNX Runtime CPU
  session with ``threads`` intra-op threads and every graph optimisation on.

``torch.compile`` is left out: its first call compiles for minutes on a 2-core CPU, longer than the
benchmark it would win. :func:`fastest` times the runtimes on the model itself (interleaved rounds),
keeps only those whose output matches eager PyTorch (:func:`parity`, relative tolerance ``tol``) and returns
the fastest: the documented way to deploy a compact model.
"""
from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

RUNTIMES = ("eager", "channels_last", "torchscript", "onnxruntime")
#: default parity tolerance: max |f - f_eager| / max |f_eager| over a batch
PARITY_TOL = 1e-4


@dataclass
class Deployed:
    """A runnable deploy form: ``fn(images) -> embeddings`` (CPU float tensors in and out)."""

    runtime: str
    fn: Callable[[Tensor], Tensor]
    #: files it depends on (the ONNX export), removed by :meth:`close`
    files: List[str] = field(default_factory=list)

    def __call__(self, images: Tensor) -> Tensor:
        return self.fn(images)

    def close(self) -> None:
        for f in self.files:
            if os.path.exists(f):
                os.remove(f)
        self.files.clear()


def _example(input_size: Sequence[int], batch_size: int) -> Tensor:
    return torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(0))


def prepare(model: nn.Module, runtime: str, *, input_size: Sequence[int], batch_size: int = 1,
            threads: int = 2, workdir: Optional[str] = None) -> Deployed:
    """``model`` (an eval-mode embedding network on the CPU) as a :class:`Deployed` of ``runtime``."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES)}")
    model = model.eval()
    if runtime == "eager":
        def run(x: Tensor) -> Tensor:
            with torch.inference_mode():
                return model(x)
        return Deployed(runtime, run)
    if runtime == "channels_last":
        m = copy.deepcopy(model).to(memory_format=torch.channels_last)

        def run(x: Tensor) -> Tensor:
            with torch.inference_mode():
                return m(x.contiguous(memory_format=torch.channels_last))
        return Deployed(runtime, run)
    if runtime == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript is deprecated in recent torch; it still runs
            traced = torch.jit.trace(copy.deepcopy(model), _example(input_size, batch_size))
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))

        def run(x: Tensor) -> Tensor:
            with torch.no_grad():
                return frozen(x)
        return Deployed(runtime, run)
    import onnxruntime as ort

    from .export import export_onnx

    fd, path = tempfile.mkstemp(suffix=".onnx", dir=workdir)
    os.close(fd)
    export_onnx(model, path, input_size=input_size, batch_size=batch_size)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: Tensor) -> Tensor:
        return torch.from_numpy(sess.run(None, {name: x.detach().cpu().float().numpy()})[0])
    return Deployed(runtime, run, [path])


@torch.no_grad()
def parity(model: nn.Module, deployed: Callable[[Tensor], Tensor], images: Tensor) -> float:
    """``max |deployed(x) - model(x)| / max |model(x)|`` on ``images`` (eager PyTorch as the reference)."""
    ref = model.eval()(images).float()
    out = deployed(images).float()
    if out.shape != ref.shape:
        raise ValueError(f"parity: deployed output {tuple(out.shape)} vs eager {tuple(ref.shape)}")
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def time_ms(fn: Callable[[Tensor], Tensor], x: Tensor, *, warmup: int = 1, repeats: int = 3) -> float:
    """Median wall time of ``fn(x)`` in ms (``warmup`` untimed calls first)."""
    for _ in range(warmup):
        fn(x)
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)


def fastest(model: nn.Module, *, input_size: Sequence[int], batch_size: int = 1, threads: int = 2,
            runtimes: Sequence[str] = RUNTIMES, rounds: int = 3, repeats: int = 3,
            tol: float = PARITY_TOL) -> Dict[str, object]:
    """The fastest runtime whose output matches eager PyTorch within ``tol``: ``{"runtime", "deployed",
    "median_ms" (per runtime), "parity" (per runtime)}``. Runtimes are timed round-robin (``rounds`` rounds of
    ``repeats`` calls) with torch limited to ``threads``; a runtime that fails to build is reported with
    its error instead of a time."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    built: Dict[str, Deployed] = {}
    errors: Dict[str, str] = {}
    try:
        x = _example(input_size, batch_size)
        par: Dict[str, float] = {}
        for r in runtimes:
            try:
                built[r] = prepare(model, r, input_size=input_size, batch_size=batch_size, threads=threads)
                par[r] = parity(model, built[r], x)
            except Exception as e:  # noqa: BLE001 - a runtime missing on this machine is reported, not fatal
                errors[r] = f"{type(e).__name__}: {e}"
        per_round: Dict[str, List[float]] = {r: [] for r in built}
        for i in range(rounds):
            for r, d in built.items():
                per_round[r].append(time_ms(d, x, warmup=1 if i == 0 else 0, repeats=repeats))
        med = {r: statistics.median(v) for r, v in per_round.items()}
        ok = [r for r in built if par[r] <= tol]
        if not ok:
            raise RuntimeError(f"fastest: no runtime matches eager within {tol} (parity {par}, errors {errors})")
        best = min(ok, key=lambda r: med[r])
        for r, d in built.items():
            if r != best:
                d.close()
        return {"runtime": best, "deployed": built[best], "median_ms": med, "parity": par, "errors": errors}
    finally:
        torch.set_num_threads(prev)
