"""One run = one method + one config: train, (prune, re-calibrate, absorb), evaluate, record.

Outputs in ``out_dir``: ``train_log.csv`` and ``last.pt`` (the trainer's), ``pruner_norms.json``
(per-epoch pruner norms of PCP students), ``model.pt`` / ``absorbed.pt`` (compact files, see
:mod:`deap_lib.export`), ``per_query_<form>.npz`` (for paired bootstraps) and ``metrics.json`` (config,
seed, code version, device, wall time and, per model form, mAP / Rank-k / mINP with 95 % intervals, params
and MACs). Rows are also appended to ``summary_csv`` (columns :data:`SUMMARY_COLUMNS`, metrics in percent).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from .. import __version__
from ..absorb import absorb, to_deploy, verify
from ..complexity import profile
from ..config import RunConfig
from ..data import TransformConfig, build_dataset, build_test_loader, build_train_loader
from ..engine import Distiller, Trainer, build_optimizer, build_scheduler
from ..engine.checkpoint import atomic_write_text, config_diff
from ..engine.distiller import file_sha256
from ..engine.distributed import auto_device, is_main_process
from ..engine.seeding import seed_everything
from ..export import load_compact, save_compact
from ..inference import evaluate_model, per_query_arrays
from ..models import ReIDNet, build_model, load_pretrained
from ..pruning import GradualPruning, bn_scores, plain_to_pcp, pruner_scores, recalibrate_bn, select_and_prune
from . import METHODS
from .base import Method
from .sequential import Sequential

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["run", "method", "preset", "dataset", "seed", "form", "mAP", "rank1", "rank5", "rank10",
                   "mINP", "params_m", "macs_g"]
#: the model forms that get a summary row (others, e.g. ``pruned_no_recalib``, stay in metrics.json)
SUMMARY_FORMS = ("teacher", "student", "unpruned", "pruned", "absorbed")


def summary_rows(metrics: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The ``summary.csv`` rows of one run's metrics (metrics in percent, params in M, MACs in G)."""
    return [{"run": metrics["run"], "method": metrics["method"], "preset": metrics["preset"],
             "dataset": metrics["dataset"], "seed": metrics["seed"], "form": form, "mAP": r["mAP"],
             "rank1": r["rank1"], "rank5": r["rank5"], "rank10": r["rank10"], "mINP": r["mINP"],
             "params_m": r["params_no_classifier"] / 1e6, "macs_g": r["macs"] / 1e9}
            for form, r in metrics["forms"].items() if form in SUMMARY_FORMS]


# ------------------------------------------------------------------------------------------------ helpers
#: the tracked paths that make up the code (``results/``, the README and data are outputs, not code)
CODE_PATHS = ("deap_lib", "notebooks", "benchmarks", "pyproject.toml", "environment.yml", "Makefile")


def code_version(root: Optional[Union[str, Path]] = None) -> str:
    """``git describe`` of the checkout at ``root`` (default: this package's), with ``-dirty`` when the code
    (:data:`CODE_PATHS`) has uncommitted changes; the study's own outputs (``results/``, the README section)
    do not count. Without git, the package version."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--tags"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode != 0 or not out.stdout.strip():
            return __version__
        st = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=normal", "--",
                             *CODE_PATHS], capture_output=True, text=True, timeout=10)
        dirty = st.returncode != 0 or bool(st.stdout.strip())
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return __version__


def resolve_device(name: str) -> torch.device:
    return auto_device() if name == "auto" else torch.device(name)


def _transform_cfg(cfg: RunConfig) -> TransformConfig:
    d = cfg.data
    return TransformConfig(size=tuple(cfg.model.input_size), flip_p=d.flip_p, pad=d.pad, erase_p=d.re_prob,
                           erase_fill=d.re_fill)


class Data:
    """The dataset and its three loaders for one config."""

    def __init__(self, cfg: RunConfig):
        d = cfg.data
        if d.synthetic:
            from .presets import ensure_synthetic

            ensure_synthetic(d.root, d.synthetic)
        self.dataset = build_dataset(d.dataset, d.root)
        tcfg = _transform_cfg(cfg)
        self.train = build_train_loader(self.dataset, batch_size=d.ids_per_batch * d.num_instances,
                                        num_instances=d.num_instances, transform_cfg=tcfg,
                                        num_workers=d.num_workers, seed=cfg.seed)
        kw = dict(transform_cfg=tcfg, batch_size=d.test_batch_size, num_workers=d.num_workers)
        self.query = build_test_loader(self.dataset.query, **kw)
        self.gallery = build_test_loader(self.dataset.gallery, **kw)
        # training images without augmentation, for BN re-calibration after pruning
        self.train_plain = build_test_loader(self.dataset.train, **kw)

    def recalib_batches(self, n: int):
        for i, batch in enumerate(self.train_plain):
            if i >= n:
                return
            yield batch[0]


def build_student(cfg: RunConfig, num_classes: int, pcp: Optional[str]) -> ReIDNet:
    """The student (or teacher) network with the configured initialisation (``student_init``):
    ``random`` (He init), ``imagenet`` (a local torchvision ResNet file via ``load_pretrained``) or
    ``checkpoint`` (the backbone of a compact file saved by this project, e.g. the cpu preset's
    pre-training on disjoint synthetic identities; the head starts fresh)."""
    m = cfg.model
    kw = dict(width=m.width, last_stride=m.last_stride, head=m.head, embed_dim=m.embed_dim)
    if cfg.student_init == "random":
        return build_model(m.arch, num_classes, pcp=pcp, **kw)
    if cfg.student_init not in ("imagenet", "checkpoint"):
        raise ValueError(f"student_init must be 'random', 'imagenet' or 'checkpoint', got {cfg.student_init!r}")
    if not cfg.pretrained_path:
        raise ValueError(f"student_init={cfg.student_init!r} needs pretrained_path")
    plain = build_model(m.arch, num_classes, pcp=None, **kw)
    if cfg.student_init == "imagenet":
        load_pretrained(plain, cfg.pretrained_path)
    else:
        src = load_compact(cfg.pretrained_path)
        if src.config.get("pcp") is not None or src.config.get("deploy") or src.config.get("widths"):
            raise ValueError(f"{cfg.pretrained_path}: a pre-training checkpoint must be a plain unpruned model")
        plain.backbone.load_state_dict(src.backbone.state_dict(), strict=True)
    return plain_to_pcp(plain) if pcp == "deap" else plain


def _pruner_stats(model: ReIDNet, threshold: float) -> Tuple[Dict[str, float], List[float]]:
    norms = torch.cat([v for v in model.pruner_norms().values()]) if model.config.get("pcp") else torch.zeros(0)
    if norms.numel() == 0:
        return {}, []
    stats = {"pruner_frac_below_thr": float((norms < threshold).float().mean()),
             "pruner_norm_median": float(norms.median()), "pruner_norm_max": float(norms.max())}
    return stats, [float(v) for v in norms]


def append_summary(path: Union[str, Path], rows: List[Dict[str, Any]]) -> None:
    """Add rows to the summary CSV atomically; rows of the same (run, form) replace older ones."""
    import pandas as pd

    path = Path(path)
    new = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if path.exists():
        old = pd.read_csv(path)
        missing = [c for c in SUMMARY_COLUMNS if c not in old.columns]
        if missing:
            raise ValueError(f"{path}: not a summary file (missing columns {missing})")
        keys = set(zip(new["run"], new["form"]))
        old = old[[k not in keys for k in zip(old["run"], old["form"])]]
        new = pd.concat([old[SUMMARY_COLUMNS], new], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, new.to_csv(index=False, float_format="%.4f"))


# ------------------------------------------------------------------------------------------------ training
def train_stage(method: Method, cfg: RunConfig, student: ReIDNet, teacher: Optional[ReIDNet], data: Data,
                out_dir: Path, *, resume: bool, progress: bool, device: torch.device,
                teacher_path: Optional[str] = None, force: bool = False) -> Tuple[ReIDNet, List[dict]]:
    """Train ``student`` with ``method``'s loss terms for ``cfg.optim.epochs`` epochs (resumable)."""
    oc = cfg.optim
    if method.needs_teacher and teacher is None:
        raise ValueError(f"method '{method.name}' needs a teacher (config key teacher_path)")
    module = Distiller(student, teacher, teacher_bn_mode=cfg.teacher_bn_mode, teacher_path=teacher_path,
                       teacher_method="forward_features") if method.needs_teacher else student
    optimizer = build_optimizer(module, lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay,
                                head_lr_mult=oc.head_lr_mult)
    total = oc.epochs
    warm = int(round(total * oc.warmup_frac))
    flat = max(warm, int(round(total * oc.flat_frac)))
    scheduler = build_scheduler(optimizer, total, warmup_epochs=warm, flat_until=flat,
                                warmup_start=oc.warmup_start, eta_min=oc.eta_min)

    def step(batch, ctx):
        method.progress = ctx.epoch_index / total
        imgs, pids = batch[0], batch[1]
        out_s = student(imgs)
        out_t = module.teacher_forward(imgs) if method.needs_teacher else None
        return method.loss_terms(student, out_s, out_t, pids)

    gradual = None
    if method.prunes and cfg.prune.schedule == "gradual":
        if cfg.prune.target_macs is None:
            raise ValueError("prune.schedule='gradual' needs prune.target_macs (the MACs budget to reach)")
        gradual = GradualPruning(student, target_macs=cfg.prune.target_macs, total_epochs=total,
                                 end_frac=cfg.prune.gradual_end_frac, input_size=(3, *cfg.model.input_size),
                                 allocation=cfg.prune.allocation, min_channels=cfg.prune.min_channels)
    elif cfg.prune.schedule not in ("end", "gradual"):
        raise ValueError(f"unknown prune.schedule '{cfg.prune.schedule}'; valid: end, gradual")

    def post_step(ctx):
        method.post_step(student, float(optimizer.param_groups[0]["lr"]))
        if gradual is not None:
            gradual.apply_()

    norms_path = out_dir / "pruner_norms.json"
    norms_log: Dict[str, List[float]] = {}
    if resume and norms_path.exists():
        norms_log = json.loads(norms_path.read_text())

    def log_pruners(trainer, epoch, row):
        stats, norms = _pruner_stats(student, cfg.prune.threshold)
        if norms and is_main_process():
            norms_log[str(epoch)] = norms
            atomic_write_text(norms_path, json.dumps(norms_log))
        return stats

    hooks = [log_pruners] if student.config.get("pcp") else []
    if gradual is not None:
        hooks.insert(0, lambda trainer, epoch, row: gradual.update(epoch))
    if cfg.eval_every:
        def periodic_eval(trainer, epoch, row):
            if epoch % cfg.eval_every and epoch != total:
                return None
            summary, _ = evaluate_model(student, data.query, data.gallery, device=device, n_boot=200)
            return {"eval_mAP": summary["mAP"], "eval_rank1": summary["rank1"]}

        hooks.append(periodic_eval)
    trainer = Trainer(module, optimizer, data.train, step, epochs=total, out_dir=out_dir, seed=cfg.seed,
                      config=cfg.to_dict(), scheduler=scheduler, device=device,
                      amp=cfg.amp and device.type == "cuda", post_step=post_step,
                      epoch_end=hooks, progress=progress)
    history = trainer.fit(resume=resume, overwrite=force)
    return student.eval(), history


def _load_teacher(cfg: RunConfig, device: torch.device) -> Tuple[Optional[ReIDNet], Optional[str]]:
    if not cfg.teacher_path:
        return None, None
    teacher = load_compact(cfg.teacher_path).to(device)
    return teacher, file_sha256(cfg.teacher_path)


# ------------------------------------------------------------------------------------------------ evaluation
class Recorder:
    """Evaluates model forms and collects the per-form records of one run."""

    def __init__(self, cfg: RunConfig, data: Data, out_dir: Path, device: torch.device):
        self.cfg, self.data, self.out_dir, self.device = cfg, data, out_dir, device
        self.input_size = (3, *cfg.model.input_size)
        self.forms: Dict[str, Dict[str, Any]] = {}

    def add(self, form: str, model: ReIDNet) -> Dict[str, Any]:
        model = model.to(self.device).eval()
        summary, res = evaluate_model(model, self.data.query, self.data.gallery, device=self.device,
                                      seed=self.cfg.seed)
        np.savez(self.out_dir / f"per_query_{form}.npz", **per_query_arrays(res))
        cx = profile(model, self.input_size)
        rec = {**summary, "params": int(cx["params"]), "params_no_classifier": int(cx["params_no_classifier"]),
               "macs": int(cx["macs"])}
        self.forms[form] = rec
        log.info("%s: mAP %.2f rank1 %.2f params %.3f M MACs %.4f G", form, rec["mAP"], rec["rank1"],
                 rec["params_no_classifier"] / 1e6, rec["macs"] / 1e9)
        return rec


# ------------------------------------------------------------------------------------------------ pruning end
def finish_pruning(cfg: RunConfig, student: ReIDNet, data: Data, rec: Recorder, *, scores=None,
                   unpruned: Optional[ReIDNet] = None) -> Dict[str, Any]:
    """Cut, re-calibrate BN, absorb and evaluate the paper's three forms (+ the cut before re-calibration).

    ``unpruned``: the student before it was cut, when ``student`` is already compact (``np_then_kd``)."""
    pc = cfg.prune
    out: Dict[str, Any] = {}
    pcp_student = student if student.config.get("pcp") else plain_to_pcp(student)
    rec.add("unpruned", to_deploy(unpruned if unpruned is not None else pcp_student))
    if unpruned is not None:
        pruned, rule = pcp_student, {"note": "student was pruned before its last training stage"}
    else:
        if scores is None:
            scores = pruner_scores(pcp_student)
        pruned, rule = select_and_prune(pcp_student, scores, threshold=pc.threshold, relative=pc.relative,
                                        min_channels=pc.min_channels, target_macs=pc.target_macs,
                                        input_size=rec.input_size, allocation=pc.allocation)
        if pc.bn_recalib_batches:
            rec.add("pruned_no_recalib", pruned)
            n = recalibrate_bn(pruned, data.recalib_batches(pc.bn_recalib_batches), rec.device)
            rule["bn_recalib_batches"] = n
    rec.add("pruned", pruned)
    deploy, report = absorb(pruned.eval(), threshold=0.0, min_channels=1, input_size=rec.input_size,
                            profile=False)
    rec.add("absorbed", deploy)
    save_compact(deploy.cpu(), str(rec.out_dir / "absorbed.pt"))
    out["prune_rule"] = rule
    out["absorb_verification"] = report.verification
    out["kept_widths"] = [list(w) for w in deploy.block_widths()]
    out["original_widths"] = [list(w) for w in (unpruned or pcp_student).block_widths()]
    return out


# ------------------------------------------------------------------------------------------------ run
def run(cfg: RunConfig, out_dir: Union[str, Path], *, resume: bool = False, force: bool = False,
        summary_csv: Optional[Union[str, Path]] = None, run_name: Optional[str] = None,
        progress: bool = True) -> Dict[str, Any]:
    """Train and evaluate one method; returns the metrics dict (also written to ``out_dir/metrics.json``).

    A finished run with the same config is reused (unless ``force``); ``resume`` continues an interrupted one.
    """
    out_dir = Path(out_dir)
    metrics_path = out_dir / "metrics.json"
    if metrics_path.exists() and not force:
        old = json.loads(metrics_path.read_text())
        if not config_diff(old.get("config", {}), cfg.to_dict()):
            return old
        if not resume:
            raise FileExistsError(f"{out_dir} holds a finished run with a different config "
                                  f"({', '.join(config_diff(old.get('config', {}), cfg.to_dict()))[:300]}); "
                                  "use another folder or force=True")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    device = resolve_device(cfg.device)
    method_cls = METHODS.get(cfg.method)
    seed_everything(cfg.seed)  # model construction draws from the global generators
    data = Data(cfg)
    num_classes = data.dataset.num_train_pids
    teacher, teacher_hash = _load_teacher(cfg, device)
    rec = Recorder(cfg, data, out_dir, device)
    extra: Dict[str, Any] = {}
    histories: Dict[str, List[dict]] = {}

    if issubclass(method_cls, Sequential):
        scfg = cfg  # each stage runs round(stage_frac x epochs) epochs (>= 2) with the full schedule shape
        if cfg.optim.stage_frac != 1.0:
            if not 0.0 < cfg.optim.stage_frac <= 1.0:
                raise ValueError(f"optim.stage_frac must be in (0, 1], got {cfg.optim.stage_frac}")
            scfg = copy.deepcopy(cfg)
            scfg.optim.epochs = max(2, int(round(cfg.optim.epochs * cfg.optim.stage_frac)))
        first, second = (METHODS.get(n)(scfg) for n in method_cls.stages)
        s1 = build_student(cfg, num_classes, first.pcp)
        s1, histories["stage1"] = train_stage(first, scfg, s1, teacher, data, out_dir / f"stage1_{first.name}",
                                              resume=resume, progress=progress, device=device,
                                              teacher_path=cfg.teacher_path, force=force)
        if first.prunes:  # np_then_kd: cut + re-calibrate, then distil the compact student
            pruned, rule = select_and_prune(s1, pruner_scores(s1), threshold=cfg.prune.threshold,
                                            relative=cfg.prune.relative, min_channels=cfg.prune.min_channels,
                                            target_macs=cfg.prune.target_macs, input_size=rec.input_size,
                                            allocation=cfg.prune.allocation)
            recalibrate_bn(pruned, data.recalib_batches(cfg.prune.bn_recalib_batches), device)
            rec.add("stage1_pruned", pruned)
            extra["stage1_prune_rule"] = rule
            s2 = pruned.train()
        else:  # kd_then_np: identity pruners into the distilled student
            rec.add("stage1_student", s1)
            s2 = plain_to_pcp(s1).train()
        s2, histories["stage2"] = train_stage(second, scfg, s2, teacher, data, out_dir / f"stage2_{second.name}",
                                              resume=resume, progress=progress, device=device,
                                              teacher_path=cfg.teacher_path, force=force)
        extra.update(finish_pruning(cfg, s2, data, rec, unpruned=s1 if first.prunes else None))
    else:
        method = method_cls(cfg)
        student = build_student(cfg, num_classes, method.pcp)
        student, histories["train"] = train_stage(method, cfg, student, teacher, data, out_dir, resume=resume,
                                                  progress=progress, device=device, teacher_path=cfg.teacher_path,
                                                  force=force)
        save_compact(copy.deepcopy(student).cpu(), str(out_dir / "model.pt"))
        if method.prunes:
            scores = bn_scores(student) if method.pcp is None else None
            extra.update(finish_pruning(cfg, student, data, rec, scores=scores))
        else:
            rec.add(method.form, student)

    metrics = {
        "run": run_name or f"{out_dir.parent.name}/{out_dir.name}", "method": cfg.method, "preset": cfg.preset, "dataset": cfg.data.dataset,
        "seed": cfg.seed, "config": cfg.to_dict(), "code_version": code_version(), "device": str(device),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "wall_time_s": time.time() - t0,
        "teacher_hash": teacher_hash, "forms": rec.forms, **extra,
    }
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, default=float) + "\n")
    if summary_csv is not None:
        append_summary(summary_csv, summary_rows(metrics))
    return metrics
