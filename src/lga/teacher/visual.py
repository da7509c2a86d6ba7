"""Visual prompts drawn on the image before it goes to the teacher.

- ``grid``: a SCAFFOLD-style matrix of labelled dots (Lei et al. 2024) giving the teacher
  coordinates to refer to.
- ``circle``: a red ellipse around the object's box (Shtedritski et al. 2023), which steers a
  multimodal model's attention to the object.
"""

from __future__ import annotations

import enum
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from lga.errors import ConfigError

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
BOX_COLUMNS = ("img_id", "x0", "y0", "x1", "y1")


class VisualPrompt(str, enum.Enum):
    NONE = "none"
    GRID = "grid"
    CIRCLE = "circle"


def draw_grid(image: Image.Image, *, n: int = 6) -> Image.Image:
    """A copy of ``image`` with an ``n`` x ``n`` matrix of dots labelled ``row,col`` (1-based)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    r = max(1.5, min(w, h) / 80)
    font = ImageFont.load_default()
    for i in range(n):
        for j in range(n):
            x, y = (j + 1) * w / (n + 1), (i + 1) * h / (n + 1)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(0, 0, 0), outline=(255, 255, 255))
            draw.text(
                (x + r + 1, y - r),
                f"{i + 1},{j + 1}",
                fill=(0, 0, 0),
                font=font,
                stroke_width=1,
                stroke_fill=(255, 255, 255),
            )
    return out


def draw_circle(image: Image.Image, box: Box, *, margin: float = 0.1) -> Image.Image:
    """A copy of ``image`` with a red ellipse around ``box`` (grown by ``margin`` per side)."""
    out = image.convert("RGB").copy()
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    width = max(2, round(min(out.size) / 80))
    ImageDraw.Draw(out).ellipse(
        (x0 - dx, y0 - dy, x1 + dx, y1 + dy), outline=(255, 0, 0), width=width
    )
    return out


def load_boxes(path: str | Path) -> dict[int, Box]:
    """Object boxes from a CSV with columns ``img_id,x0,y0,x1,y1`` (pixels).

    Raises:
        ConfigError: the file is missing, lacks a column, or a row is not numeric.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"boxes file not found: {path}")
    df = pd.read_csv(path)
    missing = [c for c in BOX_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {missing}; expected {', '.join(BOX_COLUMNS)}")
    try:
        return {
            int(r.img_id): (float(r.x0), float(r.y0), float(r.x1), float(r.y1))
            for r in df.itertuples(index=False)
        }
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: non-numeric box value: {e}") from e


def apply_visual_prompt(
    image: Image.Image, kind: VisualPrompt, box: Box | None = None
) -> Image.Image:
    """The image as the teacher should see it."""
    if kind is VisualPrompt.GRID:
        return draw_grid(image)
    if kind is VisualPrompt.CIRCLE:
        if box is None:
            raise ConfigError("the circle visual prompt needs the object's box")
        return draw_circle(image, box)
    return image
