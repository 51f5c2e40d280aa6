"""Presets: complete :class:`~deap_lib.config.RunConfig` defaults for a scale of study.

* ``paper``: METHODS 1.6 exactly (ResNet-101, 256x256, P16 x K6, 90 epochs, SGD 0.01, AMP, seed 2021,
  ImageNet initialisation from a local torchvision file) - for GPU users with VeRi-776.
* ``cpu``: the default study on the embedded synthetic dataset, sized for a 2-core CPU (see the
  docstring of :data:`CPU_NOTES`).
* ``quick``: tiny nets and data for tests and smoke runs (seconds).
"""
from __future__ import annotations

from typing import Callable, Dict

from ..config import DataConfig, LossConfig, ModelConfig, OptimConfig, PruneConfig, RunConfig
from ..registry import Registry

PRESETS: Registry = Registry("preset")

#: Generator settings of the embedded synthetic datasets (``DataConfig.synthetic`` names one).
SYNTHETIC: Dict[str, Dict] = {
    "default": {},  # SyntheticConfig's documented default: 180 train ids, 300 test ids, 128 px
    "tiny": dict(num_train_ids=8, num_test_ids=6, train_images_per_id=(4, 6), cameras_per_id=(2, 3),
                 test_images_per_camera=(2, 2), image_size=32, supersample=1),
}


def ensure_synthetic(root: str, name: str, seed: int = 0):
    """Generate synthetic dataset ``name`` at ``root``; a complete set made with the same settings is reused
    (``make_synthetic_veri`` checks seed, config and generator version and refuses to overwrite another)."""
    from ..data import SyntheticConfig, make_synthetic_veri

    if name not in SYNTHETIC:
        raise KeyError(f"unknown synthetic dataset '{name}'; valid names: {', '.join(sorted(SYNTHETIC))}")
    return make_synthetic_veri(root, seed=seed, config=SyntheticConfig(**SYNTHETIC[name]))

CPU_NOTES = """cpu preset: how the paper's recipe was scaled down (METHODS 8.1) - calibration in progress
* Architecture: teacher and student share it, as in the paper: ResNet-50 at width 0.25 (bottleneck planes
  16/32/64/128), last stride 1, ClassBlock head with a 128-d embedding, 128x128 input (stage-3/4 maps 8x8,
  as METHODS 8.1 recommends for ARKD). Resolution is the strongest lever measured: 15-epoch probes on the
  default data scored 34.9 % mAP at 64 px and 53.7 % at 128 px.
* Schedule: warm-up / flat / cosine phases at the paper's fractions (10/90, 40/90) of the run; students
  30 epochs, the teacher 60 (trained once, cached, to convergence). Batch P8 x K4 = 32: from a random
  initialisation the number of optimizer steps is the bottleneck (a 40-epoch 64 px teacher scored 33.7 % mAP
  with P8 x K4 against 24.9 % with P16 x K4 on the same data).
* Sparsity pressure: the paper's lambda = 0.003 is calibrated to ~35,000 iterations; the cpu run has a few
  thousand, so lambda is raised and the pruner-norm histogram is logged per epoch. The cut uses the paper's
  absolute 1e-3 threshold followed by BatchNorm re-calibration on training images.
* Initialisation (stand-in for ImageNet): random He initialisation for every network, the same seed for
  every method, so comparisons are fair.
"""


def paper() -> RunConfig:
    return RunConfig(
        preset="paper", seed=2021, amp=True,
        model=ModelConfig(arch="resnet101", width=1.0, last_stride=1, input_size=(256, 256)),
        data=DataConfig(dataset="veri", root="data/VeRi", num_instances=6, ids_per_batch=16, num_workers=8,
                        test_batch_size=256),
        optim=OptimConfig(epochs=90, lr=0.01),
        loss=LossConfig(), prune=PruneConfig(bn_recalib_batches=0),
        student_init="imagenet", pretrained_path="data/pretrained/resnet101.pth",
    )


def cpu() -> RunConfig:
    return RunConfig(
        preset="cpu", seed=0, amp=True, notes=CPU_NOTES,
        model=ModelConfig(arch="resnet50", width=0.25, last_stride=1, input_size=(128, 128), embed_dim=128),
        data=DataConfig(dataset="veri", root="data/synthetic_veri", synthetic="default", num_instances=4, ids_per_batch=8,
                        num_workers=0, pad=5, test_batch_size=128),
        optim=OptimConfig(epochs=30, lr=0.05),
        loss=LossConfig(lasso1=0.05, lasso2=0.05),
        prune=PruneConfig(threshold=1e-3, bn_recalib_batches=20),
        student_init="random",
    )


def quick() -> RunConfig:
    return RunConfig(
        preset="quick", seed=0, amp=False,
        model=ModelConfig(arch="resnet50", width=0.0625, last_stride=1, input_size=(32, 32), embed_dim=16),
        data=DataConfig(dataset="veri", root="data/synthetic_veri_quick", synthetic="tiny", num_instances=2, ids_per_batch=4,
                        num_workers=0, pad=2, test_batch_size=64),
        optim=OptimConfig(epochs=2, lr=0.05),
        loss=LossConfig(lasso1=0.05, lasso2=0.05),
        prune=PruneConfig(threshold=1e-3, bn_recalib_batches=2),
        student_init="random",
    )


for _name, _fn in (("paper", paper), ("cpu", cpu), ("quick", quick)):
    PRESETS.register(_name, _fn)

#: Per-method defaults on top of a preset. The teacher is trained once and cached, and must be trained to
#: convergence (a teacher trained exactly like the plain student, with the same seed, *is* that student);
#: the paper's teacher script is not released (METHODS 6.1), so its longer schedule is our choice.
METHOD_DEFAULTS: Dict[str, Dict[str, Dict]] = {
    "cpu": {"teacher": {"optim.epochs": 60}},
    "quick": {"teacher": {"optim.epochs": 3}},
}


def get_preset(name: str, method: str = "deap", **overrides) -> RunConfig:
    """A fresh config of preset ``name`` for ``method`` with dotted-key ``overrides``."""
    from ..config import apply_overrides

    cfg = PRESETS.get(name)()
    cfg.method = method
    apply_overrides(cfg, METHOD_DEFAULTS.get(name, {}).get(method, {}))
    return apply_overrides(cfg, overrides)
