import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import balanced_rows, write_dataset
from lga.data import check_dataset
from lga.data.images import MAX_PIXELS, ImageLoadError, load_rgb


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


# EXIF orientation k, from the TIFF/EXIF specification: where the stored image's row 0 and
# column 0 are shown. As a map from a stored pixel (r, c) to the upright pixel (y, x) it shows,
# for an upright image of height H and width W:
STORED_TO_UPRIGHT = {
    1: lambda r, c, H, W: (r, c),  # row 0 top, column 0 left
    2: lambda r, c, H, W: (r, W - 1 - c),  # row 0 top, column 0 right
    3: lambda r, c, H, W: (H - 1 - r, W - 1 - c),  # row 0 bottom, column 0 right
    4: lambda r, c, H, W: (H - 1 - r, c),  # row 0 bottom, column 0 left
    5: lambda r, c, H, W: (c, r),  # row 0 left, column 0 top
    6: lambda r, c, H, W: (c, W - 1 - r),  # row 0 right, column 0 top
    7: lambda r, c, H, W: (H - 1 - c, W - 1 - r),  # row 0 right, column 0 bottom
    8: lambda r, c, H, W: (H - 1 - c, r),  # row 0 left, column 0 bottom
}


def _upright() -> np.ndarray:
    """(6, 10, 3): every pixel distinct, a red 2x3 block in the top-left corner."""
    H, W = 6, 10
    yy, xx = np.mgrid[:H, :W]
    arr = np.stack([yy * 20, xx * 20, 255 - yy * 10 - xx * 5], -1).astype(np.uint8)
    arr[:2, :3] = (255, 0, 0)
    return arr


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_pixel_by_pixel(tmp_path, orientation):
    upright = _upright()
    H, W = upright.shape[:2]
    stored_shape = (H, W) if orientation <= 4 else (W, H)
    stored = np.zeros((*stored_shape, 3), np.uint8)
    for r in range(stored_shape[0]):
        for c in range(stored_shape[1]):
            stored[r, c] = upright[STORED_TO_UPRIGHT[orientation](r, c, H, W)]
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(tmp_path, Image.fromarray(stored), "o.png", exif=exif)  # PNG: lossless
    out = np.asarray(load_rgb(path))
    assert out.shape == upright.shape
    assert (out[:2, :3] == (255, 0, 0)).all()  # the marker is in the top-left corner
    np.testing.assert_array_equal(out, upright)


def _header_only_png(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR declaring width x height (8-bit RGB) and IEND: no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "width,height",
    [(10_000, 9_000), (100_000, 100_000)],  # just above PIL's limit; above twice the limit
    ids=["above-limit", "far-above"],
)
def test_header_only_bomb_is_a_named_problem(tmp_path, width, height):
    assert MAX_PIXELS < width * height  # the default limit, not one passed in
    rows = balanced_rows(1)
    root = write_dataset(tmp_path / "ds", rows)
    bomb = root / rows[0][1]
    bomb.write_bytes(_header_only_png(width, height))
    assert bomb.stat().st_size < 100
    res = check_dataset(root, validation_cache=False)
    [problem] = res.problems
    assert problem.file == rows[0][1] and problem.img_id == str(rows[0][0])
    assert "decompression bomb" in problem.message
    assert res.n_bad_rows == 1 and len(res.table) == len(rows) - 1


def test_palette_transparency_composited_on_white(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0])  # red, blue, green
    img.putdata([0, 1, 2])
    # tRNS: red opaque, blue fully transparent, green at alpha 51 (= 0.2)
    path = _save(tmp_path, img, "p.png", transparency=bytes([255, 0, 51]))
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" in check.info
    out = np.asarray(load_rgb(path))
    # on white: 0.2 * green + 0.8 * white = (204, 255, 204)
    assert out.tolist() == [[[255, 0, 0], [255, 255, 255], [204, 255, 204]]]


@pytest.mark.parametrize("fmt,dtype,mode", [("TIFF", ">u2", "I;16B"), ("PNG", "<u2", "I;16")])
def test_16bit_grey_values(tmp_path, fmt, dtype, mode):
    arr = np.array([[1000, 16000], [31000, 61000]], dtype=dtype)
    path = _save(tmp_path, Image.fromarray(arr), f"g.{fmt.lower()}", format=fmt)
    with Image.open(path) as check:
        assert check.mode == mode
    # the rule: (v - min) / (max - min) * 255, truncated: 0, 63.75, 127.5, 255
    expected = [[0, 63], [127, 255]]
    out = np.asarray(load_rgb(path))
    assert out.shape == (2, 2, 3)
    assert out[..., 0].tolist() == out[..., 1].tolist() == out[..., 2].tolist() == expected
