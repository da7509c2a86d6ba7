"""The word-level tokenizer of the random checkpoints (CLIP's or Llama's special tokens).

A ``tokenizers`` WordLevel model trained on a small corpus, lower-casing and splitting on
whitespace and punctuation, wrapped in a ``PreTrainedTokenizerFast`` so that ``save_pretrained``
and ``from_pretrained`` treat it as they treat a hub tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers


@dataclass(frozen=True)
class SpecialTokens:
    """The special tokens of a tokenizer family, and how a sequence is framed by them."""

    bos: str
    eos: str
    unk: str
    pad: str
    order: tuple[str, ...]  # the special tokens, first ids first (as the trainer numbers them)
    append_eos: bool  # ``BOS text EOS`` (CLIP) or ``BOS text`` (Llama)
    extra: tuple[str, ...] = ()  # additional special tokens (LLaVA's ``<image>``)
    padding_side: str | None = None  # None: transformers' default (right)


# CLIP: <|startoftext|> text <|endoftext|>, padded with <|endoftext|>.
CLIP_TOKENS = SpecialTokens(
    bos="<|startoftext|>",
    eos="<|endoftext|>",
    unk="<|unk|>",
    pad="<|endoftext|>",
    order=("<|endoftext|>", "<|startoftext|>", "<|unk|>"),
    append_eos=True,
)

# Llama as LLaVA-1.5 uses it: <s> text, padded on the left with <pad>, and the <image> token.
LLAVA_TOKENS = SpecialTokens(
    bos="<s>",
    eos="</s>",
    unk="<unk>",
    pad="<pad>",
    order=("<unk>", "<s>", "</s>", "<pad>", "<image>"),
    append_eos=False,
    extra=("<image>",),
    padding_side="left",
)


def build_word_tokenizer(
    corpus: Iterable[str], *, max_length: int, specials: SpecialTokens = CLIP_TOKENS
):
    """A lower-casing word-level fast tokenizer knowing the words of ``corpus``.

    Args:
        corpus: texts whose words make the vocabulary (after the special tokens).
        max_length: the tokenizer's ``model_max_length``.
        specials: :data:`CLIP_TOKENS` or :data:`LLAVA_TOKENS`.
    """
    from transformers import PreTrainedTokenizerFast

    s = specials
    tok = Tokenizer(models.WordLevel(unk_token=s.unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(list(corpus), trainers.WordLevelTrainer(special_tokens=list(s.order)))
    framed = [s.bos, s.eos] if s.append_eos else [s.bos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{s.bos} $A" + (f" {s.eos}" if s.append_eos else ""),
        special_tokens=[(t, tok.token_to_id(t)) for t in framed],
    )
    options = {}
    if s.extra:
        options["additional_special_tokens"] = list(s.extra)
    if s.padding_side is not None:
        options["padding_side"] = s.padding_side
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=s.bos,
        eos_token=s.eos,
        pad_token=s.pad,
        unk_token=s.unk,
        model_max_length=max_length,
        **options,
    )
