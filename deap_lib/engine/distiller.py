"""Student + frozen teacher container for distillation (docs/methods/deap.rst §Teacher, pitfall 5.1, decision 8).

* The teacher is frozen (``requires_grad=False``), so :func:`~deap_lib.engine.optim.build_optimizer` never
  adds it; it is run under ``torch.no_grad``.
* ``teacher_bn_mode="eval"`` (default, correct): ``.train()`` leaves the teacher in eval mode, so its
  BatchNorm layers use (and never change) their running statistics.
  ``teacher_bn_mode="train"`` reproduces the released code's quirk: the teacher follows ``.train()`` like
  the rest of the wrapper, so its BN layers use batch statistics and their running stats drift (any
  dropout in the teacher would be active too, as in the released code).
* ``build_optimizer(distiller, ...)`` optimises the student only and takes the head from the student.
* Checkpoints hold the student only (:meth:`student_state_dict`); the teacher is identified by
  ``teacher_hash`` (SHA-256 of its checkpoint file, or of its state-dict tensors).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from ..fileio import file_sha256, state_dict_sha256
from .distributed import unwrap, wrap_ddp

TEACHER_BN_MODES = ("eval", "train")


class Distiller(nn.Module):
    """``student`` (trained) and ``teacher`` (frozen) as one module.

    Use ``distiller.student(x)`` for the student and :meth:`teacher_forward` for the teacher, or
    ``distiller(x) -> (student_out, teacher_out)``. ``teacher_method`` names the teacher method called by
    :meth:`teacher_forward` (e.g. ``"forward_features"`` for a ReIDNet teacher that must return its train-mode
    outputs while in eval mode); ``None`` calls the teacher module itself.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        teacher_bn_mode: str = "eval",
        teacher_path: Optional[Union[str, Path]] = None,
        teacher_method: Optional[str] = None,
    ) -> None:
        super().__init__()
        if teacher_bn_mode not in TEACHER_BN_MODES:
            raise ValueError(f"teacher_bn_mode must be one of {TEACHER_BN_MODES}, got {teacher_bn_mode!r}")
        if teacher is student:
            raise ValueError("teacher and student must be different modules")
        shared = {id(p) for p in student.parameters()} & {id(p) for p in teacher.parameters()}
        if shared:
            raise ValueError(f"teacher and student share {len(shared)} parameter tensor(s)")
        if teacher_method is not None and not callable(getattr(teacher, teacher_method, None)):
            raise AttributeError(f"teacher {type(teacher).__name__} has no method {teacher_method!r}")
        self.student = student
        self.teacher = teacher
        self.teacher_bn_mode = teacher_bn_mode
        self.teacher_method = teacher_method
        self.teacher.requires_grad_(False)
        self.teacher_hash = file_sha256(teacher_path) if teacher_path is not None else state_dict_sha256(teacher.state_dict())
        self.train(self.training)

    # ---- modes -----------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teacher.train(mode if self.teacher_bn_mode == "train" else False)
        return self

    # ---- forward ---------------------------------------------------------------------------------
    def teacher_forward(self, *args: Any, **kwargs: Any) -> Any:
        fn = self.teacher if self.teacher_method is None else getattr(self.teacher, self.teacher_method)
        with torch.no_grad():
            return fn(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        return self.student(*args, **kwargs), self.teacher_forward(*args, **kwargs)

    # ---- parameters / state ----------------------------------------------------------------------
    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """The student's own state dict (DDP wrapper removed, no teacher tensors)."""
        return unwrap(self.student).state_dict()

    def load_student_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> Any:
        return unwrap(self.student).load_state_dict(state, strict=strict)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """What the trainer checkpoints: the student only (the teacher is identified by its hash)."""
        return self.student_state_dict()

    def load_checkpoint_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.load_student_state_dict(state, strict=True)

    def wrap_student_ddp(self, device: torch.device, **ddp_kwargs: Any) -> None:
        """DDP-wrap the student only (no-op outside a distributed run)."""
        self.student = wrap_ddp(self.student, device, **ddp_kwargs)

    def checkpoint_metadata(self) -> dict[str, str]:
        return {"teacher_hash": self.teacher_hash, "teacher_bn_mode": self.teacher_bn_mode}
