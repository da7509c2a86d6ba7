"""The species of "Waterbirds in miniature": classes, places, backgrounds, species and their
traits, plumages, and the sampling of one image's attributes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ("landbird", "waterbird")
PLACES = ("land", "water")
BACKGROUNDS = {0: ("forest", "grass"), 1: ("lake", "ocean")}
# Places no training image has (test images only, ``SynthConfig.n_unseen``): the abstraction
# test. A model that learned the bird holds there; one that learned "balance land and water"
# need not. Place codes follow PLACES: 2 = snow, 3 = desert.
UNSEEN_PLACES = ("snow", "desert")
UNSEEN_BACKGROUNDS = {2: ("snow",), 3: ("desert",)}

RGB = tuple[int, int, int]


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
    "background": ("forest", "grass", "lake", "ocean", "snow", "desert"),
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
    """Species, visible traits and background kind of one image of class ``y`` at ``place``
    (0 land, 1 water, or an unseen place: 2 snow, 3 desert)."""
    species = [s for s in SPECIES.values() if s.y == y]
    sp = species[int(rng.integers(len(species)))]
    attrs = {"class_name": CLASSES[y], "species": sp.name}
    attrs.update({k: _pick(rng, dist) for k, dist in sp.traits.items()})
    if attrs["pose"] == "swimming" and place != 1:
        attrs["pose"] = "standing"  # nothing swims on grass (or snow, or sand)
    kinds = BACKGROUNDS.get(place) or UNSEEN_BACKGROUNDS[place]
    attrs["background"] = kinds[int(rng.integers(len(kinds)))]
    return attrs
