"""Batched image encoding through a DataLoader, with the on-disk feature cache.

Preprocessed pixels are also kept in memory for the life of the process (:func:`memo_pixels`),
within a byte budget: ``lga reproduce`` and ``lga demo`` evaluate many models on the same test and
validation images and train them on the same samples, and decoding those images again for every
run was a third of the demo's time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from lga.data.dataset import GroupDataset
from lga.data.images import ImageLoadError
from lga.errors import DataError
from lga.student.cache import FeatureCache, default_cache_dir
from lga.student.model import Student

log = logging.getLogger(__name__)


Pixels = dict[str, torch.Tensor]
"""A batch of preprocessed images: every image-processor output, each ``(B, ...)``:
``pixel_values`` (B, 3, H, W), and for SigLIP 2 NaFlex ``pixel_attention_mask`` (B, P) and
``spatial_shapes`` (B, 2), which must travel with the pixels wherever they go."""


def pixels_rows(pixels: Pixels, index: torch.Tensor | slice) -> Pixels:
    """The rows ``index`` of every entry."""
    return {k: v[index] for k, v in pixels.items()}


def pixels_cat(parts: list[Pixels]) -> Pixels:
    """Batches concatenated along the first dimension, entry by entry."""
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def pixels_nbytes(pixels: Pixels) -> int:
    return sum(v.numel() * v.element_size() for v in pixels.values())


def pixels_len(pixels: Pixels) -> int:
    return len(next(iter(pixels.values())))


def process_images(image_processor, images: list) -> Pixels:
    """The image processor's tensors for ``images`` (pixel values and, where it makes them,
    attention masks and spatial shapes)."""
    out = image_processor(images=images, return_tensors="pt")
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


class PixelDataset(Dataset):
    """Rows of a GroupDataset as preprocessed images: item -> (:data:`Pixels` of one image
    without the batch dimension, row index); the default collate stacks them into a batch."""

    def __init__(self, ds: GroupDataset, image_processor, rows: list[int] | None = None):
        self.ds = ds
        self.image_processor = image_processor
        self.rows = list(range(len(ds))) if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> tuple[Pixels, int]:
        i = self.rows[k]
        try:
            image = self.ds.load_image(i)
        except ImageLoadError as e:
            raise DataError(f"{self.ds.image_path(i)} (img_id {self.ds.img_ids[i]}): {e}") from e
        return pixels_rows(process_images(self.image_processor, [image]), 0), i


def pixel_loader(
    ds: GroupDataset,
    image_processor,
    *,
    batch_size: int,
    num_workers: int,
    rows: list[int] | None = None,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader of (:data:`Pixels` (B, ...), row indices (B,))."""
    return DataLoader(
        PixelDataset(ds, image_processor, rows),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        generator=generator,
    )


PIXEL_MEMO_ENV = "LGA_PIXEL_MEMO_MB"  # the memo's budget in MiB (0 switches it off)
DEFAULT_PIXEL_MEMO_MB = 1024
_PIXEL_MEMO: OrderedDict[str, Pixels] = OrderedDict()


def pixel_memo_budget() -> int:
    """The memo's byte budget, from ``$LGA_PIXEL_MEMO_MB`` (default 1024 MiB)."""
    raw = os.environ.get(PIXEL_MEMO_ENV, str(DEFAULT_PIXEL_MEMO_MB))
    try:
        return max(0, int(float(raw) * 2**20))
    except ValueError:
        raise DataError(f"${PIXEL_MEMO_ENV} must be a number of MiB, got {raw!r}") from None


def clear_pixel_memo() -> None:
    _PIXEL_MEMO.clear()


def _memo_key(ds: GroupDataset, image_processor) -> str:
    ids = hashlib.sha256(ds.img_ids.astype("int64").tobytes()).hexdigest()[:16]
    processor = json.dumps(json.loads(image_processor.to_json_string()), sort_keys=True)
    return f"{ds.fingerprint()}|{ids}|{hashlib.sha256(processor.encode()).hexdigest()[:16]}"


def _memo_get(key: str) -> Pixels | None:
    if key in _PIXEL_MEMO:
        _PIXEL_MEMO.move_to_end(key)
    return _PIXEL_MEMO.get(key)


def _memo_put(key: str, pixels: Pixels) -> None:
    """Keep ``pixels`` if they fit the budget, dropping the least recently used entries."""
    budget = pixel_memo_budget()
    if pixels_nbytes(pixels) > budget:
        return
    _PIXEL_MEMO[key] = pixels
    while sum(pixels_nbytes(p) for p in _PIXEL_MEMO.values()) > budget:
        _PIXEL_MEMO.popitem(last=False)


def memo_pixels(
    ds: GroupDataset, image_processor, *, batch_size: int, num_workers: int, progress: bool = False
) -> Pixels:
    """:data:`Pixels` ``(N, ...)`` of every row of ``ds``, decoded once per process.

    Keyed by the dataset (folder and metadata content), its rows and the processor's settings.
    The least recently used entries are dropped beyond the budget; a set larger than the budget
    is decoded and returned without being kept. Callers must not modify the tensor.
    """
    key = _memo_key(ds, image_processor)
    pixels = _memo_get(key)
    if pixels is None:
        loader = pixel_loader(ds, image_processor, batch_size=batch_size, num_workers=num_workers)
        bar = tqdm(loader, desc="decoding images", unit="batch", disable=not progress)
        pixels = pixels_cat([p for p, _ in bar])
        _memo_put(key, pixels)
    return pixels


def _memo_batches(
    ds: GroupDataset, image_processor, *, batch_size: int, num_workers: int
) -> Iterator[tuple[Pixels, torch.Tensor]]:
    """``(pixels, rows)`` batches of every row of ``ds``: from the memo, or streamed from a
    DataLoader and kept afterwards while they fit the budget (a set larger than the budget is
    never held in memory whole)."""
    key = _memo_key(ds, image_processor)
    pixels = _memo_get(key)
    if pixels is not None:
        for rows in torch.arange(len(ds)).split(batch_size):
            yield pixels_rows(pixels, slice(int(rows[0]), int(rows[-1]) + 1)), rows
        return
    budget, size = pixel_memo_budget(), 0
    kept: list[Pixels] | None = []  # None once the set outgrows the budget
    for batch, rows in pixel_loader(
        ds, image_processor, batch_size=batch_size, num_workers=num_workers
    ):
        yield batch, rows
        if kept is not None:
            size += pixels_nbytes(batch)
            if size > budget:
                kept = None
            else:
                kept.append(batch)
    if kept:
        _memo_put(key, pixels_cat(kept))


def cache_key(student: Student, ds: GroupDataset) -> dict:
    return {
        "checkpoint": student.spec,
        "weights": student.fingerprint,
        "dtype": str(student.dtype),
        "dataset": ds.fingerprint(),
        "preprocess": student.preprocess_config(),
    }


@torch.no_grad()
def image_features(
    student: Student,
    ds: GroupDataset,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    cache: FeatureCache | None = None,
    progress: bool = True,
    flush_every_s: float = 60.0,
) -> torch.Tensor:
    """(N, D) normalised image features of every row of ``ds``, computing only what the cache lacks.

    The cache is flushed every ``flush_every_s`` seconds and at the end, so an interrupted run
    keeps what it computed.
    """
    ids = ds.img_ids
    missing = set(cache.missing(ids)) if cache is not None else None
    todo = [i for i, m in enumerate(ids) if missing is None or int(m) in missing]
    if cache is not None:
        log.info("feature cache: %d of %d images cached", len(ds) - len(todo), len(ds))
    computed: dict[int, torch.Tensor] = {}
    if todo:
        if len(todo) == len(ds):  # every row: through the in-process pixel memo
            loader = _memo_batches(
                ds, student.image_processor, batch_size=batch_size, num_workers=num_workers
            )
        else:
            loader = pixel_loader(
                ds,
                student.image_processor,
                batch_size=batch_size,
                num_workers=num_workers,
                rows=todo,
            )
        last = time.monotonic()
        try:
            for pixels, rows in tqdm(
                loader, desc="encoding images", unit="batch", disable=not progress
            ):
                feats = student.image_features(pixels)  # (B, D)
                for r, f in zip(rows.tolist(), feats.cpu(), strict=True):
                    computed[r] = f
                if cache is not None:
                    cache.put(ids[rows.numpy()], feats)
                    if time.monotonic() - last > flush_every_s:
                        cache.flush()
                        last = time.monotonic()
        finally:
            if cache is not None:
                cache.flush()
    if cache is not None:
        return cache.get(ids)
    return torch.stack([computed[i] for i in range(len(ds))])


def feature_cache(
    student: Student, ds: GroupDataset, *, enabled: bool = True, root: str | Path | None = None
) -> FeatureCache | None:
    """The feature cache of ``student`` on ``ds``'s dataset, under ``root`` (default
    ``$LGA_CACHE`` or ``~/.cache/lga``); None when ``enabled`` is false."""
    if not enabled:
        return None
    return FeatureCache(root or default_cache_dir(), cache_key(student, ds))
