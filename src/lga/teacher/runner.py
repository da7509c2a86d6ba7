"""The describe loop: which (image, prompt) items to ask, asking them, committing the answers.

Images are taken from one split in img_id order (``limit``: the first N, so a larger N extends a
smaller run), then sharded by ``img_id % N``. Items already ``done`` in the store under the same
key are skipped; every chunk of answers the teacher yields is committed in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from threading import Lock
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from lga.data.dataset import GroupDataset
from lga.errors import ConfigError
from lga.store import DONE, FAILED, DescriptionStore, Row, dataset_key, parse_keywords
from lga.teacher.base import Outcome, Teacher, WorkItem
from lga.teacher.prompts import Format, Prompt
from lga.teacher.visual import Box, VisualPrompt, apply_visual_prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): the images with ``img_id % count == index``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """Parse ``i/N`` (0 <= i < N).

    Raises:
        ConfigError: not of that form.
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 0 <= int(m[1]) < int(m[2]):
        raise ConfigError(f"bad shard {text!r}; expected i/N with 0 <= i < N, e.g. 0/4")
    return Shard(int(m[1]), int(m[2]))


def select_images(
    ds: GroupDataset, *, split: str = "train", limit: int | None = None, shard: Shard | None = None
) -> GroupDataset:
    """The images a run covers: ``split``, then its first ``limit`` by img_id, then ``shard``."""
    sub = ds.split(split)
    order = sub.table["img_id"].to_numpy().argsort(kind="stable")
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit must be positive, got {limit}")
        order = order[:limit]
    sub = sub.select(order)
    if shard is not None:
        sub = sub.select(sub.table["img_id"].to_numpy() % shard.count == shard.index)
    return sub


def settings_key(teacher_settings: dict[str, Any], visual_prompt: VisualPrompt) -> tuple[str, dict]:
    """The generation-settings hash of the store key, and what it stands for."""
    settings = {"teacher": teacher_settings, "visual_prompt": visual_prompt.value}
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12], settings


def check_boxes(ds: GroupDataset, boxes: dict[int, Box] | None) -> None:
    """Refuse a circle-prompt run when an image has no object box.

    Raises:
        ConfigError: naming how many images lack one and the first few img_ids.
    """
    lacking = [int(i) for i in ds.img_ids if int(i) not in (boxes or {})]
    if lacking:
        raise ConfigError(
            f"the circle visual prompt needs a box for every image; "
            f"{len(lacking)} have none (img_id {lacking[:5]}...)"
        )


class ImageSource:
    """Loads an image by img_id with its visual prompt drawn; keeps the last few (thread-safe).

    Items are ordered image by image, so the prompts of one image hit the cache. Threads asking
    for the same image at once wait for one load and get the same object (a server teacher then
    encodes it once for all its prompts).
    """

    def __init__(
        self,
        ds: GroupDataset,
        visual: VisualPrompt,
        boxes: dict[int, Box] | None = None,
        *,
        cache: int = 32,
    ):
        self._pos = {int(i): p for p, i in enumerate(ds.img_ids)}
        self.ds, self.visual, self.boxes = ds, visual, boxes or {}
        self._cache: OrderedDict[int, Image.Image] = OrderedDict()
        self._size, self._lock = cache, Lock()
        self._loading: dict[int, Lock] = {}  # img_id -> held while one thread loads it
        if visual is VisualPrompt.CIRCLE:
            check_boxes(ds, self.boxes)

    def _cached(self, img_id: int) -> Image.Image | None:
        with self._lock:
            if img_id in self._cache:
                self._cache.move_to_end(img_id)
                return self._cache[img_id]
        return None

    def __call__(self, img_id: int) -> Image.Image:
        image = self._cached(img_id)
        if image is not None:
            return image
        with self._lock:
            gate = self._loading.setdefault(img_id, Lock())
        with gate:
            image = self._cached(img_id)  # loaded by the thread that held the gate
            if image is not None:
                return image
            try:
                image = apply_visual_prompt(
                    self.ds.load_image(self._pos[img_id]), self.visual, self.boxes.get(img_id)
                )
                with self._lock:
                    self._cache[img_id] = image
                    while len(self._cache) > self._size:
                        self._cache.popitem(last=False)
            finally:
                with self._lock:
                    self._loading.pop(img_id, None)
        return image

    def loader(self, img_id: int):
        return lambda: self(img_id)


@dataclass
class DescribeSummary:
    """What a describe run did."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    todo: int = 0
    elapsed_s: float = 0.0

    def line(self) -> str:
        rate = self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        left = self.todo - self.done - self.failed
        tail = f", {left} not reached (interrupted)" if left > 0 else ""
        return (
            f"{self.done} done, {self.failed} failed, {self.skipped} skipped (already done)"
            f"{tail} in {self.elapsed_s:.1f}s ({rate:.1f} items/s)"
        )


def _row(key: dict[str, str], item: WorkItem, out: Outcome) -> Row:
    keywords = (
        parse_keywords(out.text)
        if out.ok and Format(item.prompt.format) is Format.KEYWORDS
        else None
    )
    return Row(
        **key,
        img_id=item.img_id,
        prompt=item.prompt.name,
        prompt_hash=item.prompt.hash,
        status=DONE if out.ok else FAILED,
        text=out.text if out.ok else None,
        keywords=keywords,
        error=out.error,
        latency_s=out.latency_s,
        attempts=out.attempts,
    )


def describe(
    ds: GroupDataset,
    teacher: Teacher,
    store: DescriptionStore,
    prompts: Sequence[Prompt],
    *,
    visual_prompt: VisualPrompt = VisualPrompt.NONE,
    boxes: dict[int, Box] | None = None,
    progress: bool = True,
) -> DescribeSummary:
    """Ask ``teacher`` every prompt about every image of ``ds`` not yet done in ``store``.

    Args:
        ds: the images (see :func:`select_images`).
        teacher: the backend.
        store: where answers go, committed chunk by chunk as the teacher yields them.
        prompts: the rendered prompts.
        visual_prompt: drawn on each image before the teacher sees it (part of the store key).
        boxes: object boxes by img_id (needed by the circle prompt).
        progress: show a progress bar (items/s, ETA).

    Returns:
        Counts of done, failed and skipped items; a run cut short by an exception still commits
        what it finished (the exception propagates).
    """
    s_hash, settings = settings_key(teacher.settings, visual_prompt)
    key = {"dataset": dataset_key(ds), "teacher": teacher.id, "settings_hash": s_hash}
    store.register_prompts(prompts)
    store.register_settings(s_hash, settings)
    finished = store.done_keys(key["dataset"], teacher.id, s_hash)
    source = ImageSource(ds, visual_prompt, boxes)
    todo = [
        WorkItem(int(i), p, source.loader(int(i)))
        for i in ds.img_ids
        for p in prompts
        if (int(i), p.name, p.hash) not in finished
    ]
    summary = DescribeSummary(skipped=len(ds) * len(prompts) - len(todo), todo=len(todo))
    log.info(
        "%s: %d image(s) x %d prompt(s): %d to do, %d already done (settings %s)",
        teacher.id,
        len(ds),
        len(prompts),
        len(todo),
        summary.skipped,
        s_hash,
    )
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="item", desc="describe", disable=not progress, smoothing=0.1)
    results = teacher.describe(todo)
    try:
        for chunk in results:
            store.put([_row(key, item, out) for item, out in chunk])
            n_ok = sum(out.ok for _, out in chunk)
            summary.done += n_ok
            summary.failed += len(chunk) - n_ok
            bar.update(len(chunk))
            bar.set_postfix(failed=summary.failed, refresh=False)
    finally:
        close = getattr(results, "close", None)  # a generator: stop its threads now
        if close is not None:
            close()
        bar.close()
        summary.elapsed_s = time.perf_counter() - start
    return summary
