"""A tiny random LLaVA checkpoint built offline, loadable like ``llava-hf/llava-1.5-7b-hf``.

A small ``LlavaConfig`` (tiny CLIP vision tower + tiny Llama text model), a word-level tokenizer
(:mod:`lga.offline.tokenizers`: Llama's special tokens and ``<image>``), and a ``LlavaProcessor``
carrying the llava-1.5 chat template; both go through ``save_pretrained`` so
``AutoProcessor.from_pretrained`` and ``LlavaForConditionalGeneration.from_pretrained`` load them
as they load the hub checkpoint.
The model's answers are random words: good enough to exercise the real generation path.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lga.offline.tokenizers import LLAVA_TOKENS, build_word_tokenizer

BOS, EOS, UNK, PAD = LLAVA_TOKENS.bos, LLAVA_TOKENS.eos, LLAVA_TOKENS.unk, LLAVA_TOKENS.pad
IMAGE = LLAVA_TOKENS.extra[0]

# The chat template of llava-hf/llava-1.5-7b-hf: "USER: <image>\n{text} ASSISTANT:".
LLAVA_15_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

DEFAULT_CORPUS = (
    "user assistant : identify the bird in the image and describe distinguishing features",
    "of the bird . ignore the background , be concise . what is the common name ?",
    "give keywords to identify and describe physical traits of the waterbird or landbird class",
    "it belongs to . describe the background in the image , ignore the bird . keywords describing",
    "gull duck heron cormorant sparrow finch woodpecker warbler webbed clawed feet long short neck",
    "flat hooked bill white grey brown plumage lake ocean forest grass water land trees sky",
)


def build_tiny_llava(
    out_dir: str | Path,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    layers: int = 2,
    corpus: Iterable[str] = DEFAULT_CORPUS,
    seed: int = 0,
) -> Path:
    """Save a random ``LlavaForConditionalGeneration`` + ``LlavaProcessor`` into ``out_dir``.

    Args:
        out_dir: the checkpoint folder (created).
        image_size: side of the square image the vision tower sees.
        patch_size: vision patch side; ``(image_size // patch_size) ** 2`` image tokens.
        hidden_size: width of both towers.
        layers: depth of both towers.
        corpus: text the word-level tokenizer is trained on (its vocabulary).
        seed: torch seed of the random weights.

    Returns:
        ``out_dir`` as a Path.
    """
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = build_word_tokenizer(corpus, max_length=512, specials=LLAVA_TOKENS)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (BOS, EOS, PAD, IMAGE)}
    heads = max(1, hidden_size // 16)
    vision = CLIPVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        projection_dim=hidden_size,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
    )
    n_image_tokens = (image_size // patch_size) ** 2  # CLS dropped ("default" strategy)
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids[IMAGE],
        image_seq_length=n_image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        pad_token_id=ids[PAD],
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = ids[PAD]
    model.generation_config.eos_token_id = ids[EOS]
    model.generation_config.bos_token_id = ids[BOS]
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_15_CHAT_TEMPLATE,
    )
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
