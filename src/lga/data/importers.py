"""Datasets from other layouts, turned into the Waterbirds layout that lga reads.

An importer reads its source (the CelebA files, or any table of image paths and labels) into an
:class:`ImportPlan`: one row per image with the source file, the name it has in the dataset, its
class ``y``, split and ``place``, plus the dataset config. :func:`write_import` then writes
``metadata.csv``, ``dataset.yaml`` and ``import.yaml`` (what it wrote, see
:mod:`lga.data.provenance`) either beside the images, so that the source folder becomes the
dataset without copying an image, or into a separate folder where the images are symlinked or
copied.

Every fault of the source is collected before anything is written and raised as one
:class:`~lga.errors.DataError` whose problems name the file, the line or row, and the column.
"""

from __future__ import annotations

import difflib
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from lga import __version__
from lga.data.dataset import METADATA_FILE, SPLIT_NAMES, Problem
from lga.data.dataset_config import DATASET_FILE, DatasetConfig, load_dataset_config
from lga.data.provenance import (
    IMPORT_FILE,
    ImportRecord,
    file_sha256,
    read_record,
    written_by_import,
)
from lga.errors import ConfigError, DataError, LgaError
from lga.outputs import make_output_dir

log = logging.getLogger(__name__)

# Spellings of a split, compared case-insensitively after stripping.
SPLIT_SPELLINGS = {
    **{s: 0 for s in ("0", "train", "training")},
    **{s: 1 for s in ("1", "val", "valid", "validation", "dev")},
    **{s: 2 for s in ("2", "test", "testing")},
}
CELEBA_IMAGES = "img_align_celeba"
CELEBA_ATTRIBUTES = "list_attr_celeba"
CELEBA_PARTITION = "list_eval_partition"
CELEBA_CONFIG = "celeba-blond"  # the shipped config of the default attributes
CELEBA_TARGET, CELEBA_SPURIOUS = "Blond_Hair", "Male"
TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".parquet", ".pq", ".jsonl", ".ndjson")


class ImageMode(str, Enum):
    """How the images of an import get into the dataset folder."""

    IN_PLACE = "in place"  # the source folder is the dataset: nothing is copied
    SYMLINK = "symlink"
    COPY = "copy"


@dataclass
class ImportPlan:
    """What an importer read: one entry per image, in the source's order (``img_id`` 1, 2, ...).

    Attributes:
        importer: ``celeba`` or ``table``.
        source: the source folder or table file (for the record).
        folder: the folder that ``names`` are relative to when importing in place.
        images: each image's file in the source.
        names: each image's ``img_filename`` in the dataset; None for one outside ``folder``,
            which only an import into a separate folder can take in.
        y, split, place: integer codes, one per image.
        spec: the dataset config written as ``dataset.yaml``.
        options: the importer's options (for the record).
    """

    importer: str
    source: Path
    folder: Path
    images: list[Path]
    names: list[str | None]
    y: np.ndarray
    split: np.ndarray
    place: np.ndarray
    spec: DatasetConfig
    options: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class ImportResult:
    """Where the dataset was written and how."""

    root: Path
    n_images: int
    mode: ImageMode
    spec: DatasetConfig


# --------------------------------------------------------------------------- reading values


@dataclass(frozen=True)
class _Source:
    """A table being read: its file and how its rows are numbered in messages."""

    path: Path
    first_line: int | None  # line of row 0 (2 under a CSV header); None: rows are numbered

    def where(self, i: int) -> str:
        if self.first_line is None:
            return f"{self.path} row {i + 1}"
        return f"{self.path} line {i + self.first_line}"


def _problem(src: _Source, i: int, column: str, message: str) -> Problem:
    return Problem(src.where(i), f"column {column!r}: {message}")


def _require_columns(src: _Source, df: pd.DataFrame, wanted: dict[str, str]) -> None:
    """Raise naming each ``wanted`` column (name -> the option that names it) missing in ``df``."""
    problems = []
    for column, option in wanted.items():
        if column not in df.columns:
            near = difflib.get_close_matches(column, [str(c) for c in df.columns], n=3)
            hint = f"; did you mean {' or '.join(map(repr, near))}?" if near else ""
            problems.append(Problem(str(src.path), f"no column {column!r} ({option}){hint}"))
    if problems:
        shown = ", ".join(map(str, df.columns[:60]))
        raise DataError(f"{src.path}: missing column(s); it has: {shown}", problems)


def _split_codes(src: _Source, values: pd.Series, column: str) -> tuple[np.ndarray, list[Problem]]:
    """Split codes from ``train/val/test`` (or another spelling of :data:`SPLIT_SPELLINGS`)."""
    keys = values.str.strip().str.lower()
    codes = keys.map(SPLIT_SPELLINGS)
    bad = codes.isna().to_numpy()
    accepted = ", ".join(SPLIT_SPELLINGS)
    problems = [
        _problem(src, i, column, f"unknown split {values.iat[i]!r} (accepted: {accepted})")
        for i in np.flatnonzero(bad)
    ]
    return codes.fillna(-1).to_numpy(dtype=np.int64), problems


def _integers(values: pd.Series) -> pd.Series | None:
    """The values as integers when every one is an integer, else None."""
    stripped = values.str.strip()
    if not stripped.str.fullmatch(r"[+-]?\d+").all():
        return None
    return stripped.astype(np.int64)


def _codes(
    src: _Source,
    values: pd.Series,
    column: str,
    names: list[str] | None,
    names_from: str,
) -> tuple[np.ndarray, list[str], list[Problem]]:
    """Integer codes and names of a label column (the class, or the spurious attribute).

    Integers are indices (-1/1 binary labels, as in CelebA, become 0/1); strings are names,
    looked up in ``names`` when given, else numbered in sorted order.

    Returns:
        The codes (-1 where a value is bad), the names, and a problem per bad value.
    """
    empty = values.str.strip() == ""
    problems = [_problem(src, i, column, "empty value") for i in np.flatnonzero(empty)]
    ints = _integers(values[~empty])
    if ints is not None and len(ints):
        seen = set(ints.unique().tolist())
        if -1 in seen and seen <= {-1, 1}:
            ints = (ints + 1) // 2
        top = int(ints.max())
        names = names or [str(i) for i in range(top + 1)]
        bad = (ints < 0) | (ints >= len(names))
        for i in np.flatnonzero(bad.to_numpy()):
            pos = ints.index[i]
            message = f"label {values.iat[pos].strip()} is not an index of {names_from} {names}"
            problems.append(_problem(src, pos, column, message))
        codes = pd.Series(-1, index=values.index, dtype=np.int64)
        codes[ints.index] = ints.where(~bad, -1)
        return codes.to_numpy(), names, problems
    stripped = values.str.strip()
    names = names or sorted(set(stripped[~empty]))
    index = {n: k for k, n in enumerate(names)}
    codes = stripped.map(index)
    for i in np.flatnonzero((codes.isna() & ~empty).to_numpy()):
        message = f"{stripped.iat[i]!r} is not one of {names_from} {names}"
        problems.append(_problem(src, i, column, message))
    return codes.fillna(-1).to_numpy(dtype=np.int64), names, problems


def _raise_if(problems: list[Problem], what: str) -> None:
    if problems:
        raise DataError(f"{what}: {len(problems)} problem(s); nothing was written", problems)


# --------------------------------------------------------------------------- CelebA


def _celeba_file(src: Path, stem: str) -> Path:
    for suffix in (".csv", ".txt"):
        if (src / f"{stem}{suffix}").is_file():
            return src / f"{stem}{suffix}"
    raise DataError(
        f"{src} has no {stem}.csv (Kaggle layout) nor {stem}.txt (original layout)",
        [Problem(str(src / f"{stem}.csv"), "missing")],
    )


def _celeba_image_dir(src: Path) -> Path:
    folder = src / CELEBA_IMAGES
    if (folder / CELEBA_IMAGES).is_dir():  # Kaggle's archive nests the folder in itself
        return folder / CELEBA_IMAGES
    if not folder.is_dir():
        raise DataError(
            f"{src} has no {CELEBA_IMAGES}/ folder of images",
            [Problem(str(folder), "missing")],
        )
    return folder


def read_celeba_attributes(path: Path) -> tuple[pd.DataFrame, _Source]:
    """``list_attr_celeba`` as strings: column ``image_id`` then one column per attribute.

    Reads Kaggle's CSV (header ``image_id,5_o_Clock_Shadow,...``) or the original text file
    (a count, the attribute names, then ``name v1 v2 ...`` separated by spaces).
    """
    if path.suffix == ".csv":
        return _read_csv(path, sep=","), _Source(path, 2)
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise DataError(f"{path}: expected a count and the attribute names on its first lines")
    names = lines[1].split()
    rows = [line.split() for line in lines[2:] if line.strip()]
    src = _Source(path, 3)
    problems = [
        Problem(src.where(i), f"{len(r)} fields, expected {len(names) + 1} (name and attributes)")
        for i, r in enumerate(rows)
        if len(r) != len(names) + 1
    ]
    if lines[0].strip().isdigit() and int(lines[0]) != len(rows):
        count = f"says {lines[0].strip()} images, {len(rows)} follow"
        problems.append(Problem(f"{path} line 1", count))
    _raise_if(problems, f"{path} is malformed")
    return pd.DataFrame(rows, columns=["image_id", *names], dtype=str), src


def read_celeba_partition(path: Path) -> tuple[pd.DataFrame, _Source]:
    """``list_eval_partition`` as strings: columns ``image_id``, ``partition``."""
    if path.suffix == ".csv":
        df, src = _read_csv(path, sep=","), _Source(path, 2)
        _require_columns(src, df, {"image_id": "CelebA layout", "partition": "CelebA layout"})
        return df, src
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    src = _Source(path, 1)
    problems = [
        Problem(src.where(i), f"{len(r)} fields, expected 2 (name and partition)")
        for i, r in enumerate(rows)
        if len(r) != 2
    ]
    _raise_if(problems, f"{path} is malformed")
    return pd.DataFrame(rows, columns=["image_id", "partition"], dtype=str), src


def _binary_attribute(src: _Source, values: pd.Series, column: str, option: str):
    """-1/1 -> 0/1, a problem per other value."""
    stripped = values.str.strip()
    bad = ~stripped.isin(["-1", "1"])
    problems = [
        _problem(src, i, column, f"value {values.iat[i]!r} is not -1 or 1 ({option})")
        for i in np.flatnonzero(bad.to_numpy())
    ]
    return (stripped == "1").to_numpy(dtype=np.int64), problems


def _humanise(attribute: str) -> str:
    """``Blond_Hair`` -> ``blond hair``."""
    return attribute.replace("_", " ").strip().lower()


def celeba_spec(target: str, spurious: str) -> DatasetConfig:
    """The shipped ``celeba-blond`` config for the default attributes, else a generic one."""
    if (target, spurious) == (CELEBA_TARGET, CELEBA_SPURIOUS):
        return load_dataset_config(CELEBA_CONFIG)
    t, s = _humanise(target), _humanise(spurious)
    return DatasetConfig(
        name=f"celeba-{t.replace(' ', '-')}",
        classes=[f"not {t}", t],
        spurious_attribute=s,
        places=[f"not {s}", s],
        object_noun="person",
        class_templates=["a photo of a person, {}.", "a close-up photo of a face, {}."],
    )


def read_celeba(
    src: str | Path,
    *,
    target: str = CELEBA_TARGET,
    spurious: str = CELEBA_SPURIOUS,
    spec: DatasetConfig | None = None,
) -> ImportPlan:
    """Read CelebA: ``img_align_celeba/``, ``list_attr_celeba`` and ``list_eval_partition``.

    Args:
        src: the CelebA folder (Kaggle's CSV layout or the original text files).
        target: the attribute that is the class ``y`` (-1/1 -> 0/1).
        spurious: the attribute that is ``place``.
        spec: the dataset config; default: :func:`celeba_spec`.

    Raises:
        DataError: a file or column is missing, or rows are faulty (each named by file, line and
            column): a value not in {-1, 1}, an unknown or missing partition, a missing image.
    """
    src = Path(src)
    if target == spurious:
        raise ConfigError(
            f"--target and --spurious are both {target!r}: the spurious attribute must be "
            "another attribute than the class"
        )
    if not src.is_dir():
        raise DataError(f"CelebA folder not found: {src}", [Problem(str(src), "not a folder")])
    images_dir = _celeba_image_dir(src)
    attrs, asrc = read_celeba_attributes(_celeba_file(src, CELEBA_ATTRIBUTES))
    part, psrc = read_celeba_partition(_celeba_file(src, CELEBA_PARTITION))
    wanted = {"image_id": "CelebA layout", target: "--target", spurious: "--spurious"}
    _require_columns(asrc, attrs, wanted)
    problems = _duplicate_ids(asrc, attrs["image_id"])
    y, bad_y = _binary_attribute(asrc, attrs[target], target, "--target")
    place, bad_place = _binary_attribute(asrc, attrs[spurious], spurious, "--spurious")
    split, bad_split = _celeba_splits(attrs["image_id"], part, psrc, asrc)
    ids = attrs["image_id"].str.strip().tolist()
    files = [images_dir / name for name in ids]
    missing = _missing_images(asrc, files, "image_id")
    _raise_if(problems + bad_y + bad_place + bad_split + missing, f"CelebA in {src}")
    return ImportPlan(
        importer="celeba",
        source=src.absolute(),
        folder=src.absolute(),
        images=[f.absolute() for f in files],
        names=[f.relative_to(src).as_posix() for f in files],
        y=y,
        split=split,
        place=place,
        spec=spec or celeba_spec(target, spurious),
        options={"target": target, "spurious": spurious},
    )


def _duplicate_ids(src: _Source, ids: pd.Series) -> list[Problem]:
    stripped = ids.str.strip()
    dup = stripped.duplicated(keep="first").to_numpy()
    return [
        Problem(src.where(i), f"image {stripped.iat[i]!r} is listed again")
        for i in np.flatnonzero(dup)
    ]


def _celeba_splits(
    ids: pd.Series, part: pd.DataFrame, psrc: _Source, asrc: _Source
) -> tuple[np.ndarray, list[Problem]]:
    """Each image's split from the partition file (0/1/2); problems name both files' lines."""
    codes, problems = _split_codes(psrc, part["partition"], "partition")
    by_name = dict(zip(part["image_id"].str.strip(), codes, strict=True))
    split = ids.str.strip().map(by_name)
    for i in np.flatnonzero(split.isna().to_numpy()):
        message = f"image {ids.iat[i].strip()!r} is not in {psrc.path}"
        problems.append(Problem(asrc.where(i), message))
    return split.fillna(-1).to_numpy(dtype=np.int64), problems


def _missing_images(src: _Source, files: Sequence[Path], column: str) -> list[Problem]:
    return [
        _problem(src, i, column, f"image {f} is missing")
        for i, f in enumerate(files)
        if not f.is_file()
    ]


# --------------------------------------------------------------------------- any table


def _cell(value: object) -> str:
    """A table cell as text: missing -> ``""``, ``3.0`` -> ``"3"``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _read_csv(path: Path, sep: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path} as a table: {str(e).strip()}") from e
    df.columns = [str(c).strip() for c in df.columns]
    return df


def read_table_file(path: Path) -> tuple[pd.DataFrame, _Source]:
    """A csv/tsv/parquet/jsonl table with every cell as text, and how its rows are numbered."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"table not found: {path}", [Problem(str(path), "missing")])
    if suffix in (".csv", ".tsv", ".tab"):
        return _read_csv(path, "," if suffix == ".csv" else "\t"), _Source(path, 2)
    try:
        if suffix in (".parquet", ".pq"):
            df, src = pd.read_parquet(path), _Source(path, None)
        elif suffix in (".jsonl", ".ndjson"):
            df, src = pd.read_json(path, lines=True, dtype=False), _Source(path, 1)
        else:
            raise ConfigError(f"{path}: unknown table format; expected one of {TABLE_SUFFIXES}")
    except (ValueError, OSError) as e:
        raise DataError(f"cannot read {path} as a table: {str(e).strip()}") from e
    df.columns = [str(c).strip() for c in df.columns]
    return df.astype(object).map(_cell), src


def _image_files(
    src: _Source, values: pd.Series, column: str
) -> tuple[list[Path], list[str | None], list[Problem]]:
    """Each row's image (relative to the table's folder, or absolute) and its name inside it."""
    folder = src.path.parent.absolute()
    files, names, problems = [], [], []
    for i, value in enumerate(values.str.strip()):
        if not value:
            problems.append(_problem(src, i, column, "empty image path"))
        path = Path(os.path.normpath(folder / Path(value).expanduser()))
        files.append(path)
        inside = os.path.commonpath([path, folder]) == str(folder)
        names.append(path.relative_to(folder).as_posix() if inside else None)
        if value and not path.is_file():
            problems.append(_problem(src, i, column, f"image {value!r} is missing ({path})"))
    return files, names, problems


def _not_images(src: _Source, files: list[Path], column: str) -> list[Problem]:
    """Rows whose file is no image PIL can identify (its header only is read, not decoded)."""
    from PIL import Image, UnidentifiedImageError

    problems = []
    for i, f in enumerate(files):
        try:
            with Image.open(f):
                pass
        except (UnidentifiedImageError, OSError) as e:
            why = "not an image file" if isinstance(e, UnidentifiedImageError) else str(e)
            problems.append(_problem(src, i, column, f"{f} is {why}"))
    return problems


def _same_image_twice(
    src: _Source, files: list[Path], codes: tuple[np.ndarray, ...], column: str
) -> list[Problem]:
    """Rows naming one image file (by its real path) with another split, class or place: one
    image cannot be both a training and a test image (``lga data check`` refuses it)."""
    rows: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        rows.setdefault(os.path.realpath(f), []).append(i)
    problems = []
    for same in (r for r in rows.values() if len(r) > 1):
        labels = {tuple(int(c[i]) for c in codes) for i in same}
        if len(labels) > 1:
            where = ", ".join(src.where(i) for i in same)
            message = (
                f"the same image {files[same[0]]} with another split, class or place in {where}: "
                "one image cannot have two splits or labels"
            )
            problems.append(_problem(src, same[0], column, message))
    return problems


def read_table(
    path: str | Path,
    *,
    image_col: str = "image",
    label_col: str = "label",
    place_col: str = "place",
    split_col: str = "split",
    classes: list[str] | None = None,
    places: list[str] | None = None,
    spec: DatasetConfig | None = None,
) -> ImportPlan:
    """Read a table of images (csv, tsv, parquet or jsonl): one row per image.

    Args:
        path: the table; image paths are relative to its folder, or absolute.
        image_col, label_col, place_col, split_col: the columns holding each image's path,
            class, spurious attribute and split (``train/val/test``, ``0/1/2``, or a spelling
            of :data:`SPLIT_SPELLINGS`).
        classes, places: names in code order. Integer labels index them; string labels are
            looked up in them. Default: the names of ``spec``, else the integers, else the
            distinct strings in sorted order.
        spec: the dataset config; default: a generic one made from the names.

    Raises:
        DataError: a column is missing, or rows are faulty (each named by line or row and
            column): an unknown split, a label not among the names, a missing image.
        ConfigError: ``classes``/``places`` disagree with ``spec``.
    """
    path = Path(path)
    df, src = read_table_file(path)
    cols = {image_col: "--image-col", label_col: "--label-col", place_col: "--place-col"}
    _require_columns(src, df, {**cols, split_col: "--split-col"})
    if len(df) == 0:
        raise DataError(f"{path} has no rows", [Problem(str(path), "no rows")])
    class_names, class_from = _names(classes, spec and spec.classes, "--classes", "classes")
    place_names, place_from = _names(places, spec and spec.places, "--places", "places")
    y, class_names, bad_y = _codes(src, df[label_col], label_col, class_names, class_from)
    place, place_names, bad_p = _codes(src, df[place_col], place_col, place_names, place_from)
    split, bad_split = _split_codes(src, df[split_col], split_col)
    files, names, bad_images = _image_files(src, df[image_col], image_col)
    if not bad_images:  # what `lga data check` would refuse of the dataset, found before writing
        bad_images = _not_images(src, files, image_col)
        bad_images += _same_image_twice(src, files, (y, split, place), image_col)
    _raise_if(bad_y + bad_p + bad_split + bad_images, f"table {path}")
    if spec is None:
        spec = _generic_spec(path, class_names, place_col, place_names)
    return ImportPlan(
        importer="table",
        source=path.absolute(),
        folder=path.parent.absolute(),
        images=files,
        names=names,
        y=y,
        split=split,
        place=place,
        spec=spec,
        options={
            "image_col": image_col,
            "label_col": label_col,
            "place_col": place_col,
            "split_col": split_col,
        },
    )


def _names(
    given: list[str] | None, from_spec: list[str] | None, option: str, field_name: str
) -> tuple[list[str] | None, str]:
    """The names to map labels with, and how a message calls them."""
    if given and from_spec and list(given) != list(from_spec):
        raise ConfigError(
            f"{option} {given} disagrees with the dataset config's {field_name} {from_spec}"
        )
    if given:
        return list(given), option
    if from_spec:
        return list(from_spec), f"the dataset config's {field_name}"
    return None, field_name


def _generic_spec(
    path: Path, classes: list[str], place_col: str, places: list[str]
) -> DatasetConfig:
    if len(classes) < 2:
        raise DataError(f"{path}: only one class ({classes}); a classifier needs at least two")
    if all(c.isdigit() for c in classes):
        log.warning("class names are the integers %s; give --classes for readable prompts", classes)
    return DatasetConfig(
        name=path.stem,
        classes=classes,
        spurious_attribute=place_col.replace("_", " "),
        places=places,
    )


# --------------------------------------------------------------------------- writing


def _guard(dest: Path, separate: bool, overwrite: bool) -> None:
    """Refuse to replace files that no earlier import wrote (unless ``overwrite``)."""
    if overwrite:
        return
    if separate and dest.is_dir() and any(dest.iterdir()) and not (dest / IMPORT_FILE).is_file():
        raise LgaError(
            f"{dest} is not empty and holds no earlier import ({IMPORT_FILE}); choose a new or "
            "empty folder, or pass --overwrite"
        )
    for name in (METADATA_FILE, DATASET_FILE):
        path = dest / name
        if path.exists() and not written_by_import(dest, name):
            raise LgaError(
                f"{path} exists and was not written by `lga data import` (or was edited since); "
                "pass --overwrite to replace it"
            )


def _place_image(src: Path, dst: Path, copy: bool) -> None:
    """Symlink or copy ``src`` to ``dst``, replacing what is there (atomically)."""
    if copy and dst.is_file() and not dst.is_symlink():
        a, b = src.stat(), dst.stat()
        if (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns):
            return  # copied by an earlier import (copy2 keeps the time)
    elif not copy and dst.is_symlink() and os.readlink(dst) == str(src):
        return
    tmp = dst.with_name(f".{dst.name}.lga-tmp")
    tmp.unlink(missing_ok=True)
    if copy:
        shutil.copy2(src, tmp)
    else:
        os.symlink(src, tmp)
    os.replace(tmp, dst)


def _separate_names(plan: ImportPlan) -> list[str]:
    """Names in a separate dataset folder: as in the source, or ``external/`` for the rest."""
    return [
        name or f"external/{i + 1:06d}-{plan.images[i].name}" for i, name in enumerate(plan.names)
    ]


def _foreign_files(out: Path, names: list[str], copy: bool) -> list[Problem]:
    """Files at the images' names in ``out`` that no import put there: a regular file, unless
    an earlier copying import (``import.yaml``) made it. A symlink is an import's own."""
    record = read_record(out)
    copied_before = record is not None and record.images == ImageMode.COPY.value
    problems = []
    for i, name in enumerate(names):
        dst = out / name
        if dst.is_symlink() or not dst.exists():
            continue
        if not (copy and copied_before and dst.is_file()):
            why = "exists and no import put it there; an import replaces no file of yours"
            problems.append(Problem(str(dst), f"image of row {i + 1}: {why}"))
    return problems


def _place_images(plan: ImportPlan, out: Path, names: list[str], copy: bool, progress: bool):
    made: set[Path] = set()
    pairs = zip(plan.images, names, strict=True)
    verb = "copying" if copy else "linking"
    for src, name in tqdm(pairs, total=len(names), desc=f"{verb} images", disable=not progress):
        dst = out / name
        if dst.parent not in made:
            dst.parent.mkdir(parents=True, exist_ok=True)
            made.add(dst.parent)
        _place_image(src, dst, copy)


def _linked_from(plan: ImportPlan) -> list[str]:
    """The real folders the symlinks point into, none inside another."""
    folders = {os.path.realpath(plan.folder)}
    pairs = zip(plan.images, plan.names, strict=True)
    folders |= {os.path.realpath(f.parent) for f, n in pairs if n is None}
    ordered = sorted(folders, key=len)
    kept: list[str] = []
    for f in ordered:
        if not any(os.path.commonpath([f, k]) == k for k in kept):
            kept.append(f)
    return kept


def _metadata(plan: ImportPlan, names: list[str]) -> pd.DataFrame:
    places = np.array(plan.spec.places, dtype=object)[plan.place]
    return pd.DataFrame(
        {
            "img_id": np.arange(1, len(plan) + 1),
            "img_filename": names,
            "y": plan.y,
            "split": plan.split,
            "place": plan.place,
            # Waterbirds names the Places365 background here; an import has no such image, so
            # (as `lga data synth`) it gives the place's name and the file's: "male/000001.jpg".
            "place_filename": [f"{p}/{Path(n).name}" for p, n in zip(places, names, strict=True)],
        }
    )


def _check_codes(plan: ImportPlan) -> None:
    spec = plan.spec
    for what, codes, names in (("class", plan.y, spec.classes), ("place", plan.place, spec.places)):
        if len(codes) and int(codes.max()) >= len(names):
            raise ConfigError(
                f"dataset config {spec.name!r} names {len(names)} {what}(es) {names}, but the "
                f"source has {what} code {int(codes.max())}"
            )
    unknown = set(np.unique(plan.split).tolist()) - set(SPLIT_NAMES)
    if unknown:  # the readers only make 0/1/2
        raise ValueError(f"split codes {sorted(unknown)}")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_import(
    plan: ImportPlan,
    out: str | Path | None = None,
    *,
    copy: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> ImportResult:
    """Write ``plan`` as a dataset: in place (``out`` None) or into ``out``.

    In place, ``metadata.csv``, ``dataset.yaml`` and ``import.yaml`` go beside the images, in
    ``plan.folder``. Into ``out``, the images are symlinked (default) or copied (``copy``) under
    the same names, and ``import.yaml`` records the folders the links point into so that
    ``lga data check`` accepts them. ``metadata.csv`` is written last: a folder without it is an
    interrupted import.

    Raises:
        LgaError: ``metadata.csv`` or ``dataset.yaml`` exists and no earlier import wrote it, or
            ``out`` is a non-empty folder that holds no earlier import (unless ``overwrite``).
        DataError: importing in place, an image lies outside ``plan.folder``.
    """
    _check_codes(plan)
    dest = Path(out) if out is not None else plan.folder
    separate = out is not None and not (dest.exists() and dest.samefile(plan.folder))
    if not separate:
        outside = [i for i, n in enumerate(plan.names) if n is None]
        problems = [
            Problem(str(plan.images[i]), f"image of row {i + 1} is outside {plan.folder}")
            for i in outside
        ]
        _raise_if_outside(problems)
    _guard(dest, separate, overwrite)
    mode = ImageMode.IN_PLACE
    names = [n for n in plan.names if n is not None]
    if separate:
        names = _separate_names(plan)
        foreign = _foreign_files(dest, names, copy)
        if foreign:
            raise DataError(
                f"{dest}: {len(foreign)} file(s) of yours are where the import puts its images "
                "(--overwrite replaces only metadata.csv and dataset.yaml); move them away or "
                "choose another --out",
                foreign,
            )
        make_output_dir(dest, what="dataset folder")
        mode = ImageMode.COPY if copy else ImageMode.SYMLINK
        _place_images(plan, dest, names, copy, progress)
    header = f"# written by `lga data import {plan.importer}` from {plan.source}\n"
    spec = plan.spec.model_dump(mode="json", exclude_none=True)
    _write_text(dest / DATASET_FILE, header + yaml.safe_dump(spec, sort_keys=False))
    tmp = dest / f"{METADATA_FILE}.tmp"
    _metadata(plan, names).to_csv(tmp, index=False, lineterminator="\n")
    record = ImportRecord(
        importer=plan.importer,
        source=str(plan.source),
        images=mode.value,
        linked_from=_linked_from(plan) if mode is ImageMode.SYMLINK else [],
        written={
            METADATA_FILE: file_sha256(tmp),
            DATASET_FILE: file_sha256(dest / DATASET_FILE),
        },
        options=plan.options,
        lga_version=__version__,
    )
    _write_text(dest / IMPORT_FILE, yaml.safe_dump(record.model_dump(), sort_keys=False))
    os.replace(tmp, dest / METADATA_FILE)
    log.info("imported %d images into %s (%s)", len(plan), dest, mode.value)
    return ImportResult(dest, len(plan), mode, plan.spec)


def _raise_if_outside(problems: list[Problem]) -> None:
    if problems:
        raise DataError(
            f"{len(problems)} image(s) lie outside the table's folder: an import in place can "
            "only list images inside it; import with --out DIR to link or copy them in",
            problems,
        )


def parse_names(text: str | None) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]`` (for ``--classes``/``--places``); None stays None."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if any(not n for n in names):
        raise ConfigError(f"empty name in {text!r}; expected comma-separated names")
    if len(set(names)) != len(names):
        raise ConfigError(f"a name is given twice in {text!r}")
    return names
