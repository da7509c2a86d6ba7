"""Loss functions of lga and its baselines: pure functions of tensors.

Every function takes embeddings that the caller has already L2-normalised (so that a dot product
is a cosine similarity) and returns a scalar tensor; none holds state or touches a model. The
training loop weights and sums the terms it needs.

- :func:`supcon_out`, :func:`supcon_in`: the supervised contrastive losses of Khosla et al. 2020
  over the anchors {u_i} ∪ {v_i} (images and their object descriptions).
- :func:`clip_loss`: symmetric InfoNCE between paired image and text embeddings.
- :func:`siglip_loss`: SigLIP's pairwise sigmoid loss between paired images and texts.
- :func:`background_repulsion`: push each image away from its own background description.
- :func:`class_prompt_ce`: cross-entropy over class-prompt logits (ERM / "binary CLIP" and lga).
- :func:`class_prompt_sigmoid`: the same classifier trained with SigLIP's sigmoid loss.
- :func:`gather_with_grad`: all-gather a batch across processes, keeping gradients.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "background_repulsion",
    "class_prompt_ce",
    "class_prompt_sigmoid",
    "clip_loss",
    "gather_with_grad",
    "siglip_loss",
    "supcon_in",
    "supcon_out",
]

_REDUCTIONS = ("mean", "sum")


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_rank(name: str, t: Tensor, rank: int) -> None:
    if t.dim() != rank:
        raise ValueError(f"{name} must have {rank} dimension(s), got shape {tuple(t.shape)}")


def _check_same_rows(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same number of rows, "
            f"got {a.shape[0]} and {b.shape[0]}"
        )


def _check_same_dim(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same embedding size, "
            f"got {a.shape[-1]} and {b.shape[-1]}"
        )


def _check_labels(labels: Tensor, n: int) -> None:
    _check_rank("labels", labels, 1)
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.shape[0] != n:
        raise ValueError(f"labels must have {n} entries (one per row), got {labels.shape[0]}")


def _check_supcon_args(
    features: Tensor, labels: Tensor, temperature: float, reduction: str
) -> None:
    _check_rank("features", features, 2)
    _check_labels(labels, features.shape[0])
    if not temperature > 0:  # also rejects NaN
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


# --------------------------------------------------------------------------------------------
# Supervised contrastive losses (Khosla et al. 2020)
# --------------------------------------------------------------------------------------------


def _masked_logsumexp(logits: Tensor, mask: Tensor, rows: Tensor) -> Tensor:
    """Row-wise log Σ_{j: mask[i, j]} exp(logits[i, j]), for the rows where `rows` is True.

    Rows outside `rows` (whose mask may be empty) return 0 instead of -inf: an all -inf row
    would give -inf - (-inf) = NaN downstream, and a NaN that is later discarded by
    ``torch.where`` still poisons the backward pass (its softmax is 0/0).
    """
    masked = logits.masked_fill(~mask, float("-inf"))  # (N, N)
    safe = torch.where(rows.unsqueeze(1), masked, torch.zeros_like(masked))  # (N, N)
    return torch.logsumexp(safe, dim=1)  # (N,)


def _supcon_terms(
    features: Tensor, labels: Tensor, temperature: float, views: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Logits and anchor sets shared by both supervised contrastive losses.

    With ``views`` (``(N,)``, e.g. 0 for images and 1 for texts), P(i) keeps only the anchors
    of i's class in *another* view; A(i) is unchanged.

    Returns:
        ``(logits, positives, has_positive, log_denominator)``: logits z_i·z_j/τ ``(N, N)``;
        the P(i) mask ``(N, N)``; whether P(i) is non-empty ``(N,)``; and
        log Σ_{a∈A(i)} exp(z_i·z_a/τ) ``(N,)`` (0 for anchors without a positive).
    """
    # Half precision overflows exp-sums at small τ; compute in at least float32.
    dtype = torch.promote_types(features.dtype, torch.float32)
    z = features.to(dtype)  # (N, D)
    logits = z @ z.T / temperature  # (N, N)
    n = z.shape[0]
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)  # (N, N): A(i)
    positives = (labels.unsqueeze(0) == labels.unsqueeze(1)) & not_self  # (N, N): P(i)
    if views is not None:
        _check_labels(views, n)
        positives = positives & (views.unsqueeze(0) != views.unsqueeze(1))
    has_positive = positives.any(dim=1)  # (N,)
    log_denominator = _masked_logsumexp(logits, not_self, has_positive)  # (N,)
    return logits, positives, has_positive, log_denominator


def _reduce_anchors(per_anchor: Tensor, has_positive: Tensor, reduction: str) -> Tensor:
    """Sum, or average over the anchors that have a positive (0 if there are none)."""
    total = per_anchor.sum()
    if reduction == "sum":
        return total
    # clamp instead of a Python branch: no host sync, and 0 / 1 = 0 keeps the graph.
    return total / has_positive.sum().clamp(min=1)


def supcon_out(
    features: Tensor,
    labels: Tensor,
    *,
    temperature: float = 0.1,
    reduction: str = "mean",
    views: Tensor | None = None,
) -> Tensor:
    """Supervised contrastive loss with the average over positives outside the log.

    L_out of Khosla et al. 2020 ("Supervised Contrastive Learning", eq. 2)::

        L_out = Σ_{i∈I} −1/|P(i)| Σ_{p∈P(i)} log( exp(z_i·z_p/τ) / Σ_{a∈A(i)} exp(z_i·z_a/τ) )

    where A(i) is every anchor but i and P(i) the anchors of A(i) with i's label. An anchor with
    no positive contributes nothing (and no NaN, in value or gradient).

    Args:
        features: ``(N, D)`` anchor embeddings, used as given (the caller normalises them).
        labels: ``(N,)`` integer class of each anchor.
        temperature: τ > 0.
        reduction: ``"sum"`` for the formula as written; ``"mean"`` to divide it by the number
            of anchors that have a positive.
        views: optional ``(N,)`` integer view of each anchor (image, text...): positives are
            then only the anchors of the same class in another view (cross-modal supervision).

    Returns:
        Scalar loss, in ``features``' dtype promoted to at least float32. 0 (still attached to
        the graph) when no anchor has a positive.

    Raises:
        ValueError: on wrong ranks or sizes, non-integer labels, τ <= 0 or an unknown reduction.
    """
    _check_supcon_args(features, labels, temperature, reduction)
    logits, positives, has_positive, log_den = _supcon_terms(features, labels, temperature, views)
    log_prob = logits - log_den.unsqueeze(1)  # (N, N): finite everywhere
    n_pos = positives.sum(dim=1).clamp(min=1)  # (N,)
    mean_log_prob_pos = (log_prob * positives).sum(dim=1) / n_pos  # (N,): 0 without positives
    return _reduce_anchors(-mean_log_prob_pos, has_positive, reduction)


def supcon_in(
    features: Tensor,
    labels: Tensor,
    *,
    temperature: float = 0.1,
    reduction: str = "mean",
    views: Tensor | None = None,
) -> Tensor:
    """Supervised contrastive loss with the average over positives inside the log.

    L_in of Khosla et al. 2020 ("Supervised Contrastive Learning", eq. 3)::

        L_in = Σ_{i∈I} −log( 1/|P(i)| Σ_{p∈P(i)} exp(z_i·z_p/τ) / Σ_{a∈A(i)} exp(z_i·z_a/τ) )

    computed as −(logsumexp_P − log|P(i)| − logsumexp_A). Sets, arguments, reductions and edge
    cases as in :func:`supcon_out`.

    Args:
        features: ``(N, D)`` anchor embeddings, used as given (the caller normalises them).
        labels: ``(N,)`` integer class of each anchor.
        temperature: τ > 0.
        reduction: ``"sum"`` for the formula as written; ``"mean"`` to divide it by the number
            of anchors that have a positive.
        views: optional ``(N,)`` integer view of each anchor (image, text...): positives are
            then only the anchors of the same class in another view (cross-modal supervision).

    Returns:
        Scalar loss; 0 (still attached to the graph) when no anchor has a positive.

    Raises:
        ValueError: on wrong ranks or sizes, non-integer labels, τ <= 0 or an unknown reduction.
    """
    _check_supcon_args(features, labels, temperature, reduction)
    logits, positives, has_positive, log_den = _supcon_terms(features, labels, temperature, views)
    log_num = _masked_logsumexp(logits, positives, has_positive)  # (N,)
    log_n_pos = positives.sum(dim=1).clamp(min=1).to(logits.dtype).log()  # (N,)
    per_anchor = -(log_num - log_n_pos - log_den)  # (N,): 0 - 0 - 0 without positives
    return _reduce_anchors(per_anchor, has_positive, reduction)


# --------------------------------------------------------------------------------------------
# Image-text terms
# --------------------------------------------------------------------------------------------


def clip_loss(
    image_features: Tensor, text_features: Tensor, *, logit_scale: Tensor | float
) -> Tensor:
    """Symmetric InfoNCE loss of CLIP between paired images and texts.

    Image i and text i are the positive pair; every other text (image) in the batch is a
    negative. The loss is the mean of the cross-entropies over rows (image → text) and over
    columns (text → image), with targets ``arange(N)``. Swapping the arguments gives the same
    value.

    Args:
        image_features: ``(N, D)`` normalised image embeddings.
        text_features: ``(N, D)`` normalised text embeddings, row i paired with image i.
        logit_scale: multiplicative scale of the logits, already exponentiated (what
            ``CLIPModel.logit_scale.exp()`` gives); a tensor keeps it trainable.

    Returns:
        Scalar loss.

    Raises:
        ValueError: if the inputs are not 2-D, have different sizes or are empty.
    """
    _check_pairs("clip_loss", image_features, text_features)
    logits = logit_scale * image_features @ text_features.T  # (N, N): image i vs text j
    targets = torch.arange(logits.shape[0], device=logits.device)  # (N,)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _check_pairs(loss: str, image_features: Tensor, text_features: Tensor) -> None:
    """Paired ``(N, D)`` image and text embeddings, N > 0, or a ValueError naming ``loss``."""
    _check_rank("image_features", image_features, 2)
    _check_rank("text_features", text_features, 2)
    _check_same_rows("image_features", image_features, "text_features", text_features)
    _check_same_dim("image_features", image_features, "text_features", text_features)
    if image_features.shape[0] == 0:
        raise ValueError(f"{loss} needs at least one image-text pair")


def _pairwise_sigmoid(logits: Tensor, positives: Tensor) -> Tensor:
    """``−Σ_ij log σ(z_ij · logits_ij) / N`` with z = +1 on ``positives``, −1 elsewhere."""
    signs = positives.to(logits.dtype) * 2 - 1  # (N, M): +1 / −1
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


def siglip_loss(
    image_features: Tensor,
    text_features: Tensor,
    *,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float = 0.0,
) -> Tensor:
    """SigLIP's pairwise sigmoid loss between paired images and texts (Zhai et al. 2023).

    Every (image i, text j) pair is a binary problem, "do they match?", with label z_ij = 1 for
    i = j and −1 otherwise, and logit t·x_i·y_j + b::

        L = −1/N Σ_i Σ_j log σ( z_ij · (t · x_i·y_j + b) )

    (the paper's Algorithm 1: the sum over the N×N pairs divided by the batch size). No softmax
    over the batch: each pair is scored on its own, as SigLIP was trained and scores.

    Args:
        image_features: ``(N, D)`` normalised image embeddings.
        text_features: ``(N, D)`` normalised text embeddings, row i paired with image i.
        logit_scale: t, already exponentiated (``SiglipModel.logit_scale.exp()``).
        logit_bias: b (``SiglipModel.logit_bias``).

    Returns:
        Scalar loss.

    Raises:
        ValueError: if the inputs are not 2-D, have different sizes or are empty.
    """
    _check_pairs("siglip_loss", image_features, text_features)
    logits = logit_scale * image_features @ text_features.T + logit_bias  # (N, N)
    n = logits.shape[0]
    return _pairwise_sigmoid(logits, torch.eye(n, dtype=torch.bool, device=logits.device))


def background_repulsion(
    image_features: Tensor, background_features: Tensor, *, margin: float = 0.0
) -> Tensor:
    """Push each image away from the description of its own background.

    ``mean_i relu(cos(u_i, w_i) − margin)``, with u_i the image embedding and w_i the text
    embedding of its background description (both normalised by the caller, so the cosine is a
    dot product). An image already less similar to its background than ``margin`` costs nothing,
    so the term only removes background information beyond that level instead of driving every
    cosine to −1 (which would encode the background again, with the opposite sign).

    Args:
        image_features: ``(N, D)`` normalised image embeddings.
        background_features: ``(N, D)`` normalised background-description embeddings, row i
            describing image i.
        margin: cosine similarity below which there is no penalty, in [−1, 1].

    Returns:
        Scalar loss (0 for an empty batch).

    Raises:
        ValueError: if the inputs are not 2-D or have different shapes.
    """
    _check_rank("image_features", image_features, 2)
    _check_rank("background_features", background_features, 2)
    _check_same_rows("image_features", image_features, "background_features", background_features)
    _check_same_dim("image_features", image_features, "background_features", background_features)
    cos = (image_features * background_features).sum(dim=1)  # (N,)
    return F.relu(cos - margin).sum() / max(cos.shape[0], 1)


def class_prompt_ce(
    image_features: Tensor,
    class_text_features: Tensor,
    labels: Tensor,
    *,
    logit_scale: Tensor | float,
) -> Tensor:
    """Cross-entropy of zero-shot-style class logits, as used by ERM ("binary CLIP") and lga.

    The logits are ``logit_scale * u @ T.T``: the scaled cosine similarity of each image to the
    embedding of each class prompt ("a photo of a landbird."), i.e. exactly the classifier used
    at prediction time.

    Args:
        image_features: ``(N, D)`` normalised image embeddings.
        class_text_features: ``(C, D)`` normalised class-prompt embeddings.
        labels: ``(N,)`` integer class of each image, in ``[0, C)``.
        logit_scale: multiplicative scale, already exponentiated.

    Returns:
        Scalar mean cross-entropy.

    Raises:
        ValueError: on wrong ranks or sizes, or non-integer labels.
    """
    _check_rank("image_features", image_features, 2)
    _check_rank("class_text_features", class_text_features, 2)
    _check_same_dim("image_features", image_features, "class_text_features", class_text_features)
    _check_labels(labels, image_features.shape[0])
    logits = logit_scale * image_features @ class_text_features.T  # (N, C)
    return F.cross_entropy(logits, labels)


def class_prompt_sigmoid(
    image_features: Tensor,
    class_text_features: Tensor,
    labels: Tensor,
    *,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float = 0.0,
) -> Tensor:
    """The class-prompt classifier of :func:`class_prompt_ce` trained with SigLIP's sigmoid loss.

    Each (image i, class c) pair is a binary problem with label z_ic = 1 for c = y_i, −1
    otherwise, and logit t·u_i·T_c + b::

        L = −1/N Σ_i Σ_c log σ( z_ic · (t · u_i·T_c + b) )

    normalised as :func:`siglip_loss` (by the number of images). What a SigLIP model was trained
    to score: each class prompt independently, not a softmax over the classes.

    Args:
        image_features: ``(N, D)`` normalised image (or text) embeddings.
        class_text_features: ``(C, D)`` normalised class-prompt embeddings.
        labels: ``(N,)`` integer class of each row, in ``[0, C)``.
        logit_scale: t, already exponentiated.
        logit_bias: b.

    Returns:
        Scalar loss.

    Raises:
        ValueError: on wrong ranks or sizes, or non-integer labels.
    """
    _check_rank("image_features", image_features, 2)
    _check_rank("class_text_features", class_text_features, 2)
    _check_same_dim("image_features", image_features, "class_text_features", class_text_features)
    _check_labels(labels, image_features.shape[0])
    logits = logit_scale * image_features @ class_text_features.T + logit_bias  # (N, C)
    classes = torch.arange(logits.shape[1], device=logits.device)  # (C,)
    return _pairwise_sigmoid(logits, labels.unsqueeze(1) == classes.unsqueeze(0))


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every process's gradient for this shard."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:  # type: ignore[override]
        t = t.contiguous()
        world_size, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows = rank, t.shape[0]
        shards = [torch.empty_like(t) for _ in range(world_size)]
        dist.all_gather(shards, t)
        return torch.cat(shards, dim=0)  # (world_size * B, ...)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        # A reduce-scatter is what is meant; gloo has none, and the gradient of a batch of
        # embeddings is small, so every backend gets the same all-reduce and keeps its own rows.
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(t: Tensor) -> Tensor:
    """Concatenate ``t`` from every process along dim 0, keeping gradients.

    Contrastive losses need the negatives of the whole global batch, not only of the local
    shard. Without an initialised process group, or with a single process, ``t`` is returned
    unchanged (the same object).

    The backward sums, over all processes, the gradients that reach this process's shard
    (an all-reduce of the gathered gradient, of which each process keeps its own rows). When
    every process computes the same loss on the gathered batch, that sum is ``world_size``
    times the gradient of the loss, and DDP's averaging of parameter gradients over processes
    (as under Accelerate) divides it back: the update is exactly the gradient of the
    global-batch loss. The older recipe (``all_gather`` without grad, then put the local
    tensor back in its slot) would give ``1 / world_size`` of it, so it is not used.
    ``torch.distributed.nn.functional.all_gather`` computes the same thing but is deprecated,
    and its gloo backward (an all-to-all) aborted a two-process CPU run about one time in ten.

    Args:
        t: ``(B, ...)`` local tensor; every process must pass the same shape.

    Returns:
        ``(world_size * B, ...)`` tensor, ordered by rank, or ``t`` itself when not distributed.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    return _GatherWithGrad.apply(t)
