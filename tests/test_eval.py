import json

import pandas as pd
import pytest
import torch

from lga.cli import main
from lga.config import ConfigError, EvalRunConfig, resolve_config
from lga.errors import DataError


def test_eval_writes_run_directory(small_dataset, tiny_clip_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "eval",
            "--data",
            str(small_dataset),
            "--student",
            str(tiny_clip_dir),
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--num-workers",
            "0",
        ]
    )
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    keys = {
        "method",
        "student",
        "split",
        "n",
        "accuracy",
        "weighted_accuracy",
        "worst_group_accuracy",
        "worst_group",
        "class_accuracy",
        "group_accuracy",
        "group_count",
    }
    assert keys <= set(m)
    assert m["method"] == "zero-shot" and m["split"] == "test"
    assert sum(m["group_count"].values()) == m["n"] == 12
    assert m["worst_group_accuracy"] == min(m["group_accuracy"].values())
    preds = pd.read_parquet(out / "predictions.parquet")
    assert list(preds.columns) == [
        "img_id",
        "y",
        "place",
        "group",
        "pred",
        "prob_landbird",
        "prob_waterbird",
    ]
    assert len(preds) == 12 and (abs(preds.prob_landbird + preds.prob_waterbird - 1) < 1e-5).all()
    assert (preds.pred == preds[["prob_landbird", "prob_waterbird"]].to_numpy().argmax(1)).all()
    assert "worst group" in capsys.readouterr().out
    assert "spec:" in (out / "config.yaml").read_text()


def test_feature_cache_reused_and_invalidated(small_dataset, tiny_clip_dir, tmp_path, monkeypatch):
    from lga.student import features

    calls = []
    real = features.Student.image_features
    monkeypatch.setattr(
        features.Student,
        "image_features",
        lambda self, px, **kw: calls.append(features.pixels_len(px)) or real(self, px, **kw),
    )
    args = [
        "eval",
        "--data",
        str(small_dataset),
        "--student",
        str(tiny_clip_dir),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--num-workers",
        "0",
    ]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert sum(calls) == 12
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert sum(calls) == 12  # second run: every feature from the cache
    a = pd.read_parquet(tmp_path / "a" / "predictions.parquet")
    b = pd.read_parquet(tmp_path / "b" / "predictions.parquet")
    pd.testing.assert_frame_equal(a, b)
    # a changed key (another split, so other image ids; or other metadata) computes afresh
    assert main([*args, "--split", "val", "--out", str(tmp_path / "c")]) == 0
    assert sum(calls) == 24
    meta = small_dataset / "metadata.csv"
    meta.write_text(meta.read_text() + "\n")
    assert main([*args, "--out", str(tmp_path / "d")]) == 0
    assert sum(calls) == 36


def test_eval_refuses_bad_dataset_or_skips(small_dataset, tiny_clip_dir, tmp_path, capsys):
    (small_dataset / "images" / "025.jpg").write_text("broken")  # a test-split image
    args = [
        "eval",
        "--data",
        str(small_dataset),
        "--student",
        str(tiny_clip_dir),
        "--no-cache",
        "--num-workers",
        "0",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(args) == 1
    assert "images/025.jpg (img_id 25): not an image" in capsys.readouterr().err
    assert main([*args, "--skip-bad-rows"]) == 0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["n"] == 11


def test_config_layering_and_unknown_keys(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("eval:\n  batch_size: 8\nstudent:\n  dtype: float32\n")
    cfg = resolve_config(
        EvalRunConfig,
        base={"data": {"root": "x"}},
        files=[f],
        overrides=["eval.batch_size=4", "student.spec=foo"],
    )
    assert cfg.eval.batch_size == 4 and cfg.student.dtype == "float32" and cfg.student.spec == "foo"
    with pytest.raises(ConfigError, match="eval.batchsize"):
        resolve_config(EvalRunConfig, base={"data": {"root": "x"}}, overrides=["eval.batchsize=4"])
    with pytest.raises(ConfigError, match="eval.batch_size"):
        resolve_config(
            EvalRunConfig, base={"data": {"root": "x"}}, overrides=["eval.batch_size=many"]
        )
    with pytest.raises(ConfigError, match="key.sub=value"):
        resolve_config(EvalRunConfig, overrides=["oops"])


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "eval" in capsys.readouterr().out
    assert main([]) == 2


def test_pixel_memo_decodes_once_per_process(small_dataset, tiny_clip_dir, monkeypatch):
    """Evaluating two models on the same split decodes its images once; a budget bounds it."""
    from lga.data.dataset import load_dataset
    from lga.student import features
    from lga.student.model import load_student

    decoded = []
    real = features.PixelDataset.__getitem__
    monkeypatch.setattr(
        features.PixelDataset, "__getitem__", lambda self, k: decoded.append(k) or real(self, k)
    )
    features.clear_pixel_memo()
    student = load_student(str(tiny_clip_dir))
    test = load_dataset(small_dataset).split("test")
    val = load_dataset(small_dataset).split("val")
    kw = dict(batch_size=5, num_workers=0, progress=False)
    a = features.image_features(student, test, **kw)
    assert len(decoded) == len(test) == 12
    b = features.image_features(student, test, **kw)  # e.g. another fine-tuned model
    assert len(decoded) == 12
    torch.testing.assert_close(a, b)
    features.image_features(student, val, **kw)  # other rows: decoded
    assert len(decoded) == 24
    # a budget below one split keeps nothing: every call decodes
    features.clear_pixel_memo()
    monkeypatch.setenv(features.PIXEL_MEMO_ENV, "0.01")  # MiB; 12 images of 32x32 take 0.14
    features.image_features(student, test, **kw)
    features.image_features(student, test, **kw)
    assert len(decoded) == 48
    # room for one split: the least recently used one goes
    monkeypatch.setenv(features.PIXEL_MEMO_ENV, "0.2")
    for split in (test, val, test):
        features.image_features(student, split, **kw)
    assert len(decoded) == 48 + 36
    features.image_features(student, test, **kw)
    assert len(decoded) == 48 + 36
    features.clear_pixel_memo()
    monkeypatch.setenv(features.PIXEL_MEMO_ENV, "lots")
    with pytest.raises(DataError, match="LGA_PIXEL_MEMO_MB"):
        features.image_features(student, test, **kw)
    features.clear_pixel_memo()


@pytest.mark.parametrize(
    "remove, named",
    [
        (("tokenizer.json", "tokenizer_config.json"), "no tokenizer"),
        (("tokenizer.json",), "no tokenizer"),
        (("model.safetensors",), "no weights"),
        (("processor_config.json",), "no image processor"),
    ],
)
def test_eval_refuses_a_model_folder_missing_a_part(
    small_dataset, tiny_clip_dir, tmp_path, capsys, remove, named
):
    import shutil

    model = tmp_path / "run" / "model"
    shutil.copytree(tiny_clip_dir, model)
    for name in remove:
        (model / name).unlink()
    out = tmp_path / "eval"
    argv = ["eval", "--data", str(small_dataset), "--student", str(model), "--out", str(out)]
    assert main(argv + ["--no-cache", "--num-workers", "0", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{model} cannot be scored as saved: {named}" in err[0]
    assert "unexpected" not in err[0] and not out.exists()
