"""Tests of the "Waterbirds in miniature" generator (lga.data.synth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from lga.data import synth
from lga.data.dataset import COLUMNS, load_dataset
from lga.data.dataset_config import DatasetConfig
from lga.data.synth import ATTRIBUTE_COLUMNS, ATTRIBUTE_VALUES, SynthConfig, draw, generate, write
from lga.errors import LgaError

SIZES = dict(n_train=200, n_val=200, n_test=200)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "wb", SynthConfig(seed=3, **SIZES))


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_layout_and_columns(dataset):
    meta = pd.read_csv(dataset / "metadata.csv")
    assert tuple(meta.columns) == COLUMNS
    assert meta["img_id"].tolist() == list(range(1, 601))
    assert meta["img_filename"].iat[122] == "images/000123.png"
    assert meta["split"].value_counts().sort_index().tolist() == [200, 200, 200]
    kinds = meta["place_filename"].str.split("/").str[0]
    assert set(kinds[meta["place"] == 0]) == {"forest", "grass"}
    assert set(kinds[meta["place"] == 1]) == {"lake", "ocean"}
    attrs = pd.read_csv(dataset / "attributes.csv")
    assert tuple(attrs.columns) == ATTRIBUTE_COLUMNS
    assert (attrs["img_id"] == meta["img_id"]).all()
    assert (attrs[["y", "place"]].to_numpy() == meta[["y", "place"]].to_numpy()).all()
    assert (kinds == attrs["background"]).all()
    with Image.open(dataset / meta["img_filename"].iat[0]) as img:
        assert (img.format, img.mode, img.size) == ("PNG", "RGB", (64, 64))
    spec = DatasetConfig.model_validate(yaml.safe_load((dataset / "dataset.yaml").read_text()))
    assert spec == synth.SYNTH_SPEC
    assert (spec.name, spec.classes, spec.places) == (
        "synth-waterbirds",
        ["landbird", "waterbird"],
        ["land", "water"],
    )


def test_loads_without_problems(dataset):
    ds = load_dataset(dataset, check_images=True)
    assert ds.config.name == "synth-waterbirds"
    assert len(ds) == 600 and not ds.skipped


def test_train_correlation_and_balanced_eval_splits(dataset):
    meta = pd.read_csv(dataset / "metadata.csv")
    train = meta[meta["split"] == 0]
    assert (train["y"] == train["place"]).mean() == pytest.approx(0.95, abs=0.01)
    assert train["y"].mean() == pytest.approx(0.23, abs=0.01)
    for split in (1, 2):
        sub = meta[meta["split"] == split]
        assert (sub.groupby(["y", "place"]).size() == 50).all() and len(sub) == 200


def test_default_train_groups_are_those_of_waterbirds():
    # Waterbirds train: 3498 landbirds on land, 184 on water, 56 waterbirds on land, 1057 on water.
    plan = synth.plan(SynthConfig())
    counts = plan[plan["split"] == 0].groupby(["y", "place"]).size().tolist()
    assert counts == [3498, 184, 56, 1057]


@pytest.mark.parametrize("n", [1, 5, 7, 8])
def test_eval_groups_as_equal_as_n_allows(n):
    plan = synth.plan(SynthConfig(n_train=4, n_val=n, n_test=n))
    val = plan[plan["split"] == 1]
    counts = np.bincount(val["y"] * 2 + val["place"], minlength=4)
    assert counts.sum() == n and counts.max() - counts.min() <= 1


def test_attribute_values_and_bbox(dataset):
    attrs = pd.read_csv(dataset / "attributes.csv")
    for column, allowed in ATTRIBUTE_VALUES.items():
        assert set(attrs[column]) <= set(allowed), column
    assert (attrs["class_name"] == attrs["y"].map({0: "landbird", 1: "waterbird"})).all()
    x0, y0, x1, y1 = (attrs[f"bbox_{c}"] for c in ("x0", "y0", "x1", "y1"))
    assert ((0 <= x0) & (x0 < x1) & (x1 <= 64) & (0 <= y0) & (y0 < y1) & (y1 <= 64)).all()
    side = np.maximum(x1 - x0, y1 - y0) / 64
    assert 0.18 < side.min() and side.max() < 0.6 and 0.25 < side.mean() < 0.45
    assert not ((attrs["pose"] == "swimming") & (attrs["place"] == 0)).any()


def test_class_shows_in_several_attributes_none_decisive(dataset):
    attrs = pd.read_csv(dataset / "attributes.csv")
    for column in ("size", "neck", "legs", "feet", "bill", "plumage", "wing", "pose"):
        # Accuracy of the best rule "value -> majority class" for this attribute alone.
        majority = attrs.groupby(column)["y"].agg(lambda y: max(y.mean(), 1 - y.mean()))
        share = attrs[column].value_counts(normalize=True)
        accuracy = float((majority * share).sum())
        assert accuracy < 0.995, column
    feet = attrs.groupby("y")["feet"].agg(lambda s: (s == "webbed").mean())
    assert feet[1] > 0.7 and feet[0] < 0.1


def test_bbox_covers_the_bird(dataset):
    # Pixels outside the box are background; the box differs from the picture around it.
    attrs = pd.read_csv(dataset / "attributes.csv").head(20)
    for r in attrs.itertuples():
        img = np.asarray(Image.open(dataset / f"images/{r.img_id:06d}.png"), dtype=float)
        box = img[r.bbox_y0 : r.bbox_y1, r.bbox_x0 : r.bbox_x1]
        assert box.size > 0 and box.std() > 5


def test_bird_fits_its_drawing_layer():
    # bird_sprite draws on a layer reaching 1.0 * scale (+2 px) around the body centre.
    for i in range(300):
        rng = np.random.default_rng([11, i])
        attrs = synth.sample_attributes(rng, i % 2, (i // 2) % 2)
        look = draw._look(rng, attrs)
        layer = Image.new("RGBA", (400, 400))
        draw._draw_bird(layer, (200.0, 200.0), 100.0, 1 - 2 * (i % 3 == 0), attrs, look, rng)
        x0, y0, x1, y1 = layer.getbbox()
        assert max(200 - x0, 200 - y0, x1 - 200, y1 - 200) < 100, attrs


def _mean_colour(root: Path, ids: np.ndarray) -> np.ndarray:
    return np.stack(
        [
            np.asarray(Image.open(root / f"images/{i:06d}.png"), dtype=float).mean(axis=(0, 1))
            for i in ids
        ]
    )


def _nearest_centroid_accuracy(x_train, t_train, x_test, t_test) -> float:
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-9
    z_train, z_test = (x_train - mu) / sd, (x_test - mu) / sd
    centroids = np.stack([z_train[t_train == c].mean(0) for c in (0, 1)])
    pred = np.argmin(((z_test[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((pred == t_test).mean())


def test_background_is_the_easier_cue(dataset):
    # As in Waterbirds: on balanced data, a colour-only classifier of the whole picture tells
    # water from land far better than waterbird from landbird.
    meta = pd.read_csv(dataset / "metadata.csv")
    fit, test = meta[meta["split"] == 1], meta[meta["split"] == 2]
    x_fit, x_test = (
        _mean_colour(dataset, fit["img_id"].to_numpy()),
        _mean_colour(dataset, test["img_id"].to_numpy()),
    )
    acc = {
        t: _nearest_centroid_accuracy(x_fit, fit[t].to_numpy(), x_test, test[t].to_numpy())
        for t in ("place", "y")
    }
    assert acc["place"] > 0.85
    assert acc["y"] < 0.7
    assert acc["place"] - acc["y"] > 0.2


def test_bird_crop_carries_the_class(dataset):
    # The bird itself is a usable cue: colour and shape of its box predict the class above chance.
    attrs = pd.read_csv(dataset / "attributes.csv")
    meta = pd.read_csv(dataset / "metadata.csv")

    def features(rows):
        out = []
        for r in rows.itertuples():
            img = np.asarray(Image.open(dataset / f"images/{r.img_id:06d}.png"), dtype=float)
            box = img[r.bbox_y0 : r.bbox_y1, r.bbox_x0 : r.bbox_x1]
            out.append(
                [*box.mean((0, 1)), *box.std((0, 1)), r.bbox_x1 - r.bbox_x0, r.bbox_y1 - r.bbox_y0]
            )
        return np.array(out)

    fit, test = attrs[meta["split"] == 1], attrs[meta["split"] == 2]
    acc = _nearest_centroid_accuracy(
        features(fit), fit["y"].to_numpy(), features(test), test["y"].to_numpy()
    )
    assert acc > 0.65


def test_deterministic_for_a_seed(tmp_path):
    cfg = SynthConfig(seed=7, n_train=6, n_val=4, n_test=4)
    a, b = _files(generate(tmp_path / "a", cfg)), _files(generate(tmp_path / "b", cfg))
    assert a == b
    c = _files(generate(tmp_path / "c", cfg.model_copy(update={"seed": 8})))
    assert c.keys() == a.keys()
    for name in ("metadata.csv", "attributes.csv", "images/000001.png"):
        assert c[name] != a[name], name


def test_image_depends_only_on_seed_and_id(tmp_path):
    # Growing a later split leaves the images before it unchanged (one generator per image).
    small = generate(tmp_path / "a", SynthConfig(seed=1, n_train=5, n_val=4, n_test=4))
    large = generate(tmp_path / "b", SynthConfig(seed=1, n_train=5, n_val=4, n_test=12))
    for i in range(1, 10):
        assert (small / f"images/{i:06d}.png").read_bytes() == (
            large / f"images/{i:06d}.png"
        ).read_bytes()


def test_workers_do_not_change_output(tmp_path):
    cfg = SynthConfig(seed=2, n_train=20, n_val=8, n_test=8)
    serial = _files(generate(tmp_path / "a", cfg))
    assert _files(generate(tmp_path / "b", cfg, workers=2)) == serial


@pytest.mark.parametrize(
    "bad",
    [
        {"correlation": 0.4},
        {"correlation": 1.01},
        {"n_train": 0},
        {"n_val": -1},
        {"size": 31},
        {"train_waterbird_fraction": 1.0},
        {"colour": "red"},
    ],
)
def test_config_validation(bad):
    with pytest.raises(ValidationError):
        SynthConfig(**bad)


def test_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LgaError, match="not a folder made by"):
        generate(tmp_path, SynthConfig(n_train=4, n_val=4, n_test=4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(LgaError, match="is a file"):
        generate(tmp_path / "file", SynthConfig(n_train=4, n_val=4, n_test=4))


def test_reuses_or_replaces_an_earlier_output(tmp_path):
    out = tmp_path / "wb"
    generate(out, SynthConfig(seed=0, n_train=8, n_val=4, n_test=4))
    stamp = (out / "metadata.csv").stat().st_mtime_ns
    generate(out, SynthConfig(seed=0, n_train=8, n_val=4, n_test=4))  # same: left as it is
    assert (out / "metadata.csv").stat().st_mtime_ns == stamp
    generate(out, SynthConfig(seed=0, n_train=4, n_val=4, n_test=4))  # smaller: no stale images
    assert len(list((out / "images").iterdir())) == 12
    assert len(load_dataset(out)) == 12


def test_interrupted_run_never_looks_complete(tmp_path, monkeypatch):
    out, calls = tmp_path / "wb", []
    real = write.render_example

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(write, "render_example", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate(out, SynthConfig(n_train=8, n_val=4, n_test=4))
    assert not (out / "metadata.csv").exists()
    monkeypatch.setattr(write, "render_example", real)
    assert len(load_dataset(generate(out, SynthConfig(n_train=8, n_val=4, n_test=4)))) == 16


@pytest.mark.parametrize("size", [32, 96])
def test_other_image_sizes(tmp_path, size):
    out = generate(tmp_path, SynthConfig(size=size, n_train=4, n_val=4, n_test=4))
    attrs = pd.read_csv(out / "attributes.csv")
    assert attrs[["bbox_x1", "bbox_y1"]].to_numpy().max() <= size
    with Image.open(out / "images/000001.png") as img:
        assert img.size == (size, size)


def test_bird_scale_draws_larger_birds():
    from lga.data.synth import render_example

    def width(scale: float) -> float:
        rows = [render_example(0, i, i % 2, (i // 2) % 2, 64, scale)[1] for i in range(24)]
        return float(np.mean([r["bbox_x1"] - r["bbox_x0"] for r in rows]))

    assert width(1.6) > 1.3 * width(1.0)
