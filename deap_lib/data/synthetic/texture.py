"""The texture canvas of one vehicle face and the small things painted on it (plates, lamps, stickers, wear,
wheels)."""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
from PIL import Image, ImageDraw

from .config import Colour, _blend, _mix
from .identity import VehicleIdentity

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
