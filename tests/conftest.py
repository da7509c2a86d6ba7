"""Shared fixtures: tiny random checkpoints and small Waterbirds-layout datasets, built offline."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# No test may touch the network: every checkpoint is built here and loaded from a directory.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

HEADER = "img_id,img_filename,y,split,place,place_filename"


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A random CLIPModel + CLIPProcessor saved with save_pretrained (32x32 images, patch 8)."""
    from lga.testing.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip") / "clip")


def write_dataset(
    root: Path,
    rows: list[tuple],
    *,
    images: dict[str, Image.Image] | None = None,
    header: str = HEADER,
) -> Path:
    """Write metadata.csv rows ``(img_id, filename, y, split, place)`` and their images.

    Images not given in ``images`` are drawn as small random RGB JPEGs, tinted by place so that
    the data is not pure noise.
    """
    root.mkdir(parents=True, exist_ok=True)
    images = images or {}
    lines = [header]
    for img_id, name, y, split, place in rows:
        lines.append(f"{img_id},{name},{y},{split},{place},places/{img_id}.jpg")
        path = root / name
        if name in images:
            path.parent.mkdir(parents=True, exist_ok=True)
            img = images[name]
            img.save(path, **img.info.get("_save_kw", {}))
        elif not os.path.isabs(name) and ".." not in name and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(zlib.crc32(str(img_id).encode()))
            arr = rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)
            arr[..., 2 if int(place) else 1] = 200
            Image.fromarray(arr).save(path)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def balanced_rows(n_per_group_split: int = 3) -> list[tuple]:
    """Rows covering every (split, y, place) combination ``n`` times."""
    rows, i = [], 1
    for split in (0, 1, 2):
        for y in (0, 1):
            for place in (0, 1):
                for _ in range(n_per_group_split):
                    rows.append((i, f"images/{i:03d}.jpg", y, split, place))
                    i += 1
    return rows


@pytest.fixture()
def small_dataset(tmp_path) -> Path:
    """A clean 36-image dataset, 3 per (split, class, place)."""
    return write_dataset(tmp_path / "ds", balanced_rows(3))
