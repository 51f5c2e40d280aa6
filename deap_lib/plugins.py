"""Plugins: Python files or modules that register methods, models, datasets or losses before a command runs.

``python -m deap_lib --plugin my_method.py train --method my_method ...`` imports ``my_method.py`` first;
whatever it registers (``METHODS.register("my_method", MyMethod)``) is then known by name, exactly like the
built-in entries, and no library file needs to change. ``DEAP_PLUGINS`` (paths or module names separated
by ``os.pathsep``) does the same for every command, and :func:`load_plugins` adds what it loads there, so
the training subprocesses of a :class:`~deap_lib.study.Study` and the ranks of ``torchrun`` see them too.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterable, List

ENV = "DEAP_PLUGINS"
_loaded: dict = {}


def load_plugin(spec: str) -> ModuleType:
    """Import one plugin: a ``.py`` file path or an importable module name (each at most once)."""
    key = str(Path(spec).resolve()) if spec.endswith(".py") else spec
    if key in _loaded:
        return _loaded[key]
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"plugin file {spec} not found")
        name = f"deap_plugin_{path.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        mod_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(spec)
    _loaded[key] = module
    known = [p for p in os.environ.get(ENV, "").split(os.pathsep) if p]
    if key not in known:
        os.environ[ENV] = os.pathsep.join(known + [key])
    return module


def load_plugins(specs: Iterable[str] = ()) -> List[ModuleType]:
    """Load the plugins named in ``DEAP_PLUGINS`` and then ``specs``."""
    env = [p for p in os.environ.get(ENV, "").split(os.pathsep) if p]
    return [load_plugin(s) for s in dict.fromkeys([*env, *specs])]
