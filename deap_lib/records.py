"""Run records: the evaluated model forms of one run, its ``summary.csv`` rows and the code version.

``Recorder.add(form, model)`` evaluates one form (mAP / Rank-k / mINP with 95 % bootstrap intervals,
params and MACs at the run's input size) and writes ``per_query_<form>.npz`` for paired bootstraps;
:func:`summary_rows` / :func:`append_summary` turn a run's ``metrics.json`` into rows of the study-wide
CSV (columns :data:`SUMMARY_COLUMNS`, metrics in percent); :func:`code_version` names the code that ran.
"""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from . import __version__
from .complexity import profile
from .fileio import atomic_write_text
from .inference import evaluate_model, per_query_arrays
from .machine import machine_label, run_machine
from .rundir import RunDir

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["run", "method", "preset", "dataset", "seed", "form", "mAP", "rank1", "rank5", "rank10",
                   "mINP", "params_m", "macs_g", "val_mAP", "epochs", "start", "machine", "code"]
#: the columns a summary file written before they existed may lack (read back as empty)
LATER_COLUMNS = ("val_mAP", "epochs", "start", "machine", "code")
#: the model forms that get a summary row (others, e.g. ``pruned_no_recalib``, stay in metrics.json)
SUMMARY_FORMS = ("teacher", "student", "unpruned", "pruned", "absorbed")
#: the tracked paths that make up the code (``results/``, the README and data are outputs, not code)
CODE_PATHS = ("deap_lib", "notebooks", "benchmarks", "pyproject.toml", "environment.yml", "Makefile")


def summary_rows(metrics: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The ``summary.csv`` rows of one run's metrics (metrics in percent, params in M, MACs in G)."""
    machine = machine_label(run_machine(metrics))
    epochs = metrics.get("epochs", metrics.get("config", {}).get("optim", {}).get("epochs"))
    return [{"run": metrics["run"], "method": metrics["method"], "preset": metrics["preset"],
             "dataset": metrics["dataset"], "seed": metrics["seed"], "form": form, "mAP": r["mAP"],
             "rank1": r["rank1"], "rank5": r["rank5"], "rank10": r["rank10"], "mINP": r["mINP"],
             "params_m": r["params_no_classifier"] / 1e6, "macs_g": r["macs"] / 1e9, "val_mAP": r.get("val_mAP"),
             "epochs": epochs, "start": metrics.get("start"), "machine": machine, "code": metrics.get("code_version")}
            for form, r in metrics["forms"].items() if form in SUMMARY_FORMS]


def append_summary(path: Union[str, Path], rows: List[Dict[str, Any]]) -> None:
    """Add rows to the summary CSV atomically; rows of the same (run, form) replace older ones."""
    import pandas as pd

    path = Path(path)
    new = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if path.exists():
        old = pd.read_csv(path)
        missing = [c for c in SUMMARY_COLUMNS if c not in old.columns and c not in LATER_COLUMNS]
        for c in LATER_COLUMNS:
            if c not in old.columns:
                old[c] = None
        if missing:
            raise ValueError(f"{path}: not a summary file (missing columns {missing})")
        keys = set(zip(new["run"], new["form"]))
        old = old[[k not in keys for k in zip(old["run"], old["form"])]]
        new = pd.concat([old[SUMMARY_COLUMNS], new], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, new.to_csv(index=False, float_format="%.4f"))


def code_version(root: Optional[Union[str, Path]] = None) -> str:
    """``git describe`` of the checkout at ``root`` (default: this package's), with ``-dirty`` when the code
    (:data:`CODE_PATHS`) has uncommitted changes; the study's own outputs (``results/``, the README section)
    do not count. Without git, the package version."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--tags"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode != 0 or not out.stdout.strip():
            return __version__
        st = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=normal", "--",
                             *CODE_PATHS], capture_output=True, text=True, timeout=10)
        dirty = st.returncode != 0 or bool(st.stdout.strip())
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return __version__


class Recorder:
    """Evaluates model forms on the run's query / gallery loaders (the test split: the reported numbers) and,
    given ``val`` (its query and gallery loaders), on the validation split too (``val_mAP`` / ``val_rank1``,
    what probes and choices read), and collects their records."""

    def __init__(self, query, gallery, out_dir: Union[str, Path], device: torch.device, *,
                 input_size, seed: int = 0, val: Optional[Tuple[Any, Any]] = None):
        self.query, self.gallery, self.out_dir, self.device = query, gallery, Path(out_dir), device
        self.input_size, self.seed, self.val = tuple(input_size), seed, val
        self.forms: Dict[str, Dict[str, Any]] = {}

    def add(self, form: str, model: torch.nn.Module) -> Dict[str, Any]:
        model = model.to(self.device).eval()
        summary, res = evaluate_model(model, self.query, self.gallery, device=self.device, seed=self.seed)
        np.savez(RunDir(self.out_dir).per_query_path(form), **per_query_arrays(res))
        cx = profile(model, self.input_size)
        rec = {**summary, "params": int(cx["params"]), "params_no_classifier": int(cx["params_no_classifier"]),
               "macs": int(cx["macs"])}
        if self.val is not None:
            val, _ = evaluate_model(model, *self.val, device=self.device, seed=self.seed, n_boot=200)
            rec.update({f"val_{k}": val[k] for k in ("mAP", "mAP_low", "mAP_high", "rank1")})
        self.forms[form] = rec
        log.info("%s: mAP %.2f rank1 %.2f params %.3f M MACs %.4f G", form, rec["mAP"], rec["rank1"],
                 rec["params_no_classifier"] / 1e6, rec["macs"] / 1e9)
        return rec
