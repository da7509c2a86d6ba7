"""The trainable student: which parameters train, and one ``forward`` for both towers.

Under DDP (``accelerate launch``) gradients are synchronised only for computations that go through
the wrapped module's ``forward``, so the image and text towers are called from
:class:`DualEncoder.forward`, never through ``get_image_features`` of the unwrapped model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lga.errors import ConfigError
from lga.student.families import (
    Family,
    after_modules,
    encoder_layers,
    family_of,
    head_modules,
    select_image_inputs,
    tower_modules,
    unused_modules,
)
from lga.student.model import pooled

log = logging.getLogger(__name__)


class DualEncoder(nn.Module):
    """A dual encoder seen as ``(images, tokens) -> (image, text embeddings, scale, bias)``.

    The family's conventions (which image inputs, which text inputs, the scale and bias) come
    from :func:`lga.student.families.family_of`.

    Args:
        model: the dual encoder.
        logit_scale_init: give the objective its own learnable scale, ``exp`` of a parameter
            that starts at ``log(logit_scale_init)`` (the spurious-aware baseline's, from
            1/0.07), returned instead of the model's. It trains, and is checkpointed, with the
            model; it is not part of the saved model (predictions do not depend on a scale).
    """

    def __init__(self, model: nn.Module, *, logit_scale_init: float | None = None):
        super().__init__()
        self.model = model
        self.family: Family = family_of(model)
        self.own_logit_scale = None
        if logit_scale_init is not None:
            self.own_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))

    def forward(
        self,
        pixels: Tensor | dict[str, Tensor],
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """Normalised embeddings, in float32 whatever the autocast dtype.

        Args:
            pixels: ``pixel_values`` ``(B, 3, H, W)``, or the image processor's tensors
                (SigLIP 2 NaFlex: with ``pixel_attention_mask`` and ``spatial_shapes``).
            input_ids: ``(T, L)`` token ids of the texts to encode with gradients, or None.
            attention_mask: ``(T, L)``.

        Returns:
            ``(u (B, D), v (T, D) or None, logit_scale (), logit_bias ())``.
        """
        images = {"pixel_values": pixels} if isinstance(pixels, Tensor) else pixels
        images = select_image_inputs(self.model, images)
        u = F.normalize(pooled(self.model.get_image_features(**images)).float(), dim=-1)  # (B, D)
        v = None
        if input_ids is not None:
            given = {"input_ids": input_ids, "attention_mask": attention_mask}
            tokens = {k: given[k] for k in self.family.text_inputs if given.get(k) is not None}
            v = F.normalize(pooled(self.model.get_text_features(**tokens)).float(), dim=-1)
        if self.own_logit_scale is not None:
            return u, v, self.own_logit_scale.exp().float(), self.family.logit_bias(self.model)
        return u, v, logit_scale(self.model), self.family.logit_bias(self.model)


def logit_scale(model: nn.Module) -> Tensor:
    """The model's own scale of cos(image, text) as a float32 scalar: CLIP's exp(logit_scale),
    ALIGN's 1 / temperature, 100 for a model without one."""
    return family_of(model).logit_scale(model)


@dataclass(frozen=True)
class Trainable:
    """What :func:`set_trainable` left trainable."""

    n_trainable: int
    n_total: int
    text_frozen: bool


def _open_tower(family: Family, model: nn.Module, side: str, trainable: str, last_k: int) -> None:
    heads = head_modules(family, model, side)
    if trainable == "all":
        for m in tower_modules(family, model, side):
            m.requires_grad_(True)
        for m in unused_modules(family, model, side):
            m.requires_grad_(False)
        return
    if trainable == "last_k":
        for layer in encoder_layers(family, model, side)[-last_k:]:
            layer.requires_grad_(True)
        for m in after_modules(family, model, side):
            m.requires_grad_(True)
    elif not heads:
        raise ConfigError(
            f"{family.name} ({type(model).__name__}): its {side} tower has no projection "
            f"({', '.join(family.tower(side).heads) or 'none known'}); "
            "train.trainable=projections cannot apply: use last_k or all"
        )
    for m in heads:
        m.requires_grad_(True)


def set_trainable(
    model: nn.Module, *, trainable: str, last_k: int, freeze_text: bool, train_logit_scale: bool
) -> Trainable:
    """Freeze everything, then open the parts selected by ``train.trainable`` and friends.

    Where each part is depends on the family (:mod:`lga.student.families`): CLIP's
    ``encoder.layers``, BERT's and XLM-R's ``encoder.layer``, EfficientNet's ``encoder.blocks``;
    projections are CLIP's ``visual_projection`` / ``text_projection``, SigLIP's two heads,
    ALIGN's text projection and last EfficientNet convolution.

    Args:
        model: a dual encoder with a vision and a text tower.
        trainable: ``all``; ``last_k`` (the last k blocks of each trained tower, the norms and
            pooling heads after them and the projection); ``projections`` (the projections only).
        last_k: k for ``last_k``.
        freeze_text: keep the whole text tower (projection included) frozen.
        train_logit_scale: let the model's own scale train (CLIP's ``logit_scale``, ALIGN's
            ``temperature``; SigLIP's ``logit_bias`` with it).

    Returns:
        Parameter counts and whether the text tower is entirely frozen.

    Raises:
        ConfigError: the family has no such parts, or ``train_logit_scale`` is asked of a model
            without a learned scale.
    """
    family = family_of(model)
    model.requires_grad_(False)
    sides = ["vision"] if freeze_text else ["vision", "text"]
    for side in sides:
        _open_tower(family, model, side, trainable, last_k)
    if train_logit_scale:
        params = family.scale_parameters(model)
        if not params:
            raise ConfigError(
                f"train.train_logit_scale: {family.name} ({type(model).__name__}) has no learned "
                "logit scale or temperature"
            )
        for p in params:
            p.requires_grad_(True)
    text_params = [p for m in tower_modules(family, model, "text") for p in m.parameters()]
    out = Trainable(
        n_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        n_total=sum(p.numel() for p in model.parameters()),
        text_frozen=not any(p.requires_grad for p in text_params),
    )
    log.info(
        "trainable parameters: %d of %d (%s, %s%s)",
        out.n_trainable,
        out.n_total,
        family.name,
        trainable,
        ", text tower frozen" if out.text_frozen else "",
    )
    return out


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices, none on biases, norms and scalars (CLIP's recipe)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
