"""Training data: the descriptions of the sample, their tokens, and a reproducible batch order.

A batch is ``(pixels, rows (b,))``: pixels are the image processor's tensors (``(b, ...)`` each),
rows index the training sample, and every per-image tensor (label, description tokens) is
gathered from tables built once, with batched indexing instead of per-item Python work. Texts
are de-duplicated and tokenised once (:class:`TextTable`); when the text tower is frozen their
embeddings are computed once too.

Batch order (:class:`GlobalBatchSampler`): each epoch draws one permutation of the sample from
``(seed, epoch)`` alone; global batch k is ``perm[k*G:(k+1)*G]``, cut into ``accum`` micro-batches,
each cut into one contiguous slice per process. One process or several therefore see the same
global batches, and a resumed run continues the very order it was killed in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import torch
import yaml
from torch import Tensor
from torch.utils.data import Sampler

from lga.data.dataset import GroupDataset
from lga.errors import ConfigError, LgaError
from lga.student.features import Pixels, memo_pixels, pixels_len, pixels_nbytes, pixels_rows
from lga.train.config import DescriptionsConfig

log = logging.getLogger(__name__)

CAPTION = "caption"  # per-image text source: the class caption "a photo of a {class}."
CLASS_PROMPTS = "class_prompts"  # spurious_aware.text: each image's class, its template ensemble


# ---------------------------------------------------------------------------------------------
# Descriptions from the store


def _missing_error(
    store_path,
    prompt: str,
    missing: list[int],
    n: int,
    full: GroupDataset,
    key: str,
    cfg: DescriptionsConfig,
) -> LgaError:
    teacher = cfg.teacher or "<SPEC: hf:llava-hf/llava-1.5-7b-hf, openai:URL#MODEL or oracle>"
    shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
    return LgaError(
        f"{len(missing)} of {n} training images of the sample have no {prompt!r} answer in the "
        f"description store {store_path} (dataset {key}"
        f"{', teacher ' + cfg.teacher if cfg.teacher else ''}); img_ids: {shown}.\n"
        f"Fill them (finished answers are kept, only the missing ones are asked) with:\n"
        f"  lga describe --data {full.root} --teacher {teacher} --store {store_path} --split train"
    )


def read_descriptions(
    cfg: DescriptionsConfig, full: GroupDataset, sample: GroupDataset, prompts: Sequence[str]
) -> dict[str, dict[int, str]]:
    """Answers to ``prompts`` for the images of ``sample``: ``{prompt: {img_id: text}}``.

    Raises:
        LgaError: no store is configured, or some image of the sample has no finished answer
            (the message says how many, which prompt, which store and the command that fills it).
    """
    prompts = [p for p in dict.fromkeys(prompts) if p != CAPTION]
    if not prompts:
        return {}
    if cfg.store is None:
        raise LgaError(f"prompts {prompts} need a description store (--descriptions STORE)")
    from lga.store.core import DescriptionStore, dataset_key

    key = dataset_key(full)
    ids = sample.img_ids.tolist()
    filters = dict(dataset=key, teacher=cfg.teacher, settings_hash=cfg.settings_hash)
    out = {}
    with DescriptionStore(cfg.store, read_only=True) as store:
        for prompt in prompts:
            try:
                texts = store.texts(prompt, ids, **filters)
            except LgaError as e:
                raise LgaError(
                    f"{e}\n(choose with descriptions.teacher=... or descriptions.settings_hash=...)"
                ) from e
            missing = [i for i in ids if i not in texts]
            if missing:
                raise _missing_error(cfg.store, prompt, missing, len(ids), full, key, cfg)
            out[prompt] = texts
    return out


def read_keywords(
    cfg: DescriptionsConfig, full: GroupDataset, sample: GroupDataset, prompt: str
) -> dict[int, list[str]]:
    """Parsed keyword answers of ``prompt`` for the sample (all must be present)."""
    read_descriptions(cfg, full, sample, [prompt])  # the coverage check and its error
    from lga.store.core import DescriptionStore, dataset_key

    with DescriptionStore(cfg.store, read_only=True) as store:
        return store.keywords(
            prompt,
            sample.img_ids.tolist(),
            dataset=dataset_key(full),
            teacher=cfg.teacher,
            settings_hash=cfg.settings_hash,
        )


# Colours name plumage as often as places ("brown and green plumage"): never a background word.
COLOUR_WORDS = frozenset(
    "green blue white brown grey gray black yellow red orange olive dark light pale".split()
)


def strip_background(text: str, background_keywords: Sequence[str]) -> str:
    """``text`` without the parts that describe the background, as the teacher itself named it.

    A part is a sentence of a description, or an item of a keyword answer (when ``text`` has no
    sentence end but commas); it is dropped when it holds a word of the image's own background
    keywords (colours excepted). The first part is always kept: it names the object. A teacher
    that lets the background leak into its object answer ("It is flying over a swimming pool")
    then leaves the object alone.
    """
    import re

    words = {w for kw in background_keywords for w in re.findall(r"[a-z]+", kw.lower())}
    words -= COLOUR_WORDS
    if not words:
        return text
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    sep = " "
    if len(sentences) == 1 and "," in text:
        sentences, sep = [p.strip() for p in text.split(",")], ", "
    kept = [sentences[0]] + [
        s for s in sentences[1:] if not set(re.findall(r"[a-z]+", s.lower())) & words
    ]
    return sep.join(kept)


def keyword_prompts(keywords: dict[int, list[str]], k: int) -> list[str]:
    """The ``k`` most frequent keywords (ties by first appearance) as "a photo of {kw}." prompts."""
    counts: dict[str, int] = {}
    for img_id in sorted(keywords):
        for kw in keywords[img_id]:
            counts[kw] = counts.get(kw, 0) + 1
    top = sorted(counts, key=lambda w: -counts[w])[:k]
    if not top:
        raise LgaError("the background keywords of the sample are all empty")
    return [f"a photo of {w}." for w in top]


@cache
def _imagenet_templates() -> tuple[str, ...]:
    path = resources.files("lga") / "configs" / "templates" / "imagenet80.yaml"
    return tuple(yaml.safe_load(path.read_text())["templates"])


def imagenet_templates() -> list[str]:
    """CLIP's 80 ImageNet prompt templates (``lga/configs/templates/imagenet80.yaml``)."""
    return list(_imagenet_templates())


def group_weights(groups: np.ndarray) -> np.ndarray:
    """Per-image sampling weights ``1 / count(group)``: every group present is drawn equally
    often (WILDS' ``uniform_over_groups``)."""
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


# ---------------------------------------------------------------------------------------------
# Texts, tokenised once


@dataclass
class TextTable:
    """Every text the training needs, de-duplicated and tokenised once.

    Attributes:
        texts: the unique texts.
        input_ids: ``(T, L)`` token ids, right-padded as the student's family pads (to the
            longest text, or to a fixed length).
        attention_mask: ``(T, L)``.
        per_image: source name -> ``(N,)`` index into ``texts`` of each sample row's text.
        class_index: ``(C, K)`` index of each class's K prompt templates.
        spurious_index: ``(S,)`` index of the spurious-attribute prompts (may be empty).
        fixed_length: the texts are padded to a fixed length that the model was trained on
            (SigLIP): :meth:`tokens` keeps it instead of trimming to the longest.
    """

    texts: list[str]
    input_ids: Tensor
    attention_mask: Tensor
    per_image: dict[str, Tensor]
    class_index: Tensor
    spurious_index: Tensor
    fixed_length: bool = False

    def tokens(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(ids, mask)`` of the texts ``index`` (M,), trimmed to their longest: (M, L')
        (kept at (M, L) with ``fixed_length``)."""
        mask = self.attention_mask[index]  # (M, L)
        if self.fixed_length:
            return self.input_ids[index], mask
        length = int(mask.sum(dim=1).max()) if len(index) else 1
        return self.input_ids[index, :length], mask[:, :length]


def build_text_table(
    tokenize,
    sample: GroupDataset,
    *,
    per_image: dict[str, dict[int, str]],
    class_prompts: list[list[str]],
    spurious: list[str],
    max_length: int | None = None,
    fixed_length: bool = False,
) -> TextTable:
    """De-duplicate and tokenise the texts of the sample, the class prompts and spurious prompts.

    Args:
        tokenize: ``Student.tokenize`` (texts -> ``{"input_ids", "attention_mask"}``, padded).
        sample: the training sample (row order = ``rows`` of the batches).
        per_image: source name -> ``{img_id: text}`` covering the sample.
        class_prompts: ``[[prompt per template] per class]``.
        spurious: spurious-attribute prompts.
        max_length: the text tower's token limit (to report truncated texts).
        fixed_length: ``tokenize`` pads to a fixed length the model needs (SigLIP).
    """
    uniq: dict[str, int] = {}

    def index(texts: Sequence[str]) -> Tensor:
        return torch.tensor([uniq.setdefault(t, len(uniq)) for t in texts], dtype=torch.long)

    ids = sample.img_ids.tolist()
    rows = {name: index([texts[i] for i in ids]) for name, texts in per_image.items()}
    class_index = index([p for per_class in class_prompts for p in per_class])
    class_index = class_index.view(len(class_prompts), -1)  # (C, K)
    spurious_index = index(spurious)
    texts = list(uniq)
    tok = tokenize(texts)
    ids_t, mask = tok["input_ids"], tok["attention_mask"]
    n_full = int((mask.sum(dim=1) >= max_length).sum()) if max_length else 0
    if fixed_length:  # every text fills the length: count those whose last token is not padding
        n_full = int(mask[:, -1].sum())
    if n_full:
        log.warning(
            "%d of %d texts fill the text tower's %d tokens: longer ones are truncated",
            n_full,
            len(texts),
            max_length,
        )
    return TextTable(texts, ids_t, mask, rows, class_index, spurious_index, fixed_length)


def caption_texts(sample: GroupDataset, template: str) -> dict[int, str]:
    """``{img_id: template.format(class name)}``: per-image texts without descriptions."""
    names = sample.config.classes
    pairs = zip(sample.img_ids.tolist(), sample.y.tolist(), strict=True)
    return {i: template.format(names[y]) for i, y in pairs}


# ---------------------------------------------------------------------------------------------
# Batch order


class GlobalBatchSampler(Sampler[list[int]]):
    """Per-process micro-batches of a seeded per-epoch permutation (see the module docstring).

    Args:
        n: sample size.
        global_batch: images per optimizer step, over all processes and accumulation steps.
        accum: gradient accumulation steps.
        world: number of processes.
        rank: this process.
        seed: data-order seed.
        weights: optional per-image sampling weights: each epoch then draws n images with
            replacement, with probability proportional to them (``sample.balance``).

    Raises:
        ConfigError: ``global_batch`` is not divisible by ``accum * world``, or larger than ``n``.
    """

    def __init__(
        self,
        n: int,
        *,
        global_batch: int,
        accum: int,
        world: int,
        rank: int,
        seed: int,
        weights: np.ndarray | None = None,
    ):
        if global_batch % (accum * world):
            raise ConfigError(
                f"train.batch_size={global_batch} must be divisible by gradient accumulation "
                f"steps x processes = {accum} x {world}"
            )
        if global_batch > n:
            raise ConfigError(
                f"train.batch_size={global_batch} is larger than the training sample ({n} images)"
            )
        self.n, self.global_batch, self.accum = n, global_batch, accum
        self.p = None if weights is None else np.asarray(weights, float) / np.sum(weights)
        self.rank, self.seed = rank, seed
        self.micro = global_batch // accum  # images per micro-step, all processes
        self.per_process = self.micro // world
        self.steps_per_epoch = n // global_batch  # the last partial batch is dropped
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Iterate epoch ``epoch`` from its optimizer step ``start_step`` (for resuming)."""
        self.epoch, self.start_step = epoch, start_step

    def permutation(self, epoch: int) -> np.ndarray:
        """The epoch's order: a permutation, or with ``weights`` n draws with replacement."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.p is None:
            return rng.permutation(self.n)
        return rng.choice(self.n, size=self.n, replace=True, p=self.p)

    def __iter__(self) -> Iterator[list[int]]:
        perm = self.permutation(self.epoch)
        for step in range(self.start_step, self.steps_per_epoch):
            for m in range(self.accum):
                lo = step * self.global_batch + m * self.micro + self.rank * self.per_process
                yield perm[lo : lo + self.per_process].tolist()

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum


# ---------------------------------------------------------------------------------------------
# Pixels, preprocessed once


class CachedPixels:
    """Every image of a dataset, preprocessed once and kept in memory.

    There is no random augmentation, so an epoch only needs the same pixels in another order:
    decoding and resizing them again (the slow part of a CLIP input pipeline) is wasted work.

    Attributes:
        pixels: :data:`~lga.student.features.Pixels` ``(N, ...)``: ``pixel_values``
            (N, 3, H, W) float32 and whatever else the image processor makes (SigLIP 2's
            attention masks and spatial shapes); row i = row i of the dataset.
    """

    def __init__(self, pixels: Pixels):
        self.pixels = pixels

    @classmethod
    def build(
        cls, ds: GroupDataset, image_processor, *, batch_size: int, num_workers: int
    ) -> CachedPixels:
        """Decode and preprocess ``ds`` in a DataLoader (workers in parallel), in row order.

        Through the in-process pixel memo: the next run on the same images decodes nothing.
        """
        pixels = memo_pixels(ds, image_processor, batch_size=batch_size, num_workers=num_workers)
        log.info(
            "cached %d preprocessed images (%.0f MB)",
            pixels_len(pixels),
            pixels_nbytes(pixels) / 2**20,
        )
        return cls(pixels)

    def batches(self, sampler: Sampler[list[int]]) -> Iterator[tuple[Pixels, Tensor]]:
        """``(pixels (b, ...), rows (b,))`` for each batch of row indices of ``sampler``."""
        for rows in sampler:
            index = torch.as_tensor(rows, dtype=torch.long)
            yield pixels_rows(self.pixels, index), index

    def chunks(self, size: int) -> Iterator[Pixels]:
        """Consecutive ``(<= size, ...)`` slices, in row order."""
        for i in range(0, pixels_len(self.pixels), size):
            yield pixels_rows(self.pixels, slice(i, i + size))
