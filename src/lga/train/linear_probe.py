"""Linear probe: multinomial logistic regression on frozen, normalised CLIP image features.

Full-batch L-BFGS in torch (deterministic, no sklearn), features standardised with the training
mean and standard deviation for a well-conditioned problem, the L2 penalty chosen on validation
from a small grid. The standardisation is folded into the saved weights, so the probe applies to
the L2-normalised image embeddings directly::

    logits = normalize(model.get_image_features(pixels)) @ weight.T + bias   # (N, C)

and is saved as ``model/linear_probe.safetensors`` (tensors ``weight`` (C, D) and ``bias`` (C,);
metadata ``classes`` (JSON list), ``l2``, ``input``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

log = logging.getLogger(__name__)

PROBE_FILE = "linear_probe.safetensors"


@dataclass
class LinearProbe:
    """A fitted probe on normalised image embeddings.

    Attributes:
        weight: ``(C, D)``.
        bias: ``(C,)``.
        l2: the penalty it was fitted with.
    """

    weight: Tensor
    bias: Tensor
    l2: float

    def probs(self, features: Tensor) -> np.ndarray:
        """(N, C) class probabilities of (N, D) normalised image embeddings."""
        with torch.no_grad():
            return (features.float() @ self.weight.T + self.bias).softmax(dim=-1).numpy()

    def save(self, path: str | Path, classes: Sequence[str]) -> Path:
        meta = {
            "classes": json.dumps(list(classes)),
            "l2": repr(self.l2),
            "input": "L2-normalised image embeddings (get_image_features)",
        }
        save_file(
            {"weight": self.weight.contiguous(), "bias": self.bias.contiguous()},
            str(path),
            metadata=meta,
        )
        return Path(path)


def train_logreg(x: Tensor, y: Tensor, n_classes: int, *, l2: float, max_iter: int) -> LinearProbe:
    """Logistic regression by full-batch L-BFGS: mean cross-entropy + ``l2 * ||W||²``.

    Args:
        x: ``(N, D)`` features.
        y: ``(N,)`` classes.
        n_classes: C.
        l2: L2 penalty on the weights (not the bias).
        max_iter: L-BFGS iterations.
    """
    x = x.float()
    mean, std = x.mean(dim=0), x.std(dim=0).clamp(min=1e-6)  # (D,), (D,)
    z = (x - mean) / std  # (N, D): standardised
    w = torch.zeros(n_classes, x.shape[1], requires_grad=True)  # (C, D)
    b = torch.zeros(n_classes, requires_grad=True)  # (C,)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        weight = w / std  # (C, D): fold the standardisation in
        bias = b - weight @ mean  # (C,)
    return LinearProbe(weight.detach(), bias.detach(), l2)


def fit_linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    score: Callable[[np.ndarray], float],
    *,
    n_classes: int,
    grid: Sequence[float],
    max_iter: int,
) -> tuple[LinearProbe, list[dict]]:
    """Fit one probe per L2 value and keep the one with the best validation ``score``.

    Args:
        train_x: ``(N, D)`` training features; ``train_y``: ``(N,)`` classes.
        val_x: ``(M, D)`` validation features.
        score: validation probabilities ``(M, C)`` -> the selection metric (higher is better).
        n_classes: C.
        grid: L2 values (ties go to the first).
        max_iter: L-BFGS iterations per fit.

    Returns:
        The best probe and ``[{"l2", "score"}]`` for every grid value.
    """
    best, results = None, []
    for l2 in grid:
        probe = train_logreg(train_x, train_y, n_classes, l2=l2, max_iter=max_iter)
        s = float(score(probe.probs(val_x)))
        results.append({"l2": l2, "score": s})
        log.info("linear probe l2=%g: validation score %.4f", l2, s)
        if best is None or s > best[0]:
            best = (s, probe)
    return best[1], results
