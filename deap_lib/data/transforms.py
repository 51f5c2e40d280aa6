"""Train / test image transforms of the DEAP recipe (docs/methods/deap.rst §Training recipe), built from ``TransformConfig``."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Dict, Tuple, Union

import torch
import torchvision.transforms as T
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ERASE_FILLS = ("zero", "imagenet_mean_quirk")


@dataclass
class TransformConfig:
    """Augmentation settings.

    size: (H, W) after resizing. flip_p: horizontal-flip probability. pad: zero padding before the
    random crop back to ``size`` (0 disables pad + crop). erase_p / erase_area / erase_aspect /
    erase_attempts: random erasing (area fraction U(area), aspect U(aspect, 1/aspect), up to
    ``attempts`` tries). erase_fill: "zero" (the mean colour after normalisation; this project's
    default) or "imagenet_mean_quirk" (the raw numbers 0.485/0.456/0.406 written into the normalised
    tensor, as the released code does). mean / std: normalisation. interpolation: resize filter.
    """

    size: Tuple[int, int] = (256, 256)
    flip_p: float = 0.5
    pad: int = 10
    erase_p: float = 0.5
    erase_area: Tuple[float, float] = (0.02, 0.4)
    erase_aspect: float = 0.3
    erase_attempts: int = 100
    erase_fill: str = "zero"
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if isinstance(self.size, int):
            self.size = (self.size, self.size)
        self.size = tuple(int(v) for v in self.size)  # type: ignore[assignment]
        self.erase_area = tuple(self.erase_area)  # type: ignore[assignment]
        self.mean, self.std = tuple(self.mean), tuple(self.std)  # type: ignore[assignment]
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"TransformConfig.size must be (H, W) with positive ints, got {self.size}")
        if self.erase_fill not in ERASE_FILLS:
            raise ValueError(f"TransformConfig.erase_fill must be one of {ERASE_FILLS}, got {self.erase_fill!r}")
        if not 0 < self.erase_aspect <= 1:
            raise ValueError(f"TransformConfig.erase_aspect must be in (0, 1], got {self.erase_aspect}")
        if not 0 < self.erase_area[0] <= self.erase_area[1] <= 1:
            raise ValueError(f"TransformConfig.erase_area must satisfy 0 < lo <= hi <= 1, got {self.erase_area}")
        if self.interpolation not in ("bilinear", "bicubic", "nearest"):
            raise ValueError("TransformConfig.interpolation must be bilinear/bicubic/nearest, "
                             f"got {self.interpolation!r}")

    @classmethod
    def from_any(cls, cfg: Union["TransformConfig", Dict, None]) -> "TransformConfig":
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        if isinstance(cfg, dict):
            valid = {f.name for f in fields(cls)}
            bad = sorted(set(cfg) - valid)
            if bad:
                raise KeyError(f"unknown TransformConfig key(s) {bad}; valid keys: {sorted(valid)}")
            return cls(**cfg)
        raise TypeError(f"expected TransformConfig or dict, got {type(cfg).__name__}")

    def to_dict(self) -> Dict:
        return asdict(self)


class RandomErasing(torch.nn.Module):
    """Random erasing (Zhong et al.) on a normalised (C,H,W) tensor, drawing only from torch's RNG.

    With probability ``p``: up to ``attempts`` times draw an area fraction U(area) and an aspect
    U(aspect, 1/aspect); the first box that fits strictly inside the image is filled with ``value``
    (one number per channel) at a uniform position. Matches reid-strong-baseline's loop.
    """

    def __init__(self, p: float = 0.5, area: Tuple[float, float] = (0.02, 0.4), aspect: float = 0.3,
                 value: Tuple[float, ...] = (0.0, 0.0, 0.0), attempts: int = 100):
        super().__init__()
        self.p, self.area, self.aspect, self.attempts = p, tuple(area), aspect, attempts
        self.value = tuple(float(v) for v in value)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if torch.rand(1).item() >= self.p:
            return img
        c, h, w = img.shape[-3:]
        for _ in range(self.attempts):
            target = h * w * torch.empty(1).uniform_(self.area[0], self.area[1]).item()
            ar = torch.empty(1).uniform_(self.aspect, 1.0 / self.aspect).item()
            eh, ew = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
            if 0 < eh < h and 0 < ew < w:
                y = int(torch.randint(0, h - eh + 1, (1,)).item())
                x = int(torch.randint(0, w - ew + 1, (1,)).item())
                img = img.clone()
                for k in range(c):
                    img[..., k, y:y + eh, x:x + ew] = self.value[k % len(self.value)]
                return img
        return img

    def extra_repr(self) -> str:
        return f"p={self.p}, area={self.area}, aspect={self.aspect}, value={self.value}, attempts={self.attempts}"


def erase_value(cfg: TransformConfig) -> Tuple[float, float, float]:
    """Fill numbers written into the normalised tensor by random erasing."""
    return (0.0, 0.0, 0.0) if cfg.erase_fill == "zero" else IMAGENET_MEAN


def build_transforms(cfg: Union[TransformConfig, Dict, None] = None, train: bool = True) -> T.Compose:
    """Train: Resize -> HFlip -> Pad -> RandomCrop -> ToTensor -> Normalize -> RandomErasing.
    Test: Resize -> ToTensor -> Normalize."""
    cfg = TransformConfig.from_any(cfg)
    interp = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
              "nearest": InterpolationMode.NEAREST}[cfg.interpolation]
    ops = [T.Resize(cfg.size, interpolation=interp)]
    if train:
        if cfg.flip_p > 0:
            ops.append(T.RandomHorizontalFlip(cfg.flip_p))
        if cfg.pad > 0:
            ops += [T.Pad(cfg.pad, fill=0), T.RandomCrop(cfg.size)]
    ops += [T.ToTensor(), T.Normalize(cfg.mean, cfg.std)]
    if train and cfg.erase_p > 0:
        ops.append(RandomErasing(cfg.erase_p, cfg.erase_area, cfg.erase_aspect, erase_value(cfg), cfg.erase_attempts))
    return T.Compose(ops)


def downsample(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear downsampling with antialiasing of a (C, H, W) or (B, C, H, W) tensor to ``size`` (the LR view
    of paired views, :mod:`deap_lib.resolution`)."""
    batched = x.dim() == 4
    y = torch.nn.functional.interpolate(x if batched else x[None], size=tuple(int(v) for v in size),
                                        mode="bilinear", antialias=True, align_corners=False)
    return y if batched else y[0]


class PairedViews:
    """``image -> (lr, hr)``: ``hr_transform`` (the training augmentation at HR) once, then its output
    downsampled to ``lr_size`` (:func:`downsample`)."""

    def __init__(self, hr_transform, lr_size: Tuple[int, int]):
        self.hr_transform, self.lr_size = hr_transform, tuple(int(v) for v in lr_size)

    def __call__(self, img) -> Tuple[torch.Tensor, torch.Tensor]:
        hr = self.hr_transform(img)
        return downsample(hr, self.lr_size), hr

    def __repr__(self) -> str:
        return f"PairedViews(lr_size={self.lr_size}, hr={self.hr_transform!r})"
