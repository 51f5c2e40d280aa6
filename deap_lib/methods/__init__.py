"""Named recipes (methods) and presets; ``run(cfg, out_dir)`` trains, prunes, evaluates and records one run.

Methods (``METHODS`` registry, :mod:`deap_lib.methods.registry`): each module of this package defines its
methods and registers them with ``@register_method``; the package imports every module, so a new method is a
new file. ``python -m deap_lib --plugin FILE ...`` imports a file from elsewhere that does the same.
Presets (``PRESETS`` registry): quick, cpu, paper.
"""
import importlib
import pkgutil

from .base import Method, RunContext, Stage, UserError
from .registry import METHODS, register_method

for _mod in pkgutil.iter_modules(__path__):  # each method module registers its methods on import
    importlib.import_module(f"{__name__}.{_mod.name}")

from .presets import PRESETS, get_preset  # noqa: E402
from .runner import run  # noqa: E402
from .sequential import Sequential  # noqa: E402

__all__ = ["METHODS", "PRESETS", "get_preset", "run", "register_method", "Method", "RunContext", "Stage", "UserError",
           "Sequential"]
