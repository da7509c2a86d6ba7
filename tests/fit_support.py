"""Tiny data for the fit tests: a Waterbirds-layout folder and a filled description store.

Images are 32x32 PNGs: a background colour by place (land green, water blue) and an ellipse
coloured by class (landbird brown, waterbird white), with a little per-image noise. The training
split is background-correlated, validation and test are balanced over the four groups.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from lga.data.dataset import load_dataset
from lga.store.core import DONE, DescriptionStore, Row, dataset_key

PROMPTS = ("object_description", "object_keywords", "background_description", "background_keywords")
TEACHER = "test-teacher"

_OBJECT = {
    0: [
        "a sparrow with clawed feet and a short neck",
        "a finch with a short bill",
        "a warbler with clawed feet",
    ],
    1: [
        "a gull with webbed feet and a long neck",
        "a duck with webbed feet and a flat bill",
        "a heron with a long neck",
    ],
}
_BACKGROUND = {0: ["a forest with trees", "grass and trees"], 1: ["a lake", "the ocean and sky"]}
SPEC = {
    "name": "tiny-birds",
    "classes": ["landbird", "waterbird"],
    "places": ["land", "water"],
    "object_noun": "bird",
    "class_templates": ["a photo of a {}.", "a photo of the {}."],
    "spurious_prompts": {
        "land": ["a photo of land.", "a photo of a forest."],
        "water": ["a photo of water.", "a photo of a lake."],
    },
}


def _image(rng: np.random.Generator, y: int, place: int) -> Image.Image:
    bg = (60, 150, 50) if place == 0 else (40, 90, 190)
    img = Image.new("RGB", (32, 32), bg)
    x0, y0 = rng.integers(4, 12, size=2)
    colour = (130, 80, 30) if y == 0 else (240, 240, 240)
    ImageDraw.Draw(img).ellipse([int(x0), int(y0), int(x0) + 14, int(y0) + 12], fill=colour)
    arr = np.asarray(img).astype(np.int16) + rng.integers(-20, 20, (32, 32, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _split_rows(split: int, n: int, correlated: bool) -> list[tuple[int, int, int]]:
    rows = []
    for k in range(n):
        y = k % 2
        # train: 3 of 4 images on the matching background; val/test: balanced groups
        place = (y if k % 8 < 6 else 1 - y) if correlated else (k // 2) % 2
        rows.append((split, y, place))
    return rows


def make_fit_dataset(
    root: Path, *, n_train: int = 32, n_val: int = 16, n_test: int = 16, seed: int = 0
) -> Path:
    """Write the folder (metadata.csv, dataset.yaml, images/) and return it."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = (
        _split_rows(0, n_train, True) + _split_rows(1, n_val, False) + _split_rows(2, n_test, False)
    )
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    for img_id, (split, y, place) in enumerate(rows, start=1):
        name = f"images/{img_id:04d}.png"
        _image(rng, y, place).save(root / name)
        lines.append(f"{img_id},{name},{y},{split},{place},places/{img_id}.jpg")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    (root / "dataset.yaml").write_text(yaml.safe_dump(SPEC))
    return root


def _answer(prompt: str, img_id: int, y: int, place: int) -> str:
    obj, bg = _OBJECT[y][img_id % 3], _BACKGROUND[place][img_id % 2]
    return {
        "object_description": f"the bird is {obj}.",
        "object_keywords": ", ".join(obj.replace(" and ", ", ").split(" with ")),
        "background_description": f"the background is {bg}.",
        "background_keywords": ", ".join(bg.replace(" and ", ", ").split(" with ")),
    }[prompt]


def fill_store(
    path: Path, data_root: Path, *, prompts: Iterable[str] = PROMPTS, skip: Iterable[int] = ()
) -> Path:
    """Write a done answer for every image and prompt (but the ``skip`` img_ids)."""
    from lga.store.core import parse_keywords

    ds = load_dataset(data_root, check_images=False)
    key, skipped = dataset_key(ds), set(skip)
    rows = []
    for img_id, y, place in zip(ds.img_ids.tolist(), ds.y.tolist(), ds.place.tolist(), strict=True):
        if img_id in skipped:
            continue
        for prompt in prompts:
            text = _answer(prompt, img_id, y, place)
            kw = parse_keywords(text) if prompt.endswith("keywords") else None
            rows.append(Row(key, img_id, prompt, "p0", TEACHER, "s0", DONE, text, kw))
    with DescriptionStore(path) as store:
        store.put(rows)
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids oversubscription (20x faster)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def build_fit_env(root: Path, clip: Path) -> dict:
    """A tiny dataset, a filled store and the tiny CLIP, under ``root``."""
    data = make_fit_dataset(root / "data")
    return {
        "root": root,
        "data": data,
        "store": fill_store(root / "store.sqlite", data),
        "clip": clip,
    }
