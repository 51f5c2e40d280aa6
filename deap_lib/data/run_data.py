"""The data of one run: its dataset and loaders, built from a :class:`~deap_lib.config.RunConfig`."""
from __future__ import annotations

from typing import Iterator

from torch import Tensor

from .batched import ImageCache, build_batched_test_loader, build_batched_train_loader
from .datasets import build_dataset
from .loaders import build_test_loader, build_train_loader
from .transforms import TransformConfig
from ..config import hr_size, is_paired


#: the training / test data pipelines (``data.pipeline``): the same images for the same seed
PIPELINES = ("batched", "per_image")


def transform_config(cfg, size=None) -> TransformConfig:
    """The train / test transform settings of a run config (input size, flip, pad, random erasing); ``size``:
    another input size than ``model.input_size`` (the HR view of paired views)."""
    d = cfg.data
    return TransformConfig(size=tuple(size or cfg.model.input_size), flip_p=d.flip_p, pad=d.pad, erase_p=d.re_prob,
                           erase_fill=d.re_fill)


class RunData:
    """The dataset of a run config and its loaders: ``train`` (P x K, augmented; each of ``world_size``
    ranks gets its slice of every global batch), ``query`` / ``gallery`` and ``train_plain`` (training
    images without augmentation, for BN re-calibration after a cut), and ``val_query`` / ``val_gallery``: the
    validation split (the query / gallery of the set at ``data.val_root``; None without one). With
    ``data.hr_size`` set apart from
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
        if d.pipeline not in PIPELINES:
            raise ValueError(f"unknown data.pipeline {d.pipeline!r}; valid: {', '.join(PIPELINES)}")
        train_kw = dict(batch_size=d.ids_per_batch * d.num_instances, num_instances=d.num_instances,
                        transform_cfg=train_tcfg, num_workers=d.num_workers, seed=cfg.seed, num_replicas=world_size,
                        rank=rank, lr_size=tuple(cfg.model.input_size) if self.paired else None)
        kw = dict(transform_cfg=tcfg, batch_size=d.test_batch_size, num_workers=d.num_workers)
        splits = {"train": self.dataset.train, "query": self.dataset.query, "gallery": self.dataset.gallery}
        if d.pipeline == "batched":
            caches = self._caches(splits, tcfg, train_tcfg, eager=d.cache_images)
            self.train = build_batched_train_loader(self.dataset.train, cache=caches["train_aug"], **train_kw)
            self.query = build_batched_test_loader(self.dataset.query, cache=caches["query"], **kw)
            self.gallery = build_batched_test_loader(self.dataset.gallery, cache=caches["gallery"], **kw)
            self.train_plain = build_batched_test_loader(self.dataset.train, cache=caches["train"], **kw)
        else:
            self.train = build_train_loader(self.dataset, cache=d.cache_images, **train_kw)
            self.query = build_test_loader(self.dataset.query, cache=d.cache_images, **kw)
            self.gallery = build_test_loader(self.dataset.gallery, cache=d.cache_images, **kw)
            self.train_plain = build_test_loader(self.dataset.train, cache=d.cache_images, **kw)
        self.val_dataset = self.val_query = self.val_gallery = None
        if d.val_root:
            if d.val_synthetic:
                from .synthetic import ensure_synthetic

                ensure_synthetic(d.val_root, d.val_synthetic)
            self.val_dataset = build_dataset(d.dataset, d.val_root)
            for name in ("query", "gallery"):
                items = getattr(self.val_dataset, name)
                loader = (build_batched_test_loader(items, cache=ImageCache([it[0] for it in items], tcfg.size,
                                                                            tcfg.interpolation, eager=d.cache_images),
                                                    **kw)
                          if d.pipeline == "batched" else build_test_loader(items, cache=d.cache_images, **kw))
                setattr(self, f"val_{name}", loader)

    @staticmethod
    def _caches(splits, tcfg: TransformConfig, train_tcfg: TransformConfig, *, eager: bool) -> dict:
        """One :class:`ImageCache` per split at the test size (``train``: the un-augmented training images), and
        ``train_aug`` at the training transform's size (the same object as ``train`` unless the views are
        paired at another size)."""
        out = {name: ImageCache([it[0] for it in items], tcfg.size, tcfg.interpolation, eager=eager)
               for name, items in splits.items()}
        same = tuple(train_tcfg.size) == tuple(tcfg.size) and train_tcfg.interpolation == tcfg.interpolation
        out["train_aug"] = out["train"] if same else ImageCache(
            [it[0] for it in splits["train"]], train_tcfg.size, train_tcfg.interpolation, eager=eager)
        return out

    @property
    def has_val(self) -> bool:
        return self.val_query is not None

    def eval_split(self) -> tuple:
        """``(name, query, gallery)`` of the split that periodic evaluations and probes read: ``"val"`` where the
        run has a validation split, else ``"test"``."""
        if self.has_val:
            return "val", self.val_query, self.val_gallery
        return "test", self.query, self.gallery

    @property
    def num_classes(self) -> int:
        return self.dataset.num_train_pids

    def recalib_batches(self, n: int) -> Iterator[Tensor]:
        """The images of the first ``n`` un-augmented training batches."""
        for i, batch in enumerate(self.train_plain):
            if i >= n:
                return
            yield batch[0]
