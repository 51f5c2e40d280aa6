"""A trainer's checkpoint: everything an exact resume needs (model, optimizers, schedulers, GradScaler,
sampler, RNG state, history), written atomically after every epoch, and the checks on load (config, trainer
settings, teacher hash) that refuse a resume into another run."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from .checkpoint import CheckpointError, capture_rng_state, check_config, restore_rng_state, save_checkpoint
from .distributed import is_main_process, unwrap
from .precision import legacy_precision

CHECKPOINT_FORMAT = 1


class TrainerState:
    """The checkpoint half of :class:`~deap_lib.engine.trainer.Trainer` (a mixin)."""

    def _model_state(self) -> dict:
        inner = unwrap(self.model)
        hook = getattr(inner, "checkpoint_state", None)
        return hook() if callable(hook) else inner.state_dict()

    def _load_model_state(self, state: Mapping[str, Any]) -> None:
        inner = unwrap(self.model)
        hook = getattr(inner, "load_checkpoint_state", None)
        if callable(hook):
            hook(state)
        else:
            inner.load_state_dict(state, strict=True)

    # ---- checkpoint ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        sampler = self._sampler()
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "iteration": self.global_step,
            "model": self._model_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "extra_optimizers": {o.name: {"optimizer": o.optimizer.state_dict(),
                                          "scheduler": o.scheduler.state_dict() if o.scheduler is not None else None}
                                 for o in self.optimizers[1:]},
            "scaler": self.scaler.state_dict(),
            "sampler": sampler.state_dict() if callable(getattr(sampler, "state_dict", None)) else None,
            "rng": capture_rng_state(),
            "config": self.config,
            "trainer": self._settings(),
            "metadata": self.metadata,
            "history": self.history,
            "torch_version": str(torch.__version__),
        }

    def load_state_dict(self, ckpt: Mapping[str, Any], *, allow_config_change: bool = False, source: str = "checkpoint") -> None:
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{source}: format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT}")
        check_config(ckpt.get("config", {}), self.config, allow_config_change=allow_config_change, source=source,
                     added_defaults=getattr(self, "config_defaults", None))
        saved = dict(ckpt.get("trainer", {}))
        saved.setdefault("precision", legacy_precision(self.device.type, bool(saved.get("amp", False))))
        check_config(
            saved,
            self._settings(),
            allow_config_change=allow_config_change,
            what="trainer settings",
            source=source,
        )
        check_config(ckpt.get("metadata", {}), self.metadata, allow_config_change=allow_config_change, what="metadata (e.g. teacher hash)", source=source)
        self._load_model_state(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None:
            if ckpt.get("scheduler") is None:
                raise CheckpointError(f"{source} has no scheduler state but the trainer has a scheduler")
            self.scheduler.load_state_dict(ckpt["scheduler"])
        extra = ckpt.get("extra_optimizers") or {}
        want = [o.name for o in self.optimizers[1:]]
        if sorted(extra) != sorted(want):
            raise CheckpointError(f"{source} holds optimizer(s) {sorted(extra)} besides the main one; this run has "
                                  f"{sorted(want)}")
        for o in self.optimizers[1:]:
            o.optimizer.load_state_dict(extra[o.name]["optimizer"])
            if o.scheduler is not None:
                if extra[o.name].get("scheduler") is None:
                    raise CheckpointError(f"{source}: optimizer '{o.name}' has no scheduler state")
                o.scheduler.load_state_dict(extra[o.name]["scheduler"])
        if ckpt.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        sampler = self._sampler()
        if ckpt.get("sampler") is not None and callable(getattr(sampler, "load_state_dict", None)):
            sampler.load_state_dict(ckpt["sampler"])
        restore_rng_state(ckpt["rng"])
        self.history = [dict(r) for r in ckpt.get("history", [])]
        self.epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["iteration"])

    def _settings(self) -> dict:
        """The trainer settings a resume must match (precision: the resolved one)."""
        return {"seed": self.seed, "epochs": self.epochs, "amp": self.amp, "precision": self.precision}

    def save_checkpoint(self, path: Optional[Union[str, Path]] = None) -> Optional[Path]:
        """Atomically write the full training state (rank 0 only; other ranks return ``None``)."""
        if not is_main_process():
            return None
        return save_checkpoint(path or self.checkpoint_path, self.state_dict())
