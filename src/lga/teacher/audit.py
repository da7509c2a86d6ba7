"""How often a teacher's stored answers are wrong, on a dataset that knows the truth.

``lga data synth`` records each image's species and background in ``attributes.csv``, so the
answers of any teacher (the faulty oracle, or a real LLaVA run on synthetic images) can be read
back and checked, per image group:

- object answers: the species named (the first of the known species names in the text) is not the
  bird's (``wrong_species``), or is of the other class (``wrong_class``); the answer mentions the
  background (``leak``: a word of place, water or vegetation);
- background answers: the place they describe (land words against water words) is not the image's
  (``wrong_place``), or they describe both or neither (``ambiguous``).

Rates are fractions of the images of each group that have answers; the check reads only the
answers' words, never how they were made.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from lga.data.attributes import read_attributes

# Words of place in an answer; "green" is left out (a plumage colour too).
LAND_WORDS = ("forest", "trees", "woodland", "foliage", "grass", "grassy", "field", "meadow")
WATER_WORDS = ("lake", "water", "ocean", "sea", "waves", "shore", "shoreline", "pond", "river",
               "pool", "beach")  # fmt: skip
OTHER_PLACE_WORDS = ("snow", "snowfield", "desert", "sand", "dunes")
COLUMNS = ("wrong_species", "wrong_class", "leak", "wrong_place", "ambiguous")


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def named_species(text: str, species: tuple[str, ...]) -> str | None:
    """The first known species name in ``text`` (by position), or None."""
    low = text.lower()
    found = [(m.start(), s) for s in species for m in [re.search(rf"\b{s}s?\b", low)] if m]
    return min(found)[1] if found else None


def read_place(text: str) -> str:
    """``land``, ``water``, ``ambiguous`` (both or neither) or ``other`` (snow, desert)."""
    w = _words(text)
    land, water = bool(w & set(LAND_WORDS)), bool(w & set(WATER_WORDS))
    if land != water:
        return "land" if land else "water"
    if not (land or water) and w & set(OTHER_PLACE_WORDS):
        return "other"
    return "ambiguous"


def leaks(text: str) -> bool:
    return bool(_words(text) & set(LAND_WORDS + WATER_WORDS + OTHER_PLACE_WORDS))


def audit_answers(
    answers: pd.DataFrame,
    root: str | Path,
    object_prompts: list[str],
    background_prompts: list[str],
) -> pd.DataFrame:
    """Fault rates per image group of one teacher's answers.

    Args:
        answers: done rows with ``img_id, prompt, text`` (one teacher and settings).
        root: the synth dataset folder (``attributes.csv``).
        object_prompts, background_prompts: the prompt names about the object / background.

    Returns:
        One row per group (``"<class>/<place>"``) and ``all``: ``images`` and the rates of
        ``COLUMNS`` (fractions; NaN where the group has no answer of that kind).
    """
    from lga.data.synth.species import CLASSES, PLACES, SPECIES, UNSEEN_PLACES

    attrs = read_attributes(root, ("img_id", "y", "place", "class_name", "species"))
    places = PLACES + UNSEEN_PLACES
    names = tuple(SPECIES)
    records = []
    for row in answers.itertuples(index=False):
        a = attrs.get(int(row.img_id))
        if a is None or not isinstance(row.text, str):
            continue
        y, place = int(a["y"]), int(a["place"])
        rec = {"img_id": int(row.img_id), "group": f"{CLASSES[y]}/{places[place]}"}
        if row.prompt in object_prompts:
            sp = named_species(row.text, names)
            rec["wrong_species"] = float(sp is not None and sp != a["species"])
            rec["wrong_class"] = float(sp is not None and SPECIES[sp].y != y)
            rec["leak"] = float(leaks(row.text))
        elif row.prompt in background_prompts:
            seen = read_place(row.text)
            rec["wrong_place"] = float(seen not in (places[place], "ambiguous"))
            rec["ambiguous"] = float(seen == "ambiguous")
        else:
            continue
        records.append(rec)
    if not records:
        return pd.DataFrame(columns=["group", "images", *COLUMNS])
    df = pd.DataFrame(records)
    for c in COLUMNS:
        if c not in df:
            df[c] = float("nan")
    per_image = df.groupby(["group", "img_id"])[list(COLUMNS)].mean().reset_index()
    table = per_image.groupby("group").agg(
        images=("img_id", "size"), **{c: (c, "mean") for c in COLUMNS}
    )
    total = per_image[list(COLUMNS)].mean().to_frame("all").T
    total.insert(0, "images", len(per_image))
    return pd.concat([table, total]).rename_axis("group").reset_index()


def audit_store(store: str | Path, root: str | Path) -> list[tuple[str, dict, pd.DataFrame]]:
    """:func:`audit_answers` for every (teacher, settings) of ``store`` on the dataset ``root``:
    ``[(teacher, settings, table)]``."""
    import json

    from lga.data.dataset import load_dataset
    from lga.data.dataset_config import load_dataset_config
    from lga.store.core import DescriptionStore, dataset_key
    from lga.teacher.prompts import Target, resolve_prompts

    full = load_dataset(root, None, splits=[], check_images=False)
    prompts = resolve_prompts(load_dataset_config(None, root), None)
    objects = [p.name for p in prompts if Target(p.target) is Target.OBJECT]
    backgrounds = [p.name for p in prompts if Target(p.target) is Target.BACKGROUND]
    with DescriptionStore(store, read_only=True) as s:
        frame = s.frame()
    frame = frame[(frame["status"] == "done") & (frame["dataset"] == dataset_key(full))]
    out = []
    for (teacher, settings), part in frame.groupby(["teacher", "settings"], sort=True):
        table = audit_answers(part, root, objects, backgrounds)
        out.append((str(teacher), json.loads(settings) if settings else {}, table))
    return out


def format_audit(table: pd.DataFrame) -> str:
    """The table in percent, for people."""
    shown = table.copy()
    for c in COLUMNS:
        shown[c] = [("–" if pd.isna(v) else f"{100 * v:.1f}") for v in shown[c]]
    return shown.to_string(index=False)
