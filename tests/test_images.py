import io

import numpy as np
import pytest
from PIL import Image

from lga.data.images import ImageLoadError, load_rgb


def _save(tmp_path, img, name, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("L", "PNG"),
        ("CMYK", "JPEG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("LA", "PNG"),
        ("1", "PNG"),
        ("I;16", "PNG"),
        ("RGB", "WEBP"),
        ("P", "GIF"),
        ("YCbCr", "JPEG"),
        ("I", "TIFF"),
        ("F", "TIFF"),
    ],
)
def test_every_mode_becomes_rgb(tmp_path, mode, fmt):
    arr = (np.arange(20 * 30).reshape(20, 30) % 251).astype(np.uint8)
    if mode in ("I;16", "I", "F"):  # high bit depth grey
        wide = (arr.astype(np.int32) * 200).astype(np.uint16 if mode == "I;16" else np.int32)
        img = Image.fromarray(wide).convert(mode)
    else:
        img = Image.fromarray(np.stack([arr] * 3, -1), "RGB").convert(mode)
    path = _save(tmp_path, img, f"x.{fmt.lower()}", format=fmt)
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert out.size == (30, 20)


def test_16bit_grey_keeps_contrast(tmp_path):
    arr = np.zeros((4, 4), dtype=np.uint16)
    arr[:, 2:] = 60000
    path = _save(tmp_path, Image.fromarray(arr), "g16.png")
    out = np.asarray(load_rgb(path))
    assert out[0, 0, 0] == 0 and out[0, 3, 0] == 255  # scaled, not clipped to white


def test_rgba_composited_on_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    out = np.asarray(load_rgb(_save(tmp_path, img, "t.png")))
    assert (out == 255).all()


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = _save(tmp_path, img, "r.jpg", exif=exif.tobytes())
    assert Image.open(path).size == (40, 20)
    assert load_rgb(path).size == (20, 40)


def test_decompression_bomb_refused(tmp_path):
    path = _save(tmp_path, Image.new("RGB", (100, 100)), "big.png")
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_rgb(path, max_pixels=5000)


def test_truncated_and_not_image(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, "JPEG"
    )
    trunc = tmp_path / "t.jpg"
    trunc.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="truncated"):
        load_rgb(trunc)
    txt = tmp_path / "n.jpg"
    txt.write_text("hello")
    with pytest.raises(ImageLoadError, match="not an image"):
        load_rgb(txt)
    with pytest.raises(ImageLoadError, match="not found"):
        load_rgb(tmp_path / "missing.png")
