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
from lga.student.model import pooled

log = logging.getLogger(__name__)

# Children of a tower applied after its encoder blocks: they train with ``trainable=last_k``.
_AFTER_ENCODER = ("post_layernorm", "final_layer_norm", "head")


class DualEncoder(nn.Module):
    """A CLIP-family model seen as ``(pixels, tokens) -> (image, text embeddings, logit scale)``.

    Args:
        model: the CLIP-family model.
        logit_scale_init: give the objective its own learnable scale, ``exp`` of a parameter
            that starts at ``log(logit_scale_init)`` (the spurious-aware baseline's, from
            1/0.07), returned instead of the model's. It trains, and is checkpointed, with the
            model; it is not part of the saved model (predictions do not depend on a scale).
    """

    def __init__(self, model: nn.Module, *, logit_scale_init: float | None = None):
        super().__init__()
        self.model = model
        self.own_logit_scale = None
        if logit_scale_init is not None:
            self.own_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))

    def forward(
        self,
        pixel_values: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Normalised embeddings, in float32 whatever the autocast dtype.

        Args:
            pixel_values: ``(B, 3, H, W)`` preprocessed images.
            input_ids: ``(T, L)`` token ids of the texts to encode with gradients, or None.
            attention_mask: ``(T, L)``.

        Returns:
            ``(u (B, D), v (T, D) or None, logit_scale ())``.
        """
        u = F.normalize(
            pooled(self.model.get_image_features(pixel_values=pixel_values)).float(), dim=-1
        )  # (B, D)
        v = None
        if input_ids is not None:
            feats = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
            v = F.normalize(pooled(feats).float(), dim=-1)  # (T, D)
        if self.own_logit_scale is not None:
            return u, v, self.own_logit_scale.exp().float()
        return u, v, logit_scale(self.model)


def logit_scale(model: nn.Module) -> Tensor:
    """exp(logit_scale) of a CLIP-family model (100 when it has none), as a float32 scalar."""
    scale = getattr(model, "logit_scale", None)
    if scale is None:
        return torch.tensor(100.0)
    return scale.exp().float()


@dataclass(frozen=True)
class Trainable:
    """What :func:`set_trainable` left trainable."""

    n_trainable: int
    n_total: int
    text_frozen: bool


def _tower(model: nn.Module, side: str) -> tuple[nn.Module, nn.Module | None]:
    body = getattr(model, f"{side}_model", None)
    proj = getattr(model, "visual_projection" if side == "vision" else "text_projection", None)
    if body is None:
        raise ConfigError(f"{type(model).__name__} has no {side}_model; cannot choose what trains")
    return body, proj


def _encoder_layers(body: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(body, "encoder", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"{type(body).__name__} has no encoder.layers; use train.trainable=all or projections"
        )
    return layers


def _open_tower(body: nn.Module, proj: nn.Module | None, trainable: str, last_k: int) -> None:
    if trainable == "all":
        body.requires_grad_(True)
    elif trainable == "last_k":
        for layer in _encoder_layers(body)[-last_k:]:
            layer.requires_grad_(True)
        for name in _AFTER_ENCODER:
            if isinstance(getattr(body, name, None), nn.Module):
                getattr(body, name).requires_grad_(True)
    elif proj is None:
        raise ConfigError(
            f"{type(body).__name__} has no projection; train.trainable=projections cannot apply"
        )
    if proj is not None:
        proj.requires_grad_(True)


def set_trainable(
    model: nn.Module, *, trainable: str, last_k: int, freeze_text: bool, train_logit_scale: bool
) -> Trainable:
    """Freeze everything, then open the parts selected by ``train.trainable`` and friends.

    Args:
        model: a CLIP-family model with ``vision_model`` / ``text_model`` (and projections).
        trainable: ``all``; ``last_k`` (the last k encoder blocks of each trained tower, the
            norms after them and the projection); ``projections`` (the projections only).
        last_k: k for ``last_k``.
        freeze_text: keep the whole text tower (projection included) frozen.
        train_logit_scale: let CLIP's temperature train.

    Returns:
        Parameter counts and whether the text tower is entirely frozen.
    """
    model.requires_grad_(False)
    sides = ["vision"] if freeze_text else ["vision", "text"]
    for side in sides:
        _open_tower(*_tower(model, side), trainable, last_k)
    if train_logit_scale and isinstance(getattr(model, "logit_scale", None), nn.Parameter):
        model.logit_scale.requires_grad_(True)
    text_params = [p for m in _tower(model, "text") if m is not None for p in m.parameters()]
    out = Trainable(
        n_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        n_total=sum(p.numel() for p in model.parameters()),
        text_frozen=not any(p.requires_grad for p in text_params),
    )
    log.info(
        "trainable parameters: %d of %d (%s%s)",
        out.n_trainable,
        out.n_total,
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
