"""The GPU path in one short script (at most ~8 minutes on one H100): what to run when a GPU machine is lent.

1. **Paper-scale training throughput**: the ``paper`` preset's DEAP (ResNet-101 student with PCP pruners and
   a ResNet-101 teacher, 256x256, P16 x K6 = 96 images, the run's precision and layout: fp16 AMP and
   channels-last on CUDA) for ``--iters`` iterations through the project's trainer on generated images
   (random weights and tensors: throughput does not depend on them); prints iterations / images per second
   after a warm-up and the peak GPU memory.
2. **A cpu-preset DEAP run end to end on the device**: a teacher and a DEAP student of the cpu preset
   (random start, the synthetic set) trained, cut, absorbed and evaluated by ``python -m deap_lib train
   --device ...``; prints wall times and mAP.
3. **Deploy runtimes**: ``benchmarks/bench_deploy.py --device ...``.

    .venv/bin/python benchmarks/gpu_check.py                 # on the GPU machine
    .venv/bin/python benchmarks/gpu_check.py --tiny          # the same three parts on CPU, tiny (tests)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]


def train_throughput(preset: str, iters: int, device: str, warmup: int = 10) -> Dict:
    """Part 1: DEAP iterations through :class:`deap_lib.engine.Trainer` on generated batches."""
    import torch

    from deap_lib.methods import METHODS, get_preset
    from deap_lib.methods.runner import build_student, resolve_runtime
    from deap_lib.models import build_model

    dev = torch.device(device)
    cfg = get_preset(preset, "deap", student_init="random", pretrained_path=None, teacher_path="generated",
                     device=device)
    rt = resolve_runtime(cfg, dev)
    m, d = cfg.model, cfg.data
    classes, batch = 576, d.ids_per_batch * d.num_instances  # VeRi-776 has 576 training identities
    torch.manual_seed(0)
    teacher = build_model(m.arch, classes, width=m.width, last_stride=m.last_stride, head=m.head,
                          embed_dim=m.embed_dim).eval()
    method = METHODS.get("deap")(cfg, build_student(cfg, classes, "deap"), teacher).to(dev)
    if rt["channels_last"] == "on":
        method.to(memory_format=torch.channels_last)
    elif rt["channels_last"] == "inference":
        method.teacher_channels_last()
    g = torch.Generator().manual_seed(0)
    pids = torch.arange(d.ids_per_batch).repeat_interleave(d.num_instances)
    batches = [(torch.randn(batch, 3, *m.input_size, generator=g), pids, torch.zeros_like(pids), torch.arange(batch))
               for _ in range(4)]

    class Generated:
        def __len__(self):
            return warmup + iters

        def __iter__(self):
            return (batches[i % len(batches)] for i in range(warmup + iters))

    from deap_lib.engine import Trainer

    marks: List[float] = []

    def mark(ctx):  # the end of an iteration (synchronised on CUDA)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        marks.append(time.perf_counter())

    after = method.after_step

    def after_and_mark(ctx):
        after(ctx)
        mark(ctx)

    method.after_step = after_and_mark
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer.for_method(method, Generated(), epochs=1, out_dir=out, seed=0, device=dev, progress=False,
                                precision=rt["precision"], channels_last=rt["channels_last"] == "on",
                                checkpoint_every=0)
        tr.fit()
    timed = marks[warmup - 1:] if warmup else marks
    secs = timed[-1] - timed[0]
    n = len(timed) - 1
    return {"preset": preset, "device": str(dev), "precision": rt["precision"], "channels_last": rt["channels_last"],
            "batch": batch, "input_size": list(m.input_size), "iterations": n, "seconds": secs,
            "iters_per_s": n / secs, "images_per_s": n * batch / secs,
            "peak_memory_gib": (torch.cuda.max_memory_allocated(dev) / 2 ** 30) if dev.type == "cuda" else None}


def _cli(*args: str, env=None) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "deap_lib", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return time.perf_counter() - t0


def end_to_end(preset: str, device: str, teacher_epochs: int, epochs: int, out: Path, extra=()) -> Dict:
    """Part 2: a teacher and a DEAP run of ``preset`` through the CLI on ``device``."""
    common = ["--preset", preset, "--device", device, "--no-progress", "--set", "student_init=random",
              "--set", "pretrained_path=None", *extra]
    t_teacher = _cli("train", "--method", "teacher", "--out", str(out / "teacher"), "--epochs", str(teacher_epochs),
                     *common)
    t_deap = _cli("train", "--method", "deap", "--out", str(out / "deap"), "--epochs", str(epochs), "--teacher",
                  str(out / "teacher" / "model.pt"), *common)
    m = json.loads((out / "deap" / "metrics.json").read_text())
    t = json.loads((out / "teacher" / "metrics.json").read_text())
    return {"teacher_s": t_teacher, "deap_s": t_deap, "teacher_mAP": t["forms"]["teacher"]["mAP"],
            "deap_absorbed_mAP": m["forms"]["absorbed"]["mAP"], "runtime": m.get("runtime"),
            "device": m["device"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--epochs", type=int, default=16, help="the cpu-preset DEAP run's epochs")
    p.add_argument("--out", default=None, help="folder of the end-to-end runs (default: a temporary one)")
    p.add_argument("--tiny", action="store_true", help="CPU, quick preset, a few iterations (the test)")
    a = p.parse_args(argv)
    if a.tiny:
        a.device, a.iters, a.teacher_epochs, a.epochs = "cpu", 3, 2, 2
    import torch

    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}", flush=True)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device here (run on the GPU machine, or --tiny on a CPU)", file=sys.stderr)
        return 2
    if a.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name(0)}", flush=True)
    t0 = time.perf_counter()
    r1 = train_throughput("quick" if a.tiny else "paper", a.iters, a.device, warmup=1 if a.tiny else 10)
    print("[1] paper-preset DEAP training:", json.dumps(r1), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out) if a.out else Path(tmp)
        extra = ["--data", str(out / "data"), "--set", "data.synthetic=tiny"] if a.tiny else []
        r2 = end_to_end("quick" if a.tiny else "cpu", a.device, a.teacher_epochs, a.epochs, out, extra)
    print("[2] cpu-preset DEAP run end to end:", json.dumps(r2), flush=True)
    deploy = [sys.executable, str(ROOT / "benchmarks" / "bench_deploy.py"), "--device", a.device, "--scales"]
    deploy += (["study", "--rounds", "1", "--repeats", "1", "--batches", "1"] if a.tiny
               else ["study", "paper", "--rounds", "3"])
    p3 = subprocess.run(deploy, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
    print("[3] bench_deploy:", "exit", p3.returncode, flush=True)
    print(p3.stdout[-6000:], flush=True)
    print(f"gpu_check: {time.perf_counter() - t0:.0f} s in all", flush=True)
    return p3.returncode


if __name__ == "__main__":
    sys.exit(main())
