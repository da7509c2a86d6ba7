"""Waterbirds in miniature: procedurally drawn birds on land/water backgrounds.

The embedded offline dataset, written in the WILDS Waterbirds layout (``metadata.csv`` + PNG
images) with a ``dataset.yaml`` and per-image bird attributes in ``attributes.csv``.

It reproduces the phenomenon that makes Waterbirds hard: the background (land: forest, grass;
water: lake, ocean) fills most of the picture with large, low-frequency colour differences, so it
is the easy cue; the bird is small (about 25-45% of the image side) and its class shows in finer
details (feet, neck, legs, bill, plumage, pose) that vary within a class and overlap between
classes. In the training split the background matches the class with probability
``correlation``; validation and test are balanced over the four (class, place) groups.

Every image is drawn from its own generator ``np.random.default_rng([seed, img_id])``, so output
is byte-identical for a seed and images can be drawn in any order or in parallel.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from lga.data.dataset import METADATA_FILE
from lga.data.spec import DATASET_FILE, DatasetSpec
from lga.errors import LgaError
from lga.outputs import make_output_dir

log = logging.getLogger(__name__)

__all__ = [
    "ATTRIBUTE_COLUMNS",
    "ATTRIBUTE_FILE",
    "ATTRIBUTE_VALUES",
    "SPECIES",
    "SYNTH_SPEC",
    "SynthConfig",
    "generate",
    "plan",
    "render_example",
    "sample_attributes",
]

# Bump when drawing or sampling changes: a folder made by another version is regenerated.
GENERATOR_VERSION = 1
ATTRIBUTE_FILE = "attributes.csv"
MARKER_FILE = "synth.yaml"  # written first: marks a folder as (possibly partial) synth output
IMAGE_DIR = "images"

ATTRIBUTE_COLUMNS = (
    "img_id",
    "y",
    "place",
    "class_name",
    "species",
    "size",
    "neck",
    "legs",
    "feet",
    "bill",
    "plumage",
    "wing",
    "pose",
    "background",
    "bbox_x0",
    "bbox_y0",
    "bbox_x1",
    "bbox_y1",
)
CLASSES = ("landbird", "waterbird")
PLACES = ("land", "water")
BACKGROUNDS = {0: ("forest", "grass"), 1: ("lake", "ocean")}

SYNTH_SPEC = DatasetSpec(
    name="synth-waterbirds",
    classes=list(CLASSES),
    spurious_attribute="background",
    places=list(PLACES),
    object_noun="bird",
    class_templates=["a photo of a {}."],
    spurious_prompts={
        "land": ["a photo of land.", "a photo of a forest.", "a photo of a grass field."],
        "water": ["a photo of water.", "a photo of a lake.", "a photo of the ocean."],
    },
    prompt_set="waterbirds",  # the seed's four prompts, verbatim, as for real Waterbirds
)

RGB = tuple[int, int, int]


# --------------------------------------------------------------------------- configuration


class SynthConfig(BaseModel):
    """What to generate. The defaults match the split sizes of Waterbirds.

    Attributes:
        seed: seed of the whole dataset (image ``i`` uses ``default_rng([seed, i])``).
        n_train, n_val, n_test: images per split.
        correlation: P(background matches class) in the training split: waterbirds on water,
            landbirds on land. Validation and test are balanced over the four groups.
        size: image side in pixels.
        train_waterbird_fraction: share of waterbirds in the training split (Waterbirds: 23.2%).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    n_train: int = Field(4795, gt=0)
    n_val: int = Field(1199, gt=0)
    n_test: int = Field(5794, gt=0)
    correlation: float = Field(0.95, ge=0.5, le=1.0)
    size: int = Field(64, ge=32, le=1024)
    # 1113 of the 4795 training images of Waterbirds are waterbirds.
    bird_scale: float = Field(1.0, gt=0.2, le=2.5)
    train_waterbird_fraction: float = Field(0.2321, gt=0.0, lt=1.0)

    @property
    def n_total(self) -> int:
        return self.n_train + self.n_val + self.n_test


# --------------------------------------------------------------------------- attributes


@dataclass(frozen=True)
class Species:
    """A made-up but plausible species: a distribution over each visible attribute."""

    name: str
    y: int
    traits: dict[str, dict[str, float]]  # attribute -> {value: probability}
    bill_colours: tuple[RGB, ...]
    leg_colours: tuple[RGB, ...]
    cap: RGB | None = None  # a patch of colour on the crown (woodpecker, goldfinch)


TRAITS = ("size", "neck", "legs", "feet", "bill", "plumage", "wing", "pose")


def _species(name: str, y: int, *, bill_colours, leg_colours, cap=None, **traits) -> Species:
    assert set(traits) == set(TRAITS), f"{name}: traits {sorted(traits)}"
    ordered = {k: traits[k] for k in TRAITS}  # one sampling order for every species
    return Species(name, y, ordered, bill_colours, leg_colours, cap)


_ORANGE, _YELLOW, _PINK = (230, 130, 40), (225, 195, 60), (215, 160, 140)
_DARK, _GREY = (45, 45, 45), (95, 95, 85)

# The class shows in several attributes, none of them alone decisive: herons have clawed feet,
# gulls and woodpeckers share straight bills, ducks can be small, cormorants perch.
_WATERBIRDS = (
    _species(
        "gull",
        1,
        size={"medium": 0.7, "large": 0.3},
        neck={"short": 0.6, "medium": 0.4},
        legs={"short": 0.8, "long": 0.2},
        feet={"webbed": 1.0},
        bill={"long-straight": 0.5, "hooked": 0.5},
        plumage={"white and grey": 0.8, "white": 0.2},
        wing={"plain": 0.6, "spotted": 0.4},
        pose={"standing": 0.35, "swimming": 0.3, "flying": 0.35},
        bill_colours=(_YELLOW, (235, 170, 50)),
        leg_colours=(_PINK, _YELLOW),
    ),
    _species(
        "duck",
        1,
        size={"medium": 0.7, "small": 0.3},
        neck={"short": 0.5, "medium": 0.5},
        legs={"short": 1.0},
        feet={"webbed": 1.0},
        bill={"flat": 1.0},
        plumage={"brown and green": 0.5, "brown": 0.3, "black and white": 0.2},
        wing={"plain": 0.5, "barred": 0.5},
        pose={"swimming": 0.6, "standing": 0.25, "flying": 0.15},
        bill_colours=(_YELLOW, _ORANGE, (70, 70, 55)),
        leg_colours=(_ORANGE,),
    ),
    _species(
        "heron",
        1,
        size={"large": 0.8, "medium": 0.2},
        neck={"long": 1.0},
        legs={"long": 1.0},
        feet={"clawed": 0.7, "webbed": 0.3},
        bill={"long-straight": 1.0},
        plumage={"grey and white": 0.6, "white": 0.4},
        wing={"plain": 0.8, "barred": 0.2},
        pose={"standing": 0.7, "flying": 0.3},
        bill_colours=((210, 170, 60), (200, 150, 50)),
        leg_colours=((90, 90, 70), (190, 170, 70)),
    ),
    _species(
        "cormorant",
        1,
        size={"large": 0.5, "medium": 0.5},
        neck={"long": 0.6, "medium": 0.4},
        legs={"short": 1.0},
        feet={"webbed": 1.0},
        bill={"hooked": 1.0},
        plumage={"black": 0.8, "brown": 0.2},
        wing={"plain": 0.6, "barred": 0.4},
        pose={"swimming": 0.4, "standing": 0.3, "perched": 0.3},
        bill_colours=(_GREY, (200, 160, 60)),
        leg_colours=((35, 35, 35),),
    ),
)
_LANDBIRDS = (
    _species(
        "sparrow",
        0,
        size={"small": 1.0},
        neck={"short": 0.85, "medium": 0.15},
        legs={"short": 1.0},
        feet={"clawed": 1.0},
        bill={"short-conical": 1.0},
        plumage={"brown and grey": 0.8, "brown": 0.2},
        wing={"barred": 0.6, "spotted": 0.4},
        pose={"perched": 0.5, "standing": 0.35, "flying": 0.15},
        bill_colours=((90, 80, 70), (190, 165, 120)),
        leg_colours=((150, 120, 100), (110, 90, 80)),
    ),
    _species(
        "finch",
        0,
        size={"small": 1.0},
        neck={"short": 1.0},
        legs={"short": 1.0},
        feet={"clawed": 1.0},
        bill={"short-conical": 1.0},
        plumage={"yellow and black": 0.5, "red and brown": 0.5},
        wing={"barred": 0.7, "plain": 0.3},
        pose={"perched": 0.6, "standing": 0.2, "flying": 0.2},
        bill_colours=((215, 175, 130), (90, 80, 70)),
        leg_colours=((170, 140, 120),),
        cap=(30, 30, 30),
    ),
    _species(
        "woodpecker",
        0,
        size={"medium": 0.7, "small": 0.3},
        neck={"short": 0.6, "medium": 0.4},
        legs={"short": 1.0},
        feet={"clawed": 1.0},
        bill={"long-straight": 0.6, "thin-pointed": 0.4},
        plumage={"black and white": 0.8, "brown and grey": 0.2},
        wing={"spotted": 0.6, "barred": 0.4},
        pose={"perched": 0.7, "flying": 0.3},
        bill_colours=(_DARK, (80, 80, 75)),
        leg_colours=(_GREY,),
        cap=(200, 35, 35),
    ),
    _species(
        "warbler",
        0,
        size={"small": 1.0},
        neck={"short": 1.0},
        legs={"short": 0.9, "long": 0.1},
        feet={"clawed": 1.0},
        bill={"thin-pointed": 1.0},
        plumage={"yellow and olive": 0.7, "grey and white": 0.3},
        wing={"plain": 0.5, "barred": 0.5},
        pose={"perched": 0.5, "standing": 0.2, "flying": 0.3},
        bill_colours=(_DARK, (70, 65, 55)),
        leg_colours=((150, 130, 110), (90, 85, 80)),
    ),
)
SPECIES: dict[str, Species] = {s.name: s for s in (*_WATERBIRDS, *_LANDBIRDS)}


@dataclass(frozen=True)
class Plumage:
    body: RGB
    belly: RGB
    head: RGB
    wing: RGB
    accent: RGB  # wing bars and spots


PLUMAGES: dict[str, Plumage] = {
    "white and grey": Plumage(
        (236, 236, 232), (242, 242, 240), (240, 240, 236), (150, 155, 162), (40, 40, 45)
    ),
    "grey and white": Plumage(
        (140, 146, 152), (228, 228, 224), (232, 232, 228), (110, 116, 124), (235, 235, 235)
    ),
    "white": Plumage(
        (244, 244, 240), (248, 248, 246), (246, 246, 242), (222, 222, 218), (170, 170, 165)
    ),
    "brown and green": Plumage(
        (128, 92, 62), (170, 140, 110), (30, 100, 55), (112, 104, 94), (55, 70, 165)
    ),
    "brown": Plumage((136, 100, 66), (172, 142, 106), (122, 90, 60), (104, 78, 54), (60, 45, 30)),
    "black": Plumage((32, 32, 38), (50, 48, 46), (28, 28, 32), (48, 48, 54), (100, 100, 100)),
    "black and white": Plumage(
        (28, 28, 30), (232, 232, 228), (30, 30, 32), (34, 34, 36), (238, 238, 238)
    ),
    "brown and grey": Plumage(
        (142, 106, 76), (176, 172, 162), (132, 126, 120), (118, 84, 54), (58, 40, 26)
    ),
    "yellow and black": Plumage(
        (236, 202, 42), (242, 218, 86), (236, 202, 42), (32, 32, 32), (240, 240, 240)
    ),
    "red and brown": Plumage(
        (152, 112, 86), (204, 164, 142), (192, 52, 46), (120, 86, 60), (232, 222, 210)
    ),
    "yellow and olive": Plumage(
        (196, 192, 72), (236, 216, 82), (214, 200, 62), (118, 126, 60), (232, 232, 200)
    ),
}


def _values(attr: str) -> tuple[str, ...]:
    seen = dict.fromkeys(v for s in SPECIES.values() for v in s.traits[attr])
    return tuple(seen)


ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "class_name": CLASSES,
    "species": tuple(SPECIES),
    "size": ("small", "medium", "large"),
    "neck": ("short", "medium", "long"),
    "legs": ("short", "long"),
    "feet": ("webbed", "clawed"),
    "bill": ("flat", "long-straight", "hooked", "short-conical", "thin-pointed"),
    "plumage": tuple(PLUMAGES),
    "wing": ("plain", "barred", "spotted"),
    "pose": ("standing", "swimming", "flying", "perched"),
    "background": ("forest", "grass", "lake", "ocean"),
}
assert all(set(_values(a)) <= set(ATTRIBUTE_VALUES[a]) for a in TRAITS)


def _pick(rng: np.random.Generator, dist: dict[str, float]) -> str:
    u, acc = rng.random() * sum(dist.values()), 0.0
    for value, p in dist.items():
        acc += p
        if u < acc:
            return value
    return value  # rounding: u == sum


def sample_attributes(rng: np.random.Generator, y: int, place: int) -> dict[str, str]:
    """Species, visible traits and background kind of one image of class ``y`` at ``place``."""
    species = [s for s in SPECIES.values() if s.y == y]
    sp = species[int(rng.integers(len(species)))]
    attrs = {"class_name": CLASSES[y], "species": sp.name}
    attrs.update({k: _pick(rng, dist) for k, dist in sp.traits.items()})
    if attrs["pose"] == "swimming" and place == 0:
        attrs["pose"] = "standing"  # nothing swims on grass
    attrs["background"] = BACKGROUNDS[place][int(rng.integers(2))]
    return attrs


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


_BACKGROUND_DRAWERS = {"forest": _forest, "grass": _grass, "lake": _lake, "ocean": _ocean}


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


def _render_scale(size: int) -> int:
    """Supersampling factor: draw at >= 128 px, then box-filter down (anti-aliasing)."""
    return max(1, min(4, math.ceil(128 / size)))


def _bird_sprite(rng, attrs: dict[str, str], side: int) -> tuple[Image.Image, float, float]:
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


def _finish(rng, img: Image.Image, k: int) -> Image.Image:
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
        place: background, 0 = land, 1 = water.
        size: image side in pixels.
        bird_scale: multiplies the bird's size (1: about 25-45% of the side, as drawn by default).
    """
    rng = np.random.default_rng([seed, img_id])
    attrs = sample_attributes(rng, y, place)
    k = _render_scale(size)
    side = size * k
    img, ground = _BACKGROUND_DRAWERS[attrs["background"]](rng, side)
    sprite, body_x, waterline = _bird_sprite(rng, attrs, round(side * bird_scale))
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
    return _finish(rng, img, k), {c: row[c] for c in ATTRIBUTE_COLUMNS}


# --------------------------------------------------------------------------- splits


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def _train_groups(
    n: int, waterbird_fraction: float, correlation: float
) -> dict[tuple[int, int], int]:
    """(y, place) -> count: class balance as given, background = class with P(correlation)."""
    n_water_birds = _round(n * waterbird_fraction)
    counts = {}
    for y, n_y in ((0, n - n_water_birds), (1, n_water_birds)):
        minority = _round(n_y * (1 - correlation))
        counts[(y, y)] = n_y - minority
        counts[(y, 1 - y)] = minority
    return counts


def _balanced_groups(n: int) -> dict[tuple[int, int], int]:
    groups = [(0, 0), (0, 1), (1, 0), (1, 1)]
    return {g: n // 4 + (i < n % 4) for i, g in enumerate(groups)}


def plan(cfg: SynthConfig) -> pd.DataFrame:
    """Rows ``img_id, split, y, place`` of the whole dataset (ids from 1, split by split).

    Group counts are exact (not sampled); the order within a split is shuffled by the seed.
    """
    parts, next_id = [], 1
    sizes = (
        (cfg.n_train, _train_groups(cfg.n_train, cfg.train_waterbird_fraction, cfg.correlation)),
        (cfg.n_val, _balanced_groups(cfg.n_val)),
        (cfg.n_test, _balanced_groups(cfg.n_test)),
    )
    for split, (n, counts) in enumerate(sizes):
        yp = np.array([g for g, c in counts.items() for _ in range(c)], dtype=np.int64).reshape(
            -1, 2
        )
        yp = yp[np.random.default_rng([cfg.seed, 0, split]).permutation(n)]
        ids = np.arange(next_id, next_id + n)
        parts.append(
            pd.DataFrame({"img_id": ids, "split": split, "y": yp[:, 0], "place": yp[:, 1]})
        )
        next_id += n
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- writing


def _image_name(img_id: int) -> str:
    return f"{img_id:06d}.png"


def _render_to_file(args: tuple[int, int, int, int, int, float, str]) -> dict:
    seed, img_id, y, place, size, bird_scale, folder = args
    img, row = render_example(seed, img_id, y, place, size, bird_scale)
    # zlib level 3: a third faster than the default 6, files about 10% larger.
    img.save(os.path.join(folder, _image_name(img_id)), format="PNG", compress_level=3)
    return row


def _marker(cfg: SynthConfig) -> str:
    return yaml.safe_dump(
        {"generator": "lga.data.synth", "version": GENERATOR_VERSION, "config": cfg.model_dump()},
        sort_keys=False,
    )


def _prepare(out: Path, cfg: SynthConfig) -> bool:
    """Make ``out`` ready to write into; True when it already holds this very dataset."""
    marker = out / MARKER_FILE
    if out.exists() and not out.is_dir():
        raise LgaError(f"cannot generate into {out}: it is a file, not a folder")
    if not out.exists() or not any(out.iterdir()):
        make_output_dir(out, what="dataset folder")
        return False
    if not marker.is_file():
        raise LgaError(
            f"{out} is not empty and is not a folder made by `lga data synth` (no {MARKER_FILE}); "
            "choose a new or empty folder"
        )
    if (out / METADATA_FILE).is_file() and marker.read_text() == _marker(cfg):
        return True
    log.info("replacing the earlier synthetic dataset in %s", out)
    (out / METADATA_FILE).unlink(missing_ok=True)  # first: the folder no longer looks complete
    for name in (ATTRIBUTE_FILE, DATASET_FILE):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / IMAGE_DIR, ignore_errors=True)
    return False


def _write_atomic(path: Path, frame: pd.DataFrame) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False, lineterminator="\n")
    os.replace(tmp, path)


def _render_all(cfg: SynthConfig, todo: pd.DataFrame, folder: Path, workers: int) -> Iterator[dict]:
    jobs = [
        (cfg.seed, int(i), int(y), int(p), cfg.size, cfg.bird_scale, str(folder))
        for i, y, p in todo[["img_id", "y", "place"]].itertuples(index=False)
    ]
    if workers <= 1:
        yield from map(_render_to_file, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_render_to_file, jobs, chunksize=64)


def generate(
    out_dir: str | Path, cfg: SynthConfig | None = None, *, progress: bool = False, workers: int = 1
) -> Path:
    """Write the synthetic dataset into ``out_dir`` (created) and return its path.

    Files: ``images/NNNNNN.png``, ``attributes.csv`` (``ATTRIBUTE_COLUMNS``), ``dataset.yaml``
    (``SYNTH_SPEC``), ``synth.yaml`` (the generator version and config) and, last and atomically,
    ``metadata.csv``: a folder without it is an interrupted run. A folder that already holds the
    same dataset (same config and generator version) is left as it is.

    Args:
        out_dir: the dataset folder: new, empty, or an earlier output of this generator.
        cfg: what to generate (default: ``SynthConfig()``, the sizes of Waterbirds).
        progress: show a progress bar.
        workers: processes drawing images; the output does not depend on it.

    Raises:
        LgaError: ``out_dir`` is a file, or a non-empty folder this generator did not make.
    """
    cfg = cfg or SynthConfig()
    out = Path(out_dir)
    if _prepare(out, cfg):
        log.info("%s already holds this synthetic dataset; nothing to do", out)
        return out
    (out / MARKER_FILE).write_text(_marker(cfg))
    (out / IMAGE_DIR).mkdir(exist_ok=True)
    table = plan(cfg)
    log.info("drawing %d images of %dx%d into %s", len(table), cfg.size, cfg.size, out)
    start = time.perf_counter()
    bar = tqdm(
        _render_all(cfg, table, out / IMAGE_DIR, workers),
        total=len(table),
        desc="synth images",
        unit="img",
        disable=not progress,
    )
    attributes = pd.DataFrame(list(bar), columns=list(ATTRIBUTE_COLUMNS))
    elapsed = time.perf_counter() - start
    log.info(
        "drew %d images in %.1f s (%.0f images/s)",
        len(table),
        elapsed,
        len(table) / max(elapsed, 1e-9),
    )
    _write_atomic(out / ATTRIBUTE_FILE, attributes)
    spec = SYNTH_SPEC.model_dump(mode="json", exclude_none=True)
    (out / DATASET_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    names = table["img_id"].map(_image_name)
    meta = pd.DataFrame(
        {
            "img_id": table["img_id"],
            "img_filename": IMAGE_DIR + "/" + names,
            "y": table["y"],
            "split": table["split"],
            "place": table["place"],
            "place_filename": attributes["background"] + "/" + names,
        }
    )
    _write_atomic(out / METADATA_FILE, meta)
    return out
