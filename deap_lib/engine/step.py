"""What a training step sees and returns: :class:`StepContext`, several optimizers (:class:`OptimizerSpec`),
the error for a non-finite loss, and the check that a run's config is plain data."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch

_PLAIN = (str, int, float, bool, type(None))


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite."""


@dataclass
class OptimizerSpec:
    """One optimizer of a run: a ``name`` (checkpoint key and log prefix), the optimizer, an optional
    scheduler stepped once per epoch, and, for every optimizer but the first, the ``step_fn(batch, ctx)``
    whose terms it minimises."""

    name: str
    optimizer: torch.optim.Optimizer
    scheduler: Optional[Any] = None
    step_fn: Optional[Callable[..., Mapping[str, torch.Tensor]]] = None


@dataclass
class StepContext:
    """What a step function or hook may need to know about the current iteration."""

    epoch: int  # 1-based
    iteration: int  # 1-based within the epoch
    iters_per_epoch: Optional[int]
    global_step: int  # optimizer steps completed before this iteration
    device: torch.device
    trainer: Any  # the Trainer

    @property
    def epoch_index(self) -> int:
        """0-based epoch (the schedule's k)."""
        return self.epoch - 1


def _accepts_ctx(fn: Callable) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 2


def _plain_config(cfg: Any, where: str = "config") -> Any:
    """Validate/convert a config to plain JSON-like data (dict/list/str/number/bool/None)."""
    if isinstance(cfg, Mapping):
        out = {}
        for k, v in cfg.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {k!r}")
            out[k] = _plain_config(v, f"{where}.{k}")
        return out
    if isinstance(cfg, (list, tuple)):
        return [_plain_config(v, f"{where}[{i}]") for i, v in enumerate(cfg)]
    if isinstance(cfg, Path):
        return str(cfg)
    if isinstance(cfg, _PLAIN):
        return cfg
    if hasattr(cfg, "item") and callable(cfg.item):  # numpy / torch scalars
        return cfg.item()
    raise TypeError(f"{where}: {type(cfg).__name__} is not plain config data (dict/list/str/number/bool/None)")
