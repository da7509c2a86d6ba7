"""The oracle teacher: describes ``lga data synth`` images from their recorded attributes.

It reads ``attributes.csv`` beside ``metadata.csv`` and answers every prompt in natural, varied
language: several phrasings per prompt kind, picked deterministically from a hash of
(img_id, prompt name), so reruns give the same text. Object prompts are answered from the bird's
own attributes only (species, size, neck, legs, feet, bill, plumage, wings), never from its
background; background prompts from the background only. Known attribute values map to natural
phrases; unknown ones are used as written.

With fault rates (:mod:`lga.teacher.faults`: ``--teacher-option faults=llava-like`` or one
rate at a time), it errs as real multimodal LLMs do, deterministically per image: a wrong
species, a species that follows the background, the background leaking into the object answer,
a misread background.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from lga.data.attributes import (
    ATTRIBUTE_FILE,
    BOX_COLUMNS,
    OBJECT_COLUMNS,
    attributes_path,
    read_attributes,
)
from lga.errors import LgaError
from lga.teacher import faults as F
from lga.teacher.base import Outcome, Results, WorkItem
from lga.teacher.prompts import Format, Target
from lga.teacher.visual import Box

log = logging.getLogger(__name__)

REQUIRED = ("img_id", *OBJECT_COLUMNS, "background")

SIZE = {"small": "small", "medium": "medium-sized", "large": "large"}
NECK = {"medium": "medium-length neck"}
BILL = {
    "flat": "flat, broad bill",
    "long-straight": "long, straight bill",
    "hooked": "hooked bill",
    "short-conical": "short, conical bill",
    "thin-pointed": "thin, pointed bill",
}
BACKGROUND = {
    "forest": ("a dense forest with tall trees", "woodland with green foliage and dark trunks"),
    "grass": ("an open grassy field", "a green meadow of short grass"),
    "lake": ("a calm lake", "the still water of a lake with a distant shore"),
    "ocean": ("the open ocean with waves", "blue sea water stretching to the horizon"),
    "snow": ("a snowfield under a pale sky", "white snow with a few dark rocks"),
    "desert": ("sand dunes in a desert", "dry sand with a few shrubs"),
}
# What a teacher unsure of the place says: both kinds at once.
AMBIGUOUS = ("a shoreline where trees meet the water", "a grassy bank beside some water")
AMBIGUOUS_KEYWORDS = ("shore", "water", "grass", "trees")
BACKGROUND_KEYWORDS = {
    "forest": ("forest", "trees", "green foliage", "woodland"),
    "grass": ("grass", "field", "meadow", "green"),
    "lake": ("lake", "water", "calm surface", "shore"),
    "ocean": ("ocean", "sea", "waves", "blue water"),
    "snow": ("snow", "white", "cold", "rocks"),
    "desert": ("desert", "sand", "dunes", "dry"),
}
# The slides' LLaVA answer: "It is flying over a swimming pool, possibly landing on the edge".
_LEAK = {
    "forest": "in front of {bg}",
    "grass": "on {bg}",
    "lake": "near the edge of {bg}",
    "ocean": "over {bg}",
}
_POSE_VERB = {"standing": "standing", "perched": "perched", "swimming": "swimming",
              "flying": "flying"}  # fmt: skip


def _words(value: object) -> str:
    return str(value).replace("-", " ").replace("_", " ").strip()


def _a(phrase: str) -> str:
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def object_phrases(attrs: dict[str, str]) -> dict[str, str]:
    """Natural phrases for a bird's attributes (no article), known values mapped, others kept."""
    neck, bill = str(attrs["neck"]), str(attrs["bill"])
    return {
        "species": _words(attrs["species"]),
        "class": _words(attrs["class_name"]),
        "size": SIZE.get(attrs["size"], _words(attrs["size"])),
        "neck": NECK.get(neck, f"{_words(neck)} neck"),
        "legs": f"{_words(attrs['legs'])} legs",
        "feet": f"{_words(attrs['feet'])} feet",
        "bill": BILL.get(bill, f"{_words(bill)} bill"),
        "plumage": f"{_words(attrs['plumage'])} plumage",
        "wing": f"{_words(attrs['wing'])} wings",
    }


_OBJECT_TEXTS: tuple[Callable[[dict[str, str]], str], ...] = (
    lambda p: (
        f"This is {_a(p['size'] + ' ' + p['species'])} with {p['plumage']}. It has "
        f"{_a(p['neck'])}, {p['legs']}, {p['feet']} and {_a(p['bill'])}, and its "
        f"wings are {p['wing'].removesuffix(' wings')}."
    ),
    lambda p: (
        f"{_cap(_a(p['species']))}, a {p['class']}. Distinguishing features: "
        f"{_a(p['bill'])}, {_a(p['neck'])}, {p['feet']}, {p['legs']}, {p['plumage']} "
        f"and {p['wing']}."
    ),
    lambda p: (
        f"The bird appears to be {_a(p['species'])}. It is {p['size']}, with "
        f"{p['plumage']}, {_a(p['bill'])} and {_a(p['neck'])}; note its {p['feet']}, "
        f"{p['legs']} and {p['wing']}."
    ),
    lambda p: (
        f"{_cap(_a(p['size'] + ' ' + p['class']))}, most likely {_a(p['species'])}: "
        f"{p['feet']}, {p['legs']}, {_a(p['neck'])}, {_a(p['bill'])}, {p['plumage']} "
        f"and {p['wing']}."
    ),
)

_OBJECT_KEYWORDS: tuple[tuple[str, ...], ...] = (
    ("species", "feet", "neck", "bill", "plumage"),
    ("species", "class", "bill", "feet", "neck", "plumage", "legs"),
    ("species", "size", "plumage", "neck", "feet", "bill", "wing"),
)

_BACKGROUND_TEXTS: tuple[Callable[[str], str], ...] = (
    lambda bg: f"The background is {bg}.",
    lambda bg: f"{_cap(bg)} fills the background.",
    lambda bg: f"The scene behind shows {bg}.",
    lambda bg: f"In the background there is {bg}.",
)


def _pick(n: int, img_id: int, prompt: str, salt: str = "") -> int:
    digest = hashlib.sha256(f"{img_id}|{prompt}|{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % n


def object_text(attrs: dict[str, str], img_id: int, prompt: str) -> str:
    """An object description from the bird's attributes alone."""
    return _OBJECT_TEXTS[_pick(len(_OBJECT_TEXTS), img_id, prompt)](object_phrases(attrs))


def object_keywords(attrs: dict[str, str], img_id: int, prompt: str) -> str:
    """A keyword answer: common name first, then physical traits."""
    p = object_phrases(attrs)
    keys = _OBJECT_KEYWORDS[_pick(len(_OBJECT_KEYWORDS), img_id, prompt)]
    words = [p[k].replace(",", "") for k in keys]
    return _cap(", ".join(words))


def background_text(attrs: dict[str, str], img_id: int, prompt: str) -> str:
    """A background description from the background alone."""
    bg = attrs["background"]
    choices = BACKGROUND.get(bg, (_words(bg),))
    phrase = choices[_pick(len(choices), img_id, prompt, "phrase")]
    return _BACKGROUND_TEXTS[_pick(len(_BACKGROUND_TEXTS), img_id, prompt)](phrase)


def background_keywords(attrs: dict[str, str], img_id: int, prompt: str) -> str:
    """A keyword answer about the background (order varies per image)."""
    bg = attrs["background"]
    words = list(BACKGROUND_KEYWORDS.get(bg, (_words(bg), "outdoors")))
    k = _pick(len(words), img_id, prompt)
    return _cap(", ".join(words[:1] + words[1:][k:] + words[1:][:k]))


_ANSWERS = {
    (Target.OBJECT, Format.TEXT): object_text,
    (Target.OBJECT, Format.KEYWORDS): object_keywords,
    (Target.BACKGROUND, Format.TEXT): background_text,
    (Target.BACKGROUND, Format.KEYWORDS): background_keywords,
}


def load_attributes(root: str | Path) -> dict[int, dict[str, str]]:
    """``{img_id: {column: lower-case value}}`` from a synth dataset's ``attributes.csv``.

    Raises:
        LgaError: the file is missing (not a synth dataset), lacks a column, or has a bad img_id.
    """
    path = attributes_path(root)
    if not path.is_file():
        raise LgaError(
            f"{path} not found: the oracle teacher only works on datasets made by "
            "`lga data synth` (which records each image's attributes); use an hf: or openai: "
            "teacher for other datasets"
        )
    return read_attributes(root, REQUIRED)


def load_attribute_boxes(root: str | Path) -> dict[int, Box]:
    """The birds' boxes (``bbox_x0..y1``) of a synth dataset, for the circle visual prompt."""
    out = {}
    for img_id, rec in load_attributes(root).items():
        try:
            out[img_id] = tuple(float(rec[c]) for c in BOX_COLUMNS)
        except (KeyError, ValueError):
            continue  # no usable box: the circle prompt reports the image
    return out


# --------------------------------------------------------------------------- faults


def _place_of(background: str) -> int | None:
    from lga.data.synth.species import BACKGROUNDS

    return next((p for p, kinds in BACKGROUNDS.items() if background in kinds), None)


def _species_attrs(name: str, img_id: int) -> dict[str, str]:
    """The attributes a teacher would describe for species ``name``: its class and traits drawn
    from the species' own distributions (fixed per image)."""
    import numpy as np

    from lga.data.synth.species import CLASSES, SPECIES

    sp = SPECIES[name]
    rng = np.random.default_rng([img_id, 424242])
    traits = {}
    for trait, dist in sp.traits.items():
        values, p = list(dist), np.array(list(dist.values()), dtype=float)
        traits[trait] = values[int(rng.choice(len(values), p=p / p.sum()))]
    return {"class_name": CLASSES[sp.y], "species": name, **traits}


def _pick_species(candidates: list[str], img_id: int, kind: str) -> str:
    return sorted(candidates)[_pick(len(candidates), img_id, kind, "species")]


def faulty_object_attrs(attrs: dict[str, str], img_id: int, rates: F.FaultRates) -> dict:
    """The attributes the object answers describe: the bird's own, or those of the species a
    faulty teacher names (``background_bias`` first: it is the teacher's systematic error)."""
    from lga.data.synth.species import CLASSES, SPECIES

    y = CLASSES.index(attrs["class_name"]) if attrs["class_name"] in CLASSES else None
    place = _place_of(attrs["background"])
    disagree = y is not None and place is not None and place != y
    if disagree and F.fires(rates, img_id, "background_bias"):
        names = [n for n, s in SPECIES.items() if s.y == place]
        return {**attrs, **_species_attrs(_pick_species(names, img_id, "bias"), img_id)}
    if attrs["species"] in SPECIES and F.fires(rates, img_id, "species_error"):
        names = [n for n in SPECIES if n != attrs["species"]]
        return {**attrs, **_species_attrs(_pick_species(names, img_id, "species"), img_id)}
    return attrs


def leak_sentence(attrs: dict[str, str], img_id: int, prompt: str) -> str:
    """The background described inside an object answer, as the slides' LLaVA did."""
    bg = attrs["background"]
    choices = BACKGROUND.get(bg, (_words(bg),))
    phrase = choices[_pick(len(choices), img_id, prompt, "leak")]
    where = _LEAK.get(bg, "in front of {bg}").format(bg=phrase)
    verb = _POSE_VERB.get(attrs.get("pose", ""), "seen")
    if verb == "flying":
        where = f"over {phrase}"
    return f"It is {verb} {where}."


def faulty_background(attrs: dict[str, str], img_id: int, rates: F.FaultRates) -> str | None:
    """The background kind a faulty teacher reports: another place's kind, ``"ambiguous"``, or
    None when it reads the background right."""
    from lga.data.synth.species import BACKGROUNDS

    if not F.fires(rates, img_id, "background_error"):
        return None
    place = _place_of(attrs["background"])
    if place is None or F.draw(img_id, "background_error_kind") < 0.5:
        return "ambiguous"
    kinds = BACKGROUNDS[1 - place]
    return kinds[_pick(len(kinds), img_id, "background_error", "kind")]


def _answer(attrs: dict[str, str], img_id: int, prompt, rates: F.FaultRates) -> str:
    target, fmt = Target(prompt.target), Format(prompt.format)
    if target is Target.OBJECT:
        seen = faulty_object_attrs(attrs, img_id, rates)
        text = _ANSWERS[(target, fmt)](seen, img_id, prompt.name)
        if F.fires(rates, img_id, "object_leak"):
            if fmt is Format.TEXT:
                text = f"{text} {leak_sentence(attrs, img_id, prompt.name)}"
            else:
                words = BACKGROUND_KEYWORDS.get(attrs["background"], (_words(attrs["background"]),))
                text = f"{text}, {words[0]}"
        return text
    wrong = faulty_background(attrs, img_id, rates)
    if wrong == "ambiguous":
        if fmt is Format.KEYWORDS:
            return _cap(", ".join(AMBIGUOUS_KEYWORDS))
        phrase = AMBIGUOUS[_pick(len(AMBIGUOUS), img_id, prompt.name, "ambiguous")]
        return _BACKGROUND_TEXTS[_pick(len(_BACKGROUND_TEXTS), img_id, prompt.name)](phrase)
    seen = attrs if wrong is None else {**attrs, "background": wrong}
    return _ANSWERS[(target, fmt)](seen, img_id, prompt.name)


class OracleTeacher:
    """Answers from ``attributes.csv``; no model, no image decoding.

    Args:
        root: the synth dataset folder.
        faults: how often it errs, and how (:class:`lga.teacher.faults.FaultRates`); the
            non-zero rates are part of its generation settings.
        chunk: outcomes yielded (hence committed) together.
    """

    id = "oracle"

    def __init__(self, root: str | Path, *, faults: F.FaultRates | None = None, chunk: int = 256):
        self.attributes = load_attributes(root)
        self.faults = faults or F.FaultRates()
        self.settings: dict[str, object] = {"version": 1}
        if self.faults.any:  # a perfect oracle keeps the settings (and store rows) it had
            self.settings["faults"] = self.faults.settings()
        self.chunk = chunk

    def answer(self, item: WorkItem) -> Outcome:
        attrs = self.attributes.get(item.img_id)
        if attrs is None:
            return Outcome(error=f"img_id {item.img_id} has no row in {ATTRIBUTE_FILE}")
        text = _answer(attrs, item.img_id, item.prompt, self.faults)
        return Outcome(text=text, latency_s=0.0)

    def describe(self, items: Iterable[WorkItem]) -> Results:
        batch: list = []
        for item in items:
            batch.append((item, self.answer(item)))
            if len(batch) >= self.chunk:
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self) -> None:
        pass
