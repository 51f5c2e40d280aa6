"""Persistence and export of (compact) re-ID networks.

* ``save_compact`` / ``load_compact``: the network's build config (arch, width, last stride, pcp, head,
  per-block ``widths``, deploy flag) + its state dict, as a plain ``torch.save`` dict that loads with
  ``weights_only=True`` (no pickled modules). Loading rebuilds with ``build_model`` and loads strictly.
* ``export_torchscript`` / ``export_onnx``: traced eval-mode embedding networks (input (B, 3, H, W) ->
  embedding (B, D)); ONNX uses the TorchScript-based exporter (``dynamo=False``; no onnxscript needed) with a
  dynamic batch axis. ``run_onnx`` evaluates an exported file with onnxruntime (parity checks).
All files are written atomically (temporary file in the target folder, then ``os.replace``).
"""
from __future__ import annotations

import inspect
import os
import tempfile
import warnings
from typing import Any, Callable, Dict, Sequence

import torch
from torch import Tensor, nn

from .models import ReIDNet, build_model

FORMAT = "deap_lib.compact"
VERSION = 1


def _atomic_write(path: str, write: Callable[[str], None]) -> str:
    """Call ``write(tmp)`` for a temp file next to ``path``, then move it onto ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_compact(model: ReIDNet, path: str) -> str:
    """Save ``{"format", "version", "config", "state_dict"}`` (tensors on CPU) atomically; returns ``path``."""
    if not isinstance(model, ReIDNet) or not isinstance(getattr(model, "config", None), dict):
        raise TypeError(f"save_compact expects a deap_lib.models.ReIDNet, got {type(model).__name__}")
    payload = {"format": FORMAT, "version": VERSION, "config": dict(model.config),
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    return _atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_compact(path: str, map_location: Any = "cpu") -> ReIDNet:
    """Rebuild the network saved by :func:`save_compact` and load its weights strictly (eval mode).
    A wrong or damaged file raises ``ValueError`` naming the file and the offending keys / shapes."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_compact: no such file: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"load_compact: {path} is not a readable torch file ({e})") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"load_compact: {path} is not a compact-model file (expected a dict with "
                         f"format={FORMAT!r}, config and state_dict)")
    if obj.get("version") != VERSION:
        raise ValueError(f"load_compact: {path} has version {obj.get('version')!r}, this code reads {VERSION}")
    config, state = obj.get("config"), obj.get("state_dict")
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise ValueError(f"load_compact: {path}: 'config' and 'state_dict' must be dicts")
    valid = set(inspect.signature(build_model).parameters)
    unknown = sorted(set(config) - valid)
    if unknown:
        raise ValueError(f"load_compact: {path}: unknown config keys {unknown}; valid: {sorted(valid)}")
    model = build_model(**config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or shapes:
        raise ValueError(f"load_compact: {path} does not match its own config: missing keys {missing[:10]}, "
                         f"unexpected keys {unexpected[:10]}, shape mismatches {shapes[:10]}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _example(model: nn.Module, input_size: Sequence[int], batch_size: int) -> Tensor:
    ref = next(model.parameters())
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, *input_size, generator=gen).to(device=ref.device, dtype=ref.dtype)


def export_torchscript(model: nn.Module, path: str, input_size: Sequence[int] = (3, 256, 256),
                       batch_size: int = 1) -> str:
    """Trace the eval-mode embedding network and save it (``torch.jit.save``); the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript is deprecated in recent torch; still works
            traced = torch.jit.trace(model, _example(model, input_size, batch_size))
            _atomic_write(path, lambda tmp: torch.jit.save(traced, tmp))
    finally:
        model.train(was_training)
    return path


def export_onnx(model: nn.Module, path: str, input_size: Sequence[int] = (3, 256, 256), batch_size: int = 1,
                opset: int = 17, dynamic_batch: bool = True) -> str:
    """Export the eval-mode embedding network to ONNX (input ``images``, output ``embedding``)."""
    was_training = model.training
    model.eval()
    dyn = {"images": {0: "batch"}, "embedding": {0: "batch"}} if dynamic_batch else None
    try:
        x = _example(model, input_size, batch_size)

        def write(tmp: str) -> None:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (x,), tmp, input_names=["images"], output_names=["embedding"],
                                  dynamic_axes=dyn, opset_version=opset, dynamo=False)

        _atomic_write(path, write)
    finally:
        model.train(was_training)
    return path


def run_onnx(path: str, images: Tensor) -> Tensor:
    """Run an exported ONNX file with onnxruntime (CPU) on ``images``; returns the embedding as a tensor."""
    import onnxruntime as ort

    sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: images.detach().cpu().float().numpy()})[0]
    return torch.from_numpy(out)


def compact_summary(path: str) -> Dict[str, Any]:
    """The config stored in a compact file (without building the model)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"compact_summary: {path} is not a compact-model file")
    return dict(obj["config"])
