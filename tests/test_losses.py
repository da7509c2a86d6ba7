"""Tests of lga.train.losses against slow loop versions written straight from the formulas."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from lga.train.losses import (
    background_repulsion,
    class_prompt_ce,
    clip_loss,
    gather_with_grad,
    supcon_in,
    supcon_out,
)

SupCon = Callable[..., Tensor]
TEMPERATURES = [0.05, 0.1, 0.5, 1.0, 5.0]


# --------------------------------------------------------------------------------------------
# Slow references
# --------------------------------------------------------------------------------------------


def ref_supcon(
    features: Tensor,
    labels: Tensor,
    temperature: float,
    reduction: str,
    variant: str,
    views: Tensor | None = None,
) -> Tensor:
    """L_out / L_in of Khosla et al. 2020, one anchor, positive and negative at a time.

    Every exp is taken of s − c_i, with c_i = max_a s_ia a constant: the factor exp(−c_i)
    cancels in each ratio, and it keeps exp from overflowing at small temperatures.
    """
    n = features.shape[0]
    total, n_anchors = features.sum() * 0, 0
    for i in range(n):
        others = [a for a in range(n) if a != i]  # A(i)
        positives = [p for p in others if labels[p] == labels[i]]  # P(i)
        if views is not None:  # cross-view positives only
            positives = [p for p in positives if views[p] != views[i]]
        if not positives:
            continue
        s = {a: torch.dot(features[i], features[a]) / temperature for a in others}
        c = max(s[a].detach() for a in others)
        denominator = sum(torch.exp(s[a] - c) for a in others)
        if variant == "out":
            terms = [torch.log(torch.exp(s[p] - c) / denominator) for p in positives]
            loss_i = -sum(terms) / len(positives)
        else:
            numerator = sum(torch.exp(s[p] - c) for p in positives) / len(positives)
            loss_i = -torch.log(numerator / denominator)
        total = total + loss_i
        n_anchors += 1
    if reduction == "mean" and n_anchors:
        total = total / n_anchors
    return total


def ref_cross_entropy(logits: Tensor, targets: list[int]) -> Tensor:
    """Mean over rows of −log softmax(logits[r])[targets[r]], with explicit sums."""
    rows = []
    for r, t in enumerate(targets):
        denominator = sum(torch.exp(logits[r, j]) for j in range(logits.shape[1]))
        rows.append(-torch.log(torch.exp(logits[r, t]) / denominator))
    return sum(rows) / len(rows)


def ref_clip(image: Tensor, text: Tensor, scale: float) -> Tensor:
    n = image.shape[0]
    logits = torch.stack(
        [torch.stack([scale * torch.dot(image[i], text[j]) for j in range(n)]) for i in range(n)]
    )  # (N, N)
    targets = list(range(n))
    return (ref_cross_entropy(logits, targets) + ref_cross_entropy(logits.T, targets)) / 2


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def unit_features(n: int, d: int, seed: int, scale: float = 1.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1) * scale
    return z.requires_grad_()  # (N, D)


@st.composite
def supcon_inputs(draw: st.DrawFn) -> tuple[Tensor, Tensor, float]:
    n = draw(st.integers(1, 12))
    d = draw(st.integers(2, 6))
    n_classes = draw(st.integers(1, 3))
    labels = torch.tensor(draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n)))
    # Features are used as given: also try non-unit norms.
    scale = draw(st.sampled_from([0.5, 1.0, 2.0]))
    features = unit_features(n, d, draw(st.integers(0, 2**31 - 1)), scale)
    return features, labels, draw(st.sampled_from(TEMPERATURES))


def assert_matches_reference(
    loss_fn: SupCon,
    variant: str,
    features: Tensor,
    labels: Tensor,
    temperature: float,
    reduction: str,
    rtol: float = 1e-7,
) -> None:
    got = loss_fn(features, labels, temperature=temperature, reduction=reduction)
    want = ref_supcon(features, labels, temperature, reduction, variant)
    torch.testing.assert_close(got, want, rtol=rtol, atol=1e-9)
    (got_grad,) = torch.autograd.grad(got, features)
    (want_grad,) = torch.autograd.grad(want, features)
    assert torch.isfinite(got_grad).all()
    torch.testing.assert_close(got_grad, want_grad, rtol=rtol, atol=1e-9)


SUPCON = pytest.mark.parametrize(("loss_fn", "variant"), [(supcon_out, "out"), (supcon_in, "in")])
REDUCTION = pytest.mark.parametrize("reduction", ["mean", "sum"])


# --------------------------------------------------------------------------------------------
# Supervised contrastive losses
# --------------------------------------------------------------------------------------------


@SUPCON
@REDUCTION
@settings(max_examples=60, deadline=None)
@given(inputs=supcon_inputs())
def test_supcon_matches_reference(
    loss_fn: SupCon, variant: str, reduction: str, inputs: tuple[Tensor, Tensor, float]
) -> None:
    assert_matches_reference(loss_fn, variant, *inputs, reduction)


EDGE_CASES = {
    "one_class": [0, 0, 0, 0, 0],
    "all_singletons": [0, 1, 2, 3, 4],
    "one_anchor_without_positive": [0, 0, 1, 1, 2],
    "two_classes": [1, 0, 1, 0, 0],
}


@SUPCON
@REDUCTION
@pytest.mark.parametrize("labels", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_supcon_edge_cases(loss_fn: SupCon, variant: str, reduction: str, labels: list) -> None:
    features = unit_features(len(labels), 4, seed=0)
    assert_matches_reference(loss_fn, variant, features, torch.tensor(labels), 0.1, reduction)


@SUPCON
@REDUCTION
def test_supcon_cross_view_positives_match_reference(
    loss_fn: SupCon, variant: str, reduction: str
) -> None:
    """lga.positives=cross: images (view 0) and descriptions (view 1), positives across views."""
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1, 1])
    views = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 0])
    features = unit_features(len(labels), 6, seed=3).requires_grad_(True)
    got = loss_fn(features, labels, temperature=0.2, reduction=reduction, views=views)
    want = ref_supcon(features, labels, 0.2, reduction, variant, views)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    (g1,) = torch.autograd.grad(got, features)
    (g2,) = torch.autograd.grad(want, features)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-7)
    everyone = loss_fn(features, labels, temperature=0.2, reduction=reduction)
    assert not torch.allclose(got, everyone)  # the views change P(i)


@SUPCON
@REDUCTION
@pytest.mark.parametrize("labels", [[0], [0, 1, 2, 3, 4]], ids=["single_anchor", "all_singletons"])
def test_supcon_without_positives_is_zero_with_zero_grad(
    loss_fn: SupCon, variant: str, reduction: str, labels: list
) -> None:
    features = unit_features(len(labels), 3, seed=1)
    loss = loss_fn(features, torch.tensor(labels), temperature=0.1, reduction=reduction)
    assert loss.item() == 0.0
    assert loss.requires_grad  # still part of the graph: backward() works in a training step
    (grad,) = torch.autograd.grad(loss, features)
    assert torch.equal(grad, torch.zeros_like(grad))


@SUPCON
@REDUCTION
def test_supcon_skipped_anchor_gets_no_own_term(
    loss_fn: SupCon, variant: str, reduction: str
) -> None:
    # Anchor 2 has no positive: the loss is that of anchors 0 and 1 only, with anchor 2 still
    # in their denominators (so it is a negative for them, and gets a gradient).
    labels = torch.tensor([0, 0, 1])
    features = unit_features(3, 3, seed=2)
    got = loss_fn(features, labels, temperature=0.5, reduction=reduction)
    want = ref_supcon(features, labels, 0.5, reduction, variant)
    torch.testing.assert_close(got, want)
    (grad,) = torch.autograd.grad(got, features)
    assert grad[2].abs().sum() > 0


@SUPCON
@REDUCTION
def test_supcon_duplicate_features(loss_fn: SupCon, variant: str, reduction: str) -> None:
    base = unit_features(2, 3, seed=3).detach()
    features = torch.cat([base, base, base[:1]]).requires_grad_()  # (5, 3): exact ties
    labels = torch.tensor([0, 1, 0, 1, 1])
    assert_matches_reference(loss_fn, variant, features, labels, 0.1, reduction)


@SUPCON
@REDUCTION
@pytest.mark.parametrize("temperature", [1e-3, 10.0])
def test_supcon_extreme_temperatures_clustered(
    loss_fn: SupCon, variant: str, reduction: str, temperature: float
) -> None:
    # Tight class clusters: each anchor's positives are its nearest neighbours, so the
    # reference's shifted exps do not underflow even at τ = 1e-3.
    g = torch.Generator().manual_seed(4)
    centres = F.normalize(torch.randn(2, 5, generator=g, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 2])
    noise = 0.01 * torch.randn(7, 5, generator=g, dtype=torch.float64)
    features = F.normalize(centres[labels.clamp(max=1)] + noise, dim=1).requires_grad_()
    assert_matches_reference(loss_fn, variant, features, labels, temperature, reduction, 1e-6)


@SUPCON
@REDUCTION
@pytest.mark.parametrize("temperature", [1e-3, 0.1, 1.0, 10.0])
def test_supcon_closed_form(
    loss_fn: SupCon, variant: str, reduction: str, temperature: float
) -> None:
    # a = c = (1, 0), b = (−1, 0); labels a, b: 0, c: 1. Anchor a: P = {b}, A = {b, c}, loss
    # log(1 + exp(2/τ)); anchor b: both others at cosine −1, loss log 2; c has no positive.
    # At τ = 1e-3 the loss is ≈ 2000, far beyond what a naive exp can hold.
    features = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    loss = loss_fn(features, torch.tensor([0, 0, 1]), temperature=temperature, reduction=reduction)
    total = F.softplus(torch.tensor(2 / temperature, dtype=torch.float64)) + math.log(2)
    torch.testing.assert_close(loss, total / 2 if reduction == "mean" else total)


@SUPCON
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [1e-3, 10.0])
def test_supcon_random_extreme_temperatures_are_finite(
    loss_fn: SupCon, variant: str, dtype: torch.dtype, temperature: float
) -> None:
    features = unit_features(12, 4, seed=5).detach().to(dtype).requires_grad_()
    labels = torch.tensor([0, 1, 2] * 4)
    loss = loss_fn(features, labels, temperature=temperature)
    (grad,) = torch.autograd.grad(loss, features)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert loss.dtype == dtype


@SUPCON
def test_supcon_float32_close_to_float64_reference(loss_fn: SupCon, variant: str) -> None:
    features = unit_features(10, 6, seed=6)
    labels = torch.tensor([0, 1, 1, 0, 2, 2, 0, 1, 0, 1])
    got = loss_fn(features.detach().float(), labels, temperature=0.05)
    want = ref_supcon(features, labels, 0.05, "mean", variant)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@SUPCON
def test_supcon_gradcheck(loss_fn: SupCon, variant: str) -> None:
    features = unit_features(6, 3, seed=7)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    assert torch.autograd.gradcheck(lambda z: loss_fn(z, labels, temperature=0.3), (features,))


def test_supcon_in_is_at_most_out() -> None:
    # Jensen: −log(mean exp) <= mean(−log exp), so L_in <= L_out, equal with one positive each.
    features = unit_features(9, 4, seed=8)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    l_in = supcon_in(features, labels, temperature=0.2)
    l_out = supcon_out(features, labels, temperature=0.2)
    assert l_in <= l_out + 1e-12
    pairs = torch.tensor([0, 0, 1, 1])
    torch.testing.assert_close(
        supcon_in(features[:4], pairs, temperature=0.2),
        supcon_out(features[:4], pairs, temperature=0.2),
    )


# --------------------------------------------------------------------------------------------
# Image-text terms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7])
@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_clip_loss_matches_reference_and_is_symmetric(n: int, scale: float) -> None:
    image, text = unit_features(n, 5, seed=10), unit_features(n, 5, seed=11)
    got = clip_loss(image, text, logit_scale=scale)
    torch.testing.assert_close(got, ref_clip(image, text, scale))
    torch.testing.assert_close(clip_loss(text, image, logit_scale=scale), got)


def test_clip_loss_trains_logit_scale() -> None:
    image, text = unit_features(4, 5, seed=12), unit_features(4, 5, seed=13)
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    loss = clip_loss(image, text, logit_scale=log_scale.exp())
    torch.testing.assert_close(loss, ref_clip(image, text, 1 / 0.07))
    (grad,) = torch.autograd.grad(loss, log_scale)
    assert torch.isfinite(grad) and grad != 0


def test_clip_loss_prefers_matched_pairs() -> None:
    image = unit_features(4, 5, seed=14)
    matched = clip_loss(image, image.detach(), logit_scale=10.0)
    shuffled = clip_loss(image, image.detach().roll(1, dims=0), logit_scale=10.0)
    assert matched < shuffled


@pytest.mark.parametrize("margin", [-1.0, 0.0, 0.3])
def test_background_repulsion_matches_reference(margin: float) -> None:
    image, background = unit_features(6, 4, seed=15), unit_features(6, 4, seed=16)
    got = background_repulsion(image, background, margin=margin)
    want = sum(max(torch.dot(image[i], background[i]).item() - margin, 0.0) for i in range(6)) / 6
    assert got.item() == pytest.approx(want, abs=1e-12)


def test_background_repulsion_only_pushes_images_above_margin() -> None:
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    background = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # cos 1, cos 0
    loss = background_repulsion(image, background, margin=0.5)
    assert loss.item() == pytest.approx(0.25)
    (grad,) = torch.autograd.grad(loss, image)
    torch.testing.assert_close(grad, torch.tensor([[0.5, 0.0], [0.0, 0.0]], dtype=torch.float64))


def test_background_repulsion_empty_batch_is_zero() -> None:
    assert background_repulsion(torch.zeros(0, 3), torch.zeros(0, 3)).item() == 0.0


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_class_prompt_ce_matches_cross_entropy(scale: float) -> None:
    image, prompts = unit_features(8, 5, seed=17), unit_features(3, 5, seed=18)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    got = class_prompt_ce(image, prompts, labels, logit_scale=scale)
    logits = torch.stack(
        [torch.stack([scale * torch.dot(u, t) for t in prompts]) for u in image]
    )  # (N, C)
    torch.testing.assert_close(got, F.cross_entropy(logits, labels))
    torch.testing.assert_close(got, ref_cross_entropy(logits, labels.tolist()))


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

Z = torch.zeros(4, 3)
Y = torch.zeros(4, dtype=torch.long)
INVALID_CALLS = {
    "supcon_features_1d": (lambda: supcon_out(torch.zeros(4), Y), "2 dimension"),
    "supcon_labels_2d": (lambda: supcon_in(Z, Y[:, None]), "1 dimension"),
    "supcon_mismatched_n": (lambda: supcon_out(Z, Y[:3]), "4 entries"),
    "supcon_float_labels": (lambda: supcon_out(Z, Y.float()), "integer"),
    "supcon_zero_temperature": (lambda: supcon_out(Z, Y, temperature=0.0), "temperature"),
    "supcon_negative_temperature": (lambda: supcon_in(Z, Y, temperature=-1.0), "temperature"),
    "supcon_nan_temperature": (lambda: supcon_in(Z, Y, temperature=math.nan), "temperature"),
    "supcon_bad_reduction": (lambda: supcon_out(Z, Y, reduction="none"), "reduction"),
    "clip_rows": (lambda: clip_loss(Z, Z[:3], logit_scale=1.0), "same number of rows"),
    "clip_dims": (lambda: clip_loss(Z, torch.zeros(4, 2), logit_scale=1.0), "embedding size"),
    "clip_rank": (lambda: clip_loss(Z, Z[None], logit_scale=1.0), "2 dimension"),
    "clip_empty": (lambda: clip_loss(Z[:0], Z[:0], logit_scale=1.0), "at least one"),
    "background_rows": (lambda: background_repulsion(Z, Z[:2]), "same number of rows"),
    "class_ce_dims": (
        lambda: class_prompt_ce(Z, torch.zeros(2, 5), Y, logit_scale=1.0),
        "embedding size",
    ),
    "class_ce_labels": (lambda: class_prompt_ce(Z, Z[:2], Y[:3], logit_scale=1.0), "4 entries"),
}


@pytest.mark.parametrize(("call", "message"), INVALID_CALLS.values(), ids=INVALID_CALLS.keys())
def test_invalid_inputs_raise_value_error(call: Callable[[], Tensor], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------------------------
# Distributed gathering
# --------------------------------------------------------------------------------------------


def test_gather_with_grad_without_distributed_is_identity() -> None:
    assert not dist.is_initialized()
    t = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(t) is t


def _gather_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        t = torch.full((2, 3), float(rank), requires_grad=True)  # (B, D)
        gathered = gather_with_grad(t)  # (world_size * B, D)
        weights = torch.arange(gathered.numel(), dtype=t.dtype).reshape(gathered.shape)
        (gathered * weights).sum().backward()
        torch.save({"gathered": gathered.detach(), "grad": t.grad}, Path(out_dir) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two processes that import torch: ~5 s
def test_gather_with_grad_two_processes(tmp_path: Path) -> None:
    world_size = 2
    torch.multiprocessing.spawn(
        _gather_worker,
        args=(world_size, str(tmp_path / "init"), str(tmp_path)),
        nprocs=world_size,
    )
    weights = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    expected = torch.cat([torch.full((2, 3), float(r)) for r in range(world_size)])
    for rank in range(world_size):
        result = torch.load(tmp_path / f"{rank}.pt")
        torch.testing.assert_close(result["gathered"], expected)
        # Every process computes the same loss: the local grad is their sum over processes.
        own = weights[2 * rank : 2 * rank + 2]
        torch.testing.assert_close(result["grad"], world_size * own)
