import io
import os

import numpy as np
import pytest
from PIL import Image

from conftest import HEADER, balanced_rows, write_dataset
from lga.cli import main
from lga.data import check_dataset, load_dataset, load_dataset_spec
from lga.errors import ConfigError, DataError


def awkward_images() -> dict[str, Image.Image]:
    """One image per awkward encoding, keyed by file name."""
    arr = np.random.default_rng(0).integers(0, 255, (20, 28, 3), dtype=np.uint8)
    rgb = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 8
    rotated = rgb.copy()
    rotated.info["_save_kw"] = {"exif": exif.tobytes()}
    return {
        "images/001.jpg": rgb.convert("L"),
        "images/002.jpg": rgb.convert("CMYK"),
        "images/003.png": rgb.convert("RGBA"),
        "images/004.png": rgb.convert("P"),
        "images/005.png": Image.fromarray(arr[..., 0].astype(np.uint16) * 250),
        "images/006.jpg": rotated,
        "images/007.gif": rgb.convert("P"),
        "images/008.webp": rgb,
    }


def test_clean_dataset_with_awkward_encodings(tmp_path, capsys):
    images = awkward_images()
    rows = [(i + 1, name, i % 2, i % 3, (i // 2) % 2) for i, name in enumerate(images)]
    root = write_dataset(tmp_path / "ds", rows, images=images)
    result = check_dataset(root)
    assert result.problems == []
    assert len(result.table) == 8
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "landbird/land" in out


def _faulty(tmp_path):
    rows = balanced_rows(2)
    rows[0] = (1, "images/missing.jpg", 0, 0, 0)
    rows[1] = (2, "../outside.jpg", 0, 0, 0)
    rows[2] = (3, "/etc/passwd", 0, 0, 1)
    rows[3] = (4, "images/004.jpg", 0, 7, 1)  # bad split
    rows[4] = (5, "images/005.jpg", 3, 1, 0)  # y outside the config
    rows[5] = (6, "images/006.jpg", 0, 1, 9)  # place outside
    rows[6] = (6, "images/007.jpg", 0, 1, 1)  # duplicate img_id
    root = write_dataset(tmp_path / "bad", rows)
    (root / "images" / "missing.jpg").unlink()
    (root / "images" / "008.jpg").write_text("not an image at all")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, "JPEG"
    )
    (root / "images" / "009.jpg").write_bytes(buf.getvalue()[:300])  # truncated
    return root


def test_every_fault_is_named(tmp_path, capsys):
    root = _faulty(tmp_path)
    result = check_dataset(root)
    text = "\n".join(str(p) for p in result.problems)
    expected = [
        ("images/missing.jpg (img_id 1)", "missing"),
        ("../outside.jpg (img_id 2)", "escapes"),
        ("/etc/passwd (img_id 3)", "absolute"),
        ("images/004.jpg (img_id 4)", "bad split code 7"),
        ("images/005.jpg (img_id 5)", "y=3 is outside"),
        ("images/006.jpg (img_id 6)", "place=9 is outside"),
        ("images/007.jpg (img_id 6)", "duplicate img_id"),
        ("images/008.jpg (img_id 8)", "not an image"),
        ("images/009.jpg (img_id 9)", "truncated"),
    ]
    for where, what in expected:
        assert any(where in line and what in line for line in text.splitlines()), (
            where,
            what,
            text,
        )
    assert result.n_bad_rows == 9
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "bad split code 7" in out and "images/009.jpg" in out


def test_training_and_eval_refuse_or_skip(tmp_path):
    root = _faulty(tmp_path)
    with pytest.raises(DataError) as err:
        load_dataset(root)
    assert len(err.value.problems) == 10  # the duplicate id names both of its rows
    ds = load_dataset(root, skip_bad_rows=True)
    assert len(ds) == len(balanced_rows(2)) - 9
    assert len(ds.skipped) == 10
    assert not set(ds.img_ids) & {1, 2, 3, 4, 5, 6, 8, 9}


def test_symlink_escape(tmp_path):
    outside = tmp_path / "outside.jpg"
    Image.new("RGB", (8, 8)).save(outside)
    root = write_dataset(tmp_path / "ds", balanced_rows(1))
    os.symlink(outside, root / "images" / "link.jpg")
    meta = (root / "metadata.csv").read_text().replace("images/001.jpg", "images/link.jpg")
    (root / "metadata.csv").write_text(meta)
    assert any("symlink" in p.message for p in check_dataset(root).problems)


@pytest.mark.parametrize(
    "column", ["img_id", "img_filename", "y", "split", "place", "place_filename"]
)
def test_missing_column(tmp_path, column):
    header = ",".join(c for c in HEADER.split(",") if c != column)
    root = tmp_path / "ds"
    root.mkdir()
    (root / "metadata.csv").write_text(header + "\n")
    with pytest.raises(DataError, match=f"missing column.*{column}"):
        check_dataset(root)
    assert main(["data", "check", str(root)]) == 1


def test_non_integer_and_missing_folder(tmp_path):
    root = write_dataset(
        tmp_path / "ds", [(1, "images/001.jpg", "x", 0, 0), ("a", "images/002.jpg", 0, 0, 0)]
    )
    msgs = [str(p) for p in check_dataset(root).problems]
    assert any("y='x' is not an integer" in m for m in msgs)
    assert any("img_id='a' is not an integer" in m for m in msgs)
    with pytest.raises(DataError, match="not found"):
        check_dataset(tmp_path / "nope")


def test_metadata_only_mode_skips_decoding(tmp_path):
    root = _faulty(tmp_path)
    msgs = [p.message for p in check_dataset(root, check_images=False).problems]
    assert not any("truncated" in m or "not an image" in m for m in msgs)
    assert any("bad split" in m for m in msgs)


def test_images_checked_only_for_requested_splits(tmp_path):
    rows = balanced_rows(1)
    root = write_dataset(tmp_path / "ds", rows)
    test_file = next(name for _, name, _, split, _ in rows if split == 2)
    (root / test_file).write_text("garbage")
    assert check_dataset(root, splits=["train"]).problems == []
    assert len(check_dataset(root, splits=["test"]).problems) == 1


def test_dataset_config_from_folder_and_errors(tmp_path):
    root = write_dataset(tmp_path / "ds", [(1, "images/001.jpg", 2, 0, 0)])
    (root / "dataset.yaml").write_text(
        "name: three\nclasses: [a, b, c]\nplaces: [x, y]\nclass_templates: ['a photo of a {}.']\n"
    )
    assert load_dataset_spec(None, root).classes == ["a", "b", "c"]
    assert check_dataset(root).problems == []  # y=2 is valid for three classes
    with pytest.raises(ConfigError, match="unknown dataset config"):
        load_dataset_spec("nonexistent")
    (root / "bad.yaml").write_text("name: b\nclasses: [a, a]\nplaces: [x]\n")
    with pytest.raises(ConfigError, match="duplicate"):
        load_dataset_spec(root / "bad.yaml")


def test_splits_and_group_counts(small_dataset):
    ds = load_dataset(small_dataset)
    assert [len(ds.split(s)) for s in ("train", "val", "test", "all")] == [12, 12, 12, 36]
    assert ds.split("test").group_counts() == {
        "landbird/land": 3,
        "landbird/water": 3,
        "waterbird/land": 3,
        "waterbird/water": 3,
    }
    assert list(ds.img_ids) == sorted(ds.img_ids)
