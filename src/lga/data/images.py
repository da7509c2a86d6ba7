"""Image loading: every PIL mode to RGB, EXIF orientation applied, decompression bombs refused."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# PIL's own default (about 89M pixels). Images above it are refused, not merely warned about.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class ImageLoadError(Exception):
    """An image file cannot be turned into an RGB picture; the message says why."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit grey: scale the actual range to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white, as browsers show it, rather than dropping alpha onto black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(
    path: str | Path, *, max_pixels: int = MAX_PIXELS, data: bytes | None = None
) -> Image.Image:
    """Open an image fully decoded as RGB with EXIF orientation applied.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels (decompression bomb guard).
        data: the file's bytes, when the caller has read them already (dataset validation hashes
            them); ``path`` is then not opened.

    Raises:
        ImageLoadError: missing, not an image, truncated/corrupt, or larger than ``max_pixels``.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageLoadError(
                        f"image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels} "
                        "(decompression bomb guard)"
                    )
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except ImageLoadError:
        raise
    except FileNotFoundError as e:
        raise ImageLoadError("image file not found") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(f"decompression bomb refused: {e}") from e
    except Image.UnidentifiedImageError as e:
        raise ImageLoadError("not an image (PIL cannot identify the file)") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(f"unreadable or truncated image: {e}") from e
