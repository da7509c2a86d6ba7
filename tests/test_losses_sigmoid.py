"""SigLIP's sigmoid losses (lga.train.losses) against slow loops written from the formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lga.train.losses import class_prompt_sigmoid, siglip_loss


def unit(n: int, d: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def ref_pairwise(x: Tensor, y: Tensor, positive, scale: float, bias: float) -> float:
    """−1/N Σ_i Σ_j log σ(z_ij (t x_i·y_j + b)), one pair at a time."""
    total = 0.0
    for i in range(x.shape[0]):
        for j in range(y.shape[0]):
            z = 1.0 if positive(i, j) else -1.0
            total += log_sigmoid(z * (scale * float(torch.dot(x[i], y[j])) + bias))
    return -total / x.shape[0]


@pytest.mark.parametrize("n", [1, 3, 6])
@pytest.mark.parametrize(("scale", "bias"), [(1.0, 0.0), (10.0, -10.0), (117.3, -12.9)])
def test_siglip_loss_matches_the_pairwise_loop(n: int, scale: float, bias: float) -> None:
    image, text = unit(n, 5, seed=1), unit(n, 5, seed=2)
    got = siglip_loss(image, text, logit_scale=scale, logit_bias=bias)
    want = ref_pairwise(image, text, lambda i, j: i == j, scale, bias)
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_siglip_loss_trains_scale_and_bias_and_prefers_matched_pairs() -> None:
    image, text = unit(4, 5, seed=3), unit(4, 5, seed=4)
    log_scale = torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-10.0, dtype=torch.float64, requires_grad=True)
    loss = siglip_loss(image, text, logit_scale=log_scale.exp(), logit_bias=bias)
    grads = torch.autograd.grad(loss, [log_scale, bias])
    assert all(torch.isfinite(g) and g != 0 for g in grads)
    matched = siglip_loss(image, image, logit_scale=10.0, logit_bias=-5.0)
    shuffled = siglip_loss(image, image.roll(1, dims=0), logit_scale=10.0, logit_bias=-5.0)
    assert matched < shuffled


@pytest.mark.parametrize(("scale", "bias"), [(1.0, 0.0), (20.0, -3.0)])
def test_class_prompt_sigmoid_matches_the_pairwise_loop(scale: float, bias: float) -> None:
    image, prompts = unit(7, 5, seed=5), unit(3, 5, seed=6)
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 0])
    got = class_prompt_sigmoid(image, prompts, labels, logit_scale=scale, logit_bias=bias)
    want = ref_pairwise(image, prompts, lambda i, c: int(labels[i]) == c, scale, bias)
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_sigmoid_losses_validate_their_inputs() -> None:
    z = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="same number of rows"):
        siglip_loss(z, z[:3], logit_scale=1.0)
    with pytest.raises(ValueError, match="at least one"):
        siglip_loss(z[:0], z[:0], logit_scale=1.0)
    with pytest.raises(ValueError, match="integer"):
        class_prompt_sigmoid(z, z[:2], torch.zeros(4), logit_scale=1.0)
