"""A tiny random CLIP checkpoint built offline, loadable like ``openai/clip-vit-base-patch32``.

The tokenizer is a word-level one trained on a small corpus (:mod:`lga.testing.tokenizers`); the
processor is a ``CLIPProcessor``; both go through ``save_pretrained`` so that
``AutoModel.from_pretrained`` and ``AutoProcessor.from_pretrained`` load them exactly as they load
a hub checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lga.testing.tokenizers import CLIP_TOKENS, build_word_tokenizer

BOS, EOS, UNK = CLIP_TOKENS.bos, CLIP_TOKENS.eos, CLIP_TOKENS.unk

__all__ = ["BOS", "DEFAULT_CORPUS", "EOS", "UNK", "build_tiny_clip", "build_word_tokenizer"]

DEFAULT_CORPUS = (
    "a photo of a landbird . a photo of a waterbird . a photo of the bird . a photo of land .",
    "a photo of water . a photo of a forest . a photo of trees . a photo of a lake . ocean",
    "picture close-up good the bird has webbed feet long neck short neck clawed feet flat bill",
    "a gull duck heron cormorant sparrow finch woodpecker warbler grass forest lake ocean sky",
)


def build_tiny_clip(
    out_dir: str | Path,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    layers: int = 2,
    projection_dim: int = 16,
    max_length: int = 32,
    corpus: Iterable[str] = DEFAULT_CORPUS,
    seed: int = 0,
) -> Path:
    """Save a random ``CLIPModel`` + ``CLIPProcessor`` into ``out_dir`` and return it."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = build_word_tokenizer(corpus, max_length=max_length)
    eos = tokenizer.convert_tokens_to_ids(EOS)
    common = dict(
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden_size // 16),
    )
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            max_position_embeddings=max_length,
            eos_token_id=eos,
            bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
            pad_token_id=eos,
            **common,
        ),
        vision_config=dict(image_size=image_size, patch_size=patch_size, **common),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    out = Path(out_dir)
    model.save_pretrained(out)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


if __name__ == "__main__":  # python -m lga.testing.tiny_clip OUT_DIR
    import sys

    print(build_tiny_clip(sys.argv[1] if len(sys.argv) > 1 else "tiny-clip"))
