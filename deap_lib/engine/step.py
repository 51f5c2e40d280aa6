"""What a training step sees and returns: :class:`StepContext`, several optimizers (:class:`OptimizerSpec`),
the error for a non-finite loss, and the check that a run's config is plain data."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Tuple

import torch

from .distributed import all_reduce_mean, is_distributed

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


def check_terms(terms: Any, ctx: StepContext) -> Tuple[List[str], List[float], torch.Tensor]:
    """A step's loss terms checked (a non-empty mapping of scalar tensors, all finite on every rank):
    ``(names, float values, their sum)``; a clear error naming the term and the iteration otherwise."""
    where = f"epoch {ctx.epoch}, iteration {ctx.iteration} (global step {ctx.global_step + 1})"
    if not isinstance(terms, Mapping) or not terms:
        raise TypeError(f"step_fn must return a non-empty mapping name -> scalar loss tensor; got {type(terms).__name__} at {where}")
    names = list(terms)
    for n in names:
        t = terms[n]
        if not isinstance(n, str):
            raise TypeError(f"loss term names must be strings, got {n!r} at {where}")
        if not isinstance(t, torch.Tensor) or t.numel() != 1:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"loss term '{n}' must be a scalar tensor, got {shape} at {where}")
    stacked = torch.stack([terms[n].detach().float().reshape(()) for n in names])
    finite = torch.isfinite(stacked)
    bad_flag = (~finite).any().to(torch.float32).reshape(1)
    if is_distributed():
        bad_flag = all_reduce_mean(bad_flag)
    values = stacked.double().cpu().tolist()
    if bad_flag.item() > 0:
        bad = [f"{n}={v}" for n, v, ok in zip(names, values, finite.cpu().tolist()) if not ok]
        msg = f"non-finite loss term(s) {', '.join(bad) or '(on another rank)'} at {where}"
        raise NonFiniteLossError(msg)
    total = torch.stack([terms[n].float().reshape(()) for n in names]).sum()
    return names, values, total
