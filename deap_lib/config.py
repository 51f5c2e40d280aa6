"""Run configuration: nested dataclasses with strict loading and ``section.key=value`` overrides.

A run is fully described by one :class:`RunConfig`; it is stored in every checkpoint and in
``metrics.json``. Unknown keys are errors that name the key and list the valid ones.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple


@dataclass
class ModelConfig:
    arch: str = "resnet50"
    width: float = 1.0
    last_stride: int = 1
    head: str = "classblock"
    embed_dim: int = 512
    input_size: Tuple[int, int] = (256, 256)  # (H, W)


@dataclass
class DataConfig:
    dataset: str = "veri"
    root: str = "data/synthetic_veri"
    synthetic: str = ""  # "" = real data at root; else a SYNTHETIC preset generated at root when missing
    num_instances: int = 6  # K
    ids_per_batch: int = 16  # P
    num_workers: int = 0
    flip_p: float = 0.5
    pad: int = 10
    re_prob: float = 0.5
    re_fill: str = "zero"  # "zero" | "imagenet_mean_quirk" (released code)
    test_batch_size: int = 128
    cache_images: bool = False  # keep decoded training / transformed test images in memory (small sets)
    #: the teacher's high-resolution input (H, W); None: model.input_size. Set apart from model.input_size,
    #: the student trains on the LR view of each HR-augmented image (deap_lib.resolution)
    hr_size: Optional[Tuple[int, int]] = None
    #: "batched": uint8 images augmented a whole batch at a time as tensors (deap_lib.data.batched, same
    #: images as "per_image" for the same seed); "per_image": the torchvision/PIL transform per sample
    pipeline: str = "batched"
    #: the validation split (probes, choices, periodic evaluations, plateau checks): the query / gallery of the
    #: VeRi-format set at val_root ("" = none: periodic evaluations read the test split and say so)
    val_root: str = ""
    val_synthetic: str = ""  # "" = real data at val_root; else a SYNTHETIC set generated there when missing


@dataclass
class OptimConfig:
    epochs: int = 90
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    head_lr_mult: float = 1.5
    warmup_frac: float = 10 / 90  # docs/methods/deap.rst §Training recipe / 8.1: phases as fractions of the run
    flat_frac: float = 40 / 90
    warmup_start: float = 0.1
    eta_min: float = 1e-7
    stage_frac: float = 1.0  # each stage of kd_then_np / np_then_kd runs this x `epochs` (at least 2)


@dataclass
class LossConfig:
    ce_weight: float = 1.0
    label_smoothing: float = 0.1
    triplet_weight: float = 1.0
    triplet_margin: float = 0.3
    kl_weight: float = 1.0
    kl_T: float = 2.0
    dl_weight: float = 0.5
    arkd_weight: float = 1.0
    arkd_alpha: float = 10.0
    arkd_beta: float = 1.0
    relation: str = "arkd"  # what fills ARKD's term: arkd | at | sp | fitnet | rkd | pkt | none (losses/kd_slot.py)
    relation_weight: Optional[float] = None  # its weight; None: loss.arkd_weight for arkd, else the field's
    lasso1: float = 0.003  # pruner 1 (column norms)
    lasso2: float = 0.003  # pruner 2 (row norms)
    lasso_eps: float = 1e-12
    lasso_scale_invariant: bool = False  # each pruner's group-norm sum / its Frobenius norm (ours; paper: False)


@dataclass
class PruneConfig:
    threshold: float = 1e-3  # paper: absolute 1e-3 on pruner column/row norms
    relative: bool = False  # threshold relative to each pruner's largest norm (our extension)
    min_channels: int = 1
    target_macs: Optional[float] = None  # the budget: fraction of the unpruned MACs to keep (of budget_kind)
    budget_kind: str = "macs"  # what target_macs is a fraction of: "macs" or "params" (deap_lib.budget)
    allocation: str = "global"  # with target_macs: "global" threshold or "uniform" share of every pruner
    schedule: str = "end"  # "end": cut once after training (paper); "gradual": reach target_macs during training
    gradual_end_frac: float = 0.6  # gradual: the budget is reached after this fraction of the run
    bn_recalib_batches: int = 20  # recompute BN statistics after the cut, before absorbing (docs/study.rst §Scaling the recipe down)
    proximal: bool = False  # proximal group soft-thresholding update instead of the plain subgradient
    lasso_warmup_frac: float = 0.0  # lambda ramps linearly from 0 over this fraction of the run (paper: 0)
    round_widths: bool = False  # round every kept width up to width_multiple, inside the selection (ours)
    width_multiple: int = 8  # with round_widths: hardware-friendly widths (CPU/GPU kernels prefer multiples)

    def multiple(self) -> int:
        """The width multiple the selection rules use (1: widths as the rule leaves them)."""
        if self.width_multiple < 1:
            raise ValueError(f"prune.width_multiple must be >= 1, got {self.width_multiple}")
        return self.width_multiple if self.round_widths else 1


@dataclass
class RuntimeConfig:
    """How a run computes, not what it learns (deap_lib.engine.precision); resolved per device and recorded
    in metrics.json ``runtime``."""

    precision: str = "auto"  # "auto" | "fp32" | "bf16" | "fp16" (CUDA; "auto" on CUDA follows ``amp``)
    channels_last: str = "auto"  # "auto" (= "on") | "on" | "off" | "inference" (the teacher and evaluations only)
    fold_teacher: bool = True  # the frozen teacher runs BN-folded (eval-mode BN only; same outputs)
    #: the folded teacher as a frozen TorchScript graph (deap_lib.models.frozen): "auto" (= "on" on CPU, "off"
    #: on CUDA, where it has not been measured) | "on" | "off"
    freeze_teacher: str = "auto"


@dataclass
class RunConfig:
    method: str = "deap"
    preset: str = "paper"
    seed: int = 2021
    device: str = "auto"
    amp: bool = True  # CUDA float16 autocast under runtime.precision="auto"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    student_init: str = "imagenet"  # "imagenet" | "random" | "pretrain" (see presets)
    pretrained_path: Optional[str] = None
    teacher_path: Optional[str] = None
    teacher_bn_mode: str = "eval"  # "eval" (correct) | "train" (released code's quirk)
    eval_every: int = 0  # evaluate every N epochs (0: only at the end)
    notes: str = ""
    #: the method's own settings (``args.<key>=value``), checked against its ``Args`` dataclass when the
    #: method is built: a new method brings its keys in its own file, not here
    args: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def copy(self, **overrides: Any) -> "RunConfig":
        new = copy.deepcopy(self)
        apply_overrides(new, overrides)
        return new


def _fields(obj: Any) -> Dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Convert ``value`` (possibly a string from the command line) to the type of ``current``."""
    if isinstance(value, str) and not isinstance(current, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            if current is not None:
                raise ValueError(f"config key '{key}': cannot parse {value!r} as {type(current).__name__}")
    if isinstance(current, bool) and not isinstance(value, bool):
        raise ValueError(f"config key '{key}': expected a bool, got {value!r}")
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, list) and (isinstance(current, tuple) or (current is None and key.endswith("_size"))):
        value = tuple(value)
    if current is not None and value is not None and not isinstance(value, type(current)):
        raise ValueError(f"config key '{key}': expected {type(current).__name__}, got {value!r}")
    return value


def _literal(value: Any) -> Any:
    """A command-line string parsed as a Python literal when it is one (``"0.5"`` -> 0.5), else kept."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def apply_overrides(cfg: Any, overrides: Dict[str, Any], prefix: str = "") -> Any:
    """Set ``cfg`` fields from a flat ``{"optim.lr": 0.1}`` or nested ``{"optim": {"lr": 0.1}}`` dict."""
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        fields = _fields(cfg)
        full = prefix + head
        if head not in fields:
            raise KeyError(f"unknown config key '{full}'; valid keys here: {', '.join(sorted(fields))}")
        current = getattr(cfg, head)
        if isinstance(current, dict):  # a free-form section (``args``): checked by whoever reads it
            if rest:
                current[rest] = _literal(value)
            elif isinstance(value, dict):
                current.clear()
                current.update({str(k): _literal(v) for k, v in value.items()})
            else:
                raise ValueError(f"config key '{full}' is a section; give a dict or '{full}.<key>=value'")
        elif dataclasses.is_dataclass(current):
            if rest:
                apply_overrides(current, {rest: value}, full + ".")
            elif isinstance(value, dict):
                apply_overrides(current, value, full + ".")
            else:
                raise ValueError(f"config key '{full}' is a section; give a dict or '{full}.<key>=value'")
        else:
            if rest:
                raise KeyError(f"config key '{full}' is not a section; cannot set '{key}'")
            setattr(cfg, head, _coerce(value, current, full))
    return cfg


def config_from_dict(d: Dict[str, Any]) -> RunConfig:
    """Strictly rebuild a RunConfig from :meth:`RunConfig.to_dict` output."""
    return apply_overrides(RunConfig(), d)


def parse_set_args(items: Iterable[str]) -> Dict[str, str]:
    """``["optim.lr=0.1", "seed=3"]`` -> ``{"optim.lr": "0.1", "seed": "3"}``."""
    out: Dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def hr_size(cfg: "RunConfig") -> Tuple[int, int]:
    """The teacher's (high-resolution) input of a run config: ``data.hr_size``, else ``model.input_size``."""
    size = cfg.data.hr_size if cfg.data.hr_size is not None else cfg.model.input_size
    size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"config key 'data.hr_size' must be (H, W) with positive ints, got {cfg.data.hr_size!r}")
    return size  # type: ignore[return-value]


def is_paired(cfg: "RunConfig") -> bool:
    """True when the run's student sees an LR view of an HR-augmented image (``data.hr_size`` set and not
    equal to ``model.input_size``; :mod:`deap_lib.resolution`)."""
    return hr_size(cfg) != tuple(int(v) for v in cfg.model.input_size)


def lr_size(hr: Sequence[int], scale: float) -> Tuple[int, int]:
    """round(HR x s) per side for a scale s in (0, 1]; an error when a side rounds to zero pixels (every
    stage's feature map would be empty)."""
    hr = tuple(int(v) for v in hr)
    if not 0 < float(scale) <= 1:
        raise ValueError(f"resolution scale must be in (0, 1], got {scale}")
    size = tuple(int(round(v * float(scale))) for v in hr)
    if min(size) < 1:
        raise ValueError(f"scale {scale} of the HR input {hr[0]}x{hr[1]} gives an input of {size[0]}x{size[1]}: "
                         f"the stem's and every stage's feature map would be empty; the smallest usable scale "
                         f"here is {1 / (2 * min(hr)):.4g} (one pixel)")
    return size  # type: ignore[return-value]


def scale_of(lr: Sequence[int], hr: Sequence[int]) -> float:
    """The linear scale s of an LR size against an HR size: sqrt of the pixel ratio (exact for one scale
    per side)."""
    return math.sqrt((lr[0] * lr[1]) / (hr[0] * hr[1]))


def run_config_diff(saved: Dict[str, Any], current: "RunConfig") -> Dict[str, Tuple[Any, Any]]:
    """Differences between a finished run's saved config and ``current``; a key the library gained after the
    run was made counts only when ``current`` sets it away from its default (so adding an option does not
    invalidate the runs made before it)."""
    return config_diff(saved, current.to_dict(), added_defaults=RunConfig().to_dict())


# ---------------------------------------------------------------------------------------- comparison
_MISSING = "<missing>"


def _flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(cfg, Mapping):
        out: dict[str, Any] = {}
        for k, v in cfg.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            out.update(_flatten(v, key) if isinstance(v, Mapping) and v else {key: _normalise(v)})
        return out
    return {prefix: _normalise(cfg)}


def _normalise(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_normalise(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _normalise(x) for k, x in v.items()}
    if isinstance(v, Path):
        return str(v)
    return v


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any], *,
                added_defaults: Optional[Mapping[str, Any]] = None) -> dict[str, tuple[Any, Any]]:
    """``{dotted.key: (value_in_a, value_in_b)}`` for every leaf that differs (``"<missing>"`` if absent).

    Nested dicts are compared leaf by leaf; tuples and lists compare equal when their items do.
    ``added_defaults``: a key missing from ``a`` (a config saved before the key existed) is no difference
    when ``b`` holds it at its value there (the default).
    """
    fa, fb = _flatten(a), _flatten(b)
    fd = _flatten(added_defaults) if added_defaults else {}
    diff = {}
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, _MISSING), fb.get(key, _MISSING)
        if va is _MISSING and key in fd and vb == fd[key]:
            continue
        if va != vb:
            diff[key] = (va, vb)
    return diff
