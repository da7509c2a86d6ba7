"""Linear heads on frozen, normalised CLIP image features: the linear probe and DFR.

Multinomial logistic regression in torch (deterministic, no scikit-learn), on features
standardised with the mean and standard deviation of the data it is fitted on. The penalty
follows scikit-learn's ``LogisticRegression(C=...)`` (the convention of the CLIP paper's probe
and of DFR): with per-image weights ``w_i`` (1 without balancing) it minimises ::

    C * sum_i w_i * CE_i  +  0.5 * ||W||²     (penalty l2; full-batch L-BFGS)
    C * sum_i w_i * CE_i  +  ||W||_1          (penalty l1; proximal gradient, FISTA)

(the bias is not penalised). The standardisation is folded into the saved weights, so the head
applies to the L2-normalised image embeddings directly::

    logits = normalize(model.get_image_features(pixels)) @ weight.T + bias   # (N, C)

It is saved as ``model/linear_probe.safetensors`` (tensors ``weight`` (C, D) and ``bias`` (C,);
metadata ``classes`` (JSON list), ``C``, ``penalty``, ``method``, ``input``), and
:meth:`LinearProbe.load` reads it back (``lga eval`` of such a model scores with the head).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from lga.errors import LgaError

log = logging.getLogger(__name__)

PROBE_FILE = "linear_probe.safetensors"
PENALTIES = ("l2", "l1")


@dataclass
class LinearProbe:
    """A fitted head on normalised image embeddings.

    Attributes:
        weight: ``(C, D)``.
        bias: ``(C,)``.
        C: inverse regularisation strength (scikit-learn's meaning); None for a raw penalty.
        penalty: ``l2`` or ``l1``.
        info: more metadata saved with it (``method``, DFR's subset count, ...).
    """

    weight: Tensor
    bias: Tensor
    C: float | None = None
    penalty: str = "l2"
    info: dict[str, str] = field(default_factory=dict)

    def logits(self, features: Tensor) -> Tensor:
        return features.float() @ self.weight.T + self.bias  # (N, C)

    def probs(self, features: Tensor) -> np.ndarray:
        """(N, C) class probabilities of (N, D) normalised image embeddings."""
        with torch.no_grad():
            return self.logits(features).softmax(dim=-1).numpy()

    def save(self, path: str | Path, classes: Sequence[str]) -> Path:
        meta = {
            **self.info,
            "classes": json.dumps(list(classes)),
            "C": repr(self.C),
            "penalty": self.penalty,
            "input": "L2-normalised image embeddings (get_image_features)",
        }
        save_file(
            {"weight": self.weight.contiguous(), "bias": self.bias.contiguous()},
            str(path),
            metadata=meta,
        )
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> tuple[LinearProbe, list[str]]:
        """The head saved by :meth:`save` and its class names.

        Raises:
            LgaError: the file is not a linear head written by lga.
        """
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
            classes = json.loads(meta["classes"])
        except Exception as e:  # safetensors' own error type, a missing key, bad JSON
            raise LgaError(f"{path}: not a linear head written by lga ({e})") from e
        if weight.ndim != 2 or bias.shape != (weight.shape[0],) or len(classes) != len(bias):
            raise LgaError(f"{path}: weight {tuple(weight.shape)} and bias {tuple(bias.shape)} "
                           f"do not fit {len(classes)} classes")  # fmt: skip
        c = meta.get("C", "None")
        info = {k: v for k, v in meta.items() if k not in ("classes", "C", "penalty", "input")}
        probe = cls(
            weight, bias, None if c == "None" else float(c), meta.get("penalty", "l2"), info
        )
        return probe, classes


def class_prototypes(
    text_feats: Tensor, labels: Tensor, n_classes: int, keep: Tensor | None = None
) -> Tensor:
    """(C, D) normalised mean of each class's normalised text embeddings; with ``keep`` ((N,)
    bool), of its kept ones, or of all of them where a class has none kept.

    Raises:
        LgaError: a class has no text.
    """
    feats = F.normalize(text_feats.float(), dim=-1)
    if keep is not None:
        kept = torch.bincount(labels[keep.to(labels.device)], minlength=n_classes)
        keep = keep.to(labels.device) | (kept[labels] == 0)  # a class with none kept: all
        feats, labels = feats[keep], labels[keep]
    sums = feats.new_zeros(n_classes, feats.shape[1]).index_add_(0, labels, feats)
    counts = torch.bincount(labels, minlength=n_classes)
    if (counts == 0).any():
        raise LgaError(
            f"no description of class {int((counts == 0).nonzero()[0])} to build its prototype"
        )
    return F.normalize(sums, dim=-1)


def place_basis(background_feats: Tensor, places: Tensor) -> Tensor | None:
    """(K, D) orthonormal basis of the directions between places in the teacher's words: the
    differences of the mean (normalised) background-description embedding of each place present
    to their overall mean (K = places present - 1), or None when fewer than two are present.

    ``places``: ``(N,)`` the place each row's background description was read as.
    """
    feats = F.normalize(background_feats.float(), dim=-1)
    present = torch.unique(places)
    if len(present) < 2:
        return None
    means = torch.stack([feats[places == p].mean(dim=0) for p in present])  # (P, D)
    q, _ = torch.linalg.qr((means[1:] - means[0]).T)  # (D, P - 1)
    return q.T.contiguous()


def project_out(class_feats: Tensor, basis: Tensor | None) -> Tensor:
    """(C, D) class text embeddings with their component in the span of ``basis`` (orthonormal
    rows) removed, renormalised: an image's place no longer moves its logits along it (Chuang et
    al. 2023, "Debiasing vision-language models via biased prompts"). ``basis`` None: as given."""
    if basis is None:
        return class_feats
    basis = basis.to(class_feats)
    return F.normalize(class_feats - (class_feats @ basis.T) @ basis, dim=-1)


def image_place_basis(image_feats: Tensor, labels: Tensor, places: Tensor) -> Tensor | None:
    """(K, D) orthonormal basis of the directions between places in the IMAGE embeddings, within
    each class: for every class that has images of two or more places, each place's mean
    (normalised) embedding minus the mean of the class's place means; each place's offsets
    averaged over those classes; the span of their differences (K = places - 1). Within-class,
    so the class itself is not removed. None when no class has two places.

    ``labels``, ``places``: ``(N,)`` each image's class, and the place its background answer was
    read as.
    """
    feats = F.normalize(image_feats.float(), dim=-1)
    labels, places = labels.to(feats.device), places.to(feats.device)
    offsets: dict[int, list[Tensor]] = {}
    for c in torch.unique(labels).tolist():
        in_class = labels == c
        present = torch.unique(places[in_class]).tolist()
        if len(present) < 2:
            continue
        means = torch.stack([feats[in_class & (places == p)].mean(dim=0) for p in present])
        for p, offset in zip(present, means - means.mean(dim=0), strict=True):
            offsets.setdefault(p, []).append(offset)
    if len(offsets) < 2:
        return None
    rows = torch.stack([torch.stack(offsets[p]).mean(dim=0) for p in sorted(offsets)])
    q, _ = torch.linalg.qr((rows[1:] - rows[0]).T)  # (D, K)
    return q.T.contiguous()


def project_images_out(image_feats: Tensor, basis: Tensor | None) -> Tensor:
    """(N, D) normalised image embeddings with their component in the span of ``basis``
    (orthonormal rows) removed, renormalised. ``basis`` None: as given."""
    if basis is None:
        return image_feats
    basis = basis.to(image_feats)
    return F.normalize(image_feats - (image_feats @ basis.T) @ basis, dim=-1)


def fold_image_projection(class_feats: Tensor, basis: Tensor | None) -> Tensor:
    """(C, D) class vectors W(I - B^T B) that score a normalised image as W scores the image
    with the span of ``basis`` removed (:func:`project_images_out`), up to the positive factor
    ||(I - B^T B) u|| <= 1 of each image: the same predictions, logits a little smaller. Not
    renormalised (that would change the predictions). ``basis`` None: as given."""
    if basis is None:
        return class_feats
    basis = basis.to(class_feats)
    return class_feats - (class_feats @ basis.T) @ basis


def prototype_head(
    prototypes: Tensor,
    scale: Tensor | float,
    bias: Tensor | float = 0.0,
    kind: str = "description prototypes",
) -> LinearProbe:
    """The zero-shot classifier of (C, D) class text embeddings as a linear head:
    ``logits = scale * u @ prototypes.T + bias``, the model's own scale and bias; ``kind`` says
    what the class texts are (the saved head's metadata)."""
    weight = (torch.as_tensor(scale, dtype=torch.float32) * prototypes.float()).contiguous()
    bias = torch.full((len(prototypes),), float(bias), dtype=torch.float32)
    return LinearProbe(weight, bias, None, "none", {"method": "lga", "head": kind})


def balanced_rows(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of an equal number of rows of every group present (the smallest group's count),
    drawn without replacement; sorted."""
    present = np.unique(groups)
    n = min(int((groups == g).sum()) for g in present)
    picks = [rng.choice(np.flatnonzero(groups == g), size=n, replace=False) for g in present]
    return np.sort(np.concatenate(picks))


def balance_weights(keys: np.ndarray) -> np.ndarray:
    """Per-row weights ``n / (k * count(key))``: every key (class or group) weighs the same, and
    the mean weight is 1 (scikit-learn's ``class_weight="balanced"``)."""
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return len(keys) / (len(counts) * counts[inverse])


def _standardise(x: Tensor, stats: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor, Tensor]:
    mean, std = stats if stats is not None else (x.mean(dim=0), x.std(dim=0))
    std = std.clamp(min=1e-6)
    return (x - mean) / std, mean, std  # (N, D), (D,), (D,)


def train_logreg(
    x: Tensor,
    y: Tensor,
    n_classes: int,
    *,
    l2: float = 0.0,
    l1: float = 0.0,
    sample_weight: Tensor | None = None,
    stats: tuple[Tensor, Tensor] | None = None,
    binary: bool = False,
    max_iter: int,
) -> LinearProbe:
    """Logistic regression: weighted mean cross-entropy + ``l2 * ||W||²`` + ``l1 * ||W||_1``.

    L-BFGS without an L1 term; FISTA (proximal gradient with momentum, step ``1 / L`` from the
    largest singular value of the standardised features) with one.

    Args:
        x: ``(N, D)`` features.
        y: ``(N,)`` classes.
        n_classes: C.
        l2, l1: penalties on the weights (not the bias), per image of the mean.
        sample_weight: ``(N,)`` per-image weights of the cross-entropy (default 1).
        stats: (mean, std) ``(D,)`` to standardise with (default: those of ``x``).
        binary: two classes as one weight vector ``w`` (logit of class 1 = ``w.x + b``, the
            parametrisation scikit-learn penalises), saved as the rows ``-w/2, w/2``; without
            it, one row per class (multinomial).
        max_iter: L-BFGS or FISTA iterations.
    """
    if binary and n_classes != 2:
        raise ValueError(f"binary=True needs 2 classes, got {n_classes}")
    z, mean, std = _standardise(x.float(), stats)
    sw = torch.ones(len(y)) if sample_weight is None else torch.as_tensor(sample_weight).float()
    sw = sw / len(y)  # (N,): the weighted mean
    rows = 1 if binary else n_classes

    def data_loss(w: Tensor, b: Tensor) -> Tensor:
        if binary:
            ce = F.binary_cross_entropy_with_logits(z @ w[0] + b[0], y.float(), reduction="none")
        else:
            ce = F.cross_entropy(z @ w.T + b, y, reduction="none")
        return (ce * sw).sum()

    if l1 > 0:
        w, b = _fista(data_loss, z, sw, rows, l1=l1, l2=l2, max_iter=max_iter)
    else:
        w = torch.zeros(rows, x.shape[1], requires_grad=True)  # (rows, D)
        b = torch.zeros(rows, requires_grad=True)  # (rows,)
        opt = torch.optim.LBFGS(
            [w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
        )

        def closure() -> Tensor:
            opt.zero_grad()
            loss = data_loss(w, b) + l2 * w.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
    w, b = w.detach(), b.detach()
    if binary:  # softmax([-a/2, a/2]) = sigmoid(a)
        w, b = torch.cat([-w / 2, w / 2]), torch.cat([-b / 2, b / 2])
    return LinearProbe(*_fold(w, b, mean, std))


def _fold(w: Tensor, b: Tensor, mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
    """Weights on standardised features -> weights on the features themselves."""
    weight = w / std  # (C, D)
    return weight, b - weight @ mean


def _fista(
    data_loss: Callable[[Tensor, Tensor], Tensor],
    z: Tensor,
    sw: Tensor,
    rows: int,
    *,
    l1: float,
    l2: float,
    max_iter: int,
    tol: float = 1e-7,
) -> tuple[Tensor, Tensor]:
    # The softmax cross-entropy's Hessian is at most 1/2 (X^T diag(sw) X) per class block.
    zb = torch.cat([z, torch.ones(len(z), 1)], dim=1) * sw.sqrt()[:, None]  # (N, D+1)
    lipschitz = 0.5 * torch.linalg.matrix_norm(zb, ord=2) ** 2 + 2 * l2
    step = 1.0 / float(lipschitz.clamp(min=1e-8))
    w = torch.zeros(rows, z.shape[1])
    b = torch.zeros(rows)
    vw, vb, t = w.clone(), b.clone(), 1.0
    for _ in range(max_iter):
        vw.requires_grad_(True)
        vb.requires_grad_(True)
        loss = data_loss(vw, vb) + l2 * vw.pow(2).sum()
        gw, gb = torch.autograd.grad(loss, [vw, vb])
        with torch.no_grad():
            nw = vw - step * gw
            nw = nw.sign() * (nw.abs() - step * l1).clamp(min=0)  # soft threshold
            nb = vb - step * gb
            t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
            mom = (t - 1) / t_next
            vw, vb = nw + mom * (nw - w), nb + mom * (nb - b)
            change = float((nw - w).abs().max().clamp(min=(nb - b).abs().max()))
            w, b, t = nw, nb, t_next
        if change < tol:
            break
    return w, b


def penalty_for(C: float, n: int, penalty: str) -> dict[str, float]:
    """scikit-learn's ``C`` on ``n`` images -> the per-image penalty of :func:`train_logreg`."""
    if C <= 0:
        raise ValueError(f"C must be positive, got {C}")
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
    return {"l2": 1.0 / (2 * C * n)} if penalty == "l2" else {"l1": 1.0 / (C * n)}


def train_head(
    x: Tensor,
    y: Tensor,
    n_classes: int,
    *,
    C: float,
    penalty: str = "l2",
    sample_weight: np.ndarray | None = None,
    stats: tuple[Tensor, Tensor] | None = None,
    max_iter: int,
) -> LinearProbe:
    """:func:`train_logreg` with scikit-learn's ``C`` and penalty; the probe remembers both.

    Two classes are fitted as scikit-learn fits them (one weight vector), more as multinomial
    regression, so that a given ``C`` means what it means there.
    """
    probe = train_logreg(
        x,
        y,
        n_classes,
        **penalty_for(C, len(y), penalty),
        sample_weight=None if sample_weight is None else torch.as_tensor(sample_weight),
        stats=stats,
        binary=n_classes == 2,
        max_iter=max_iter,
    )
    probe.C, probe.penalty = C, penalty
    return probe


def fit_linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    score: Callable[[np.ndarray], float],
    *,
    n_classes: int,
    grid: Sequence[float],
    max_iter: int,
    penalty: str = "l2",
    sample_weight: np.ndarray | None = None,
) -> tuple[LinearProbe, list[dict]]:
    """Fit one probe per ``C`` and keep the one with the best validation ``score``.

    Args:
        train_x: ``(N, D)`` training features; ``train_y``: ``(N,)`` classes.
        val_x: ``(M, D)`` validation features.
        score: validation probabilities ``(M, C)`` -> the selection metric (higher is better).
        n_classes: C.
        grid: values of ``C`` (ties go to the first).
        max_iter: iterations per fit.
        penalty: ``l2`` or ``l1``.
        sample_weight: ``(N,)`` per-image weights (class or group balancing).

    Returns:
        The best probe and ``[{"C", "score"}]`` for every grid value.
    """
    best, results = None, []
    for c in grid:
        probe = train_head(
            train_x,
            train_y,
            n_classes,
            C=c,
            penalty=penalty,
            sample_weight=sample_weight,
            max_iter=max_iter,
        )
        s = float(score(probe.probs(val_x)))
        results.append({"C": c, "score": s})
        log.info("linear probe C=%g: validation score %.4f", c, s)
        if best is None or s > best[0]:
            best = (s, probe)
    return best[1], results


def read_head(model_dir: str | Path) -> tuple[LinearProbe, list[str]] | None:
    """The linear head saved in a run's ``model/`` folder (linear probe, DFR, lga's description
    prototypes), if it has one."""
    path = Path(model_dir) / PROBE_FILE
    return LinearProbe.load(path) if path.is_file() else None


def saved_head(
    model_dir: str | Path, classes: Sequence[str], *, whose: str = "the dataset"
) -> LinearProbe | None:
    """The head saved beside a model's weights (linear probe, DFR, lga's description
    prototypes), which scores the model as its run did; None without one (or for a hub id).

    Raises:
        LgaError: the head classifies other classes than ``classes`` (``whose`` classes).
    """
    found = read_head(model_dir)
    if found is None:
        return None
    head, saved = found
    if list(saved) != list(classes):
        path = Path(model_dir) / PROBE_FILE
        raise LgaError(f"{path} classifies {saved}, {whose} has {list(classes)}")
    return head
