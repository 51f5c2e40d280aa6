"""Scenes: per-image parameters, projection and rendering of one image (the cameras' styles, backgrounds and
clutter in :mod:`.camera`)."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .camera import _CameraStyle, _background_scene, _occluder, _passing_vehicle, camera_style
from .config import SyntheticConfig, _IMAGE, _TRACK, _pick, _rng
from .identity import VehicleIdentity, sample_identity
from .model import _Part, _vehicle_specs, build_vehicle_model

# ----------------------------------------------------------------------------------------------
# per-image parameters

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


