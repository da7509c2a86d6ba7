"""The ``attributes.csv`` contract: each image's recorded attributes, beside ``metadata.csv``.

``lga data synth`` writes it (one row per image, ``ATTRIBUTE_COLUMNS``), and so does
:mod:`lga.offline.tiny_birds`; the oracle teacher reads it to describe images from their
attributes, and the circle visual prompt takes the bird's box (``BOX_COLUMNS``) from it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from lga.errors import LgaError

ATTRIBUTE_FILE = "attributes.csv"
BOX_COLUMNS = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")  # the bird's box, in pixels
# What the bird looks like: the columns the oracle teacher describes the object from.
OBJECT_COLUMNS = (
    "class_name",
    "species",
    "size",
    "neck",
    "legs",
    "feet",
    "bill",
    "plumage",
    "wing",
)
ATTRIBUTE_COLUMNS = ("img_id", "y", "place", *OBJECT_COLUMNS, "pose", "background", *BOX_COLUMNS)


def attributes_path(root: str | Path) -> Path:
    """Where a dataset folder keeps its attributes."""
    return Path(root) / ATTRIBUTE_FILE


def write_attributes(root: str | Path, rows: pd.DataFrame | Iterable[Mapping]) -> Path:
    """Write ``rows`` (``ATTRIBUTE_COLUMNS``, in that order) as ``root/attributes.csv``.

    Written to a temporary file first and renamed, so the file is whole or absent.
    """
    if isinstance(rows, pd.DataFrame):
        frame = rows.loc[:, list(ATTRIBUTE_COLUMNS)]
    else:
        frame = pd.DataFrame(list(rows), columns=list(ATTRIBUTE_COLUMNS))
    path = attributes_path(root)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False, lineterminator="\n")
    os.replace(tmp, path)
    return path


def read_attributes(
    root: str | Path, required: Sequence[str] = ("img_id",)
) -> dict[int, dict[str, str]]:
    """``{img_id: {column: lower-case value}}`` from ``root/attributes.csv``.

    Args:
        root: the dataset folder.
        required: the columns the caller needs; others are kept as they are.

    Raises:
        LgaError: the file is missing, lacks a required column, or has a bad img_id.
    """
    path = attributes_path(root)
    if not path.is_file():
        raise LgaError(f"{path} not found")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise LgaError(f"{path}: missing column(s) {missing}")
    out = {}
    for line, rec in enumerate(df.to_dict("records"), start=2):
        try:
            img_id = int(rec["img_id"])
        except ValueError as e:
            raise LgaError(f"{path} line {line}: bad img_id {rec['img_id']!r}") from e
        out[img_id] = {k: str(v).strip().lower() for k, v in rec.items()}
    return out
