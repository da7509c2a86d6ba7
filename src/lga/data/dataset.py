"""The Waterbirds/WILDS layout: ``metadata.csv`` + images, validated row by row.

One group contract serves the whole code: arrays ``y`` (class), ``place`` (spurious attribute)
and ``group = y * n_places + place``.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import NoReturn

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from lga.data.dataset_config import DatasetConfig, load_dataset_config
from lga.data.images import MAX_PIXELS, ImageLoadError, load_rgb
from lga.data.provenance import linked_roots
from lga.data.validation_cache import ValidationCache, file_signature
from lga.errors import DataError

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.csv"
COLUMNS = ("img_id", "img_filename", "y", "split", "place", "place_filename")
INT_COLUMNS = ("img_id", "y", "split", "place")
SPLITS = {"train": 0, "val": 1, "test": 2}
SPLIT_NAMES = {v: k for k, v in SPLITS.items()}


class ProblemKind(enum.Enum):
    """What a :class:`Problem` is about; code decides by this, never by the message."""

    METADATA = "metadata"  # metadata.csv as a whole: unreadable, a column missing, no rows
    VALUE = "value"  # a value of a row: not an integer, outside the dataset config
    DUPLICATE_ID = "duplicate id"
    UNSAFE_PATH = "unsafe path"  # absolute or outside the folder: the file is never opened
    IMAGE = "image"  # missing, not a file, or not decodable
    DUPLICATE_IMAGE = "duplicate image"  # the same file (path or content) under two rows
    COVERAGE = "coverage"  # a split with no rows, a class absent from the training split


@dataclass(frozen=True)
class Problem:
    """One fault of a dataset, naming the row (``img_id``) and the file concerned."""

    file: str
    message: str
    img_id: str | None = None
    kind: ProblemKind = ProblemKind.VALUE

    def __str__(self) -> str:
        row = f" (img_id {self.img_id})" if self.img_id is not None else ""
        return f"{self.file}{row}: {self.message}"


@dataclass
class GroupDataset:
    """A validated Waterbirds-layout dataset (or one split / sample of it).

    Attributes:
        root: the dataset folder.
        config: the dataset config: class and spurious-attribute names, templates, prompts.
        table: one row per image, columns ``img_id, img_filename, y, split, place`` (ints but
            ``img_filename``), sorted by ``img_id``.
        skipped: rows dropped because of a problem (only with ``skip_bad_rows``).
        unseen: the test rows on places no training image has (the config's
            ``unseen_places``), with the config that names them (``config.with_unseen()``);
            None when there are none. They are not in ``table``: no split, group, metric or
            sample sees them; ``lga fit`` and ``lga eval`` score them apart.
    """

    root: Path
    config: DatasetConfig
    table: pd.DataFrame
    skipped: list[Problem] = field(default_factory=list)
    unseen: GroupDataset | None = None

    @classmethod
    def from_table(
        cls, root: Path, config: DatasetConfig, table: pd.DataFrame, skipped=()
    ) -> GroupDataset:
        """A dataset of checked rows, the unseen-place rows set apart in ``unseen``."""
        mask = table["place"].to_numpy() >= len(config.places)
        unseen = None
        if mask.any():
            unseen = GroupDataset(root, config.with_unseen(), table[mask].reset_index(drop=True))
        return cls(root, config, table[~mask].reset_index(drop=True), list(skipped), unseen)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def img_ids(self) -> np.ndarray:
        return self.table["img_id"].to_numpy(dtype=np.int64)

    @property
    def y(self) -> np.ndarray:
        return self.table["y"].to_numpy(dtype=np.int64)

    @property
    def place(self) -> np.ndarray:
        return self.table["place"].to_numpy(dtype=np.int64)

    @property
    def group(self) -> np.ndarray:
        return self.config.group_id(self.y, self.place)

    def split(self, name: str) -> GroupDataset:
        """The rows of one split (``train``, ``val``, ``test``) or ``all``."""
        if name == "all":
            return self
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {[*SPLITS, 'all']}")
        return self.select(self.table["split"].to_numpy() == SPLITS[name])

    def select(self, mask_or_index: np.ndarray) -> GroupDataset:
        table = (
            self.table[mask_or_index]
            if mask_or_index.dtype == bool
            else self.table.iloc[mask_or_index]
        )
        return GroupDataset(self.root, self.config, table.reset_index(drop=True), self.skipped)

    def image_path(self, i: int) -> Path:
        return self.root / self.table["img_filename"].iat[i]

    def load_image(self, i: int) -> Image.Image:
        return load_rgb(self.image_path(i))

    def group_counts(self) -> dict[str, int]:
        """Images per ``"<class>/<place>"`` group, every group listed (zeros included)."""
        counts = np.bincount(self.group, minlength=self.config.n_groups)
        return dict(zip(self.config.group_names(), counts.tolist(), strict=True))

    def fingerprint(self) -> str:
        """A key of the dataset's identity: folder and metadata content (for caches)."""
        import hashlib

        meta = self.root / METADATA_FILE
        digest = hashlib.sha256(meta.read_bytes()).hexdigest()[:16]
        return f"{self.root.resolve()}|{digest}"


def split_group_table(ds: GroupDataset) -> pd.DataFrame:
    """Counts per split (rows) x group (columns), with totals; unseen-place groups (test rows
    only) as columns after the usual ones when the dataset has them."""
    spec = ds.config.with_unseen()
    table = ds.table if ds.unseen is None else pd.concat([ds.table, ds.unseen.table])
    names = spec.group_names()
    rows = {}
    for code, split in SPLIT_NAMES.items():
        sub = table[table["split"].to_numpy() == code]
        groups = spec.group_id(sub["y"].to_numpy(), sub["place"].to_numpy())
        rows[split] = [*np.bincount(groups, minlength=len(names)).tolist(), len(sub)]
    return pd.DataFrame.from_dict(rows, orient="index", columns=[*names, "total"])


def _read_metadata(root: Path) -> pd.DataFrame:
    meta = root / METADATA_FILE
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}", [Problem(str(root), "not a folder")])
    if meta.is_dir():
        _metadata_error(meta, "is a folder, not a file")
    if not meta.is_file():
        raise DataError(
            f"{meta} not found",
            [Problem(str(meta), "metadata.csv is missing", kind=ProblemKind.METADATA)],
        )
    try:
        df = pd.read_csv(meta, dtype=str, keep_default_na=False)
    except UnicodeDecodeError as e:  # its offset is within pandas' chunk: find the file's
        _metadata_error(meta, f"is not UTF-8 text ({_first_bad_utf8(meta) or e.reason})", e)
    except pd.errors.EmptyDataError as e:
        _metadata_error(meta, f"is empty; expected the header {','.join(COLUMNS)}", e)
    except pd.errors.ParserError as e:
        _metadata_error(meta, f"cannot be parsed as CSV: {str(e).strip()}", e)
    except OSError as e:  # permission denied, I/O error, ...
        _metadata_error(meta, f"cannot be read: {e.strerror or e}", e)
    df.columns = [c.strip() for c in df.columns]
    df = df.drop(columns=[c for c in df.columns if c.startswith("Unnamed:")])
    return df


def _first_bad_utf8(path: Path) -> str | None:
    """Where the file stops being UTF-8: ``"invalid start byte at byte 226, line 5"``."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        return f"{e.reason} at byte {e.start}, line {line}"
    return None


def _metadata_error(meta: Path, why: str, cause: Exception | None = None) -> NoReturn:
    """Raise the DataError of a metadata.csv that cannot be read at all (its one problem is
    the message: the CLI prints it once)."""
    raise DataError(
        f"{meta} {why}", [Problem(str(meta), why, kind=ProblemKind.METADATA)], listed=False
    ) from cause


def _escapes(
    root: Path, name: str, real_root: str | None = None, linked: tuple[str, ...] = ()
) -> str | None:
    """Why ``name`` is not a safe path inside ``root``, or None when it is.

    ``real_root``: ``os.path.realpath(root)`` when the caller has it (once per dataset, not row).
    ``linked``: real folders that symlinks may point into (those ``lga data import --out``
    linked the images from, as its ``import.yaml`` records).
    """
    if not name:
        return "empty img_filename"
    if (
        PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or name.startswith("~")
    ):
        return f"path {name!r} is absolute; it must be relative to the dataset folder"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return f"path {name!r} escapes the dataset folder ('..')"
    resolved = os.path.realpath(root / name)
    real_root = real_root or os.path.realpath(root)
    inside = [real_root, *linked]
    if not any(os.path.commonpath([resolved, folder]) == folder for folder in inside):
        return f"path {name!r} escapes the dataset folder (symlink to {resolved})"
    return None


def _row_problems(df: pd.DataFrame, spec: DatasetConfig, root: Path) -> dict[int, list[Problem]]:
    """Problems of each row (by position) found from metadata alone."""
    problems: dict[int, list[Problem]] = {}
    ids = df["img_id"].str.strip()
    dup = ids.duplicated(keep=False) & (ids != "")
    all_places = spec.places + spec.unseen_places
    limits = {"y": (len(spec.classes), spec.classes), "place": (len(all_places), all_places)}
    real_root = os.path.realpath(root)
    linked = tuple(linked_roots(root))
    for pos, row in enumerate(df.itertuples(index=False)):
        rec = row._asdict()
        img_id = str(rec["img_id"]).strip() or f"<row {pos + 2}>"
        file = str(rec["img_filename"]).strip() or f"{METADATA_FILE} line {pos + 2}"
        out = []
        for col in INT_COLUMNS:
            value = str(rec[col]).strip()
            try:
                v = int(value)
            except ValueError:
                out.append(Problem(file, f"{col}={value!r} is not an integer", img_id))
                continue
            if col == "split" and v not in SPLIT_NAMES:
                out.append(
                    Problem(file, f"bad split code {v} (expected 0=train, 1=val, 2=test)", img_id)
                )
            if col in limits and not 0 <= v < limits[col][0]:
                names = ", ".join(f"{i}={n}" for i, n in enumerate(limits[col][1]))
                out.append(
                    Problem(file, f"{col}={v} is outside the dataset config ({names})", img_id)
                )
            elif col == "place" and v >= len(spec.places) and str(rec["split"]).strip() != "2":
                out.append(
                    Problem(
                        file,
                        f"place={v} ({all_places[v]}) is an unseen place of the dataset config: "
                        "only test rows (split 2) may have it",
                        img_id,
                    )
                )
        if dup.iat[pos]:
            others = (ids.index[(ids == ids.iat[pos]).to_numpy()] + 2).tolist()
            out.append(
                Problem(
                    file,
                    f"duplicate img_id (metadata lines {others})",
                    img_id,
                    ProblemKind.DUPLICATE_ID,
                )
            )
        why = _escapes(root, str(rec["img_filename"]).strip(), real_root, linked)
        if why:
            out.append(Problem(file, why, img_id, ProblemKind.UNSAFE_PATH))
        if out:
            problems[pos] = out
    return problems


def _inspect_image(root: Path, name: str) -> tuple[str | None, str | None]:
    """(why the image is unusable, or None; the sha1 of a usable image's bytes, or None).

    The file is read once: the bytes are hashed, then decoded from memory.
    """
    path = root / name
    if not path.exists():
        return "image file is missing", None
    if not path.is_file():
        return "image path is not a file", None
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"cannot read the image: {e.strerror or e}", None
    try:
        load_rgb(path, data=data)
    except ImageLoadError as e:
        return str(e), None
    return None, hashlib.sha1(data).hexdigest()


@dataclass
class _ImageFindings:
    problems: dict[int, str] = field(default_factory=dict)  # row position -> why
    digests: dict[int, str] = field(default_factory=dict)  # row position -> sha1 (usable ones)


def _check_images(
    root: Path, names: list[str], positions: list[int], workers: int, progress: bool
) -> _ImageFindings:
    """Fully decode each image (threads: PIL releases the GIL while decoding)."""
    found = _ImageFindings()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda n: _inspect_image(root, n), names)
        bar = tqdm(
            results, total=len(names), desc="checking images", unit="img", disable=not progress
        )
        for pos, (why, sha1) in zip(positions, bar, strict=True):
            if why:
                found.problems[pos] = why
            if sha1:
                found.digests[pos] = sha1
    return found


def _check_images_once(
    root: Path,
    names: list[str],
    positions: list[int],
    workers: int,
    progress: bool,
    cache: ValidationCache | None,
) -> _ImageFindings:
    """:func:`_check_images`, skipping the files unchanged since they last decoded cleanly."""
    if cache is None:
        return _check_images(root, names, positions, workers, progress)
    signatures = [file_signature(root / n) for n in names]  # taken before decoding
    known = [cache.digest(n, sig) for n, sig in zip(names, signatures, strict=True)]
    todo = [k for k, sha1 in enumerate(known) if sha1 is None]
    if len(todo) < len(names):
        log.info(
            "%d of %d images unchanged since they last decoded cleanly (%s)",
            len(names) - len(todo),
            len(names),
            cache.file,
        )
    found = _check_images(
        root, [names[k] for k in todo], [positions[k] for k in todo], workers, progress
    )
    for k in todo:
        if positions[k] in found.digests:
            cache.add(names[k], signatures[k], found.digests[positions[k]])
    cache.save()
    found.digests |= {positions[k]: sha1 for k, sha1 in enumerate(known) if sha1 is not None}
    return found


def _conflicts(df: pd.DataFrame, a: int, b: int) -> list[str]:
    """How rows ``a`` and ``b`` disagree, e.g. ``["split 0 (train) vs 2 (test)", "y 0 vs 1"]``."""
    out = []
    for col in ("split", "y", "place"):
        va, vb = df[col].iat[a].strip(), df[col].iat[b].strip()
        if va != vb:
            show = _split_code if col == "split" else str
            out.append(f"{col} {show(va)} vs {show(vb)}")
    return out


def _split_code(code: str) -> str:
    """``"2"`` -> ``"2 (test)"``; an invalid code as it is."""
    name = SPLIT_NAMES.get(int(code)) if code.isdigit() else None
    return f"{code} ({name})" if name else code


def _duplicate_files(
    df: pd.DataFrame, root: Path, positions: list[int], digests: dict[int, str]
) -> tuple[dict[int, list[Problem]], list[Problem]]:
    """Rows whose image is the same file: the same resolved path, or the same bytes (sha1).

    Returns:
        Errors by row position (every row of a group whose split, class or place disagree: the
        same image cannot be, say, both a training and a test image) and warnings (one per group
        whose rows agree: the image merely counts twice).
    """
    name = {pos: df["img_filename"].iat[pos].strip() for pos in positions}
    real = {pos: os.path.realpath(root / name[pos]) for pos in positions}
    sha1_of_file = {real[pos]: sha1 for pos, sha1 in digests.items() if pos in real}
    groups: dict[str, list[int]] = defaultdict(list)
    for pos in positions:  # a file known by its content joins its copies; else by its path
        groups[sha1_of_file.get(real[pos], real[pos])].append(pos)

    def row(pos: int, other: int) -> str:
        how = ["the same file" if real[pos] == real[other] else "identical bytes"]
        img_id = df["img_id"].iat[other].strip() or f"<row {other + 2}>"
        return f"img_id {img_id} ({name[other]}: {', '.join(how + _conflicts(df, pos, other))})"

    errors: dict[int, list[Problem]] = {}
    warnings: list[Problem] = []
    for rows in (g for g in groups.values() if len(g) > 1):
        agree = not any(_conflicts(df, rows[0], other) for other in rows[1:])
        for pos in rows[:1] if agree else rows:
            others = "; ".join(row(pos, o) for o in rows if o != pos)
            img_id = df["img_id"].iat[pos].strip() or f"<row {pos + 2}>"
            if agree:
                msg = f"same image as {others}, with the same split and labels: it counts twice"
                warnings.append(Problem(name[pos], msg, img_id, ProblemKind.DUPLICATE_IMAGE))
            else:
                msg = f"same image as {others}: one image cannot have two splits or labels"
                problem = Problem(name[pos], msg, img_id, ProblemKind.DUPLICATE_IMAGE)
                errors.setdefault(pos, []).append(problem)
    return errors, warnings


SPLIT_USES = {"train": "training", "val": "choosing the checkpoint", "test": "evaluation"}


def missing_classes(ds: GroupDataset) -> list[str]:
    """The classes of ``ds.config`` with no row in ``ds``."""
    present = set(ds.y.tolist())
    return [c for i, c in enumerate(ds.config.classes) if i not in present]


def coverage_problems(ds: GroupDataset, splits: Iterable[str]) -> list[Problem]:
    """The ``splits`` that have no rows, and the classes absent from ``train`` when it is one.

    ``lga data check`` reports these as warnings; a method that needs the split makes them errors.
    """
    meta = str(ds.root / METADATA_FILE)
    out = []
    for name in splits:
        part = ds.split(name)
        if len(part) == 0:
            msg = f"the {name} split has no rows (a method uses it for {SPLIT_USES[name]})"
            out.append(Problem(meta, msg, kind=ProblemKind.COVERAGE))
        elif name == "train":
            out += [
                Problem(
                    meta,
                    f"the train split has no image of class {c!r}; a model cannot learn it",
                    kind=ProblemKind.COVERAGE,
                )
                for c in missing_classes(part)
            ]
    return out


@dataclass
class CheckResult:
    """What ``check_dataset`` found: the valid rows (parsed), every problem, and warnings.

    ``problems`` make their rows (or the dataset) unusable; ``warnings`` do not: an image listed
    twice with the same labels, a split with no rows, a class absent from the training split.
    """

    table: pd.DataFrame
    problems: list[Problem]
    n_rows: int
    n_bad_rows: int
    warnings: list[Problem] = field(default_factory=list)


def _valid_table(df: pd.DataFrame, bad: set[int]) -> pd.DataFrame:
    keep = np.array([i not in bad for i in range(len(df))], dtype=bool)
    table = df.loc[keep, ["img_id", "img_filename", "y", "split", "place"]].copy()
    for col in INT_COLUMNS:
        table[col] = table[col].str.strip().astype(np.int64)
    table["img_filename"] = table["img_filename"].str.strip()
    return table.sort_values("img_id", kind="stable").reset_index(drop=True)


def check_dataset(
    root: str | Path,
    spec: DatasetConfig | None = None,
    *,
    splits: Iterable[str] | None = None,
    check_images: bool = True,
    workers: int | None = None,
    progress: bool = False,
    validation_cache: bool = True,
) -> CheckResult:
    """Validate a Waterbirds-layout dataset.

    Args:
        root: the dataset folder (holding ``metadata.csv``).
        spec: class/place names; resolved from the folder or ``waterbirds`` when None.
        splits: only check the images of these splits (metadata is always checked whole).
        check_images: decode every image (slow but finds truncated files).
        workers: decoding threads (default: CPU count, at most 8).
        progress: show a progress bar.
        validation_cache: skip the images unchanged (size, mtime, ctime) since they last decoded
            cleanly (:mod:`lga.data.validation_cache`); False decodes every one.

    Two rows naming the same image (the same resolved path; with ``check_images`` also the same
    bytes) are an error on both rows when their split, class or place differ, a warning otherwise.
    A split of ``splits`` (default: all) with no valid row, and a class absent from the valid
    training rows, are warnings. A header-only ``metadata.csv`` is a problem.

    Returns:
        The valid rows (parsed, sorted by img_id), every problem found, and the warnings.

    Raises:
        DataError: the folder, ``metadata.csv`` or a required column is missing; nothing
            row-level can be checked then.
    """
    root = Path(root)
    spec = spec or load_dataset_config(None, root)
    df = _read_metadata(root)
    meta = str(root / METADATA_FILE)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        probs = [
            Problem(
                meta,
                f"missing column {c!r} (expected columns: {', '.join(COLUMNS)})",
                kind=ProblemKind.METADATA,
            )
            for c in missing
        ]
        raise DataError(f"{meta}: missing column(s) {missing}", probs)
    if len(df) == 0:
        why = "has no rows, only a header"
        return CheckResult(
            _valid_table(df, set()), [Problem(meta, why, kind=ProblemKind.METADATA)], 0, 0
        )
    row_probs = _row_problems(df, spec, root)
    # Rows whose path is unsafe are never opened, nor compared with other files.
    safe = [
        pos
        for pos in range(len(df))
        if not any(p.kind is ProblemKind.UNSAFE_PATH for p in row_probs.get(pos, []))
    ]
    digests: dict[int, str] = {}
    if check_images:
        wanted = {SPLITS[s] for s in splits} if splits is not None and "all" not in splits else None
        todo = [
            pos
            for pos in safe
            if wanted is None or df["split"].iat[pos].strip() in {str(w) for w in wanted}
        ]
        names = [df["img_filename"].iat[p].strip() for p in todo]
        n_workers = workers or min(8, os.cpu_count() or 1)
        cache = ValidationCache(root, max_pixels=MAX_PIXELS) if validation_cache else None
        found = _check_images_once(root, names, todo, n_workers, progress, cache)
        for pos, why in found.problems.items():
            img_id = df["img_id"].iat[pos].strip() or f"<row {pos + 2}>"
            problem = Problem(names[todo.index(pos)], why, img_id, ProblemKind.IMAGE)
            row_probs.setdefault(pos, []).append(problem)
        digests = found.digests
    dup_errors, warnings = _duplicate_files(df, root, safe, digests)
    for pos, probs in dup_errors.items():
        row_probs.setdefault(pos, []).extend(probs)
    problems = [p for pos in sorted(row_probs) for p in row_probs[pos]]
    table = _valid_table(df, set(row_probs))
    covered = [s for s in SPLITS if splits is None or "all" in splits or s in splits]
    warnings += coverage_problems(GroupDataset.from_table(root, spec, table), covered)
    return CheckResult(table, problems, len(df), len(row_probs), warnings)


def load_dataset(
    root: str | Path,
    spec: DatasetConfig | str | None = None,
    *,
    splits: Iterable[str] | None = None,
    skip_bad_rows: bool = False,
    check_images: bool = True,
    progress: bool = False,
    validation_cache: bool = True,
    require: Iterable[str] = (),
) -> GroupDataset:
    """Read and validate a dataset; refuse it on any problem unless ``skip_bad_rows``.

    Args:
        root: the dataset folder.
        spec: a DatasetConfig, a shipped config name or YAML path; None resolves from the folder.
        splits: the splits that will be used: their images are decoded once to validate them.
        skip_bad_rows: drop faulty rows (each logged and kept in ``skipped``) instead of failing.
        check_images: decode the images of ``splits`` to validate them.
        progress: show a progress bar while checking images.
        validation_cache: skip images unchanged since they last decoded cleanly.
        require: splits the caller cannot do without: one with no (valid) rows, or ``train``
            lacking a class, is an error rather than a logged warning.

    Raises:
        DataError: listing every problem, when there is any and ``skip_bad_rows`` is False; or,
            in one line, what ``require`` lacks.
    """
    root = Path(root)
    if not isinstance(spec, DatasetConfig):
        spec = load_dataset_config(spec, root)
    res = check_dataset(
        root,
        spec,
        splits=splits,
        check_images=check_images,
        progress=progress,
        validation_cache=validation_cache,
    )
    if res.problems and not skip_bad_rows:
        raise DataError(
            f"dataset {root} has {len(res.problems)} problem(s) in {res.n_bad_rows} row(s); "
            "run `lga data check` for the full list, or pass --skip-bad-rows to leave them out",
            res.problems,
        )
    for p in res.problems:
        log.warning("skipping row: %s", p)
    ds = GroupDataset.from_table(root, spec, res.table, res.problems)
    lacking = coverage_problems(ds, require)
    if lacking:
        raise DataError(f"dataset {root}: " + "; ".join(p.message for p in lacking))
    for p in res.warnings:
        log.warning("%s", p)
    return ds


def subsample(ds: GroupDataset, n: int | None, *, seed: int) -> GroupDataset:
    """Seeded sample of ``n`` rows keeping group proportions (largest-remainder allocation).

    Returns ``ds`` unchanged when ``n`` is None or not smaller than ``len(ds)``.
    """
    if n is None or n >= len(ds):
        return ds
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    groups = ds.group
    counts = np.bincount(groups, minlength=ds.config.n_groups)
    exact = counts * n / counts.sum()
    alloc = np.floor(exact).astype(int)
    order = np.argsort(-(exact - alloc), kind="stable")
    alloc[order[: n - alloc.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(groups == g), size=k, replace=False)
        for g, k in enumerate(alloc)
        if k > 0
    ]
    index = np.sort(np.concatenate(chosen))
    return ds.select(index)
