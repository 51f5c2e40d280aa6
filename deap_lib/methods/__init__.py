"""Named recipes (methods) and presets; ``run(cfg, out_dir)`` trains, prunes, evaluates and records one run.

Methods (``METHODS`` registry): pretrain, teacher, student, kd, np, deap, cdd, crkd, kd_np_direct, kd_then_np, np_then_kd,
structure_kd, thinned_kd; a
plugin module registers more (``METHODS.register(name, cls)``; ``python -m deap_lib --plugin FILE ...``).
Presets (``PRESETS`` registry): quick, cpu, paper.
"""
from ..registry import Registry
from .base import Method, RunContext, Stage, UserError
from .cdd import CDD
from .crkd import CrossResolutionKD
from .deap import DEAP
from .direct import KDNPDirect
from .kd import KD
from .np import NP
from .sequential import KDThenNP, NPThenKD, Sequential
from .structure import StructureKD, ThinnedKD
from .task import Pretrain, Student, Teacher

METHODS: Registry = Registry("method")
for _cls in (Pretrain, Teacher, Student, KD, NP, DEAP, CDD, CrossResolutionKD, KDNPDirect, KDThenNP,
             NPThenKD, StructureKD, ThinnedKD):
    METHODS.register(_cls.name, _cls)

from .presets import PRESETS, get_preset  # noqa: E402
from .runner import run  # noqa: E402

__all__ = ["METHODS", "PRESETS", "get_preset", "run", "Method", "RunContext", "Stage", "UserError", "Sequential"]
