"""Vehicle identities: body types and side profiles, colours and the identity-specific fine details
(:func:`sample_identity`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .config import BODY_COLOURS, Colour, SyntheticConfig, _IDENT, _SHAPES, _TYPE_WEIGHTS, _contrasting, _pick, _rng

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


