"""Writing "Waterbirds in miniature": the configuration, the split plan and the files.

``generate`` writes ``images/NNNNNN.png``, ``attributes.csv``, ``dataset.yaml``, ``synth.yaml``
and, last, ``metadata.csv``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from lga.data.attributes import ATTRIBUTE_COLUMNS, ATTRIBUTE_FILE, write_attributes
from lga.data.dataset import METADATA_FILE
from lga.data.dataset_config import DATASET_FILE, DatasetConfig
from lga.data.synth.draw import render_example
from lga.data.synth.species import CLASSES, PLACES, UNSEEN_PLACES
from lga.errors import LgaError
from lga.outputs import make_output_dir

log = logging.getLogger("lga.data.synth")

# Bump when drawing or sampling changes: a folder made by another version is regenerated.
GENERATOR_VERSION = 1
MARKER_FILE = "synth.yaml"  # written first: marks a folder as (possibly partial) synth output
IMAGE_DIR = "images"

SYNTH_SPEC = DatasetConfig(
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
    prompt_set="waterbirds",  # the slides' four prompts, verbatim, as for real Waterbirds
)


def synth_spec(cfg: SynthConfig) -> DatasetConfig:
    """The dataset config a synth folder carries: ``SYNTH_SPEC``, with the unseen places named
    when the test split has images on them."""
    if not cfg.n_unseen:
        return SYNTH_SPEC
    return SYNTH_SPEC.model_copy(update={"unseen_places": list(UNSEEN_PLACES)})


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
        n_unseen: extra test images on places no training image has (snow, desert), balanced
            over class x unseen place, with place codes 2 and 3 (the dataset config's
            ``unseen_places``). They are scored apart from the usual groups (``unseen`` in
            metrics.json): the abstraction test.
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
    n_unseen: int = Field(0, ge=0)

    @property
    def n_total(self) -> int:
        return self.n_train + self.n_val + self.n_test + self.n_unseen

    def model_dump_marker(self) -> dict:
        """The config as recorded in ``synth.yaml`` (``n_unseen`` only when used, so that a
        folder made before it existed is still recognised)."""
        d = self.model_dump()
        if not self.n_unseen:
            d.pop("n_unseen")
        return d


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


def _balanced_groups(n: int, places: tuple[int, ...] = (0, 1)) -> dict[tuple[int, int], int]:
    groups = [(y, p) for y in (0, 1) for p in places]
    k = len(groups)
    return {g: n // k + (i < n % k) for i, g in enumerate(groups)}


def plan(cfg: SynthConfig) -> pd.DataFrame:
    """Rows ``img_id, split, y, place`` of the whole dataset (ids from 1, split by split).

    Group counts are exact (not sampled); the order within a split is shuffled by the seed. The
    unseen-place test images (``n_unseen``) come last, split 2, places 2 and 3.
    """
    parts, next_id = [], 1
    unseen = tuple(range(len(PLACES), len(PLACES) + len(UNSEEN_PLACES)))
    sizes = [
        (0, cfg.n_train, _train_groups(cfg.n_train, cfg.train_waterbird_fraction, cfg.correlation)),
        (1, cfg.n_val, _balanced_groups(cfg.n_val)),
        (2, cfg.n_test, _balanced_groups(cfg.n_test)),
    ]
    if cfg.n_unseen:
        sizes.append((3, cfg.n_unseen, _balanced_groups(cfg.n_unseen, unseen)))
    for part, n, counts in sizes:
        split = min(part, 2)
        yp = np.array([g for g, c in counts.items() for _ in range(c)], dtype=np.int64).reshape(
            -1, 2
        )
        yp = yp[np.random.default_rng([cfg.seed, 0, part]).permutation(n)]
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
        {
            "generator": "lga.data.synth",
            "version": GENERATOR_VERSION,
            "config": cfg.model_dump_marker(),
        },
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
    write_attributes(out, attributes)
    spec = synth_spec(cfg).model_dump(mode="json", exclude_none=True)
    if not spec.get("unseen_places"):
        spec.pop("unseen_places", None)  # as written before unseen places existed
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
