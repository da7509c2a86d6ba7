"""A handful of tiny bird images in the Waterbirds layout, with ``attributes.csv``, for tests.

Independent of ``lga data synth``: a few coloured shapes on land/water backgrounds, written with
the same files (``metadata.csv``, ``attributes.csv`` with the synth columns) so the teacher, the
store and the oracle can be tested in milliseconds.
"""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image, ImageDraw

from lga.data.attributes import write_attributes

_WATER = {
    "species": "gull",
    "size": "medium",
    "neck": "long",
    "legs": "short",
    "feet": "webbed",
    "bill": "flat",
    "plumage": "white and grey",
    "wing": "plain",
    "pose": "swimming",
}
_LAND = {
    "species": "sparrow",
    "size": "small",
    "neck": "short",
    "legs": "short",
    "feet": "clawed",
    "bill": "short-conical",
    "plumage": "brown",
    "wing": "barred",
    "pose": "perched",
}
_COLOURS = {
    "forest": (30, 90, 40),
    "grass": (110, 170, 60),
    "lake": (60, 110, 170),
    "ocean": (20, 60, 140),
}


def _attributes(img_id: int, y: int, place: int, size: int) -> dict[str, object]:
    background = ("forest", "grass")[img_id % 2] if place == 0 else ("lake", "ocean")[img_id % 2]
    box = (size // 4, size // 4 + img_id % 3, 3 * size // 4, 3 * size // 4)
    base = _WATER if y == 1 else _LAND
    return {
        "img_id": img_id,
        "y": y,
        "place": place,
        "class_name": ("landbird", "waterbird")[y],
        **base,
        "background": background,
        "bbox_x0": box[0],
        "bbox_y0": box[1],
        "bbox_x1": box[2],
        "bbox_y1": box[3],
    }


def _draw(attrs: dict[str, object], size: int) -> Image.Image:
    img = Image.new("RGB", (size, size), _COLOURS[str(attrs["background"])])
    box = [attrs[c] for c in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")]
    colour = (235, 235, 235) if attrs["y"] == 1 else (140, 90, 40)
    ImageDraw.Draw(img).ellipse(box, fill=colour)
    return img


def make_tiny_birds(
    root: str | Path, n: int = 6, *, size: int = 32, attributes: bool = True, split: int = 0
) -> Path:
    """Write ``n`` images (img_id 1..n, classes and places alternating) into ``root``.

    Args:
        root: the dataset folder (created).
        n: the number of images.
        size: image side in pixels.
        attributes: also write ``attributes.csv`` (as ``lga data synth`` does).
        split: the split code of every row (0 = train).

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    meta, attrs_rows = [], []
    for img_id in range(1, n + 1):
        y, place = img_id % 2, (img_id // 2) % 2
        attrs = _attributes(img_id, y, place, size)
        name = f"images/{img_id:04d}.png"
        _draw(attrs, size).save(root / name)
        meta.append(
            {
                "img_id": img_id,
                "img_filename": name,
                "y": y,
                "split": split,
                "place": place,
                "place_filename": f"places/{attrs['background']}.jpg",
            }
        )
        attrs_rows.append(attrs)
    _write_csv(root / "metadata.csv", meta)
    if attributes:
        write_attributes(root, attrs_rows)
    return root


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
