"""One run folder and what it holds: the only module that knows its file names.

A finished run of ``python -m deap_lib train`` (:func:`deap_lib.methods.runner.run`) leaves, in its folder:

* ``metrics.json``: config, seed, code version, machine, runtime, and per model form (``teacher``,
  ``student``, ``unpruned``, ``absorbed``, ...) its mAP with interval, rank-k, mINP, params and MACs;
* ``model.pt``: the trained network (compact export); ``absorbed.pt``: a pruning method's deployed network;
* ``per_query_<form>.npz``: per-query AP / INP / hits of each evaluated form (paired bootstraps);
* ``train_log.csv``, ``pruner_norms.json`` and ``last.pt`` (the checkpoint), or the same per stage in
  ``stage1/``, ``stage2/`` for two-stage methods.

:class:`RunDir` names these paths and reads them; :func:`finished_runs` lists the finished runs below a folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

METRICS = "metrics.json"
MODEL = "model.pt"
ABSORBED = "absorbed.pt"
TRAIN_LOG = "train_log.csv"
PRUNER_NORMS = "pruner_norms.json"


def deployed_form(forms: Mapping[str, Any]) -> str:
    """The form a method deploys: ``absorbed`` for pruning methods, else its single trained form."""
    for f in ("absorbed", "teacher", "student"):
        if f in forms:
            return f
    return next(iter(forms))


def macs_kept(forms: Mapping[str, Any], full_macs: Optional[float] = None) -> float:
    """The share of the unpruned network's MACs a run deploys: absorbed / unpruned MACs of a pruning run; of a
    run without an unpruned form (a network built thin, or not compressed), its deployed MACs over
    ``full_macs`` (1.0 when not given)."""
    if "absorbed" in forms and "unpruned" in forms:
        return forms["absorbed"]["macs"] / forms["unpruned"]["macs"]
    return forms[deployed_form(forms)]["macs"] / full_macs if full_macs else 1.0


class RunDir:
    """The folder of one run (finished or not)."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self._metrics: Dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # ---------------------------------------------------------------------------------------------- paths
    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def model_path(self) -> Path:
        """The trained network (``model.pt``)."""
        return self.path / MODEL

    @property
    def absorbed_path(self) -> Path:
        """A pruning method's deployed network (``absorbed.pt``)."""
        return self.path / ABSORBED

    def per_query_path(self, form: str) -> Path:
        return self.path / f"per_query_{form}.npz"

    @property
    def finished(self) -> bool:
        return self.metrics_path.is_file()

    # ---------------------------------------------------------------------------------------------- reading
    @property
    def metrics(self) -> Dict[str, Any]:
        """``metrics.json`` (read once); FileNotFoundError naming the file while the run has not finished."""
        if not self._metrics:
            if not self.finished:
                raise FileNotFoundError(f"{self.metrics_path} not found: the run has not finished")
            self._metrics = json.loads(self.metrics_path.read_text())
        return self._metrics

    @property
    def forms(self) -> Dict[str, Dict[str, Any]]:
        return self.metrics["forms"]

    @property
    def deployed_form(self) -> str:
        return deployed_form(self.forms)

    @property
    def deployed_path(self) -> Path:
        """The deployed network's file: ``absorbed.pt`` of a pruning run, else ``model.pt``."""
        return self.absorbed_path if self.deployed_form == "absorbed" else self.model_path

    def per_query(self, form: str) -> Dict[str, np.ndarray]:
        """The per-query arrays of ``form`` (``per_query_<form>.npz``)."""
        path = self.per_query_path(form)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run {self.name} has no per-query results for form {form!r}")
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def stage_files(self, name: str) -> List[Path]:
        """``name`` of a one-stage run, else of each stage (``stage*/name``, in stage order); may be empty."""
        if (self.path / name).is_file():
            return [self.path / name]
        return sorted(self.path.glob(f"stage*/{name}"))

    def train_log(self):
        """The per-epoch training log (a DataFrame); two-stage methods' stage logs are concatenated with
        columns ``stage`` and ``global_epoch`` (epochs counted across stages)."""
        import pandas as pd

        logs = self.stage_files(TRAIN_LOG)
        if not logs:
            raise FileNotFoundError(f"{self.path}: no {TRAIN_LOG} (nor stage*/{TRAIN_LOG})")
        frames, offset = [], 0
        for path in logs:
            df = pd.read_csv(path)
            df.insert(0, "stage", self.name if path.parent == self.path else path.parent.name)
            df["global_epoch"] = df["epoch"] + offset
            offset += int(df["epoch"].max())
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    @property
    def train_seconds(self) -> float:
        """Seconds spent in training epochs, over every stage and every process that resumed the run (the sum
        of the training log's per-epoch ``seconds``; a run cut from another, ``--cut-of``, carries that run's
        log). ``wall_time_s`` in ``metrics.json`` covers only the process that finished the run."""
        return float(self.train_log()["seconds"].sum())

    def pruner_norms(self) -> Dict[int, np.ndarray]:
        """``{epoch: all pruner norms}`` of a PCP run (the last stage of a two-stage run); empty if none."""
        for p in reversed(self.stage_files(PRUNER_NORMS)):
            return {int(k): np.asarray(v, dtype=np.float64) for k, v in json.loads(p.read_text()).items()}
        return {}

    def load_model(self, form: str = "deployed"):
        """The network of ``form`` (``"deployed"``, or ``"model"``) in eval mode."""
        from .export import load_compact

        path = self.deployed_path if form == "deployed" else self.model_path
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run {self.name} has no {form} model file")
        return load_compact(str(path)).eval()


def finished_runs(root: PathLike, pattern: str = "*") -> Iterator[RunDir]:
    """Every finished run in the folders ``root/<pattern>`` (sorted by path)."""
    for p in sorted(Path(root).glob(f"{pattern}/{METRICS}")):
        yield RunDir(p.parent)
