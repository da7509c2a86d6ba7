"""A tiny random CLIP checkpoint built offline, loadable like ``openai/clip-vit-base-patch32``.

The ``tiny`` shape of :func:`lga.offline.clip.build_clip`: a word-level tokenizer trained on a
small corpus (:mod:`lga.offline.tokenizers`, CLIP's special tokens) and a ``CLIPProcessor``, both
through ``save_pretrained``, so that ``AutoModel.from_pretrained`` and
``AutoProcessor.from_pretrained`` load them exactly as they load a hub checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lga.offline.clip import DEFAULT_CORPUS, build_clip, tiny_shape
from lga.offline.tokenizers import CLIP_TOKENS, build_word_tokenizer

BOS, EOS, UNK = CLIP_TOKENS.bos, CLIP_TOKENS.eos, CLIP_TOKENS.unk

__all__ = ["BOS", "DEFAULT_CORPUS", "EOS", "UNK", "build_tiny_clip", "build_word_tokenizer"]


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
    shape = tiny_shape(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        layers=layers,
        projection_dim=projection_dim,
        max_length=max_length,
    )
    return build_clip(out_dir, shape, corpus=corpus, seed=seed)


if __name__ == "__main__":  # python -m lga.testing.tiny_clip OUT_DIR
    import sys

    print(build_tiny_clip(sys.argv[1] if len(sys.argv) > 1 else "tiny-clip"))
