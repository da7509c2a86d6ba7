"""Random-weight CLIP checkpoints built offline, loadable like the hub's CLIP checkpoints.

One builder, :func:`build_clip`, for every shape: ``tiny`` (the tests' 32 px model, see
:mod:`lga.testing.tiny_clip`), and the real-size ``vit-b32`` (``CLIPConfig``'s defaults,
openai/clip-vit-base-patch32) and ``vit-l14`` (openai/clip-vit-large-patch14) of the benchmarks.
The tokenizer is a word-level one (:mod:`lga.offline.tokenizers`) with CLIP's special tokens;
the model and a ``CLIPProcessor`` go through ``save_pretrained``, so ``AutoModel`` and
``AutoProcessor`` load them exactly as they load a hub checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lga.offline.bench_data import WORDS
from lga.offline.tokenizers import CLIP_TOKENS, build_word_tokenizer

DEFAULT_CORPUS = (
    "a photo of a landbird . a photo of a waterbird . a photo of the bird . a photo of land .",
    "a photo of water . a photo of a forest . a photo of trees . a photo of a lake . ocean",
    "picture close-up good the bird has webbed feet long neck short neck clawed feet flat bill",
    "a gull duck heron cormorant sparrow finch woodpecker warbler grass forest lake ocean sky",
)


@dataclass(frozen=True)
class ClipShape:
    """The configuration of a random CLIP, its tokenizer and its processor."""

    vision: dict[str, int] = field(default_factory=dict)  # CLIPVisionConfig settings
    text: dict[str, int] = field(default_factory=dict)  # CLIPTextConfig settings
    top: dict[str, int] = field(default_factory=dict)  # CLIPConfig settings (projection_dim)
    max_length: int = 77  # the tokenizer's model_max_length
    image_size: int | None = None  # the processor's resize and crop; None: CLIPImageProcessor's
    corpus: tuple[str, ...] = DEFAULT_CORPUS  # the tokenizer's words
    vocab_from_tokenizer: bool = False  # text vocab_size: the tokenizer's, or the shape's own


def tiny_shape(
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    layers: int = 2,
    projection_dim: int = 16,
    max_length: int = 32,
) -> ClipShape:
    """A small CLIP: both towers ``layers`` x ``hidden_size``, a vocabulary of the corpus' words."""
    common = dict(
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden_size // 16),
    )
    return ClipShape(
        vision=dict(image_size=image_size, patch_size=patch_size, **common),
        text=dict(max_position_embeddings=max_length, **common),
        top=dict(projection_dim=projection_dim),
        max_length=max_length,
        image_size=image_size,
        vocab_from_tokenizer=True,
    )


# The benchmarks' real-size shapes keep the hub model's vocabulary size (49408) and image size
# (224); their tokenizer also knows the words of the benchmark descriptions.
_REAL_CORPUS = (*DEFAULT_CORPUS, " ".join(WORDS))

CLIP_SHAPES: dict[str, ClipShape] = {
    "tiny": tiny_shape(),
    "vit-b32": ClipShape(corpus=_REAL_CORPUS),  # CLIPConfig's defaults
    "vit-l14": ClipShape(
        vision=dict(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
            num_attention_heads=16, patch_size=14,
        ),
        text=dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12
        ),
        top=dict(projection_dim=768),
        corpus=_REAL_CORPUS,
    ),
}  # fmt: skip


def build_clip(
    out_dir: str | Path,
    shape: str | ClipShape = "tiny",
    *,
    depth: int | None = None,
    corpus: Iterable[str] | None = None,
    seed: int = 0,
) -> Path:
    """Save a random ``CLIPModel`` + ``CLIPProcessor`` of ``shape`` into ``out_dir``; return it.

    Args:
        out_dir: the checkpoint folder.
        shape: a name of :data:`CLIP_SHAPES` (``tiny``, ``vit-b32``, ``vit-l14``) or a
            :class:`ClipShape` (:func:`tiny_shape`).
        depth: layers per tower (None: the shape's own); widths, heads, patch, image size and
            vocabulary stay those of the shape.
        corpus: the tokenizer's texts (None: the shape's).
        seed: torch seed of the weights.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    s = CLIP_SHAPES[shape] if isinstance(shape, str) else shape
    tokenizer = build_word_tokenizer(
        s.corpus if corpus is None else corpus, max_length=s.max_length
    )
    bos, eos = (tokenizer.convert_tokens_to_ids(t) for t in (CLIP_TOKENS.bos, CLIP_TOKENS.eos))
    layers = {} if depth is None else {"num_hidden_layers": depth}
    vocab = {"vocab_size": len(tokenizer)} if s.vocab_from_tokenizer else {}
    config = CLIPConfig(
        text_config={
            **vocab,
            **s.text,
            **layers,
            "eos_token_id": eos,
            "bos_token_id": bos,
            "pad_token_id": eos,
        },
        vision_config={**s.vision, **layers},
        **s.top,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    if s.image_size is None:
        image_processor = CLIPImageProcessor()
    else:
        side = s.image_size
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        )
    out = Path(out_dir)
    model.save_pretrained(out)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


def random_clip(workdir: str | Path, *, shape: str = "vit-b32", depth: int | None = None) -> Path:
    """``workdir/clip-<shape>-depth<n>``, built by :func:`build_clip` unless there."""
    out = Path(workdir) / f"clip-{shape}-depth{depth or 'full'}"
    if not (out / "config.json").is_file():
        build_clip(out, shape, depth=depth)
    return out
