"""lga.report.explain: rollout and Grad-CAM against hand computations, figures on a tiny CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lga.cli import main
from lga.report.explain import (
    attention_rollout,
    explain,
    grad_cam,
    saliency,
    token_relevance,
    write_saliency_figures,
)
from lga.student.model import load_student

CLASSES = ["landbird", "waterbird"]
TEMPLATES = ["a photo of a {}."]


def _attn(b: int, h: int, t: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, t, t, generator=g).softmax(dim=-1)


def test_rollout_one_layer_is_the_residual_mix():
    a = _attn(2, 3, 5, 0)
    expected = 0.5 * a.mean(1) + 0.5 * torch.eye(5)
    expected = expected / expected.sum(-1, keepdim=True)
    assert torch.allclose(attention_rollout([a]), expected, atol=1e-6)


def test_rollout_multiplies_layers_in_order():
    layers = [_attn(1, 2, 4, s) for s in range(3)]
    mixed = [0.5 * a.mean(1) + 0.5 * torch.eye(4) for a in layers]
    expected = mixed[2] @ mixed[1] @ mixed[0]  # later layers on the left
    out = attention_rollout(layers)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(out.sum(-1), torch.ones(1, 4), atol=1e-6)


@pytest.mark.parametrize("fusion", ["max", "min"])
def test_rollout_head_fusion(fusion):
    a = _attn(1, 4, 3, 1)
    fused = a.amax(1) if fusion == "max" else a.amin(1)
    mix = 0.5 * fused + 0.5 * torch.eye(3)
    out = attention_rollout([a], head_fusion=fusion)
    assert torch.allclose(out, mix / mix.sum(-1, keepdim=True), atol=1e-6)


def test_rollout_rejects_unknown_fusion():
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout([_attn(1, 1, 2, 0)], head_fusion="median")


def test_token_relevance_cls_row_and_mean_pooling():
    r = torch.arange(25.0).view(1, 5, 5)
    assert torch.equal(token_relevance(r, 4), r[:, 0, 1:])
    assert torch.equal(token_relevance(r[:, 1:, 1:], 4), r[:, 1:, 1:].mean(1))


def test_grad_cam_by_hand():
    acts = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]])  # (1, 3, 2)
    grads = torch.tensor([[[3.0, -3.0], [0.0, -3.0], [0.0, 0.0]]])  # mean over tokens: (1, -2)
    assert torch.allclose(grad_cam(acts, grads), torch.tensor([[1.0, 0.0, 0.0]]))


@pytest.fixture(scope="module")
def student(tiny_clip_dir):
    return load_student(str(tiny_clip_dir))


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


def test_saliency_maps_on_tiny_clip(student):
    before = student.model.config._attn_implementation
    maps = saliency(student, _images(3), class_names=CLASSES, templates=TEMPLATES, label="a")
    assert len(maps) == 3
    for m in maps:
        assert m.rollout.shape == m.gradient.shape == (4, 4)  # 32 px / patch 8
        assert m.image.shape == (32, 32, 3)
        assert 0 <= m.rollout.min() and m.rollout.max() <= 1 and m.rollout.max() == 1
        assert np.isfinite(m.gradient).all() and 0 <= m.gradient.min() <= m.gradient.max() <= 1
        assert m.probs.sum() == pytest.approx(1.0, abs=1e-5)
    # The student is left as it was found.
    assert student.model.config._attn_implementation == before
    assert all(p.grad is None for p in student.model.parameters())


def test_saliency_probs_match_zero_shot(student):
    from lga.evaluation.zero_shot import zero_shot_probs
    from lga.student.model import class_text_features

    imgs = _images(2)
    maps = saliency(student, imgs, class_names=CLASSES, templates=TEMPLATES, label="a")
    with torch.no_grad():
        cls = class_text_features(student, CLASSES, TEMPLATES)
    ref = zero_shot_probs(student.encode_images(imgs), cls, student.logit_scale())
    assert np.allclose(np.stack([m.probs for m in maps]), ref, atol=1e-5)


def test_saliency_scores_through_the_models_saved_head(tiny_clip_dir, tmp_path):
    """A model saved with a head (lga.head=descriptions) is explained through that head."""
    import shutil

    import torch.nn.functional as F

    from lga.errors import LgaError
    from lga.student.heads import PROBE_FILE, prototype_head

    model = tmp_path / "model"
    shutil.copytree(tiny_clip_dir, model)
    student = load_student(str(model))
    protos = F.normalize(torch.randn(2, student.encode_texts(["x"]).shape[1]), dim=-1)
    head = prototype_head(protos, student.logit_scale())
    head.save(model / PROBE_FILE, CLASSES)
    imgs = _images(2)
    maps = saliency(student, imgs, class_names=CLASSES, templates=TEMPLATES, label="a")
    assert np.allclose(np.stack([m.probs for m in maps]), head.probs(student.encode_images(imgs)),
                       atol=1e-5)  # fmt: skip
    with pytest.raises(LgaError, match="classifies"):
        saliency(student, imgs, class_names=["a", "b"], templates=TEMPLATES, label="a")


def test_explain_pairs_students_per_image(student):
    out = explain(
        [("pre", student), ("post", student)],
        _images(2),
        class_names=CLASSES,
        templates=TEMPLATES,
        batch_size=1,
    )
    assert [[s.label for s in row] for row in out] == [["pre", "post"]] * 2
    assert np.allclose(out[1][0].rollout, out[1][1].rollout)


def test_write_figures(student, tmp_path):
    paths = write_saliency_figures(
        [("pre-trained", student), ("fine-tuned", student)],
        _images(1),
        ["a"],
        tmp_path,
        class_names=CLASSES,
        templates=TEMPLATES,
        true_classes=[1],
        dpi=40,
    )
    assert [p.name for p in paths] == ["a.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_cli_explain(tiny_clip_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_clip_dir, run / "model")
    (run / "metrics.json").write_text(
        '{"method": "lga", "accuracy": 1, "group_accuracy": {}, "worst_group_accuracy": 1}'
    )
    imgs = []
    for k, img in enumerate(_images(1)):
        imgs.append(tmp_path / f"bird{k}.jpg")
        img.save(imgs[-1])
    rc = main(
        [
            "explain",
            "--student",
            str(tiny_clip_dir),
            "--student",
            str(run),
            *map(str, imgs),
            "--out",
            str(tmp_path / "out"),
            "--templates",
            "a {} photo.",
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["bird0.png"]
    info = (tmp_path / "out" / "explain.json").read_text()
    assert '"lga"' in info and '"clip"' in info and "a {} photo." in info


def test_cli_explain_label_count(tiny_clip_dir, tmp_path):
    img = tmp_path / "x.png"
    _images(1)[0].save(img)
    rc = main(
        [
            "explain",
            "--student",
            str(tiny_clip_dir),
            "--label",
            "a",
            "--label",
            "b",
            str(img),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 1


def _perturbed(student, seed: int = 1):
    """A copy of ``student`` whose vision attention weights are visibly changed."""
    import copy

    other = copy.deepcopy(student)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in other.model.named_parameters():
            if name.startswith("vision_model.") and "self_attn" in name:
                p.add_(torch.randn(p.shape, generator=g) * p.std().clamp(min=0.05))
    return other


def test_explain_keeps_each_student_in_its_place(student):
    """A 'before' and an 'after' that differ: each column must show its own model's maps."""
    post = _perturbed(student)
    imgs = _images(2)
    out = explain(
        [("pre", student), ("post", post)], imgs, class_names=CLASSES, templates=TEMPLATES
    )
    alone = {
        label: saliency(s, imgs, class_names=CLASSES, templates=TEMPLATES, label=label)
        for label, s in (("pre", student), ("post", post))
    }
    for k in range(len(imgs)):
        for j, label in enumerate(("pre", "post")):
            got, ref = out[k][j], alone[label][k]
            assert got.label == label
            np.testing.assert_allclose(got.rollout, ref.rollout, atol=1e-6)
            np.testing.assert_allclose(got.gradient, ref.gradient, atol=1e-6)
            np.testing.assert_allclose(got.probs, ref.probs, atol=1e-6)
        assert not np.allclose(out[k][0].rollout, out[k][1].rollout, atol=1e-3)
