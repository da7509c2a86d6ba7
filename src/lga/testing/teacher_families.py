"""Tiny random teacher checkpoints of every supported family, built offline.

One builder per family (LLaVA 1.5, LLaVA-NeXT, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
Idefics3, SmolVLM, Gemma 3, PaliGemma, InternVL): a tiny config of the family's own model class,
a word-level tokenizer (:mod:`lga.offline.tokenizers`) holding the family's special tokens, the
family's image processor, and a chat template shaped like the released one (the same special
tokens at the same places: Gemma 3's and Idefics3's start with the BOS token, LLaVA's does not;
the ChatML families' tokenizers have no BOS token at all, as Qwen2's).
Everything goes through ``save_pretrained``, so ``AutoProcessor`` and
``AutoModelForImageTextToText`` load the folder as they load the hub checkpoint.

:data:`TINY_TEACHERS` is the table the shared tester suite runs over: a new family is one entry.
Families whose processor holds a video processor cannot build it without torchvision (the
transformers installed here refuses the processor then); their builder writes the processor's
parts (tokenizer, image processor, ``processor_config.json``, chat template) one by one, so the
folder has the hub's layout either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lga.offline.tiny_llava import DEFAULT_CORPUS, build_tiny_llava
from lga.offline.tokenizers import SpecialTokens, build_word_tokenizer

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
TEXT = dict(TINY, num_key_value_heads=2, max_position_embeddings=1024)
VISION = dict(TINY, image_size=32, patch_size=8)  # (32 / 8)^2 = 16 patches

# ChatML (Qwen, InternVL, LLaVA-OneVision): no BOS; <|im_start|>role\n...<|im_end|>\n.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ IMAGE }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Gemma 3: {{ bos_token }}<start_of_turn>user\n<start_of_image>text<end_of_turn>\n...
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<start_of_image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

# Idefics3 / SmolVLM: <|begin_of_text|>User:<image>text<end_of_utterance>\nAssistant:
IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)

# LLaVA-NeXT (mistral-7b style): [INST] <image>\ntext [/INST]; the tokenizer adds BOS.
LLAVA_NEXT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}[INST] "
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %} [/INST]"
    "{% endif %}{% endfor %}"
)


def _corpus(*extra: str) -> tuple[str, ...]:
    return (*DEFAULT_CORPUS, "model system user assistant inst answer en caption", *extra)


def _tokens(bos: str, eos: str, pad: str, unk: str, extra: tuple[str, ...], **kw) -> SpecialTokens:
    order = tuple(dict.fromkeys((unk, bos, eos, pad, *extra)))
    return SpecialTokens(
        bos=bos,
        eos=eos,
        unk=unk,
        pad=pad,
        order=order,
        append_eos=False,
        extra=extra,
        padding_side="left",
        **kw,
    )


def _named_tokenizer(specials: SpecialTokens, **named: str):
    """A word-level tokenizer whose special tokens are also attributes (``tok.boi_token``)."""
    from transformers import PreTrainedTokenizerFast

    words = build_word_tokenizer(_corpus(), max_length=1024, specials=specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=words._tokenizer,
        bos_token=specials.bos,
        eos_token=specials.eos,
        pad_token=specials.pad,
        unk_token=specials.unk,
        padding_side="left",
        model_max_length=1024,
        extra_special_tokens=named,
    )


def _without_bos(tok):
    """The tokenizer with no BOS token, as Qwen2's (Qwen-VL, LLaVA-OneVision, InternVL): a
    ChatML prompt starts at its first ``<|im_start|>``; ``<|endoftext|>`` is only the padding."""
    from tokenizers import processors

    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="$A", pair="$A $B", special_tokens=[]
    )
    tok.bos_token = None
    return tok


def _ids(tok, *tokens: str) -> list[int]:
    return [tok.convert_tokens_to_ids(t) for t in tokens]


def _save(out: Path, model, processor) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _save_parts(
    out: Path,
    model,
    processor_class: str,
    tokenizer,
    image_processor,
    template: str,
    processor_kwargs: dict[str, Any] | None = None,
    video_processor: dict[str, Any] | None = None,
) -> Path:
    """The hub's processor layout written part by part (no processor object needed)."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    (out / "chat_template.jinja").write_text(template)
    config = {"processor_class": processor_class, **(processor_kwargs or {})}
    (out / "processor_config.json").write_text(json.dumps(config, indent=2))
    if video_processor is not None:
        (out / "video_preprocessor_config.json").write_text(json.dumps(video_processor, indent=2))
    return out


def _generation_ids(model, tok, eos: str) -> None:
    gc = model.generation_config
    gc.pad_token_id = tok.pad_token_id
    gc.eos_token_id = tok.convert_tokens_to_ids(eos)
    gc.bos_token_id = tok.bos_token_id


def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


# -- LLaVA family ------------------------------------------------------------------------------


def build_llava(out: Path, seed: int = 0) -> Path:
    return build_tiny_llava(out, seed=seed)


def build_llava_next(out: Path, seed: int = 0) -> Path:
    import transformers as tf

    tok = build_word_tokenizer(
        _corpus(),
        max_length=1024,
        specials=_tokens("<s>", "</s>", "<pad>", "<unk>", ("<image>",)),
    )
    bos, eos, pad, image = _ids(tok, "<s>", "</s>", "<pad>", "<image>")
    pinpoints = [[32, 32], [32, 64], [64, 32]]
    config = tf.LlavaNextConfig(
        vision_config=tf.CLIPVisionConfig(**VISION, projection_dim=32),
        text_config=tf.LlamaConfig(
            **TEXT, vocab_size=len(tok), bos_token_id=bos, eos_token_id=eos, pad_token_id=pad
        ),
        image_token_index=image,
        image_grid_pinpoints=pinpoints,
        image_seq_length=16,
    )
    _seeded(seed)
    model = tf.LlavaNextForConditionalGeneration(config)
    _generation_ids(model, tok, "</s>")
    ip = tf.LlavaNextImageProcessorPil(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=pinpoints,
    )
    processor = tf.LlavaNextProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_NEXT_TEMPLATE,
    )
    return _save(out, model, processor)


def build_llava_onevision(out: Path, seed: int = 0) -> Path:
    import transformers as tf

    extra = ("<|im_start|>", "<|im_end|>", "<image>", "<video>")
    tok = _without_bos(
        build_word_tokenizer(
            _corpus(),
            max_length=1024,
            specials=_tokens("<|endoftext|>", "<|im_end|>", "<|endoftext|>", "<unk>", extra),
        )
    )
    eos, pad, image, video = _ids(tok, "<|im_end|>", "<|endoftext|>", "<image>", "<video>")
    pinpoints = [[32, 32], [32, 64], [64, 32]]
    config = tf.LlavaOnevisionConfig(
        vision_config=tf.SiglipVisionConfig(**VISION),
        text_config=tf.Qwen2Config(**TEXT, vocab_size=len(tok), eos_token_id=eos, pad_token_id=pad),
        image_token_index=image,
        video_token_index=video,
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )
    _seeded(seed)
    model = tf.LlavaOnevisionForConditionalGeneration(config)
    _generation_ids(model, tok, "<|im_end|>")
    ip = tf.LlavaOnevisionImageProcessorPil(
        size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints
    )
    return _save_parts(
        out,
        model,
        "LlavaOnevisionProcessor",
        tok,
        ip,
        CHATML_TEMPLATE.replace("{{ IMAGE }}", "<image>\n"),
        {"num_image_tokens": 16, "vision_feature_select_strategy": "full"},
        {
            "video_processor_type": "LlavaOnevisionVideoProcessor",
            "size": {"height": 32, "width": 32},
        },
    )


# -- Qwen-VL family ----------------------------------------------------------------------------

_QWEN_EXTRA = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def _qwen_tokenizer():
    return _without_bos(
        build_word_tokenizer(
            _corpus(),
            max_length=1024,
            specials=_tokens("<|endoftext|>", "<|im_end|>", "<|endoftext|>", "<unk>", _QWEN_EXTRA),
        )
    )


def _qwen_vl(out: Path, seed: int, kind: str) -> Path:
    import transformers as tf

    tok = _qwen_tokenizer()
    eos, pad, vstart, vend, image, video = _ids(
        tok,
        "<|im_end|>",
        "<|endoftext|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    )
    ids = dict(
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=vstart,
        vision_end_token_id=vend,
    )
    text = dict(
        TEXT,
        vocab_size=len(tok),
        bos_token_id=None,  # Qwen has no BOS token
        eos_token_id=eos,
        pad_token_id=pad,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
    )
    head = dict(
        depth=2,
        hidden_size=32,
        num_heads=2,
        patch_size=8,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    if kind == "qwen2_vl":
        config = tf.Qwen2VLConfig(
            text_config=text, vision_config=dict(head, embed_dim=32, mlp_ratio=2), **ids
        )
        cls, proc, ip_cls = tf.Qwen2VLForConditionalGeneration, "Qwen2VLProcessor", "Qwen2VL"
    elif kind == "qwen2_5_vl":
        vision = dict(
            head,
            intermediate_size=64,
            out_hidden_size=32,
            window_size=32,
            fullatt_block_indexes=[1],
        )
        config = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
        cls, proc, ip_cls = tf.Qwen2_5_VLForConditionalGeneration, "Qwen2_5_VLProcessor", "Qwen2VL"
    else:
        text["head_dim"] = 16
        text["rope_parameters"] = {
            "rope_type": "default",
            "mrope_section": [2, 3, 3],
            "mrope_interleaved": True,
            "rope_theta": 10000.0,
        }
        vision = dict(
            head,
            intermediate_size=64,
            out_hidden_size=32,
            num_position_embeddings=16,
            deepstack_visual_indexes=[1],
        )
        config = tf.Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
        cls, proc, ip_cls = tf.Qwen3VLForConditionalGeneration, "Qwen3VLProcessor", "Qwen2VL"
    _seeded(seed)
    model = cls(config)
    _generation_ids(model, tok, "<|im_end|>")
    pixels = dict(
        min_pixels=32 * 32, max_pixels=64 * 64, patch_size=8, merge_size=2, temporal_patch_size=2
    )
    ip = getattr(tf, f"{ip_cls}ImageProcessorPil")(**pixels)
    video = {"video_processor_type": f"{ip_cls}VideoProcessor", **pixels}
    return _save_parts(
        out, model, proc, tok, ip, CHATML_TEMPLATE.replace("{{ IMAGE }}", _QWEN_IMAGE), None, video
    )


def build_qwen2_vl(out: Path, seed: int = 0) -> Path:
    return _qwen_vl(out, seed, "qwen2_vl")


def build_qwen2_5_vl(out: Path, seed: int = 0) -> Path:
    return _qwen_vl(out, seed, "qwen2_5_vl")


def build_qwen3_vl(out: Path, seed: int = 0) -> Path:
    return _qwen_vl(out, seed, "qwen3_vl")


# -- Idefics3 / SmolVLM ------------------------------------------------------------------------

# Images are split into tiles, as released: an image longer than 32 px is cut into 32 px tiles
# (<row_i_col_j> each) before its global view, so the images of a batch have different counts.
_IDEFICS_TILES = tuple(f"<row_{r}_col_{c}>" for r in (1, 2) for c in (1, 2))
_IDEFICS_EXTRA = (
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *_IDEFICS_TILES,
)


def _idefics_parts(seed: int, smol: bool):
    import transformers as tf

    tok = build_word_tokenizer(
        _corpus(),
        max_length=1024,
        specials=_tokens(
            "<|begin_of_text|>", "<end_of_utterance>", "<|finetune_pad|>", "<unk>", _IDEFICS_EXTRA
        ),
    )
    bos, eos, pad, image = _ids(
        tok, "<|begin_of_text|>", "<end_of_utterance>", "<|finetune_pad|>", "<image>"
    )
    text = tf.LlamaConfig(
        **TEXT, vocab_size=len(tok), bos_token_id=bos, eos_token_id=eos, pad_token_id=pad
    )
    ip_kw = dict(
        do_image_splitting=True, size={"longest_edge": 64}, max_image_size={"longest_edge": 32}
    )
    if smol:
        config = tf.SmolVLMConfig(
            vision_config=tf.SmolVLMVisionConfig(**VISION),
            text_config=text,
            image_token_id=image,
            scale_factor=2,
        )
        cls, ip = tf.SmolVLMForConditionalGeneration, tf.SmolVLMImageProcessorPil(**ip_kw)
    else:
        config = tf.Idefics3Config(
            vision_config=tf.Idefics3VisionConfig(**VISION),
            text_config=text,
            image_token_id=image,
            scale_factor=2,
        )
        cls, ip = tf.Idefics3ForConditionalGeneration, tf.Idefics3ImageProcessorPil(**ip_kw)
    _seeded(seed)
    model = cls(config)
    _generation_ids(model, tok, "<end_of_utterance>")
    return tok, ip, model


def build_idefics3(out: Path, seed: int = 0) -> Path:
    import transformers as tf

    tok, ip, model = _idefics_parts(seed, smol=False)
    # image_seq_len = (32 / 8)^2 / scale_factor^2 = 4
    processor = tf.Idefics3Processor(
        image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=IDEFICS3_TEMPLATE
    )
    return _save(out, model, processor)


def build_smolvlm(out: Path, seed: int = 0) -> Path:
    tok, ip, model = _idefics_parts(seed, smol=True)
    video = {"video_processor_type": "SmolVLMVideoProcessor", "size": {"longest_edge": 32}}
    return _save_parts(
        out, model, "SmolVLMProcessor", tok, ip, IDEFICS3_TEMPLATE, {"image_seq_len": 4}, video
    )


# -- Gemma 3 / PaliGemma -----------------------------------------------------------------------

_GEMMA3_EXTRA = (
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)


def build_gemma3(out: Path, seed: int = 0) -> Path:
    import transformers as tf

    # Gemma 3's tokenizer names its image tokens (tokenizer.boi_token, .image_token...).
    tok = _named_tokenizer(
        _tokens("<bos>", "<eos>", "<pad>", "<unk>", _GEMMA3_EXTRA),
        boi_token="<start_of_image>",
        eoi_token="<end_of_image>",
        image_token="<image_soft_token>",
    )
    bos, eos, pad, boi, eoi, image, eot = _ids(
        tok,
        "<bos>",
        "<eos>",
        "<pad>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
        "<end_of_turn>",
    )
    text = tf.Gemma3TextConfig(
        **TEXT,
        vocab_size=len(tok),
        head_dim=16,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        sliding_window=64,
        query_pre_attn_scalar=16,
    )
    config = tf.Gemma3Config(
        text_config=text,
        vision_config=tf.SiglipVisionConfig(**VISION),
        mm_tokens_per_image=4,
        boi_token_index=boi,
        eoi_token_index=eoi,
        image_token_index=image,
    )
    _seeded(seed)
    model = tf.Gemma3ForConditionalGeneration(config)
    _generation_ids(model, tok, "<end_of_turn>")
    ip = tf.Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    processor = tf.Gemma3Processor(
        image_processor=ip, tokenizer=tok, image_seq_length=4, chat_template=GEMMA3_TEMPLATE
    )
    return _save(out, model, processor)


def build_paligemma(out: Path, seed: int = 0) -> Path:
    """A base PaliGemma: no chat template, as released (``<image>`` + prompt + ``\\n``)."""
    import transformers as tf

    tok = build_word_tokenizer(
        _corpus(),
        max_length=1024,
        specials=_tokens("<bos>", "<eos>", "<pad>", "<unk>", ("<image>",)),
    )
    ip = tf.SiglipImageProcessorPil(size={"height": 32, "width": 32})
    ip.image_seq_length = 16
    processor = tf.PaliGemmaProcessor(image_processor=ip, tokenizer=tok)  # adds <loc>/<seg>
    tok = processor.tokenizer
    bos, eos, pad, image = _ids(tok, "<bos>", "<eos>", "<pad>", "<image>")
    text = tf.GemmaConfig(
        **TEXT,
        vocab_size=len(tok),
        head_dim=16,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    config = tf.PaliGemmaConfig(
        text_config=text,
        vision_config=tf.SiglipVisionConfig(**VISION, projection_dim=32),
        image_token_index=image,
        projection_dim=32,
        hidden_size=32,
        vocab_size=len(tok),
    )
    _seeded(seed)
    model = tf.PaliGemmaForConditionalGeneration(config)
    _generation_ids(model, tok, "<eos>")
    return _save(out, model, processor)


# -- InternVL ----------------------------------------------------------------------------------

_INTERNVL_EXTRA = ("<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>")


def build_internvl(out: Path, seed: int = 0) -> Path:
    import transformers as tf

    # InternVL's tokenizer names its image tokens (tokenizer.context_image_token...).
    tok = _without_bos(
        _named_tokenizer(
            _tokens("<|endoftext|>", "<|im_end|>", "<|endoftext|>", "<unk>", _INTERNVL_EXTRA),
            start_image_token="<img>",
            end_image_token="</img>",
            context_image_token="<IMG_CONTEXT>",
            video_token="<video>",
        )
    )
    eos, pad, image = _ids(tok, "<|im_end|>", "<|endoftext|>", "<IMG_CONTEXT>")
    config = tf.InternVLConfig(
        vision_config=tf.InternVLVisionConfig(
            **dict(VISION, image_size=[32, 32], patch_size=[8, 8])
        ),
        text_config=tf.Qwen2Config(**TEXT, vocab_size=len(tok), eos_token_id=eos, pad_token_id=pad),
        image_token_id=image,
        downsample_ratio=0.5,
    )
    _seeded(seed)
    model = tf.InternVLForConditionalGeneration(config)
    _generation_ids(model, tok, "<|im_end|>")
    ip = tf.GotOcr2ImageProcessorPil(
        size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1, max_patches=4
    )
    video = {"video_processor_type": "InternVLVideoProcessor", "size": {"height": 32, "width": 32}}
    return _save_parts(
        out,
        model,
        "InternVLProcessor",
        tok,
        ip,
        CHATML_TEMPLATE.replace("{{ IMAGE }}", "<IMG_CONTEXT>\n"),
        {"image_seq_length": 4},
        video,
    )


# -- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TinyTeacher:
    """One family of the shared teacher tester suite.

    Attributes:
        model_type: the checkpoint's ``config.model_type`` (the key of
            :data:`lga.teacher.families.FAMILIES`).
        build: ``build(out_dir)`` saves the checkpoint and returns its folder.
        needs: Python modules its processor needs beyond lga's own dependencies.
    """

    model_type: str
    build: Callable[[Path], Path]
    needs: tuple[str, ...] = ()


TINY_TEACHERS: dict[str, TinyTeacher] = {
    t.model_type: t
    for t in (
        TinyTeacher("llava", build_llava),
        TinyTeacher("llava_next", build_llava_next),
        TinyTeacher("llava_onevision", build_llava_onevision, ("torchvision",)),
        TinyTeacher("qwen2_vl", build_qwen2_vl, ("torchvision",)),
        TinyTeacher("qwen2_5_vl", build_qwen2_5_vl, ("torchvision",)),
        TinyTeacher("qwen3_vl", build_qwen3_vl, ("torchvision",)),
        TinyTeacher("idefics3", build_idefics3),
        TinyTeacher("smolvlm", build_smolvlm, ("torchvision", "num2words")),
        TinyTeacher("gemma3", build_gemma3),
        TinyTeacher("paligemma", build_paligemma),
        TinyTeacher("internvl", build_internvl, ("torchvision",)),
    )
}
