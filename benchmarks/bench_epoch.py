"""Real training epochs of the cpu preset, where their time goes, and what each speed lever buys.

Each measurement is one subprocess (one thread, as the study runs its jobs) that builds a run's data and
method the way ``python -m deap_lib train`` does (random weights: timing does not depend on them), trains
``--epochs`` epochs of the preset's schedule through the runner's ``train_stage`` with an evaluation after
every epoch, and times, per epoch: the data pipeline (loader), the teacher's forward pass, the student's
forward pass, the losses, backward, the optimizer step, the method's step hooks (masks, proximal step),
the end-of-epoch work (gradual pruning's budget update, pruner norms, checkpoint) and one periodic
evaluation, amortised as the study schedules it (``EVALS_PER_RUN`` + the last epoch over a run).
The first epoch (caches, allocator warm-up) is left out of the figures.

Variants run interleaved, round by round, so machine noise hits them alike; the ratios are what to report:

* ``before``: the code of ``--before REF`` (default: the commit before the speed work) in a git worktree;
* ``levers-off``: this code with every lever off (per-image pipeline, fp32, eager unfolded teacher);
* ``+batched`` / ``+fold`` / ``+bf16`` / ``+nhwc_inference``: the batched uint8 pipeline, then the
  BN-folded teacher, then bf16 autocast, then the teacher and evaluations channels-last (cumulative);
* ``+nhwc_all``: the student trained channels-last too (``runtime.channels_last=on``);
* ``+frozen_teacher``: the folded teacher as a frozen TorchScript graph (``runtime.freeze_teacher=on``):
  with ``+nhwc_all``, this code's default on a CPU with native bf16;
* ``--emulate-no-bf16``: also ``+bf16`` with oneDNN limited to AVX-512 without bf16 instructions
  (``ONEDNN_MAX_CPU_ISA=AVX512_CORE``), the case ``runtime.precision=auto`` falls back to fp32 for.

    .venv/bin/python benchmarks/bench_epoch.py [--methods teacher,kd,deap] [--epochs 3] [--rounds 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
BEFORE_REF = "2560c4c"  # main before the speed work (issue 23)
LEVERS = {
    "levers-off": {"data.pipeline": "per_image", "runtime.precision": "fp32", "runtime.fold_teacher": False,
                   "runtime.channels_last": "off", "runtime.freeze_teacher": "off"},
}
LEVERS["+batched"] = dict(LEVERS["levers-off"], **{"data.pipeline": "batched"})
LEVERS["+fold"] = dict(LEVERS["+batched"], **{"runtime.fold_teacher": True})
LEVERS["+bf16"] = dict(LEVERS["+fold"], **{"runtime.precision": "bf16"})
LEVERS["+nhwc_inference"] = dict(LEVERS["+bf16"], **{"runtime.channels_last": "inference"})
LEVERS["+nhwc_all"] = dict(LEVERS["+bf16"], **{"runtime.channels_last": "on"})
LEVERS["+frozen_teacher"] = dict(LEVERS["+nhwc_all"], **{"runtime.freeze_teacher": "on"})
PARTS = ("data", "teacher_fwd", "student_fwd", "losses", "backward", "optimizer", "step_hooks", "epoch_end",
         "eval_amortised")


# ------------------------------------------------------------------------------------------- worker
def _worker(method_name: str, overrides: Dict, epochs: int, preset: str) -> Dict:
    """One measurement in this process (the code on ``sys.path``); returns per-epoch part times."""
    import torch

    torch.set_num_threads(1)
    from deap_lib.data.run_data import RunData
    from deap_lib.methods import METHODS, get_preset
    from deap_lib.methods import runner
    from deap_lib.models import build_model
    from deap_lib import study

    ov = {"student_init": "random", "pretrained_path": None, "eval_every": 1, **overrides}
    if METHODS.get(method_name).needs_teacher:
        ov["teacher_path"] = "bench-teacher.pt"  # only named: the teacher below is built in memory
    cfg = get_preset(preset, method_name, **ov)
    schedule = cfg.optim.epochs
    t0 = time.perf_counter()
    data = RunData(cfg)
    setup_s = time.perf_counter() - t0
    torch.manual_seed(0)
    m = cfg.model
    method_cls = METHODS.get(method_name)
    teacher = None
    if method_cls.needs_teacher:
        teacher = build_model(m.arch, data.num_classes, width=m.width, last_stride=m.last_stride, head=m.head,
                              embed_dim=m.embed_dim).eval()
    student = runner.build_student(cfg, data.num_classes, method_cls.pcp)
    method = method_cls(cfg, student, teacher)
    clock: Dict[str, float] = {k: 0.0 for k in ("data", "teacher_fwd", "student_fwd", "forward", "optimizer",
                                                   "step_hooks", "epoch_end", "eval", "evals")}
    per_epoch: List[Dict[str, float]] = []

    def timed(key, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                clock[key] += time.perf_counter() - t
        return wrapper

    class TimedLoader:
        def __init__(self, loader):
            self.loader = loader

        def __len__(self):
            return len(self.loader)

        def __getattr__(self, name):
            return getattr(self.loader, name)

        def __iter__(self):
            it = iter(self.loader)
            while True:
                t = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    return
                finally:
                    clock["data"] += time.perf_counter() - t
                yield batch

    data.train = TimedLoader(data.train)
    if teacher is not None:
        method.teacher_forward = timed("teacher_fwd", method.teacher_forward)
    method.student.forward = timed("student_fwd", method.student.forward)
    method.forward_train = timed("forward", method.forward_train)
    method.after_step = timed("step_hooks", method.after_step)
    method.after_backward = timed("step_hooks", method.after_backward)
    evaluate = runner.evaluate_model

    def timed_eval(*a, **k):
        t, fwd = time.perf_counter(), clock["student_fwd"]
        out = evaluate(*a, **k)
        clock["student_fwd"] = fwd  # an evaluation of the student itself (the code before) is not training
        clock["eval"] += time.perf_counter() - t
        clock["evals"] += 1
        return out

    runner.evaluate_model = timed_eval

    class Stop(Exception):
        pass

    base = runner.Trainer

    class TimedTrainer(base):
        @classmethod
        def for_method(cls, meth, loader, **kw):
            tr = super().for_method(meth, loader, **kw)
            for spec in tr.optimizers:
                spec.optimizer.step = timed("optimizer", spec.optimizer.step)
            tr.save_checkpoint = timed("epoch_end", tr.save_checkpoint)
            hooks = list(tr.epoch_end)
            tr.epoch_end = [timed("epoch_end", h) for h in hooks[:1]] + hooks[1:]  # method.end_epoch
            state = {"t": None}

            def first(trainer, epoch, row):  # the trainer's own time of the epoch's loop
                state["loop"] = row["seconds"]
                return None

            def last(trainer, epoch, row):
                snap = dict(clock)
                snap["loop"] = state["loop"]
                snap["epoch_wall"] = time.perf_counter() - state["t"]
                per_epoch.append(snap)
                for k in clock:
                    clock[k] = 0.0
                if epoch >= epochs:
                    raise Stop
                state["t"] = time.perf_counter()
                return None

            tr.epoch_end = [first] + tr.epoch_end + [last]
            fit = tr.fit

            def fit_timed(*a, **k):
                state["t"] = time.perf_counter()
                return fit(*a, **k)

            tr.fit = fit_timed
            return tr

    runner.Trainer = TimedTrainer
    with tempfile.TemporaryDirectory() as out:
        try:
            runner.train_stage(method, data, Path(out), device=torch.device("cpu"), resume=False, force=True,
                               progress=False)
        except Stop:
            pass
    images = len(data.train) * cfg.data.ids_per_batch * cfg.data.num_instances
    # the study's evaluation schedule of that code: this code's default_eval_every, or the earlier rule
    every = (study.default_eval_every(schedule) if hasattr(study, "default_eval_every")
             else max(1, schedule // study.EVALS_PER_RUN))
    evals_per_epoch = len([e for e in range(1, schedule + 1) if e % every == 0 or e == schedule]) / schedule
    rows = []
    for e in per_epoch[1:]:
        fwd = e["forward"]
        other = e["loop"] - e["data"] - fwd - e["optimizer"] - e["step_hooks"]
        evals = max(e["evals"], 1.0)
        row = {"data": e["data"], "teacher_fwd": e["teacher_fwd"], "student_fwd": e["student_fwd"],
               "losses": fwd - e["teacher_fwd"] - e["student_fwd"], "backward": other,
               "optimizer": e["optimizer"], "step_hooks": e["step_hooks"],
               "epoch_end": e["epoch_wall"] - e["loop"] - e["eval"],
               "eval_one": e["eval"] / evals}
        row["eval_amortised"] = row["eval_one"] * evals_per_epoch
        row["epoch"] = sum(row[p] for p in PARTS)
        rows.append(row)
    out = {k: statistics.mean(r[k] for r in rows) for k in rows[0]}
    out.update(iterations=len(data.train), images=images, setup_s=setup_s, schedule_epochs=schedule,
               images_per_s_per_core=images / out["epoch"])
    return out


# ------------------------------------------------------------------------------------------- driver
def _before_tree(ref: str) -> Path:
    tree = Path(tempfile.gettempdir()) / f"deap-before-{ref}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True,
                       capture_output=True)
    return tree


def measure(variant: str, method: str, epochs: int, preset: str, before: str, extra: Optional[Dict] = None) -> Dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    overrides = {}
    code = ROOT
    if variant == "before":
        code = _before_tree(before)
    elif variant == "+bf16 (no native bf16)":
        overrides = LEVERS["+nhwc_inference"]
        env["ONEDNN_MAX_CPU_ISA"] = "AVX512_CORE"
    else:
        overrides = LEVERS[variant]
    overrides = {**overrides, **(extra or {})}
    env["PYTHONPATH"] = str(code)
    args = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--epochs", str(epochs),
            "--preset", preset, "--overrides", json.dumps(overrides)]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{variant} / {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(methods=("teacher", "kd", "deap"), variants=None, epochs: int = 3, rounds: int = 1, preset: str = "cpu",
        before: str = BEFORE_REF, emulate_no_bf16: bool = False, extra: Optional[Dict] = None) -> Dict:
    """Interleaved rounds of every (method, variant); ``extra``: config overrides for every measurement."""
    variants = list(variants or ["before", *LEVERS])
    if emulate_no_bf16:
        variants.append("+bf16 (no native bf16)")
    res: Dict[str, Dict[str, List[Dict]]] = {m: {v: [] for v in variants} for m in methods}
    for _ in range(rounds):
        for m in methods:
            for v in variants:
                res[m][v].append(measure(v, m, epochs, preset, before, extra))
    summary = {m: {v: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for v, runs in per.items()}
               for m, per in res.items()}
    return {"preset": preset, "epochs": epochs, "rounds": rounds, "before": before, "threads": 1,
            "results": summary}


def report(r: Dict) -> str:
    lines = [f"preset {r['preset']}, 1 thread, {r['epochs']} epochs per measurement (first left out), "
             f"{r['rounds']} interleaved round(s); seconds per epoch"]
    for m, per in r["results"].items():
        ref = per.get("before", next(iter(per.values())))["epoch"]
        first = next(iter(per.values()))
        lines.append(f"\n{m}  ({int(first['iterations'])} iterations of "
                     f"{int(first['images'] // max(first['iterations'], 1))} images)")
        lines.append(f"{'variant':24s}" + "".join(f"{p:>15s}" for p in PARTS) + f"{'epoch':>9s}{'img/s/core':>11s}"
                     f"{'speed-up':>9s}")
        for v, x in per.items():
            lines.append(f"{v:24s}" + "".join(f"{x[p]:15.2f}" for p in PARTS) + f"{x['epoch']:9.2f}"
                         f"{x['images_per_s_per_core']:11.1f}{ref / x['epoch']:8.2f}x")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--methods", default="teacher,kd,deap")
    p.add_argument("--variants", default=None, help="comma-separated subset of: before," + ",".join(LEVERS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--before", default=BEFORE_REF, help="git ref of the code before the speed work")
    p.add_argument("--emulate-no-bf16", action="store_true")
    p.add_argument("--json", default=None, help="also write the results to this file")
    a = p.parse_args()
    if a.worker:
        print(json.dumps(_worker(a.worker, json.loads(a.overrides), a.epochs, a.preset)))
        return
    r = run(a.methods.split(","), a.variants.split(",") if a.variants else None, a.epochs, a.rounds, a.preset,
            a.before, a.emulate_no_bf16)
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2) + "\n")
    print(report(r))


if __name__ == "__main__":
    main()
