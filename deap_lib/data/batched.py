"""The batched data pipeline (``data.pipeline="batched"``): uint8 images augmented a whole batch at a time.

Every image is decoded and resized once (PIL, as the per-image pipeline does) into a uint8 tensor
(:class:`ImageCache`, all of them up front with ``data.cache_images``, else a batch's images as it is
fetched). A batch is then augmented as tensors: horizontal flip, zero padding + random crop, conversion to
[0, 1], normalisation and random erasing (docs/methods/deap.rst §Training recipe, :mod:`~deap_lib.data.transforms`).

The random parameters of each sample are drawn, in the per-image pipeline's order (flip, crop, erasing),
from a generator seeded with that sample's seed (:class:`~deap_lib.data.sampler.RandomIdentitySampler`
``with_seeds=True``), the same draws torchvision's transforms and :class:`~deap_lib.data.transforms.RandomErasing`
make from the global generator seeded the same way. So a batch is bit for bit the per-image pipeline's
batch (tests/test_batched_data.py), whatever the number of loader workers, and resuming stays exact.
Paired HR/LR views downsample the augmented HR batch (:func:`~deap_lib.data.transforms.downsample`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torchvision.transforms as T
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode

from .loaders import read_image, seed_worker
from .transforms import TransformConfig, downsample, erase_value

_INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
           "nearest": InterpolationMode.NEAREST}


def decode_resized(path: str, size: Tuple[int, int], interpolation: str = "bilinear") -> Tensor:
    """The image at ``path`` resized to ``size`` (H, W) by PIL as ``T.Resize`` does: uint8 (3, H, W)."""
    img = T.Resize(tuple(size), interpolation=_INTERP[interpolation])(read_image(path))
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


class ImageCache:
    """uint8 images (N, 3, H, W) of a list of paths at one size, decoded once each; ``eager``: all of them
    now (shared by loader workers, which fork after it is built), else each on its first use."""

    def __init__(self, paths: Sequence[str], size: Tuple[int, int], interpolation: str = "bilinear",
                 eager: bool = True):
        self.paths, self.size, self.interpolation = list(paths), tuple(int(v) for v in size), interpolation
        self.images = torch.zeros((len(self.paths), 3, *self.size), dtype=torch.uint8)
        self.filled = torch.zeros(len(self.paths), dtype=torch.bool)
        if eager:
            self.fill(range(len(self.paths)))

    def fill(self, indices) -> None:
        for i in indices:
            if not self.filled[i]:
                self.images[i] = decode_resized(self.paths[i], self.size, self.interpolation)
                self.filled[i] = True

    def gather(self, indices: Sequence[int]) -> Tensor:
        """The images of ``indices`` (decoded now where missing), uint8 (B, 3, H, W)."""
        self.fill(indices)
        return self.images[torch.as_tensor(list(indices), dtype=torch.long)]


@dataclass
class SampleParams:
    """One sample's augmentation: ``flip``, crop offsets ``(top, left)`` into the padded image, and the
    erased box ``(y, x, h, w)`` (None: not erased)."""

    flip: bool
    top: int
    left: int
    erase: Optional[Tuple[int, int, int, int]]


def draw_params(cfg: TransformConfig, seed: int) -> SampleParams:
    """A sample's augmentation parameters from a generator seeded with ``seed``, drawn in the per-image
    pipeline's order with its calls (``RandomHorizontalFlip``, ``RandomCrop.get_params``,
    :class:`~deap_lib.data.transforms.RandomErasing`)."""
    g = torch.Generator().manual_seed(int(seed))
    h, w = cfg.size
    flip = bool(torch.rand(1, generator=g) < cfg.flip_p) if cfg.flip_p > 0 else False
    top = left = cfg.pad
    if cfg.pad > 0:
        top = int(torch.randint(0, 2 * cfg.pad + 1, size=(1,), generator=g).item())
        left = int(torch.randint(0, 2 * cfg.pad + 1, size=(1,), generator=g).item())
    erase = None
    if cfg.erase_p > 0 and not torch.rand(1, generator=g).item() >= cfg.erase_p:
        for _ in range(cfg.erase_attempts):
            target = h * w * torch.empty(1).uniform_(cfg.erase_area[0], cfg.erase_area[1], generator=g).item()
            ar = torch.empty(1).uniform_(cfg.erase_aspect, 1.0 / cfg.erase_aspect, generator=g).item()
            eh, ew = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
            if 0 < eh < h and 0 < ew < w:
                y = int(torch.randint(0, h - eh + 1, (1,), generator=g).item())
                x = int(torch.randint(0, w - ew + 1, (1,), generator=g).item())
                erase = (y, x, eh, ew)
                break
    return SampleParams(flip, top, left, erase)


def normalise(images: Tensor, cfg: TransformConfig) -> Tensor:
    """uint8 (B, 3, H, W) -> float32 ``(x / 255 - mean) / std``, with ``ToTensor`` + ``Normalize``'s ops."""
    x = images.to(dtype=torch.get_default_dtype()).div(255)
    mean = torch.as_tensor(cfg.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.as_tensor(cfg.std, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)


def augment_batch(images: Tensor, params: Sequence[SampleParams], cfg: TransformConfig) -> Tensor:
    """The training augmentation of a uint8 batch (B, 3, H, W) at ``cfg.size``: flip, zero pad + crop,
    normalisation, random erasing (fill :func:`~deap_lib.data.transforms.erase_value`); float32."""
    b, c, h, w = images.shape
    if (h, w) != tuple(cfg.size):
        raise ValueError(f"augment_batch: images are {h}x{w}, the transform's size is {cfg.size[0]}x{cfg.size[1]}")
    if len(params) != b:
        raise ValueError(f"augment_batch: {b} images but {len(params)} parameter sets")
    flips = torch.tensor([p.flip for p in params], dtype=torch.bool)
    if bool(flips.any()):
        images = images.clone()
        images[flips] = images[flips].flip(-1)
    if cfg.pad > 0:
        p = cfg.pad
        padded = torch.nn.functional.pad(images, (p, p, p, p))
        images = torch.stack([padded[i, :, q.top:q.top + h, q.left:q.left + w] for i, q in enumerate(params)])
    x = normalise(images, cfg)
    value = erase_value(cfg)
    fill = torch.tensor([value[k % len(value)] for k in range(c)], dtype=x.dtype).view(c, 1, 1)
    for i, q in enumerate(params):
        if q.erase is not None:
            y0, x0, eh, ew = q.erase
            x[i, :, y0:y0 + eh, x0:x0 + ew] = fill
    return x


class BatchedImageDataset(Dataset):
    """``items[i] = (path, pid, camid)`` fetched a batch at a time (``__getitems__``, which the DataLoader
    calls with a batch's keys): ``(images, pids, camids, indices)``, or with ``lr_size`` (paired views)
    ``(lr, pids, camids, indices, hr)``. Keys are indices, or ``(index, sample_seed)`` pairs for training.

    ``train``: augment (:func:`augment_batch`, parameters :func:`draw_params` from each sample's seed);
    else only normalise (the test transform). ``cache``: an :class:`ImageCache` of the items' paths at
    ``cfg.size`` (made here, filled lazily, when None)."""

    def __init__(self, items: Sequence[Tuple[str, int, int]], cfg: Union[TransformConfig, dict, None], *,
                 train: bool, cache: Optional[ImageCache] = None, lr_size: Optional[Tuple[int, int]] = None):
        self.items = list(items)
        self.cfg = TransformConfig.from_any(cfg)
        self.train, self.lr_size = bool(train), (tuple(int(v) for v in lr_size) if lr_size else None)
        if cache is None:
            cache = ImageCache([it[0] for it in self.items], self.cfg.size, self.cfg.interpolation, eager=False)
        if len(cache.paths) != len(self.items) or cache.size != tuple(self.cfg.size):
            raise ValueError(f"BatchedImageDataset: the cache holds {len(cache.paths)} images at {cache.size}, "
                             f"the dataset {len(self.items)} at {tuple(self.cfg.size)}")
        self.cache = cache

    def __len__(self) -> int:
        return len(self.items)

    def __getitems__(self, keys: List[Union[int, Tuple[int, int]]]):
        pairs = [k if isinstance(k, tuple) else (int(k), None) for k in keys]
        index = [int(i) for i, _ in pairs]
        images = self.cache.gather(index)
        if self.train:
            if any(s is None for _, s in pairs):
                raise ValueError("a training batch needs a seed per sample: use RandomIdentitySampler(with_seeds=True)")
            x = augment_batch(images, [draw_params(self.cfg, s) for _, s in pairs], self.cfg)
        else:
            x = normalise(images, self.cfg)
        pids = torch.tensor([int(self.items[i][1]) for i in index], dtype=torch.long)
        camids = torch.tensor([int(self.items[i][2]) for i in index], dtype=torch.long)
        idx = torch.tensor(index, dtype=torch.long)
        if self.lr_size is not None:
            return downsample(x, self.lr_size), pids, camids, idx, x
        return x, pids, camids, idx

    def __getitem__(self, key):
        return tuple(t[0] for t in self.__getitems__([key]))


def collate_batch(batch):
    """The DataLoader's ``collate_fn`` for :class:`BatchedImageDataset`: the batch is already one."""
    return batch


def build_batched_train_loader(items, *, batch_size: int, num_instances: int,
                               transform_cfg: Union[TransformConfig, dict, None] = None, num_workers: int = 0,
                               seed: int = 0, num_replicas: int = 1, rank: int = 0, pin_memory: bool = False,
                               cache: Optional[ImageCache] = None, lr_size: Optional[Tuple[int, int]] = None
                               ) -> DataLoader:
    """:func:`~deap_lib.data.loaders.build_train_loader` on the batched pipeline: the same P x K batches and
    the same images, augmented a batch at a time (``cache``: an :class:`ImageCache` of ``items`` at the
    transform's size)."""
    from .sampler import RandomIdentitySampler

    items = list(items)
    sampler = RandomIdentitySampler(items, num_instances, batch_size, seed, num_replicas=num_replicas, rank=rank,
                                    with_seeds=True)
    ds = BatchedImageDataset(items, transform_cfg, train=True, cache=cache, lr_size=lr_size)
    return DataLoader(ds, batch_size=batch_size // num_replicas, sampler=sampler, num_workers=num_workers,
                      drop_last=True, pin_memory=pin_memory, collate_fn=collate_batch, worker_init_fn=seed_worker,
                      generator=torch.Generator().manual_seed(int(seed)), persistent_workers=False)


def build_batched_test_loader(items, *, transform_cfg: Union[TransformConfig, dict, None] = None,
                              batch_size: int = 128, num_workers: int = 0, pin_memory: bool = False,
                              cache: Optional[ImageCache] = None) -> DataLoader:
    """:func:`~deap_lib.data.loaders.build_test_loader` on the batched pipeline (the same tensors)."""
    ds = BatchedImageDataset(list(items), transform_cfg, train=False, cache=cache)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, drop_last=False,
                      pin_memory=pin_memory, collate_fn=collate_batch, worker_init_fn=seed_worker)
