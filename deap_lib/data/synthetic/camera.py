"""Cameras and what they see besides the vehicle: per-camera styles (light, colour cast, blur, noise),
background scenes and clutter (passing vehicles, occluders)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .config import BODY_COLOURS, Colour, SyntheticConfig, _BACKGROUND, _CAM, _mix, _pick, _rng

# ----------------------------------------------------------------------------------------------
# camera styles, backgrounds and clutter

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
