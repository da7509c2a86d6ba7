"""The loss terms of the spurious-aware baseline (Yang et al. 2023), as the authors' code has them.

Reference: YuYang0901/CLIP-spurious-finetune, ``losses.py`` (``MultimodalLoss``), with the
Waterbirds commands of its README (``--clip_weight 1 --image_weight 1 --language_weight 1
--spurious_weight 1 --pos_weight 1 --neg_weight 1``, the other weights 0). Its objective is the
batch mean of per-image terms; with ``u`` the normalised image embeddings (B, D), ``t[c, k]`` the
normalised embedding of class ``c`` in template ``k`` (C, K, D), ``s`` the spurious-attribute
prompts (S, D) and ``s_`` the learnable scale (``exp``, from 1/0.07):

- :func:`clip_term` (L_clip): CLIP's symmetric cross-entropy between each image and the text
  of its class, the template *mean* ``t[y_j].mean(k)`` (not renormalised), with targets
  ``arange(B)``: an image's negatives include the (identical) texts of the other images of its
  class, as in the reference.
- :func:`inmodal` (L_vc): for each anchor row, ``-Σ_{same label} cos / N + Σ_{other} cos / N``
  over all N rows, the anchor itself included (the reference's ``similarity_loss``: a mean over
  *every* column of the masked similarities, no softmax, no temperature), averaged over anchors.
- :func:`prompt_inmodal` (L_lc): the same over the C*K class-prompt embeddings labelled by
  class; each image gets its class's mean over the K templates; averaged over the batch.
- :func:`separation` (L_ls): for each class-prompt embedding, the mean ``|cos|`` with every
  spurious-prompt embedding; each image gets its class's mean over templates; batch mean.

Bugs of the reference that are *not* copied (the README says the same):

1. The class-prompt labels: ``embeddings['y']`` is ``(T, C, D)`` and flattened template-major
   (row ``r`` is class ``r % C``), but its labels are ``repeat_interleave(arange(C), T)`` (row
   ``r`` labelled ``r // T``): for Waterbirds the first 40 templates of *both* classes are
   "class 0". Here every row carries its own class.
2. Per-class means: ``loss.view(T, C).mean(-1)[y]`` averages over classes and indexes a
   *template* by the class label, so only templates 0 and 1 ever count. Here: the mean over
   templates of the image's class (``view(C, K).mean(1)[y]`` in this layout).
3. The image in-modal labels: ``metadata[:, field_idx]`` with ``field_idx`` the position of
   ``'y'`` among the model's ``metadata_map`` keys (2), which in WILDS 2's metadata is the
   ``from_source_domain`` column (1 for every training image): every pair counts as positive and
   the term only pulls all images together. Here the labels are the classes.
4. ``elif field == 'spurious' and self.spurious_weight > 0 or self.use_wandb`` is true for the
   class field whenever ``--use_wandb`` is given (every README command): a mean ``|cos|`` between
   the class prompts themselves is added to the language loss. Not added here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lga.train import losses

__all__ = ["class_texts", "clip_term", "inmodal", "prompt_inmodal", "separation"]

_EPS = 1e-6  # nn.CosineSimilarity(eps=1e-6) of the reference


def _cos(a: Tensor, b: Tensor) -> Tensor:
    """(N, M) cosine similarities of the rows of ``a`` (N, D) and ``b`` (M, D)."""
    return F.normalize(a, dim=-1, eps=_EPS) @ F.normalize(b, dim=-1, eps=_EPS).T


def _check(class_templates: Tensor | None = None, labels: Tensor | None = None,
           features: Tensor | None = None) -> None:  # fmt: skip
    if class_templates is not None and class_templates.dim() != 3:
        raise ValueError(
            f"class_templates must be (C, K, D), got shape {tuple(class_templates.shape)}"
        )
    if features is not None and features.dim() != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
    if labels is not None and (labels.dim() != 1 or labels.is_floating_point()):
        raise ValueError(
            f"labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}"
        )
    if features is not None and labels is not None and len(labels) != len(features):
        raise ValueError(f"labels must have {len(features)} entries, got {len(labels)}")


def _inmodal_rows(features: Tensor, labels: Tensor) -> Tensor:
    """(N,) ``-mean_j(cos_ij [same label]) + mean_j(cos_ij [other label])``, j over every row."""
    sim = _cos(features, features)  # (N, N)
    same = (labels[:, None] == labels[None, :]).to(sim.dtype)  # (N, N), the diagonal included
    return -(sim * same).mean(dim=1) + (sim * (1 - same)).mean(dim=1)


def class_texts(class_templates: Tensor, labels: Tensor) -> Tensor:
    """(B, D) the text of each image: its class's template mean, not renormalised."""
    return class_templates.mean(dim=1)[labels]


def clip_term(
    image: Tensor, class_templates: Tensor, labels: Tensor, *, logit_scale: Tensor | float
) -> Tensor:
    """L_clip: :func:`lga.train.losses.clip_loss` of the images and their classes' texts.

    Args:
        image: ``(B, D)`` normalised image embeddings.
        class_templates: ``(C, K, D)`` normalised embeddings of every class in every template.
        labels: ``(B,)`` classes.
        logit_scale: the scale, already exponentiated.
    """
    _check(class_templates, labels, image)
    return losses.clip_loss(image, class_texts(class_templates, labels), logit_scale=logit_scale)


def inmodal(features: Tensor, labels: Tensor) -> Tensor:
    """L_vc: the mean over anchors of :func:`_inmodal_rows` (``(N, D)``, ``(N,)``)."""
    _check(labels=labels, features=features)
    return _inmodal_rows(features, labels).mean()


def prompt_inmodal(class_templates: Tensor, labels: Tensor) -> Tensor:
    """L_lc: in-modal contrast of the class-prompt embeddings, per image through its class.

    Args:
        class_templates: ``(C, K, D)``.
        labels: ``(B,)`` classes of the batch (they weight the classes as the batch does).
    """
    _check(class_templates, labels)
    c, k, d = class_templates.shape
    rows = class_templates.reshape(c * k, d)  # (C*K, D), class-major
    row_class = torch.arange(c, device=rows.device).repeat_interleave(k)  # (C*K,)
    per_class = _inmodal_rows(rows, row_class).view(c, k).mean(dim=1)  # (C,)
    return per_class[labels].mean()


def separation(class_templates: Tensor, spurious: Tensor, labels: Tensor) -> Tensor:
    """L_ls: mean ``|cos|`` of each class-prompt embedding with every spurious-prompt one,
    per image through its class.

    Args:
        class_templates: ``(C, K, D)``.
        spurious: ``(S, D)`` spurious-attribute prompt embeddings (every template x value).
        labels: ``(B,)``.

    Raises:
        ValueError: no spurious prompt, or tensors of the wrong rank.
    """
    _check(class_templates, labels)
    if spurious.dim() != 2 or spurious.shape[-1] != class_templates.shape[-1]:
        raise ValueError(
            f"spurious must be (S, {class_templates.shape[-1]}), got {tuple(spurious.shape)}"
        )
    if spurious.shape[0] == 0:
        raise ValueError("the separation term needs at least one spurious prompt")
    c, k, d = class_templates.shape
    per_row = _cos(class_templates.reshape(c * k, d), spurious).abs().mean(dim=1)  # (C*K,)
    return per_row.view(c, k).mean(dim=1)[labels].mean()
