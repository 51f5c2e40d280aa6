"""Deployed speed: the BN-folded teacher and the absorbed DEAP student in every deploy runtime, side by side.

For each scale (``study``: the cpu preset's ResNet-50 x0.25 at 64x64; ``paper``: ResNet-101, 256x256, last
stride 1, the paper's shape) the student keeps, block by block, the channel shares of the study's DEAP run
(``--run`` metrics.json, else ``results/records/04_absorb_and_plots.json``, else a uniform 27 %); on the
paper scale each stage's mean share is transferred to the 3/4/23/3 ResNet-101 blocks. Weights are random (a
forward's cost does not depend on them), BN folded in both models. Every (model, runtime) pair of
:mod:`deap_lib.deploy` is timed in interleaved rounds (median of the per-round medians), so load drifts of
a shared machine hit all alike. Reported per row: latency, images per second, speed-up over the folded
teacher in eager PyTorch and in the same runtime, and that speed-up as a share of the MACs ratio
(thop MACs at batch 1). On CUDA (``--device cuda``) eager and channels-last run under AMP, timed with
CUDA events; ONNX Runtime and TorchScript stay CPU paths and are skipped there.

    .venv/bin/python benchmarks/bench_deploy.py [--scales study paper] [--threads 2] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deap_lib.complexity import profile  # noqa: E402
from deap_lib.deploy import RUNTIMES, parity, prepare, time_ms  # noqa: E402
from deap_lib.models import build_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCALES = {  # arch, width, input, last stride, embed dim, batch sizes
    "study": dict(arch="resnet50", width=0.25, size=(64, 64), last_stride=1, embed_dim=128, batches=(1, 32)),
    "paper": dict(arch="resnet101", width=1.0, size=(256, 256), last_stride=1, embed_dim=512, batches=(1,)),
}
DEFAULT_KEEP = 0.27


def study_shares(run: Optional[str] = None) -> Dict[str, object]:
    """Per-block kept shares ``[(C1 kept / C1, C3 kept / C3), ...]`` of the study's DEAP run and their source."""
    cands = [Path(run)] if run else [REPO / "runs" / "cpu" / "deap-s0" / "metrics.json",
                                      REPO / "results" / "records" / "04_absorb_and_plots.json"]
    for p in cands:
        if p.is_file():
            m = json.loads(p.read_text())
            kept = m.get("kept_widths") or m.get("deap_kept_widths")
            orig = m.get("original_widths") or m.get("deap_original_widths")
            if kept and orig:
                return {"source": str(p.relative_to(REPO) if p.is_relative_to(REPO) else p),
                        "shares": [[k / o for k, o in zip(kb, ob)] for kb, ob in zip(kept, orig)]}
    return {"source": f"uniform {DEFAULT_KEEP:.0%} (no study run found)", "shares": None}


def widths_for_scale(arch: str, width: float, shares: Optional[List[List[float]]]) -> List[List[int]]:
    """Kept widths of every block of ``arch`` at ``width``: the study's per-block shares where the block
    counts match, else each stage's mean share (per gate) applied to all its blocks."""
    ref = build_model(arch, 2, width=width)
    blocks = [(name, b) for name, b in ref.backbone.named_blocks()]
    if shares is not None and len(shares) == len(blocks):
        per_block = shares
    else:
        study = build_model("resnet50", 2, width=0.25)
        stage_of = [int(n[5]) - 1 for n, _ in study.backbone.named_blocks()]
        means = []
        for s in range(4):
            rows = [sh for sh, st in zip(shares, stage_of) if st == s] if shares else []
            means.append([statistics.mean(r[i] for r in rows) for i in range(2)] if rows else [DEFAULT_KEEP] * 2)
        per_block = [means[int(n[5]) - 1] for n, _ in blocks]
    return [[max(1, round(f * w)) for f, w in zip(sh, b.widths)] for sh, (_, b) in zip(per_block, blocks)]


def _models(scale: str, shares) -> Dict[str, torch.nn.Module]:
    s = SCALES[scale]
    common = dict(width=s["width"], last_stride=s["last_stride"], embed_dim=s["embed_dim"], deploy=True)
    torch.manual_seed(0)
    teacher = build_model(s["arch"], 2, **common).eval()
    student = build_model(s["arch"], 2, widths=widths_for_scale(s["arch"], s["width"], shares), **common).eval()
    return {"teacher": teacher, "absorbed": student}


def _cuda_time_ms(fn, x, repeats: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t = []
    for _ in range(repeats):
        start.record()
        fn(x)
        end.record()
        torch.cuda.synchronize()
        t.append(start.elapsed_time(end))
    return statistics.median(t)


def run(scales: Sequence[str] = ("study", "paper"), threads: int = 2, rounds: int = 3, repeats: int = 3,
        device: str = "cpu", run_metrics: Optional[str] = None,
        batches: Optional[Sequence[int]] = None) -> Dict[str, object]:
    torch.set_num_threads(threads)
    src = study_shares(run_metrics)
    rows: List[Dict[str, object]] = []
    cuda = device.startswith("cuda")
    runtimes = ("eager", "channels_last") if cuda else RUNTIMES
    for scale in scales:
        s = SCALES[scale]
        size = (3, *s["size"])
        models = _models(scale, src["shares"])
        macs = {k: profile(m, size)["macs"] for k, m in models.items()}
        for bs in (batches or s["batches"]):
            x = torch.randn(bs, *size, generator=torch.Generator().manual_seed(0))
            built, par = {}, {}
            for name, m in models.items():
                for r in runtimes:
                    if cuda:
                        mm = m.to(device)
                        if r == "channels_last":
                            mm = mm.to(memory_format=torch.channels_last)

                        def fn(t, mm=mm, cl=(r == "channels_last")):
                            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                                return mm(t.contiguous(memory_format=torch.channels_last) if cl else t)
                        built[(name, r)] = fn
                        par[(name, r)] = 0.0
                    else:
                        d = prepare(m, r, input_size=size, batch_size=bs, threads=threads)
                        built[(name, r)] = d
                        par[(name, r)] = parity(m, d, x[: min(bs, 4)])
            xd = x.to(device)
            per_round = {k: [] for k in built}
            for i in range(rounds):
                for k, fn in built.items():
                    per_round[k].append(_cuda_time_ms(fn, xd, repeats) if cuda else
                                        time_ms(fn, xd, warmup=1 if i == 0 else 0, repeats=repeats))
            med = {k: statistics.median(v) for k, v in per_round.items()}
            for (name, r), ms in med.items():
                ratio = macs["teacher"] / macs[name]
                sp_eager, sp_same = med[("teacher", "eager")] / ms, med[("teacher", r)] / ms
                rows.append({"scale": scale, "model": name, "runtime": r, "batch": bs, "median_ms": ms,
                             "images_per_s": 1e3 * bs / ms, "speedup_vs_teacher_eager": sp_eager,
                             "speedup_vs_teacher_same_runtime": sp_same, "macs_ratio": ratio,
                             "share_of_macs_ratio": sp_eager / ratio, "parity": par[(name, r)],
                             "macs_m": macs[name] / 1e6})
            for d in built.values():
                if hasattr(d, "close"):
                    d.close()
    return {"device": torch.cuda.get_device_name(0) if cuda else f"cpu ({threads} threads)",
            "shares_from": src["source"], "rounds": rounds, "repeats": repeats, "rows": rows}


def format_table(res: Dict[str, object]) -> str:
    head = (f"{'scale':<6} {'model':<9} {'runtime':<14} {'batch':>5} {'ms':>9} {'img/s':>8} {'x eager T':>9} "
            f"{'x same T':>8} {'MACs x':>7} {'share':>6} {'parity':>8}")
    lines = [head, "-" * len(head)]
    for r in res["rows"]:
        lines.append(f"{r['scale']:<6} {r['model']:<9} {r['runtime']:<14} {r['batch']:>5} {r['median_ms']:>9.2f} "
                     f"{r['images_per_s']:>8.1f} {r['speedup_vs_teacher_eager']:>8.2f}x "
                     f"{r['speedup_vs_teacher_same_runtime']:>7.2f}x {r['macs_ratio']:>6.2f}x "
                     f"{r['share_of_macs_ratio']:>6.2f} {r['parity']:>8.1e}")
    return "\n".join(lines)


def best_paths(res: Dict[str, object]) -> List[Dict[str, object]]:
    """Per scale and batch: the fastest runtime of the absorbed student and of the teacher."""
    out = []
    keys = sorted({(r["scale"], r["batch"]) for r in res["rows"]})
    for scale, bs in keys:
        rows = [r for r in res["rows"] if r["scale"] == scale and r["batch"] == bs]
        st = min((r for r in rows if r["model"] == "absorbed"), key=lambda r: r["median_ms"])
        te = min((r for r in rows if r["model"] == "teacher"), key=lambda r: r["median_ms"])
        same = st["speedup_vs_teacher_same_runtime"]
        out.append({"scale": scale, "batch": bs, "student_runtime": st["runtime"], "teacher_runtime": te["runtime"],
                    "speedup_same_runtime": same, "share_of_macs_ratio": same / st["macs_ratio"],
                    "speedup_best_vs_best": te["median_ms"] / st["median_ms"], "macs_ratio": st["macs_ratio"],
                    "speedup_vs_teacher_eager": st["speedup_vs_teacher_eager"]})
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", nargs="+", default=["study", "paper"], choices=sorted(SCALES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="override every scale's batch sizes")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda where present (skipped cleanly otherwise)")
    ap.add_argument("--run", default=None, help="metrics.json of the DEAP run whose kept shares to use")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_deploy: CUDA requested but not available; skipped")
        return 0
    res = run(a.scales, a.threads, a.rounds, a.repeats, a.device, a.run, a.batches)
    if a.json:
        print(json.dumps({**res, "best": best_paths(res)}, indent=1))
        return 0
    print(f"device: {res['device']}; kept shares from {res['shares_from']}; median of {res['rounds']} rounds x "
          f"{res['repeats']}; speed-ups over the BN-folded teacher ('x eager T': its eager PyTorch time)")
    print(format_table(res))
    for b in best_paths(res):
        print(f"{b['scale']} batch {b['batch']}: fastest student path {b['student_runtime']}: "
              f"{b['speedup_same_runtime']:.2f}x the teacher on the same path = {b['share_of_macs_ratio']:.2f} of "
              f"the MACs ratio {b['macs_ratio']:.2f}x (target >= 0.8); best vs best ({b['teacher_runtime']} "
              f"teacher) {b['speedup_best_vs_best']:.2f}x; vs the eager teacher {b['speedup_vs_teacher_eager']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
