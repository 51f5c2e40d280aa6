"""Training runs as parallel CLI subprocesses: which runs must (re)train, starting and watching them, the
live progress line, collecting their metrics and appending ``summary.csv`` under a lock."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..config import run_config_diff
from ..records import append_summary, summary_rows
from ..rundir import TRAIN_LOG, RunDir, deployed_form

PathLike = Union[str, "os.PathLike[str]"]
from .specs import PROGRESS_EVERY_S, PROGRESS_PREFIX, RUN_LOG, RunFailed, RunSpec, _folder_lock, _Job, _set_arg


class JobPool:
    """The execution half of :class:`~deap_lib.study.Study` (a mixin: it reads the study's settings)."""

    # ---------------------------------------------------------------------------------------------- state
    def _finished(self, job: _Job) -> Optional[Dict[str, Any]]:
        """The reusable metrics of a job's folder, or None when it must (re)train. A finished run with
        another config raises unless forced."""
        rd = RunDir(job.run_dir)
        if not rd.finished:
            return None
        try:
            old = rd.metrics
        except ValueError:  # a torn or foreign metrics.json: retrain
            return None
        path = rd.metrics_path
        if self.force_since is not None and path.stat().st_mtime < self.force_since:
            job.extra["why"] = "forced"
            return None
        from ..methods.runner import finished_run_diff

        diff = finished_run_diff(old, job.cfg)
        if diff:
            if self.force_since is not None:
                job.extra["why"] = "config changed (forced)"
                return None
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:6])
            raise FileExistsError(f"{job.run_dir} holds a finished run with a different config ({shown}); "
                                  "pass force=True to re-run it, or use another runs_dir")
        from ..fileio import file_sha256

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
        from ..methods import METHODS

        if "cut_of" in job.extra:  # only a cut and its evaluations
            return 1.0
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
        from ..methods import METHODS

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
        if "cut_of" in job.extra:
            cmd += ["--cut-of", job.extra["cut_of"]]
        return cmd

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        pkg_root = str(Path(__file__).resolve().parents[2])  # the folder holding deap_lib (this is deap_lib/study/)
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

    def _execute(self, specs: Sequence[RunSpec], deps: Optional[Mapping[RunSpec, Sequence[RunSpec]]] = None,
                 cuts: Optional[Mapping[RunSpec, RunSpec]] = None) -> Dict[RunSpec, Dict[str, Any]]:
        """Reuse or train ``specs``, ``jobs`` at a time; summary rows per finished run. ``deps[s]``: runs of
        ``specs`` that ``s`` needs (its pre-training, its teacher): ``s`` is checked for reuse and started only
        once they are done, and fails without starting when one of them failed. ``cuts[s]``: the finished run of
        ``deps[s]`` that ``s`` is another cut of (trained as it, only cut here). Among the runs ready to start,
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
        for s, base in (cuts or {}).items():
            jobs[s].extra["cut_of"] = self._cli_dir(base)
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
            raise RunFailed(f"{len(failed)} run(s) failed:\n" + "\n".join(parts),
                            failed={job.spec: why for job, why in failed}, results=results)
        return results
