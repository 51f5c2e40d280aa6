"""Cost of a DEAP training step against a plain student step plus the teacher's forward pass, and of a CDD step.

DEAP adds PCP pruners (two 1x1 convs per bottleneck), the group lasso, KL, DL and ARKD to a student
step. The target (issue: training engine) is a DEAP step <= 1.3 x (student step + teacher forward) on CPU.
CDD's step is timed in its gradient-resetting phase (one compactor per block, CE + triplet + KL + FIT, then
the bank update, the top-k search over a full bank of the preset's size and the masked gradient), reported
as a ratio to the DEAP step. All are timed in interleaved rounds on the same batch (median of ``repeats``),
so machine noise hits them alike; the ratios are what to report.

    .venv/bin/python benchmarks/bench_train_step.py [--preset cpu] [--threads 1] [--repeats 7]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Dict

import torch

from deap_lib.methods import METHODS, get_preset
from deap_lib.methods.runner import build_student
from deap_lib.models import build_model


def _step(method, x, pids, opt) -> None:
    terms = method.forward_train((x, pids))
    opt.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    method.after_backward(None)
    opt.step()


def run(preset: str = "cpu", threads: int = 1, repeats: int = 7, num_classes: int = 180, seed: int = 0) -> Dict:
    torch.set_num_threads(threads)
    cfg = get_preset(preset, "deap", student_init="random")  # timing does not depend on the start
    torch.manual_seed(seed)
    teacher = build_model(cfg.model.arch, num_classes, width=cfg.model.width, last_stride=cfg.model.last_stride,
                          embed_dim=cfg.model.embed_dim).eval()
    teacher.requires_grad_(False)
    plain = build_student(cfg, num_classes, None).train()
    deap = build_student(cfg, num_classes, "deap").train()
    student_m = METHODS.get("student")(cfg, plain)
    deap_m = METHODS.get("deap")(cfg, deap, teacher)
    ccfg = get_preset(preset, "cdd", student_init="random")
    cdd = build_student(ccfg, num_classes, "cdd").train()
    cdd_m = METHODS.get("cdd")(ccfg, cdd, teacher)
    cdd_m.resetting_now = True  # the second phase: lasso through the manual gradient, masks every step
    with torch.no_grad():  # a full bank, so the top-k search runs over all of it
        cdd_m.grg.filled.fill_(cdd_m.grg.capacity)
        for bank in cdd_m.grg.banks():
            bank.normal_()
    b = cfg.data.ids_per_batch * cfg.data.num_instances
    x = torch.randn(b, 3, *cfg.model.input_size)
    pids = torch.arange(cfg.data.ids_per_batch).repeat_interleave(cfg.data.num_instances)
    opt_p = torch.optim.SGD(plain.parameters(), lr=1e-3, momentum=0.9)
    opt_d = torch.optim.SGD(deap.parameters(), lr=1e-3, momentum=0.9)
    opt_c = torch.optim.SGD(cdd.parameters(), lr=1e-3, momentum=0.9)

    def baseline():  # student step (CE + triplet) + the teacher forward it would need
        _step(student_m, x, pids, opt_p)
        with torch.no_grad():
            teacher.forward_features(x)

    def deap_step():
        _step(deap_m, x, pids, opt_d)

    def cdd_step():
        _step(cdd_m, x, pids, opt_c)

    steps = (("baseline", baseline), ("deap", deap_step), ("cdd", cdd_step))
    times = {name: [] for name, _ in steps}
    for _, fn in steps:  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in steps:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"preset": preset, "threads": threads, "batch": b, "input_size": list(cfg.model.input_size),
            "baseline_s": med["baseline"], "deap_s": med["deap"], "ratio": med["deap"] / med["baseline"],
            "target_ratio": 1.3, "cdd_s": med["cdd"], "cdd_over_deap": med["cdd"] / med["deap"],
            "cdd_bank_rows": cdd_m.grg.capacity, "repeats": repeats}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    r = run(a.preset, a.threads, a.repeats)
    if a.json:
        print(json.dumps(r, indent=2))
        return
    print(f"preset {r['preset']} batch {r['batch']} input {r['input_size']} threads {r['threads']}")
    print(f"student step + teacher forward: {r['baseline_s'] * 1e3:8.1f} ms (median of {r['repeats']})")
    print(f"DEAP step (teacher forward incl.): {r['deap_s'] * 1e3:8.1f} ms")
    print(f"ratio DEAP / baseline: {r['ratio']:.2f}  (target <= {r['target_ratio']})")
    print(f"CDD step, resetting phase, bank of {r['cdd_bank_rows']} rows: {r['cdd_s'] * 1e3:8.1f} ms; "
          f"ratio CDD / DEAP: {r['cdd_over_deap']:.2f}")


if __name__ == "__main__":
    main()
