"""The :class:`Study`: runs of one preset sharing data, epochs, device and overrides; their names, configs,
teachers and pre-training (the execution and reading halves live in :mod:`.pool` and :mod:`.reading`)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union


from ..config import RunConfig
from ..rundir import RunDir, macs_kept

PathLike = Union[str, "os.PathLike[str]"]
from .pool import JobPool
from .reading import RunReading
from .specs import ARCH_KEYS, RunFailed, RunSpec, _dotted, _synthetic_matches, default_eval_every, make_tag


class Study(JobPool, RunReading):
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
        from ..data.synthetic import SYNTHETIC
        from ..methods import get_preset

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
                # real data: the preset's generated validation set does not belong to it (none: periodic
                # evaluations read the test split and say so; give data.val_root in overrides for one)
                ov["data.val_root"], ov["data.val_synthetic"] = "", ""
            elif base_cfg.data.val_root and base_cfg.data.val_synthetic:  # generated beside it: <root>_val
                ov["data.val_root"] = root.rstrip("/") + "_val"
        d = get_preset(preset, "teacher", **ov).data
        if d.synthetic and not d.val_root and f"{d.synthetic}_val" in SYNTHETIC:
            # a study on a generated set always has a validation split: the generator's twin beside it
            ov["data.val_root"], ov["data.val_synthetic"] = d.root.rstrip("/") + "_val", f"{d.synthetic}_val"
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
        from ..methods import METHODS

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

        from ..config import apply_overrides
        from ..methods import get_preset

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
    def student_is_teacher(self, seed: Optional[int] = None) -> bool:
        """Whether the plain student of ``seed`` would train exactly as its teacher (same architecture, start,
        schedule and seed: the paper's setting, and the cpu preset's): then it *is* the teacher, and the study
        reads the teacher run instead of training a copy."""
        from ..config import config_diff

        diff = config_diff(self.config("teacher", seed).to_dict(), self.config("student", seed).to_dict())
        return set(diff) <= {"method"}

    @staticmethod
    def needs_teacher(method: str) -> bool:
        from ..methods import METHODS

        return bool(getattr(METHODS.get(method), "needs_teacher", False))

    def _study_overrides(self, method: str) -> Dict[str, Any]:
        """The study-wide overrides as they apply to ``method``: a method with its own data (``pretrain``)
        keeps its corpus; a study on another data folder keeps that corpus beside it (``<root>_pretrain``)."""
        from ..methods import METHODS

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

    def pretrain_spec(self, arch: Optional[Mapping[str, Any]] = None, seed: Optional[int] = None) -> RunSpec:
        """The pre-training run of ``seed`` (default the study's) and backbone: each seed draws its own, so that
        intervals over seeds include what the start varies."""
        return self.spec("pretrain", self.seed if seed is None else seed, dict(arch or {}))

    def teacher_spec(self, seed: Optional[int] = None, arch: Optional[Mapping[str, Any]] = None) -> RunSpec:
        """The teacher of ``seed`` (of the backbone ``arch``, default the preset's)."""
        return self.spec("teacher", seed, dict(arch or {}))

    def pretrain_path(self, arch: Optional[Mapping[str, Any]] = None, seed: Optional[int] = None) -> str:
        """The pre-trained backbone of ``seed`` (default the study's) and backbone, as stored in configs."""
        return str(RunDir(self._cli_dir(self.pretrain_spec(arch, seed))).model_path)

    def _needs_pretrain(self, spec: RunSpec) -> bool:
        return self._run_overrides(spec).get("pretrained_path") == \
            self.pretrain_path(self.arch_overrides(spec), spec.seed)

    def teacher_path(self, seed: Optional[int] = None, arch: Optional[Mapping[str, Any]] = None) -> str:
        """The teacher checkpoint a distillation run of ``seed`` (on backbone ``arch``) uses, as stored in its
        config."""
        return str(RunDir(self._cli_dir(self.teacher_spec(seed, arch))).model_path)

    def config(self, spec: Union[str, RunSpec], seed: Optional[int] = None,
               overrides: Optional[Mapping[str, Any]] = None) -> RunConfig:
        """The full config of a run (what the training subprocess will build)."""
        from ..methods import get_preset

        if isinstance(spec, str):
            spec = self.spec(spec, seed, overrides)
        return get_preset(self.preset, spec.method, **self._run_overrides(spec))

    def _run_overrides(self, spec: RunSpec) -> Dict[str, Any]:
        """Every override a run gets on top of its preset (what its subprocess receives as ``--set``): the
        study's, the seed, the run's own, its teacher, and, unless the study fixed it, an evaluation
        cadence giving about :data:`EVALS_PER_RUN` evaluations over the run's own epochs."""
        from ..methods import get_preset

        ov = {**self._study_overrides(spec.method), "seed": spec.seed, **dict(spec.overrides)}
        arch = self.arch_overrides(spec)
        if self.needs_teacher(spec.method) and "teacher_path" not in ov:
            ov["teacher_path"] = self.teacher_path(spec.seed, arch)
        cfg = get_preset(self.preset, spec.method, **ov)
        if cfg.student_init == "checkpoint" and not cfg.pretrained_path:
            ov["pretrained_path"] = self.pretrain_path(arch, spec.seed)
        if "eval_every" not in ov:
            ov["eval_every"] = default_eval_every(get_preset(self.preset, spec.method, **ov).optim.epochs)
        return ov

    def prepare_data(self):
        """Generate the preset's synthetic dataset if needed (in this process, before any run starts) and
        return the parsed dataset."""
        from ..data import build_dataset
        from ..data.synthetic import ensure_synthetic

        d = self.config("teacher").data
        root = self._abs(d.root)
        if not self._data_ready:  # generated here, before the runs that read them start side by side
            if d.synthetic:
                ensure_synthetic(str(root), d.synthetic)
            if d.val_root and d.val_synthetic:
                ensure_synthetic(str(self._abs(d.val_root)), d.val_synthetic)
        self._data_ready = True
        return build_dataset(d.dataset, root)

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

    def run_many(self, runs: Iterable[Union[str, RunSpec, Sequence[Any]]], *,
                 allow_failed: bool = False) -> List[Optional[Dict[str, Any]]]:
        """Train or reuse several independent runs (``(method, seed, overrides[, tag])`` tuples, method names
        or :class:`RunSpec`); the pre-training and the teachers they need come first. Returns their metrics dicts (in order, each
        with an added ``run_dir``). Raises :class:`RunFailed` (with log tails) after the other runs finish
        if any run fails; with ``allow_failed`` (a run that may diverge is a result, not an error) it prints
        that message and returns ``None`` for each failed run instead."""
        specs = [self._as_spec(r) for r in runs]
        deps: Dict[RunSpec, List[RunSpec]] = {}
        todo = list(specs)
        cuts: Dict[RunSpec, RunSpec] = {}
        for s in specs:  # another cut of a run that trains the same: that run first, then only the cut
            base = self.cut_base(s) if not RunDir(self.run_dir(s)).finished else None
            if base is not None:
                cuts[s] = base
                deps.setdefault(s, []).append(base)
                todo.append(base)
        for s in list(dict.fromkeys(todo)):
            if self.needs_teacher(s.method):
                t = self.teacher_spec(s.seed, self.arch_overrides(s))
                deps.setdefault(s, []).append(t)
                todo.append(t)
        for s in list(dict.fromkeys(todo)):
            pre = self.pretrain_spec(self.arch_overrides(s), s.seed)
            if s != pre and self._needs_pretrain(s):
                deps.setdefault(s, []).append(pre)
                todo.append(pre)
        # one pool: the pre-training and the teachers start first, every run as soon as what it needs is done
        try:
            done = self._execute(list(dict.fromkeys(todo)), deps, cuts)
        except RunFailed as e:
            if not allow_failed:
                raise
            print(f"[study] {e}", flush=True)
            done = e.results
        return [{**done[s], "run_dir": str(self.run_dir(s))} if s in done else None for s in specs]

    def cut_base(self, spec: RunSpec) -> Optional[RunSpec]:
        """The run that ``spec`` is another cut of: the same method, seed and overrides without the cut keys
        (:data:`~deap_lib.methods.recut.CUT_KEYS`), when the two train identically (a pruning method cutting at
        the end) and ``spec`` has its default folder name; else None. :meth:`run_many` trains that run (or
        reuses it) and derives ``spec`` from it by the cut alone."""
        from ..methods.recut import CUT_KEYS, cut_only_difference

        ov = dict(spec.overrides)
        base_ov = {k: v for k, v in ov.items() if k not in CUT_KEYS}
        if len(base_ov) == len(ov) or spec.tag != make_tag(ov):
            return None
        base = self.spec(spec.method, spec.seed, base_ov)
        return base if cut_only_difference(spec.method, self.config(base).to_dict(),
                                           self.config(spec).to_dict()) else None

    def run(self, method: str, seed: Optional[int] = None, *, tag: Optional[str] = None,
            overrides: Optional[Mapping[str, Any]] = None, **kw: Any) -> Dict[str, Any]:
        """Train or reuse one run; overrides as a dotted dict and/or keywords with ``__`` for dots
        (``run("deap", prune__target_macs=0.3)``). Returns its metrics dict (plus ``run_dir``)."""
        return self.run_many([self.spec(method, seed, _dotted(overrides, kw), tag)])[0]

    def learned_budget(self, seed: Optional[int] = None) -> float:
        """DEAP's learned compression of ``seed``: the share of the unpruned MACs its absorbed model keeps after
        its own threshold cut, rounded to 4 places; the budget every equal-MACs comparison gives the others."""
        return round(macs_kept(self.run("deap", seed)["forms"]), 4)

    def teacher(self, seed: Optional[int] = None) -> Path:
        """Train or reuse the teacher of ``seed``; returns its run folder (holding ``model.pt``)."""
        self.run("teacher", seed)
        return self.run_dir("teacher", seed)
