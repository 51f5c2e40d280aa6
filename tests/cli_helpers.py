"""Shared by the CLI tests: ``python -m deap_lib --plugin <file> ...`` in a subprocess, and a quick teacher."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def deap_cli(plugin: str, *args: str, env=None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the CLI with ``plugin`` loaded (one thread, no inherited ``DEAP_PLUGINS``); ``check``: fail the
    test with the output tail on a non-zero exit."""
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    e.pop("DEAP_PLUGINS", None)
    p = subprocess.run([sys.executable, "-m", "deap_lib", "--plugin", plugin, *args], cwd=REPO, env=e,
                       capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def quick_teacher(plugin: str, root: Path):
    """Train the quick preset's teacher on the tiny synthetic set under ``root``: ``(root, data, model.pt)``."""
    data = str(root / "data")
    deap_cli(plugin, "train", "--method", "teacher", "--preset", "quick", "--data", data, "--set",
             "data.synthetic=tiny", "--out", str(root / "teacher"), "--no-progress", "--threads", "1")
    return root, data, str(root / "teacher" / "model.pt")
