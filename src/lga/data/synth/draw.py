"""Drawing "Waterbirds in miniature": backgrounds, the bird, composition and finishing.

``render_example`` draws one image and its attribute row from the image's own generator
``np.random.default_rng([seed, img_id])``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from lga.data.attributes import ATTRIBUTE_COLUMNS
from lga.data.synth.species import (
    PLUMAGES,
    RGB,
    SPECIES,
    Plumage,
    sample_attributes,
)

__all__ = ["BACKGROUND_DRAWERS", "bird_sprite", "finish", "render_example", "render_scale"]

# --------------------------------------------------------------------------- colour helpers


def _jitter(rng: np.random.Generator, c: Sequence[float], amount: float = 12.0) -> RGB:
    """``c`` with Gaussian noise on each channel (plain floats: far faster than numpy here)."""
    r, g, b = (x + e for x, e in zip(c, rng.normal(0.0, amount, 3).tolist(), strict=True))
    return int(min(255.0, max(0.0, r))), int(min(255.0, max(0.0, g))), int(min(255.0, max(0.0, b)))


def _shade(c: Sequence[float], factor: float) -> RGB:
    return tuple(int(min(255, max(0, x * factor))) for x in c)  # type: ignore[return-value]


def _rows(top: Sequence[float], bottom: Sequence[float], n: int) -> np.ndarray:
    """A vertical gradient of ``n`` rows, shape (n, 3)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) * np.asarray(top, float) + t * np.asarray(bottom, float)


def _sky_and_ground(rng, side: int, horizon: int, sky, ground_far, ground_near) -> Image.Image:
    column = np.concatenate(
        [
            _rows(_jitter(rng, sky[0]), _jitter(rng, sky[1]), horizon),
            _rows(_jitter(rng, ground_far), _jitter(rng, ground_near), side - horizon),
        ]
    ).astype(np.uint8)
    return Image.fromarray(column[:, None], "RGB").resize((side, side), Image.Resampling.NEAREST)


@functools.lru_cache(maxsize=8)
def _upsampler(side: int, n: int = 4) -> np.ndarray:
    """Linear interpolation from ``n`` control points to ``side`` pixels, shape (side, n)."""
    pos = np.linspace(0, n - 1, side)
    return np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(n)[None, :])).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, side: int, amount: float) -> np.ndarray:
    """Low-frequency colour variation (light, haze), shape (side, side, 3), zero-mean."""
    # Mostly brightness, a little hue: real light varies far more in intensity than in colour.
    coarse = (rng.normal(0.0, amount, (4, 4, 1)) + rng.normal(0.0, 0.4 * amount, (4, 4, 3))).astype(
        np.float32
    )
    up = _upsampler(side)
    rows = np.tensordot(up, coarse, axes=([1], [0]))  # (side, 4, 3)
    return np.tensordot(up, rows, axes=([1], [1])).transpose(1, 0, 2)  # (side, side, 3)


# Sensor noise is cut from one fixed table at a random offset: as random as drawing it afresh
# for this purpose, and far cheaper than a Gaussian draw per pixel.
_NOISE = np.random.default_rng(20240229).standard_normal(1 << 20, dtype=np.float32)


def _sensor_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    n = math.prod(shape)
    if n >= _NOISE.size:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    start = int(rng.integers(0, _NOISE.size - n))
    return _NOISE[start : start + n].reshape(shape) * np.float32(sigma)


# --------------------------------------------------------------------------- backgrounds
# Each returns the picture and the row where standing ground (or open water) begins.


def _colours(rng: np.random.Generator, base, n: int, amount: float) -> list[tuple[int, ...]]:
    """``n`` jittered copies of ``base`` (one colour, or one per row of an (n, 3) array)."""
    c = np.clip(np.asarray(base, dtype=float) + rng.normal(0.0, amount, (n, 3)), 0, 255)
    return [tuple(row) for row in c.astype(int).tolist()]


def _forest(rng: np.random.Generator, side: int) -> tuple[Image.Image, int]:
    ground = int(side * rng.uniform(0.62, 0.8))
    summer = rng.random() < 0.8
    canopy = _jitter(rng, (48, 92, 42) if summer else (112, 96, 44), 10)
    img = _sky_and_ground(
        rng, side, ground, (_shade(canopy, 0.75), _shade(canopy, 1.1)), (92, 88, 52), (70, 62, 38)
    )
    d = ImageDraw.Draw(img)
    n = int(rng.integers(0, 3))  # light through the leaves
    x, y = rng.uniform(0, side, n), rng.uniform(0, 0.3, n) * side
    r = rng.uniform(0.02, 0.05, n) * side
    for i, colour in enumerate(_colours(rng, (150, 180, 130), n, 15)):
        d.ellipse([x[i] - r[i], y[i] - r[i], x[i] + r[i], y[i] + r[i]], fill=colour)
    n = int(rng.integers(3, 8))  # trunks
    x, w = rng.uniform(-0.05, 1.0, n) * side, rng.uniform(0.02, 0.09, n) * side
    bottom = ground + rng.uniform(0.0, 0.15, n) * side
    for i, colour in enumerate(_colours(rng, (78, 58, 38), n, 14)):
        d.rectangle([x[i], 0, x[i] + w[i], bottom[i]], fill=colour)
    n = int(rng.integers(8, 16))  # foliage
    x, y = rng.uniform(0, side, n), rng.uniform(-0.1, 0.55, n) * side
    r = rng.uniform(0.06, 0.18, n) * side
    shades = np.asarray(canopy, float) * rng.uniform(0.7, 1.3, (n, 1))
    for i, colour in enumerate(_colours(rng, shades, n, 8)):
        d.ellipse([x[i] - r[i], y[i] - 0.8 * r[i], x[i] + r[i], y[i] + 0.8 * r[i]], fill=colour)
    n = int(rng.integers(2, 6))  # undergrowth
    x, r = rng.uniform(0, side, n), rng.uniform(0.05, 0.12, n) * side
    for i, colour in enumerate(_colours(rng, (45, 80, 35), n, 10)):
        d.ellipse([x[i] - r[i], ground - 0.6 * r[i], x[i] + r[i], ground + 0.4 * r[i]], fill=colour)
    return img, ground


def _grass(rng: np.random.Generator, side: int) -> tuple[Image.Image, int]:
    horizon = int(side * rng.uniform(0.2, 0.42))
    green = rng.random() < 0.75
    far, near = ((152, 165, 72), (82, 138, 50)) if green else ((178, 166, 100), (140, 128, 62))
    img = _sky_and_ground(rng, side, horizon, ((150, 185, 225), (205, 218, 232)), far, near)
    d = ImageDraw.Draw(img)
    if rng.random() < 0.6:  # distant tree line
        xs = np.linspace(0, side, 9)
        tops = horizon - rng.uniform(0.02, 0.09, 9) * side
        d.polygon(
            [(0, horizon), *zip(xs, tops, strict=True), (side, horizon)],
            fill=_jitter(rng, (58, 92, 48), 10),
        )
    n, width = 50, max(1, side // 96)
    x, y = rng.uniform(0, side, n), rng.uniform(horizon + 0.05 * side, side, n)
    h = (0.015 + 0.05 * (y - horizon) / side) * side  # nearer blades look taller
    lean = rng.uniform(-0.3, 0.3, n) * h
    base = np.where(rng.random(n)[:, None] < 0.6, (95, 145, 55), (160, 165, 80))
    for i, colour in enumerate(_colours(rng, base, n, 18)):  # blades
        d.line([(x[i], y[i]), (x[i] + lean[i], y[i] - h[i])], fill=colour, width=width)
    return img, horizon


def _lake(rng: np.random.Generator, side: int) -> tuple[Image.Image, int]:
    horizon = int(side * rng.uniform(0.18, 0.36))
    clear = rng.random() < 0.7  # or murky, greener
    far, near = ((96, 146, 175), (42, 92, 138)) if clear else ((98, 138, 128), (48, 88, 80))
    img = _sky_and_ground(rng, side, horizon, ((160, 195, 230), (210, 222, 235)), far, near)
    d = ImageDraw.Draw(img)
    xs = np.linspace(0, side, 10)
    tops = horizon - rng.uniform(0.04, 0.14, 10) * side
    shore = _jitter(rng, (52, 84, 50), 10)
    d.polygon([(0, horizon + 1), *zip(xs, tops, strict=True), (side, horizon + 1)], fill=shore)
    reflection = horizon + rng.uniform(0.03, 0.08) * side  # the shore mirrored, darker and bluer
    d.rectangle(
        [0, horizon + 1, side, reflection], fill=_shade((shore[0], shore[1], shore[2] + 40), 0.9)
    )
    n, width = 25, max(1, side // 96)
    x, y = rng.uniform(-0.1, 1.0, n) * side, rng.uniform(reflection, side, n)
    length = rng.uniform(0.05, 0.2, n) * side
    for i, colour in enumerate(_colours(rng, (135, 180, 205), n, 12)):  # ripples
        d.line([(x[i], y[i]), (x[i] + length[i], y[i])], fill=colour, width=width)
    return img, horizon


def _ocean(rng: np.random.Generator, side: int) -> tuple[Image.Image, int]:
    horizon = int(side * rng.uniform(0.2, 0.42))
    calm = rng.random() < 0.8  # or overcast, grey
    sky = ((135, 180, 228), (200, 220, 238)) if calm else ((150, 160, 172), (196, 200, 206))
    far, near = ((40, 88, 152), (16, 46, 104)) if calm else ((100, 118, 132), (52, 68, 84))
    img = _sky_and_ground(rng, side, horizon, sky, far, near)
    d = ImageDraw.Draw(img)
    n, width = 35, max(1, side // 96)
    y = rng.uniform(horizon + 2, side, n)
    x = rng.uniform(-0.1, 1.0, n) * side
    length = (0.03 + 0.12 * (y - horizon) / (side - horizon)) * side  # nearer waves look longer
    breaking = rng.random(n)[:, None] < 0.25
    base = np.where(breaking, (228, 236, 240), (80, 130, 192))
    for i, colour in enumerate(_colours(rng, base, n, 10)):  # crests
        box = [x[i], y[i], x[i] + length[i], y[i] + 0.3 * length[i]]
        d.arc(box, 200, 340, fill=colour, width=width)
    return img, horizon


def _snow(rng: np.random.Generator, side: int) -> tuple[Image.Image, int]:
    """A snowfield under a pale sky, with a few dark rocks and drifts (an unseen place)."""
    horizon = int(side * rng.uniform(0.2, 0.4))
    overcast = rng.random() < 0.5
    sky = ((172, 180, 192), (214, 218, 224)) if overcast else ((120, 165, 220), (196, 214, 236))
    img = _sky_and_ground(rng, side, horizon, sky, (226, 232, 240), (246, 248, 252))
    d = ImageDraw.Draw(img)
    if rng.random() < 0.6:  # distant mountains, grey-blue with white tops
        xs = np.linspace(0, side, 7)
        tops = horizon - rng.uniform(0.05, 0.16, 7) * side
        d.polygon(
            [(0, horizon), *zip(xs, tops, strict=True), (side, horizon)],
            fill=_jitter(rng, (150, 160, 178), 10),
        )
    n = 12  # drifts: soft blue-grey shadows on the snow
    x, y = rng.uniform(-0.1, 1.0, n) * side, rng.uniform(horizon + 0.03 * side, side, n)
    w = rng.uniform(0.1, 0.3, n) * side
    for i, colour in enumerate(_colours(rng, (200, 210, 228), n, 8)):
        d.ellipse([x[i], y[i], x[i] + w[i], y[i] + 0.12 * w[i]], fill=colour)
    n = int(rng.integers(1, 4))  # rocks poking through
    x, y = rng.uniform(0, side, n), rng.uniform(horizon + 0.05 * side, side, n)
    r = rng.uniform(0.015, 0.04, n) * side
    for i, colour in enumerate(_colours(rng, (70, 68, 66), n, 10)):
        d.ellipse([x[i] - r[i], y[i] - 0.6 * r[i], x[i] + r[i], y[i] + 0.6 * r[i]], fill=colour)
    return img, horizon


def _desert(rng: np.random.Generator, side: int) -> tuple[Image.Image, int]:
    """Sand dunes under a hot sky, with a few dry shrubs (an unseen place)."""
    horizon = int(side * rng.uniform(0.25, 0.45))
    sky = ((110, 160, 225), (228, 220, 200))
    far, near = ((220, 180, 120), (196, 150, 92))
    img = _sky_and_ground(rng, side, horizon, sky, _jitter(rng, far, 10), _jitter(rng, near, 10))
    d = ImageDraw.Draw(img)
    for k in range(3):  # dune ridges, lighter on the crest
        xs = np.linspace(-0.1, 1.1, 8) * side
        base = horizon + (0.1 + 0.25 * k) * side
        ys = base + rng.uniform(-0.06, 0.06, 8) * side
        d.line(list(zip(xs, ys, strict=True)), fill=_jitter(rng, (236, 206, 150), 8),
               width=max(1, side // 48))  # fmt: skip
    n = int(rng.integers(1, 5))  # dry shrubs
    x, y = rng.uniform(0, side, n), rng.uniform(horizon + 0.05 * side, side, n)
    r = rng.uniform(0.015, 0.035, n) * side
    for i, colour in enumerate(_colours(rng, (120, 108, 70), n, 10)):
        d.ellipse([x[i] - r[i], y[i] - r[i], x[i] + r[i], y[i] + 0.5 * r[i]], fill=colour)
    return img, horizon


BACKGROUND_DRAWERS = {
    "forest": _forest,
    "grass": _grass,
    "lake": _lake,
    "ocean": _ocean,
    "snow": _snow,  # unseen places: test images only
    "desert": _desert,
}


# --------------------------------------------------------------------------- the bird

# Bird scale as a fraction of the image side; the drawn bird spans about 0.8-1.2 of it.
_SIZE_SCALE = {"small": (0.28, 0.35), "medium": (0.31, 0.39), "large": (0.34, 0.42)}
_BODY_AXES = {"small": (0.25, 0.17), "medium": (0.29, 0.16), "large": (0.31, 0.15)}
_HEAD_RADIUS = {"small": 0.11, "medium": 0.095, "large": 0.085}
_NECK_LENGTH = {"short": 0.02, "medium": 0.12, "long": 0.28}
_LEG_LENGTH = {"short": 0.11, "long": 0.32}
_TILT_DEG = {"standing": (5, 25), "perched": (25, 45), "swimming": (-3, 8), "flying": (-8, 8)}


class _Pen:
    """Draws in bird-local units (1 = bird scale ``L`` pixels, x toward the bill, y down)."""

    def __init__(
        self, draw: ImageDraw.ImageDraw, origin: tuple[float, float], scale: float, facing: int
    ):
        self.draw, self.origin, self.scale, self.facing = draw, origin, scale, facing

    def p(self, pt: Sequence[float]) -> tuple[float, float]:
        return (
            self.origin[0] + self.facing * pt[0] * self.scale,
            self.origin[1] + pt[1] * self.scale,
        )

    def width(self, w: float) -> int:
        return max(1, round(w * self.scale))

    def polygon(self, pts: Sequence[Sequence[float]] | np.ndarray, fill: RGB) -> None:
        xy = np.asarray(pts, dtype=float) * self.scale
        xy[:, 0] = self.origin[0] + self.facing * xy[:, 0]
        xy[:, 1] += self.origin[1]
        self.draw.polygon(xy.ravel().tolist(), fill=fill)

    def line(self, pts: Sequence[Sequence[float]], fill: RGB, width: float) -> None:
        self.draw.line([self.p(q) for q in pts], fill=fill, width=self.width(width), joint="curve")

    def disc(self, c: Sequence[float], r: float, fill: RGB) -> None:
        (x, y), rr = self.p(c), max(0.6, r * self.scale)
        self.draw.ellipse([x - rr, y - rr, x + rr, y + rr], fill=fill)


_COS = {n: np.cos(np.linspace(0, 2 * np.pi, n, endpoint=False)) for n in (24,)}
_SIN = {n: np.sin(np.linspace(0, 2 * np.pi, n, endpoint=False)) for n in (24,)}


class _Frame:
    """A rotated frame (body or wing) inside the bird: ``at(u, v)`` -> bird-local point."""

    def __init__(self, centre: Sequence[float], tilt: float):
        self.c, self.cos, self.sin = np.asarray(centre, float), math.cos(tilt), math.sin(tilt)

    def at(self, u: float, v: float) -> np.ndarray:
        # tilt > 0 raises the front (+u) end: y is down.
        return self.c + np.array([u * self.cos + v * self.sin, -u * self.sin + v * self.cos])

    def ellipse(self, a: float, b: float, n: int = 24) -> np.ndarray:
        u, v = a * _COS[n], b * _SIN[n]
        out = np.empty((n, 2))
        out[:, 0] = self.c[0] + u * self.cos + v * self.sin
        out[:, 1] = self.c[1] - u * self.sin + v * self.cos
        return out


@dataclass
class _BirdLook:
    """Attribute values turned into geometry and colours."""

    a: float
    b: float
    head_r: float
    neck: float
    legs: float
    tilt: float
    plumage: Plumage
    bill_colour: RGB
    leg_colour: RGB
    cap: RGB | None
    wing_up: bool


def _look(rng: np.random.Generator, attrs: dict[str, str]) -> _BirdLook:
    sp = SPECIES[attrs["species"]]
    base = PLUMAGES[attrs["plumage"]]
    plumage = Plumage(
        *(_jitter(rng, c, 8) for c in (base.body, base.belly, base.head, base.wing, base.accent))
    )
    a, b = _BODY_AXES[attrs["size"]]
    lo, hi = _TILT_DEG[attrs["pose"]]
    return _BirdLook(
        a=a * rng.uniform(0.92, 1.08),
        b=b * rng.uniform(0.92, 1.08),
        head_r=_HEAD_RADIUS[attrs["size"]] * rng.uniform(0.9, 1.1),
        neck=_NECK_LENGTH[attrs["neck"]] * rng.uniform(0.85, 1.15),
        legs=_LEG_LENGTH[attrs["legs"]] * rng.uniform(0.85, 1.15),
        tilt=math.radians(rng.uniform(lo, hi)),
        plumage=plumage,
        bill_colour=_jitter(rng, sp.bill_colours[int(rng.integers(len(sp.bill_colours)))], 8),
        leg_colour=_jitter(rng, sp.leg_colours[int(rng.integers(len(sp.leg_colours)))], 8),
        cap=sp.cap,
        wing_up=bool(rng.random() < 0.5),
    )


def _bill(pen: _Pen, origin: np.ndarray, angle: float, shape: str, colour: RGB) -> None:
    d = np.array([math.cos(angle), math.sin(angle)])  # along the bill
    n = np.array([-d[1], d[0]])  # its lower side
    length, half = {
        "flat": (0.15, 0.03),
        "long-straight": (0.25, 0.028),
        "hooked": (0.14, 0.032),
        "short-conical": (0.085, 0.045),
        "thin-pointed": (0.12, 0.016),
    }[shape]
    o = origin
    if shape == "flat":  # a blunt spatula
        pts = [
            o - n * half,
            o + d * length - n * half * 0.8,
            o + d * (length + 0.01),
            o + d * length + n * half,
            o + n * half,
        ]
    elif shape == "hooked":  # the upper tip curls down over the lower
        pts = [
            o - n * half,
            o + d * length - n * half * 0.4,
            o + d * (length + 0.02) + n * 0.035,
            o + d * (length - 0.03) + n * 0.012,
            o + n * half,
        ]
    else:
        pts = [o - n * half, o + d * length, o + n * half]
    pen.polygon(pts, colour)


def _foot(pen: _Pen, f: np.ndarray, feet: str, colour: RGB) -> None:
    if feet == "webbed":  # a fan of skin, wider at the toes
        pen.polygon(
            [f + (-0.015, -0.012), f + (0.12, -0.03), f + (0.13, 0.02), f + (-0.015, 0.012)], colour
        )
    else:  # three thin toes forward, one back
        dark = _shade(colour, 0.7)
        for toe in ((0.1, 0.005), (0.08, 0.035), (-0.06, 0.012)):
            pen.line([f, f + toe], dark, 0.02)


def _legs(pen: _Pen, body: _Frame, look: _BirdLook, feet: str, flying: bool, near: bool) -> None:
    hip = body.at(0.05 * look.a if near else -0.2 * look.a, 0.75 * look.b)
    colour = look.leg_colour if near else _shade(look.leg_colour, 0.75)
    if flying:  # trailing behind, slightly down
        foot = hip + look.legs * 0.9 * np.array([-0.94, 0.34])
        pen.line([hip, foot], colour, 0.028)
        _foot(pen, foot, feet, colour)
        return
    # Legs reach the same ground line whatever the tilt.
    ground_y = body.c[1] + look.b + look.legs
    knee = np.array([hip[0] - 0.02, (hip[1] + ground_y) / 2])
    foot = np.array([hip[0] + (0.01 if near else -0.02), ground_y])
    pen.line([hip, knee, foot], colour, 0.028)
    _foot(pen, foot, feet, colour)


def _folded_wing(pen: _Pen, body: _Frame, look: _BirdLook, pattern: str, rng) -> None:
    wing = _Frame(body.at(-0.15 * look.a, -0.15 * look.b), look.tilt - 0.12)
    wa, wb = 0.72 * look.a, 0.62 * look.b
    pen.polygon(np.vstack([wing.ellipse(wa, wb), wing.at(-wa - 0.08, 0.1 * wb)]), look.plumage.wing)
    if pattern == "barred":
        for x in (-0.55, -0.15, 0.25):
            h = wb * math.sqrt(1 - x * x) * 0.85
            pen.line([wing.at(x * wa, -h), wing.at(x * wa - 0.02, h)], look.plumage.accent, 0.024)
    elif pattern == "spotted":
        for _ in range(6):
            r, t = math.sqrt(rng.uniform(0, 0.6)), rng.uniform(0, 2 * np.pi)
            pen.disc(
                wing.at(r * wa * math.cos(t), r * wb * math.sin(t)), 0.018, look.plumage.accent
            )


def _spread_wing(pen: _Pen, body: _Frame, look: _BirdLook, pattern: str, near: bool) -> None:
    root_front = body.at(0.2 * look.a, -0.5 * look.b)
    root_back = body.at(-0.35 * look.a, -0.5 * look.b)
    span = 0.5 + 0.6 * look.a
    up = -1 if look.wing_up else 1
    shift = 0.0 if near else 0.06  # the far wing shows a little behind and above
    reach = up * span * (1.0 if near else 0.8)
    tip = (root_front + root_back) / 2 + np.array([-0.18 - shift, reach])
    elbow = root_front + np.array([0.02 - shift, up * 0.45 * span])
    colour = look.plumage.wing if near else _shade(look.plumage.wing, 0.8)
    pen.polygon([root_front, elbow, tip, root_back], colour)
    if not near:
        return
    for t in (0.35, 0.6, 0.82):  # across the wing, from the chord to the trailing edge
        lead, trail = root_front + t * (tip - root_front), root_back + t * (tip - root_back)
        if pattern == "barred":
            pen.line([lead, trail], look.plumage.accent, 0.022)
        elif pattern == "spotted":
            pen.disc((lead + trail) / 2, 0.02, look.plumage.accent)


def _head(pen: _Pen, body: _Frame, look: _BirdLook, attrs: dict[str, str]) -> None:
    shoulder = body.at(0.7 * look.a, -0.55 * look.b)
    lean = math.radians(70 if attrs["pose"] == "flying" else 20 if attrs["neck"] == "long" else 35)
    direction = np.array([math.sin(lean), -math.cos(lean)])
    centre = shoulder + direction * (look.neck + 0.5 * look.head_r)
    if look.neck > 0.05:
        # A gentle S: the middle of a long neck bows backward.
        mid = (shoulder + centre) / 2 + np.array([-0.35 * look.neck * math.cos(lean), 0.0]) * 0.4
        pen.line(
            [shoulder, mid, centre],
            look.plumage.head if look.neck > 0.2 else look.plumage.body,
            0.075 if look.neck < 0.2 else 0.06,
        )
    pen.disc(centre, look.head_r, look.plumage.head)
    if look.cap:
        pen.polygon(
            [
                centre + look.head_r * np.array([math.cos(t), -math.sin(t)])
                for t in np.linspace(0.6, 2.4, 8)
            ]
            + [centre + (0, -0.3 * look.head_r)],
            look.cap,
        )
    dip = math.radians(8 if attrs["pose"] != "flying" else 0)
    _bill(
        pen,
        centre + look.head_r * np.array([0.85 * math.cos(dip), 0.85 * math.sin(dip)]),
        dip,
        attrs["bill"],
        look.bill_colour,
    )
    dark = sum(look.plumage.head) < 200
    pen.disc(
        centre + look.head_r * np.array([0.35, -0.25]),
        0.022,
        (220, 200, 80) if dark else (15, 15, 15),
    )


def _draw_bird(
    layer: Image.Image,
    centre: tuple[float, float],
    scale: float,
    facing: int,
    attrs: dict[str, str],
    look: _BirdLook,
    rng: np.random.Generator,
) -> None:
    pen = _Pen(ImageDraw.Draw(layer), centre, scale, facing)
    body = _Frame((0.0, 0.0), look.tilt)
    pose, feet = attrs["pose"], attrs["feet"]
    flying = pose == "flying"
    if flying:
        _spread_wing(pen, body, look, attrs["wing"], near=False)
    if pose != "swimming":
        _legs(pen, body, look, feet, flying, near=False)
    tail = [
        body.at(-0.8 * look.a, -0.45 * look.b),
        body.at(-look.a - 0.16, -0.3 * look.b),
        body.at(-look.a - 0.14, 0.05 * look.b),
        body.at(-0.8 * look.a, 0.3 * look.b),
    ]
    pen.polygon(tail, _shade(look.plumage.wing, 0.9))
    pen.polygon(body.ellipse(look.a, look.b), look.plumage.body)
    belly = _Frame(body.at(0.05 * look.a, 0.45 * look.b), look.tilt)
    pen.polygon(belly.ellipse(0.75 * look.a, 0.5 * look.b), look.plumage.belly)
    if pose != "swimming":
        _legs(pen, body, look, feet, flying, near=True)
    _head(pen, body, look, attrs)
    if flying:
        _spread_wing(pen, body, look, attrs["wing"], near=True)
    else:
        _folded_wing(pen, body, look, attrs["wing"], rng)


# --------------------------------------------------------------------------- composition


def render_scale(size: int) -> int:
    """Supersampling factor: draw at >= 128 px, then box-filter down (anti-aliasing)."""
    return max(1, min(4, math.ceil(128 / size)))


def bird_sprite(rng, attrs: dict[str, str], side: int) -> tuple[Image.Image, float, float]:
    """The bird alone (RGBA, cropped to it), the column of its body centre in the crop and,
    for a swimmer, the waterline row."""
    look = _look(rng, attrs)
    scale = side * rng.uniform(*_SIZE_SCALE[attrs["size"]])
    facing = 1 if rng.random() < 0.5 else -1
    half = math.ceil(scale) + 2  # the drawing reaches at most 0.91 * scale from the body centre
    layer = Image.new("RGBA", (2 * half, 2 * half), (0, 0, 0, 0))
    centre = (float(half), float(half))
    _draw_bird(layer, centre, scale, facing, attrs, look, rng)
    waterline = 2 * half
    if attrs["pose"] == "swimming":  # the water hides the lower body
        waterline = int(centre[1] + 0.4 * look.b * scale)
        alpha = np.asarray(layer.getchannel("A")).copy()
        alpha[waterline:] = 0
        layer.putalpha(Image.fromarray(alpha, "L"))
    box = layer.getbbox()
    assert box is not None, "the bird drawing is empty"
    return layer.crop(box), centre[0] - box[0], float(waterline - box[1])


def _place(rng, pose: str, w: int, h: int, side: int, ground: int) -> tuple[int, int]:
    """Top-left corner of the bird: feet on the ground, a swimmer on the water, a flyer anywhere."""
    x = int(rng.integers(0, max(1, side - w + 1)))
    if pose == "flying":
        return x, int(rng.uniform(0, max(0, side - h)) * 0.75)
    # Where the feet (a swimmer's waterline) may be: below the horizon, or anywhere on a perch.
    if pose == "perched":
        lo = 0.3 * side
    else:
        lo = ground + (0.1 if pose == "swimming" else 0.06) * side
    hi = side * (0.94 if pose == "swimming" else 0.98)
    bottom = rng.uniform(max(lo, h), max(hi, h))
    return x, int(min(bottom, side) - h)


def _branch(
    draw: ImageDraw.ImageDraw, rng, x0: int, x1: int, y: float, side: int, width: int
) -> None:
    """A branch under a perched bird, reaching in from one edge of the picture."""
    if rng.random() < 0.5:
        xa, xb = -1.0, x1 + rng.uniform(0.05, 0.2) * side
    else:
        xa, xb = x0 - rng.uniform(0.05, 0.2) * side, side + 1.0
    slope = rng.uniform(-0.12, 0.12)
    mid = (x0 + x1) / 2
    colour = _jitter(rng, (92, 66, 44), 10)
    draw.line(
        [(xa, y + slope * (xa - mid)), (xb, y + slope * (xb - mid))], fill=colour, width=width
    )


def _post(draw: ImageDraw.ImageDraw, rng, x: float, top: float, side: int) -> None:
    half = side * rng.uniform(0.018, 0.032)
    draw.rectangle([x - half, top, x + half, side], fill=_jitter(rng, (112, 96, 76), 12))


def _rock(draw: ImageDraw.ImageDraw, rng, x0: int, x1: int, feet_y: float, side: int) -> None:
    """A low rock in the water for a bird standing there."""
    half = (x1 - x0) * rng.uniform(0.35, 0.55)
    mid, height = (x0 + x1) / 2, side * rng.uniform(0.04, 0.07)
    colour = _jitter(rng, (112, 106, 96), 12)
    draw.ellipse([mid - half, feet_y - 0.02 * side, mid + half, feet_y + height], fill=colour)
    draw.line(
        [(mid - half, feet_y + height), (mid + half, feet_y + height)],
        fill=_jitter(rng, (185, 210, 228), 8),
        width=max(1, side // 64),
    )


def finish(rng, img: Image.Image, k: int) -> Image.Image:
    """Downsample, then vary the light (brightness, colour cast, across the picture), add noise."""
    small = img.reduce(k) if k > 1 else img
    gain = rng.uniform(0.85, 1.12) * rng.normal(1.0, 0.035, 3)  # a camera's white balance
    arr = np.asarray(small, dtype=np.float32) * gain.astype(np.float32)
    arr += _smooth_noise(rng, small.size[0], 10.0)
    arr += _sensor_noise(rng, arr.shape, 3.0)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def render_example(
    seed: int, img_id: int, y: int, place: int, size: int = 64, bird_scale: float = 1.0
) -> tuple[Image.Image, dict]:
    """Draw one image and its attribute row (``ATTRIBUTE_COLUMNS``), reproducibly.

    Args:
        seed: dataset seed.
        img_id: image id; with ``seed`` it keys the image's own random generator.
        y: class, 0 = landbird, 1 = waterbird.
        place: background, 0 = land, 1 = water, or unseen: 2 = snow, 3 = desert.
        size: image side in pixels.
        bird_scale: multiplies the bird's size (1: about 25-45% of the side, as drawn by default).
    """
    rng = np.random.default_rng([seed, img_id])
    attrs = sample_attributes(rng, y, place)
    k = render_scale(size)
    side = size * k
    img, ground = BACKGROUND_DRAWERS[attrs["background"]](rng, side)
    sprite, body_x, waterline = bird_sprite(rng, attrs, round(side * bird_scale))
    w, h = sprite.size
    x, top = _place(rng, attrs["pose"], w, h, side, ground)
    draw = ImageDraw.Draw(img)
    if attrs["pose"] == "perched" and attrs["background"] == "forest":
        _branch(draw, rng, x, x + w, top + h - 0.02 * side, side, max(2, round(0.035 * side)))
    elif attrs["pose"] == "perched":  # a fence post or a mooring pile
        _post(draw, rng, x + body_x, top + h - 0.015 * side, side)
    elif attrs["pose"] == "standing" and place == 1:
        _rock(draw, rng, x, x + w, top + h, side)
    img.paste(sprite, (x, top), sprite)
    if attrs["pose"] == "swimming":
        line_y = top + waterline
        draw.line(
            [(x - 0.04 * side, line_y), (x + w + 0.04 * side, line_y)],
            fill=_jitter(rng, (185, 210, 228), 8),
            width=max(1, side // 64),
        )
    box = (x // k, top // k, min(size, -(-(x + w) // k)), min(size, -(-(top + h) // k)))
    row = {"img_id": img_id, "y": y, "place": place, **attrs}
    row.update(zip(("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"), box, strict=True))
    return finish(rng, img, k), {c: row[c] for c in ATTRIBUTE_COLUMNS}
