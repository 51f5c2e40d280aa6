"""CPU latency of the teacher and the three forms of a pruned DEAP student (docs/methods/deap.rst §What is evaluated).

A CPU-study-sized student (default: ResNet-50 x0.5, 128x128, last stride 1, 200 classes) is given a
simulated trained state: in every block a fixed, seeded random ``keep_frac`` of pruner-1 columns and pruner-2
rows is kept and the rest set to exactly zero (~70 % of the prunable channels removed by the 1e-3 cut).
Timed at the same input size (eval mode, ``deap_lib.complexity.measure_latency``, 2 threads, warm-up, models
interleaved round-robin, median of the per-round medians):

* ``teacher``           - the plain ConvBN ResNet (pcp=None) as trained, BN not folded;
* ``teacher_deploy``    - the same with BN folded (for reference);
* ``student_unpruned``  - the student in deploy form without pruning (paper form (a));
* ``student_pruned``    - pruned, not absorbed: PCP units and BN kept (form (b));
* ``student_absorbed``  - pruned + absorbed deploy model (form (c)).

``speedup`` = teacher latency / model latency; ``macs_ratio`` = teacher MACs / model MACs (thop MACs at
batch 1, classifier excluded as it does not run in eval mode). Target: the absorbed student's batch-32
speed-up >= 0.8 x its MACs ratio.

Usage: ``python benchmarks/bench_latency.py [--width 0.5 --size 128 --rounds 5 --repeats 2]``; from a notebook:
``run_latency_benchmark(...) -> list[dict]`` and ``format_table(rows)``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Dict, List, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deap_lib.absorb import absorb, prune, to_deploy  # noqa: E402
from deap_lib.complexity import measure_latency, profile  # noqa: E402
from deap_lib.models import ReIDNet, build_model  # noqa: E402

TARGET = 0.8  # absorbed speed-up at batch 32 >= TARGET x MACs ratio


def simulate_pruned_student(arch: str = "resnet50", num_classes: int = 200, *, width: float = 0.5,
                            last_stride: int = 1, keep_frac: float = 0.3, seed: int = 0) -> ReIDNet:
    """A DEAP student whose pruners keep a seeded random ``keep_frac`` of channels (others exactly 0)."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes, width=width, last_stride=last_stride, pcp="deap")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in model.pcp_blocks():
            pruners = [(blk.pruner1, 1)] if blk.pruner1 is not None else []
            pruners.append((blk.pruner2 if blk.pruner2 is not None else blk.compactor, 0))
            for p, axis in pruners:
                n = p.weight.shape[axis]
                keep = max(1, int(round(keep_frac * n)))
                drop = torch.randperm(n, generator=g)[keep:]
                p.weight.index_fill_(axis, drop, 0.0)
    return model.eval()


def run_latency_benchmark(arch: str = "resnet50", width: float = 0.5, size: int = 128, last_stride: int = 1,
                          num_classes: int = 200, keep_frac: float = 0.3, batch_sizes: Sequence[int] = (1, 32),
                          threads: int = 2, warmup: int = 3, repeats: int = 2, rounds: int = 5, seed: int = 0,
                          threshold: float = 1e-3) -> List[Dict]:
    """Time every form at every batch size; one dict per (model, batch size).

    The models are timed round-robin: ``rounds`` rounds of ``repeats`` timed forwards each (``warmup``
    forwards before the first round, 1 before later ones); ``median_ms`` is the median of the per-round
    medians, so slow drifts of a shared machine's load affect all models alike.
    """
    input_size = (3, size, size)
    torch.manual_seed(seed)
    teacher = build_model(arch, num_classes, width=width, last_stride=last_stride).eval()
    student = simulate_pruned_student(arch, num_classes, width=width, last_stride=last_stride,
                                      keep_frac=keep_frac, seed=seed)
    absorbed, report = absorb(student, threshold, input_size=(3, min(size, 64), min(size, 64)), profile=False)
    forms = {"teacher": teacher, "teacher_deploy": to_deploy(teacher), "student_unpruned": to_deploy(student),
             "student_pruned": prune(student, threshold).eval(), "student_absorbed": absorbed}
    cost = {name: profile(m, input_size) for name, m in forms.items()}
    rows: List[Dict] = []
    for bs in batch_sizes:
        per_round: Dict[str, List[float]] = {name: [] for name in forms}
        for r in range(rounds):
            for name, m in forms.items():
                lat = measure_latency(m, input_size, bs, threads=threads, warmup=warmup if r == 0 else 1,
                                      repeats=repeats, seed=seed)
                per_round[name].append(lat["median_ms"])
        med = {name: statistics.median(v) for name, v in per_round.items()}
        for name in forms:
            rows.append({"model": name, "batch_size": bs, "median_ms": med[name], "per_image_ms": med[name] / bs,
                         "min_round_ms": min(per_round[name]), "max_round_ms": max(per_round[name]),
                         "speedup": med["teacher"] / med[name], "macs": cost[name]["macs"],
                         "params": cost[name]["params_no_classifier"],
                         "macs_ratio": cost["teacher"]["macs"] / cost[name]["macs"],
                         "kept_fraction": report.kept_fraction() if name in ("student_pruned", "student_absorbed")
                         else 1.0,
                         "arch": arch, "width": width, "size": size, "threads": threads,
                         "timed_runs": rounds * repeats})
    return rows


def format_table(rows: List[Dict]) -> str:
    head = (f"{'model':<18} {'batch':>5} {'median ms':>10} {'ms/img':>8} {'speed-up':>9} {'MACs (G)':>9} "
            f"{'params (M)':>10} {'MACs ratio':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<18} {r['batch_size']:>5} {r['median_ms']:>10.2f} {r['per_image_ms']:>8.2f} "
                     f"{r['speedup']:>8.2f}x {r['macs'] / 1e9:>9.4f} {r['params'] / 1e6:>10.3f} "
                     f"{r['macs_ratio']:>9.2f}x")
    return "\n".join(lines)


def check_target(rows: List[Dict], batch_size: int = 32) -> Dict:
    r = next(r for r in rows if r["model"] == "student_absorbed" and r["batch_size"] == batch_size)
    return {"speedup": r["speedup"], "macs_ratio": r["macs_ratio"], "ratio": r["speedup"] / r["macs_ratio"],
            "ok": r["speedup"] >= TARGET * r["macs_ratio"]}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--last-stride", type=int, default=1)
    ap.add_argument("--num-classes", type=int, default=200)
    ap.add_argument("--keep-frac", type=float, default=0.3)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="timed forwards per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = run_latency_benchmark(a.arch, a.width, a.size, a.last_stride, a.num_classes, a.keep_frac,
                                 a.batch_sizes, a.threads, a.warmup, a.repeats, a.rounds, a.seed)
    print(f"{a.arch} x{a.width}, {a.size}x{a.size}, last stride {a.last_stride}, {a.num_classes} classes, "
          f"keep {a.keep_frac:.0%} of pruner channels, {a.threads} threads, median of {a.rounds} rounds x "
          f"{a.repeats} "
          f"(kept fraction after the cut: {rows[-1]['kept_fraction']:.3f})")
    print(format_table(rows))
    if 32 in a.batch_sizes:
        t = check_target(rows)
        print(f"absorbed @ batch 32: speed-up {t['speedup']:.2f}x vs MACs ratio {t['macs_ratio']:.2f}x -> "
              f"{t['ratio']:.2f} of the MACs ratio (target >= {TARGET}): {'OK' if t['ok'] else 'BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
