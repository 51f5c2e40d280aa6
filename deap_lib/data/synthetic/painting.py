"""The textures of a vehicle's faces: each side, and the front, back, roof and bonnet strips, painted from the
identity's parts (liveries, glass, lamps, plates, wheels; the primitives in :mod:`.texture`)."""
from __future__ import annotations

import math
from typing import Dict

import numpy as np

from .config import _mix
from .identity import VehicleIdentity, _PartSpec
from .texture import _TYRE, _Tex, _glass, _lamp, _plate, _stickers, _wear, _wheel


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


