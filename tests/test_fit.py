"""`lga fit` end to end: every method on a tiny CLIP, a tiny dataset and a filled store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from fit_support import (
    PROMPTS,
    TEACHER,
    build_fit_env,
    fill_store,
    one_thread,  # noqa: F401  (autouse fixture)
)
from lga.cli import build_parser, main
from lga.commands.fit import resolve_fit_config
from lga.config import resolve_config
from lga.errors import ConfigError, LgaError
from lga.evaluation.zero_shot import metrics_from_predictions, train_group_counts
from lga.rundir import RunDir
from lga.train import FitConfig, fit
from lga.train.config import load_run_config, shipped_run_configs

METRIC_KEYS = {"method", "student", "split", "n", "accuracy", "weighted_accuracy",
               "worst_group_accuracy", "worst_group", "class_accuracy", "group_accuracy",
               "group_count"}  # fmt: skip


@pytest.fixture(scope="module")
def fit_env(tmp_path_factory, tiny_clip_dir):
    return build_fit_env(tmp_path_factory.mktemp("fit"), tiny_clip_dir)


def make_cfg(env: dict, method: str, *overrides: str, store: bool = True) -> FitConfig:
    base = {
        "method": method,
        "data": {"root": str(env["data"]), "num_workers": 0},
        "student": {"spec": str(env["clip"]), "device": "cpu"},
        "descriptions": {"store": str(env["store"]) if store else None},
        "train": {"batch_size": 8, "epochs": 1},
        "eval": {"use_cache": False, "at_start": False},
    }
    return resolve_config(FitConfig, base=base, overrides=list(overrides))


VARIANTS = {
    "zero-shot": ("zero-shot", []),
    "linear-probe": ("linear-probe", []),
    "erm": ("erm", []),
    "erm-no-pixel-cache": ("erm", ["train.cache_pixels=false"]),
    "spurious-aware": ("spurious-aware", []),
    "spurious-aware-keywords": ("spurious-aware", ["spurious_aware.spurious_from=keywords"]),
    "spurious-aware-inmodal": ("spurious-aware", ["spurious_aware.weights.clip=0",
                                                  "spurious_aware.weights.prompt_inmodal=0",
                                                  "spurious_aware.weights.separation=0"]),
    "lga": ("lga", []),
    "lga-all-terms": ("lga", ["lga.texts=[object_description,object_keywords]",
                              "lga.weights.background=0.5", "lga.weights.class_ce=0.5",
                              "lga.supcon=in"]),
    "lga-frozen-text": ("lga", ["train.freeze_text=true"]),
    # the class text made of the teacher's cleaned object descriptions (prototypes)
    "lga-description-head": ("lga", ["lga.head=descriptions", "lga.weights.class_ce=1",
                                     "lga.weights.supcon=0", "lga.clean=background"]),
    # the class prompts with the teacher's place direction projected out (saved as a head)
    "lga-project": ("lga", ["lga.project=background", "lga.weights.class_ce=1",
                            "lga.weights.supcon=0", "lga.weights.instance=0"]),
    "linear-probe-group-balanced": ("linear-probe", ["linear_probe.balance=group",
                                                     "linear_probe.penalty=l1"]),
    # seed 3: the reference's halves (a shuffle of the whole 16-image split) hold every group
    "dfr": ("dfr", ["dfr.subsets=3", "dfr.max_iter=300", "train.seed=3"]),
}  # fmt: skip


_RUNS: dict[tuple[str, str], dict] = {}


def made_run(fit_env: dict, name: str) -> dict:
    """The run of variant ``name``, fitted on first use (so no test depends on another's)."""
    key = (str(fit_env["root"]), name)
    if key not in _RUNS:
        method, overrides = VARIANTS[name]
        cfg = make_cfg(fit_env, method, *overrides)
        out = fit_env["root"] / f"run-{name}"
        torch.set_num_threads(1)
        metrics = fit(cfg, out, progress=False).metrics
        _RUNS[key] = {"name": name, "cfg": cfg, "out": out, "metrics": metrics, **fit_env}
    return _RUNS[key]


@pytest.fixture(scope="module", params=list(VARIANTS))
def run(request, fit_env):
    return made_run(fit_env, request.param)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_run_directory_and_metrics_schema(run):
    out, metrics = run["out"], run["metrics"]
    for name in ("config.yaml", "metrics.json", "predictions.parquet"):
        assert (out / name).exists(), name
    # a train log when the run trains or chooses on validation: not zero-shot (lga eval's shape)
    assert (out / "train_log.jsonl").exists() == (run["cfg"].method.value != "zero-shot")
    # model/ only when the run changed the model: weights, or a linear head beside them
    changed = run["cfg"].method.value not in ("zero-shot",)
    assert RunDir(out).model_dir == (out / "model" if changed else None)
    assert RunDir(out).model_source() == (str(out / "model") if changed else str(run["clip"]))
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert METRIC_KEYS <= set(metrics)
    assert metrics["method"] == run["cfg"].method.value and metrics["split"] == "test"
    assert metrics["n"] == 16 == sum(metrics["group_count"].values())
    assert metrics["n_train"] == 32
    assert metrics["worst_group_accuracy"] == min(metrics["group_accuracy"].values())
    assert all(0 <= a <= 1 for a in metrics["group_accuracy"].values())
    # predictions are enough to recompute every metric
    preds = pd.read_parquet(out / "predictions.parquet")
    assert len(preds) == 16 and {"img_id", "y", "place", "group", "pred"} <= set(preds)
    from lga.data import load_dataset

    full = load_dataset(run["data"], check_images=False)
    again = metrics_from_predictions(
        preds, full.split("test"), train_group_counts=train_group_counts(full)
    )
    assert {k: metrics[k] for k in again} == again
    # both records read back typed: the resolved config to the same object, the metrics to
    # a record that writes the same JSON again
    assert load_run_config(out) == run["cfg"]
    record = RunDir(out).read_record()
    assert record.to_json() == metrics and record.method == run["cfg"].method.value
    assert json.dumps(record.to_json(), indent=2) == (out / "metrics.json").read_text()


def test_model_reloads_with_transformers(run):
    from transformers import AutoProcessor, CLIPModel

    if RunDir(run["out"]).model_dir is None:
        return  # zero-shot: nothing saved, the base checkpoint is the model
    model = CLIPModel.from_pretrained(run["out"] / "model")
    processor = AutoProcessor.from_pretrained(run["out"] / "model")
    assert model.config.projection_dim == 16 and hasattr(processor, "image_processor")
    before, after = _weights(run["clip"]), _weights(run["out"] / "model")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if run["cfg"].method.fine_tunes:
        assert any(k.startswith("vision_model.") for k in changed)
        texts_changed = any(k.startswith("text_model.") for k in changed)
        # frozen on request, or because the method embeds no text at all
        assert texts_changed == (run["name"] not in ("lga-frozen-text", "spurious-aware-inmodal"))
    else:
        assert not changed


def test_train_log(run):
    if run["cfg"].method.value == "zero-shot":  # chooses nothing: its validation is in metrics
        assert run["metrics"]["val"]["worst_group_accuracy"] == run["metrics"]["val_score"]
        return
    lines = [json.loads(s) for s in (run["out"] / "train_log.jsonl").read_text().splitlines()]
    vals = [r for r in lines if "val" in r]
    assert vals and all("worst_group_accuracy" in r["val"] for r in vals)
    steps = [r for r in lines if "loss" in r]
    if not run["cfg"].method.fine_tunes:
        assert not steps
        return
    assert [r["step"] for r in steps] == [1, 2, 3, 4]  # 32 images / batch 8, one epoch
    terms = {
        "erm": {"class_ce"},
        # and the method's own learned scale
        "spurious-aware": {"clip", "inmodal", "prompt_inmodal", "separation", "logit_scale"},
        "lga": {"supcon", "instance"},
    }[run["cfg"].method.value]
    special = {
        "lga-all-terms": {"supcon", "instance", "background", "class_ce"},
        "spurious-aware-inmodal": {"inmodal"},
        "lga-description-head": {"instance", "class_ce"},
        "lga-project": {"class_ce"},
    }
    terms = special.get(run["name"], terms)
    for r in steps:
        assert terms | {"loss", "lr", "epoch", "step"} == set(r)
        assert all(np.isfinite(r[k]) for k in terms)
    assert run["metrics"]["selected_step"] == 4  # the only candidate (eval.at_start=false)


def test_pixel_cache_changes_nothing(fit_env):
    cached = made_run(fit_env, "erm")["out"]
    loader = made_run(fit_env, "erm-no-pixel-cache")["out"]
    assert (cached / "train_log.jsonl").read_text() == (loader / "train_log.jsonl").read_text()
    a, b = _weights(cached / "model"), _weights(loader / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_linear_probe_file_reproduces_predictions(fit_env):
    out = made_run(fit_env, "linear-probe")["out"]
    from lga.data import load_dataset
    from lga.student.model import load_student

    probe = load_file(str(out / "model" / "linear_probe.safetensors"))
    assert probe["weight"].shape == (2, 16) and probe["bias"].shape == (2,)
    student = load_student(str(out / "model"))
    test = load_dataset(fit_env["data"], check_images=False).split("test")
    feats = student.encode_images([test.load_image(i) for i in range(len(test))])
    probs = (feats @ probe["weight"].T + probe["bias"]).softmax(-1).numpy()
    preds = pd.read_parquet(out / "predictions.parquet")
    np.testing.assert_allclose(
        preds[["prob_landbird", "prob_waterbird"]].to_numpy(), probs, atol=1e-5
    )


@pytest.mark.parametrize(
    "name", ["linear-probe", "linear-probe-group-balanced", "dfr", "lga-description-head"]
)
def test_eval_of_a_linear_head_run_reproduces_its_predictions(fit_env, tmp_path, name):
    run = made_run(fit_env, name)
    out = tmp_path / "ev"
    argv = ["eval", "--data", str(fit_env["data"]), "--student", str(run["out"] / "model"),
            "--out", str(out), "--no-cache"]  # fmt: skip
    assert main(argv) == 0
    a, b = (
        pd.read_parquet(run["out"] / "predictions.parquet"),
        pd.read_parquet(out / "predictions.parquet"),
    )
    assert a["pred"].tolist() == b["pred"].tolist()
    cols = ["prob_landbird", "prob_waterbird"]
    np.testing.assert_allclose(a[cols].to_numpy(), b[cols].to_numpy(), rtol=0, atol=1e-6)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == run["cfg"].method.value
    assert metrics["group_accuracy"] == run["metrics"]["group_accuracy"]


def _assert_scored_through(out: Path, student, test, classes: torch.Tensor) -> np.ndarray:
    """The run's saved head is ``scale * classes`` ((C, D) normalised class texts) and its test
    predictions are that head's (through the saved model); returns those probabilities."""
    from lga.student.heads import read_head

    head, _ = read_head(out / "model")
    torch.testing.assert_close(head.weight, student.logit_scale() * classes, atol=1e-4, rtol=1e-4)
    feats = student.encode_images([test.load_image(i) for i in range(len(test))])
    probs = (student.logit_scale() * feats @ classes.T).softmax(-1).numpy()
    preds = pd.read_parquet(out / "predictions.parquet")
    cols = ["prob_landbird", "prob_waterbird"]
    np.testing.assert_allclose(preds[cols].to_numpy(), probs, atol=1e-4)
    return probs


def test_description_head_is_the_class_prototypes_of_the_cleaned_descriptions(fit_env):
    """lga.head=descriptions: the saved head, recomputed independently from the store, the saved
    model and strip_background, is scale * (normalised class means of the description
    embeddings); the run's test predictions are that head's."""
    run = made_run(fit_env, "lga-description-head")
    from lga.data import load_dataset
    from lga.store.core import DescriptionStore, dataset_key
    from lga.student.heads import read_head
    from lga.student.model import load_student
    from lga.train.data import strip_background

    full = load_dataset(fit_env["data"], check_images=False)
    train, test = full.split("train"), full.split("test")
    ids = train.img_ids.tolist()
    with DescriptionStore(fit_env["store"], read_only=True) as st:
        texts = st.texts("object_description", ids, dataset=dataset_key(full))
        kws = st.keywords("background_keywords", ids, dataset=dataset_key(full))
    cleaned = [strip_background(texts[i], kws[i]) for i in ids]
    student = load_student(str(run["out"] / "model"))
    emb = student.encode_texts(cleaned)
    y = torch.tensor(np.array(train.y))
    protos = torch.nn.functional.normalize(
        torch.stack([emb[y == c].mean(0) for c in (0, 1)]), dim=-1
    )
    head, classes = read_head(run["out"] / "model")
    assert classes == ["landbird", "waterbird"] and head.info["head"] == "description prototypes"
    _assert_scored_through(run["out"], student, test, protos)


def test_label_filter_replaces_the_texts_the_class_prompts_give_to_the_other_class(fit_env):
    """lga.filter=label, recomputed independently: the pre-trained text tower classifies each
    object text with the class prompts; where it disagrees with the image's label the text is
    the image's class prompt, elsewhere it is kept."""
    from lga.student.model import load_student
    from lga.train.finetune import _label_filter
    from lga.train.rundata import load_run_data

    cfg = make_cfg(fit_env, "lga", "lga.filter=label")
    data = load_run_data(cfg, check_images=False, progress=False)
    student = load_student(str(fit_env["clip"]))
    ids, y = data.sample.img_ids.tolist(), data.sample.y
    spec = data.full.config
    texts = {i: f"a bird {k}: " + "webbed feet " * (k % 4) for k, i in enumerate(ids)}
    out, replaced = _label_filter(texts, data, student, "a photo of a {}.")
    prompts = student.encode_texts(
        [t.format(c) for c in spec.classes for t in spec.class_templates]
    ).view(len(spec.classes), len(spec.class_templates), -1)
    classes = torch.nn.functional.normalize(
        torch.nn.functional.normalize(prompts, dim=-1).mean(1), dim=-1
    )
    said = (student.encode_texts([texts[i] for i in ids]) @ classes.T).argmax(1).numpy()
    assert 0 < (said != y).sum() < len(ids)  # the random tower disagrees with some labels
    for k, i in enumerate(ids):
        kept = said[k] == y[k]
        assert out[i] == (texts[i] if kept else f"a photo of a {spec.classes[y[k]]}.")
        assert (i in replaced) == (not kept)
    # and a run with it trains and scores
    run = fit(cfg, fit_env["root"] / "run-label-filter", progress=False)
    assert run.metrics["n"] == 16


def test_drop_filter_leaves_the_replaced_texts_out_of_the_saved_prototypes(fit_env, monkeypatch):
    """lga.filter=drop with the description head, recomputed independently: the saved head's
    prototypes are the class means of the texts that the pre-trained class prompts give to
    their image's class, through the saved model; the run's test predictions are that head's.
    The object texts are varied ones (as in the label filter's test), so that the random tower
    keeps some of a class and drops others."""
    import lga.train.finetune as finetune
    from lga.data import load_dataset
    from lga.student.model import class_text_features, load_student

    full = load_dataset(fit_env["data"], check_images=False)
    train, test = full.split("train"), full.split("test")
    ids, spec = train.img_ids.tolist(), full.config
    parts = ["webbed feet", "long neck", "short bill", "claws", "wings", "a tail", "plumage"]
    texts = {i: f"a bird with {parts[k % len(parts)]}" for k, i in enumerate(ids)}
    monkeypatch.setattr(
        finetune, "read_descriptions", lambda c, f, s, names: {n: dict(texts) for n in names}
    )
    method, overrides = VARIANTS["lga-description-head"]
    cfg = make_cfg(fit_env, method, *[o for o in overrides if o != "lga.clean=background"],
                   "lga.filter=drop")  # fmt: skip
    out = fit_env["root"] / "run-drop-filter"
    fit(cfg, out, progress=False)
    pre = load_student(str(fit_env["clip"]))  # the filter reads the pre-trained text tower
    prompts = torch.nn.functional.normalize(
        class_text_features(pre, spec.classes, spec.class_templates), dim=-1
    )
    y = torch.tensor(train.y.tolist())
    kept = (pre.encode_texts([texts[i] for i in ids]) @ prompts.T).argmax(1) == y
    # the random tower drops some of a class and keeps others: drop differs from label there
    assert any(((y == c) & kept).any() and ((y == c) & ~kept).any() for c in (0, 1))
    # as lga.filter=label, a dropped text is its image's class prompt, so a class none of whose
    # texts is kept makes its prototype of them all, as label would
    table = [texts[i] if k else f"a photo of a {spec.classes[c]}."
             for i, k, c in zip(ids, kept.tolist(), y.tolist(), strict=True)]  # fmt: skip
    student = load_student(str(out / "model"))
    emb = student.encode_texts(table)
    rows = [(y == c) & kept if ((y == c) & kept).any() else y == c for c in (0, 1)]
    protos = torch.nn.functional.normalize(torch.stack([emb[r].mean(0) for r in rows]), dim=-1)
    _assert_scored_through(out, student, test, protos)


def test_project_warns_when_every_background_answer_reads_as_one_place(fit_env, caplog):
    """With the shipped spurious prompts the random tiny text tower reads every background
    answer as one place: the run says there is nothing to project, in the texts or (with
    lga.project_images) in the images, and its head is the class prompts."""
    from lga.student.heads import read_head

    out = fit_env["root"] / "run-project-one-place"
    with caplog.at_level("WARNING"):
        method, overrides = VARIANTS["lga-project"]
        fit(make_cfg(fit_env, method, *overrides, "lga.project_images=true"), out, progress=False)
    said = [r.getMessage() for r in caplog.records]
    assert any("read as one place" in m for m in said)
    # ...nor in the images, said once however many evaluations ran
    assert sum("no class has sample images of two places" in m for m in said) == 1
    assert read_head(out / "model")[0].info["head"] == "class prompts"


def test_balancing_and_projection_read_the_teachers_places_once(fit_env, monkeypatch):
    """sample.balance=background and lga.project=background read the same background answers:
    the places are read once at start-up and serve both."""
    import lga.train.balance as balance
    import lga.train.finetune as finetune

    calls, original = [], balance.teacher_places

    def counted(*args, **kwargs):
        calls.append(args[-1])
        return original(*args, **kwargs)

    monkeypatch.setattr(finetune, "teacher_places", counted)
    monkeypatch.setattr(balance, "teacher_places", counted)
    method, overrides = VARIANTS["lga-project"]
    out = fit_env["root"] / "run-project-balanced"
    fit(make_cfg(fit_env, method, *overrides, "sample.balance=background"), out, progress=False)
    assert calls == ["background_description"]
    assert (
        sum(json.loads((out / "balance.json").read_text())["inferred_group_counts"].values()) == 32
    )


@pytest.mark.parametrize("images", [False, True], ids=["texts", "texts-and-images"])
def test_projected_head_is_the_class_prompts_without_the_teachers_place_direction(fit_env, images):
    """lga.project=background, recomputed independently: each training image's background
    answer is read as the place whose spurious prompts the pre-trained text tower puts nearest;
    the saved head is scale * the class prompts (through the saved model) with the direction
    between the two places' mean background-answer embeddings removed; the run's test
    predictions and `lga eval` are that head's. With lga.project_images=true, the head also
    has the images' place direction folded in: within each class with both places, the
    difference of the places' mean training-image embeddings (saved model), averaged over such
    classes; the head's vectors lose their component along it, without renormalising."""
    import shutil

    from lga.data import load_dataset
    from lga.store.core import DescriptionStore, dataset_key
    from lga.student.heads import read_head
    from lga.student.model import class_text_features, load_student

    # The same images and store, with the teacher's own answers as the places' spurious prompts,
    # so that the random tiny text tower reads both places (with the shipped prompts it reads
    # one, and there is nothing to project). The store's key, name@metadata, is unchanged.
    data = fit_env["root"] / "data-project"
    shutil.copytree(fit_env["data"], data, dirs_exist_ok=True)
    spec_yaml = yaml.safe_load((data / "dataset.yaml").read_text())
    spec_yaml["spurious_prompts"] = {
        "land": ["the background is a forest with trees.", "the background is grass and trees."],
        "water": ["the background is a lake.", "the background is the ocean and sky."],
    }
    (data / "dataset.yaml").write_text(yaml.safe_dump(spec_yaml))
    method, overrides = VARIANTS["lga-project"]
    out = fit_env["root"] / f"run-project-both-places-{images}"
    more = ["lga.project_images=true"] if images else []
    fit(make_cfg({**fit_env, "data": data}, method, *overrides, *more), out, progress=False)
    full = load_dataset(data, check_images=False)
    train, test, spec = full.split("train"), full.split("test"), full.config
    ids = train.img_ids.tolist()
    with DescriptionStore(fit_env["store"], read_only=True) as st:
        texts = st.texts("background_description", ids, dataset=dataset_key(full))
    bg = [texts[i] for i in ids]
    pre = load_student(str(fit_env["clip"]))
    sp = spec.spurious_texts()
    places_feats = torch.nn.functional.normalize(
        torch.stack([pre.encode_texts(sp[p]).mean(0) for p in spec.places]), dim=-1
    )
    places = (pre.encode_texts(bg) @ places_feats.T).argmax(1)
    assert set(places.tolist()) == {0, 1}  # both places read: the projection does something
    student = load_student(str(out / "model"))
    e = torch.nn.functional.normalize(student.encode_texts(bg), dim=-1)
    d = torch.nn.functional.normalize(e[places == 0].mean(0) - e[places == 1].mean(0), dim=0)
    with torch.no_grad():
        w = class_text_features(student, spec.classes, spec.class_templates)
    assert (w @ d).abs().max() > 1e-3  # the prompts had a part along it
    w = torch.nn.functional.normalize(w - (w @ d)[:, None] * d, dim=-1)
    head, classes = read_head(out / "model")
    assert classes == spec.classes and "place directions projected out" in head.info["head"]
    if images:
        feats = student.encode_images([train.load_image(i) for i in range(len(train))])
        y = torch.tensor(np.array(train.y))
        diffs = [
            feats[(y == c) & (places == 1)].mean(0) - feats[(y == c) & (places == 0)].mean(0)
            for c in (0, 1)
            if ((y == c) & (places == 0)).any() and ((y == c) & (places == 1)).any()
        ]
        assert diffs  # some class has images of both places: there is a direction
        b = torch.nn.functional.normalize(torch.stack(diffs).mean(0), dim=0)
        assert (w @ b).abs().max() > 1e-3
        w = w - (w @ b)[:, None] * b  # folded in: not renormalised
        assert "images' place direction projected out" in head.info["head"]
    probs = _assert_scored_through(out, student, test, w)
    cols = ["prob_landbird", "prob_waterbird"]
    # lga eval scores the saved model through that head
    again = fit_env["root"] / "eval-project"
    assert main(["eval", "--student", str(out / "model"), "--data", str(data), "--out", str(again),
                 "--no-cache"]) == 0  # fmt: skip
    np.testing.assert_allclose(
        pd.read_parquet(again / "predictions.parquet")[cols].to_numpy(), probs, atol=1e-4
    )


def test_spurious_aware_batches_are_balanced_by_the_teacher(fit_env):
    run = made_run(fit_env, "spurious-aware")
    assert run["cfg"].spurious_aware.balance == "teacher"
    balance = json.loads((run["out"] / "balance.json").read_text())
    assert balance["source"] == "teacher" and balance["prompt"] == "background_description"
    assert sum(balance["inferred_group_counts"].values()) == 32


def test_dfr_tunes_on_one_half_and_fits_balanced_subsets(fit_env):
    run = made_run(fit_env, "dfr")
    (record,) = [json.loads(s) for s in (run["out"] / "train_log.jsonl").read_text().splitlines()]
    assert [r["C"] for r in record["grid"]] == list(run["cfg"].dfr.c_grid)
    best = max(record["grid"], key=lambda r: r["score"])
    assert record["C"] == run["metrics"]["C"] == best["C"] and record["score"] == best["score"]
    # the first 8 of a shuffle of 16 held out; the other 8 balanced: 2 per group at seed 3
    assert record["n_tune_held_out"] == 8 and record["n_tune_fit"] == 8
    assert record["scaler"] == "train"  # the final StandardScaler: the training embeddings
    assert record["n_fit"] == 16 and run["metrics"]["subsets"] == 3  # val is balanced: all of it
    assert record["val"]["n"] == 8


def test_zero_shot_fit_equals_lga_eval(fit_env, tmp_path):
    out = made_run(fit_env, "zero-shot")["out"]
    assert (
        main(
            [
                "eval",
                "--data",
                str(fit_env["data"]),
                "--student",
                str(fit_env["clip"]),
                "--out",
                str(tmp_path / "ev"),
                "--no-cache",
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    fitted = json.loads((out / "metrics.json").read_text())
    assert {k: fitted[k] for k in METRIC_KEYS - {"method"}} == {
        k: ev[k] for k in METRIC_KEYS - {"method"}
    }
    # one shape: the same files, read the same way
    a, b = RunDir(out), RunDir(tmp_path / "ev")
    assert sorted(p.name for p in b.path.iterdir()) == sorted(p.name for p in a.path.iterdir())
    assert a.model_source() == b.model_source() == str(fit_env["clip"])
    pd.testing.assert_frame_equal(a.read_predictions(), b.read_predictions())
    from lga.report.runs import load_run

    assert load_run(a.path).base == load_run(b.path).base == str(fit_env["clip"])


# ---------------------------------------------------------------------------------------------
# Configuration


def _args(env: dict, *extra: str):
    return build_parser().parse_args(["fit", "--data", str(env["data"]), *extra])


def test_config_layers(fit_env, tmp_path):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        yaml.safe_dump(
            {
                "method": "erm",
                "student": {"spec": "from-yaml"},
                "train": {"lr": 1e-4, "epochs": 7, "weight_decay": 0.05},
                "lga": {"temperature": 0.2},
            }
        )
    )
    cfg = resolve_fit_config(
        _args(
            fit_env,
            "--config",
            str(run_file),
            "--epochs",
            "2",
            "--method",
            "lga",
            "--descriptions",
            "s.sqlite",
            "--n-train",
            "all",
            "--seed",
            "3",
            "train.lr=3e-5",
            "lga.weights.background=0.2",
        )
    )
    assert cfg.method.value == "lga"  # flag over file
    assert cfg.student.spec == "from-yaml"  # file over default
    assert cfg.train.epochs == 2 and cfg.train.weight_decay == 0.05 and cfg.train.lr == 3e-5
    assert cfg.lga.temperature == 0.2 and cfg.lga.weights.background == 0.2
    assert cfg.sample.n_train is None and cfg.sample.seed == cfg.train.seed == 3
    assert cfg.data.num_workers == 2  # a flag not given leaves the default
    # defaults without a file
    cfg = resolve_fit_config(_args(fit_env, "--method", "erm", "--student", "x"))
    assert (
        cfg.train.lr == 1e-5 and cfg.sample.n_train == 2000 and cfg.eval.select_by == "worst_group"
    )


def test_shipped_run_configs_are_valid(fit_env):
    assert {"waterbirds-vitb32", "waterbirds-vitl14"} <= set(shipped_run_configs())
    for name in ("waterbirds-vitb32", "waterbirds-vitl14"):
        cfg = resolve_fit_config(_args(fit_env, "--config", name, "--descriptions", "s.sqlite"))
        assert cfg.sample.n_train == 2000 and cfg.train.lr <= 1e-5
        assert cfg.student.spec.startswith("openai/clip-vit-")


@pytest.mark.parametrize("where", ["override", "file"])
def test_unknown_key_is_an_error_before_any_work(fit_env, tmp_path, capsys, where):
    out = tmp_path / "never"
    argv = [
        "fit",
        "--data",
        str(fit_env["data"]),
        "--student",
        str(fit_env["clip"]),
        "--method",
        "erm",
        "--out",
        str(out),
    ]
    if where == "file":
        (tmp_path / "bad.yaml").write_text("train:\n  lrr: 0.1\n")
        argv += ["--config", str(tmp_path / "bad.yaml")]
    else:
        argv += ["train.lrr=0.1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "train.lrr" in err and "Extra inputs are not permitted" in err
    assert not out.exists()
    with pytest.raises(ConfigError, match="train.lr"):
        make_cfg(fit_env, "erm", "train.lr=fast")


def test_missing_descriptions_error(fit_env, tmp_path):
    from lga.data import load_dataset

    full = load_dataset(fit_env["data"], check_images=False)
    skip = full.split("train").img_ids[:3].tolist()
    store = fill_store(tmp_path / "partial.sqlite", fit_env["data"], prompts=PROMPTS, skip=skip)
    cfg = make_cfg(fit_env, "lga", f"descriptions.store={store}")
    with pytest.raises(LgaError) as e:
        fit(cfg, tmp_path / "run", progress=False)
    msg = str(e.value)
    for part in (
        "3 of 32",
        "'object_description'",
        str(store),
        "lga describe",
        f"--data {fit_env['data']}",
        ", ".join(map(str, skip)),
    ):
        assert part in msg, part
    # a teacher filter that matches nothing: every image is missing, the teacher is named
    cfg = make_cfg(fit_env, "lga", "descriptions.teacher=other")
    with pytest.raises(LgaError, match="32 of 32 .*teacher other"):
        fit(cfg, tmp_path / "run2", progress=False)
    assert TEACHER != "other"


def test_existing_run_needs_resume_or_overwrite(fit_env, tmp_path):
    cfg = make_cfg(fit_env, "zero-shot")
    fit(cfg, tmp_path / "run", progress=False)
    with pytest.raises(LgaError, match="already holds a run"):
        fit(cfg, tmp_path / "run", progress=False)
    (tmp_path / "run" / "metrics.json").write_text("stale")
    fit(cfg, tmp_path / "run", overwrite=True, progress=False)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["n"] == 16


def test_overwrite_removes_what_lga_wrote_and_keeps_other_files(fit_env, tmp_path):
    cfg = make_cfg(fit_env, "zero-shot")
    out = tmp_path / "run"
    fit(cfg, out, progress=False)
    (out / "balance.json").write_text("{}")  # written by another method's earlier run
    (out / "notes.md").write_text("mine")
    fit(cfg, out, overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "metrics.json",
        "notes.md",
        "predictions.parquet",
    ]
    assert (out / "notes.md").read_text() == "mine"


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_lga_did_not_write_keeps_the_users_files(fit_env, tmp_path, overwrite):
    out = tmp_path / "mine"
    (out / "model").mkdir(parents=True)
    (out / "model" / "my.bin").write_bytes(b"weights")
    cfg = make_cfg(fit_env, "erm")
    with pytest.raises(LgaError, match=r"not an lga run folder .*holds model/"):
        fit(cfg, out, overwrite=overwrite, progress=False)
    assert (out / "model" / "my.bin").read_bytes() == b"weights"
    (out / "config.yaml").write_text("lr: 3\n")  # the user's, not an lga run's
    with pytest.raises(LgaError, match=r"not an lga run folder .*config\.yaml, model/"):
        fit(cfg, out, overwrite=overwrite, progress=False)
    assert (out / "model" / "my.bin").read_bytes() == b"weights"
    assert (out / "config.yaml").read_text() == "lr: 3\n"
    # other files beside a run's are fine: lga writes its own names only
    (out / "model" / "my.bin").rename(tmp_path / "my.bin")
    (out / "model").rmdir()
    (out / "config.yaml").unlink()
    (out / "notes.md").write_text("mine")
    cfg = make_cfg(fit_env, "zero-shot")
    fit(cfg, out, overwrite=overwrite, progress=False)
    assert (out / "notes.md").read_text() == "mine" and (out / "metrics.json").is_file()


def test_fit_failing_before_its_first_step_leaves_no_run(fit_env, tmp_path):
    out = tmp_path / "run"
    cfg = make_cfg(fit_env, "lga", "descriptions.teacher=other")  # every description missing
    with pytest.raises(LgaError, match="teacher other"):
        fit(cfg, out, progress=False)
    assert not out.exists()
    # A folder left by a run killed before its first step (config.yaml alone) is reused as is.
    out.mkdir()
    RunDir(out).write_config(make_cfg(fit_env, "erm"))
    fit(make_cfg(fit_env, "zero-shot"), out, progress=False)
    assert (out / "metrics.json").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == "zero-shot"


def test_cli_end_to_end(fit_env, tmp_path, capsys):
    out = tmp_path / "cli-run"
    assert (
        main(
            [
                "fit",
                "--data",
                str(fit_env["data"]),
                "--student",
                str(fit_env["clip"]),
                "--method",
                "spurious-aware",
                "--out",
                str(out),
                "--n-train",
                "16",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--num-workers",
                "0",
                "--no-progress",
                "--device",
                "cpu",
                "eval.use_cache=false",
                "eval.at_start=false",
                "spurious_aware.balance=groups",  # no store: the dataset's group labels
                "train.trainable=last_k",
                "train.last_k=1",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "worst group" in printed and str(out) in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 16 and metrics["method"] == "spurious-aware"
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["descriptions"]["store"] is None and cfg["train"]["trainable"] == "last_k"
    assert cfg["spurious_aware"]["balance"] == "groups"
    balance = json.loads((out / "balance.json").read_text())
    assert balance["source"] == "groups" and sum(balance["group_counts"].values()) == 16
    before, after = _weights(fit_env["clip"]), _weights(out / "model")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(
        k.startswith(
            (
                "vision_model.encoder.layers.1.",
                "text_model.encoder.layers.1.",
                "vision_model.post_layernorm",
                "text_model.final_layer_norm",
                "visual_projection",
                "text_projection",
            )
        )
        for k in changed
    )


def test_saved_model_files_get_the_mode_of_the_umask(fit_env, tmp_path):
    import os
    import stat

    cfg = make_cfg(fit_env, "linear-probe")
    old = os.umask(0o022)
    try:
        fit(cfg, tmp_path / "run", progress=False)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run" / "model").iterdir() if p.is_file()]
    assert "model.safetensors" in {p.name for p in files}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o644 for p in files}
