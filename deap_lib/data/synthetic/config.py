"""Settings of the synthetic VeRi-format generator (:class:`SyntheticConfig`, its difficulty dial), the run
summary and small random / colour helpers."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

GENERATOR_VERSION = 1
NUM_VERI_IDS = 776

# RNG tags: one independent stream per purpose.
_PLAN, _IDENT, _CAM, _TRACK, _IMAGE, _BACKGROUND = 0, 1, 2, 3, 4, 5

Colour = Tuple[int, int, int]

# Body colours, most frequent first (white/black/silver dominate, as on real roads).
BODY_COLOURS: List[Tuple[str, Colour, float]] = [
    ("white", (226, 228, 230), 0.20), ("black", (30, 31, 35), 0.16), ("silver", (170, 175, 181), 0.13),
    ("grey", (106, 110, 116), 0.10), ("red", (170, 30, 32), 0.09), ("blue", (36, 72, 156), 0.08),
    ("yellow", (222, 182, 44), 0.05), ("green", (42, 110, 62), 0.05), ("brown", (112, 78, 48), 0.05),
    ("orange", (222, 110, 34), 0.04), ("beige", (204, 190, 150), 0.03), ("purple", (96, 50, 120), 0.02),
]
# Saturated colours for stickers, stripes, logos.
VIVID: List[Tuple[str, Colour]] = [
    ("red", (222, 30, 30)), ("orange", (250, 140, 0)), ("yellow", (250, 222, 0)), ("green", (30, 190, 60)),
    ("cyan", (0, 200, 222)), ("blue", (20, 60, 232)), ("magenta", (222, 40, 200)), ("white", (246, 246, 246)),
    ("black", (14, 14, 14)), ("lime", (170, 240, 40)),
]
VEHICLE_TYPES = ("sedan", "suv", "hatchback", "van", "pickup", "truck", "bus")
_TYPE_WEIGHTS = {"sedan": 0.27, "suv": 0.18, "hatchback": 0.12, "van": 0.12, "pickup": 0.08, "truck": 0.13,
                 "bus": 0.10}
_SHAPES = ("circle", "square", "triangle", "diamond", "star", "ring", "bar", "cross")


# Calibration dial end points (SyntheticConfig.at_difficulty). Probe: ResNet-50 x0.25 from scratch, CE-LS +
# triplet, P16 x K4, 15 epochs (~585 iterations), seed-0 set. 64 px input: level ~0.65 -> 15 % mAP, level 0.3 ->
# 28 %; 128 px input: level 0.3 -> 36 % (Rank-1 47 %). Calibrate the cpu-preset teacher on the real run.
DIFFICULTY_EASY: Dict = dict(
    detail_scale=1.6, detail_density=1.6, rotation_deg=0.0, yaw_jitter_deg=4.0, rear_view_prob=(0.0, 0.0),
    view_modes=(1.0, 0.0, 0.0), shift_jitter=0.02, clutter=0.0, occlusion_prob=0.0, colour_cast=0.0,
    brightness_range=(1.0, 1.0), blur_max=0.0, noise_max=0.0, jpeg_quality=(95, 95))
DIFFICULTY_HARD: Dict = dict(
    detail_scale=0.8, detail_density=0.8, rotation_deg=8.0, yaw_jitter_deg=16.0, rear_view_prob=(0.3, 0.7),
    view_modes=(0.4, 0.3, 0.3), shift_jitter=0.07, clutter=0.8, occlusion_prob=0.25, colour_cast=0.16,
    brightness_range=(0.65, 1.3), blur_max=1.0, noise_max=8.0, jpeg_quality=(50, 90))
DEFAULT_DIFFICULTY = 0.2


@dataclass
class SyntheticConfig:
    """Size and difficulty knobs of the synthetic VeRi set (defaults: the CPU-study set).

    Protocol
        num_train_ids / num_test_ids: disjoint identities (<= 776 together, VeRi id range 0001-0776).
        train_images_per_id: (min, max) images of a training identity, spread over its cameras.
        test_images_per_camera: (min, max) images per (test identity, camera); one becomes the query,
            the rest go to the gallery, so min must be >= 2.
        cameras_per_id: (min, max) distinct cameras (out of ``num_cameras``) that see an identity.
    Rendering
        image_size: output side in pixels (square images). supersample: render at this factor, then
            downsample (anti-aliasing).
    Identity cues
        num_shared_colours: body-colour palette size (first n of ``BODY_COLOURS``); small -> many
            identities share type and colour.
        detail_scale: size multiplier of the identity-specific details (stickers, stripes, marks).
        detail_density: multiplier of how many optional details an identity gets.
    Camera nuisances
        rotation_deg: max in-plane rotation. yaw_jitter_deg: per-track std of the viewpoint around the
            camera's mean. elevation_range: camera elevation (deg) range across cameras.
        rear_view_prob: (min, max) over cameras of the chance a track shows the rear instead of the front.
        view_modes: weights of the camera kinds (oblique 25-60 deg, side 70-100 deg, frontal 0-20 deg yaw).
        stretch: 0 keeps the projected aspect, 1 stretches every vehicle box to the square (VeRi crops are
            resized to a square). fill_range: vehicle box size / image side. shift_jitter: box centre
            offset (fraction of the side).
        clutter: 0..1 amount of background structure and passing vehicles.
        occlusion_prob / occlusion_max_frac: chance and max image fraction of a foreground occluder.
        colour_cast: per-camera RGB gain spread. brightness_range: per-camera brightness range.
        blur_max: max per-camera Gaussian blur sigma (output pixels). noise_max: max noise std (0-255).
        jpeg_quality: (min, max) per-camera JPEG quality.
    Calibration: ``SyntheticConfig.at_difficulty(level)`` moves every cue / nuisance knob together
    between ``DIFFICULTY_EASY`` (0) and ``DIFFICULTY_HARD`` (1); the defaults are level 0.2.
    """

    num_train_ids: int = 180
    num_test_ids: int = 300
    train_images_per_id: Tuple[int, int] = (12, 20)
    test_images_per_camera: Tuple[int, int] = (2, 3)
    cameras_per_id: Tuple[int, int] = (3, 8)
    num_cameras: int = 20
    image_size: int = 128
    supersample: int = 2
    vehicle_types: Tuple[str, ...] = VEHICLE_TYPES
    num_shared_colours: int = 10
    # nuisance / cue knobs below: the values of at_difficulty(DEFAULT_DIFFICULTY = 0.2)
    detail_scale: float = 1.44
    detail_density: float = 1.44
    rotation_deg: float = 1.6
    yaw_jitter_deg: float = 6.4
    elevation_range: Tuple[float, float] = (8.0, 35.0)
    rear_view_prob: Tuple[float, float] = (0.06, 0.14)
    view_modes: Tuple[float, float, float] = (0.88, 0.06, 0.06)
    stretch: float = 0.6
    fill_range: Tuple[float, float] = (0.80, 0.95)
    shift_jitter: float = 0.03
    clutter: float = 0.16
    occlusion_prob: float = 0.05
    occlusion_max_frac: float = 0.3
    colour_cast: float = 0.032
    brightness_range: Tuple[float, float] = (0.93, 1.06)
    blur_max: float = 0.2
    noise_max: float = 1.6
    jpeg_quality: Tuple[int, int] = (86, 94)

    @classmethod
    def at_difficulty(cls, level: float, **overrides) -> "SyntheticConfig":
        """One dial for calibration: interpolate every cue / nuisance knob between ``DIFFICULTY_EASY``
        (level 0: large details, one oblique viewpoint kind, no photometric nuisance, no clutter) and
        ``DIFFICULTY_HARD`` (level 1). The default config is level 0.2; ``overrides`` win."""
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"difficulty level must be in [0, 1], got {level}")
        vals: Dict = {}
        for k, a in DIFFICULTY_EASY.items():
            b = DIFFICULTY_HARD[k]
            if isinstance(a, tuple):
                v = tuple(round(x + level * (y - x), 4) for x, y in zip(a, b))
                vals[k] = tuple(int(round(t)) for t in v) if k == "jpeg_quality" else v
            else:
                vals[k] = round(a + level * (b - a), 4)
        return cls(**{**vals, **overrides})

    def __post_init__(self) -> None:
        for f in fields(self):  # JSON round-trips give lists; keep tuples
            v = getattr(self, f.name)
            if isinstance(v, list):
                setattr(self, f.name, tuple(v))
        if self.num_train_ids < 1 or self.num_test_ids < 1:
            raise ValueError("num_train_ids and num_test_ids must be >= 1")
        if self.num_train_ids + self.num_test_ids > NUM_VERI_IDS:
            raise ValueError(f"num_train_ids + num_test_ids = {self.num_train_ids + self.num_test_ids} exceeds the "
                             f"VeRi id range 0001-{NUM_VERI_IDS:04d}")
        if not 2 <= self.num_cameras <= 20:
            raise ValueError(f"num_cameras must be in 2..20 (VeRi cameras c001-c020), got {self.num_cameras}")
        lo, hi = self.cameras_per_id
        if not 2 <= lo <= hi <= self.num_cameras:
            raise ValueError(f"cameras_per_id={self.cameras_per_id}: need 2 <= min <= max <= num_cameras")
        if self.test_images_per_camera[0] < 2 or self.test_images_per_camera[0] > self.test_images_per_camera[1]:
            raise ValueError(f"test_images_per_camera={self.test_images_per_camera}: need 2 <= min <= max "
                             "(one query plus at least one gallery image per camera)")
        if self.train_images_per_id[0] < hi or self.train_images_per_id[0] > self.train_images_per_id[1]:
            raise ValueError(f"train_images_per_id={self.train_images_per_id}: need max cameras_per_id ({hi}) "
                             "<= min <= max")
        if not 1 <= self.num_shared_colours <= len(BODY_COLOURS):
            raise ValueError(f"num_shared_colours must be in 1..{len(BODY_COLOURS)}")
        bad = [t for t in self.vehicle_types if t not in VEHICLE_TYPES]
        if bad or not self.vehicle_types:
            raise ValueError(f"unknown vehicle_types {bad}; valid: {VEHICLE_TYPES}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")


@dataclass
class SyntheticInfo:
    """What ``make_synthetic_veri`` wrote."""

    root: str
    seed: int
    num_train_ids: int
    num_test_ids: int
    num_train_images: int
    num_query_images: int
    num_gallery_images: int
    num_cameras: int
    image_size: int
    factors_csv: str
    seconds: float
    config: Dict = field(default_factory=dict)

    @property
    def paths(self) -> Dict[str, str]:
        r = Path(self.root)
        return {k: str(r / k) for k in ("image_train", "image_query", "image_test")}


# ----------------------------------------------------------------------------------------------
# small helpers

def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *[int(k) for k in keys]]))


def _mix(c: Sequence[float], k: float) -> Colour:
    """Scale a colour by k (k<1 darker), clipped to 0..255."""
    return tuple(int(min(255, max(0, round(v * k)))) for v in c)  # type: ignore[return-value]


def _blend(a: Sequence[float], b: Sequence[float], t: float) -> Colour:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _contrasting(r: np.random.Generator, base: Colour, min_dist: float = 110.0) -> Tuple[str, Colour]:
    ok = [v for v in VIVID if math.dist(v[1], base) >= min_dist]
    name, col = ok[int(r.integers(len(ok)))]
    return name, col


def _pick(r: np.random.Generator, options: Sequence, p: Optional[Sequence[float]] = None):
    if p is not None:
        p = np.asarray(p, dtype=float)
        p = p / p.sum()
    return options[int(r.choice(len(options), p=p))]


