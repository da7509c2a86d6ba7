"""Unit tests of the fine-tuning pieces: methods' loss terms, batch order, trainable parts,
schedule, text table and linear probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lga.config import DataConfig
from lga.errors import ConfigError
from lga.train import losses
from lga.train.config import FitConfig, Method
from lga.train.data import CAPTION, GlobalBatchSampler, build_text_table, keyword_prompts
from lga.train.linear_probe import fit_linear_probe, train_logreg
from lga.train.methods import Embeddings, Erm, Lga, SpuriousAware, build_method
from lga.train.model import DualEncoder, param_groups, set_trainable
from lga.train.trainer import WarmupSchedule


def _cfg(method: str, **sections) -> FitConfig:
    return FitConfig.model_validate(
        {"method": method, "data": DataConfig(root="unused"), **sections}
    )


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


@pytest.fixture()
def emb() -> Embeddings:
    b, d = 6, 8
    return Embeddings(
        image=_unit(b, d, seed=1).requires_grad_(),
        labels=torch.tensor([0, 1, 0, 1, 1, 0]),
        texts={
            "object_description": _unit(b, d, seed=2),
            "object_keywords": _unit(b, d, seed=3),
            "background_description": _unit(b, d, seed=4),
            CAPTION: _unit(b, d, seed=5),
        },
        class_prompts=_unit(2, d, seed=6),
        spurious=_unit(4, d, seed=7),
        logit_scale=torch.tensor(20.0),
        class_templates=_unit(2, 3, d, seed=8),
    )


# ---------------------------------------------------------------------------------------------
# Methods


def test_lga_default_terms_match_the_loss_functions(emb):
    method = build_method(_cfg("lga", descriptions={"store": "s.sqlite"}))
    assert isinstance(method, Lga)
    assert method.image_texts == ["object_description"]
    assert not method.needs_class_prompts
    terms = method.terms(emb)
    assert set(terms) == {"supcon", "instance"}  # background and class_ce weigh 0 by default
    u, v, y = emb.image, emb.texts["object_description"], emb.labels
    expected = losses.supcon_out(torch.cat([u, v]), torch.cat([y, y]), temperature=0.1)
    torch.testing.assert_close(terms["supcon"], expected)
    torch.testing.assert_close(terms["instance"], losses.clip_loss(u, v, logit_scale=20.0))
    torch.testing.assert_close(method.total(terms), terms["supcon"] + terms["instance"])


def test_lga_every_term_weighted(emb):
    cfg = _cfg(
        "lga",
        descriptions={"store": "s.sqlite"},
        lga={
            "texts": ["object_description", "object_keywords"],
            "supcon": "in",
            "temperature": 0.5,
            "background_margin": 0.2,
            "weights": {"supcon": 0.5, "instance": 2.0, "background": 0.3, "class_ce": 0.7},
        },
    )
    method = build_method(cfg)
    assert method.image_texts == ["object_description", "object_keywords", "background_description"]
    assert method.needs_class_prompts
    terms = method.terms(emb)
    u, y, t = emb.image, emb.labels, emb.texts
    anchors = torch.cat([u, t["object_description"], t["object_keywords"]])
    torch.testing.assert_close(
        terms["supcon"], losses.supcon_in(anchors, y.repeat(3), temperature=0.5)
    )
    inst = [
        losses.clip_loss(u, t[k], logit_scale=20.0)
        for k in ("object_description", "object_keywords")
    ]
    torch.testing.assert_close(terms["instance"], (inst[0] + inst[1]) / 2)
    torch.testing.assert_close(
        terms["background"],
        losses.background_repulsion(u, t["background_description"], margin=0.2),
    )
    ce = losses.class_prompt_ce(u, emb.class_prompts, y, logit_scale=20.0)
    torch.testing.assert_close(terms["class_ce"], ce)
    total = 0.5 * terms["supcon"] + 2.0 * terms["instance"] + 0.3 * terms["background"] + 0.7 * ce
    torch.testing.assert_close(method.total(terms), total)
    method.total(terms).backward()
    assert emb.image.grad is not None and torch.isfinite(emb.image.grad).all()


def test_lga_description_head_classifies_against_the_batch_prototypes(emb):
    cfg = _cfg(
        "lga",
        descriptions={"store": "s.sqlite"},
        lga={"head": "descriptions", "weights": {"supcon": 0, "instance": 0, "class_ce": 1}},
    )
    method = build_method(cfg)
    assert not method.needs_class_prompts and method.head_texts == ("object_description",)
    u, v, y = emb.image, emb.texts["object_description"], emb.labels
    protos = F.normalize(torch.stack([v[y == c].mean(0) for c in (0, 1)]), dim=-1)
    expected = F.cross_entropy(20.0 * u @ protos.T, y)
    torch.testing.assert_close(method.terms(emb)["class_ce"], expected)


def test_place_basis_spans_the_differences_of_the_place_means_and_project_out_removes_it():
    from lga.student.heads import place_basis, project_out

    feats = _unit(9, 6, seed=11)
    places = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    basis = place_basis(feats, places)
    assert basis.shape == (2, 6)  # 3 places: 2 directions, orthonormal
    torch.testing.assert_close(basis @ basis.T, torch.eye(2), atol=1e-5, rtol=0)
    means = torch.stack([feats[places == p].mean(0) for p in range(3)])
    w = _unit(2, 6, seed=12)
    out = project_out(w, basis)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
    # no component left along any difference of place means...
    for a, b in ((0, 1), (0, 2), (1, 2)):
        torch.testing.assert_close(out @ (means[a] - means[b]), torch.zeros(2), atol=1e-5, rtol=0)
    # ...and the rest of w kept: w is out (rescaled) plus something in the span
    rest = w - out * (w @ out.T).diagonal()[:, None]
    torch.testing.assert_close(rest - (rest @ basis.T) @ basis, torch.zeros(2, 6), atol=1e-5,
                               rtol=0)  # fmt: skip
    # one place read: nothing to project
    assert place_basis(feats, torch.zeros(9, dtype=torch.long)) is None
    assert project_out(w, None) is w


@pytest.mark.parametrize("head", ["prompts", "descriptions"])
def test_lga_project_classifies_against_class_texts_without_the_batch_place_direction(emb, head):
    """lga.project=background: class_ce's class vectors (prompts or batch prototypes) lose the
    direction between the places' mean background-answer embeddings of the batch, so an image
    moved along that direction keeps its logits."""
    cfg = _cfg(
        "lga",
        descriptions={"store": "s.sqlite"},
        lga={"head": head, "project": "background",
             "weights": {"supcon": 0, "instance": 0, "class_ce": 1}},
    )  # fmt: skip
    method = build_method(cfg)
    assert method.image_texts == ["object_description", "background_description"]
    assert method.has_head and method.project == "background_description"
    emb.places = torch.tensor([0, 0, 1, 1, 0, 1])
    u, y, bg = emb.image, emb.labels, emb.texts["background_description"]
    d = F.normalize(bg[emb.places == 0].mean(0) - bg[emb.places == 1].mean(0), dim=0)
    if head == "prompts":
        w = emb.class_prompts
    else:
        v = emb.texts["object_description"]
        w = F.normalize(torch.stack([v[y == c].mean(0) for c in (0, 1)]), dim=-1)
    w = F.normalize(w - (w @ d)[:, None] * d, dim=-1)
    expected = F.cross_entropy(20.0 * u @ w.T, y)
    torch.testing.assert_close(method.terms(emb)["class_ce"], expected)
    moved = Embeddings(**{**emb.__dict__, "image": u.detach() + 0.7 * d})
    torch.testing.assert_close(
        method.terms(moved)["class_ce"], F.cross_entropy(20.0 * (u.detach() + 0.7 * d) @ w.T, y)
    )
    logits = 20.0 * (u.detach() + 0.7 * d) @ w.T
    torch.testing.assert_close(logits, 20.0 * u.detach() @ w.T, atol=1e-5, rtol=0)


def test_image_place_basis_is_the_within_class_place_offset_not_the_class():
    """Images = class direction + place direction + noise, the places skewed by class (as a
    spurious correlation makes them): the basis is the place direction, not the class one,
    which the pooled place means (confounded with the class) would mostly give."""
    from lga.student.heads import fold_image_projection, image_place_basis, project_images_out

    g = torch.Generator().manual_seed(3)
    d = 16
    axes = torch.linalg.qr(torch.randn(d, 2, generator=g)).Q.T  # class, place: orthonormal
    y = torch.tensor([0] * 40 + [1] * 40)
    places = torch.tensor([0] * 36 + [1] * 4 + [1] * 36 + [0] * 4)  # 90% majority places
    x = (2.0 * y - 1)[:, None] * axes[0] + (2.0 * places - 1)[:, None] * axes[1]
    x = F.normalize(x + 0.05 * torch.randn(80, d, generator=g), dim=-1)
    basis = image_place_basis(x, y, places)
    assert basis.shape == (1, d)
    assert abs(float(basis[0] @ axes[1])) > 0.99 and abs(float(basis[0] @ axes[0])) < 0.05
    pooled = F.normalize(x[places == 1].mean(0) - x[places == 0].mean(0), dim=0)
    assert abs(float(pooled @ axes[0])) > 0.5  # what the within-class means avoid
    # projected images keep the class and lose the place
    out = project_images_out(x, basis)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(80))
    assert (out @ basis.T).abs().max() < 1e-5
    # folded into a head: the same predictions as the projected images
    w = _unit(2, d, seed=4)
    folded = fold_image_projection(w, basis)
    assert torch.equal((x @ folded.T).argmax(1), (out @ w.T).argmax(1))
    scale = (x - (x @ basis.T) @ basis).norm(dim=-1, keepdim=True)  # <= 1: logits a bit smaller
    torch.testing.assert_close(x @ folded.T, scale * (out @ w.T), atol=1e-5, rtol=0)
    # no class with two places: nothing to project
    assert image_place_basis(x, y, y) is None
    assert fold_image_projection(w, None) is w and project_images_out(x, None) is x


def test_lga_project_images_classifies_images_without_the_batch_place_direction(emb):
    """lga.project_images=true: class_ce scores the batch's images with the direction between
    the places within each class removed (:func:`image_place_basis` of the detached batch)."""
    from lga.student.heads import image_place_basis, place_basis, project_out

    cfg = _cfg(
        "lga",
        descriptions={"store": "s.sqlite"},
        lga={"head": "prompts", "project": "background", "project_images": True,
             "weights": {"supcon": 0, "instance": 0, "class_ce": 1}},
    )  # fmt: skip
    method = build_method(cfg)
    assert method.project_images
    emb.places = torch.tensor([0, 0, 1, 1, 0, 1])  # classes [0,1,0,1,1,0]: both places in each
    u, y = emb.image, emb.labels
    w = project_out(emb.class_prompts, place_basis(emb.texts["background_description"], emb.places))
    b = image_place_basis(u.detach(), y, emb.places)
    assert b is not None
    x = F.normalize(u - (u @ b.T) @ b, dim=-1)
    torch.testing.assert_close(method.terms(emb)["class_ce"], F.cross_entropy(20.0 * x @ w.T, y))
    with pytest.raises(ValueError, match="needs lga.project=background"):
        _cfg("lga", descriptions={"store": "s.sqlite"}, lga={"project_images": True})


def test_batch_prototypes_skip_absent_classes_and_prototypes_need_every_class():
    from lga.errors import LgaError
    from lga.student.heads import class_prototypes
    from lga.train.methods import batch_prototypes

    v = _unit(3, 4)
    protos, index = batch_prototypes(v, torch.tensor([0, 2, 2]))
    assert index.tolist() == [0, 1, 1]
    torch.testing.assert_close(protos[1], F.normalize(v[1] + v[2], dim=0))
    with pytest.raises(LgaError, match="class 1"):
        class_prototypes(v, torch.tensor([0, 2, 2]), 3)


def test_batch_prototypes_of_the_kept_rows_or_of_all_where_a_class_keeps_none(emb):
    """lga.filter=drop: the replaced texts are left out of a class's prototype, unless that
    leaves the class none."""
    from lga.train.methods import batch_prototypes

    v = _unit(5, 4)
    y = torch.tensor([0, 0, 0, 1, 1])
    keep = torch.tensor([True, False, True, False, False])
    protos, index = batch_prototypes(v, y, keep)
    torch.testing.assert_close(protos[0], F.normalize(v[0] + v[2], dim=0))
    torch.testing.assert_close(protos[1], F.normalize(v[3] + v[4], dim=0))  # none kept: all
    cfg = _cfg(
        "lga",
        descriptions={"store": "s.sqlite"},
        lga={"head": "descriptions", "filter": "drop",
             "weights": {"supcon": 0, "instance": 0, "class_ce": 1}},
    )  # fmt: skip
    method = build_method(cfg)
    kept = emb.labels == emb.labels  # every row...
    kept[0] = False  # ...but the first
    emb.prototype_rows = kept
    u, v, y = emb.image, emb.texts["object_description"], emb.labels
    protos = F.normalize(torch.stack([v[(y == c) & kept].mean(0) for c in (0, 1)]), dim=-1)
    expected = F.cross_entropy(20.0 * u @ protos.T, y)
    torch.testing.assert_close(method.terms(emb)["class_ce"], expected)


def test_erm_is_class_prompt_cross_entropy(emb):
    method = build_method(_cfg("erm"))
    assert isinstance(method, Erm) and method.needs_class_prompts and method.image_texts == []
    terms = method.terms(emb)
    expected = losses.class_prompt_ce(emb.image, emb.class_prompts, emb.labels, logit_scale=20.0)
    torch.testing.assert_close(terms["class_ce"], expected)


def test_spurious_aware_terms(emb):
    """Each term against its authors' code: tests/test_spurious_aware_reference.py."""
    sa = {"balance": "none"}
    method = build_method(_cfg("spurious-aware", spurious_aware=sa))
    assert isinstance(method, SpuriousAware) and method.image_texts == []
    assert method.needs_class_prompts and method.needs_spurious
    terms = method.terms(emb)
    assert set(terms) == {"clip", "inmodal", "prompt_inmodal", "separation"}
    texts = emb.class_templates.mean(dim=1)[emb.labels]  # each image's class, template mean
    torch.testing.assert_close(terms["clip"], losses.clip_loss(emb.image, texts, logit_scale=20.0))
    per_image = build_method(
        _cfg("spurious-aware", spurious_aware={**sa, "text": "object_description"},
             descriptions={"store": "s.sqlite"})
    )  # fmt: skip
    assert per_image.image_texts == ["object_description"]
    torch.testing.assert_close(
        per_image.terms(emb)["clip"],
        losses.clip_loss(emb.image, emb.texts["object_description"], logit_scale=20.0),
    )


def test_zero_weights_are_not_computed_and_all_zero_is_an_error(emb):
    off = {"clip": 0, "prompt_inmodal": 0, "separation": 0}
    cfg = _cfg("spurious-aware", spurious_aware={"weights": off, "balance": "none"})
    method = build_method(cfg)
    assert method.image_texts == [] and not method.needs_spurious
    assert not method.needs_class_prompts and method.logit_scale_init is None
    assert set(method.terms(emb)) == {"inmodal"}
    zero = {"supcon": 0, "instance": 0}
    with pytest.raises(ConfigError, match="every loss weight"):
        build_method(_cfg("lga", descriptions={"store": "s"}, lga={"weights": zero}))
    with pytest.raises(ValueError, match="does not fine-tune"):
        build_method(_cfg("linear-probe"))


def test_lga_needs_a_store():
    with pytest.raises(ValueError, match="needs a description store"):
        _cfg("lga")
    assert Method.LGA.fine_tunes and not Method.LINEAR_PROBE.fine_tunes


# ---------------------------------------------------------------------------------------------
# Batch order


def _batches(n, g, accum, world, seed, epoch=0, start=0):
    out = []
    for rank in range(world):
        s = GlobalBatchSampler(n, global_batch=g, accum=accum, world=world, rank=rank, seed=seed)
        s.set_epoch(epoch, start)
        out.append(list(s))
    return out


@pytest.mark.parametrize("world,accum", [(2, 1), (4, 1), (2, 2)])
def test_processes_see_the_single_process_global_batches(world, accum):
    (single,) = _batches(26, 8, 1, 1, seed=3)
    shards = _batches(26, 8, accum, world, seed=3)
    assert len(single) == 3  # 26 // 8, the last partial batch dropped
    for step, batch in enumerate(single):
        micro = [shards[r][step * accum + m] for m in range(accum) for r in range(world)]
        assert [i for part in micro for i in part] == batch  # contiguous slices, rank order
    assert all(len(b) == 8 // (world * accum) for rank in shards for b in rank)


def test_batch_order_is_seeded_per_epoch_and_resumable():
    (e0,) = _batches(40, 8, 1, 1, seed=0, epoch=0)
    (e1,) = _batches(40, 8, 1, 1, seed=0, epoch=1)
    (again,) = _batches(40, 8, 1, 1, seed=0, epoch=1)
    (other,) = _batches(40, 8, 1, 1, seed=1, epoch=1)
    assert e1 == again and e0 != e1 and other != e1
    assert sorted(i for b in e0 for i in b) == list(range(40))
    (tail,) = _batches(40, 8, 1, 1, seed=0, epoch=1, start=2)
    assert tail == e1[2:]


def test_batch_size_errors():
    with pytest.raises(ConfigError, match="divisible"):
        GlobalBatchSampler(40, global_batch=6, accum=1, world=4, rank=0, seed=0)
    with pytest.raises(ConfigError, match="larger than the training sample"):
        GlobalBatchSampler(4, global_batch=8, accum=1, world=1, rank=0, seed=0)


# ---------------------------------------------------------------------------------------------
# Model, schedule, texts, probe


@pytest.fixture(scope="module")
def clip_model(tiny_clip_dir):
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(tiny_clip_dir)


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_set_trainable_modes(clip_model):
    m = clip_model
    out = set_trainable(m, trainable="all", last_k=1, freeze_text=False, train_logit_scale=False)
    assert "logit_scale" not in _trainable(m) and not out.text_frozen
    assert out.n_trainable == out.n_total - 1

    set_trainable(m, trainable="projections", last_k=1, freeze_text=False, train_logit_scale=True)
    assert _trainable(m) == {"visual_projection.weight", "text_projection.weight", "logit_scale"}

    out = set_trainable(m, trainable="last_k", last_k=1, freeze_text=True, train_logit_scale=False)
    names = _trainable(m)
    assert out.text_frozen and not any(n.startswith("text") for n in names)
    assert any(n.startswith("vision_model.encoder.layers.1.") for n in names)
    assert not any(n.startswith("vision_model.encoder.layers.0.") for n in names)
    assert {"vision_model.post_layernorm.weight", "visual_projection.weight"} <= names
    groups = param_groups(m, 0.1)
    assert all(p.ndim >= 2 for p in groups[0]["params"])
    assert all(p.ndim < 2 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0


def test_dual_encoder_matches_get_features(clip_model):
    from lga.student.model import pooled

    pixels = torch.randn(3, 3, 32, 32)
    ids = torch.tensor([[1, 5, 6, 0], [1, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    u, v, scale, bias = DualEncoder(clip_model)(pixels, ids, mask)
    with torch.no_grad():
        ref = pooled(clip_model.get_image_features(pixel_values=pixels))
    torch.testing.assert_close(u.detach(), F.normalize(ref, dim=-1))
    assert v.shape == (2, ref.shape[1])
    torch.testing.assert_close(scale.detach(), clip_model.logit_scale.exp().detach())
    assert float(bias) == 0.0  # CLIP has no logit bias


def test_warmup_cosine_and_constant():
    s = WarmupSchedule(total=10, warmup=2, schedule="cosine")
    assert [round(s(i), 4) for i in (0, 1, 2)] == [round(1 / 3, 4), round(2 / 3, 4), 1.0]
    assert s(6) == pytest.approx(0.5) and s(10) == pytest.approx(0.0)
    c = WarmupSchedule(total=10, warmup=0, schedule="constant")
    assert c(0) == c(9) == 1.0


def test_text_table_deduplicates_and_trims():
    from lga.testing.tokenizers import build_word_tokenizer

    tok = build_word_tokenizer(
        ["a photo of a landbird . waterbird gull duck land water"], max_length=16
    )

    class Sample:
        img_ids = np.array([10, 11, 12])

    table = build_text_table(
        lambda t: tok(list(t), padding=True, return_tensors="pt"),
        Sample(),
        per_image={"object_description": {10: "gull", 11: "duck", 12: "gull"}},
        class_prompts=[["a photo of a landbird ."], ["a photo of a waterbird ."]],
        spurious=["a photo of land .", "gull"],
    )
    assert table.texts == [
        "gull",
        "duck",
        "a photo of a landbird .",
        "a photo of a waterbird .",
        "a photo of land .",
    ]
    assert table.per_image["object_description"].tolist() == [0, 1, 0]
    assert table.class_index.tolist() == [[2], [3]] and table.spurious_index.tolist() == [4, 0]
    ids, mask = table.tokens(torch.tensor([0, 1]))
    assert ids.shape == (2, 3) and mask.all()  # <bos> word <eos>, trimmed from the longest


def test_keyword_prompts_most_frequent_first():
    kws = {1: ["lake", "water"], 2: ["forest"], 3: ["lake"], 4: ["forest", "lake"]}
    assert keyword_prompts(kws, 2) == ["a photo of lake.", "a photo of forest."]


def test_linear_probe_separable_data_and_C_selection():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(2, 8, generator=g), dim=-1)
    y = torch.arange(40) % 2
    x = F.normalize(centres[y] + 0.3 * torch.randn(40, 8, generator=g), dim=-1)
    probe = train_logreg(x, y, 2, l2=1e-3, max_iter=100)
    assert (probe.probs(x).argmax(1) == y.numpy()).mean() == 1.0
    assert probe.weight.shape == (2, 8) and probe.bias.shape == (2,)

    scores = iter([0.2, 0.9, 0.9])
    best, grid = fit_linear_probe(
        x, y, x, lambda p: next(scores), n_classes=2, grid=[0.01, 0.1, 1.0], max_iter=20
    )
    assert best.C == 0.1 and [r["score"] for r in grid] == [0.2, 0.9, 0.9]  # ties: first


def test_strip_background_drops_the_parts_that_name_the_teachers_own_background():
    from lga.train.data import strip_background

    text = (
        "This is a gull with white plumage. It has webbed feet. "
        "It is flying over a swimming pool, possibly landing on the edge of the pool."
    )
    assert strip_background(text, ["swimming pool", "blue water"]) == (
        "This is a gull with white plumage. It has webbed feet."
    )
    # colours are not background words; the first part always stays; no keywords: unchanged
    assert strip_background(text, ["white"]) == text
    assert strip_background("A gull over the pool.", ["pool"]) == "A gull over the pool."
    assert strip_background(text, []) == text
    # keyword answers: items separated by commas
    assert strip_background("gull, webbed feet, lake shore", ["lake"]) == "gull, webbed feet"
