"""Synthetic vehicle re-ID data in the VeRi-776 release layout.

``make_synthetic_veri(root)`` renders small pseudo-3-D vehicles (extruded side profiles with
textured faces, flat-shaded under a per-camera sun) seen by 20 fixed cameras, and writes::

    root/image_train/  image_query/  image_test/      VVVV_cCCC_FFFFFFFF_0.jpg
    root/name_train.txt  name_query.txt  name_test.txt  (sorted file names, one per line)
    root/factors.csv   (one row per image: split, pid, camera, identity and camera factors)
    root/meta.json     (config, seed, counts, generator version)

so any VeRi-776 parser reads it unchanged.

Identity factors (shared by many vehicles): type / body shape and a body colour from a small palette.
Identity-specific fine details, painted on the 3-D faces so they move consistently with the viewpoint:
licence plate pattern (front and rear), windshield inspection stickers, body stickers, stripes,
roof items, wheel rims, bumper / headlight / grille style, window tint, wear marks, two-tone roofs,
truck cargo liveries and bus liveries.

Camera factors: each camera has a characteristic style (mean viewpoint, elevation, sun, colour cast,
brightness, blur, noise, JPEG quality, background scene) and every image adds jitter (viewpoint,
driving direction = mirror, scale / crop, in-plane rotation, clutter, occluders).

Protocol (VeRi-like): disjoint train / test identities; every identity is seen by several cameras;
``image_query`` holds exactly one image per (test identity, camera) and ``image_test`` (the gallery)
holds the other test images, at least one per (test identity, camera), so every query has a
same-identity gallery image from another camera.

Determinism: every random draw comes from a ``numpy.random.SeedSequence`` keyed by
``(seed, tag, pid, camera, index)``, JPEGs are encoded with a fixed quality and no optimiser, so the
same seed and config give byte-identical files whatever the number of worker processes.
"""
from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

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


# ----------------------------------------------------------------------------------------------
# vehicle geometry: parts are side profiles (x forward, z up, metres) extruded across the width.
# Each edge of a profile gets a label used by the face painters.

@dataclass
class _PartSpec:
    role: str                      # body, cabin, cab, cargo, chassis, bus, roofbox, lightbar, spoiler
    profile: List[Tuple[float, float]]  # counter-clockwise in (x, z)
    labels: List[str]              # one per edge profile[i] -> profile[i+1]
    width: float                   # fraction of the vehicle width
    level: int                     # stacking level (drawn after lower levels)


_GEOMETRY: Dict[str, Dict] = {
    "sedan": dict(L=4.6, W=1.8, wheel_r=0.32, wheels=(1.38, -1.42), parts=[
        ("body", [(-2.3, 0.02), (2.3, 0.02), (2.3, 0.68), (2.05, 0.85), (-2.15, 0.9), (-2.3, 0.78)],
         ["bottom", "front", "nose", "top", "tail", "rear"], 1.0, 0),
        ("cabin", [(-1.6, 0.88), (1.05, 0.86), (0.3, 1.42), (-0.95, 1.43)],
         ["bottom", "front", "top", "rear"], 0.86, 1)]),
    "hatchback": dict(L=4.0, W=1.75, wheel_r=0.30, wheels=(1.2, -1.25), parts=[
        ("body", [(-2.0, 0.02), (2.0, 0.02), (2.0, 0.66), (1.75, 0.84), (-2.0, 0.88)],
         ["bottom", "front", "nose", "top", "rear"], 1.0, 0),
        ("cabin", [(-1.95, 0.86), (0.85, 0.86), (0.15, 1.45), (-1.78, 1.47)],
         ["bottom", "front", "top", "rear"], 0.88, 1)]),
    "suv": dict(L=4.7, W=1.9, wheel_r=0.37, wheels=(1.45, -1.45), parts=[
        ("body", [(-2.35, 0.05), (2.35, 0.05), (2.35, 0.85), (2.1, 1.05), (-2.35, 1.08)],
         ["bottom", "front", "nose", "top", "rear"], 1.0, 0),
        ("cabin", [(-2.3, 1.06), (1.2, 1.05), (0.45, 1.72), (-2.15, 1.74)],
         ["bottom", "front", "top", "rear"], 0.9, 1)]),
    "van": dict(L=4.9, W=1.9, wheel_r=0.33, wheels=(1.6, -1.6), parts=[
        ("body", [(-2.45, 0.03), (2.45, 0.03), (2.45, 0.8), (2.25, 0.98), (-2.45, 1.0)],
         ["bottom", "front", "nose", "top", "rear"], 1.0, 0),
        ("cabin", [(-2.45, 0.98), (2.2, 0.98), (1.3, 1.95), (-2.4, 1.97)],
         ["bottom", "front", "top", "rear"], 0.94, 1)]),
    "pickup": dict(L=5.3, W=1.9, wheel_r=0.38, wheels=(1.7, -1.6), parts=[
        ("body", [(-2.65, 0.06), (2.65, 0.06), (2.65, 0.88), (2.4, 1.05), (-2.65, 1.08)],
         ["bottom", "front", "nose", "top", "rear"], 1.0, 0),
        ("cabin", [(-0.75, 1.06), (1.3, 1.05), (0.55, 1.78), (-0.7, 1.8)],
         ["bottom", "front", "top", "rear"], 0.9, 1)]),
    "truck": dict(L=7.0, W=2.3, wheel_r=0.48, wheels=(2.6, -1.3, -2.45), parts=[
        ("chassis", [(-3.5, 0.15), (3.5, 0.15), (3.5, 1.15), (-3.5, 1.15)],
         ["bottom", "front", "top", "rear"], 1.0, 0),
        ("cab", [(2.05, 1.13), (3.5, 1.13), (3.4, 2.75), (2.1, 2.8)],
         ["bottom", "front", "top", "rear"], 0.96, 1),
        ("cargo", [(-3.5, 1.13), (1.9, 1.13), (1.9, 3.05), (-3.5, 3.05)],
         ["bottom", "front", "top", "rear"], 1.0, 1)]),
    "bus": dict(L=10.5, W=2.5, wheel_r=0.5, wheels=(3.4, -2.9), parts=[
        ("bus", [(-5.25, 0.1), (5.25, 0.1), (5.25, 2.85), (5.0, 3.1), (-5.2, 3.1), (-5.25, 2.9)],
         ["bottom", "front", "nose", "top", "tail", "rear"], 1.0, 0)]),
}


@dataclass
class VehicleIdentity:
    """All identity factors of one vehicle (a pure function of (seed, pid, config))."""

    pid: int
    vtype: str
    colour: str
    rgb: Colour
    dims: Tuple[float, float, float]        # length, width, height scale jitter
    details: Dict = field(default_factory=dict)

    def summary(self) -> Dict[str, str]:
        d = self.details
        return {
            "type": self.vtype, "colour": self.colour, "roof": d["roof"], "stripe": d["stripe"]["style"],
            "n_stickers": str(len(d["stickers"])), "n_windshield_stickers": str(len(d["ws_stickers"])),
            "plate": d["plate"]["colour"], "rims": d["rims"]["colour"], "bumper": d["bumper"],
            "n_wear": str(len(d["wear"])),
        }


def sample_identity(pid: int, *, seed: int = 0, config: Optional[SyntheticConfig] = None) -> VehicleIdentity:
    """Draw the identity factors of vehicle ``pid`` (independent of split and camera)."""
    cfg = config or SyntheticConfig()
    r = _rng(seed, _IDENT, pid)
    types = list(cfg.vehicle_types)
    vtype = _pick(r, types, [_TYPE_WEIGHTS[t] for t in types])
    pal = BODY_COLOURS[: cfg.num_shared_colours]
    cname, crgb, _ = _pick(r, pal, [w for _, _, w in pal])
    rgb = tuple(int(np.clip(v + r.normal(0, 5), 0, 255)) for v in crgb)
    dims = tuple(float(v) for v in r.uniform(0.95, 1.05, 3))
    dens, ds = cfg.detail_density, cfg.detail_scale
    big = vtype in ("truck", "bus")

    def sticker(faces: Sequence[str]) -> Dict:
        cn, cc = _contrasting(r, rgb)
        return dict(face=_pick(r, faces), shape=_pick(r, _SHAPES), colour=cc, colour_name=cn,
                    size=float(r.uniform(0.24, 0.42) * ds * (1.6 if big else 1.0)),
                    u=float(r.uniform(0.2, 0.8)), v=float(r.uniform(0.25, 0.7)))

    n_st = int(min(4, r.poisson(1.3 * dens)))
    stickers = [sticker(("side", "side", "rear", "hood")) for _ in range(n_st)]
    ws = [dict(colour=_pick(r, [(40, 90, 220), (40, 170, 80), (240, 240, 240), (240, 200, 40), (220, 60, 60)]),
               size=float(r.uniform(0.11, 0.16) * ds)) for _ in range(int(r.integers(1, 4)))]
    ws_side = _pick(r, ("left", "right"))
    stripe_style = "none"
    if r.random() < min(1.0, 0.5 * dens):
        stripe_style = _pick(r, ("band", "double", "racing", "swoosh", "lower"))
    sn, sc = _contrasting(r, rgb, 90.0)
    stripe = dict(style=stripe_style, colour=sc, colour_name=sn, z=float(r.uniform(0.35, 0.7)),
                  thick=float(r.uniform(0.07, 0.13) * ds))
    if vtype in ("truck", "bus"):
        roof = _pick(r, ("none", "none", "lightbar", "unit"))
    else:
        roof = _pick(r, ("none", "rack", "box", "sunroof", "lightbar", "antenna"),
                     [0.34 / max(dens, 1e-3), 0.15, 0.15, 0.18, 0.08, 0.1])
    spoiler = vtype in ("sedan", "hatchback") and r.random() < 0.3 * dens
    wear = []
    for _ in range(int(min(3, r.poisson(0.9 * dens)))):
        wear.append(dict(face=_pick(r, ("left", "right", "front", "rear", "top")),
                         kind=_pick(r, ("scuff", "rust", "scratch", "dent")),
                         u=float(r.uniform(0.15, 0.85)), v=float(r.uniform(0.2, 0.8)),
                         size=float(r.uniform(0.18, 0.36) * ds)))
    plate_colour = _pick(r, ("blue", "yellow", "green", "white"), [0.12, 0.7, 0.1, 0.08] if big
                         else [0.68, 0.12, 0.12, 0.08])
    chars = (r.random((7, 5, 3)) < 0.5).tolist()
    details = dict(
        stickers=stickers, ws_stickers=ws, ws_side=ws_side, stripe=stripe, roof=roof, spoiler=bool(spoiler),
        roof_colour=_pick(r, [rgb, (25, 25, 28), (235, 235, 235)], [0.82, 0.12, 0.06]),
        roofbox_colour=_pick(r, [(25, 25, 28), (200, 200, 205), _contrasting(r, rgb)[1]]),
        tint=_pick(r, ("dark", "medium", "light")),
        bumper=_pick(r, ("body", "black", "chrome"), [0.5, 0.35, 0.15]),
        headlights=_pick(r, ("round", "rect", "slim", "angular")),
        grille=_pick(r, ("bars", "mesh", "slot", "big")),
        rims=dict(colour=_pick(r, ("silver", "dark", "gold", "white"), [0.55, 0.25, 0.1, 0.1]),
                  spokes=int(_pick(r, (0, 4, 5, 6, 10)))),
        plate=dict(colour=plate_colour, chars=chars),
        wear=wear,
        spare_wheel=vtype == "suv" and r.random() < 0.35,
        dash_item=r.random() < 0.3,
        exhaust=_pick(r, ("left", "right", "none")),
        cargo_colour=_pick(r, [(236, 236, 236), (40, 80, 170), (220, 120, 30), (40, 120, 60), (180, 180, 186),
                               (170, 35, 35)], [0.4, 0.15, 0.12, 0.11, 0.12, 0.1]),
        logo=dict(shape=_pick(r, _SHAPES), colour=_contrasting(r, (236, 236, 236))[1],
                  u=float(r.uniform(0.3, 0.7)), bars=int(r.integers(1, 4)), size=float(r.uniform(0.75, 1.1) * ds)),
        livery=dict(style=_pick(r, ("band", "wave", "split")), colour=_contrasting(r, rgb, 90.0)[1],
                    sign=_pick(r, [(250, 150, 20), (230, 40, 30), (60, 230, 60)])),
    )
    return VehicleIdentity(pid=pid, vtype=vtype, colour=cname, rgb=rgb,  # type: ignore[arg-type]
                           dims=dims, details=details)


# ----------------------------------------------------------------------------------------------
# textures

_RIM = {"silver": (190, 194, 200), "dark": (55, 57, 60), "gold": (196, 160, 70), "white": (236, 236, 236)}
_PLATE = {"blue": ((28, 70, 190), (240, 240, 240)), "yellow": ((236, 190, 20), (20, 20, 20)),
          "green": ((120, 210, 130), (20, 20, 20)), "white": ((238, 238, 238), (20, 20, 20))}
_TYRE = (24, 24, 26)


class _Tex:
    """An RGB texture addressed in metres (u right, v down)."""

    def __init__(self, wm: float, hm: float, ppm: float, colour: Colour):
        self.ppm, self.wm, self.hm = ppm, wm, hm
        self.img = Image.new("RGB", (max(2, round(wm * ppm)), max(2, round(hm * ppm))), colour)
        self.d = ImageDraw.Draw(self.img)

    def _p(self, u: float, v: float) -> Tuple[float, float]:
        return (u * self.ppm, v * self.ppm)

    def rect(self, u0, v0, u1, v1, fill) -> None:
        a, b = self._p(min(u0, u1), min(v0, v1))
        c, d = self._p(max(u0, u1), max(v0, v1))
        self.d.rectangle([a, b, max(a, c - 1), max(b, d - 1)], fill=fill)

    def poly(self, pts, fill) -> None:
        self.d.polygon([self._p(u, v) for u, v in pts], fill=fill)

    def ellipse(self, cu, cv, ru, rv, fill) -> None:
        a, b = self._p(cu - ru, cv - rv)
        c, d = self._p(cu + ru, cv + rv)
        self.d.ellipse([a, b, max(a, c), max(b, d)], fill=fill)

    def line(self, pts, fill, width_m) -> None:
        self.d.line([self._p(u, v) for u, v in pts], fill=fill, width=max(1, round(width_m * self.ppm)))

    def shape(self, kind: str, cu: float, cv: float, s: float, fill: Colour) -> None:
        h = s / 2
        if kind == "circle":
            self.ellipse(cu, cv, h, h, fill)
        elif kind == "square":
            self.rect(cu - h, cv - h, cu + h, cv + h, fill)
        elif kind == "triangle":
            self.poly([(cu, cv - h), (cu + h, cv + h), (cu - h, cv + h)], fill)
        elif kind == "diamond":
            self.poly([(cu, cv - h), (cu + h, cv), (cu, cv + h), (cu - h, cv)], fill)
        elif kind == "star":
            pts = []
            for i in range(10):
                rr = h if i % 2 == 0 else h * 0.45
                a = -math.pi / 2 + i * math.pi / 5
                pts.append((cu + rr * math.cos(a), cv + rr * math.sin(a)))
            self.poly(pts, fill)
        elif kind == "ring":
            self.ellipse(cu, cv, h, h, fill)
            self.ellipse(cu, cv, h * 0.5, h * 0.5, _mix(fill, 0.25) if sum(fill) > 380 else (235, 235, 235))
        elif kind == "bar":
            self.rect(cu - h * 1.3, cv - h * 0.35, cu + h * 1.3, cv + h * 0.35, fill)
        else:  # cross
            self.rect(cu - h, cv - h * 0.3, cu + h, cv + h * 0.3, fill)
            self.rect(cu - h * 0.3, cv - h, cu + h * 0.3, cv + h, fill)

    def vgradient(self, top: float, bottom: float) -> None:
        a = np.asarray(self.img, dtype=np.float32)
        g = np.linspace(top, bottom, a.shape[0], dtype=np.float32)[:, None, None]
        self.img = Image.fromarray(np.clip(a * g, 0, 255).astype(np.uint8))
        self.d = ImageDraw.Draw(self.img)


def _glass(ident: VehicleIdentity) -> Colour:
    return {"dark": (22, 26, 34), "medium": (46, 58, 74), "light": (78, 96, 116)}[ident.details["tint"]]


def _plate(t: _Tex, ident: VehicleIdentity, cu: float, cv: float, scale: float = 1.0) -> None:
    bg, fg = _PLATE[ident.details["plate"]["colour"]]
    w, h = 0.46 * scale, 0.15 * scale
    t.rect(cu - w / 2, cv - h / 2, cu + w / 2, cv + h / 2, bg)
    cw = w * 0.86 / 7
    for i, ch in enumerate(ident.details["plate"]["chars"]):
        u0 = cu - w * 0.43 + i * cw
        for row in range(5):
            for col in range(3):
                if ch[row][col]:
                    t.rect(u0 + cw * (0.1 + col * 0.27), cv - h * 0.32 + row * h * 0.13,
                           u0 + cw * (0.1 + (col + 1) * 0.27), cv - h * 0.32 + (row + 1) * h * 0.13, fg)


def _lamp(t: _Tex, style: str, cu: float, cv: float, w: float, h: float, fill: Colour, flip: bool) -> None:
    if style == "round":
        t.ellipse(cu, cv, min(w, h) * 0.55, min(w, h) * 0.55, fill)
    elif style == "rect":
        t.rect(cu - w / 2, cv - h / 2, cu + w / 2, cv + h / 2, fill)
    elif style == "slim":
        t.rect(cu - w * 0.6, cv - h * 0.22, cu + w * 0.6, cv + h * 0.22, fill)
    else:  # angular
        s = -1 if flip else 1
        t.poly([(cu - s * w / 2, cv - h / 2), (cu + s * w / 2, cv - h / 4), (cu + s * w / 2, cv + h / 2),
                (cu - s * w / 2, cv + h / 4)], fill)


def _wear(t: _Tex, ident: VehicleIdentity, face: str, base: Colour) -> None:
    for w in ident.details["wear"]:
        if w["face"] != face:
            continue
        cu, cv, s = w["u"] * t.wm, w["v"] * t.hm, w["size"]
        if w["kind"] == "scuff":
            t.ellipse(cu, cv, s * 0.7, s * 0.35, _mix(base, 0.55))
        elif w["kind"] == "rust":
            t.ellipse(cu, cv, s * 0.45, s * 0.4, (120, 62, 30))
            t.ellipse(cu + s * 0.3, cv + s * 0.1, s * 0.25, s * 0.2, (95, 50, 25))
        elif w["kind"] == "scratch":
            t.line([(cu - s, cv - s * 0.2), (cu + s, cv + s * 0.2)], _blend(base, (250, 250, 250), 0.6), 0.03)
            t.line([(cu - s * 0.8, cv), (cu + s * 0.9, cv + s * 0.35)], _blend(base, (250, 250, 250), 0.5), 0.025)
        else:  # dent
            t.ellipse(cu, cv, s * 0.5, s * 0.4, _mix(base, 0.72))
            t.ellipse(cu + s * 0.12, cv + s * 0.08, s * 0.3, s * 0.24, _mix(base, 1.15))


def _stickers(t: _Tex, ident: VehicleIdentity, face: str) -> None:
    for s in ident.details["stickers"]:
        if s["face"] == face:
            t.shape(s["shape"], s["u"] * t.wm, s["v"] * t.hm, s["size"], s["colour"])


def _wheel(t: _Tex, ident: VehicleIdentity, cu: float, cv: float, rr: float) -> None:
    t.ellipse(cu, cv, rr * 1.1, rr * 1.1, (14, 14, 16))
    t.ellipse(cu, cv, rr, rr, _TYRE)
    rim = _RIM[ident.details["rims"]["colour"]]
    t.ellipse(cu, cv, rr * 0.62, rr * 0.62, rim)
    n = ident.details["rims"]["spokes"]
    if n:
        t.ellipse(cu, cv, rr * 0.5, rr * 0.5, _mix(rim, 0.45))
        for i in range(n):
            a = 2 * math.pi * i / n
            t.line([(cu, cv), (cu + rr * 0.58 * math.cos(a), cv + rr * 0.58 * math.sin(a))], rim, rr * 0.16)
    t.ellipse(cu, cv, rr * 0.13, rr * 0.13, _mix(rim, 0.6))


def _paint_side(ident: VehicleIdentity, spec: _PartSpec, geo: Dict, side: str, ppm: float) -> _Tex:
    """Texture of the left (+y) or right (-y) face of a part; u = x - xmin (front at large u)."""
    xs = [p[0] for p in spec.profile]
    zs = [p[1] for p in spec.profile]
    x0, x1, z0, z1 = min(xs), max(xs), min(zs), max(zs)
    d = ident.details
    role = spec.role
    base = ident.rgb
    if role == "cargo":
        base = d["cargo_colour"]
    elif role == "chassis":
        base = (48, 49, 52)
    t = _Tex(x1 - x0, z1 - z0, ppm, base)
    U = lambda x: x - x0  # noqa: E731
    V = lambda z: z1 - z  # noqa: E731
    rr = geo["wheel_r"]
    if role in ("body", "bus"):
        t.rect(0, V(0.22 if role == "body" else 0.45), t.wm, t.hm, _mix(base, 0.45))  # sill / underbody
        t.rect(0, V(z0 + 0.5 * (z1 - z0)), t.wm, V(z0 + 0.47 * (z1 - z0)), _mix(base, 0.8))  # crease line
        if d["bumper"] != "body" and role == "body":
            bc = (32, 32, 34) if d["bumper"] == "black" else (200, 204, 210)
            for xa, xb in ((x1 - 0.28, x1), (x0, x0 + 0.28)):
                t.rect(U(xa), V(0.55), U(xb), V(0.12), bc)
    if role == "body":
        zt = z1
        for xd in (0.9, -0.25):  # door seams + handles
            xd = xd * geo["L"] / 4.6
            t.line([(U(xd), V(zt - 0.02)), (U(xd), V(0.25))], _mix(base, 0.62), 0.018)
            t.rect(U(xd - 0.28), V(zt - 0.12), U(xd - 0.12), V(zt - 0.16), _mix(base, 0.6))
        if d["stripe"]["style"] in ("band", "double", "lower"):
            zz = 0.3 if d["stripe"]["style"] == "lower" else z0 + d["stripe"]["z"] * (z1 - z0)
            th = d["stripe"]["thick"]
            t.rect(0, V(zz + th / 2), t.wm, V(zz - th / 2), d["stripe"]["colour"])
            if d["stripe"]["style"] == "double":
                t.rect(0, V(zz - th), t.wm, V(zz - 1.6 * th), d["stripe"]["colour"])
        elif d["stripe"]["style"] == "swoosh":
            th = d["stripe"]["thick"]
            t.poly([(U(x0 + 0.2), V(0.3)), (U(x1 - 0.4), V(z1 - 0.12)), (U(x1 - 0.4), V(z1 - 0.12 - th * 1.5)),
                    (U(x0 + 0.2), V(0.3 - th))], d["stripe"]["colour"])
    if role == "bus":
        liv = d["livery"]
        t.rect(0, V(2.65), t.wm, V(1.25), _glass(ident))  # window band
        for k in np.arange(x0 + 0.6, x1 - 0.3, 1.15):
            t.rect(U(k), V(2.65), U(k + 0.1), V(1.25), _mix(base, 0.85))
        if liv["style"] == "band":
            t.rect(0, V(1.15), t.wm, V(0.85), liv["colour"])
        elif liv["style"] == "split":
            t.rect(0, V(1.2), t.wm, V(0.45), liv["colour"])
        else:
            pts = [(U(x), V(0.75 + 0.25 * math.sin(x * 1.3))) for x in np.linspace(x0, x1, 24)]
            t.poly(pts + [(t.wm, V(0.45)), (0, V(0.45))], liv["colour"])
        if side == "right":  # doors on the kerb side
            for xd in (x1 - 1.4, -0.2):
                t.rect(U(xd), V(2.7), U(xd + 0.95), V(0.3), _mix(_glass(ident), 1.3))
                t.line([(U(xd + 0.47), V(2.7)), (U(xd + 0.47), V(0.3))], (20, 20, 20), 0.04)
    if role == "cargo":
        logo = d["logo"]
        t.shape(logo["shape"], logo["u"] * t.wm, t.hm * 0.4, min(logo["size"], t.hm * 0.6), logo["colour"])
        for b in range(logo["bars"]):
            t.rect(t.wm * 0.15, t.hm * (0.72 + 0.08 * b), t.wm * (0.85 - 0.15 * b), t.hm * (0.76 + 0.08 * b),
                   _mix(logo["colour"], 0.7))
        t.rect(0, t.hm - 0.08, t.wm, t.hm, _mix(base, 0.6))
    if role == "chassis":
        t.rect(U(-0.5), V(0.95), U(0.7), V(0.45), (182, 184, 188) if side == "left" else (60, 62, 66))
    if role == "cab":
        t.poly([(U(x0 + 0.12), V(2.6)), (U(x1 - 0.18), V(2.6)), (U(x1 - 0.12), V(1.95)), (U(x0 + 0.12), V(1.95))],
               _glass(ident))
        t.line([(U(x0 + 0.1), V(2.65)), (U(x0 + 0.1), V(1.2))], _mix(base, 0.6), 0.03)
        t.rect(U(x1 - 0.05), V(2.3), U(x1), V(1.9), (20, 20, 20))
    if role == "cabin":
        g = _glass(ident)
        pb, pf, tf, tb = spec.profile  # rear-bottom, front-bottom, front-top, rear-top

        def edge_x(a, b, z):  # x on edge a-b at height z
            return a[0] + (b[0] - a[0]) * (z - a[1]) / (b[1] - a[1])

        zb, zt = z0 + 0.06, z1 - 0.06
        rear_p = 0.12 if ident.vtype in ("sedan", "hatchback") else 0.08
        xs_b = [edge_x(pb, tb, zb) + rear_p, edge_x(pf, tf, zb) - 0.1]
        xs_t = [edge_x(pb, tb, zt) + rear_p, edge_x(pf, tf, zt) - 0.1]
        t.poly([(U(xs_b[0]), V(zb)), (U(xs_b[1]), V(zb)), (U(xs_t[1]), V(zt)), (U(xs_t[0]), V(zt))], g)
        t.poly([(U(xs_t[0]), V(zt)), (U(xs_t[1]), V(zt)), (U(xs_t[1]), V(zt - 0.12)),
                (U(xs_t[0]), V(zt - 0.12))], _mix(g, 1.5))  # sky reflection
        n_win = 2 if ident.vtype in ("sedan", "hatchback", "pickup") else 3
        for k in range(1, n_win):
            xm = xs_b[0] + (xs_b[1] - xs_b[0]) * k / n_win
            t.rect(U(xm - 0.05), V(zt + 0.02), U(xm + 0.05), V(zb - 0.02), _mix(base, 0.9))
        t.ellipse(U(xs_b[1] + 0.05), V(zb + 0.02), 0.09, 0.06, _mix(base, 0.5))  # mirror
    if role in ("body", "bus", "chassis"):
        for wx in geo["wheels"]:
            _wheel(t, ident, U(wx * ident.dims[0]), V(rr), rr)
    if role in ("body", "bus", "cargo"):
        _stickers(t, ident, "side")
    _wear(t, ident, side, base)
    if role not in ("chassis",):
        t.vgradient(1.08, 0.9)
    return t


def _paint_strip(ident: VehicleIdentity, spec: _PartSpec, label: str, wm: float, lm: float, ppm: float,
                 x_front: float, x_back: float) -> _Tex:
    """Texture of a strip face: u across the width (viewer's left to right), v from the face's top end.

    ``label`` is front / rear / top / nose / tail. For top faces v runs from x_front to x_back.
    """
    d = ident.details
    role = spec.role
    base = ident.rgb
    if role == "cargo":
        base = d["cargo_colour"]
    elif role == "chassis":
        base = (48, 49, 52)
    elif role == "roofbox":
        base = d["roofbox_colour"]
    elif role == "lightbar":
        base = (240, 236, 200)
    elif role == "cabin" and label == "top":
        base = d["roof_colour"]
    t = _Tex(wm, lm, ppm, base)
    g = _glass(ident)
    stripe = d["stripe"]
    if stripe["style"] == "racing" and role in ("body", "cabin") and not (role == "cabin" and label != "top"):
        for s in (-1, 1):
            c = wm / 2 + s * 0.16
            t.rect(c - stripe["thick"] / 2, 0, c + stripe["thick"] / 2, lm, stripe["colour"])
    hl = d["headlights"]
    if role == "body" and label == "front":
        bc = {"body": _mix(base, 0.9), "black": (32, 32, 34), "chrome": (200, 204, 210)}[d["bumper"]]
        t.rect(0, lm * 0.5, wm, lm, bc)
        t.rect(0, lm - 0.05, wm, lm, (20, 20, 20))
        gw = {"bars": 0.7, "mesh": 0.8, "slot": 0.9, "big": 1.05}[d["grille"]]
        gc = (26, 27, 30)
        t.rect(wm / 2 - gw / 2, lm * 0.12, wm / 2 + gw / 2, lm * 0.42, gc)
        if d["grille"] == "bars":
            for k in range(4):
                t.rect(wm / 2 - gw / 2, lm * (0.15 + 0.07 * k), wm / 2 + gw / 2, lm * (0.17 + 0.07 * k),
                       (120, 122, 126))
        elif d["grille"] == "slot":
            t.rect(wm / 2 - gw / 2, lm * 0.25, wm / 2 + gw / 2, lm * 0.29, (150, 152, 156))
        elif d["grille"] == "mesh":
            for k in np.linspace(wm / 2 - gw / 2, wm / 2 + gw / 2, 8):
                t.line([(k, lm * 0.12), (k, lm * 0.42)], (80, 82, 86), 0.012)
        for s in (0, 1):
            cu = 0.22 if s == 0 else wm - 0.22
            _lamp(t, hl, cu, lm * 0.22, 0.34, 0.16, (238, 240, 230), flip=bool(s))
        _plate(t, ident, wm / 2, lm * 0.66)
        t.rect(0.05, lm * 0.7, 0.25, lm - 0.04, _TYRE)
        t.rect(wm - 0.25, lm * 0.7, wm - 0.05, lm - 0.04, _TYRE)
        _wear(t, ident, "front", base)
    elif role == "body" and label == "rear":
        bc = {"body": _mix(base, 0.9), "black": (32, 32, 34), "chrome": (200, 204, 210)}[d["bumper"]]
        t.rect(0, lm * 0.55, wm, lm, bc)
        t.rect(0, lm - 0.05, wm, lm, (20, 20, 20))
        t.line([(0.1, lm * 0.12), (wm - 0.1, lm * 0.12)], _mix(base, 0.6), 0.02)
        for s in (0, 1):
            cu = 0.22 if s == 0 else wm - 0.22
            _lamp(t, hl, cu, lm * 0.25, 0.36, 0.18, (200, 24, 24), flip=bool(s))
        _plate(t, ident, wm / 2, lm * 0.45)
        if d["exhaust"] != "none":
            cu = 0.4 if d["exhaust"] == "left" else wm - 0.4
            t.ellipse(cu, lm - 0.1, 0.05, 0.04, (10, 10, 10))
        if d["spare_wheel"]:
            t.ellipse(wm / 2, lm * 0.22, 0.3, 0.22, _TYRE)
            t.ellipse(wm / 2, lm * 0.22, 0.2, 0.14, _mix(base, 0.8))
        t.rect(0.05, lm * 0.75, 0.25, lm - 0.04, _TYRE)
        t.rect(wm - 0.25, lm * 0.75, wm - 0.05, lm - 0.04, _TYRE)
        _stickers(t, ident, "rear")
        _wear(t, ident, "rear", base)
    elif role == "body" and label == "top":
        if ident.vtype == "pickup":  # open bed behind the cab
            cab_back = -0.75 * ident.dims[0]
            vb = x_front - cab_back
            t.rect(0.08, vb, wm - 0.08, lm - 0.08, (40, 40, 44))
            for k in np.arange(vb + 0.3, lm - 0.1, 0.3):
                t.line([(0.1, k), (wm - 0.1, k)], (60, 60, 64), 0.02)
        _stickers(t, ident, "hood")
        _wear(t, ident, "top", base)
        t.line([(wm * 0.3, 0.05), (wm * 0.3, 1.0)], _mix(base, 0.85), 0.02)
        t.line([(wm * 0.7, 0.05), (wm * 0.7, 1.0)], _mix(base, 0.85), 0.02)
    elif role == "cabin" and label in ("front", "rear"):
        t.rect(0.06, 0.05, wm - 0.06, lm - 0.06, g)
        t.rect(0.06, 0.05, wm - 0.06, lm * 0.25, _mix(g, 1.45))
        if label == "front":
            n = len(d["ws_stickers"])
            for i, s in enumerate(d["ws_stickers"]):
                sz = s["size"]
                cu = 0.2 + sz / 2 + i * sz * 1.15 if d["ws_side"] == "left" else wm - 0.2 - sz / 2 - i * sz * 1.15
                t.rect(cu - sz / 2, 0.1, cu + sz / 2, 0.1 + sz, s["colour"])
            if n and d["dash_item"]:
                t.ellipse(wm / 2, lm - 0.14, 0.12, 0.06, (220, 60, 140))
        else:
            t.rect(wm / 2 - 0.2, 0.06, wm / 2 + 0.2, 0.1, (210, 20, 20))
    elif role == "cabin" and label == "top":
        if d["roof"] == "sunroof":
            t.rect(wm * 0.22, lm * 0.15, wm * 0.78, lm * 0.55, (20, 22, 28))
        elif d["roof"] == "rack":
            for s in (0.12, wm - 0.12):
                t.line([(s, 0.1), (s, lm - 0.1)], (25, 25, 25), 0.06)
            for k in (0.3, 0.7):
                t.line([(0.12, lm * k), (wm - 0.12, lm * k)], (25, 25, 25), 0.05)
        elif d["roof"] == "antenna":
            t.shape("triangle", wm / 2, lm - 0.15, 0.16, (15, 15, 15))
    elif role == "chassis" and label in ("front", "rear"):
        t.rect(0, 0, wm, lm * 0.5, (70, 72, 76) if label == "front" else (40, 40, 40))
        _plate(t, ident, wm / 2, lm * 0.45)
        for s in (0.25, wm - 0.25):
            t.rect(s - 0.18, lm * 0.2, s + 0.18, lm * 0.35, (240, 200, 120) if label == "front" else (200, 30, 30))
        t.rect(0.1, lm * 0.6, 0.4, lm, _TYRE)
        t.rect(wm - 0.4, lm * 0.6, wm - 0.1, lm, _TYRE)
    elif role == "cab" and label == "front":
        t.rect(0.08, 0.1, wm - 0.08, lm * 0.45, g)
        t.rect(0.08, 0.1, wm - 0.08, lm * 0.16, _mix(g, 1.4))
        for i, s in enumerate(d["ws_stickers"]):
            sz = s["size"] * 1.3
            cu = 0.25 + sz / 2 + i * sz * 1.15 if d["ws_side"] == "left" else wm - 0.25 - sz / 2 - i * sz * 1.15
            t.rect(cu - sz / 2, 0.16, cu + sz / 2, 0.16 + sz, s["colour"])
        gw = {"bars": 1.0, "mesh": 1.2, "slot": 1.3, "big": 1.6}[d["grille"]]
        t.rect(wm / 2 - gw / 2, lm * 0.55, wm / 2 + gw / 2, lm * 0.85, (30, 31, 34))
        for k in range(4):
            t.rect(wm / 2 - gw / 2, lm * (0.58 + 0.07 * k), wm / 2 + gw / 2, lm * (0.6 + 0.07 * k), (110, 112, 116))
        for s in (0, 1):
            _lamp(t, hl, 0.3 if s == 0 else wm - 0.3, lm * 0.8, 0.4, 0.18, (238, 240, 230), flip=bool(s))
        t.shape(d["logo"]["shape"], wm / 2, lm * 0.5, 0.18, d["logo"]["colour"])
    elif role == "cargo" and label == "rear":
        t.rect(0.05, 0.05, wm / 2 - 0.02, lm - 0.05, _mix(base, 0.93))
        t.rect(wm / 2 + 0.02, 0.05, wm - 0.05, lm - 0.05, _mix(base, 0.93))
        for s in (wm / 2 - 0.2, wm / 2 + 0.2):
            t.line([(s, lm * 0.2), (s, lm * 0.8)], (90, 90, 94), 0.04)
        _plate(t, ident, wm / 2, lm * 0.35, scale=2.6)  # painted large number, as on Chinese trucks
        t.rect(0, lm - 0.12, wm, lm, (230, 40, 40))
        _stickers(t, ident, "rear")
        _wear(t, ident, "rear", base)
    elif role == "cargo" and label == "top":
        t.rect(0, 0, wm, lm, _mix(base, 0.9))
    elif role == "bus" and label == "front":
        liv = d["livery"]
        t.rect(0.1, 0.3, wm - 0.1, lm * 0.55, g)
        t.rect(0.3, 0.05, wm - 0.3, 0.28, (18, 18, 18))
        for k in np.arange(0.4, wm - 0.4, 0.12):
            t.rect(k, 0.1, k + 0.07, 0.22, liv["sign"])
        for i, s in enumerate(d["ws_stickers"]):
            sz = s["size"] * 1.4
            cu = 0.3 + sz / 2 + i * sz * 1.15 if d["ws_side"] == "left" else wm - 0.3 - sz / 2 - i * sz * 1.15
            t.rect(cu - sz / 2, 0.4, cu + sz / 2, 0.4 + sz, s["colour"])
        t.rect(0, lm * 0.62, wm, lm * 0.7, liv["colour"])
        for s in (0, 1):
            _lamp(t, hl, 0.35 if s == 0 else wm - 0.35, lm * 0.8, 0.42, 0.2, (238, 240, 230), flip=bool(s))
        _plate(t, ident, wm / 2, lm * 0.88)
    elif role == "bus" and label == "rear":
        liv = d["livery"]
        t.rect(0.2, 0.25, wm - 0.2, lm * 0.3, g)
        t.rect(0.4, lm * 0.5, wm - 0.4, lm * 0.68, _mix(base, 0.7))
        for k in np.arange(lm * 0.52, lm * 0.66, 0.06):
            t.line([(0.45, k), (wm - 0.45, k)], _mix(base, 0.45), 0.02)
        t.rect(0, lm * 0.38, wm, lm * 0.44, liv["colour"])
        for s in (0.25, wm - 0.25):
            t.rect(s - 0.15, lm * 0.7, s + 0.15, lm * 0.82, (200, 24, 24))
        _plate(t, ident, wm / 2, lm * 0.86)
        _stickers(t, ident, "rear")
    elif role == "bus" and label == "top":
        t.rect(0, 0, wm, lm, (200, 202, 206))
        if d["roof"] == "unit":
            t.rect(wm * 0.2, lm * 0.3, wm * 0.8, lm * 0.5, (150, 152, 158))
        t.rect(wm * 0.35, lm * 0.7, wm * 0.65, lm * 0.78, (120, 122, 128))
    elif role == "lightbar":
        t.rect(0, lm * 0.3, wm, lm * 0.7, (250, 220, 60) if ident.vtype in ("truck", "bus") else (250, 250, 240))
    elif role in ("cab",) and label == "top" and d["roof"] == "unit":
        t.rect(wm * 0.2, lm * 0.2, wm * 0.8, lm * 0.6, (150, 152, 158))
    return t


# ----------------------------------------------------------------------------------------------
# 3-D model

@dataclass
class _Face:
    corners: np.ndarray   # (4,3) points whose texture coordinates are tex_pts
    tex_pts: np.ndarray   # (4,2) pixels
    outline: np.ndarray   # (M,3) polygon used as the paint mask
    normal: np.ndarray
    texture: Image.Image
    centre: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        self.centre = self.outline.mean(axis=0)


@dataclass
class _Part:
    faces: List[_Face]
    centroid: np.ndarray
    level: int


def _vehicle_specs(ident: VehicleIdentity) -> Tuple[Dict, List[_PartSpec]]:
    geo = dict(_GEOMETRY[ident.vtype])
    sl, sw, sh = ident.dims
    geo["L"], geo["W"] = geo["L"] * sl, geo["W"] * sw
    geo["wheel_r"] = geo["wheel_r"] * sh
    specs = []
    for role, prof, labels, width, level in geo["parts"]:
        specs.append(_PartSpec(role, [(x * sl, z * sh) for x, z in prof], list(labels), width, level))
    top = max(z for s in specs for _, z in s.profile)
    roof_spec = next((s for s in specs if s.role in ("cabin", "cab", "bus")), specs[0])
    rx = [p[0] for p in roof_spec.profile if abs(p[1] - max(q[1] for q in roof_spec.profile)) < 0.05]
    rx0, rx1 = min(rx), max(rx)
    roof = ident.details["roof"]
    if roof == "box":
        a, b = rx0 + 0.1, rx0 + 0.1 + min(1.5, (rx1 - rx0) * 0.85)
        specs.append(_PartSpec("roofbox", [(a, top), (b, top), (b - 0.12, top + 0.22), (a + 0.05, top + 0.22)],
                               ["bottom", "front", "top", "rear"], 0.5, 2))
    elif roof == "lightbar":
        c = rx1 - 0.25
        specs.append(_PartSpec("lightbar", [(c - 0.15, top), (c + 0.15, top), (c + 0.12, top + 0.13),
                                            (c - 0.12, top + 0.13)], ["bottom", "front", "top", "rear"], 0.75, 2))
    if ident.details["spoiler"]:
        body = specs[0]
        xb = min(p[0] for p in body.profile)
        zb = max(p[1] for p in body.profile if p[0] < xb + 0.3)
        specs.append(_PartSpec("spoiler", [(xb + 0.02, zb), (xb + 0.35, zb), (xb + 0.3, zb + 0.1), (xb, zb + 0.1)],
                               ["bottom", "front", "top", "rear"], 0.9, 1))
    return geo, specs


def build_vehicle_model(ident: VehicleIdentity, ppm: float) -> List[_Part]:
    """Textured 3-D parts of a vehicle (texture resolution ``ppm`` pixels per metre)."""
    geo, specs = _vehicle_specs(ident)
    W = geo["W"]
    parts = []
    for spec in specs:
        w = W * spec.width
        y0, y1 = -w / 2, w / 2
        prof = spec.profile
        xs, zs = [p[0] for p in prof], [p[1] for p in prof]
        x0, x1, z0, z1 = min(xs), max(xs), min(zs), max(zs)
        faces = []
        for side, y, ny in (("left", y1, 1.0), ("right", y0, -1.0)):
            tex = _paint_side(ident, spec, geo, side, ppm)
            tw, th = tex.img.size
            corners = np.array([[x0, y, z1], [x1, y, z1], [x1, y, z0], [x0, y, z0]], dtype=np.float64)
            faces.append(_Face(corners, np.array([[0, 0], [tw, 0], [tw, th], [0, th]], dtype=np.float64),
                               np.array([[x, y, z] for x, z in prof], dtype=np.float64),
                               np.array([0.0, ny, 0.0]), tex.img))
        n = len(prof)
        for i in range(n):
            label = spec.labels[i]
            if label == "bottom":
                continue
            (ax, az), (bx, bz) = prof[i], prof[(i + 1) % n]
            dx, dz = bx - ax, bz - az
            ln = math.hypot(dx, dz)
            if ln < 1e-6:
                continue
            nx, nz = dz / ln, -dx / ln
            if label == "top":
                (tx, tz), (bx2, bz2) = ((ax, az), (bx, bz)) if ax >= bx else ((bx, bz), (ax, az))
            else:
                (tx, tz), (bx2, bz2) = ((ax, az), (bx, bz)) if az >= bz else ((bx, bz), (ax, az))
            ya, yb = (y0, y1) if nx > 0.05 else (y1, y0)  # u = 0 on the viewer's left
            paint_label = label if label in ("front", "rear", "top") else "other"
            tex = _paint_strip(ident, spec, paint_label, w, ln, ppm, x_front=max(ax, bx), x_back=min(ax, bx))
            tw, th = tex.img.size
            corners = np.array([[tx, ya, tz], [tx, yb, tz], [bx2, yb, bz2], [bx2, ya, bz2]], dtype=np.float64)
            faces.append(_Face(corners, np.array([[0, 0], [tw, 0], [tw, th], [0, th]], dtype=np.float64),
                               corners.copy(), np.array([nx, 0.0, nz]), tex.img))
        cen = np.array([(x0 + x1) / 2, 0.0, (z0 + z1) / 2])
        parts.append(_Part(faces, cen, spec.level))
    return parts


# ----------------------------------------------------------------------------------------------
# cameras, tracks and per-image parameters

@dataclass
class _CameraStyle:
    cam: int
    yaw: float
    elev: float
    rear_p: float
    dist: float
    sun: np.ndarray
    ambient: float
    diffuse: float
    gains: np.ndarray
    brightness: float
    contrast: float
    blur: float
    noise: float
    jpeg: int
    road: Colour
    verge: Colour
    lane: Colour
    lane_angle: float


_STYLE_CACHE: Dict[Tuple, "_CameraStyle"] = {}


def camera_style(cam: int, *, seed: int = 0, config: Optional[SyntheticConfig] = None) -> _CameraStyle:
    """The characteristic look of camera ``cam`` (1-based)."""
    cfg = config or SyntheticConfig()
    key = (seed, cam, cfg.elevation_range, cfg.rear_view_prob, cfg.view_modes, cfg.colour_cast, cfg.brightness_range,
           cfg.blur_max, cfg.noise_max, cfg.jpeg_quality)
    if key not in _STYLE_CACHE:
        if len(_STYLE_CACHE) > 256:
            _STYLE_CACHE.clear()
        _STYLE_CACHE[key] = _camera_style(cam, seed, cfg)
    return _STYLE_CACHE[key]


def _camera_style(cam: int, seed: int, cfg: SyntheticConfig) -> _CameraStyle:
    r = _rng(seed, _CAM, cam)
    mode = _pick(r, ("oblique", "side", "frontal"), cfg.view_modes)
    yaw = {"oblique": r.uniform(25, 60), "side": r.uniform(70, 100), "frontal": r.uniform(0, 20)}[mode]
    az, el = r.uniform(0, 2 * math.pi), r.uniform(0.5, 1.2)
    sun = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    road_v = r.uniform(80, 140)
    tint = r.normal(0, 6, 3)
    return _CameraStyle(
        cam=cam, yaw=float(yaw), elev=float(r.uniform(*cfg.elevation_range)),
        rear_p=float(r.uniform(*cfg.rear_view_prob)), dist=float(r.uniform(2.2, 3.6)), sun=sun,
        ambient=float(r.uniform(0.55, 0.7)), diffuse=float(r.uniform(0.3, 0.5)),
        gains=1.0 + r.uniform(-cfg.colour_cast, cfg.colour_cast, 3),
        brightness=float(r.uniform(*cfg.brightness_range)), contrast=float(r.uniform(0.85, 1.15)),
        blur=float(r.uniform(0, cfg.blur_max)), noise=float(r.uniform(min(1.0, cfg.noise_max), cfg.noise_max)),
        jpeg=int(r.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)),
        road=tuple(int(np.clip(road_v + t, 0, 255)) for t in tint),  # type: ignore[arg-type]
        verge=_pick(r, [(70, 110, 55), (150, 148, 140), (120, 100, 80), (95, 100, 110)]),
        lane=_pick(r, [(235, 235, 230), (230, 200, 60)]), lane_angle=float(r.uniform(-0.6, 0.6)),
    )


_BG_CACHE: Dict[Tuple, Image.Image] = {}


def _background_scene(style: _CameraStyle, seed: int, size: int, clutter: float) -> Image.Image:
    """A static scene per camera (road texture, lane marks, verge, static objects), 1.5x the canvas."""
    key = (seed, style.cam, size, round(clutter, 4))
    if key in _BG_CACHE:
        return _BG_CACHE[key]
    r = _rng(seed, _BACKGROUND, style.cam)
    B = int(size * 1.5)
    low = r.normal(0, 1, (6, 6)).astype(np.float32)
    low = np.asarray(Image.fromarray(low, mode="F").resize((B, B), Image.BICUBIC))
    fine = r.normal(0, 1, (B, B)).astype(np.float32)
    base = np.array(style.road, dtype=np.float32)[None, None, :]
    a = base + (8 + 10 * clutter) * low[..., None] + (3 + 6 * clutter) * fine[..., None]
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    # verge / sidewalk along one side, lanes at the camera's angle
    s = math.tan(style.lane_angle)
    off = r.uniform(0.05, 0.25) * B
    d.polygon([(0, 0), (B, 0), (B, off + s * B * 0.3), (0, off - s * B * 0.3)], fill=style.verge)
    d.line([(0, off - s * B * 0.3), (B, off + s * B * 0.3)], fill=(200, 200, 195), width=max(1, B // 80))
    for k in range(1, 3):
        y0 = off + k * B * 0.33
        dashed = r.random() < 0.6
        for xs in np.arange(0, B, B / 8):
            if dashed and int(xs / (B / 8)) % 2:
                continue
            d.line([(xs, y0 + s * (xs - B / 2) * 0.6), (xs + B / 8, y0 + s * (xs + B / 8 - B / 2) * 0.6)],
                   fill=style.lane, width=max(1, B // 60))
    for _ in range(int(round(6 * clutter))):  # static clutter: manholes, patches, shadows, posts
        kind = _pick(r, ("manhole", "patch", "shadow", "post"))
        x, y, rr = r.uniform(0, B), r.uniform(0, B), r.uniform(0.03, 0.1) * B
        if kind == "manhole":
            d.ellipse([x - rr / 2, y - rr / 3, x + rr / 2, y + rr / 3], fill=_mix(style.road, 0.6))
        elif kind == "patch":
            d.rectangle([x, y, x + rr * 1.5, y + rr], fill=_mix(style.road, r.uniform(0.8, 1.2)))
        elif kind == "shadow":
            d.ellipse([x - rr, y - rr * 0.6, x + rr, y + rr * 0.6], fill=_mix(style.road, 0.7))
        else:
            d.rectangle([x, y - rr * 2, x + rr * 0.15, y + rr], fill=(80, 80, 85))
    if len(_BG_CACHE) > 64:
        _BG_CACHE.clear()
    _BG_CACHE[key] = img
    return img


@dataclass
class ImageParams:
    """Every per-image camera factor (also written to factors.csv)."""

    yaw: float
    elevation: float
    rear: bool
    mirror: bool
    rotation: float
    fill: float
    shift_x: float
    shift_y: float
    brightness: float
    contrast: float
    cast_r: float
    cast_g: float
    cast_b: float
    blur: float
    noise: float
    jpeg_quality: int
    occluder: str
    n_passing: int
    frame: int


def image_params(pid: int, cam: int, index: int, *, seed: int = 0,
                 config: Optional[SyntheticConfig] = None) -> ImageParams:
    """Camera factors of image ``index`` of the track of ``pid`` in camera ``cam``."""
    cfg = config or SyntheticConfig()
    st = camera_style(cam, seed=seed, config=cfg)
    tr = _rng(seed, _TRACK, pid, cam)
    rear = bool(tr.random() < st.rear_p)
    mirror = bool(tr.random() < 0.5)
    track_yaw = st.yaw + tr.normal(0, cfg.yaw_jitter_deg)
    track_elev = st.elev + tr.normal(0, 2.0)
    dyaw, dfill = tr.normal(0, 1.5), tr.uniform(-0.03, 0.03)
    fill0 = tr.uniform(*cfg.fill_range)
    start, step = int(tr.integers(0, 90_000_000)), int(tr.integers(3, 30))
    r = _rng(seed, _IMAGE, pid, cam, index)
    yaw = track_yaw + index * dyaw + r.normal(0, 3.0)
    if rear:
        yaw = 180.0 - yaw
    if mirror:
        yaw = -yaw
    yaw = (yaw + 180.0) % 360.0 - 180.0
    fill = float(np.clip(fill0 * (1 + index * dfill) * (1 + r.uniform(-0.06, 0.06)), 0.6, 1.05))
    gains = st.gains * (1 + r.normal(0, 0.02, 3))
    occ = "none"
    if r.random() < cfg.occlusion_prob:
        occ = _pick(r, ("pole", "vehicle", "foliage", "sign"))
    return ImageParams(
        yaw=float(yaw), elevation=float(max(2.0, track_elev + r.normal(0, 1.0))), rear=rear, mirror=mirror,
        rotation=float(r.uniform(-1, 1) * cfg.rotation_deg), fill=fill,
        shift_x=float(r.uniform(-1, 1) * cfg.shift_jitter), shift_y=float(r.uniform(-1, 1) * cfg.shift_jitter),
        brightness=float(st.brightness * (1 + r.normal(0, 0.05))),
        contrast=float(st.contrast * (1 + r.normal(0, 0.03))),
        cast_r=float(gains[0]), cast_g=float(gains[1]), cast_b=float(gains[2]),
        blur=float(max(0.0, st.blur + r.normal(0, 0.12))), noise=float(max(0.0, st.noise * r.uniform(0.7, 1.3))),
        jpeg_quality=int(np.clip(st.jpeg + r.integers(-4, 5), 30, 100)), occluder=occ,
        n_passing=int(r.poisson(1.2 * cfg.clutter)), frame=start + index * step,
    )


# ----------------------------------------------------------------------------------------------
# rendering

def _look_at(yaw: float, elev: float, dist: float, target: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    th, ph = math.radians(yaw), math.radians(elev)
    c = target + dist * np.array([math.cos(ph) * math.cos(th), math.cos(ph) * math.sin(th), math.sin(ph)])
    f = target - c
    f /= np.linalg.norm(f)
    rt = np.cross(f, [0.0, 0.0, 1.0])
    rt /= np.linalg.norm(rt)
    up = np.cross(rt, f)
    return c, np.stack([rt, up, f])


def _passing_vehicle(d: ImageDraw.ImageDraw, r: np.random.Generator, S: int) -> None:
    """A partly visible other vehicle at the image border (background clutter)."""
    col = _pick(r, [c for _, c, _ in BODY_COLOURS])
    w, h = r.uniform(0.3, 0.6) * S, r.uniform(0.25, 0.45) * S
    edge = _pick(r, ("left", "right", "top"))
    if edge == "left":
        x0, y0 = -w * r.uniform(0.5, 0.8), r.uniform(0, S - h)
    elif edge == "right":
        x0, y0 = S - w * r.uniform(0.2, 0.5), r.uniform(0, S - h)
    else:
        x0, y0 = r.uniform(-w / 2, S - w / 2), -h * r.uniform(0.5, 0.8)
    d.rounded_rectangle([x0, y0, x0 + w, y0 + h], radius=S * 0.03, fill=col)
    d.rectangle([x0 + w * 0.25, y0 + h * 0.1, x0 + w * 0.75, y0 + h * 0.4], fill=(30, 34, 40))


def _occluder(img: Image.Image, kind: str, r: np.random.Generator, S: int, max_frac: float) -> None:
    d = ImageDraw.Draw(img)
    if kind == "pole":
        w = r.uniform(0.05, 0.1) * S
        x = r.uniform(0.1, 0.9) * S
        tilt = r.uniform(-0.08, 0.08) * S
        col = _pick(r, [(70, 72, 76), (150, 150, 150), (40, 90, 50)])
        d.polygon([(x, -1), (x + w, -1), (x + w + tilt, S + 1), (x + tilt, S + 1)], fill=col)
        if r.random() < 0.5:  # painted bands
            for k in range(3):
                y = r.uniform(0, S)
                d.polygon([(x, y), (x + w, y), (x + w, y + w), (x, y + w)], fill=(235, 235, 235))
    elif kind == "vehicle":
        frac = r.uniform(0.1, max_frac)
        w, h = S * math.sqrt(frac) * r.uniform(1.0, 1.6), S * math.sqrt(frac) / 1.2
        x0 = -w * 0.3 if r.random() < 0.5 else S - w * 0.7
        y0 = S - h * r.uniform(0.6, 0.9)
        col = _pick(r, [c for _, c, _ in BODY_COLOURS])
        d.rounded_rectangle([x0, y0, x0 + w, y0 + h * 1.5], radius=S * 0.04, fill=col)
        d.rectangle([x0 + w * 0.2, y0 + h * 0.1, x0 + w * 0.8, y0 + h * 0.35], fill=(28, 30, 36))
    elif kind == "foliage":
        cx, cy = (r.uniform(0, 0.25) if r.random() < 0.5 else r.uniform(0.75, 1)) * S, r.uniform(0, 0.4) * S
        rad = math.sqrt(max_frac * r.uniform(0.3, 0.8) / math.pi) * S * 0.7
        for _ in range(7):
            x, y = cx + r.normal(0, rad * 0.6), cy + r.normal(0, rad * 0.6)
            rr = rad * r.uniform(0.4, 0.8)
            d.ellipse([x - rr, y - rr, x + rr, y + rr], fill=_pick(r, [(40, 90, 40), (60, 110, 50), (30, 70, 35)]))
    else:  # sign on a post
        x, y = r.uniform(0.05, 0.8) * S, r.uniform(0, 0.35) * S
        s = math.sqrt(max_frac * r.uniform(0.2, 0.5)) * S
        d.rectangle([x + s * 0.45, y, x + s * 0.55, S], fill=(90, 90, 95))
        d.rectangle([x, y, x + s, y + s * 0.7], fill=_pick(r, [(20, 80, 170), (30, 130, 60), (200, 30, 30)]))
        d.rectangle([x + s * 0.1, y + s * 0.25, x + s * 0.9, y + s * 0.35], fill=(240, 240, 240))


_MODEL_CACHE: Dict[Tuple, List[_Part]] = {}


def _model_for(ident: VehicleIdentity, seed: int, ppm: float, cfg: SyntheticConfig) -> List[_Part]:
    key = (seed, ident.pid, round(ppm, 3), cfg.vehicle_types, cfg.num_shared_colours, cfg.detail_scale,
           cfg.detail_density)
    if key not in _MODEL_CACHE:
        if len(_MODEL_CACHE) > 8:
            _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = build_vehicle_model(ident, ppm)
    return _MODEL_CACHE[key]


def _homographies(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Projective maps taking image points to texture points, as PIL PERSPECTIVE coefficients.

    (F,4,2) image points, (F,4,2) texture points -> (F,8); rows of NaN where the system is singular.
    """
    x, y, u, v = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    F = src.shape[0]
    a = np.zeros((F, 8, 8))
    one, zero = np.ones_like(x), np.zeros_like(x)
    a[:, 0::2] = np.stack([x, y, one, zero, zero, zero, -u * x, -u * y], axis=-1)
    a[:, 1::2] = np.stack([zero, zero, zero, x, y, one, -v * x, -v * y], axis=-1)
    b = np.zeros((F, 8))
    b[:, 0::2], b[:, 1::2] = u, v
    try:
        return np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = np.full((F, 8), np.nan)
        for i in range(F):
            try:
                out[i] = np.linalg.solve(a[i], b[i])
            except np.linalg.LinAlgError:
                pass
        return out


def _draw_vehicle(canvas: Image.Image, parts: List[_Part], ident: VehicleIdentity, style: _CameraStyle,
                  p: ImageParams, S: int, stretch: float) -> None:
    geo, _ = _vehicle_specs(ident)
    L, W = geo["L"], geo["W"]
    height = max(f.corners[:, 2].max() for part in parts for f in part.faces)
    target = np.array([0.0, 0.0, height * 0.45])
    cam_c, rot = _look_at(p.yaw, p.elevation, style.dist * max(L, 4.0), target)
    vis = []  # (draw order key, face)
    for part in parts:
        dist = float(np.linalg.norm(part.centroid - cam_c))
        for f in part.faces:
            if float(np.dot(f.normal, cam_c - f.centre)) > 1e-6:
                vis.append(((part.level, -dist), f))
    vis.sort(key=lambda t: t[0])
    faces = [f for _, f in vis]
    fp = np.array([[L / 2 + 0.15, W / 2 + 0.25, 0], [L / 2 + 0.15, -W / 2 - 0.25, 0],
                   [-L / 2 - 0.15, -W / 2 - 0.25, 0], [-L / 2 - 0.15, W / 2 + 0.25, 0]])
    chunks = [fp] + [f.corners for f in faces] + [f.outline for f in faces]
    q = (np.concatenate(chunks) - cam_c) @ rot.T
    q = np.stack([q[:, 0] / q[:, 2], -q[:, 1] / q[:, 2]], axis=1)
    n_fp, n_c = 4, 4 * len(faces)
    body = q[n_fp + n_c:]  # outlines fix the vehicle's box
    lo, hi = body.min(0), body.max(0)
    bw, bh = max(hi[0] - lo[0], 1e-6), max(hi[1] - lo[1], 1e-6)
    side = p.fill * S
    s_iso = side / max(bw, bh)
    sx = s_iso ** (1 - stretch) * (side / bw) ** stretch
    sy = s_iso ** (1 - stretch) * (side / bh) ** stretch
    ctr = (lo + hi) / 2
    ang = math.radians(p.rotation)
    ca, sa = math.cos(ang), math.sin(ang)
    xx, yy = (q[:, 0] - ctr[0]) * sx, (q[:, 1] - ctr[1]) * sy
    img_pts = np.stack([ca * xx - sa * yy + S / 2 + p.shift_x * S, sa * xx + ca * yy + S / 2 + p.shift_y * S], 1)

    # soft ground shadow, blurred inside its own box only
    sh = img_pts[:n_fp]
    pad = max(1, S // 40)
    bx0, by0 = np.floor(sh.min(0)).astype(int) - 2 * pad
    bx1, by1 = np.ceil(sh.max(0)).astype(int) + 2 * pad
    bx0, by0, bx1, by1 = max(bx0, 0), max(by0, 0), min(bx1, S), min(by1, S)
    if bx1 - bx0 > 1 and by1 - by0 > 1:
        mask = Image.new("L", (bx1 - bx0, by1 - by0), 0)
        ImageDraw.Draw(mask).polygon([(float(a - bx0), float(b - by0)) for a, b in sh], fill=110)
        canvas.paste((10, 10, 12), (bx0, by0), mask.filter(ImageFilter.BoxBlur(pad)))

    quads = img_pts[n_fp:n_fp + n_c].reshape(len(faces), 4, 2)
    offs = np.cumsum([n_fp + n_c] + [len(f.outline) for f in faces])
    boxes = []
    for i, f in enumerate(faces):
        outl = img_pts[offs[i]:offs[i + 1]]
        x0, y0 = np.floor(outl.min(0)).astype(int)
        x1, y1 = np.ceil(outl.max(0)).astype(int)
        boxes.append((max(x0, 0), max(y0, 0), min(x1, S), min(y1, S), outl))
    origin = np.array([[b[0], b[1]] for b in boxes], dtype=np.float64)[:, None, :]
    hs = _homographies(quads - origin, np.stack([f.tex_pts for f in faces]))
    for f, (x0, y0, x1, y1, outl), h in zip(faces, boxes, hs):
        if x1 - x0 < 1 or y1 - y0 < 1 or not np.all(np.isfinite(h)):
            continue
        shade = style.ambient + style.diffuse * max(0.0, float(np.dot(f.normal, style.sun)))
        patch = f.texture.transform((x1 - x0, y1 - y0), Image.Transform.PERSPECTIVE, tuple(h.tolist()),
                                    resample=Image.Resampling.BILINEAR)
        patch = Image.blend(Image.new("RGB", patch.size), patch, shade)  # alpha > 1 brightens (clipped)
        m = Image.new("L", (x1 - x0, y1 - y0), 0)
        ImageDraw.Draw(m).polygon([(float(a - x0), float(b - y0)) for a, b in outl], fill=255)
        canvas.paste(patch, (x0, y0), m)


def render_image(ident: VehicleIdentity, cam: int, index: int, *, seed: int = 0,
                 config: Optional[SyntheticConfig] = None, clean: bool = False) -> Tuple[Image.Image, ImageParams]:
    """Render one image (before JPEG) of ``ident`` in camera ``cam``; ``clean`` drops all nuisances."""
    cfg = config or SyntheticConfig()
    S = cfg.image_size * cfg.supersample
    style = camera_style(cam, seed=seed, config=cfg)
    p = image_params(ident.pid, cam, index, seed=seed, config=cfg)
    r = _rng(seed, _IMAGE, ident.pid, cam, index, 1)  # layout draws (background offset, clutter shapes)
    if clean:
        p = ImageParams(yaw=35.0, elevation=20.0, rear=False, mirror=False, rotation=0.0, fill=0.9, shift_x=0.0,
                        shift_y=0.0, brightness=1.0, contrast=1.0, cast_r=1.0, cast_g=1.0, cast_b=1.0, blur=0.0,
                        noise=0.0, jpeg_quality=95, occluder="none", n_passing=0, frame=p.frame)
        style = _CameraStyle(**{**style.__dict__, "sun": np.array([0.3, 0.5, 0.81]), "ambient": 0.62,
                                "diffuse": 0.42, "dist": 3.0})
        canvas = Image.new("RGB", (S, S), (150, 152, 155))
    else:
        scene = _background_scene(style, seed, S, cfg.clutter)
        ox, oy = r.integers(0, scene.size[0] - S + 1, 2)
        canvas = scene.crop((int(ox), int(oy), int(ox) + S, int(oy) + S))
        d = ImageDraw.Draw(canvas)
        for _ in range(p.n_passing):
            _passing_vehicle(d, r, S)
    ppm = max(10.0, 0.24 * S)
    parts = _model_for(ident, seed, ppm, cfg)
    _draw_vehicle(canvas, parts, ident, style, p, S, cfg.stretch)
    if p.occluder != "none":
        _occluder(canvas, p.occluder, r, S, cfg.occlusion_max_frac)
    img = canvas.resize((cfg.image_size, cfg.image_size), Image.Resampling.BOX) if S != cfg.image_size else canvas
    if clean:
        return img, p
    a = np.asarray(img, dtype=np.float32)
    a = a * np.array([p.cast_r, p.cast_g, p.cast_b], dtype=np.float32) * p.brightness
    m = a.mean()
    a = (a - m) * p.contrast + m
    img = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))
    if p.blur > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(p.blur))
    if p.noise > 0:
        a = np.asarray(img, dtype=np.float32) + np.float32(p.noise) * r.standard_normal(
            (cfg.image_size, cfg.image_size, 3), dtype=np.float32)
        img = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))
    return img, p


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """Deterministic baseline JPEG (fixed quality, 4:2:0, no optimiser / progressive passes)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality), optimize=False, progressive=False, subsampling=2)
    return buf.getvalue()


def render_vehicle(pid: int, cam: int, *, index: int = 0, seed: int = 0, config: Optional[SyntheticConfig] = None,
                   clean: bool = False) -> Image.Image:
    """Image ``index`` of vehicle ``pid`` in camera ``cam`` exactly as the generator renders it (pre-JPEG)."""
    cfg = config or SyntheticConfig()
    ident = sample_identity(pid, seed=seed, config=cfg)
    return render_image(ident, cam, index, seed=seed, config=cfg, clean=clean)[0]


def render_identity(pid: int, cams: Sequence[int] = (1, 4, 7, 10, 13, 16), *, seed: int = 0,
                    config: Optional[SyntheticConfig] = None, with_clean: bool = True) -> Image.Image:
    """A strip showing vehicle ``pid`` (clean canonical view first) in several cameras."""
    cfg = config or SyntheticConfig()
    ident = sample_identity(pid, seed=seed, config=cfg)
    tiles = [render_image(ident, cams[0], 0, seed=seed, config=cfg, clean=True)[0]] if with_clean else []
    tiles += [render_image(ident, c, 0, seed=seed, config=cfg)[0] for c in cams]
    s = cfg.image_size
    out = Image.new("RGB", (s * len(tiles) + 2 * (len(tiles) - 1), s), (255, 255, 255))
    for i, t in enumerate(tiles):
        out.paste(t, (i * (s + 2), 0))
    return out


# ----------------------------------------------------------------------------------------------
# protocol and writer

def _plan(seed: int, cfg: SyntheticConfig) -> List[Dict]:
    """Identities, their cameras, images per camera and (test) which image is the query."""
    r = _rng(seed, _PLAN)
    ids = r.choice(np.arange(1, NUM_VERI_IDS + 1), cfg.num_train_ids + cfg.num_test_ids, replace=False)
    train = sorted(int(v) for v in ids[: cfg.num_train_ids])
    test = sorted(int(v) for v in ids[cfg.num_train_ids:])
    plan = []
    for split, pids in (("train", train), ("test", test)):
        for pid in pids:
            nc = int(r.integers(cfg.cameras_per_id[0], cfg.cameras_per_id[1] + 1))
            cams = sorted(int(c) + 1 for c in r.choice(cfg.num_cameras, nc, replace=False))
            if split == "train":
                n = int(r.integers(cfg.train_images_per_id[0], cfg.train_images_per_id[1] + 1))
                counts = (1 + r.multinomial(n - nc, np.full(nc, 1.0 / nc))).tolist()
                tracks = [(c, int(k), -1) for c, k in zip(cams, counts)]
            else:
                tracks = []
                for c in cams:
                    k = int(r.integers(cfg.test_images_per_camera[0], cfg.test_images_per_camera[1] + 1))
                    tracks.append((c, k, int(r.integers(k))))
            plan.append(dict(pid=pid, split=split, tracks=tracks))
    return plan


FACTOR_COLUMNS = ["file", "split", "pid", "cam", "camid", "index", "frame", "type", "colour", "roof", "stripe",
                  "n_stickers", "n_windshield_stickers", "plate", "rims", "bumper", "n_wear", "yaw", "elevation", "view", "rear",
                  "mirror", "rotation", "fill", "shift_x", "shift_y", "brightness", "contrast", "cast_r", "cast_g",
                  "cast_b", "blur", "noise", "jpeg_quality", "occluder", "n_passing"]


def _view_name(yaw: float) -> str:
    a = abs(yaw)
    return "front" if a < 30 else "front-side" if a < 65 else "side" if a < 115 else "rear-side" if a < 150 else "rear"


def _render_identity_job(job: Tuple) -> List[Dict]:
    seed, cfg_dict, entry, out_dir = job
    cfg = SyntheticConfig(**cfg_dict)
    ident = sample_identity(entry["pid"], seed=seed, config=cfg)
    rows = []
    for cam, n, q in entry["tracks"]:
        for k in range(n):
            img, p = render_image(ident, cam, k, seed=seed, config=cfg)
            name = f"{ident.pid:04d}_c{cam:03d}_{p.frame:08d}_0.jpg"
            split = entry["split"] if entry["split"] == "train" else ("query" if k == q else "gallery")
            folder = {"train": "image_train", "query": "image_query", "gallery": "image_test"}[split]
            with open(os.path.join(out_dir, folder, name), "wb") as fh:
                fh.write(encode_jpeg(img, p.jpeg_quality))
            row = dict(file=name, split=split, pid=ident.pid, cam=cam, camid=cam - 1, index=k, **ident.summary())
            pd_ = asdict(p)
            pd_["view"] = _view_name(p.yaw)
            for c in FACTOR_COLUMNS:
                if c in pd_:
                    v = pd_[c]
                    row[c] = round(v, 4) if isinstance(v, float) else int(v) if isinstance(v, bool) else v
            rows.append(row)
    return rows


def make_synthetic_veri(root, *, seed: int = 0, config: Optional[SyntheticConfig] = None, workers: int = 2,
                        overwrite: bool = False, **overrides) -> SyntheticInfo:
    """Write the synthetic VeRi-776-layout dataset to ``root`` and return its ``SyntheticInfo``.

    ``overrides`` are ``SyntheticConfig`` fields (e.g. ``num_train_ids=6, image_size=32``). The set is
    built in a temporary sibling folder and moved into place at the end. If ``root`` already holds a
    complete set made with the same seed, config and generator version it is reused; a different one
    raises ``FileExistsError`` unless ``overwrite=True``. ``workers`` (processes) does not change the
    output.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    cfg = config or SyntheticConfig()
    if overrides:
        valid = {f.name for f in fields(SyntheticConfig)}
        bad = sorted(set(overrides) - valid)
        if bad:
            raise TypeError(f"unknown SyntheticConfig field(s) {bad}; valid: {sorted(valid)}")
        cfg = SyntheticConfig(**{**asdict(cfg), **overrides})
    root = Path(root)
    meta_wanted = dict(generator_version=GENERATOR_VERSION, seed=int(seed), config=asdict(cfg))
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder")
    if root.exists() and any(root.iterdir()):
        meta_path = root / "meta.json"
        if meta_path.is_file() and not overwrite:
            meta = json.loads(meta_path.read_text())
            if all(json.dumps(meta.get(k), sort_keys=True) == json.dumps(v, sort_keys=True)
                   for k, v in json.loads(json.dumps(meta_wanted)).items()):
                return SyntheticInfo(**{**meta["info"], "root": str(root),
                                        "factors_csv": str(root / "factors.csv")})
        if not overwrite:
            raise FileExistsError(f"{root} already exists and does not hold this synthetic set (seed {seed}, same "
                                  "config); pass overwrite=True to replace it or choose another root")
    t0 = time.perf_counter()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    for sub in ("image_train", "image_query", "image_test"):
        (tmp / sub).mkdir(parents=True)
    plan = _plan(int(seed), cfg)
    jobs = [(int(seed), asdict(cfg), e, str(tmp)) for e in plan]
    try:
        if workers and workers > 1:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(workers) as pool:
                results = pool.map(_render_identity_job, jobs, chunksize=4)
        else:
            results = [_render_identity_job(j) for j in jobs]
        rows = [row for rs in results for row in rs]
        order = {"train": 0, "query": 1, "gallery": 2}
        rows.sort(key=lambda rw: (order[rw["split"]], rw["file"]))
        for split, fname in (("train", "name_train.txt"), ("query", "name_query.txt"), ("gallery", "name_test.txt")):
            names = sorted(rw["file"] for rw in rows if rw["split"] == split)
            (tmp / fname).write_text("".join(n + "\n" for n in names))
        with open(tmp / "factors.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=FACTOR_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        count = {s: sum(rw["split"] == s for rw in rows) for s in order}
        info = SyntheticInfo(
            root=str(root), seed=int(seed), num_train_ids=cfg.num_train_ids, num_test_ids=cfg.num_test_ids,
            num_train_images=count["train"], num_query_images=count["query"], num_gallery_images=count["gallery"],
            num_cameras=len({rw["cam"] for rw in rows}), image_size=cfg.image_size,
            factors_csv=str(root / "factors.csv"), seconds=round(time.perf_counter() - t0, 2), config=asdict(cfg))
        # no timing or absolute paths in the files: same seed and config -> identical bytes
        stored = {**asdict(info), "seconds": 0.0, "root": ".", "factors_csv": "factors.csv"}
        (tmp / "meta.json").write_text(json.dumps({**meta_wanted, "info": stored}, indent=1, sort_keys=True) + "\n")
        if root.exists():
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            os.replace(root, old)
            os.replace(tmp, root)
            shutil.rmtree(old)
        else:
            os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return info


def read_factors(root) -> List[Dict[str, str]]:
    """Rows of ``root/factors.csv`` (strings)."""
    path = Path(root) / "factors.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a synthetic VeRi folder made by make_synthetic_veri")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def sample_grid(root, n_ids: int = 6, *, split: str = "test", max_cams: int = 6, seed: int = 0,
                label: bool = True) -> Image.Image:
    """A grid image: one row per random identity of ``split`` ('train' or 'test'), one image per camera."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rows = read_factors(root)
    want = {"train"} if split == "train" else {"query", "gallery"}
    by_id: Dict[int, Dict[int, Dict]] = {}
    for rw in rows:
        if rw["split"] in want:
            by_id.setdefault(int(rw["pid"]), {}).setdefault(int(rw["cam"]), rw)
    pids = sorted(by_id)
    r = np.random.default_rng(seed)
    chosen = sorted(int(v) for v in r.choice(pids, min(n_ids, len(pids)), replace=False))
    folder = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
    tiles = []
    for pid in chosen:
        cams = sorted(by_id[pid])[:max_cams]
        tiles.append([(by_id[pid][c], Image.open(Path(root) / folder[by_id[pid][c]["split"]] / by_id[pid][c]["file"])
                       .convert("RGB")) for c in cams])
    s = max(t[1].size[0] for row in tiles for t in row)
    lab = 12 if label else 0
    gap = 3
    out = Image.new("RGB", (max_cams * (s + gap), len(tiles) * (s + lab + gap)), (255, 255, 255))
    d = ImageDraw.Draw(out)
    for i, row in enumerate(tiles):
        for j, (rw, im) in enumerate(row):
            x, y = j * (s + gap), i * (s + lab + gap)
            out.paste(im.resize((s, s)), (x, y + lab))
            if label:
                d.text((x + 1, y), f"{rw['pid']} c{int(rw['cam']):02d} {rw['type'][:5]}/{rw['colour'][:5]}",
                       fill=(0, 0, 0))
    return out


# ---------------------------------------------------------------------------------------------- named sets
#: Generator settings of the embedded synthetic datasets (``DataConfig.synthetic`` names one).
#: ``difficulty`` picks ``SyntheticConfig.at_difficulty(level)``; the other keys are SyntheticConfig fields.
SYNTHETIC: Dict[str, Dict] = {
    "default": {},  # SyntheticConfig's documented default (level 0.2): 180 train ids, 300 test ids, 128 px
    "easy": {"difficulty": 0.05},  # the cpu preset's (64 px input): same ids and images, milder nuisances
    "tiny": dict(num_train_ids=8, num_test_ids=6, train_images_per_id=(4, 6), cameras_per_id=(2, 3),
                 test_images_per_camera=(2, 2), image_size=32, supersample=1),
}


def synthetic_config(name: str):
    """The :class:`~deap_lib.data.SyntheticConfig` of the embedded synthetic dataset ``name``."""
    if name not in SYNTHETIC:
        raise KeyError(f"unknown synthetic dataset '{name}'; valid names: {', '.join(sorted(SYNTHETIC))}")
    kw = dict(SYNTHETIC[name])
    level = kw.pop("difficulty", None)
    return SyntheticConfig(**kw) if level is None else SyntheticConfig.at_difficulty(level, **kw)


def ensure_synthetic(root: str, name: str, seed: int = 0):
    """Generate synthetic dataset ``name`` at ``root``; a complete set made with the same settings is reused
    (``make_synthetic_veri`` checks seed, config and generator version and refuses to overwrite another)."""
    return make_synthetic_veri(root, seed=seed, config=synthetic_config(name))
