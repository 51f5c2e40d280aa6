"""Image dataset and train / test DataLoaders."""
from __future__ import annotations

import random
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .datasets import ReIDDataset
from .sampler import RandomIdentitySampler
from .transforms import PairedViews, TransformConfig, build_transforms


class ImageReadError(OSError):
    """An image file is missing, truncated or not an image."""


def read_image(path: str) -> Image.Image:
    """Open ``path`` as RGB, raising ``ImageReadError`` that names the file."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError as e:
        raise ImageReadError(f"image file not found: '{path}'") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"cannot read image '{path}' (corrupt or not an image): {type(e).__name__}: {e}") from e


class ImageDataset(Dataset):
    """``items[i] = (path, pid, camid)`` -> ``(image, pid, camid, i)``; with a transform that returns paired
    views ``(lr, hr)``, ``(lr, pid, camid, i, hr)``.

    The key may also be ``(i, sample_seed)`` (``RandomIdentitySampler(with_seeds=True)``): the
    transform then runs under a torch RNG seeded with ``sample_seed`` (the caller's RNG state is
    restored afterwards), so augmentations do not depend on worker count or iteration history.

    ``cache="decoded"`` keeps every decoded image in memory after its first read (the transform still runs
    on each access, so augmentations are unchanged); ``cache="output"`` keeps the transformed sample, for a
    deterministic (test) transform only. Each loader worker holds its own cache.
    """

    CACHES = ("", "decoded", "output")

    def __init__(self, items: Sequence[Tuple[str, int, int]], transform: Optional[Callable] = None,
                 cache: str = ""):
        if cache not in self.CACHES:
            raise ValueError(f"ImageDataset cache must be one of {self.CACHES}, got {cache!r}")
        self.items = list(items)
        self.transform = transform
        self.cache = cache
        self._store: dict = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Union[int, Tuple[int, int]]):
        index, sample_seed = (key if isinstance(key, tuple) else (key, None))
        path, pid, camid = self.items[index][:3]
        if self.cache == "output" and index in self._store:
            return self._store[index], int(pid), int(camid), int(index)
        if self.cache == "decoded":
            img = self._store.get(index)
            if img is None:
                img = self._store[index] = read_image(path)
        else:
            img = read_image(path)
        if self.transform is not None:
            if sample_seed is None:
                img = self.transform(img)
            else:
                with torch.random.fork_rng(devices=[]):
                    # the CPU generator only: torch.manual_seed would also queue a lazy CUDA seeding per
                    # image (with a stack capture), ~40 % of the loading time of a 64 px batch
                    torch.default_generator.manual_seed(int(sample_seed))
                    img = self.transform(img)
        if self.cache == "output":
            self._store[index] = img
        if isinstance(img, tuple):  # paired views (deap_lib.data.transforms.PairedViews): (lr, ..., hr)
            return img[0], int(pid), int(camid), int(index), img[1]
        return img, int(pid), int(camid), int(index)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed ``random`` and numpy from the worker's torch seed."""
    s = torch.initial_seed() % 2 ** 32
    random.seed(s)
    np.random.seed(s)


def _items(dataset) -> list:
    return list(dataset.train) if isinstance(dataset, ReIDDataset) else list(dataset)


def build_train_loader(dataset, *, batch_size: int, num_instances: int,
                       transform_cfg: Union[TransformConfig, dict, None] = None, num_workers: int = 0, seed: int = 0,
                       num_replicas: int = 1, rank: int = 0, pin_memory: bool = False,
                       cache: bool = False, lr_size: Optional[Tuple[int, int]] = None) -> DataLoader:
    """P x K training loader over ``dataset.train`` (or a list of items).

    ``batch_size`` is the global P * K; each of ``num_replicas`` ranks gets ``batch_size / num_replicas``.
    Augmentations are seeded per sample from ``(seed, epoch, position)``: call
    ``loader.sampler.set_epoch(e)`` every epoch; results are identical for any ``num_workers``.
    ``cache``: keep the decoded images in memory (same batches, no re-decoding from the second epoch on).
    ``lr_size``: paired views: ``transform_cfg`` augments at HR and each sample also carries its LR view
    (:class:`~deap_lib.data.transforms.PairedViews`); batches are ``(lr, pid, camid, index, hr)``.
    """
    items = _items(dataset)
    sampler = RandomIdentitySampler(items, num_instances, batch_size, seed, num_replicas=num_replicas, rank=rank,
                                    with_seeds=True)
    transform = build_transforms(transform_cfg, train=True)
    if lr_size is not None:
        transform = PairedViews(transform, lr_size)
    ds = ImageDataset(items, transform, cache="decoded" if cache else "")
    return DataLoader(ds, batch_size=batch_size // num_replicas, sampler=sampler, num_workers=num_workers,
                      drop_last=True, pin_memory=pin_memory, worker_init_fn=seed_worker,
                      generator=torch.Generator().manual_seed(int(seed)),
                      persistent_workers=False)


def build_test_loader(items, *, transform_cfg: Union[TransformConfig, dict, None] = None, batch_size: int = 128,
                      num_workers: int = 0, pin_memory: bool = False, cache: bool = False) -> DataLoader:
    """Deterministic loader in item order (e.g. ``dataset.query + dataset.gallery``); ``cache``: keep the
    transformed images in memory (the test transform is deterministic), for repeated evaluations."""
    ds = ImageDataset(list(items), build_transforms(transform_cfg, train=False), cache="output" if cache else "")
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, drop_last=False,
                      pin_memory=pin_memory, worker_init_fn=seed_worker)
