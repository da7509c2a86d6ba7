"""The fine-tuning methods: each maps a batch's embeddings to named loss terms; the caller sums.

As in open_clip, a method returns ``{"term": loss}`` (unweighted) and its ``weights``; the trainer
computes ``total = Σ weights[k] * terms[k]`` and logs every term. A term whose weight is 0 is not
computed at all.

Every per-image tensor handed to :meth:`FineTuneMethod.terms` spans the *global* batch (gathered
across processes with gradients), so contrastive negatives come from the whole batch; shared
tensors (class prompts, spurious prompts) are computed by every process.

- ``erm`` ("binary CLIP"): cross-entropy over ``logit_scale * cos(image, class prompt)``.
- ``spurious-aware`` (Yang et al. 2023, as its authors' code computes it: see
  :mod:`lga.train.spurious_aware`): CLIP loss between each image and its class's prompt
  ensemble under the method's own learned scale, in-modal cosine contrast of the images and of
  the class prompts by class, and the mean |cos| of class prompts with spurious prompts.
- ``lga``: supervised contrast over the anchors {u_i} ∪ {v_i} (images and their descriptions)
  labelled by class, instance alignment ``clip_loss(u_i, v_i)``, and optional background
  repulsion, class-prompt cross-entropy of the images (``class_ce``) and of the descriptions
  (``prompt``: the class prompts must classify the teacher's descriptions, text only).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lga.student.heads import (
    class_prototypes,
    image_place_basis,
    place_basis,
    project_images_out,
    project_out,
)
from lga.train import losses
from lga.train import spurious_aware as sa_losses
from lga.train.config import FitConfig, Method
from lga.train.data import CLASS_PROMPTS, imagenet_templates

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """The embeddings one training step works on (all normalised, float32).

    Attributes:
        image: ``(B, D)`` image embeddings u of the global batch.
        labels: ``(B,)`` classes y.
        texts: per-image text source -> ``(B, D)``: row i embeds image i's text.
        class_prompts: ``(C, D)`` class-prompt embeddings (template ensemble), when asked for.
        spurious: ``(S, D)`` spurious-attribute prompt embeddings, when asked for.
        logit_scale: the model's own scale (CLIP's exp(logit_scale)), or the method's own scale
            when it has one (spurious-aware), scalar.
        logit_bias: the model's own logit bias (SigLIP's), scalar; 0 for CLIP.
        sigmoid: image–text terms use SigLIP's sigmoid loss instead of softmax ones.
        class_templates: ``(C, K, D)`` every class in every template (each normalised), the
            parts of ``class_prompts``, when class prompts are asked for.
        prototype_rows: ``(B,)`` bool: the rows whose texts make lga's batch prototypes
            (``lga.filter=drop``); None: all.
        places: ``(B,)`` the place each image's background answer was read as
            (``lga.project=background``); None otherwise.
    """

    image: Tensor
    labels: Tensor
    texts: dict[str, Tensor] = field(default_factory=dict)
    class_prompts: Tensor | None = None
    spurious: Tensor | None = None
    logit_scale: Tensor | float = 100.0
    logit_bias: Tensor | float = 0.0
    sigmoid: bool = False
    class_templates: Tensor | None = None
    prototype_rows: Tensor | None = None
    places: Tensor | None = None


# The image-text terms of erm and lga (class_ce, instance, prompt) use the model's own scale and
# bias, and softmax (CLIP's InfoNCE, cross-entropy) or SigLIP's pairwise sigmoid as
# Embeddings.sigmoid says (train.image_text_loss; auto: the student family's own).


def pair_loss(e: Embeddings, u: Tensor, v: Tensor) -> Tensor:
    """Image i vs text i among the batch: :func:`~losses.clip_loss` or
    :func:`~losses.siglip_loss`, with the model's scale (and bias)."""
    if e.sigmoid:
        return losses.siglip_loss(u, v, logit_scale=e.logit_scale, logit_bias=e.logit_bias)
    return losses.clip_loss(u, v, logit_scale=e.logit_scale)


def class_loss(e: Embeddings, x: Tensor, labels: Tensor, classes: Tensor | None = None) -> Tensor:
    """Rows of ``x`` classified by the class prompts (or by ``classes``, (C, D)):
    :func:`~losses.class_prompt_ce` or :func:`~losses.class_prompt_sigmoid`, with the model's
    scale (and bias)."""
    scale, bias = e.logit_scale, e.logit_bias
    classes = e.class_prompts if classes is None else classes
    if e.sigmoid:
        return losses.class_prompt_sigmoid(x, classes, labels, logit_scale=scale, logit_bias=bias)
    return losses.class_prompt_ce(x, classes, labels, logit_scale=scale)


def batch_prototypes(
    texts: Tensor, labels: Tensor, keep: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The (K, D) normalised mean text embedding of each of the K classes present in the batch
    (of its ``keep`` rows, as :func:`class_prototypes`), and ``labels`` re-indexed into those K:
    a class absent from the batch is no candidate."""
    present, index = torch.unique(labels, return_inverse=True)
    return class_prototypes(texts, index, len(present), keep), index


class FineTuneMethod(ABC):
    """A fine-tuning objective: what it needs embedded, and its named terms.

    Attributes:
        weights: term name -> weight; only terms with a positive weight are computed.
        image_texts: per-image text sources to embed (store prompt names or ``caption``).
        needs_class_prompts: embed the class prompts each step.
        needs_spurious: embed the spurious-attribute prompts each step.
        prompt_templates: templates of the class prompts of the training terms (None: the
            run's, ``student.templates``); predictions always use the run's.
        logit_scale_init: the method's own learnable scale starts here (None: the student's
            logit scale serves).
    """

    method: Method
    weights: dict[str, float]
    image_texts: list[str]
    needs_class_prompts: bool = False
    needs_spurious: bool = False
    prompt_templates: list[str] | None = None
    logit_scale_init: float | None = None
    head: str = "prompts"  # predictions: class prompts, or "descriptions" (lga.head)
    head_texts: tuple[str, ...] = ()  # the per-image texts of the description head
    project: str | None = None  # the per-image text whose place directions leave the head
    project_images: bool = False  # the places' direction in the image embeddings leaves them too

    @property
    def has_head(self) -> bool:
        """Predictions go through a head the run builds and saves, not the class prompts."""
        return self.head == "descriptions" or self.project is not None

    def active(self, term: str) -> bool:
        return self.weights.get(term, 0.0) > 0

    @abstractmethod
    def terms(self, e: Embeddings) -> dict[str, Tensor]:
        """Unweighted scalar loss terms, one per active weight."""

    def total(self, terms: dict[str, Tensor]) -> Tensor:
        """``Σ weights[k] * terms[k]``."""
        return torch.stack([self.weights[k] * v for k, v in terms.items()]).sum()


class Erm(FineTuneMethod):
    """ "Binary CLIP": cross-entropy over the class-prompt logits (the prediction rule)."""

    method = Method.ERM

    def __init__(self, cfg: FitConfig):
        self.weights = {"class_ce": 1.0}
        self.image_texts = []
        self.needs_class_prompts = True

    def terms(self, e: Embeddings) -> dict[str, Tensor]:
        return {"class_ce": class_loss(e, e.image, e.labels)}


class SpuriousAware(FineTuneMethod):
    """Yang et al. 2023 (``lga.train.spurious_aware``): L_clip + L_vc + L_lc + L_ls.

    Spurious prompts come from the place names in every template (the reference's), the dataset
    config's ``spurious_prompts`` or the sample's most frequent background keywords; the batch
    balance (``spurious_aware.balance``) is the trainer's.
    """

    method = Method.SPURIOUS_AWARE

    def __init__(self, cfg: FitConfig):
        sa = cfg.spurious_aware
        self.weights = sa.weights.model_dump()
        self.text = sa.text
        per_image = self.active("clip") and self.text != CLASS_PROMPTS
        self.image_texts = [self.text] if per_image else []
        self.needs_class_prompts = (
            self.active("clip") and not per_image
        ) or self.active("prompt_inmodal") or self.active("separation")  # fmt: skip
        self.needs_spurious = self.active("separation")
        self.prompt_templates = imagenet_templates() if sa.templates == "imagenet80" else None
        # Only the CLIP term uses a scale; an unused parameter would stall DDP.
        own = self.active("clip") and sa.init_temperature is not None
        self.logit_scale_init = 1 / sa.init_temperature if own else None

    def terms(self, e: Embeddings) -> dict[str, Tensor]:
        out = {}
        y = e.labels
        if self.active("clip"):
            if self.image_texts:
                out["clip"] = losses.clip_loss(
                    e.image, e.texts[self.text], logit_scale=e.logit_scale
                )
            else:
                out["clip"] = sa_losses.clip_term(
                    e.image, e.class_templates, y, logit_scale=e.logit_scale
                )
        if self.active("inmodal"):
            out["inmodal"] = sa_losses.inmodal(e.image, y)
        if self.active("prompt_inmodal"):
            out["prompt_inmodal"] = sa_losses.prompt_inmodal(e.class_templates, y)
        if self.active("separation"):
            out["separation"] = sa_losses.separation(e.class_templates, e.spurious, y)
        return out


class Lga(FineTuneMethod):
    """Language-guided abstractions: supervised contrast of images with object descriptions."""

    method = Method.LGA

    def __init__(self, cfg: FitConfig):
        c = cfg.lga
        self.weights = c.weights.model_dump()
        self.texts = list(c.texts)
        self.supcon = losses.supcon_out if c.supcon == "out" else losses.supcon_in
        self.temperature = c.temperature
        self.cross_modal = c.positives == "cross"
        self.background_prompt, self.margin = c.background_prompt, c.background_margin
        uses_background = self.active("background") or c.project == "background"
        background = [self.background_prompt] if uses_background else []
        self.image_texts = list(dict.fromkeys(self.texts + background))
        self.project = self.background_prompt if c.project == "background" else None
        self.project_images = c.project_images
        self.head = c.head
        self.head_texts = tuple(self.texts) if c.head == "descriptions" else ()
        prompts_ce = self.active("class_ce") and self.head == "prompts"
        self.needs_class_prompts = prompts_ce or self.active("prompt")

    def terms(self, e: Embeddings) -> dict[str, Tensor]:
        u, y = e.image, e.labels  # (B, D), (B,)
        out = {}
        if self.active("supcon"):
            anchors = torch.cat([u] + [e.texts[t] for t in self.texts])  # (B * (1 + P), D)
            labels = y.repeat(1 + len(self.texts))  # (B * (1 + P),)
            views = None
            if self.cross_modal:  # 0 for the images, 1 for every description
                views = (torch.arange(len(labels), device=y.device) >= len(y)).long()
            out["supcon"] = self.supcon(anchors, labels, temperature=self.temperature, views=views)
        if self.active("instance"):
            out["instance"] = torch.stack([pair_loss(e, u, e.texts[t]) for t in self.texts]).mean()
        if self.active("background"):
            out["background"] = losses.background_repulsion(
                u, e.texts[self.background_prompt], margin=self.margin
            )
        if self.active("class_ce"):
            if self.head == "descriptions":
                # each image against its batch's class prototypes of the teacher's descriptions
                v = torch.stack([e.texts[t] for t in self.texts]).mean(dim=0)  # (B, D)
                classes, index = batch_prototypes(v, y, e.prototype_rows)
            else:
                classes, index = e.class_prompts, y
            if self.project is not None:  # the batch's place directions, held fixed this step
                basis = place_basis(e.texts[self.project].detach(), e.places)
                classes = project_out(classes, basis)
            x = u
            if self.project_images:  # the batch's images' place direction, held fixed this step
                x = project_images_out(u, image_place_basis(u.detach(), y, e.places))
            out["class_ce"] = class_loss(e, x, index, classes)
        if self.active("prompt"):  # the class prompts classify the descriptions
            out["prompt"] = torch.stack([class_loss(e, e.texts[t], y) for t in self.texts]).mean()
        return out


METHODS: dict[Method, Callable[[FitConfig], FineTuneMethod]] = {
    Method.ERM: Erm,
    Method.SPURIOUS_AWARE: SpuriousAware,
    Method.LGA: Lga,
}


def build_method(cfg: FitConfig) -> FineTuneMethod:
    """The fine-tuning objective of ``cfg.method``.

    Raises:
        ValueError: the method does not fine-tune, or every one of its weights is 0.
    """
    if cfg.method not in METHODS:
        raise ValueError(f"method {cfg.method.value} does not fine-tune CLIP")
    method = METHODS[cfg.method](cfg)
    if not any(w > 0 for w in method.weights.values()):
        from lga.errors import ConfigError

        raise ConfigError(f"every loss weight of method {cfg.method.value} is 0: nothing to train")
    return method
