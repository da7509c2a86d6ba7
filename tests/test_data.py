import io
import os

import numpy as np
import pytest
from PIL import Image

from conftest import HEADER, balanced_rows, write_dataset
from lga.cli import main
from lga.data import ProblemKind, check_dataset, load_dataset, load_dataset_config
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
    # The duplicate id names both of its rows; so does their image: write_dataset draws it from
    # the img_id, so the two files are the same bytes (under different place labels).
    assert len(err.value.problems) == 12
    ds = load_dataset(root, skip_bad_rows=True)
    assert len(ds) == len(balanced_rows(2)) - 9
    assert len(ds.skipped) == 12
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
    assert load_dataset_config(None, root).classes == ["a", "b", "c"]
    assert check_dataset(root).problems == []  # y=2 is valid for three classes
    with pytest.raises(ConfigError, match="unknown dataset config"):
        load_dataset_config("nonexistent")
    (root / "bad.yaml").write_text("name: b\nclasses: [a, a]\nplaces: [x]\n")
    with pytest.raises(ConfigError, match="duplicate"):
        load_dataset_config(root / "bad.yaml")


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


# ---------------------------------------------------------------------------------------------
# The same image under two rows; datasets with no rows, a split with none, a class missing


def _twin_rows(tmp_path, how: str, differ: str | None):
    """A clean dataset, then img_id 2 made to name img_id 1's image (``how``), its split, class
    or place (``differ``) changed or not."""
    rows = balanced_rows(2)  # img_id 1 and 2: train, landbird, land
    root = write_dataset(tmp_path / "ds", rows)
    first = root / "images" / "001.jpg"
    if how == "same path":
        rows[1] = (2, "images/001.jpg", *rows[1][2:])
    elif how == "copy":  # another file with the same bytes
        (root / "images" / "002.jpg").write_bytes(first.read_bytes())
    else:  # a symlink inside the folder: another name, the same resolved file
        (root / "images" / "002.jpg").unlink()
        os.symlink(first, root / "images" / "002.jpg")
    img_id, name, y, split, place = rows[1]
    changed = {"split": (y, 2, place), "y": (1, split, place), "place": (y, split, 1)}
    rows[1] = (img_id, name, *changed.get(differ, (y, split, place)))
    return write_dataset(root, rows)


@pytest.mark.parametrize("how", ["same path", "copy", "symlink"])
@pytest.mark.parametrize("differ", [None, "split", "y", "place"])
def test_same_image_under_two_rows(tmp_path, capsys, how, differ):
    root = _twin_rows(tmp_path, how, differ)
    res = check_dataset(root, validation_cache=False)
    if differ is None:  # a warning naming both rows; the dataset stays usable
        assert res.problems == []
        [warning] = res.warnings
        assert warning.kind is ProblemKind.DUPLICATE_IMAGE and warning.img_id == "1"
        assert "img_id 2" in warning.message and "counts twice" in warning.message
        assert main(["data", "check", str(root)]) == 0
        assert (
            "warning: images/001.jpg (img_id 1): same image as img_id 2" in capsys.readouterr().out
        )
        return
    # An error on each row, naming the other one and what differs.
    by_row = {p.img_id: p for p in res.problems}
    assert sorted(by_row) == ["1", "2"] and res.n_bad_rows == 2
    assert all(p.kind is ProblemKind.DUPLICATE_IMAGE for p in res.problems)
    assert "same image as img_id 2" in by_row["1"].message
    assert "same image as img_id 1" in by_row["2"].message
    assert f", {differ} " in by_row["1"].message
    assert ("identical bytes" if how == "copy" else "the same file") in by_row["1"].message
    assert not set(res.table["img_id"]) & {1, 2}
    assert main(["data", "check", str(root)]) == 1
    assert "(img_id 2): same image as img_id 1" in capsys.readouterr().out
    with pytest.raises(DataError):
        load_dataset(root, validation_cache=False)


def test_copies_found_from_the_validation_cache_and_paths_without_decoding(tmp_path, monkeypatch):
    monkeypatch.setenv("LGA_CACHE", str(tmp_path / "cache"))
    root = _twin_rows(tmp_path, "copy", "split")
    assert len(check_dataset(root).problems) == 2  # decoded, sha1s recorded
    assert len(check_dataset(root).problems) == 2  # sha1s read back from the cache
    # Without decoding, files are not read: only the same path under two rows is found.
    assert check_dataset(root, check_images=False).problems == []
    same_path = _twin_rows(tmp_path / "b", "same path", "split")
    assert len(check_dataset(same_path, check_images=False).problems) == 2


def test_header_only_metadata(tmp_path, capsys):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "metadata.csv").write_text(HEADER + "\n")
    res = check_dataset(root)
    [problem] = res.problems
    assert problem.kind is ProblemKind.METADATA and "has no rows" in str(problem)
    assert problem.file == str(root / "metadata.csv")
    assert main(["data", "check", str(root)]) == 1
    assert "metadata.csv: has no rows, only a header" in capsys.readouterr().out
    with pytest.raises(DataError, match="1 problem"):
        load_dataset(root)


def _unreadable(root, how, monkeypatch):
    meta = root / "metadata.csv"
    if how == "folder":
        meta.mkdir()
    elif how == "not utf-8":
        meta.write_bytes(HEADER.encode() + b"\n1,images/caf\xe9.jpg,0,0,0,x\n")
    elif how == "empty file":
        meta.write_bytes(b"")
    else:  # as a user without read permission sees it (chmod is no obstacle to root)
        meta.write_text(HEADER + "\n")
        import pandas as pd

        def denied(path, *a, **k):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(pd, "read_csv", denied)
    return meta


@pytest.mark.parametrize(
    "how,what",
    [
        ("folder", "is a folder, not a file"),
        ("not utf-8", "is not UTF-8 text"),
        ("empty file", "is empty"),
        ("permission", "cannot be read: Permission denied"),
    ],
)
def test_unreadable_metadata_is_one_clear_error(tmp_path, capsys, monkeypatch, how, what):
    root = tmp_path / "ds"
    root.mkdir()
    meta = _unreadable(root, how, monkeypatch)
    with pytest.raises(DataError) as err:
        check_dataset(root)
    assert str(err.value).startswith(f"{meta} {what}")  # the file named, then why
    assert [p.kind for p in err.value.problems] == [ProblemKind.METADATA]
    assert main(["data", "check", str(root)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {meta} {what}")
    assert len(captured.err.strip().splitlines()) == 1, "said once"
    assert "Traceback" not in captured.err + captured.out


def test_not_utf8_metadata_names_the_files_byte_and_line(tmp_path, capsys):
    root = tmp_path / "ds"
    root.mkdir()
    rows = [f"{i},images/{i:06d}.png,0,0,0,land/{i}.png" for i in range(1, 20001)]
    good = (HEADER + "\n" + "\n".join(rows) + "\n").encode()
    at = good.index(b"images/015000.png")  # far past the first block pandas decodes
    (root / "metadata.csv").write_bytes(good[:at] + b"\xff" + good[at + 1 :])
    assert main(["data", "check", str(root), "--no-images"]) == 1
    line = good[:at].count(b"\n") + 1
    assert capsys.readouterr().err.strip() == (
        f"error: {root / 'metadata.csv'} is not UTF-8 text (invalid start byte at byte {at}, "
        f"line {line})"
    )


def _one_class_train(tmp_path):
    """Training rows of landbirds only; val and test as usual."""
    rows = [r for r in balanced_rows(2) if not (r[3] == 0 and r[2] == 1)]
    return write_dataset(tmp_path / "one-class", rows)


def test_check_warns_of_a_missing_class_and_an_empty_split(tmp_path, capsys):
    root = _one_class_train(tmp_path)
    res = check_dataset(root)
    assert res.problems == []
    assert [str(w) for w in res.warnings] == [
        f"{root / 'metadata.csv'}: the train split has no image of class 'waterbird'; "
        "a model cannot learn it"
    ]
    assert main(["data", "check", str(root)]) == 0
    assert "warning: " in capsys.readouterr().out
    no_val = write_dataset(tmp_path / "no-val", [r for r in balanced_rows(1) if r[3] != 1])
    [warning] = check_dataset(no_val).warnings
    assert warning.kind is ProblemKind.COVERAGE and "the val split has no rows" in warning.message
    assert check_dataset(no_val, splits=["train", "test"]).warnings == []  # not asked for
    assert len(load_dataset(no_val, require=["train", "test"])) == 8
    with pytest.raises(DataError, match="the val split has no rows"):
        load_dataset(no_val, require=["test", "val"])
    with pytest.raises(DataError, match="no image of class 'waterbird'"):
        load_dataset(root, require=["train"])


FIT_CASES = {
    "one-class train, erm": (
        "erm",
        "one-class",
        "the train split has no image of class 'waterbird'",
    ),
    "one-class train, probe": (
        "linear-probe",
        "one-class",
        "the train split has no image of class 'waterbird'",
    ),
    "no val, erm": ("erm", "no-val", "the val split has no rows"),
    "no test, zero-shot": ("zero-shot", "no-test", "the test split has no rows"),
    "one-image sample": ("erm", "sample-1", "the training sample of 1 image(s)"),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_fit_refuses_a_dataset_the_method_cannot_use(tmp_path, capsys, case):
    method, data, message = FIT_CASES[case]
    if data == "one-class":
        root = _one_class_train(tmp_path)
    else:
        split = {"no-val": 1, "no-test": 2}.get(data)
        root = write_dataset(tmp_path / data, [r for r in balanced_rows(1) if r[3] != split])
    out = tmp_path / "run"
    argv = ["fit", "--data", str(root), "--method", method, "--out", str(out)]
    argv += ["--student", "no-such-student", "--no-progress"]  # the data is refused first
    argv += ["--n-train", "1"] if data == "sample-1" else []
    assert main(argv) == 1
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert "Traceback" not in captured.out
    assert not out.exists()  # refused before the run directory is made
