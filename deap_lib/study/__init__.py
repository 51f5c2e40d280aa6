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
from ..records import summary_rows
from ..rundir import deployed_form, macs_kept
from .core import Study
from .pool import JobPool
from .reading import RunReading, dataset_grid
from .specs import (ARCH_KEYS, EVALS_PER_RUN, PROGRESS_EVERY_S, PROGRESS_PREFIX, RUN_LOG, RunFailed, RunSpec, _Job,  # noqa: F401
                    default_eval_every, make_tag)

__all__ = ["Study", "RunSpec", "RunFailed", "make_tag", "default_eval_every", "dataset_grid", "deployed_form", "macs_kept",
           "summary_rows", "EVALS_PER_RUN", "ARCH_KEYS", "PROGRESS_EVERY_S", "PROGRESS_PREFIX", "RUN_LOG", "JobPool",
           "RunReading"]
