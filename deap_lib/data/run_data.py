"""The data of one run: its dataset and loaders, built from a :class:`~deap_lib.config.RunConfig`."""
from __future__ import annotations

from typing import Iterator

from torch import Tensor

from .datasets import build_dataset
from .loaders import build_test_loader, build_train_loader
from .transforms import TransformConfig
from ..resolution import hr_size, is_paired


def transform_config(cfg, size=None) -> TransformConfig:
    """The train / test transform settings of a run config (input size, flip, pad, random erasing); ``size``:
    another input size than ``model.input_size`` (the HR view of paired views)."""
    d = cfg.data
    return TransformConfig(size=tuple(size or cfg.model.input_size), flip_p=d.flip_p, pad=d.pad, erase_p=d.re_prob,
                           erase_fill=d.re_fill)


class RunData:
    """The dataset of a run config and its loaders: ``train`` (P x K, augmented; each of ``world_size``
    ranks gets its slice of every global batch), ``query`` / ``gallery`` and ``train_plain`` (training
    images without augmentation, for BN re-calibration after a cut). With ``data.hr_size`` set apart from
    ``model.input_size``, training batches are paired views ``(lr, pid, camid, index, hr)``
    (:mod:`deap_lib.resolution`); the test loaders stay at ``model.input_size``. A synthetic set named by
    ``data.synthetic`` is generated at ``data.root`` when missing."""

    def __init__(self, cfg, *, rank: int = 0, world_size: int = 1):
        d = cfg.data
        if d.synthetic:
            from .synthetic import ensure_synthetic

            ensure_synthetic(d.root, d.synthetic)
        self.dataset = build_dataset(d.dataset, d.root)
        tcfg = transform_config(cfg)
        #: paired views: the student's LR view of every HR-augmented image, the HR one for the teacher
        self.paired = is_paired(cfg)
        train_tcfg = transform_config(cfg, size=hr_size(cfg)) if self.paired else tcfg
        self.train = build_train_loader(self.dataset, batch_size=d.ids_per_batch * d.num_instances,
                                        num_instances=d.num_instances, transform_cfg=train_tcfg,
                                        num_workers=d.num_workers, seed=cfg.seed, num_replicas=world_size,
                                        rank=rank, cache=d.cache_images,
                                        lr_size=tuple(cfg.model.input_size) if self.paired else None)
        kw = dict(transform_cfg=tcfg, batch_size=d.test_batch_size, num_workers=d.num_workers,
                  cache=d.cache_images)
        self.query = build_test_loader(self.dataset.query, **kw)
        self.gallery = build_test_loader(self.dataset.gallery, **kw)
        self.train_plain = build_test_loader(self.dataset.train, **kw)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_train_pids

    def recalib_batches(self, n: int) -> Iterator[Tensor]:
        """The images of the first ``n`` un-augmented training batches."""
        for i, batch in enumerate(self.train_plain):
            if i >= n:
                return
            yield batch[0]
