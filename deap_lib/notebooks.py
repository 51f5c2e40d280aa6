"""The study's notebooks: where they are, the order ``reproduce`` executes them in, and the parameters every
one of them takes (the runner injects them all; the report names only a notebook's own)."""
from __future__ import annotations

from pathlib import Path

#: execution order: the method notebooks (02, 03, 05, ...) first, the summary (04: every method's deployed model
#: of the seed, the Pareto plot, latency) last, so that it sees every run
NOTEBOOKS = ("00_data", "01_teacher", "02_dilemma", "03_deap", "05_cdd", "07_structure", "08_factors",
             "09_kd_losses", "04_absorb_and_plots", "06_resolution")
#: the core study (``make reproduce``: the headline, seed 0): the teacher, DEAP's learned compression against it
#: and the naive arm, absorption and speed; CDD, the resolution study and structure learning run with ``--full``
CORE_NOTEBOOKS = ("00_data", "01_teacher", "02_dilemma", "03_deap", "04_absorb_and_plots")
#: parameters every notebook's ``parameters`` cell defines (the runner injects them all)
PARAMETERS = ("preset", "dataset", "data_root", "device", "seed", "out", "runs_dir", "epochs", "force", "jobs",
              "full")


def notebook_dir() -> Path:
    """``notebooks/`` of this checkout (the jupytext-paired ``NN_name.py`` / ``.ipynb`` files)."""
    return Path(__file__).resolve().parents[1] / "notebooks"
