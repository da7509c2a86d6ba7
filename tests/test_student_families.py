"""One shared suite over every student family (lga.testing.families.STUDENT_FAMILIES).

As transformers' model testers do: a tiny random checkpoint per family, built offline with
save_pretrained and loaded through from_pretrained, then for every family the same checks:
it loads as its family; a text's embedding does not depend on its batch; long texts fit the text
tower; scores use the model's own scale and bias; ``trainable`` names each tower's layers; zero-shot
through ``lga eval``; one step of each fine-tuning method, the saved model reloaded and rescored
equal. A new family is one entry of that table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fit_support import fill_store, make_fit_dataset, one_thread  # noqa: F401 (autouse fixture)
from lga.cli import main
from lga.config import resolve_config
from lga.data.dataset import load_dataset
from lga.errors import ConfigError
from lga.evaluation.zero_shot import predict_zero_shot, zero_shot_probs
from lga.student.families import encoder_layers, family_of, head_modules
from lga.student.model import load_student
from lga.testing.families import STUDENT_FAMILIES, StudentFamilyCase, build_siglip_student
from lga.train import FitConfig, fit, losses
from lga.train.methods import Embeddings, Erm, Lga
from lga.train.model import DualEncoder, set_trainable

CASES = {c.name: c for c in STUDENT_FAMILIES}
SHORT = "a photo of a landbird."
LONG = "a photo of a waterbird with webbed feet and a long neck on a lake ."
HUGE = " ".join(["a gull with webbed feet on the ocean"] * 30)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """name -> checkpoint folder, each family built once per session on first use."""
    root = tmp_path_factory.mktemp("families")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = CASES[name].build(root / name)
        return built[name]

    return get


@pytest.fixture(params=list(CASES))
def case(request) -> StudentFamilyCase:
    return CASES[request.param]


@pytest.fixture()
def student(case, checkpoints):
    return load_student(str(checkpoints(case.name)))


def _images(n: int = 3) -> list[Image.Image]:
    """Images of different shapes (NaFlex gives each its own patch grid and mask)."""
    sizes = [(40, 32), (24, 48), (64, 16)]
    out = []
    for i in range(n):
        img = Image.new("RGB", sizes[i % 3], (40 * i, 120, 200 - 30 * i))
        img.paste((250, 250, 250), (4, 4, 12 + 3 * i, 14))
        out.append(img)
    return out


# ---------------------------------------------------------------------------------------------
# Loading and the invariants


def test_loads_as_its_family(case, student):
    assert student.model.config.model_type == case.model_type
    assert student.family.name == case.family
    assert student.max_text_length == case.max_text_length
    tokens = student.tokenize([SHORT, LONG])
    width = tokens["input_ids"].shape[1]
    assert tokens["attention_mask"][:, 0].all()  # padded on the right, as trained
    if case.fixed_text_length:  # padded to the trained length whatever the batch
        assert width == case.fixed_text_length
    else:  # padded to the longest text of the batch
        assert width == int(tokens["attention_mask"].sum(dim=1).max())


def test_text_embedding_does_not_depend_on_its_batch(student):
    alone = student.encode_texts([SHORT])
    beside_long = student.encode_texts([LONG, SHORT, "a lake ."])[1:2]
    torch.testing.assert_close(beside_long, alone, atol=1e-5, rtol=1e-4)


def test_long_texts_fit_the_text_tower(student):
    tokens = student.tokenize([HUGE, SHORT])
    assert tokens["input_ids"].shape[1] == student.max_text_length
    feats = student.encode_texts([HUGE, SHORT])  # AltCLIP: no index error past the offset
    assert feats.shape[0] == 2 and torch.isfinite(feats).all()


def test_image_inputs_reach_the_model(case, student):
    inputs = student.image_inputs(_images())
    assert "pixel_values" in inputs
    if case.model_type == "siglip2":  # NaFlex: the mask and the shapes go along
        assert {"pixel_attention_mask", "spatial_shapes"} <= set(inputs)
        assert len({tuple(s) for s in inputs["spatial_shapes"].tolist()}) > 1  # own grids
    one_by_one = torch.cat([student.encode_images([im]) for im in _images()])
    torch.testing.assert_close(student.encode_images(_images()), one_by_one, atol=1e-5, rtol=1e-4)


def test_scores_use_the_models_own_scale_and_bias(case, student):
    images, texts = _images(), [SHORT, LONG]
    tokens = student.tokenize(texts)
    inputs = {**student.image_inputs(images), **{k: tokens[k] for k in student.family.text_inputs}}
    with torch.no_grad():
        reference = student.model(**inputs).logits_per_image  # (3, 2): the model's own scores
    u, v = student.encode_images(images), student.encode_texts(texts)
    torch.testing.assert_close(student.logits(u, v), reference, atol=1e-4, rtol=1e-4)
    model = student.model
    if case.model_type == "align":
        assert float(student.logit_scale()) == pytest.approx(1 / float(model.temperature.detach()))
    elif hasattr(model, "logit_scale"):
        want = float(model.logit_scale.detach().exp())
        assert float(student.logit_scale()) == pytest.approx(want)
    bias = float(model.logit_bias.detach()) if case.sigmoid else 0.0
    assert float(student.logit_bias()) == pytest.approx(bias)
    pair = student.pair_probs(u, v)
    expected = reference.sigmoid() if case.sigmoid else reference.softmax(dim=-1)
    torch.testing.assert_close(pair, expected, atol=1e-4, rtol=1e-4)
    # zero-shot class probabilities: a distribution, predicting the model's best-scored prompt
    probs = zero_shot_probs(u, v, student.logit_scale(), student.logit_bias())
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs.argmax(axis=1) == reference.argmax(dim=1).numpy()).all()


def test_trainable_names_each_towers_layers(case, student):
    model, family = student.model, student.family

    def trained() -> set[str]:
        return {n for n, p in model.named_parameters() if p.requires_grad}

    set_trainable(model, trainable="last_k", last_k=1, freeze_text=False, train_logit_scale=False)
    for side in ("vision", "text"):
        layers = encoder_layers(family, model, side)
        last = {id(p) for p in layers[-1].parameters()}
        first = {id(p) for p in layers[0].parameters()}
        on = {id(p) for p in model.parameters() if p.requires_grad}
        assert last <= on and not first & on, side
    set_trainable(
        model, trainable="projections", last_k=1, freeze_text=False, train_logit_scale=True
    )
    heads = {id(p) for s in ("vision", "text") for m in head_modules(family, model, s)
             for p in m.parameters()}  # fmt: skip
    scale = {id(p) for p in family.scale_parameters(model)}
    assert {id(p) for p in model.parameters() if p.requires_grad} == heads | scale
    for side in ("vision", "text"):
        assert head_modules(family, model, side), f"{case.name}: no {side} projection"
    if case.model_type == "align":
        assert "temperature" in trained()  # ALIGN's scale is its temperature
    if case.sigmoid:
        assert {"logit_scale", "logit_bias"} <= trained()


def test_dual_encoder_is_the_students_encoders(student):
    images, tokens = student.image_inputs(_images()), student.tokenize([SHORT, LONG])
    with torch.no_grad():
        u, v, scale, bias = DualEncoder(student.model)(
            images, tokens["input_ids"], tokens["attention_mask"]
        )
    torch.testing.assert_close(u, student.encode_images(_images()), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(v, student.encode_texts([SHORT, LONG]), atol=1e-5, rtol=1e-4)
    assert float(scale.detach()) == pytest.approx(float(student.logit_scale()))
    assert float(bias.detach()) == pytest.approx(float(student.logit_bias()))


# ---------------------------------------------------------------------------------------------
# Methods: which loss, with which scale


def _embeddings(sigmoid: bool) -> Embeddings:
    g = torch.Generator().manual_seed(0)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=g), dim=-1)  # noqa: E731
    return Embeddings(
        image=unit(6, 8),
        labels=torch.tensor([0, 1, 0, 1, 1, 0]),
        texts={"object_description": unit(6, 8)},
        class_prompts=unit(2, 8),
        logit_scale=torch.tensor(10.0),
        logit_bias=torch.tensor(-3.0),
        sigmoid=sigmoid,
    )


def test_sigmoid_families_train_with_the_sigmoid_loss():
    cfg = FitConfig.model_validate(
        {"method": "lga", "data": {"root": "x"}, "descriptions": {"store": "s.sqlite"}}
    )
    e = _embeddings(sigmoid=True)
    got = Erm(cfg).terms(e)["class_ce"]
    want = losses.class_prompt_sigmoid(
        e.image, e.class_prompts, e.labels, logit_scale=10.0, logit_bias=-3.0
    )
    torch.testing.assert_close(got, want)
    instance = Lga(cfg).terms(e)["instance"]
    u, v = e.image, e.texts["object_description"]
    torch.testing.assert_close(
        instance, losses.siglip_loss(u, v, logit_scale=10.0, logit_bias=-3.0)
    )
    softmax = _embeddings(sigmoid=False)
    torch.testing.assert_close(
        Erm(cfg).terms(softmax)["class_ce"],
        losses.class_prompt_ce(e.image, e.class_prompts, e.labels, logit_scale=10.0),
    )


def test_the_models_own_loss_is_lgas(case, student):
    """SigLIP's loss as the model computes it (return_loss) is losses.siglip_loss; CLIP's is
    losses.clip_loss (ALIGN's own adds label smoothing: not compared)."""
    if case.model_type not in ("clip", "siglip", "siglip2"):
        pytest.skip("the model's own loss is neither CLIP's nor SigLIP's")
    images, texts = _images(2), [SHORT, LONG]
    tokens = student.tokenize(texts)
    inputs = {**student.image_inputs(images), **{k: tokens[k] for k in student.family.text_inputs}}
    with torch.no_grad():
        theirs = student.model(**inputs, return_loss=True).loss
    u, v = student.encode_images(images), student.encode_texts(texts)
    scale, bias = student.logit_scale(), student.logit_bias()
    if case.sigmoid:
        ours = losses.siglip_loss(u, v, logit_scale=scale, logit_bias=bias)
    else:
        ours = losses.clip_loss(u, v, logit_scale=scale)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("loss", ["auto", "softmax"])
def test_the_trainer_scores_with_the_family_scale_bias_and_loss(
    case, loss, checkpoints, fit_data, tmp_path
):
    from lga.train.fit import build_fine_tuner, load_run_data, make_accelerator, release_accelerator

    cfg = _fit_cfg(checkpoints(case.name), fit_data, "erm", f"train.image_text_loss={loss}")
    acc = make_accelerator(cfg, tmp_path)
    try:
        tuner = build_fine_tuner(cfg, load_run_data(cfg, check_images=False, progress=False),
                                 tmp_path, acc, progress=False)  # fmt: skip
        batches = tuner.batches()
        e = tuner.embed(*next(batches))
        batches.close()
    finally:
        release_accelerator(acc)
    assert e.sigmoid == (case.sigmoid and loss == "auto")
    model = tuner.student.model
    assert float(e.logit_scale) == pytest.approx(float(family_of(model).logit_scale(model)))
    assert float(e.logit_bias) == pytest.approx(float(family_of(model).logit_bias(model)))
    assert e.image.shape[0] == 8 and e.class_prompts.shape[0] == 2


# ---------------------------------------------------------------------------------------------
# Loading failures


@pytest.fixture(scope="session")
def spiece_siglip(tmp_path_factory) -> Path:
    pytest.importorskip("sentencepiece")
    return build_siglip_student(tmp_path_factory.mktemp("spiece") / "siglip", spiece=True)


def test_spiece_only_checkpoint_loads_with_sentencepiece(spiece_siglip):
    path = spiece_siglip
    assert (path / "spiece.model").is_file() and not (path / "tokenizer.json").exists()
    student = load_student(str(path))
    assert type(student.tokenizer).__name__ == "SiglipTokenizer"
    assert student.tokenize([SHORT])["input_ids"].shape == (1, 16)
    alone = student.encode_texts([SHORT])
    torch.testing.assert_close(student.encode_texts([LONG, SHORT])[1:], alone, atol=1e-5, rtol=0)


@pytest.mark.slow  # a fresh interpreter (without sentencepiece) imports lga and transformers
def test_spiece_only_checkpoint_without_sentencepiece_names_the_extra(spiece_siglip, tmp_path):
    path = spiece_siglip
    code = (
        "import sys; sys.modules['sentencepiece'] = None\n"
        "from lga.cli import main\n"
        f"sys.exit(main(['eval', '--data', {str(tmp_path / 'none')!r}, "
        f"'--student', {str(path)!r}, '--out', {str(tmp_path / 'out')!r}, '--no-progress']))\n"
    )
    (tmp_path / "none").mkdir()
    make_fit_dataset(tmp_path / "none", n_train=4, n_val=4, n_test=4)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "pip install 'lga[sentencepiece]'" in done.stderr
    assert "unexpected" not in done.stderr.lower()
    assert len(done.stderr.strip().splitlines()) == 1  # one line


def test_train_logit_scale_refuses_a_model_without_one(checkpoints):
    student = load_student(str(checkpoints("blip-generic")))  # no entry in the family table
    del student.model.logit_scale  # a dual encoder without a learned scale
    with pytest.raises(ConfigError, match="no learned logit scale"):
        set_trainable(
            student.model, trainable="all", last_k=1, freeze_text=False, train_logit_scale=True
        )
    assert family_of(student.model).logit_scale(student.model) == 100.0


# ---------------------------------------------------------------------------------------------
# End to end: lga eval, and one step of every fine-tuning method


@pytest.fixture(scope="session")
def fit_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("family-fit")
    data = make_fit_dataset(root / "data", n_train=16, n_val=8, n_test=8)
    return {"data": data, "store": fill_store(root / "store.sqlite", data)}


def test_zero_shot_through_lga_eval(case, checkpoints, fit_data, tmp_path):
    ckpt = checkpoints(case.name)
    out = tmp_path / "eval"
    args = ["eval", "--data", str(fit_data["data"]), "--student", str(ckpt), "--out", str(out)]
    assert main([*args, "--num-workers", "0", "--no-cache"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 8
    preds = pd.read_parquet(out / "predictions.parquet")
    probs = preds[["prob_landbird", "prob_waterbird"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def _fit_cfg(case_dir: Path, fit_data: dict, method: str, *overrides: str) -> FitConfig:
    base = {
        "method": method,
        "data": {"root": str(fit_data["data"]), "num_workers": 0},
        "student": {"spec": str(case_dir), "device": "cpu"},
        "descriptions": {"store": str(fit_data["store"])},
        "train": {"batch_size": 8, "max_steps": 1, "lr": 1e-3},
        "eval": {"use_cache": False, "at_start": False},
    }
    return resolve_config(FitConfig, base=base, overrides=list(overrides))


METHODS = [
    "erm",
    pytest.param("lga", marks=pytest.mark.slow),
    pytest.param("spurious-aware", marks=pytest.mark.slow),
    pytest.param("linear-probe", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("method", METHODS)
def test_one_step_of_each_method_saves_a_model_that_rescores_equal(
    case, method, checkpoints, fit_data, tmp_path
):
    ckpt = checkpoints(case.name)
    out = tmp_path / "run"
    # erm streams its images through a DataLoader; the other methods preprocess them once
    streamed = ["train.cache_pixels=false"] if method == "erm" else []
    result = fit(_fit_cfg(ckpt, fit_data, method, *streamed), out, progress=False)
    assert result.finished and result.metrics["n"] == 8
    saved = pd.read_parquet(out / "predictions.parquet")
    model_dir = out / "model"
    if method == "linear-probe":  # the head travels with the model: lga eval applies it
        again = tmp_path / "again"
        args = ["eval", "--data", str(fit_data["data"]), "--student", str(model_dir)]
        assert main([*args, "--out", str(again), "--num-workers", "0", "--no-cache"]) == 0
        rescored = pd.read_parquet(again / "predictions.parquet")
        cols = [c for c in saved if c.startswith("prob_")]
        np.testing.assert_allclose(rescored[cols], saved[cols], atol=1e-5)
        return
    reloaded = load_student(str(model_dir))
    assert family_of(reloaded.model).name == case.family
    test = load_dataset(fit_data["data"]).split("test")
    probs = predict_zero_shot(
        reloaded,
        test,
        templates=test.config.class_templates,
        batch_size=8,
        num_workers=0,
        cache=None,
        progress=False,
    )
    np.testing.assert_allclose(probs, saved[["prob_landbird", "prob_waterbird"]], atol=1e-5)
    # the step changed the weights (the loss reached the model)
    before = load_student(str(ckpt)).model.state_dict()
    after = reloaded.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)


def test_explain_maps_a_vit_and_refuses_the_others_in_one_line(case, student):
    from lga.errors import LgaError
    from lga.report.explain import saliency

    def explain():
        return saliency(student, _images(1), class_names=["a", "b"], templates=["{}"], label="s")

    if case.model_type in ("siglip2", "align"):  # NaFlex patches; a CNN without attention
        with pytest.raises(LgaError, match="fixed-resolution ViT|ViT"):
            explain()
        return
    (shown,) = explain()
    assert np.isclose(shown.probs.sum(), 1.0) and shown.rollout.shape == shown.gradient.shape
