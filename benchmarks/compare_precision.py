"""Accuracy of bf16 autocast against float32: one core chain of the cpu preset trained in each precision.

Each precision trains its own chain with the study's runner (``deap_lib.study.Study``, one job, one thread):
the teacher and DEAP, seed 0, everything else at the preset's defaults, from one shared pre-training
(``--pretrained``, the ImageNet stand-in: a start both share, as the paper's runs share ImageNet weights; the
pre-training itself swings by several points with float rounding alone); without it each chain trains its own
pre-training too. The two chains run side by side (one per core). The comparison is paired over the same queries: the difference of each
form's mAP (bf16 minus fp32) with its 95 % paired cluster bootstrap interval over query identities
(``deap_lib.evaluation.paired_bootstrap``), and the wall time of each run.

    .venv/bin/python benchmarks/compare_precision.py [--runs runs/precision] [--pretrained MODEL_PT]
        [--method deap] [--json F]

It is a recorded experiment, not part of ``make bench`` (it trains three runs per precision, ~25-40 min on
a 2-core machine).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")


def train_chain(precision: str, runs: Path, method: str, seed: int, pretrained: str = "") -> Dict:
    """Train (or reuse) the chain of ``method`` in ``precision`` under ``runs/<precision>`` (from the
    pre-training ``pretrained`` when given)."""
    from deap_lib.study import Study

    overrides = {"runtime.precision": precision, **({"pretrained_path": pretrained} if pretrained else {})}
    study = Study("cpu", runs_dir=runs / precision, results_dir=runs / precision / "results", jobs=1, threads=1,
                  seed=seed, overrides=overrides, base=ROOT, verbose=False)
    metrics = study.run(method, seed)
    return {"run_dir": metrics["run_dir"], "teacher_dir": str(Path(study.teacher_path(seed)).parent)}


def compare(runs: Path, method: str, seed: int) -> Dict:
    import numpy as np

    from deap_lib.evaluation import paired_bootstrap

    out: Dict = {"method": method, "seed": seed, "forms": {}}
    chain = {p: json.loads((runs / p / "chain.json").read_text()) for p in PRECISIONS}
    for role, key in (("teacher", "teacher_dir"), (method, "run_dir")):
        dirs = {p: Path(chain[p][key]) for p in PRECISIONS}
        metrics = {p: json.loads((dirs[p] / "metrics.json").read_text()) for p in PRECISIONS}
        for form in metrics["fp32"]["forms"]:
            files = {p: dirs[p] / f"per_query_{form}.npz" for p in PRECISIONS}
            if not all(f.is_file() for f in files.values()):
                continue
            a, b = (dict(np.load(files[p])) for p in ("bf16", "fp32"))
            d = paired_bootstrap(a, b, n_boot=2000, seed=0)["mAP"]
            out["forms"][f"{role}/{form}"] = {
                "fp32_mAP": metrics["fp32"]["forms"][form]["mAP"], "bf16_mAP": metrics["bf16"]["forms"][form]["mAP"],
                "diff": 100 * d["diff"], "low": 100 * d["low"], "high": 100 * d["high"]}
        out[f"{role}_wall_s"] = {p: metrics[p]["wall_time_s"] for p in PRECISIONS}
        out[f"{role}_runtime"] = {p: metrics[p].get("runtime") for p in PRECISIONS}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/precision")
    p.add_argument("--method", default="deap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrained", default="", help="model.pt of the pre-training both chains start from")
    p.add_argument("--chain", choices=PRECISIONS, help="train one precision's chain (what the driver starts)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    runs = Path(a.runs)
    if a.chain:
        res = train_chain(a.chain, runs, a.method, a.seed, a.pretrained)
        (runs / a.chain).mkdir(parents=True, exist_ok=True)
        (runs / a.chain / "chain.json").write_text(json.dumps(res) + "\n")
        return
    procs = [subprocess.Popen([sys.executable, __file__, "--runs", str(runs), "--method", a.method, "--seed",
                               str(a.seed), "--pretrained", a.pretrained, "--chain", prec], cwd=ROOT)
             for prec in PRECISIONS]
    if any(proc.wait() for proc in procs):
        sys.exit("error: a chain failed (see its run.log under " + str(runs) + ")")
    res = compare(runs, a.method, a.seed)
    res["pretrained"] = a.pretrained or "each chain its own"
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    print(f"{'form':28s}{'fp32':>8s}{'bf16':>8s}   bf16 - fp32 [95 % paired bootstrap]")
    for form, r in res["forms"].items():
        print(f"{form:28s}{r['fp32_mAP']:8.2f}{r['bf16_mAP']:8.2f}   {r['diff']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]")
    for k in ("teacher_wall_s", f"{a.method}_wall_s"):
        print(k, {p: round(v) for p, v in res[k].items()})


if __name__ == "__main__":
    main()
