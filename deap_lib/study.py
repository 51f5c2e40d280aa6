"""Study orchestration for the notebooks: named runs of one preset, trained as parallel CLI subprocesses.

A :class:`Study` fixes what every run of a study shares (preset, dataset, epochs, device, ...). Each run is
one ``python -m deap_lib train ... --threads 1 --no-progress`` subprocess writing
``runs/<preset>/<method>[-<tag>]-s<seed>/`` (its output goes to ``run.log`` there); ``jobs`` of them run
at a time (on a 2-core CPU, two single-thread runs beat one two-thread run). A finished run with the same
config (and, for distillation, the same teacher file) is reused. The parent process, not the runs, appends
the rows of ``results/summary.csv``, one finished run at a time under a lock, so the file is never
half-written. The teacher a method needs is trained (or reused) first::

    study = Study("quick", runs_dir="/tmp/runs", results_dir="/tmp/results")
    deap, kd = study.run_many([("deap", 0, {"prune.target_macs": 0.3}), ("kd", 0, {})])
    df = study.load_runs()          # one row per (run, form) of every finished run of the preset
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .config import RunConfig, run_config_diff
from .machine import machine_label, run_machine
from .records import SUMMARY_FORMS, append_summary, summary_rows
from .rundir import TRAIN_LOG, RunDir, deployed_form, finished_runs  # noqa: F401  (deployed_form: the notebooks' name)

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
    """One or more training subprocesses failed; the message holds each run's log tail."""


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


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """An exclusive advisory ``flock`` on ``folder`` itself (no lock file left behind; POSIX only, a no-op
    elsewhere). Serialises summary.csv updates of concurrent studies writing the same results folder."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):  # pragma: no cover - non-POSIX
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _synthetic_matches(root: Path, name: str) -> bool:
    """Whether ``root`` holds the synthetic set ``name`` exactly as ``ensure_synthetic`` makes it."""
    from dataclasses import asdict

    from .data.synthetic import GENERATOR_VERSION, synthetic_config, synthetic_seed

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


class Study:
    """Runs of one preset that share data, epochs, device and study-wide ``overrides``.

    Paths: relative ``runs_dir`` / ``results_dir`` / ``data_root`` are taken relative to ``base`` (default:
    the working directory when the Study is made); training subprocesses run there, so configs keep the
    relative paths. ``data_root=None`` uses the preset's root; a given root that does not exist yet (or
    holds exactly the preset's synthetic set) gets the preset's synthetic dataset generated there, any
    other existing folder is read as it is (real data). ``force``: ``False`` reuses finished runs with the
    same config; ``True`` re-runs runs finished before this Study was made; a float (Unix time) re-runs
    runs finished before that time (``reproduce --force`` passes one so that all notebooks share one fresh
    teacher). ``eval_every``: evaluate every N epochs during training (``None``: about
    :data:`EVALS_PER_RUN` evaluations over each run's own epochs, for the mAP-over-epochs curves; 0: only
    at the end).
    """

    def __init__(self, preset: str = "cpu", data_root: Optional[PathLike] = None, runs_dir: PathLike = "runs",
                 results_dir: PathLike = "results", force: Union[bool, float] = False, jobs: int = 2,
                 threads: int = 1, epochs: Optional[int] = None, seed: int = 0,
                 overrides: Optional[Mapping[str, Any]] = None, *, dataset: Optional[str] = None,
                 device: Optional[str] = None, eval_every: Optional[int] = None, base: Optional[PathLike] = None,
                 verbose: bool = True):
        from .methods import get_preset

        if jobs < 1 or threads < 1:
            raise ValueError(f"Study: jobs and threads must be >= 1, got jobs={jobs}, threads={threads}")
        if epochs is not None and int(epochs) < 1:
            raise ValueError(f"Study: epochs must be >= 1 or None (the preset's), got {epochs}")
        self.preset = preset
        self.base = Path(base) if base is not None else Path.cwd()
        self.runs_dir = Path(runs_dir)
        self.results_dir = Path(results_dir)
        self.jobs, self.threads, self.seed, self.verbose = int(jobs), int(threads), int(seed), verbose
        if force is True:
            self.force_since: Optional[float] = time.time()
        elif force is False or force is None:
            self.force_since = None
        elif isinstance(force, (int, float)):
            self.force_since = float(force)
        else:
            raise TypeError(f"Study: force must be a bool or a Unix time, got {force!r}")
        base_cfg = get_preset(preset, "teacher")  # validates the preset name
        ov: Dict[str, Any] = {}
        if dataset is not None:
            ov["data.dataset"] = dataset
        if data_root is not None:
            root = str(data_root)
            ov["data.root"] = root
            syn = base_cfg.data.synthetic
            here = self._abs(root)
            if root != base_cfg.data.root and not (syn and (not here.exists() or _synthetic_matches(here, syn))):
                ov["data.synthetic"] = ""
        if epochs is not None:
            ov["optim.epochs"] = int(epochs)
        if device is not None:
            ov["device"] = device
        if eval_every is not None:
            ov["eval_every"] = int(eval_every)
        ov.update(overrides or {})
        self.overrides = ov
        get_preset(preset, "teacher", **ov)  # fail early on a bad study-wide override
        self._data_ready = False

    # ---------------------------------------------------------------------------------------------- paths
    def _abs(self, p: PathLike) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.base / p

    @property
    def summary_csv(self) -> Path:
        return self._abs(self.results_dir) / "summary.csv"

    @classmethod
    def from_notebook(cls, params: Mapping[str, Any]) -> "Study":
        """The study of a notebook's parameters cell (``preset``, ``data_root``, ``runs_dir``, ``out``,
        ``force``, ``jobs``, ``epochs``, ``seed``, ``dataset``, ``device``; e.g. ``globals()``), with paths
        relative to the repository root: a kernel started in ``notebooks/`` (JupyterLab) moves there first."""
        here = Path.cwd()
        if here.name == "notebooks" and (here.parent / "pyproject.toml").is_file():
            os.chdir(here.parent)
        p = params
        return cls(p["preset"], data_root=p["data_root"], runs_dir=p["runs_dir"], results_dir=p["out"],
                   force=p["force"], jobs=p["jobs"], epochs=p["epochs"], seed=p["seed"], dataset=p["dataset"],
                   device=p["device"])

    def main_seeds(self, seeds: Optional[Iterable[int]], full: bool) -> List[int]:
        """The seeds of the main runs: ``seeds`` if given (the study's own seed always included), else the
        study's seed and the next two in the full study, the study's seed alone otherwise."""
        if seeds is None:
            seeds = [self.seed, self.seed + 1, self.seed + 2] if full else [self.seed]
        return sorted({int(s) for s in seeds} | {self.seed})

    def __repr__(self) -> str:
        return (f"Study(preset={self.preset!r}, runs={self._abs(self.runs_dir) / self.preset}, "
                f"results={self._abs(self.results_dir)}, jobs={self.jobs}, threads={self.threads}, "
                f"overrides={self.overrides})")

    def spec(self, method: str, seed: Optional[int] = None, overrides: Optional[Mapping[str, Any]] = None,
             tag: Optional[str] = None) -> RunSpec:
        from .methods import METHODS

        METHODS.get(method)  # KeyError listing the methods
        ov = {k: tuple(v) if isinstance(v, list) else v for k, v in (overrides or {}).items()}
        ov = self._effective(method, ov)
        return RunSpec(method, int(self.seed if seed is None else seed), tuple(sorted(ov.items())),
                       make_tag(ov) if tag is None else tag)

    def _effective(self, method: str, ov: Dict[str, Any]) -> Dict[str, Any]:
        """``ov`` without the overrides that leave the study's config of ``method`` unchanged, so that
        ``("deap", 0, {"prune.target_macs": 0.28})`` names the same run as ``"deap"`` when 0.28 is the
        preset's value (one run, reused, not two identical ones)."""
        if not ov:
            return ov
        import copy

        from .config import apply_overrides
        from .methods import get_preset

        base = get_preset(self.preset, method, **self._study_overrides(method))
        kept = {}
        for k, v in ov.items():
            try:
                changed = apply_overrides(copy.deepcopy(base), {k: v}).to_dict() != base.to_dict()
            except (KeyError, ValueError, TypeError):
                changed = True  # let config() report the bad key with its message
            if changed:
                kept[k] = v
        return kept

    def run_dir(self, method_or_spec: Union[str, RunSpec], seed: Optional[int] = None,
                overrides: Optional[Mapping[str, Any]] = None, tag: Optional[str] = None) -> Path:
        """``runs_dir/<preset>/<method>[-<tag>]-s<seed>`` (absolute)."""
        spec = method_or_spec if isinstance(method_or_spec, RunSpec) else \
            self.spec(method_or_spec, seed, overrides, tag)
        return self._abs(self.runs_dir) / self.preset / spec.name

    def _cli_dir(self, spec: RunSpec) -> str:
        """The run folder as given to / stored by the CLI (relative to ``base`` when runs_dir is)."""
        return str(Path(self.runs_dir) / self.preset / spec.name)

    # ---------------------------------------------------------------------------------------------- config
    @staticmethod
    def needs_teacher(method: str) -> bool:
        from .methods import METHODS

        return bool(getattr(METHODS.get(method), "needs_teacher", False))

    def _study_overrides(self, method: str) -> Dict[str, Any]:
        """The study-wide overrides as they apply to ``method``: a method with its own data (``pretrain``)
        keeps its corpus; a study on another data folder keeps that corpus beside it (``<root>_pretrain``)."""
        from .methods import METHODS

        if not getattr(METHODS.get(method), "own_data", False):
            return self.overrides
        ov = {k: v for k, v in self.overrides.items() if not k.startswith("data.")}
        if "data.root" in self.overrides:
            ov["data.root"] = str(self.overrides["data.root"]).rstrip("/") + "_pretrain"
        return ov

    @staticmethod
    def arch_overrides(spec: RunSpec) -> Dict[str, Any]:
        """The run's own architecture (``model.arch`` / ``model.width`` overrides, :data:`ARCH_KEYS`): a run on
        another backbone than the preset's (MobileNetV2 in notebook 07) gets a pre-training run and teachers
        of that backbone, trained by the same pool."""
        return {k: v for k, v in spec.overrides if k in ARCH_KEYS}

    def pretrain_spec(self, arch: Optional[Mapping[str, Any]] = None) -> RunSpec:
        """The study's pre-training run (one per study and backbone, shared by every seed)."""
        return self.spec("pretrain", self.seed, dict(arch or {}))

    def teacher_spec(self, seed: Optional[int] = None, arch: Optional[Mapping[str, Any]] = None) -> RunSpec:
        """The teacher of ``seed`` (of the backbone ``arch``, default the preset's)."""
        return self.spec("teacher", seed, dict(arch or {}))

    def pretrain_path(self, arch: Optional[Mapping[str, Any]] = None) -> str:
        """The study's pre-trained backbone (one per study and backbone, shared by every seed), as stored in
        configs."""
        return str(RunDir(self._cli_dir(self.pretrain_spec(arch))).model_path)

    def _needs_pretrain(self, spec: RunSpec) -> bool:
        return self._run_overrides(spec).get("pretrained_path") == self.pretrain_path(self.arch_overrides(spec))

    def teacher_path(self, seed: Optional[int] = None, arch: Optional[Mapping[str, Any]] = None) -> str:
        """The teacher checkpoint a distillation run of ``seed`` (on backbone ``arch``) uses, as stored in its
        config."""
        return str(RunDir(self._cli_dir(self.teacher_spec(seed, arch))).model_path)

    def config(self, spec: Union[str, RunSpec], seed: Optional[int] = None,
               overrides: Optional[Mapping[str, Any]] = None) -> RunConfig:
        """The full config of a run (what the training subprocess will build)."""
        from .methods import get_preset

        if isinstance(spec, str):
            spec = self.spec(spec, seed, overrides)
        return get_preset(self.preset, spec.method, **self._run_overrides(spec))

    def _run_overrides(self, spec: RunSpec) -> Dict[str, Any]:
        """Every override a run gets on top of its preset (what its subprocess receives as ``--set``): the
        study's, the seed, the run's own, its teacher, and, unless the study fixed it, an evaluation
        cadence giving about :data:`EVALS_PER_RUN` evaluations over the run's own epochs."""
        from .methods import get_preset

        ov = {**self._study_overrides(spec.method), "seed": spec.seed, **dict(spec.overrides)}
        arch = self.arch_overrides(spec)
        if self.needs_teacher(spec.method) and "teacher_path" not in ov:
            ov["teacher_path"] = self.teacher_path(spec.seed, arch)
        cfg = get_preset(self.preset, spec.method, **ov)
        if cfg.student_init == "checkpoint" and not cfg.pretrained_path:
            ov["pretrained_path"] = self.pretrain_path(arch)
        if "eval_every" not in ov:
            ov["eval_every"] = default_eval_every(get_preset(self.preset, spec.method, **ov).optim.epochs)
        return ov

    def prepare_data(self):
        """Generate the preset's synthetic dataset if needed (in this process, before any run starts) and
        return the parsed dataset."""
        from .data import build_dataset
        from .data.synthetic import ensure_synthetic

        d = self.config("teacher").data
        root = self._abs(d.root)
        if d.synthetic and not self._data_ready:
            ensure_synthetic(str(root), d.synthetic)
        self._data_ready = True
        return build_dataset(d.dataset, root)

    # ---------------------------------------------------------------------------------------------- state
    def _finished(self, job: _Job) -> Optional[Dict[str, Any]]:
        """The reusable metrics of a job's folder, or None when it must (re)train. A finished run with
        another config raises unless forced."""
        path = RunDir(job.run_dir).metrics_path
        if not path.is_file():
            return None
        try:
            old = json.loads(path.read_text())
        except ValueError:
            return None
        if self.force_since is not None and path.stat().st_mtime < self.force_since:
            job.extra["why"] = "forced"
            return None
        from .methods.runner import finished_run_diff

        diff = finished_run_diff(old, job.cfg)
        if diff:
            if self.force_since is not None:
                job.extra["why"] = "config changed (forced)"
                return None
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:6])
            raise FileExistsError(f"{job.run_dir} holds a finished run with a different config ({shown}); "
                                  "pass force=True to re-run it, or use another runs_dir")
        from .fileio import file_sha256

        if job.cfg.student_init == "checkpoint" and job.cfg.pretrained_path:
            pp = self._abs(job.cfg.pretrained_path)
            if pp.is_file() and old.get("pretrained_hash") != file_sha256(str(pp)):
                job.extra["why"] = "its pre-training was redone"
                return None
        if job.cfg.teacher_path:
            tp = self._abs(job.cfg.teacher_path)
            if tp.is_file() and old.get("teacher_hash") != file_sha256(str(tp)):
                job.extra["why"] = "its teacher was retrained"
                return None
        return old

    def _cost(self, job: "_Job") -> float:
        """Rough relative training cost (epochs x per-epoch weight), to start the longest runs first: a
        teacher forward adds ~35 % to a step, PCP pruners and the pruning bookkeeping ~15 %; a two-stage method
        trains ``stage_frac`` of the epochs twice, half of them with a teacher."""
        from .methods import METHODS

        cost = 0.0
        for stage in METHODS.get(job.spec.method).stages(job.cfg):
            cls = stage.method
            cost += stage.cfg.optim.epochs * (1.0 + 0.35 * bool(cls.needs_teacher) + 0.15 * bool(cls.prunes))
        return cost

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(f"[study] {msg}", flush=True)

    # ---------------------------------------------------------------------------------------------- progress
    @staticmethod
    def _epochs(job: "_Job") -> Tuple[int, int]:
        """``(epochs done, epochs in all)`` of a job, over all its stages (from the training logs)."""
        from .methods import METHODS

        stages = METHODS.get(job.spec.method).stages(job.cfg)
        done = 0
        for stage in stages:
            log = RunDir(job.run_dir / stage.subdir).path / TRAIN_LOG
            if log.is_file():
                with open(log) as fh:
                    done += max(0, sum(1 for _ in fh) - 1)
        return done, sum(st.cfg.optim.epochs for st in stages)

    def progress_line(self, running: Sequence["_Job"], pending: Sequence["_Job"], rates: Sequence[float],
                      now: Optional[float] = None) -> Optional[str]:
        """One line on the training pool: every running run's epoch out of its total, the queued runs, and an
        estimate of the time left for the pool (seconds per unit of :meth:`_cost`, measured on this pool's
        runs, times the work left, over the job slots). ``None`` when nothing runs."""
        if not running:
            return None
        now = time.time() if now is None else now
        parts, left, rate_now = [], 0.0, list(rates)
        for job in running:
            done, total = self._epochs(job)
            parts.append(f"{job.spec.name} {done}/{total}")
            cost = self._cost(job)
            left += cost * (1.0 - done / max(1, total))
            if done:
                rate_now.append((now - job.t0) / (cost * done / max(1, total)))
        left += sum(self._cost(j) for j in pending)
        eta = ""
        if rate_now:
            secs = left * float(np.median(rate_now)) / max(1, min(self.jobs, len(running) + len(pending)))
            eta = f" | ~{secs / 60:.0f} min left" if secs >= 90 else f" | ~{secs:.0f} s left"
        queued = f" | {len(pending)} queued" if pending else ""
        return f"{PROGRESS_PREFIX} training {', '.join(parts)} (epochs){queued}{eta}"

    def _report_progress(self, line: Optional[str]) -> None:
        """Print the progress line when it changed; nothing in CI (``CI`` set) or when not verbose."""
        if line and self.verbose and not os.environ.get("CI") and line != getattr(self, "_last_progress", None):
            self._last_progress = line
            print(line, flush=True)

    # ---------------------------------------------------------------------------------------------- running
    def _command(self, job: _Job, fresh: bool) -> List[str]:
        spec = job.spec
        cmd = [sys.executable, "-m", "deap_lib", "train", "--method", spec.method, "--preset", self.preset,
               "--out", self._cli_dir(spec), "--threads", str(self.threads), "--no-progress"]
        for k, v in self._run_overrides(spec).items():
            cmd += ["--set", _set_arg(k, v)]
        cmd.append("--force" if fresh else "--resume")
        return cmd

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        pkg_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start(self, job: _Job) -> None:
        fresh = "why" in job.extra  # forced / stale: start over
        if fresh and job.run_dir.exists():
            shutil.rmtree(job.run_dir)
        job.run_dir.mkdir(parents=True, exist_ok=True)
        log = job.run_dir / RUN_LOG
        cmd = self._command(job, fresh)
        job.log_offset = log.stat().st_size if log.exists() else 0
        with open(log, "a") as fh:
            fh.write(f"=== {' '.join(cmd[1:])}\n")
            fh.flush()
            job.proc = subprocess.Popen(cmd, cwd=self.base, stdout=fh, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=self._env())
        job.t0 = time.time()
        why = f" ({job.extra['why']})" if fresh else ""
        self._log(f"{job.spec.name}: training{why}, log {log}")

    def _log_tail(self, job: _Job, n: int = 40) -> str:
        log = job.run_dir / RUN_LOG
        try:
            with open(log, "rb") as fh:
                fh.seek(job.log_offset)
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError as e:
            return f"(cannot read {log}: {e})"
        return "\n".join(lines[-n:])

    def _record_summary(self, metrics: Mapping[str, Any]) -> None:
        rows = summary_rows(metrics)
        if rows:
            with _folder_lock(self.summary_csv.parent):
                append_summary(self.summary_csv, rows)

    def _collect(self, job: _Job) -> Dict[str, Any]:
        metrics = RunDir(job.run_dir).metrics
        diff = run_config_diff(metrics.get("config", {}), job.cfg)
        if diff:
            raise RuntimeError(f"{job.run_dir}: the training subprocess built a different config than the study "
                               f"({', '.join(list(diff)[:6])}); this is a bug in deap_lib.study")
        return metrics

    def _execute(self, specs: Sequence[RunSpec],
                 deps: Optional[Mapping[RunSpec, Sequence[RunSpec]]] = None) -> Dict[RunSpec, Dict[str, Any]]:
        """Reuse or train ``specs``, ``jobs`` at a time; summary rows per finished run. ``deps[s]``: runs of
        ``specs`` that ``s`` needs (its pre-training, its teacher): ``s`` is checked for reuse and started only
        once they are done, and fails without starting when one of them failed. Among the runs ready to start,
        the longest chain of training still hanging on a run (its own cost plus its dependants') goes first."""
        deps = {s: [d for d in dict.fromkeys((deps or {}).get(s, ())) if d != s] for s in dict.fromkeys(specs)}
        order = list(deps)
        results: Dict[RunSpec, Dict[str, Any]] = {}
        dependants: Dict[RunSpec, List[RunSpec]] = {s: [] for s in order}
        for s, ds in deps.items():
            for d in ds:
                if d not in dependants:
                    raise ValueError(f"{s.name} depends on {d.name}, which is not among the runs to execute")
                dependants[d].append(s)
        jobs = {s: _Job(s, self.config(s), self.run_dir(s)) for s in order}
        chain: Dict[RunSpec, float] = {}

        def chain_cost(s: RunSpec) -> float:  # cost of s plus the costliest chain of runs waiting on it
            if s not in chain:
                chain[s] = self._cost(jobs[s]) + max((chain_cost(t) for t in dependants[s]), default=0.0)
            return chain[s]

        waiting = list(order)  # not yet checked for reuse
        pending: List[_Job] = []  # to train, their dependencies done
        running: List[_Job] = []
        failed: List[Tuple[_Job, str]] = []
        failed_specs: set = set()
        rates: List[float] = []  # seconds per cost unit of the runs this pool finished
        next_report = 0.0
        prepared = False

        def release() -> None:  # check the runs whose dependencies are settled: reuse, queue or fail them
            nonlocal prepared
            changed = True
            while changed:
                changed = False
                for s in list(waiting):
                    if any(d in failed_specs for d in deps[s]):
                        waiting.remove(s)
                        failed_specs.add(s)
                        failed.append((jobs[s], "not started: a run it needs failed"))
                        changed = True
                    elif all(d in results for d in deps[s]):
                        waiting.remove(s)
                        old = self._finished(jobs[s])
                        if old is None:
                            pending.append(jobs[s])
                        else:
                            results[s] = old
                            self._record_summary(old)
                            changed = True
            if pending and not prepared:
                self.prepare_data()
                prepared = True
            pending.sort(key=lambda j: -chain_cost(j.spec))

        try:
            release()
            while pending or running:
                while pending and len(running) < self.jobs:
                    job = pending.pop(0)
                    self._start(job)
                    running.append(job)
                time.sleep(0.2)
                if time.time() >= next_report:
                    self._report_progress(self.progress_line(running, pending, rates))
                    next_report = time.time() + PROGRESS_EVERY_S
                for job in [j for j in running if j.proc.poll() is not None]:
                    running.remove(job)
                    rc = job.proc.returncode
                    if rc != 0 or not RunDir(job.run_dir).finished:
                        failed.append((job, f"exit status {rc}"))
                        failed_specs.add(job.spec)
                        self._log(f"{job.spec.name}: FAILED (exit status {rc}), log {job.run_dir / RUN_LOG}")
                    else:
                        metrics = self._collect(job)
                        rates.append((time.time() - job.t0) / max(1e-9, self._cost(job)))
                        results[job.spec] = metrics
                        self._record_summary(metrics)
                        form = deployed_form(metrics["forms"])
                        self._log(f"{job.spec.name}: done in {time.time() - job.t0:.1f} s, {form} mAP "
                                  f"{metrics['forms'][form]['mAP_text']}")
                    release()
        except BaseException:
            for job in running:  # only the processes this call started
                if job.proc.poll() is None:
                    job.proc.terminate()
            for job in running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    job.proc.wait(timeout=10)
                if job.proc.poll() is None:
                    job.proc.kill()
            raise
        if failed:
            parts = [f"--- {job.spec.name} ({why}); log {job.run_dir / RUN_LOG}, last lines:\n{self._log_tail(job)}"
                     for job, why in failed]
            raise RunFailed(f"{len(failed)} run(s) failed:\n" + "\n".join(parts))
        return results

    def _as_spec(self, item: Union[str, RunSpec, Sequence[Any]]) -> RunSpec:
        if isinstance(item, RunSpec):
            return item
        if isinstance(item, str):
            return self.spec(item)
        if not isinstance(item, (tuple, list)) or not 1 <= len(item) <= 4:
            raise ValueError(f"run_many: each run must be a method name, a RunSpec or a tuple (method, seed, "
                             f"overrides[, tag]), got {item!r}")
        method, seed, ov, tag = (list(item) + [None, None, None])[:4]
        return self.spec(method, seed, ov, tag)

    def run_many(self, runs: Iterable[Union[str, RunSpec, Sequence[Any]]]) -> List[Dict[str, Any]]:
        """Train or reuse several independent runs (``(method, seed, overrides[, tag])`` tuples, method names
        or :class:`RunSpec`); the pre-training and the teachers they need come first. Returns their metrics dicts (in order, each
        with an added ``run_dir``). Raises :class:`RunFailed` (with log tails) after the other runs finish
        if any run fails."""
        specs = [self._as_spec(r) for r in runs]
        deps: Dict[RunSpec, List[RunSpec]] = {}
        todo = list(specs)
        for s in specs:
            if self.needs_teacher(s.method):
                t = self.teacher_spec(s.seed, self.arch_overrides(s))
                deps.setdefault(s, []).append(t)
                todo.append(t)
        for s in list(dict.fromkeys(todo)):
            pre = self.pretrain_spec(self.arch_overrides(s))
            if s != pre and self._needs_pretrain(s):
                deps.setdefault(s, []).append(pre)
                todo.append(pre)
        # one pool: the pre-training and the teachers start first, every run as soon as what it needs is done
        done = self._execute(list(dict.fromkeys(todo)), deps)
        return [{**done[s], "run_dir": str(self.run_dir(s))} for s in specs]

    def run(self, method: str, seed: Optional[int] = None, *, tag: Optional[str] = None,
            overrides: Optional[Mapping[str, Any]] = None, **kw: Any) -> Dict[str, Any]:
        """Train or reuse one run; overrides as a dotted dict and/or keywords with ``__`` for dots
        (``run("deap", prune__target_macs=0.3)``). Returns its metrics dict (plus ``run_dir``)."""
        return self.run_many([self.spec(method, seed, _dotted(overrides, kw), tag)])[0]

    def teacher(self, seed: Optional[int] = None) -> Path:
        """Train or reuse the teacher of ``seed``; returns its run folder (holding ``model.pt``)."""
        self.run("teacher", seed)
        return self.run_dir("teacher", seed)

    # ---------------------------------------------------------------------------------------------- reading
    def metrics(self, run_dir: PathLike) -> Dict[str, Any]:
        return RunDir(run_dir).metrics

    def load_runs(self, all_presets: bool = False):
        """One row per (run, form) of every finished run under ``runs_dir/<preset>/`` (every preset with
        ``all_presets``): run, run_dir, method, tag, preset, dataset, seed, form, deployed (the run's deployed
        form), the form's metrics (mAP, intervals, rank-k, mINP, params, params_no_classifier, macs), and
        arch (backbone and width), wall_time_s, epochs, target_macs, threshold from the run's config. Runs without a benchmark form (the
        pre-training, evaluated on its own corpus) are left out."""
        import pandas as pd

        root = self._abs(self.runs_dir)
        rows = []
        for rd in finished_runs(root, "*/*" if all_presets else f"{self.preset}/*"):
            m, p = rd.metrics, rd.metrics_path
            if not set(m["forms"]) & set(SUMMARY_FORMS):
                continue
            cfg = m.get("config", {})
            name, method, seed = p.parent.name, m["method"], m["seed"]
            tag = name[len(method) + 1: -len(f"-s{seed}")] if name.startswith(method + "-") else ""
            dep = deployed_form(m["forms"])
            machine = machine_label(run_machine(m))
            for form, r in m["forms"].items():
                row = {"run": name, "run_dir": str(p.parent), "method": method, "tag": tag,
                       "preset": m["preset"], "dataset": m["dataset"], "seed": seed, "form": form,
                       "deployed": form == dep}
                row.update({k: v for k, v in r.items() if not k.endswith("_text")})
                row["mAP_text"] = r.get("mAP_text")
                mc = cfg.get("model", {})
                row["arch"] = f"{mc.get('arch')} x{mc.get('width')}"
                row.update(machine=machine, code=m.get("code_version"), start=m.get("start"))
                row.update(wall_time_s=m.get("wall_time_s"), epochs=m.get("epochs", cfg.get("optim", {}).get("epochs")),
                           target_macs=cfg.get("prune", {}).get("target_macs"),
                           threshold=cfg.get("prune", {}).get("threshold"))
                rows.append(row)
        return pd.DataFrame(rows)

    @staticmethod
    def train_log(run_dir: PathLike):
        """:meth:`deap_lib.rundir.RunDir.train_log` of ``run_dir``."""
        return RunDir(run_dir).train_log()

    @staticmethod
    def pruner_norms(run_dir: PathLike) -> Dict[int, np.ndarray]:
        """:meth:`deap_lib.rundir.RunDir.pruner_norms` of ``run_dir``."""
        return RunDir(run_dir).pruner_norms()


def dataset_grid(dataset, n_ids: int = 6, *, max_cams: int = 6, seed: int = 0, size: int = 64):
    """A PIL grid of test identities (rows) seen by different cameras (columns) for any ``ReIDDataset``."""
    from PIL import Image

    items = list(dataset.query) + list(dataset.gallery)
    by_id: Dict[int, Dict[int, str]] = {}
    for it in items:
        by_id.setdefault(int(it[1]), {}).setdefault(int(it[2]), str(it[0]))
    pids = sorted(p for p, cams in by_id.items() if len(cams) > 1) or sorted(by_id)
    if not pids:
        raise ValueError(f"dataset_grid: {dataset.name} has no query/gallery images")
    rng = np.random.default_rng(seed)
    chosen = sorted(int(p) for p in rng.choice(pids, min(n_ids, len(pids)), replace=False))
    gap = 2
    out = Image.new("RGB", (max_cams * (size + gap), len(chosen) * (size + gap)), (255, 255, 255))
    for i, pid in enumerate(chosen):
        for j, cam in enumerate(sorted(by_id[pid])[:max_cams]):
            with Image.open(by_id[pid][cam]) as im:
                out.paste(im.convert("RGB").resize((size, size)), (j * (size + gap), i * (size + gap)))
    return out
