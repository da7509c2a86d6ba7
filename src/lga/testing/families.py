"""One tiny random checkpoint per dual-encoder family, built offline, loadable like the hub's.

Each builder writes a model (two towers of a few layers, hidden size 32, 32 px images) and its
processor with ``save_pretrained``, so ``AutoModel`` / ``AutoProcessor`` load it through the
very path that loads ``google/siglip-base-patch16-224`` or ``kakaobrain/align-base``. The
tokenizers are trained here on a small corpus with ``tokenizers`` (or ``sentencepiece``, for the
checkpoint that ships only ``spiece.model``), with each family's special tokens and framing.

:data:`STUDENT_FAMILIES` is the table the shared tester suite
(``tests/test_student_families.py``) runs over: a new family is one entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from lga.testing.clip import DEFAULT_CORPUS

# The words of the fit tests' descriptions and prompts, besides the CLIP corpus.
CORPUS = (
    *DEFAULT_CORPUS,
    "the bird is a sparrow with clawed feet and a short neck . a finch with a short bill .",
    "a warbler with clawed feet . a gull with webbed feet and a long neck . a duck , a heron .",
    "the background is a forest with trees . grass and trees . a lake . the ocean and sky .",
)

_SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def corpus_words(corpus: Iterable[str]) -> list[str]:
    """The distinct lower-cased words and punctuation marks of ``corpus``, in first-seen order."""
    words = (w for text in corpus for w in re.findall(r"\w+|[^\w\s]", text.lower()))
    return list(dict.fromkeys(words))


def _chars(corpus: Iterable[str]) -> list[str]:
    return sorted({c for text in corpus for c in text.lower() if not c.isspace()})


def _save(out: Path, model, processor) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _seeded(model_cls, config, seed: int):
    import torch

    torch.manual_seed(seed)
    return model_cls(config).eval()


# ---------------------------------------------------------------------------------------------
# Tokenizers


def siglip_fast_tokenizer(corpus: Iterable[str] = CORPUS, *, max_length: int = 16):
    """SigLIP's framing as a fast tokenizer (``tokenizer.json``): ``text </s>``, padded with
    ``</s>``, lower-cased; no sentencepiece needed."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<unk>", *corpus_words(corpus)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        pad_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def siglip_spiece_tokenizer(workdir: Path, corpus: Iterable[str] = CORPUS, *, max_length: int = 16):
    """A ``SiglipTokenizer`` over a SentencePiece model trained on ``corpus``: what the hub's
    SigLIP checkpoints ship (``spiece.model`` only). Needs the sentencepiece package."""
    import sentencepiece as spm
    from transformers import SiglipTokenizer

    workdir.mkdir(parents=True, exist_ok=True)
    prefix = workdir / "spiece"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(corpus) * 4),
        model_prefix=str(prefix),
        vocab_size=120,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return SiglipTokenizer(vocab_file=f"{prefix}.model", model_max_length=max_length)


def siglip2_tokenizer(corpus: Iterable[str] = CORPUS):
    """SigLIP 2's Gemma-style tokenizer (``Siglip2Tokenizer``), its vocabulary the corpus'
    characters (a BPE without merges)."""
    from transformers import Siglip2Tokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    vocab = {t: i for i, t in enumerate([*specials, "▁", *_chars(corpus)])}
    return Siglip2Tokenizer(vocab=vocab, merges=[])


def bert_tokenizer(corpus: Iterable[str] = CORPUS):
    """A lower-casing WordPiece ``BertTokenizer`` of the corpus' words (ALIGN, ChineseCLIP)."""
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate([*specials, *corpus_words(corpus)])}
    return BertTokenizer(vocab=vocab)


def xlm_roberta_tokenizer(corpus: Iterable[str] = CORPUS):
    """A Unigram ``XLMRobertaTokenizer`` of the corpus' words and characters (AltCLIP):
    ``<s>`` 0, ``<pad>`` 1 (so positions start at 2), ``</s>`` 2, ``<unk>`` 3."""
    from transformers import XLMRobertaTokenizer

    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("<mask>", 0.0)]
    words = [(f"▁{w}", -1.0) for w in corpus_words(corpus)]
    chars = [(c, -5.0) for c in ["▁", *_chars(corpus)]]
    return XLMRobertaTokenizer(vocab=[*specials, *words, *chars])


# ---------------------------------------------------------------------------------------------
# Checkpoints


def build_clip_student(out: Path, *, seed: int = 0) -> Path:
    """CLIP (the tests' tiny CLIP)."""
    from lga.testing.tiny_clip import build_tiny_clip

    return build_tiny_clip(out, corpus=CORPUS, seed=seed)


def _siglip_configs(text_len: int) -> tuple[dict, dict]:
    text = dict(vocab_size=256, max_position_embeddings=text_len, **_SMALL)
    vision = dict(image_size=32, patch_size=8, **_SMALL)
    return text, vision


def build_siglip_student(
    out: Path, *, seed: int = 0, spiece: bool = False, gemma: bool = False
) -> Path:
    """SigLIP: texts of 16 tokens, padded to it ("max_length"), sigmoid scores with a bias.

    Args:
        out: the checkpoint folder.
        seed: the weights' seed.
        spiece: ship the tokenizer as ``spiece.model`` only (a ``SiglipTokenizer``, which needs
            sentencepiece to load), as the hub's SigLIP checkpoints do; else a fast tokenizer.
        gemma: SigLIP 2 at a fixed resolution (``google/siglip2-base-patch16-224``): the SigLIP
            model with SigLIP 2's Gemma-style tokenizer (which pads on the left by default).
    """
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    text, vision = _siglip_configs(16)
    if gemma:
        tokenizer = siglip2_tokenizer()
    elif spiece:
        tokenizer = siglip_spiece_tokenizer(Path(out) / ".spiece", max_length=16)
    else:
        tokenizer = siglip_fast_tokenizer(max_length=16)
    text.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    text.update(eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    model = _seeded(SiglipModel, SiglipConfig(text_config=text, vision_config=vision), seed)
    images = SiglipImageProcessor(size={"height": 32, "width": 32})
    _save(Path(out), model, SiglipProcessor(image_processor=images, tokenizer=tokenizer))
    if spiece:
        import shutil

        shutil.rmtree(Path(out) / ".spiece")
        (Path(out) / "tokenizer.json").unlink(missing_ok=True)  # spiece.model only
    return Path(out)


def build_siglip2_student(out: Path, *, seed: int = 0) -> Path:
    """SigLIP 2 NaFlex: images as up to 16 patches of 8 px with ``pixel_attention_mask`` and
    ``spatial_shapes``; texts padded to 16 tokens."""
    from transformers import (
        Siglip2Config,
        Siglip2ImageProcessor,
        Siglip2Model,
        Siglip2Processor,
    )

    tokenizer = siglip2_tokenizer()
    text = dict(vocab_size=len(tokenizer), max_position_embeddings=16, **_SMALL)
    text.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    text.update(bos_token_id=tokenizer.bos_token_id)
    vision = dict(num_patches=16, patch_size=8, **_SMALL)
    model = _seeded(Siglip2Model, Siglip2Config(text_config=text, vision_config=vision), seed)
    images = Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    return _save(Path(out), model, Siglip2Processor(image_processor=images, tokenizer=tokenizer))


def build_align_student(out: Path, *, seed: int = 0) -> Path:
    """ALIGN: a BERT text tower, an EfficientNet image tower, ``temperature``."""
    from transformers import AlignConfig, AlignModel, AlignProcessor, EfficientNetImageProcessor

    tokenizer = bert_tokenizer()
    text = dict(vocab_size=len(tokenizer), max_position_embeddings=64, **_SMALL)
    vision = dict(image_size=32, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=64)
    # The image embedding is the last block's channels (320 * 0.1 = 32): the text projection
    # must map to as many.
    config = AlignConfig(
        text_config=text, vision_config=vision, projection_dim=32, temperature_init_value=0.05
    )
    model = _seeded(AlignModel, config, seed)
    _kaiming_convolutions(model.vision_model)
    images = EfficientNetImageProcessor(
        size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}
    )
    return _save(Path(out), model, AlignProcessor(image_processor=images, tokenizer=tokenizer))


def _kaiming_convolutions(module) -> None:
    """He-initialised convolutions: at a width of a few channels, the default 0.02 normal init
    shrinks the activations by orders of magnitude per block (embeddings of 1e-19)."""
    import torch
    from torch import nn

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")


def build_altclip_student(out: Path, *, seed: int = 0) -> Path:
    """AltCLIP: an XLM-R text tower (positions from ``pad_token_id + 1``: 16 of its 18 usable)."""
    from transformers import AltCLIPConfig, AltCLIPModel, AltCLIPProcessor, CLIPImageProcessor

    tokenizer = xlm_roberta_tokenizer()
    text = dict(vocab_size=len(tokenizer), max_position_embeddings=18, project_dim=16, **_SMALL)
    text.update(pad_token_id=tokenizer.pad_token_id)
    vision = dict(image_size=32, patch_size=8, **_SMALL)
    config = AltCLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    model = _seeded(AltCLIPModel, config, seed)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return _save(Path(out), model, AltCLIPProcessor(image_processor=images, tokenizer=tokenizer))


def build_chinese_clip_student(out: Path, *, seed: int = 0) -> Path:
    """ChineseCLIP: a BERT text tower ([CLS] pooling), a CLIP image tower."""
    from transformers import (
        ChineseCLIPConfig,
        ChineseCLIPImageProcessor,
        ChineseCLIPModel,
        ChineseCLIPProcessor,
    )

    tokenizer = bert_tokenizer()
    text = dict(vocab_size=len(tokenizer), max_position_embeddings=64, **_SMALL)
    vision = dict(image_size=32, patch_size=8, **_SMALL)
    config = ChineseCLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    model = _seeded(ChineseCLIPModel, config, seed)
    images = ChineseCLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = ChineseCLIPProcessor(image_processor=images, tokenizer=tokenizer)
    return _save(Path(out), model, processor)


def build_blip_student(out: Path, *, seed: int = 0) -> Path:
    """BLIP's image-text contrastive model (``BlipModel``): a dual encoder with no entry in the
    family table, so it goes through the generic conventions."""
    from transformers import BlipConfig, BlipImageProcessor, BlipModel, BlipProcessor

    tokenizer = bert_tokenizer()
    text = dict(vocab_size=len(tokenizer), max_position_embeddings=64, **_SMALL)
    text.update(pad_token_id=tokenizer.pad_token_id, encoder_hidden_size=32)
    vision = dict(image_size=32, patch_size=8, **_SMALL)
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=16)
    model = _seeded(BlipModel, config, seed)
    images = BlipImageProcessor(size={"height": 32, "width": 32})
    return _save(Path(out), model, BlipProcessor(image_processor=images, tokenizer=tokenizer))


@dataclass(frozen=True)
class StudentFamilyCase:
    """One entry of the shared student suite.

    Attributes:
        name: the test id.
        build: ``(out, *, seed) -> out``: writes the checkpoint.
        model_type: the ``config.model_type`` it loads as.
        family: the name of its :class:`lga.student.families.Family`.
        sigmoid: its scores and default loss are SigLIP's sigmoid.
        fixed_text_length: texts are padded to this many tokens (None: to the longest).
        max_text_length: the tokens its text tower takes.
        requires: modules it needs beyond lga's dependencies.
    """

    name: str
    build: Callable[..., Path]
    model_type: str
    family: str
    sigmoid: bool = False
    fixed_text_length: int | None = None
    max_text_length: int | None = None
    requires: tuple[str, ...] = ()


STUDENT_FAMILIES: tuple[StudentFamilyCase, ...] = (
    StudentFamilyCase("clip", build_clip_student, "clip", "CLIP", max_text_length=32),
    StudentFamilyCase(
        "siglip", build_siglip_student, "siglip", "SigLIP", True, 16, max_text_length=16
    ),
    StudentFamilyCase(
        "siglip2-fixed-res", partial(build_siglip_student, gemma=True), "siglip", "SigLIP",
        True, 16, 16,
    ),
    StudentFamilyCase(
        "siglip2-naflex", build_siglip2_student, "siglip2", "SigLIP 2", True, 16, 16
    ),
    StudentFamilyCase("align", build_align_student, "align", "ALIGN", max_text_length=64),
    StudentFamilyCase("altclip", build_altclip_student, "altclip", "AltCLIP", max_text_length=16),
    StudentFamilyCase(
        "chinese-clip", build_chinese_clip_student, "chinese_clip", "ChineseCLIP",
        max_text_length=64,
    ),
    StudentFamilyCase(
        "blip-generic", build_blip_student, "blip", "generic dual encoder", max_text_length=64
    ),
)  # fmt: skip
