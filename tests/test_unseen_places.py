"""The abstraction test: test images on places no training image has (snow, desert), scored
apart from the usual groups (``unseen`` in metrics.json, ``predictions_unseen.parquet``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from lga.cli import main
from lga.data.dataset import load_dataset
from lga.data.synth import SynthConfig, generate
from lga.errors import DataError


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cfg = SynthConfig(seed=5, n_train=40, n_val=16, n_test=16, n_unseen=24, size=32)
    return generate(tmp_path_factory.mktemp("unseen") / "data", cfg)


def test_synth_writes_unseen_places_in_the_test_split_only(world):
    meta = pd.read_csv(world / "metadata.csv")
    unseen = meta[meta["place"] >= 2]
    assert len(unseen) == 24 and set(unseen["split"]) == {2}
    counts = unseen.groupby(["y", "place"]).size().to_dict()
    assert counts == {(y, p): 6 for y in (0, 1) for p in (2, 3)}  # balanced
    spec = yaml.safe_load((world / "dataset.yaml").read_text())
    assert spec["places"] == ["land", "water"] and spec["unseen_places"] == ["snow", "desert"]
    attrs = pd.read_csv(world / "attributes.csv").set_index("img_id")
    assert set(attrs.loc[unseen["img_id"], "background"]) == {"snow", "desert"}
    assert set(attrs.loc[meta[meta["place"] < 2]["img_id"], "background"]) <= {
        "forest", "grass", "lake", "ocean"}  # fmt: skip


def test_without_unseen_images_the_dataset_files_are_as_before(tmp_path):
    root = generate(tmp_path / "d", SynthConfig(seed=5, n_train=8, n_val=4, n_test=4, size=32))
    assert "unseen_places" not in yaml.safe_load((root / "dataset.yaml").read_text())
    assert "n_unseen" not in (root / "synth.yaml").read_text()
    assert load_dataset(root, check_images=False).unseen is None


def test_loading_sets_the_unseen_rows_apart(world):
    full = load_dataset(world, check_images=False)
    assert len(full.unseen) == 24 and (full.unseen.place >= 2).all()
    assert (full.place < 2).all() and len(full.split("test")) == 16
    assert full.unseen.config.places == ["land", "water", "snow", "desert"]
    assert sum(full.split("test").group_counts().values()) == 16


def test_an_unseen_place_outside_the_test_split_is_a_problem(world, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(world, copy)
    meta = pd.read_csv(copy / "metadata.csv")
    row = meta.index[meta["place"] >= 2][0]
    meta.loc[row, "split"] = 0
    meta.to_csv(copy / "metadata.csv", index=False)
    with pytest.raises(DataError) as e:
        load_dataset(copy, check_images=False)
    assert "unseen place" in str(e.value.problems[0])


def test_data_check_counts_the_unseen_groups(world, capsys):
    assert main(["data", "check", str(world), "--no-images"]) == 0
    out = capsys.readouterr().out
    test_row = next(line for line in out.splitlines() if line.startswith("test"))
    assert "landbird/snow" in out and "waterbird/desert" in out
    assert test_row.split()[-1] == "40"


@pytest.mark.slow
def test_fit_and_eval_score_unseen_places_apart_and_recomputably(world, tmp_path, tiny_clip_dir):
    run = tmp_path / "zs"
    args = ["fit", "--data", str(world), "--student", str(tiny_clip_dir), "--method",
            "zero-shot", "--out", str(run), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    preds = pd.read_parquet(run / "predictions.parquet")
    unseen_preds = pd.read_parquet(run / "predictions_unseen.parquet")
    assert len(preds) == 16 and set(preds["place"]) <= {0, 1}
    assert len(unseen_preds) == 24 and set(unseen_preds["place"]) == {2, 3}
    u = metrics["unseen"]
    correct = unseen_preds["pred"] == unseen_preds["y"]
    assert u["accuracy"] == pytest.approx(correct.mean())
    for ci, c in enumerate(["landbird", "waterbird"]):
        assert u["class_accuracy"][c] == pytest.approx(correct[unseen_preds["y"] == ci].mean())
    by_group = {g: float(np.mean(c)) for g, c in correct.groupby(unseen_preds["group"])}
    assert u["group_accuracy"] == pytest.approx(by_group)
    assert u["worst_group_accuracy"] == pytest.approx(min(by_group.values()))
    assert set(u["group_count"]) == {"landbird/snow", "landbird/desert", "waterbird/snow",
                                     "waterbird/desert"}  # fmt: skip
    assert "snow" not in json.dumps(metrics["group_accuracy"])  # the usual groups are untouched

    ev = tmp_path / "ev"
    assert main(["eval", "--data", str(world), "--student", str(tiny_clip_dir), "--out", str(ev),
                 "--no-progress"]) == 0  # fmt: skip
    assert json.loads((ev / "metrics.json").read_text())["unseen"] == u  # same model, same images

    report = tmp_path / "report"
    assert main(["report", str(run), "--out", str(report), "--no-alignment", "--no-saliency"]) == 0
    table = (report / "results.md").read_text()
    assert "unseen places (snow/desert)" in table and "waterbird on unseen places" in table
