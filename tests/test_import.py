"""`lga data import`: CelebA and any table become datasets that check, load and evaluate."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import HEADER
from lga.cli import main
from lga.data import check_dataset, load_dataset
from lga.data.importers import read_celeba, write_import
from lga.errors import LgaError

ATTRS = ["5_o_Clock_Shadow", "Blond_Hair", "Eyeglasses", "Male", "Smiling"]
N_PER = 2  # images per (split, blond, male)


def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, "JPEG")


def celeba_rows() -> list[dict]:
    """``N_PER`` images per (partition, blond, male): 24, numbered like CelebA's."""
    rows = []
    for partition in (0, 1, 2):
        for blond in (-1, 1):
            for male in (-1, 1):
                for _ in range(N_PER):
                    i = len(rows) + 1
                    attrs = {a: -1 if (i + j) % 2 else 1 for j, a in enumerate(ATTRS)}
                    attrs |= {"Blond_Hair": blond, "Male": male}
                    rows.append({"image_id": f"{i:06d}.jpg", "partition": partition, **attrs})
    return rows


def fake_celeba(root: Path, layout: str = "csv", nested: bool = False) -> Path:
    """Kaggle's CSV layout (optionally its nested image folder) or the original text files."""
    rows = celeba_rows()
    images = root / "img_align_celeba"
    images = images / "img_align_celeba" if nested else images
    for i, row in enumerate(rows):
        _jpeg(images / row["image_id"], i)
    if layout == "csv":
        table = pd.DataFrame(rows)
        table[["image_id", *ATTRS]].to_csv(root / "list_attr_celeba.csv", index=False)
        table[["image_id", "partition"]].to_csv(root / "list_eval_partition.csv", index=False)
    else:  # the original: a count, the names, then space-separated rows (values padded)
        lines = [str(len(rows)), " ".join(ATTRS)]
        lines += [r["image_id"] + " " + " ".join(f"{r[a]:>2}" for a in ATTRS) for r in rows]
        (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        part = [f"{r['image_id']} {r['partition']}" for r in rows]
        (root / "list_eval_partition.txt").write_text("\n".join(part) + "\n")
    return root


def _expected_groups() -> dict[str, int]:
    return {g: N_PER for g in ("dark/female", "dark/male", "blond/female", "blond/male")}


def _assert_celeba_dataset(root: Path) -> None:
    assert main(["data", "check", str(root)]) == 0
    assert (root / "metadata.csv").read_text().splitlines()[0] == HEADER
    ds = load_dataset(root)
    assert ds.config.name == "celeba-blond" and len(ds) == 24
    for split in ("train", "val", "test"):
        assert ds.split(split).group_counts() == _expected_groups()
    by_row = {r["image_id"]: r for r in celeba_rows()}
    for name, y, place in ds.table[["img_filename", "y", "place"]].itertuples(index=False):
        row = by_row[Path(name).name]
        assert (y, place) == ((row["Blond_Hair"] + 1) // 2, (row["Male"] + 1) // 2)


@pytest.mark.parametrize(("layout", "nested"), [("csv", False), ("csv", True), ("txt", False)])
def test_celeba_in_place(tmp_path, capsys, layout, nested):
    src = fake_celeba(tmp_path / "celeba", layout, nested)
    before = sorted(p.name for p in src.rglob("*.jpg"))
    assert main(["data", "import", "celeba", str(src)]) == 0
    assert "blond/male" in capsys.readouterr().out
    _assert_celeba_dataset(src)
    assert sorted(p.name for p in src.rglob("*.jpg")) == before  # nothing copied
    ds = load_dataset(src)
    folder = "img_align_celeba/img_align_celeba" if nested else "img_align_celeba"
    assert ds.table["img_filename"].iat[0] == f"{folder}/000001.jpg"
    assert ds.image_path(0).resolve() == (src / folder / "000001.jpg").resolve()


@pytest.mark.parametrize("copy", [False, True])
def test_celeba_into_a_separate_folder(tmp_path, copy):
    src = fake_celeba(tmp_path / "celeba")
    out = tmp_path / "ds"
    args = ["data", "import", "celeba", str(src), "--out", str(out)] + ["--copy"] * copy
    assert main(args) == 0
    assert not (src / "metadata.csv").exists()
    image = out / "img_align_celeba" / "000001.jpg"
    assert image.is_symlink() is not copy and image.is_file()
    _assert_celeba_dataset(out)
    assert main(args) == 0  # an earlier import is replaced without --overwrite
    _assert_celeba_dataset(out)
    if not copy:  # only links into the imported folder are trusted
        elsewhere = tmp_path / "elsewhere.jpg"
        _jpeg(elsewhere, 99)
        image.unlink()
        os.symlink(elsewhere, image)
        problems = check_dataset(out).problems
        assert len(problems) == 1 and "symlink" in problems[0].message


def test_celeba_other_attributes_get_a_generic_config(tmp_path):
    src = fake_celeba(tmp_path / "celeba")
    plan = read_celeba(src, target="Smiling", spurious="Eyeglasses")
    write_import(plan)
    ds = load_dataset(src)
    assert ds.config.classes == ["not smiling", "smiling"]
    assert ds.config.places == ["not eyeglasses", "eyeglasses"]
    smiling = np.array([(r["Smiling"] + 1) // 2 for r in celeba_rows()])
    assert (ds.y == smiling).all()


def _break_celeba(src: Path, fault: str) -> str:
    """Make one fault in the CSV layout; returns what the error must say."""
    attrs = pd.read_csv(src / "list_attr_celeba.csv", dtype=str)
    part = pd.read_csv(src / "list_eval_partition.csv", dtype=str)
    if fault == "value":
        attrs.loc[4, "Male"] = "0"  # line 6
        expected = "list_attr_celeba.csv line 6: column 'Male': value '0' is not -1 or 1"
    elif fault == "split":
        part.loc[2, "partition"] = "3"
        expected = "list_eval_partition.csv line 4: column 'partition': unknown split '3'"
    elif fault == "image":
        (src / "img_align_celeba" / "000010.jpg").unlink()
        expected = "list_attr_celeba.csv line 11: column 'image_id': image "
    elif fault == "column":
        expected = "no column 'Blnd_Hair' (--target); did you mean 'Blond_Hair'?"
    else:  # an image without a partition
        part = part.drop(index=7)
        expected = "list_attr_celeba.csv line 9: image '000008.jpg' is not in"
    attrs.to_csv(src / "list_attr_celeba.csv", index=False)
    part.to_csv(src / "list_eval_partition.csv", index=False)
    return expected


@pytest.mark.parametrize("fault", ["value", "split", "image", "column", "partition"])
def test_celeba_faults_are_named(tmp_path, capsys, fault):
    src = fake_celeba(tmp_path / "celeba")
    expected = _break_celeba(src, fault)
    target = ["--target", "Blnd_Hair"] if fault == "column" else []
    assert main(["data", "import", "celeba", str(src), *target]) == 1
    err = capsys.readouterr().err
    assert expected in err, err
    assert not (src / "metadata.csv").exists()


def test_refuses_to_overwrite_metadata_it_did_not_write(tmp_path, capsys):
    src = fake_celeba(tmp_path / "celeba")
    (src / "metadata.csv").write_text(HEADER + "\n")
    assert main(["data", "import", "celeba", str(src)]) == 1
    assert f"{src / 'metadata.csv'} exists and was not written" in capsys.readouterr().err
    assert main(["data", "import", "celeba", str(src), "--overwrite"]) == 0
    assert main(["data", "import", "celeba", str(src)]) == 0  # its own: replaced
    with open(src / "metadata.csv", "a") as f:
        f.write("99,img_align_celeba/000001.jpg,0,0,0,x\n")  # edited by hand since
    with pytest.raises(LgaError, match="edited since"):
        write_import(read_celeba(src))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(LgaError, match="not empty"):
        write_import(read_celeba(src), tmp_path / "full")


def test_eval_runs_on_imported_celeba(tmp_path, tiny_clip_dir):
    src = fake_celeba(tmp_path / "celeba")
    assert main(["data", "import", "celeba", str(src)]) == 0
    out = tmp_path / "run"
    args = ["eval", "--data", str(src), "--student", str(tiny_clip_dir), "--out", str(out)]
    assert main([*args, "--cache-dir", str(tmp_path / "cache"), "--num-workers", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["group_count"] == _expected_groups()


# --------------------------------------------------------------------------- tables


def fake_table_rows(folder: Path) -> list[dict]:
    """12 images: one per (split spelling, hair, gender), images under ``folder/imgs``."""
    rows = []
    for split in ("train", "Valid", "TEST"):
        for hair in ("blond", "dark"):
            for gender in ("female", "male"):
                name = f"imgs/{len(rows):03d}.jpg"
                _jpeg(folder / name, len(rows))
                rows.append({"path": name, "hair": hair, "gender": gender, "fold": split})
    return rows


def _write_table(path: Path, rows: list[dict]) -> Path:
    df = pd.DataFrame(rows)
    if path.suffix == ".parquet":
        df.to_parquet(path)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    return path


TABLE_COLS = ["--image-col", "path", "--label-col", "hair", "--place-col", "gender"]
TABLE_COLS += ["--split-col", "fold"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_table_with_string_labels_and_splits(tmp_path, suffix):
    folder = tmp_path / "faces"
    table = _write_table(folder / f"labels{suffix}", fake_table_rows(folder))
    assert main(["data", "import", "table", str(table), *TABLE_COLS]) == 0
    assert main(["data", "check", str(folder)]) == 0
    ds = load_dataset(folder)
    assert ds.config.classes == ["blond", "dark"]  # sorted
    assert ds.config.places == ["female", "male"]
    assert ds.config.spurious_attribute == "gender"
    for split in ("train", "val", "test"):
        counts = ds.split(split).group_counts()
        assert counts == {g: 1 for g in ds.config.group_names()}
    assert ds.table["img_filename"].iat[0] == "imgs/000.jpg"
    assert (ds.y[:4] == [0, 0, 1, 1]).all()


def test_table_with_integer_labels_named_and_a_shipped_config(tmp_path):
    folder = tmp_path / "faces"
    rows = fake_table_rows(folder)
    for r in rows:  # as CelebA would: -1/1 attributes, 0/1/2 splits
        r["hair"] = 1 if r["hair"] == "blond" else -1
        r["fold"] = {"train": 0, "Valid": 1, "TEST": 2}[r["fold"]]
    table = _write_table(folder / "labels.csv", rows)
    cli = ["data", "import", "table", str(table), *TABLE_COLS, "--dataset-config", "celeba-blond"]
    assert main(cli) == 0
    ds = load_dataset(folder)
    assert ds.config.name == "celeba-blond"
    assert ds.split("val").group_counts() == {g: 1 for g in ds.config.group_names()}
    assert ds.y.tolist() == [1, 1, 0, 0] * 3  # 1 = blond, as in the config
    assert main([*cli, "--classes", "blond,dark"]) == 1  # disagrees with the config


def test_table_faults_are_named(tmp_path, capsys):
    folder = tmp_path / "faces"
    rows = fake_table_rows(folder)
    rows[3]["fold"] = "holdout"  # line 5
    rows[5]["path"] = "imgs/nope.jpg"  # line 7
    rows[7]["hair"] = "red"  # line 9, not in --classes
    table = _write_table(folder / "labels.csv", rows)
    cli = ["data", "import", "table", str(table), *TABLE_COLS, "--classes", "blond,dark"]
    assert main(cli) == 1
    err = capsys.readouterr().err
    assert f"{table} line 5: column 'fold': unknown split 'holdout'" in err
    assert f"{table} line 7: column 'path': image 'imgs/nope.jpg' is missing" in err
    assert f"{table} line 9: column 'hair': 'red' is not one of --classes" in err
    assert not (folder / "metadata.csv").exists()
    assert main(["data", "import", "table", str(table), "--label-col", "colour"]) == 1
    err = capsys.readouterr().err
    assert "no column 'colour' (--label-col)" in err and "no column 'image' (--image-col)" in err


def test_parquet_rows_are_numbered(tmp_path, capsys):
    folder = tmp_path / "faces"
    rows = fake_table_rows(folder)
    rows[2]["path"] = "imgs/gone.jpg"
    table = _write_table(folder / "labels.parquet", rows)
    assert main(["data", "import", "table", str(table), *TABLE_COLS]) == 1
    assert f"{table} row 3: column 'path': image 'imgs/gone.jpg' is missing" in (
        capsys.readouterr().err
    )


def test_table_images_outside_its_folder_need_out(tmp_path, capsys):
    folder = tmp_path / "faces"
    rows = fake_table_rows(folder)
    outside = tmp_path / "other" / "x.jpg"
    _jpeg(outside, 50)
    rows[0]["path"] = str(outside)  # absolute
    table = _write_table(folder / "labels.jsonl", rows)
    assert main(["data", "import", "table", str(table), *TABLE_COLS]) == 1
    assert "outside the table's folder" in capsys.readouterr().err
    out = tmp_path / "ds"
    assert main(["data", "import", "table", str(table), *TABLE_COLS, "--out", str(out)]) == 0
    assert main(["data", "check", str(out)]) == 0
    ds = load_dataset(out)
    assert ds.table["img_filename"].iat[0] == "external/000001-x.jpg"
    assert ds.image_path(0).resolve() == outside.resolve()


def test_table_names_given_twice_are_a_config_error(tmp_path, capsys):
    folder = tmp_path / "faces"
    table = _write_table(folder / "labels.csv", fake_table_rows(folder))
    assert main(["data", "import", "table", str(table), *TABLE_COLS, "--places", "male,male"]) == 1
    assert "a name is given twice in 'male,male'" in capsys.readouterr().err


def test_table_with_one_image_in_two_splits_is_refused_before_writing(tmp_path, capsys):
    folder = tmp_path / "faces"
    rows = fake_table_rows(folder)
    rows[9]["path"] = rows[0]["path"]  # line 11: a train image again, in test
    table = _write_table(folder / "labels.csv", rows)
    assert main(["data", "import", "table", str(table), *TABLE_COLS]) == 1
    err = capsys.readouterr().err
    assert f"{table} line 2: column 'path': the same image" in err
    assert "in " + f"{table} line 2, {table} line 11" in err and "two splits or labels" in err
    assert not (folder / "metadata.csv").exists()
    out = tmp_path / "ds"
    assert main(["data", "import", "table", str(table), *TABLE_COLS, "--out", str(out)]) == 1
    assert not out.exists()
    rows[9] = {**rows[0]}  # the same image with the same split and labels: it counts twice
    table = _write_table(folder / "labels.csv", rows)
    assert main(["data", "import", "table", str(table), *TABLE_COLS]) == 0


def test_table_file_that_is_no_image_is_refused(tmp_path, capsys):
    folder = tmp_path / "faces"
    rows = fake_table_rows(folder)
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    rows[4]["path"] = str(secret)  # absolute, outside the table's folder
    table = _write_table(folder / "labels.csv", rows)
    out = tmp_path / "ds"
    assert main(["data", "import", "table", str(table), *TABLE_COLS, "--out", str(out)]) == 1
    assert f"{table} line 6: column 'path': {secret} is not an image file" in (
        capsys.readouterr().err
    )
    assert not out.exists()


def test_overwrite_never_replaces_an_image_of_the_users(tmp_path, capsys):
    folder = tmp_path / "faces"
    table = _write_table(folder / "labels.csv", fake_table_rows(folder))
    out = tmp_path / "ds"
    mine = out / "imgs" / "003.jpg"
    _jpeg(mine, 99)
    before = mine.read_bytes()
    argv = ["data", "import", "table", str(table), *TABLE_COLS, "--out", str(out), "--overwrite"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{mine}: image of row 4: exists and no import put it there" in err
    assert not mine.is_symlink() and mine.read_bytes() == before
    assert sorted(p.name for p in out.rglob("*")) == ["003.jpg", "imgs"]  # nothing written
    mine.unlink()
    assert main(argv) == 0 and main(argv) == 0  # its own links are replaced on a rerun
    assert mine.is_symlink()
    copy = tmp_path / "copied"
    assert main([*argv[:-3], "--out", str(copy), "--copy"]) == 0
    assert main([*argv[:-3], "--out", str(copy), "--copy", "--overwrite"]) == 0  # its copies


def test_celeba_target_equal_to_spurious_is_refused(tmp_path, capsys):
    src = fake_celeba(tmp_path / "celeba")
    assert (
        main(["data", "import", "celeba", str(src), "--target", "Male", "--spurious", "Male"]) == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --target and --spurious are both 'Male': the spurious attribute must be another "
        "attribute than the class"
    ]
    assert not (src / "metadata.csv").exists()
