"""A method is one module (mdistiller's ``Distiller``, fast-reid's meta-architectures): the tiny base class.

A :class:`Method` owns, for one training stage,

* its student (``self.student``) and any extra part (a discriminator, a regressor, memory banks, masks):
  assign them as sub-modules / buffers and they are checkpointed and resumed with it; trainable ones are
  trained with the student's SGD when :meth:`Method.adaptation_modules` lists them, or by their own
  ``OptimizerSpec``;
* the frozen teacher (``self.teacher``, kept *outside* the module tree: never optimised, never in the
  checkpoint, identified by its file hash; its BatchNorm mode follows ``cfg.teacher_bn_mode``);
* its training forward, :meth:`forward_train` ``(batch) -> {name: weighted scalar loss}``;
* its optimizers, :meth:`configure_optimizers` (the student's SGD with the paper's groups by default; add
  :class:`~deap_lib.engine.OptimizerSpec` entries with their own ``step_fn`` for alternating updates);
* its hooks: :meth:`before_step`, :meth:`after_backward` (gradient surgery, unscaled gradients under AMP),
  :meth:`after_step`, :meth:`end_epoch` (numbers it returns join the training log);
* its compression stage, :meth:`compress` (what is cut, how, and which deploy forms are recorded);
* multi-stage recipes: :meth:`stages` (``kd_then_np`` / ``np_then_kd`` compose two methods);
* its own config keys, an ``Args`` dataclass filled from ``cfg.args`` (``--set args.key=value``).

The engine (:meth:`deap_lib.engine.Trainer.for_method`) trains any such module; the runner
(:mod:`deap_lib.methods.runner`) builds student and teacher, runs the stages and records the forms. A new
method is one file plus its registration (``METHODS.register(name, cls)``, here or from a plugin).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from ..config import RunConfig
from ..engine import OptimizerSpec, StepContext, build_optimizer, build_scheduler
from ..engine.distributed import unwrap
from ..losses import CrossEntropyLabelSmooth, TripletLoss
from ..models import ReIDNet, ReIDOutput


#: how the frozen teacher's BatchNorm runs while the method trains: "eval" (its running statistics, never
#: changed; ours) or "train" (batch statistics that drift, the released code's quirk: docs/decisions.rst)
TEACHER_BN_MODES = ("eval", "train")

class UserError(ValueError):
    """A run that cannot start as configured (the CLI prints ``error: <message>`` and exits with 2)."""


@dataclass
class RunContext:
    """What a method's compression stage and stage hand-offs may use: the config, the run's data
    (:class:`~deap_lib.data.RunData`), the recorder of evaluated forms, device and run folder."""

    cfg: RunConfig
    data: Any
    rec: Any
    device: torch.device
    out_dir: Path
    #: the trained student of every finished stage, in order
    students: List[ReIDNet] = dataclasses.field(default_factory=list)
    #: extra entries for the run's metrics.json (e.g. a hand-off's prune rule)
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass
class Stage:
    """One training stage of a recipe: the method class, its config and the run sub-folder it trains in
    (``""``: the run folder). ``handoff(method, ctx) -> student`` turns the trained stage into the next
    stage's student; ``compress(method, ctx) -> dict`` replaces the last method's own :meth:`Method.compress`."""

    method: type
    cfg: RunConfig
    subdir: str = ""
    handoff: Optional[Callable[["Method", RunContext], ReIDNet]] = None
    compress: Optional[Callable[["Method", RunContext], Dict[str, Any]]] = None


def parse_args(method_cls: type, args: Mapping[str, Any]) -> Any:
    """``cfg.args`` checked against ``method_cls.Args`` (a dataclass): unknown keys are errors listing the
    valid ones; missing keys take the dataclass defaults. ``None`` when the method has no ``Args``."""
    spec = getattr(method_cls, "Args", None)
    if spec is None:
        if args:
            raise UserError(f"method '{method_cls.name}' takes no args.* keys, got {sorted(args)}")
        return None
    valid = {f.name: f for f in dataclasses.fields(spec)}
    unknown = sorted(set(args) - set(valid))
    if unknown:
        raise UserError(f"unknown config key(s) {['args.' + k for k in unknown]} for method '{method_cls.name}'; "
                        f"valid: {', '.join('args.' + k for k in sorted(valid)) or '(none)'}")
    return spec(**dict(args))


class Method(nn.Module):
    """Base recipe: the re-ID task loss (label-smoothed CE on logits + batch-hard triplet on the GAP
    feature, docs/methods/deap.rst §Losses items 1-2), the student's SGD, no compression."""

    name = "base"
    needs_teacher = False
    pcp: Optional[str] = None  # PCP kind of the student this method trains (None: a plain network)
    prunes = False  # ends with cut + BN re-calibration + absorb (the default compress)
    #: form name used in records for the trained model of a non-pruning method
    form = "student"
    #: a dataclass of this method's own config keys (``cfg.args``); None: it has none
    Args: Optional[type] = None
    #: trains on its own data (the pre-training corpus): a study's data overrides do not apply
    own_data = False
    #: reads ``ReIDOutput.mid_feats`` / ``gated_feats`` (CDD); without, student and teacher skip them
    conv2_feats = False

    def __init__(self, cfg: RunConfig, student: ReIDNet, teacher: Optional[ReIDNet] = None, *,
                 teacher_hash: Optional[str] = None):
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise UserError(teacher_missing_message(cfg))
        if cfg.teacher_bn_mode not in TEACHER_BN_MODES:
            raise UserError(f"teacher_bn_mode must be one of {TEACHER_BN_MODES}, got {cfg.teacher_bn_mode!r}")
        self.cfg = cfg
        self.args = parse_args(type(self), cfg.args)
        self.student = student
        self._teacher = [teacher] if teacher is not None else []  # a list keeps it out of the module tree
        #: what teacher_forward runs: the BN-folded deploy copy (runtime.fold_teacher, eval-mode BN only)
        self._teacher_runner: List[nn.Module] = []
        self._teacher_nhwc = False
        if teacher is not None:
            teacher.requires_grad_(False)
            self._teacher_runner = [folded_teacher(teacher, cfg)]
        for net in [student, *self._teacher_runner]:
            if isinstance(net, ReIDNet):
                net.collect_conv2 = self.conv2_feats
        self.teacher_hash = teacher_hash
        #: position in the stage, epoch_index / epochs (0 at the first epoch); kept current by before_step
        self.progress = 0.0
        lc = cfg.loss
        self.ce = CrossEntropyLabelSmooth(epsilon=lc.label_smoothing)
        self.triplet = TripletLoss(margin=lc.triplet_margin)
        self.train(student.training)

    # ---------------------------------------------------------------- structure
    @property
    def teacher(self) -> Optional[ReIDNet]:
        return self._teacher[0] if self._teacher else None

    @property
    def net(self) -> ReIDNet:
        """The student itself (never a DDP wrapper)."""
        return unwrap(self.student)

    def train(self, mode: bool = True) -> "Method":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.train(mode and self.cfg.teacher_bn_mode == "train")
        return self

    def _apply(self, fn, recurse=True):  # .to(device) / .double() also move the (unregistered) teacher
        super()._apply(fn, recurse)
        if self.teacher is not None:
            self.teacher._apply(fn)
            runner = self._teacher_runner[0]
            if runner is not self.teacher and isinstance(runner, nn.Module):  # a frozen graph stays put
                runner._apply(fn)
        return self

    def forward(self, batch: Sequence[Any]) -> Dict[str, Tensor]:
        """Same as :meth:`forward_train`, so that a DDP wrapper around the method syncs its gradients."""
        return self.forward_train(batch)

    @staticmethod
    def teacher_view(batch: Sequence[Any]) -> Tensor:
        """The teacher's images of a training batch: the HR view of paired views (``batch[4]``, see
        :mod:`deap_lib.resolution`), else the student's own images."""
        return batch[4] if len(batch) > 4 else batch[0]

    @torch.no_grad()
    def teacher_forward(self, imgs: Tensor) -> ReIDOutput:
        """All training outputs of the frozen teacher (its BN mode per ``cfg.teacher_bn_mode``), from its
        BN-folded copy where ``runtime.fold_teacher`` allows (:func:`folded_teacher`)."""
        if self._teacher_nhwc:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        return self._teacher_runner[0].forward_features(imgs)

    def teacher_channels_last(self) -> None:
        """Run the frozen teacher channels-last (NHWC weights and inputs; ``runtime.channels_last``)."""
        self.prepare_teacher(channels_last=True)

    def prepare_teacher(self, *, channels_last: bool, frozen_dtype: Optional[torch.dtype] = None) -> None:
        """Put the frozen teacher in its running form, once it sits on its device: channels-last (NHWC
        weights and inputs; ``runtime.channels_last``) and, given ``frozen_dtype``, its folded copy as a frozen
        TorchScript graph computing in that dtype (``runtime.freeze_teacher``,
        :class:`~deap_lib.models.frozen.FrozenFeatures`; eval-mode BN only)."""
        if not self._teacher_runner:
            return
        runner = self._teacher_runner[0]
        if channels_last and isinstance(runner, nn.Module):
            runner.to(memory_format=torch.channels_last)
            self._teacher_nhwc = True
        if frozen_dtype is not None and isinstance(runner, nn.Module):
            if runner is self.teacher and self.teacher.training:
                raise ValueError("a teacher with train-mode BN cannot be frozen (teacher_bn_mode='train')")
            from ..models.frozen import FrozenFeatures

            self._teacher_runner[0] = FrozenFeatures(runner.eval(), frozen_dtype)

    # ---------------------------------------------------------------- training
    def forward_train(self, batch: Sequence[Any]) -> Dict[str, Tensor]:
        imgs, pids = batch[0], batch[1]
        return self.task_terms(self.student(imgs), pids)

    def task_terms(self, out: ReIDOutput, pids: Tensor) -> Dict[str, Tensor]:
        lc = self.cfg.loss
        return {"ce": lc.ce_weight * self.ce(out.logits, pids),
                "triplet": lc.triplet_weight * self.triplet(out.global_feat, pids)}

    def configure_optimizers(self) -> List[OptimizerSpec]:
        """The student's SGD (base / head groups, docs/methods/deap.rst §Training recipe) with the warm-up / flat / cosine schedule."""
        oc = self.cfg.optim
        optimizer = build_optimizer(self.net, lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay,
                                    head_lr_mult=oc.head_lr_mult)
        extra = [p for m in self.adaptation_modules() for p in m.parameters() if p.requires_grad]
        if extra:  # trained beside the student, at its base learning rate and schedule
            optimizer.add_param_group({"name": "adaptation", "params": extra, "lr": oc.lr})
        return [OptimizerSpec("student", optimizer, self.student_scheduler(optimizer))]

    def adaptation_modules(self) -> List[nn.Module]:
        """Modules trained with the student's SGD but not part of it (FitNet's regressors); none by default."""
        return []

    def student_scheduler(self, optimizer: torch.optim.Optimizer):
        oc = self.cfg.optim
        total = oc.epochs
        warm = int(round(total * oc.warmup_frac))
        flat = max(warm, int(round(total * oc.flat_frac)))
        return build_scheduler(optimizer, total, warmup_epochs=warm, flat_until=flat,
                               warmup_start=oc.warmup_start, eta_min=oc.eta_min)

    def before_step(self, ctx: StepContext) -> None:
        self.progress = ctx.epoch_index / ctx.trainer.epochs

    def after_backward(self, ctx: StepContext) -> None:
        """After backward, before the optimizer step, with unscaled gradients (gradient surgery)."""

    def after_step(self, ctx: StepContext) -> None:
        """After the optimizer step(s) (e.g. a proximal update, re-applying pruning masks)."""

    def end_epoch(self, epoch: int) -> Optional[Mapping[str, Any]]:
        """After each epoch (and its scheduler step); numbers returned join the training log."""
        return None

    def checkpoint_state(self) -> Dict[str, Any]:
        """Everything the method trains or accumulates (student, extra modules, buffers); not the teacher."""
        return self.state_dict()

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.load_state_dict(state, strict=True)

    def checkpoint_metadata(self) -> Dict[str, str]:
        """Checked on resume: a run continues only with the teacher it started with."""
        if self.teacher is None:
            return {}
        return {"teacher_hash": self.teacher_hash or "", "teacher_bn_mode": self.cfg.teacher_bn_mode}

    # ---------------------------------------------------------------- recipe
    @classmethod
    def stages(cls, cfg: RunConfig) -> List[Stage]:
        """The training stages of this recipe (default: one, this method with the run's config)."""
        return [Stage(cls, cfg)]

    def handoff(self, ctx: RunContext) -> ReIDNet:
        """The next stage's student (default: this stage's trained student)."""
        return self.net

    def start(self) -> str:
        """Where the student's weights started (``summary.csv`` ``start``): ``teacher`` (the teacher's weights:
        ``student_init=checkpoint`` from the teacher's file), ``pretrain`` (another checkpoint), ``imagenet``
        or ``random``."""
        cfg = self.cfg
        if cfg.student_init in ("random", "imagenet"):
            return cfg.student_init
        if cfg.teacher_path and cfg.pretrained_path and \
                Path(cfg.teacher_path).resolve() == Path(cfg.pretrained_path).resolve():
            return "teacher"
        return "pretrain"

    def compress(self, ctx: RunContext) -> Dict[str, Any]:
        """Record the deployed forms; a pruning method cuts, re-calibrates and absorbs its student
        (:func:`deap_lib.compression.compress_student`). Returns extra entries for ``metrics.json``."""
        if self.prunes:
            from ..compression import compress_student

            return compress_student(self.net, self.cfg.prune, ctx.rec, ctx.data.recalib_batches)
        ctx.rec.add(self.form, self.net)
        return {}


def folded_teacher(teacher: nn.Module, cfg: RunConfig) -> nn.Module:
    """The module that computes a frozen teacher's training outputs: its deploy form (every BatchNorm folded
    into its conv, :func:`~deap_lib.absorb.to_deploy`; the same outputs up to float rounding, fewer ops)
    when ``runtime.fold_teacher`` is on and the teacher's BN runs on its running statistics
    (``teacher_bn_mode="eval"``); the teacher itself otherwise (the released code's train-mode BN depends
    on the batch and cannot be folded)."""
    if not (cfg.runtime.fold_teacher and cfg.teacher_bn_mode == "eval" and isinstance(teacher, ReIDNet)):
        return teacher
    from ..absorb import to_deploy

    return to_deploy(teacher).requires_grad_(False)


def teacher_missing_message(cfg: RunConfig) -> str:
    return (f"method '{cfg.method}' needs a teacher (config key teacher_path). Train one first:\n"
            f"  python -m deap_lib train --method teacher --preset {cfg.preset} --seed {cfg.seed} "
            f"--out runs/{cfg.preset}/teacher-s{cfg.seed}\n"
            f"then pass --teacher runs/{cfg.preset}/teacher-s{cfg.seed}/model.pt")
