"""`lga pretrain-toy` still produces a checkpoint of the shipped toy CLIP's shape."""

import json

import pytest
from safetensors import safe_open

from lga.workflows.toy import PROVENANCE_FILE, ToyConfig, pretrain_toy, toy_checkpoint


def _shapes(path) -> dict[str, tuple]:
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


@pytest.mark.slow
def test_pretrain_toy_matches_shipped_shape(tmp_path):
    shipped = toy_checkpoint()
    cfg = ToyConfig(n_images=24, epochs=1, batch_size=12, balanced_images=24, aux_batch_size=12)
    out = pretrain_toy(tmp_path / "toy", cfg, progress=False)
    assert _shapes(out) == _shapes(shipped)
    mine = json.loads((out / "config.json").read_text())
    ref = json.loads((shipped / "config.json").read_text())
    for tower in ("text_config", "vision_config"):
        for key in ("hidden_size", "num_hidden_layers", "vocab_size", "image_size", "patch_size"):
            assert mine[tower].get(key) == ref[tower].get(key), (tower, key)
    assert (out / "tokenizer.json").read_text() == (shipped / "tokenizer.json").read_text()
    made = json.loads((out / PROVENANCE_FILE).read_text())
    assert made["config"]["n_images"] == 24 and made["steps"] == 2
    assert 0.0 <= made["probe_accuracy"] <= 1.0 and 0.0 <= made["zero_shot_worst_group"] <= 1.0
    assert made["threads"] >= 1


def test_shipped_toy_was_made_with_the_current_defaults():
    """The shipped checkpoint is what `lga pretrain-toy` makes today (no stale asset)."""
    made = json.loads((toy_checkpoint() / PROVENANCE_FILE).read_text())
    assert made["config"] == ToyConfig().model_dump(mode="json")
    assert made["steps"] == ToyConfig().epochs * -(-ToyConfig().n_images // ToyConfig().batch_size)


def test_shipped_toy_clip_loads_and_knows_the_vocabulary():
    from lga.student.model import load_student

    student = load_student(str(toy_checkpoint()))
    tokens = student.tokenize(["a photo of a waterbird with webbed feet on a lake."])
    unk = student.tokenizer.convert_tokens_to_ids("<|unk|>")
    assert unk not in tokens["input_ids"][0].tolist()
    assert student.encode_texts(["a photo of a landbird."]).shape[0] == 1


@pytest.mark.slow
def test_shipped_toy_probe_figures_recompute():
    """lga_toy.json's probe figures are what the shipped weights give, and meet the issue's aims
    (a balanced probe of at least 0.90, a zero-shot worst group between 15% and 45%)."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from lga.workflows.toy import probe_model, probe_world

    made = json.loads((toy_checkpoint() / PROVENANCE_FILE).read_text())
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = toy_checkpoint()
        got = probe_model(
            CLIPModel.from_pretrained(path), CLIPProcessor.from_pretrained(path), probe_world()
        )
    finally:
        torch.set_num_threads(n)
    assert abs(got["probe_accuracy"] - made["probe_accuracy"]) < 0.01
    assert abs(got["zero_shot_worst_group"] - made["zero_shot_worst_group"]) < 0.01
    assert made["probe_accuracy"] >= 0.90
    assert 0.15 <= made["zero_shot_worst_group"] <= 0.45
