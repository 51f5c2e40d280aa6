"""One run = one recipe + one config: build student and teacher, train each stage, compress, record.

Outputs in ``out_dir``: ``train_log.csv`` and ``last.pt`` (the trainer's; a multi-stage recipe has one
sub-folder per stage), ``pruner_norms.json`` (per-epoch pruner norms of PCP students), ``model.pt`` /
``absorbed.pt`` (compact files, :mod:`deap_lib.export`), ``per_query_<form>.npz`` (for paired bootstraps)
and ``metrics.json`` (config, seed, code version, device, world size, wall time and, per model form, mAP /
Rank-k / mINP with 95 % intervals, params and MACs). Rows are also appended to ``summary_csv``
(:mod:`deap_lib.records`).

Under ``torchrun`` (more than one process) every rank trains its slice of each P x K batch with the method
DDP-wrapped; rank 0 alone writes checkpoints, logs, evaluations and ``metrics.json``, which records the
world size and a hash of every rank's final student parameters.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from ..config import RunConfig, config_diff, hr_size, is_paired, run_config_diff
from ..data.run_data import RunData
from ..engine import Trainer
from ..fileio import atomic_write_text, file_sha256, folder_lock, state_dict_sha256
from ..engine.distributed import (auto_device, barrier, get_rank, get_world_size, is_distributed,
                                  is_main_process, wrap_ddp)
from ..engine.precision import legacy_precision, resolve_channels_last, resolve_precision
from ..engine.seeding import seed_everything
from ..absorb import to_deploy
from ..export import load_compact, save_compact
from ..inference import evaluate_model
from ..models import ReIDNet, build_model, load_pretrained
from ..pruning import plain_to_pcp
from ..machine import machine_info
from ..records import Recorder, append_summary, code_version, summary_rows
from ..rundir import PRUNER_NORMS, RunDir
from .registry import METHODS
from .base import Method, RunContext, UserError, parse_args, teacher_missing_message
from .recut import CHECKPOINT, MARKER, seed_from_trained, seeded_from


def resolve_device(name: str) -> torch.device:
    return auto_device() if name == "auto" else torch.device(name)


def build_student(cfg: RunConfig, num_classes: int, pcp: Optional[str]) -> ReIDNet:
    """The student (or teacher) network with the configured initialisation (``student_init``):
    ``random`` (He init), ``imagenet`` (a local torchvision ResNet file via ``load_pretrained``) or
    ``checkpoint`` (the backbone of a compact file saved by this project, e.g. a pre-training run; the head
    starts fresh)."""
    m = cfg.model
    kw = dict(width=m.width, last_stride=m.last_stride, head=m.head, embed_dim=m.embed_dim)
    if cfg.student_init == "random":
        return build_model(m.arch, num_classes, pcp=pcp, **kw)
    if cfg.student_init not in ("imagenet", "checkpoint"):
        raise UserError(f"student_init must be 'random', 'imagenet' or 'checkpoint', got {cfg.student_init!r}")
    if not cfg.pretrained_path:
        raise UserError(f"student_init={cfg.student_init!r} needs pretrained_path")
    if not Path(cfg.pretrained_path).is_file():
        raise UserError(f"pretrained_path {cfg.pretrained_path} not found" + (
            f"; train it with: python -m deap_lib train --method pretrain --preset {cfg.preset} --out "
            f"{Path(cfg.pretrained_path).parent}" if cfg.student_init == "checkpoint" else ""))
    plain = build_model(m.arch, num_classes, pcp=None, **kw)
    if cfg.student_init == "imagenet":
        load_pretrained(plain, cfg.pretrained_path)
    else:
        src = load_compact(cfg.pretrained_path)
        if src.config.get("pcp") is not None or src.config.get("deploy") or src.config.get("widths"):
            raise UserError(f"{cfg.pretrained_path}: a pre-training checkpoint must be a plain unpruned model")
        plain.backbone.load_state_dict(src.backbone.state_dict(), strict=True)
    return plain_to_pcp(plain, pcp) if pcp is not None else plain


# ------------------------------------------------------------------------------------------------ checks
def check_teacher(cfg: RunConfig, teacher: ReIDNet, num_classes: int) -> None:
    """Refuse, before any training, a teacher that cannot serve this run: trained on another number of
    identities, at another input size, or (for block-level distillation) of another architecture."""
    tc = teacher.config
    problems = []
    if tc.get("num_classes") != num_classes:
        problems.append(f"it classifies {tc.get('num_classes')} identities, the run's training set has "
                        f"{num_classes} (dataset '{cfg.data.dataset}' at {cfg.data.root})")
    if tc.get("deploy") or tc.get("pcp") is not None:
        problems.append("it is not a plain training-form model (use a teacher run's model.pt)")
    lc = cfg.loss
    if (lc.dl_weight or lc.arkd_weight) and (tc.get("arch"), tc.get("width")) != (cfg.model.arch, cfg.model.width):
        problems.append(f"it is a {tc.get('arch')} x{tc.get('width')}, the student a {cfg.model.arch} "
                        f"x{cfg.model.width}; DL/ARKD match features block by block (loss.dl_weight=0 and "
                        "loss.arkd_weight=0 for logit KD only)")
    meta = RunDir(Path(cfg.teacher_path).parent)
    if meta.finished:
        try:
            tcfg = meta.metrics.get("config", {})
        except ValueError:
            tcfg = {}
        size = tcfg.get("model", {}).get("input_size")
        hr = hr_size(cfg)
        if size is not None and tuple(size) != hr:
            where = ("the run's HR input (data.hr_size) is" if is_paired(cfg) else "the run uses")
            problems.append(f"it was trained at input {tuple(size)}, {where} {hr}")
    if problems:
        raise UserError(f"teacher {cfg.teacher_path} does not fit this run: " + "; ".join(problems)
                        + f".\nTrain a matching one: python -m deap_lib train --method teacher --preset {cfg.preset}"
                        f" --seed {cfg.seed} (with the same --data/--set options as this run)")


def load_teacher(cfg: RunConfig, device: torch.device) -> Tuple[Optional[ReIDNet], Optional[str]]:
    if not cfg.teacher_path:
        return None, None
    if not Path(cfg.teacher_path).is_file():
        raise UserError(f"teacher checkpoint {cfg.teacher_path} not found. " + teacher_missing_message(cfg))
    return load_compact(cfg.teacher_path).to(device), file_sha256(cfg.teacher_path)


def check_run(cfg: RunConfig) -> None:
    """The checks that need no data: a known method, its ``args.*`` keys, the budget's kind and range, a
    teacher when it needs one."""
    from ..budget import BUDGET_KINDS

    method_cls = METHODS.get(cfg.method)
    parse_args(method_cls, cfg.args)
    pc = cfg.prune
    if pc.budget_kind not in BUDGET_KINDS:
        raise UserError(f"unknown prune.budget_kind {pc.budget_kind!r}; valid: {', '.join(BUDGET_KINDS)}")
    if pc.target_macs is not None and not 0 < pc.target_macs <= 1:
        raise UserError(f"prune.target_macs={pc.target_macs!r} is outside (0, 1]: the budget is a fraction of the "
                        f"unpruned network's {pc.budget_kind} (1 = no compression)")
    if any(stage.method.needs_teacher for stage in method_cls.stages(cfg)) and not cfg.teacher_path:
        raise UserError(teacher_missing_message(cfg))


# ------------------------------------------------------------------------------------------------ training
def resolve_runtime(cfg: RunConfig, device: torch.device) -> Dict[str, Any]:
    """What ``cfg.runtime`` means on ``device`` (:mod:`deap_lib.engine.precision`): the resolved precision,
    channels-last and teacher folding, and the data pipeline; recorded in ``metrics.json`` as ``runtime``."""
    rc = cfg.runtime
    try:
        precision = resolve_precision(rc.precision, device, amp=cfg.amp)
        channels_last = resolve_channels_last(rc.channels_last, device)
    except ValueError as e:
        raise UserError(str(e)) from None
    fold = bool(rc.fold_teacher and cfg.teacher_path and cfg.teacher_bn_mode == "eval")
    if rc.freeze_teacher not in FREEZE_CHOICES:
        raise UserError(f"runtime.freeze_teacher must be one of {FREEZE_CHOICES}, got {rc.freeze_teacher!r}")
    freeze = fold and precision in ("fp32", "bf16") and (
        rc.freeze_teacher == "on" or (rc.freeze_teacher == "auto" and device.type == "cpu"))
    return {"precision": precision, "channels_last": channels_last, "fold_teacher": fold,
            "freeze_teacher": freeze, "pipeline": cfg.data.pipeline}


FREEZE_CHOICES = ("auto", "on", "off")
#: the dtype a frozen teacher's convolutions compute in, per resolved precision
FROZEN_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: the runtime keys that change a run's numbers (the pipelines give the same images, see deap_lib.data.batched)
RUNTIME_KEYS = ("precision", "channels_last", "fold_teacher", "freeze_teacher")


def legacy_runtime(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """The runtime of a run made before runtimes were recorded: float32 (CUDA AMP where ``amp`` was on),
    contiguous tensors, the teacher as trained, per-image transforms."""
    device = str(metrics.get("device", "cpu")).split(":")[0]
    return {"precision": legacy_precision(device, bool(metrics.get("config", {}).get("amp", True))),
            "channels_last": "off", "fold_teacher": False, "freeze_teacher": False, "pipeline": "per_image"}


def eval_form(student: ReIDNet) -> torch.nn.Module:
    """The model a periodic evaluation extracts features with: the student's deploy form (BN folded, PCP
    pruners merged: the same embeddings up to float rounding, fewer ops), or the student itself where it has
    none."""
    try:
        return to_deploy(student)
    except (TypeError, ValueError, NotImplementedError):
        return student


def _pruner_stats(model: ReIDNet, threshold: float) -> Tuple[Dict[str, float], List[float]]:
    norms = torch.cat(list(model.pruner_norms().values())) if model.config.get("pcp") else torch.zeros(0)
    if norms.numel() == 0:
        return {}, []
    stats = {"pruner_frac_below_thr": float((norms < threshold).float().mean()),
             "pruner_norm_median": float(norms.median()), "pruner_norm_max": float(norms.max())}
    return stats, [float(v) for v in norms]


def train_stage(method: Method, data: RunData, out_dir: Path, *, device: torch.device, resume: bool,
                force: bool, progress: bool) -> List[dict]:
    """Train ``method`` for its config's epochs (resumable), logging pruner norms of PCP students and the
    periodic evaluations (``eval_every``) on rank 0. Returns the per-epoch history."""
    cfg = method.cfg
    total = cfg.optim.epochs
    student = method.net
    norms_path = out_dir / PRUNER_NORMS
    norms_log: Dict[str, List[float]] = json.loads(norms_path.read_text()) if resume and norms_path.exists() else {}

    def log_pruners(trainer, epoch, row):
        stats, norms = _pruner_stats(student, cfg.prune.threshold)
        if norms and is_main_process():
            norms_log[str(epoch)] = norms
            atomic_write_text(norms_path, json.dumps(norms_log))
        return stats

    hooks = [log_pruners] if student.config.get("pcp") else []
    rt = resolve_runtime(cfg, device)
    infer_cl = rt["channels_last"] in ("on", "inference")
    if cfg.eval_every:
        def periodic_eval(trainer, epoch, row):
            if (epoch % cfg.eval_every and epoch != total) or not is_main_process():
                return None
            model = eval_form(student)
            if infer_cl:
                model = model.to(memory_format=torch.channels_last)
            split, query, gallery = data.eval_split()
            summary, _ = evaluate_model(model, query, gallery, device=device, n_boot=200,
                                        precision=rt["precision"], channels_last=infer_cl)
            return {"eval_mAP": summary["mAP"], "eval_rank1": summary["rank1"], "eval_split": split}

        hooks.append(periodic_eval)
    method.to(device)
    if rt["channels_last"] == "on":
        method.to(memory_format=torch.channels_last)
    method.prepare_teacher(channels_last=infer_cl, frozen_dtype=FROZEN_DTYPES[rt["precision"]]
                           if rt["freeze_teacher"] else None)
    model = wrap_ddp(method, device, find_unused_parameters=True) if is_distributed() else method
    trainer = Trainer.for_method(method, data.train, epoch_end=hooks, epochs=total, out_dir=out_dir,
                                 seed=cfg.seed, config=cfg.to_dict(), config_defaults=RunConfig().to_dict(),
                                 device=device, precision=rt["precision"],
                                 channels_last=rt["channels_last"] == "on", progress=progress, model=model)
    history = trainer.fit(resume=resume, overwrite=force)
    method.eval()
    return history


def _rank_param_hashes(model: ReIDNet) -> List[str]:
    """SHA-256 of the student's parameters on every rank (identical after a correct DDP run)."""
    h = state_dict_sha256({k: p.detach() for k, p in model.named_parameters()})
    if not is_distributed():
        return [h]
    import torch.distributed as dist

    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, h)
    return out


# ------------------------------------------------------------------------------------------------ run
def resolved_args(cfg: RunConfig) -> Dict[str, Dict[str, Any]]:
    """Every stage's ``args`` with its method's ``Args`` defaults filled in, ``{method: {key: value}}``
    (methods without ``Args`` left out). ``metrics.json`` records it, so a finished run goes stale when a
    default it trained with changes, as it does when a config key changes (the saved config holds only the
    keys that were set)."""
    out: Dict[str, Dict[str, Any]] = {}
    for stage in METHODS.get(cfg.method).stages(cfg):
        a = parse_args(stage.method, stage.cfg.args)
        if a is not None:
            out[stage.method.name] = dataclasses.asdict(a)
    return out


def finished_run_diff(metrics: Dict[str, Any], cfg: RunConfig) -> Dict[str, Tuple[Any, Any]]:
    """``{key: (finished run's value, cfg's value)}``: the differences between a finished run's
    ``metrics.json`` and ``cfg``, its saved config, the runtime it resolved to on its machine (keys
    ``runtime.<key> (resolved)``: precision, channels-last, teacher folding; :func:`legacy_runtime` for runs
    made before it was recorded) and, where it recorded them, its methods' resolved ``args`` (keys
    ``resolved_args.<method>.<key>``; runs made before they were recorded compare by config)."""
    diff = run_config_diff(metrics.get("config", {}), cfg)
    now_rt = resolve_runtime(cfg, resolve_device(cfg.device))
    # the recorded runtime over the legacy one: a key added later counts at its value before it existed
    saved_rt = {**legacy_runtime(metrics), **(metrics.get("runtime") or {})}
    diff.update({f"runtime.{k} (resolved)": (saved_rt.get(k), now_rt[k]) for k in RUNTIME_KEYS
                 if saved_rt.get(k) != now_rt[k]})
    saved = metrics.get("resolved_args")
    if saved is not None:
        diff.update({f"resolved_args.{k}": v for k, v in config_diff(saved, resolved_args(cfg)).items()})
    return diff


def run(cfg: RunConfig, out_dir: Union[str, Path], *, resume: bool = False, force: bool = False,
        summary_csv: Optional[Union[str, Path]] = None, run_name: Optional[str] = None,
        progress: bool = True, cut_of: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """Train and evaluate one recipe; returns the metrics dict (also written to ``out_dir/metrics.json``).

    A finished run with the same config is reused (unless ``force``); ``resume`` continues an interrupted
    one. Configuration problems (unknown method or ``args.*`` key, a missing or mismatched teacher) raise
    :class:`~deap_lib.methods.base.UserError` before any training. One process at a time owns a run folder
    (an exclusive lock on it, held by the first rank): a second one asked for the same run waits for the
    first, then reuses or resumes what it left. ``cut_of``: a finished run of the same recipe that differs only
    in its final cut (:mod:`~deap_lib.methods.recut`): this run starts after its last epoch and only cuts.
    """
    out_dir = Path(out_dir)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: the first rank holds the folder for all
        return _run(cfg, out_dir, resume=resume, force=force, summary_csv=summary_csv, run_name=run_name,
                    progress=progress, cut_of=cut_of)

    def waiting() -> None:
        print(f"{out_dir}: another process is training this run; waiting for it to finish", file=sys.stderr,
              flush=True)

    created = not out_dir.exists()
    try:
        with folder_lock(out_dir, on_wait=waiting):
            return _run(cfg, out_dir, resume=resume, force=force, summary_csv=summary_csv, run_name=run_name,
                        progress=progress, cut_of=cut_of)
    finally:  # a run refused before it wrote anything leaves no empty folder behind
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()


def _run(cfg: RunConfig, out_dir: Path, *, resume: bool, force: bool, summary_csv: Optional[Union[str, Path]],
         run_name: Optional[str], progress: bool, cut_of: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """:func:`run` once the folder is this process's."""
    run_dir = RunDir(out_dir)
    metrics_path = run_dir.metrics_path
    if run_dir.finished and not force:
        old = run_dir.metrics
        diff = finished_run_diff(old, cfg)
        if not diff:
            return old
        if not resume:
            raise FileExistsError(f"{out_dir} holds a finished run with a different config "
                                  f"({', '.join(diff)[:300]}); use another folder or force=True")
    check_run(cfg)
    t0 = time.time()
    if cut_of is not None:  # another cut of a finished run: start after its last epoch (unless it trains here)
        if is_main_process() and (force or not (out_dir / CHECKPOINT).exists()):
            (out_dir / CHECKPOINT).unlink(missing_ok=True)
            seed_from_trained(Path(cut_of), cfg, out_dir)
        barrier()
        resume, force = True, False
    elif force and is_main_process():  # trained from scratch now: no longer a cut of another run
        (out_dir / MARKER).unlink(missing_ok=True)
    cut_from = seeded_from(out_dir)
    device = resolve_device(cfg.device)
    stages = METHODS.get(cfg.method).stages(cfg)
    seed_everything(cfg.seed)  # model construction draws from the global generators
    if is_distributed() and cfg.data.synthetic:  # rank 0 generates a missing synthetic set, the others wait
        if is_main_process():
            from ..data.synthetic import ensure_synthetic

            ensure_synthetic(cfg.data.root, cfg.data.synthetic)
        barrier()
    data = RunData(cfg, rank=get_rank(), world_size=get_world_size())
    teacher, teacher_hash = load_teacher(cfg, device)
    if teacher is not None:
        check_teacher(cfg, teacher, data.num_classes)
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    rec = Recorder(data.query, data.gallery, out_dir, device, input_size=(3, *cfg.model.input_size), seed=cfg.seed,
                   val=(data.val_query, data.val_gallery) if data.has_val else None)
    ctx = RunContext(cfg, data, rec, device, out_dir)
    histories: Dict[str, List[dict]] = {}
    student = build_student(cfg, data.num_classes, stages[0].method.pcp)
    method: Optional[Method] = None
    for i, stage in enumerate(stages):
        if method is not None:
            student = (stages[i - 1].handoff or type(method).handoff)(method, ctx)
        method = stage.method(stage.cfg, student, teacher if stage.method.needs_teacher else None,
                              teacher_hash=teacher_hash)
        histories[stage.subdir or "train"] = train_stage(method, data, out_dir / stage.subdir, device=device,
                                                          resume=resume, force=force, progress=progress)
        ctx.students.append(method.net)
    hashes = _rank_param_hashes(method.net)
    if not is_main_process():
        return {"rank": get_rank(), "world_size": get_world_size(), "param_sha256": hashes}
    if len(stages) == 1:
        save_compact(copy.deepcopy(method.net).cpu(), str(RunDir(out_dir).model_path))
    extra = (stages[-1].compress or type(method).compress)(method, ctx)
    runtime = resolve_runtime(cfg, device)

    metrics = {
        "run": run_name or f"{out_dir.parent.name}/{out_dir.name}", "method": cfg.method, "preset": cfg.preset,
        "dataset": cfg.data.dataset, "seed": cfg.seed, "config": cfg.to_dict(), "code_version": code_version(),
        "device": str(device), "world_size": get_world_size(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "wall_time_s": time.time() - t0, "teacher_hash": teacher_hash,
        "pretrained_hash": file_sha256(cfg.pretrained_path) if cfg.student_init != "random" else None,
        "resolved_args": resolved_args(cfg), "runtime": runtime, "forms": rec.forms,
        "machine": machine_info(device, threads=torch.get_num_threads(), precision=runtime["precision"],
                                torch_version=torch.__version__, world_size=get_world_size()),
        "start": method.start(), "epochs": sum(st.cfg.optim.epochs for st in stages), **ctx.extra, **extra,
    }
    if cut_from is not None:  # trained as that run: its training time plus this cut's
        metrics.update(cut_of=cut_from.get("run"), cut_wall_time_s=metrics["wall_time_s"],
                       wall_time_s=float(cut_from.get("wall_time_s") or 0.0) + metrics["wall_time_s"])
    if get_world_size() > 1:
        metrics["ddp_param_sha256"] = hashes
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, default=float) + "\n")
    if summary_csv is not None:
        append_summary(summary_csv, summary_rows(metrics))
    return metrics
