"""Atomic checkpoints, RNG state capture/restore and config comparison for exact resumption.

A checkpoint is a plain dict saved with ``torch.save`` and read back with ``weights_only=True`` (only
tensors and plain Python containers), so RNG states are stored as tensors/ints, never pickled objects.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from ..config import config_diff
from ..fileio import PathLike, atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read or has the wrong content."""


class ConfigMismatchError(RuntimeError):
    """Resuming with a configuration that differs from the one the checkpoint was written with."""


def save_checkpoint(path: PathLike, state: Mapping[str, Any]) -> Path:
    """Atomically write ``state`` (a dict of tensors / plain containers) to ``path``."""
    if not isinstance(state, Mapping):
        raise TypeError(f"checkpoint state must be a mapping, got {type(state).__name__}")
    return atomic_write(path, lambda f: torch.save(dict(state), f))


def load_checkpoint(path: PathLike, map_location: Any = "cpu", *, weights_only: bool = True) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` (naming the file) for a
    truncated/corrupt file or one that does not hold a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise CheckpointError(
            f"cannot read checkpoint {path} ({path.stat().st_size} bytes): {type(exc).__name__}: {exc}. "
            "The file is truncated, corrupt or not a torch checkpoint."
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


# --------------------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------------------
def capture_rng_state() -> dict:
    """States of Python ``random``, NumPy's global generator, torch CPU and (if available) all CUDA devices."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`. CUDA states are restored only where CUDA is available."""
    missing = [k for k in ("python", "numpy", "torch") if k not in state]
    if missing:
        raise KeyError(f"RNG state lacks key(s) {missing}; expected a dict from capture_rng_state()")
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            str(npst["name"]),
            npst["keys"].numpy().astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        n = min(len(cuda_states), torch.cuda.device_count())
        for i in range(n):
            torch.cuda.set_rng_state(cuda_states[i].cpu().to(torch.uint8), device=i)


# --------------------------------------------------------------------------------------------------
# config comparison
# --------------------------------------------------------------------------------------------------
def check_config(saved: Mapping[str, Any], current: Mapping[str, Any], *, allow_config_change: bool = False,
                 what: str = "config", source: str = "checkpoint",
                 added_defaults: Optional[Mapping[str, Any]] = None) -> dict[str, tuple[Any, Any]]:
    """Raise :class:`ConfigMismatchError` listing the differences unless ``allow_config_change``.
    ``added_defaults``: a key ``saved`` lacks is no difference when ``current`` holds it at that value."""
    diff = config_diff(saved, current, added_defaults=added_defaults)
    if diff and not allow_config_change:
        lines = "\n".join(f"  {k}: {source}={va!r} now={vb!r}" for k, (va, vb) in diff.items())
        raise ConfigMismatchError(
            f"cannot resume: the {what} differs from the one stored in {source} "
            f"({len(diff)} key(s)):\n{lines}\npass allow_config_change=True to resume anyway"
        )
    return diff
