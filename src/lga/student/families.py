"""Each dual-encoder family's own conventions, in one table keyed by ``config.model_type``.

A checkpoint is loaded through ``AutoModel``; what differs between families is how its inputs were
built when it was trained and how it turns two embeddings into a score. Those conventions live
here, not as branches in the trainer:

- **text**: padding and length as trained. CLIP-style models pool a position that padding never
  reaches (EOS or CLS, with an attention mask), so texts are padded to the longest of the batch.
  SigLIP and SigLIP 2 pool the *last* position and were trained on texts padded to a fixed 64
  tokens with no attention mask (big_vision; HF's conversion checked its logits with
  ``model(input_ids=..., pixel_values=...)``): they are padded to ``max_position_embeddings``
  ("max_length") and get ``input_ids`` only. RoBERTa-style text towers (AltCLIP's XLM-R) number
  positions from ``pad_token_id + 1`` (their position embedding's padding index + 1), so
  ``max_position_embeddings`` minus that offset tokens fit: found from the module, any family.
- **scores**: ``logit = scale * cos(image, text) + bias`` with the model's own learned scale
  (CLIP: ``exp(logit_scale)``; ALIGN: ``1 / temperature``) and bias (SigLIP: ``logit_bias``; 0
  elsewhere). Pairs are scored by softmax over a batch (CLIP) or by a sigmoid each (SigLIP), which
  is also the family's default image–text loss for fine-tuning.
- **towers**: where each tower's blocks, final norms and projection ("head") sit, for
  ``train.trainable`` (``last_k``, ``projections``).
- **images**: whatever the image processor returns that ``get_image_features`` takes
  (``pixel_values``; SigLIP 2 NaFlex also ``pixel_attention_mask`` and ``spatial_shapes``).

A model type not in the table gets :data:`GENERIC`: CLIP's conventions, its scale and bias read
from whichever of ``logit_scale`` / ``temperature`` / ``logit_bias`` it has, and its towers found
by the usual attribute names. A new family is one entry of :data:`FAMILIES`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from lga.errors import ConfigError

log = logging.getLogger(__name__)

Side = Literal["vision", "text"]
Loss = Literal["softmax", "sigmoid"]

# Where the blocks of an encoder are, in the order tried for a model type not in the table.
_LAYER_PATHS = ("encoder.layers", "encoder.layer", "encoder.blocks", "layers", "blocks")


@dataclass(frozen=True)
class Tower:
    """Where one tower's parts are.

    Attributes:
        body: the model attribute holding the tower (``vision_model``).
        layers: paths in ``body`` of the ``ModuleList`` of its blocks (``encoder.layers``), the
            first found is used (a module may rename it between transformers versions); empty:
            the usual paths.
        after: paths in ``body`` of what runs after the blocks (final norms, pooling heads):
            trained with ``trainable=last_k``.
        heads: paths in the *model* of what maps the tower's output into the joint space
            (projections, SigLIP's heads): what ``trainable=projections`` trains.
        unused: paths in ``body`` that ``get_*_features`` never runs (ALIGN's BERT pooler):
            kept frozen, since a parameter without gradient stalls DDP.
    """

    body: str
    layers: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()


@dataclass(frozen=True)
class Family:
    """The conventions of one dual-encoder family (see the module docstring).

    Attributes:
        name: the family's name in logs and messages.
        padding: ``longest`` (pad to the batch's longest text) or ``max_length`` (pad every text
            to the text tower's ``max_position_embeddings``, as SigLIP was trained).
        text_inputs: tokenizer outputs passed to ``get_text_features``.
        scale: the parameter holding the logit scale: ``logit_scale`` (exp of it),
            ``temperature`` (1 / it), or None (a fixed 100, CLIP's trained value).
        bias: the parameter holding the logit bias, or None (0).
        loss: ``softmax`` (CLIP's InfoNCE, cross-entropy) or ``sigmoid`` (SigLIP): the
            image–text loss of fine-tuning with ``train.image_text_loss=auto``.
        vision, text: where each tower's parts are (None: found by the usual names).
    """

    name: str
    padding: Literal["longest", "max_length"] = "longest"
    text_inputs: tuple[str, ...] = ("input_ids", "attention_mask")
    scale: Literal["logit_scale", "temperature"] | None = "logit_scale"
    bias: Literal["logit_bias"] | None = None
    loss: Loss = "softmax"
    vision: Tower | None = None
    text: Tower | None = None
    model_types: tuple[str, ...] = field(default=(), compare=False)

    # -- text -----------------------------------------------------------------------------------

    def max_text_length(self, model: nn.Module, tokenizer) -> int:
        """The number of tokens the text tower takes, special tokens included."""
        cfg = text_config(model)
        positions = getattr(cfg, "max_position_embeddings", None)
        tok_max = getattr(tokenizer, "model_max_length", None)
        if positions is None:  # a text tower without absolute positions: the tokenizer's limit
            return tok_max if isinstance(tok_max, int) and 0 < tok_max < 100_000 else 77
        length = int(positions) - self.position_offset(model)
        if self.padding == "longest" and isinstance(tok_max, int) and 0 < tok_max < length:
            length = tok_max
        return length

    def position_offset(self, model: nn.Module) -> int:
        """Positions a RoBERTa-style text tower never uses: its position embedding's padding
        index + 1 (XLM-R numbers positions from ``pad_token_id + 1``); 0 for the others."""
        body = module_at(model, self.tower("text").body)
        for name, m in body.named_modules() if body is not None else ():
            if name.endswith("position_embeddings") and isinstance(m, nn.Embedding):
                return 0 if m.padding_idx is None else m.padding_idx + 1
        return 0

    # -- scores ---------------------------------------------------------------------------------

    def logit_scale(self, model: nn.Module) -> Tensor:
        """The multiplicative scale of ``cos(image, text)``, a float32 scalar (keeps gradients)."""
        if self.scale is None:
            return torch.tensor(100.0)
        param = getattr(model, self.scale)
        value = param.exp() if self.scale == "logit_scale" else 1.0 / param
        return value.float().reshape(())

    def logit_bias(self, model: nn.Module) -> Tensor:
        """The additive bias of the logits, a float32 scalar (0 for families without one)."""
        if self.bias is None:
            return torch.tensor(0.0)
        return getattr(model, self.bias).float().reshape(())

    def scale_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The learned scale (and bias) parameters: what ``train.train_logit_scale`` trains."""
        names = [n for n in (self.scale, self.bias) if n is not None]
        return [p for n in names if isinstance(p := getattr(model, n, None), nn.Parameter)]

    # -- towers ---------------------------------------------------------------------------------

    def tower(self, side: Side) -> Tower:
        return (self.vision if side == "vision" else self.text) or _GENERIC_TOWERS[side]


def text_config(model: nn.Module):
    """The text tower's config (the model's own when it has no ``text_config``)."""
    return getattr(model.config, "text_config", None) or model.config


# The generic towers: CLIP's attribute names, blocks found among _LAYER_PATHS.
_GENERIC_TOWERS: dict[Side, Tower] = {
    "vision": Tower("vision_model", (), ("post_layernorm", "head"), ("visual_projection",)),
    "text": Tower("text_model", (), ("final_layer_norm", "head"), ("text_projection",)),
}
_LAYERS = ("encoder.layers",)
_BERT_LAYERS = ("encoder.layer", "encoder.layers")
_CLIP_VISION = Tower("vision_model", _LAYERS, ("post_layernorm",), ("visual_projection",))
_CLIP_TEXT = Tower("text_model", _LAYERS, ("final_layer_norm",), ("text_projection",))
_SIGLIP = dict(
    padding="max_length",
    text_inputs=("input_ids",),
    bias="logit_bias",
    loss="sigmoid",
    vision=Tower("vision_model", _LAYERS, ("post_layernorm", "head"), ("vision_model.head",)),
    text=Tower("text_model", _LAYERS, ("final_layer_norm", "head"), ("text_model.head",)),
)  # fmt: skip

FAMILIES: tuple[Family, ...] = (
    Family("CLIP", vision=_CLIP_VISION, text=_CLIP_TEXT, model_types=("clip", "metaclip_2")),
    Family("SigLIP", **_SIGLIP, model_types=("siglip",)),
    # SigLIP 2 NaFlex: its image processor's pixel_attention_mask and spatial_shapes go along.
    Family("SigLIP 2", **_SIGLIP, model_types=("siglip2",)),
    # ALIGN: 1 / temperature; its EfficientNet has no projection: the embedding is the pooled
    # output of the last block, whose final 1x1 convolution is the map into the joint space.
    Family(
        "ALIGN",
        scale="temperature",
        vision=Tower(
            "vision_model", ("encoder.blocks",), (), ("vision_model.encoder.blocks.-1.projection",)
        ),
        text=Tower("text_model", _BERT_LAYERS, (), ("text_projection",), unused=("pooler",)),
        model_types=("align",),
    ),
    Family(
        "AltCLIP",  # XLM-R: at most max_position_embeddings - 2 tokens (position_offset)
        vision=_CLIP_VISION,
        text=Tower(
            "text_model",
            ("roberta.encoder.layer", "roberta.encoder.layers"),
            ("pre_LN", "transformation"),
            ("text_projection",),
        ),
        model_types=("altclip",),
    ),
    Family(
        "ChineseCLIP",
        vision=_CLIP_VISION,
        text=Tower("text_model", _BERT_LAYERS, (), ("text_projection",)),
        model_types=("chinese_clip",),
    ),
)  # fmt: skip

GENERIC = Family("generic dual encoder")

_BY_TYPE: dict[str, Family] = {t: f for f in FAMILIES for t in f.model_types}


def family_of(model: nn.Module) -> Family:
    """The family of a loaded model, by its ``config.model_type`` (:data:`GENERIC` if unknown).

    For :data:`GENERIC`, the scale and bias are the parameters the model has.
    """
    found = _BY_TYPE.get(getattr(model.config, "model_type", ""))
    if found is not None:
        return found
    scale = next((n for n in ("logit_scale", "temperature") if hasattr(model, n)), None)
    bias = "logit_bias" if isinstance(getattr(model, "logit_bias", None), nn.Parameter) else None
    return Family(GENERIC.name, scale=scale, bias=bias)


# ---------------------------------------------------------------------------------------------
# Inputs


def image_input_names(model: nn.Module) -> tuple[str, ...]:
    """The arguments of ``get_image_features`` an image processor may fill, in order."""
    params = inspect.signature(model.get_image_features).parameters
    known = ("pixel_values", "pixel_attention_mask", "spatial_shapes", "image_sizes")
    return tuple(n for n in known if n in params)


def select_image_inputs(model: nn.Module, processed: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The entries of an image processor's output that ``get_image_features`` takes."""
    return {k: processed[k] for k in image_input_names(model) if k in processed}


def module_at(root: nn.Module, path: str) -> nn.Module | None:
    """``root.a.b.-1.c`` for ``"a.b.-1.c"`` (an integer indexes a ModuleList), or None."""
    node: object = root
    for part in path.split("."):
        if isinstance(node, nn.ModuleList) and part.lstrip("-").isdigit():
            index = int(part)
            node = node[index] if -len(node) <= index < len(node) else None
        else:
            node = getattr(node, part, None)
        if node is None:
            return None
    return node if isinstance(node, nn.Module) else None


def encoder_layers(family: Family, model: nn.Module, side: Side) -> nn.ModuleList:
    """The blocks of one tower (``trainable=last_k``).

    Raises:
        ConfigError: the tower has no list of blocks where the family says (or, for a generic
            model, at any of the usual paths).
    """
    tower = family.tower(side)
    body = module_at(model, tower.body)
    paths = tower.layers or _LAYER_PATHS
    for path in paths:
        layers = module_at(body, path) if body is not None else None
        if isinstance(layers, nn.ModuleList) and len(layers):
            return layers
    raise ConfigError(
        f"{family.name} ({type(model).__name__}): no list of blocks at {tower.body}."
        f"{'|'.join(paths)}; use train.trainable=all or projections"
    )


def tower_modules(family: Family, model: nn.Module, side: Side) -> list[nn.Module]:
    """The whole tower and its heads (what ``trainable=all`` opens on that side)."""
    tower = family.tower(side)
    body = module_at(model, tower.body)
    if body is None:
        raise ConfigError(f"{type(model).__name__} has no {tower.body}; cannot choose what trains")
    return [body, *head_modules(family, model, side)]


def unused_modules(family: Family, model: nn.Module, side: Side) -> list[nn.Module]:
    """Parts of the tower that the embeddings never go through (kept frozen)."""
    tower = family.tower(side)
    body = module_at(model, tower.body)
    found = (module_at(body, p) for p in tower.unused) if body is not None else ()
    return [m for m in found if m is not None]


def after_modules(family: Family, model: nn.Module, side: Side) -> list[nn.Module]:
    """What runs after the tower's blocks (final norms, pooling heads) that exists."""
    tower = family.tower(side)
    body = module_at(model, tower.body)
    found = (module_at(body, p) for p in tower.after) if body is not None else ()
    return [m for m in found if m is not None]


def head_modules(family: Family, model: nn.Module, side: Side) -> list[nn.Module]:
    """The tower's projection(s) into the joint space that exist (may be empty)."""
    return [m for p in family.tower(side).heads if (m := module_at(model, p)) is not None]
