"""Warm-up -> flat -> cosine learning-rate schedule of DEAP (docs/methods/deap.rst §Training recipe), stepped once per epoch.

With k = epoch - 1 (0-based epoch index), base LR lr0, warm-up W, flat end F and run length T:

* k <  W:       lr = lr0 * (s * (1 - k/W) + k/W)          (s = ``warmup_start`` = 0.1)
* W <= k <= F:  lr = lr0
* k >  F:       lr = eta_min + (lr0 - eta_min) * (1 + cos(pi * (k - F) / (T - F))) / 2

The paper's run is (T, W, F) = (90, 10, 40): epoch 1 trains at 0.1 * lr0, epochs 11..41 at lr0, then cosine.
Each parameter group follows the formula with its own base LR (so the 1.5x head group anneals to eta_min too).
"""
from __future__ import annotations

import math
from typing import NamedTuple

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class Phases(NamedTuple):
    """Warm-up length and last flat epoch index of a run of ``total_epochs`` epochs."""

    total_epochs: int
    warmup_epochs: int
    flat_until: int


def _check_phases(total_epochs: int, warmup_epochs: int, flat_until: int) -> None:
    if not (0 <= warmup_epochs <= flat_until < total_epochs):
        raise ValueError(
            "schedule phases must satisfy 0 <= warmup_epochs <= flat_until < total_epochs; got "
            f"warmup_epochs={warmup_epochs}, flat_until={flat_until}, total_epochs={total_epochs}"
        )


def warmup_flat_cosine_lr(
    epoch_index: int,
    *,
    base_lr: float,
    total_epochs: int,
    warmup_epochs: int,
    flat_until: int,
    warmup_start: float = 0.1,
    eta_min: float = 1e-7,
) -> float:
    """Learning rate of 0-based epoch ``epoch_index`` (k in the module docstring)."""
    _check_phases(total_epochs, warmup_epochs, flat_until)
    if epoch_index < 0:
        raise ValueError(f"epoch_index must be >= 0, got {epoch_index}")
    k = epoch_index
    if k < warmup_epochs:
        alpha = k / warmup_epochs
        return base_lr * (warmup_start * (1.0 - alpha) + alpha)
    if k <= flat_until:
        return base_lr
    progress = min(k - flat_until, total_epochs - flat_until) / (total_epochs - flat_until)
    return eta_min + (base_lr - eta_min) * (1.0 + math.cos(math.pi * progress)) / 2.0


def warmup_flat_cosine_factor(
    epoch_index: int,
    *,
    total_epochs: int,
    warmup_epochs: int,
    flat_until: int,
    base_lr: float,
    warmup_start: float = 0.1,
    eta_min: float = 1e-7,
) -> float:
    """Multiplier of ``base_lr`` at 0-based epoch ``epoch_index`` (LambdaLR-style factor).

    ``base_lr`` is needed because the cosine phase ends at the absolute ``eta_min``.
    """
    if base_lr <= 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")
    lr = warmup_flat_cosine_lr(
        epoch_index,
        base_lr=base_lr,
        total_epochs=total_epochs,
        warmup_epochs=warmup_epochs,
        flat_until=flat_until,
        warmup_start=warmup_start,
        eta_min=eta_min,
    )
    return lr / base_lr


def scaled_phases(total_epochs: int, *, warmup_frac: float = 10 / 90, flat_frac: float = 40 / 90) -> Phases:
    """Warm-up / flat phases as the paper's fractions of the run (docs/study.rst §Scaling the recipe down): 10/90 and 40/90.

    ``scaled_phases(90) == Phases(90, 10, 40)``; e.g. ``scaled_phases(45) == Phases(45, 5, 20)``.
    The warm-up is at least one epoch and the cosine phase at least one epoch.
    """
    if total_epochs < 2:
        raise ValueError(f"scaled_phases needs total_epochs >= 2, got {total_epochs}")
    warmup = max(1, int(round(total_epochs * warmup_frac)))
    flat = min(max(warmup, int(round(total_epochs * flat_frac))), total_epochs - 1)
    warmup = min(warmup, flat)
    return Phases(total_epochs, warmup, flat)


class WarmupFlatCosineLR(LRScheduler):
    """Per-epoch scheduler: ``step()`` once at the end of every epoch.

    After construction ``last_epoch == 0`` and the optimizer holds the LR of epoch 1 (k = 0); after the
    n-th ``step()`` it holds the LR of epoch n + 1. Closed form in ``last_epoch``, so a restored state
    reproduces the same LRs exactly.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        total_epochs: int,
        warmup_epochs: int,
        flat_until: int,
        warmup_start: float = 0.1,
        eta_min: float = 1e-7,
        last_epoch: int = -1,
    ) -> None:
        _check_phases(total_epochs, warmup_epochs, flat_until)
        self.total_epochs = total_epochs
        self.warmup_epochs = warmup_epochs
        self.flat_until = flat_until
        self.warmup_start = warmup_start
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [
            warmup_flat_cosine_lr(
                self.last_epoch,
                base_lr=float(base),
                total_epochs=self.total_epochs,
                warmup_epochs=self.warmup_epochs,
                flat_until=self.flat_until,
                warmup_start=self.warmup_start,
                eta_min=self.eta_min,
            )
            for base in self.base_lrs
        ]

    _get_closed_form_lr = get_lr


def build_scheduler(
    optimizer: Optimizer,
    total_epochs: int,
    *,
    warmup_epochs: int | None = None,
    flat_until: int | None = None,
    warmup_start: float = 0.1,
    eta_min: float = 1e-7,
) -> WarmupFlatCosineLR:
    """The paper's schedule; phases default to ``scaled_phases(total_epochs)`` (= (10, 40) for 90 epochs)."""
    phases = scaled_phases(total_epochs)
    return WarmupFlatCosineLR(
        optimizer,
        total_epochs=total_epochs,
        warmup_epochs=phases.warmup_epochs if warmup_epochs is None else warmup_epochs,
        flat_until=phases.flat_until if flat_until is None else flat_until,
        warmup_start=warmup_start,
        eta_min=eta_min,
    )
