"""The spurious-aware baseline against its authors' code (YuYang0901/CLIP-spurious-finetune).

``Reference`` below is ``losses.py``'s ``MultimodalLoss`` (``similarity_loss`` and the parts of
``_compute_element_wise`` that the README's Waterbirds commands switch on: clip, image, language
and spurious weights 1, pos/neg weights 1) with the logits of ``algorithms/multimodal.py``
``process_batch``, transcribed with ``.cuda()`` dropped. The four bugs that lga does not copy
are fixed in place, each marked ``FIX n`` (numbered as in ``lga.train.spurious_aware``); every
other line is the reference's. Each term is compared, value and gradient, on fixed tensors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lga.config import DataConfig
from lga.train import spurious_aware as sa
from lga.train.config import FitConfig
from lga.train.data import group_weights, imagenet_templates
from lga.train.fit import batch_balance
from lga.train.methods import Embeddings, SpuriousAware, build_method
from lga.train.model import DualEncoder


class Reference:
    def __init__(self):
        self.sim_fun = nn.CosineSimilarity(dim=2, eps=1e-6)
        self.pos_weight = self.neg_weight = 1.0
        self.loss_fn = nn.CrossEntropyLoss(reduction="none")

    def similarity_loss(self, features_1, features_2, labels_1, labels_2, sep_pos_neg=False,
                        abs=True):  # fmt: skip
        loss = self.sim_fun(features_1.unsqueeze(1), features_2.unsqueeze(0))
        pos_mask = (
            labels_1.unsqueeze(1).expand(-1, len(labels_2))
            - labels_2.unsqueeze(0).expand(len(labels_1), -1)
        ) == 0
        pos_mask = pos_mask.float()
        pos_loss = (loss * pos_mask).mean(dim=-1)
        neg_loss = (loss * (1 - pos_mask)).mean(dim=-1)
        if abs:
            neg_loss = neg_loss.abs()
        if sep_pos_neg:
            return (pos_loss, neg_loss)
        return -self.pos_weight * pos_loss + self.neg_weight * neg_loss

    def terms(self, features, y_true, embeddings, logit_scale):
        """Per-image terms (B,): clip, image (L_vc), language (L_lc), spurious (L_ls)."""
        # process_batch: the texts of the CLIP loss
        zeroshot_weights = torch.mean(embeddings["y"], dim=0)[y_true]
        logits_per_image = logit_scale.exp() * features @ zeroshot_weights.t()
        # _compute_element_wise
        logits_per_text = logits_per_image.t()
        targets = torch.arange(len(logits_per_image), dtype=torch.long)
        image_ce = self.loss_fn(logits_per_image, targets)
        language_ce = self.loss_fn(logits_per_text, targets)
        clip_loss = 0.5 * (image_ce + language_ce)

        y_embeddings = embeddings["y"]
        num_templates, num_classes, feat_dim = y_embeddings.shape
        # FIX 1: the row layout is template-major (row r is class r % C)
        y_embedding_labels = torch.arange(num_classes).repeat(num_templates)
        y_embeddings = y_embeddings.view(-1, feat_dim)

        # FIX 3: the image in-modal labels are the classes (not metadata[:, 2])
        image_loss = self.similarity_loss(features, features, y_true, y_true, abs=False)

        loss_pos, loss_neg = self.similarity_loss(
            y_embeddings, y_embeddings, y_embedding_labels, y_embedding_labels,
            sep_pos_neg=True, abs=False,
        )  # fmt: skip
        loss = -self.pos_weight * loss_pos + self.neg_weight * loss_neg
        # FIX 2: the mean over templates (dim 0) of the image's class
        language_loss = loss.view(num_templates, num_classes).mean(0)[y_true]

        # field == 'spurious' (FIX 4: only for that field, whatever use_wandb)
        field_embeddings = embeddings["spurious"]
        field_embeddings = field_embeddings.view(-1, feat_dim)
        sim = self.sim_fun(y_embeddings.unsqueeze(1), field_embeddings.unsqueeze(0))
        loss = self.neg_weight * sim.abs().mean(dim=-1)
        spurious_loss = loss.view(num_templates, num_classes).mean(0)[y_true]  # FIX 2
        return clip_loss, image_loss, language_loss, spurious_loss


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _cfg(**sa_cfg) -> FitConfig:
    return FitConfig.model_validate(
        {
            "method": "spurious-aware",
            "data": DataConfig(root="unused"),
            "spurious_aware": {"balance": "none", **sa_cfg},
        }
    )


@pytest.mark.parametrize("n_classes", [2, 3])
def test_each_term_equals_the_reference_value_and_gradient(n_classes):
    b, t, s, d = 12, 6, 2, 8
    y = torch.arange(b) % n_classes
    y[:3] = 0  # classes unevenly represented, as a batch may have them
    inputs = {
        "u": _unit(b, d, seed=1),
        "cls": _unit(t, n_classes, d, seed=2),  # the reference's (T, C, D)
        "spur": _unit(t, s, d, seed=3),  # (T, S, D)
        "log_scale": torch.tensor(math.log(1 / 0.07), dtype=torch.float64),
    }

    def run(fn):
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        terms = fn(**leaves)
        out = {}
        for name, value in terms.items():
            grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
            out[name] = (value.detach(), [None if g is None else g.detach() for g in grads])
        return out

    def reference(u, cls, spur, log_scale):
        clip, image, language, spurious = Reference().terms(
            u, y, {"y": cls, "spurious": spur}, log_scale
        )
        return {"clip": clip.mean(), "inmodal": image.mean(),
                "prompt_inmodal": language.mean(), "separation": spurious.mean()}  # fmt: skip

    method = build_method(_cfg())
    assert isinstance(method, SpuriousAware)

    def ours(u, cls, spur, log_scale):
        e = Embeddings(
            image=u,
            labels=y,
            class_templates=cls.transpose(0, 1),  # lga's (C, K, D)
            spurious=spur.reshape(-1, d),
            logit_scale=log_scale.exp(),
        )
        return method.terms(e)

    want, got = run(reference), run(ours)
    assert set(got) == set(want) == {"clip", "inmodal", "prompt_inmodal", "separation"}
    for name in want:
        torch.testing.assert_close(got[name][0], want[name][0], rtol=1e-10, atol=1e-12)
        for g, w in zip(got[name][1], want[name][1], strict=True):
            if w is None or g is None:
                assert w is None and g is None or torch.count_nonzero(w if g is None else g) == 0
            else:
                torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_the_fixed_bugs_change_the_terms():
    """The reference as written (FIX 1 and 2 undone) gives another L_lc: the fixes matter."""
    t, c, d = 6, 2, 8
    cls = _unit(t, c, d, seed=4)
    y = torch.tensor([0, 1, 1, 0, 1])
    ref = Reference()
    rows = cls.view(-1, d)
    buggy_labels = torch.repeat_interleave(torch.arange(c), t)
    pos, neg = ref.similarity_loss(rows, rows, buggy_labels, buggy_labels, sep_pos_neg=True,
                                   abs=False)  # fmt: skip
    buggy = (-pos + neg).view(t, c).mean(-1)[y].mean()
    ours = sa.prompt_inmodal(cls.transpose(0, 1), y)
    assert not torch.isclose(buggy, ours)
    # Classes far apart and templates of a class close: ours is negative (a good geometry).
    tight = F.normalize(torch.eye(c, d, dtype=torch.float64)[None] + 0.01 * cls, dim=-1)
    assert sa.prompt_inmodal(tight.transpose(0, 1), y) < -0.3


def test_method_defaults_are_the_references():
    m = build_method(_cfg())
    assert m.prompt_templates == imagenet_templates() and len(m.prompt_templates) == 80
    assert len(set(m.prompt_templates)) == 80 and all("{}" in t for t in m.prompt_templates)
    assert m.logit_scale_init == pytest.approx(1 / 0.07)
    assert m.image_texts == [] and m.needs_class_prompts and m.needs_spurious
    per_image = build_method(_cfg(text="caption", init_temperature=None))
    assert per_image.image_texts == ["caption"] and per_image.logit_scale_init is None
    only_vc = build_method(_cfg(weights={"clip": 0, "prompt_inmodal": 0, "separation": 0}))
    assert not only_vc.needs_class_prompts and not only_vc.needs_spurious


def test_own_logit_scale_trains_from_its_init(tiny_clip_dir):
    from transformers import CLIPModel

    enc = DualEncoder(CLIPModel.from_pretrained(tiny_clip_dir), logit_scale_init=1 / 0.07)
    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([[0, 5, 6, 1], [0, 7, 1, 1]])
    _, _, scale, _ = enc(pixels, ids, torch.ones_like(ids))
    assert float(scale.detach()) == pytest.approx(1 / 0.07)
    scale.backward()
    assert enc.own_logit_scale.grad is not None
    assert "own_logit_scale" in dict(enc.named_parameters())


def test_balance_is_recorded_and_checked():
    assert batch_balance(_cfg(balance="groups")) == "groups"
    assert batch_balance(_cfg(balance="none")) == "none"
    store = {"descriptions": {"store": "s.sqlite"}}
    cfg = FitConfig.model_validate(
        {"method": "spurious-aware", "data": DataConfig(root="unused"), **store}
    )
    assert cfg.spurious_aware.balance == "teacher" and batch_balance(cfg) == "background"
    with pytest.raises(ValueError, match="spurious_aware.balance=teacher.*store"):
        FitConfig.model_validate({"method": "spurious-aware", "data": DataConfig(root="unused")})
    with pytest.raises(ValueError, match="contradicts"):
        FitConfig.model_validate(
            {"method": "spurious-aware", "data": DataConfig(root="unused"), **store,
             "sample": {"balance": "background"}, "spurious_aware": {"balance": "groups"}}
        )  # fmt: skip


def test_group_weights_draw_every_group_equally():
    groups = np.array([0] * 90 + [1] * 5 + [2] * 3 + [3] * 2)
    w = group_weights(groups)
    per_group = [w[groups == g].sum() for g in range(4)]
    np.testing.assert_allclose(per_group, 1.0)


Z = torch.zeros(4, 3)
INVALID = {
    "templates_2d": (lambda: sa.prompt_inmodal(Z, torch.zeros(2, dtype=torch.long)), "(C, K, D)"),
    "float_labels": (lambda: sa.inmodal(Z, torch.zeros(4)), "integer"),
    "label_count": (lambda: sa.inmodal(Z, torch.zeros(3, dtype=torch.long)), "4 entries"),
    "spurious_dim": (
        lambda: sa.separation(Z[None], torch.zeros(2, 5), torch.zeros(1, dtype=torch.long)),
        "spurious must be",
    ),
    "no_spurious": (
        lambda: sa.separation(Z[None], Z[:0], torch.zeros(1, dtype=torch.long)),
        "at least one",
    ),
}


@pytest.mark.parametrize(("call", "message"), INVALID.values(), ids=INVALID.keys())
def test_invalid_inputs_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
