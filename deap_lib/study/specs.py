"""What a study's runs are: their names (:class:`RunSpec`, :func:`make_tag`), the evaluation schedule, the
job record of a training subprocess, and small helpers (the summary lock, synthetic-set checks)."""
from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union


from ..config import RunConfig
from ..fileio import folder_lock

PathLike = Union[str, "os.PathLike[str]"]
RUN_LOG = "run.log"
#: Evaluations during a run (for the mAP-over-epochs curves) when the study does not fix ``eval_every``.
EVALS_PER_RUN = 5


def default_eval_every(epochs: int) -> int:
    """Evaluate every ``ceil(epochs / EVALS_PER_RUN)`` epochs: at most ``EVALS_PER_RUN`` evaluations, evenly
    spaced, the last at the last epoch when the spacing divides it (a 16-epoch run: epochs 4, 8, 12, 16)."""
    return max(1, -(-int(epochs) // EVALS_PER_RUN))
#: seconds between two checks of the running jobs' training logs for the progress line
PROGRESS_EVERY_S = 2.0
#: config keys that make a run's backbone differ from the preset's: its teacher and pre-training follow them
ARCH_KEYS = ("model.arch", "model.width")
#: prefix of the live progress lines (``python -m deap_lib reproduce`` echoes them from the notebooks)
PROGRESS_PREFIX = "[progress]"
_TAG_OK = re.compile(r"[^A-Za-z0-9._]+")


class RunFailed(RuntimeError):
    """One or more training subprocesses failed; the message holds each run's log tail, ``failed`` maps each
    failed run's spec to why, ``results`` the metrics of the runs that finished."""

    def __init__(self, message: str, failed: Optional[Dict["RunSpec", str]] = None,
                 results: Optional[Dict["RunSpec", Dict[str, Any]]] = None):
        super().__init__(message)
        self.failed = dict(failed or {})
        self.results = dict(results or {})


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: ``method`` + ``seed`` + per-run config ``overrides`` (dotted keys); ``tag`` names
    the run folder (default: derived from the overrides)."""

    method: str
    seed: int
    overrides: Tuple[Tuple[str, Any], ...] = ()
    tag: str = ""

    @property
    def name(self) -> str:
        return f"{self.method}{'-' + self.tag if self.tag else ''}-s{self.seed}"


def make_tag(overrides: Mapping[str, Any]) -> str:
    """A short folder tag for per-run overrides: ``{"prune.target_macs": 0.3}`` -> ``"target_macs0.3"``."""
    parts = []
    for key in sorted(overrides):
        v = overrides[key]
        parts.append(_TAG_OK.sub("", key.rsplit(".", 1)[-1] + str(v)))
    tag = "_".join(parts)
    if len(tag) > 48:
        import hashlib

        digest = hashlib.sha1(json.dumps(sorted((k, repr(v)) for k, v in overrides.items())).encode()).hexdigest()
        tag = tag[:39] + "_" + digest[:8]
    return tag


def _dotted(overrides: Optional[Mapping[str, Any]], kw: Mapping[str, Any]) -> Dict[str, Any]:
    """Merge a dotted-key dict and keyword overrides (``prune__target_macs=0.3`` -> ``prune.target_macs``)."""
    out = dict(overrides or {})
    out.update({k.replace("__", "."): v for k, v in kw.items()})
    return out


def _set_arg(key: str, value: Any) -> str:
    """``--set`` text for a config value that the CLI parses back to the same value (strings as they are,
    everything else as a Python literal)."""
    return f"{key}={value}" if isinstance(value, str) else f"{key}={value!r}"


def _folder_lock(folder: Path):
    """Serialises summary.csv updates of concurrent studies writing the same results folder
    (:func:`deap_lib.fileio.folder_lock`)."""
    return folder_lock(folder)


def _synthetic_matches(root: Path, name: str) -> bool:
    """Whether ``root`` holds the synthetic set ``name`` exactly as ``ensure_synthetic`` makes it."""
    from dataclasses import asdict

    from ..data.synthetic import GENERATOR_VERSION, synthetic_config, synthetic_seed

    meta = root / "meta.json"
    if not meta.is_file():
        return False
    try:
        have = json.loads(meta.read_text())
    except ValueError:
        return False
    want = json.loads(json.dumps(dict(generator_version=GENERATOR_VERSION, seed=synthetic_seed(name),
                                      config=asdict(synthetic_config(name)))))
    return all(json.dumps(have.get(k), sort_keys=True) == json.dumps(v, sort_keys=True) for k, v in want.items())


@dataclass
class _Job:
    spec: RunSpec
    cfg: RunConfig
    run_dir: Path
    proc: Optional[subprocess.Popen] = None
    log_offset: int = 0
    t0: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)
