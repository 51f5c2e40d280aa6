"""The pseudo-3-D vehicle model: side profiles extruded across the width, each face with its texture."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from .identity import VehicleIdentity, _GEOMETRY, _PartSpec
from .painting import _paint_side, _paint_strip

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


