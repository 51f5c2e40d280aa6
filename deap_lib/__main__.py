"""Command line: ``python -m deap_lib <command> ...`` (``--help`` lists the commands)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

DEFAULT_SYNTHETIC_ROOT = "data/synthetic_veri_easy"  # the cpu preset's dataset


def cmd_data(args: argparse.Namespace) -> int:
    """Generate a preset's embedded synthetic dataset (reused when a complete copy with the same settings
    is there)."""
    from .methods import get_preset
    from .data.synthetic import ensure_synthetic

    d = get_preset(args.preset, "teacher").data
    if args.name:  # another named set than the preset's (e.g. its pre-training corpus)
        d.synthetic, d.root = args.name, args.root or f"data/synthetic_veri_{args.name}"
    if not d.synthetic:
        print(f"error: preset '{args.preset}' reads real data at {d.root}; nothing to generate", file=sys.stderr)
        return 2
    root = args.root or d.root
    t0 = time.time()
    info = ensure_synthetic(root, d.synthetic, seed=args.seed)
    print(f"[data] synthetic VeRi-format dataset '{d.synthetic}' at {root} ({time.time() - t0:.1f} s): {info}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from .baseline import evaluate_thumbnail_baseline
    from .data import build_dataset

    ds = build_dataset(args.dataset, args.data)
    print(ds.summary() if hasattr(ds, "summary") else ds)
    res = evaluate_thumbnail_baseline(ds, size=args.size)
    print(json.dumps(res, indent=2, default=float))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run the core study notebooks (00-04; every notebook with --full) with papermill into OUT/executed/, then
    refresh the README section."""
    from .reproduce import NotebookFailed, ProgressEcho, reproduce
    from .study import RunFailed

    try:
        reproduce(args.preset, args.dataset, args.data, args.out, args.runs, force=args.force, full=args.full,
                  epochs=args.epochs, seed=args.seed, jobs=args.jobs, device=args.device, notebooks=args.notebooks,
                  readme=None if args.no_readme else args.readme, kernel_name=args.kernel,
                  parameters=_notebook_params(args.param or []), echo=ProgressEcho(sys.stdout))
    except (NotebookFailed, RunFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _notebook_params(items: List[str]) -> dict:
    """``["target_macs=0.5"]`` -> ``{"target_macs": 0.5}`` (values parsed as Python literals, ``true`` /
    ``false`` / ``none`` in any case as ``True`` / ``False`` / ``None``, else strings)."""
    import ast

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise SystemExit(f"error: --param {item!r} must look like name=value")
        v = value.strip()
        words = {"true": True, "false": False, "none": None, "null": None}
        if v.lower() in words:  # the shell spelling of a bool (a Python literal would need True / False)
            out[key.strip()] = words[v.lower()]
            continue
        try:
            out[key.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[key.strip()] = v
    return out


def cmd_readme(args: argparse.Namespace) -> int:
    """Regenerate (or with --check, verify) RESULTS/README.md (every table and figure) and the README's
    headline from the results folder."""
    from .results import render_headline, render_results_page

    page = Path(args.results) / "README.md"
    if args.check:
        stale = [str(p) for p, ok in ((page, render_results_page(args.results, check=True)),
                                      (args.readme, render_headline(args.readme, args.results, check=True))) if not ok]
        for p in stale:
            print(f"{p}: out of date with {args.results}/; run `python -m deap_lib readme`", file=sys.stderr)
        return 1 if stale else 0
    changed = render_results_page(args.results)
    print(f"{page}: {'updated' if changed else 'already up to date'}")
    changed = render_headline(args.readme, args.results)
    print(f"{args.readme}: headline {'updated' if changed else 'already up to date'}")
    return 0


def _user_error(e: BaseException) -> int:
    """Print a user error as ``error: ...`` (no traceback) and return the exit status 2."""
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    print(f"error: {msg}", file=sys.stderr)
    return 2


def cmd_train(args: argparse.Namespace) -> int:
    """Train and evaluate one method; under ``torchrun`` every process is one DDP rank."""
    from .config import parse_set_args
    from .data import DatasetFormatError, DatasetNotFoundError
    from .engine.distributed import cleanup_distributed, init_distributed, is_main_process
    from .methods import UserError, get_preset, run
    from .methods.runner import check_run

    try:
        cfg = get_preset(args.preset, args.method)
        overrides = parse_set_args(args.set or [])
        if args.data:
            overrides["data.root"] = args.data
            if args.data != cfg.data.root and "data.synthetic" not in overrides:
                overrides["data.synthetic"] = ""  # a user-given root holds real data
        if args.dataset:
            overrides["data.dataset"] = args.dataset
        if args.teacher:
            overrides["teacher_path"] = args.teacher
        if args.seed is not None:
            overrides["seed"] = str(args.seed)
        if args.epochs is not None:
            overrides["optim.epochs"] = str(args.epochs)
        if args.device:
            overrides["device"] = args.device
        cfg = get_preset(args.preset, args.method, **overrides)  # dataset-specific defaults apply first
        check_run(cfg)
    except (KeyError, ValueError) as e:
        return _user_error(e)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        init_distributed(device=None if cfg.device == "auto" else cfg.device)
    out = args.out or os.path.join("runs", cfg.preset, f"{cfg.method}-s{cfg.seed}")
    try:
        metrics = run(cfg, out, resume=args.resume, force=args.force, summary_csv=args.summary,
                      progress=not args.no_progress, cut_of=args.cut_of)
    except (UserError, FileExistsError, DatasetNotFoundError, DatasetFormatError) as e:
        return _user_error(e)
    finally:
        cleanup_distributed()
    if not is_main_process() or "forms" not in metrics:
        return 0
    for form, r in metrics["forms"].items():
        print(f"{form:>18}: mAP {r['mAP_text']}  rank1 {r['rank1_text']}  "
              f"params {r['params_no_classifier'] / 1e6:.3f} M  MACs {r['macs'] / 1e6:.1f} M")
    from .rundir import RunDir

    print(f"metrics: {RunDir(out).metrics_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The CLI; the method and preset choices in its help come from the registries (plugins loaded first)."""
    from .methods import METHODS, PRESETS

    methods, presets = ", ".join(METHODS.names()), ", ".join(PRESETS.names())
    p = argparse.ArgumentParser(prog="python -m deap_lib", description=__doc__)
    p.add_argument("--plugin", action="append", default=[], metavar="FILE_OR_MODULE",
                   help="import this first (it may register methods, models, datasets); also $DEAP_PLUGINS")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="generate the embedded synthetic VeRi-format dataset")
    d.add_argument("--preset", default="cpu", help="whose synthetic dataset (default: cpu)")
    d.add_argument("--root", default=None, help="where to write it (default: the preset's data root)")
    d.add_argument("--name", default=None, help="a named synthetic set instead of the preset's (e.g. pretrain)")
    d.add_argument("--seed", type=int, default=None, help="generator seed (default: the set's own)")
    d.set_defaults(func=cmd_data)

    b = sub.add_parser("baseline", help="evaluate the training-free thumbnail baseline")
    b.add_argument("--dataset", default="veri")
    b.add_argument("--data", default=DEFAULT_SYNTHETIC_ROOT)
    b.add_argument("--size", type=int, default=16)
    b.set_defaults(func=cmd_baseline)

    t = sub.add_parser("train", help="train + evaluate one method (writes DIR/metrics.json)")
    t.add_argument("--method", required=True, help=f"{methods} (with --plugin: also the ones it registers)")
    t.add_argument("--preset", default="cpu", help=presets)
    t.add_argument("--data", default=None, help="dataset root (default: the preset's)")
    t.add_argument("--dataset", default=None, help="dataset name (default: the preset's)")
    t.add_argument("--out", default=None, help="run folder (default: runs/PRESET/METHOD-sSEED)")
    t.add_argument("--teacher", default=None, help="teacher checkpoint (model.pt of a teacher run)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1 ...")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. optim.lr=0.1")
    t.add_argument("--summary", default=None, help="append rows to this summary CSV (e.g. results/summary.csv)")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    t.add_argument("--force", action="store_true", help="re-run even if --out holds a finished run")
    t.add_argument("--cut-of", default=None, metavar="RUN",
                   help="a finished run of the same recipe that differs only in its final cut (prune.target_macs, "
                        "budget_kind, allocation, round_widths, bn_recalib_batches; pruning methods cutting at the "
                        "end): start after its last epoch and only cut, re-calibrate and evaluate")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("reproduce", help="run the core study notebooks 00-04 (with --full: all, 00-08) "
                       "and refresh the README")
    r.add_argument("--preset", default="cpu", help=presets)
    r.add_argument("--dataset", default=None, help="dataset name (default: the preset's)")
    r.add_argument("--data", default=None, help="dataset root (default: the preset's; generated if synthetic)")
    r.add_argument("--out", default=None, help="results folder (default: results/ for the cpu preset, the "
                   "committed study; RUNS/PRESET/results for any other)")
    r.add_argument("--runs", default="runs", help="run folders (RUNS/PRESET/...)")
    r.add_argument("--epochs", type=int, default=None, help="epochs of every run (default: the preset's)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--jobs", type=int, default=2, help="training subprocesses at a time (1 thread each)")
    r.add_argument("--device", default=None, help="default: the preset's (auto)")
    r.add_argument("--full", action="store_true", help="the full study: every notebook, with its seeds, sweeps and "
                   "ablations")
    r.add_argument("--force", action="store_true", help="re-execute every notebook and re-train every run")
    r.add_argument("--notebooks", nargs="+", default=None, metavar="NAME", help="only these (e.g. 00_data)")
    r.add_argument("--readme", default="auto", help="README whose results section is refreshed (default: "
                   "README.md for the cpu preset into results/, none otherwise)")
    r.add_argument("--no-readme", action="store_true", help="leave the README alone")
    r.add_argument("--kernel", default="python3", help="Jupyter kernel (must run this interpreter)")
    r.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="extra notebook parameter, e.g. target_macs=0.5 (02) or latency_rounds=2 (04)")
    r.set_defaults(func=cmd_reproduce)

    m = sub.add_parser("readme", help="regenerate RESULTS/README.md and the README headline from the results folder")
    m.add_argument("--readme", default="README.md")
    m.add_argument("--results", default="results")
    m.add_argument("--check", action="store_true", help="exit 1 if the section is out of date (writes nothing)")
    m.set_defaults(func=cmd_readme)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from .plugins import load_plugins

    pre = argparse.ArgumentParser(add_help=False)  # plugins first, so that --help lists what they register
    pre.add_argument("--plugin", action="append", default=[])
    try:
        load_plugins(pre.parse_known_args(argv)[0].plugin)
    except (ImportError, OSError, SyntaxError) as e:
        return _user_error(e)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
