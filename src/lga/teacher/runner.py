"""The describe loop: which (image, prompt) items to ask, asking them, committing the answers.

Images are taken from one split in img_id order (``limit``: the first N, so a larger N extends a
smaller run), then sharded by ``img_id % N``. Items already ``done`` in the store under the same
key are skipped; every chunk of answers the teacher yields is committed in one transaction.

Several processes may describe into one store at once: each item is claimed in the store (a
lease, renewed while the run lives) just before the teacher gets it, so the processes share the
work instead of each asking everything. Items another live process holds are left to it.

A run stops early, keeping what it stored, when the teacher cannot go on (bad credentials, no
server) or after ``max_consecutive_failures`` failed items in a row: a broken setup should not
fill a store with failures.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from lga.data.dataset import GroupDataset
from lga.errors import ConfigError, LgaError
from lga.store.core import (
    DONE,
    FAILED,
    ClaimState,
    DescriptionStore,
    LeaseRenewer,
    Row,
    claim_owner,
    dataset_key,
    parse_keywords,
)
from lga.store.keys import settings_key
from lga.teacher.base import Outcome, Teacher, WorkItem
from lga.teacher.config import DEFAULT_CLAIM_LEASE_S, DEFAULT_MAX_CONSECUTIVE_FAILURES
from lga.teacher.prompts import Format, Prompt
from lga.teacher.visual import Box, VisualPrompt, apply_visual_prompt

log = logging.getLogger(__name__)

CLAIM_BATCH = 16  # items claimed per store transaction


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
    """What a describe run did.

    Attributes:
        done: items answered by this run.
        failed: items that failed in this run (their rows say why).
        skipped: items already done (at the start, or by another process meanwhile).
        done_elsewhere: of ``skipped``, those another process finished during this run.
        elsewhere: items left to another process that held them.
        todo: items not done when the run started.
        truncated: answers cut to the teacher's length cap.
        failures: failed items by kind (``"HTTP 503"``, ``"connection refused"``...).
        teacher, settings_hash: the store variant the answers went to (what a fit reads them by:
            ``descriptions.teacher``, ``descriptions.settings_hash``).
    """

    done: int = 0
    failed: int = 0
    skipped: int = 0
    elsewhere: int = 0
    todo: int = 0
    truncated: int = 0
    elapsed_s: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)
    done_elsewhere: int = 0
    teacher: str | None = None
    settings_hash: str | None = None

    def line(self) -> str:
        rate = self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        left = self.todo - self.done - self.failed - self.elsewhere - self.done_elsewhere
        parts = [f"{self.done} done", f"{self.failed} failed"]
        parts.append(f"{self.skipped} skipped (already done)")
        if self.elsewhere:
            parts.append(f"{self.elsewhere} left to another process")
        if self.truncated:
            parts.append(f"{self.truncated} answer(s) cut to the length cap")
        if left > 0:
            parts.append(f"{left} not reached (stopped)")
        return f"{', '.join(parts)} in {self.elapsed_s:.1f}s ({rate:.1f} items/s)"

    def failure_line(self) -> str | None:
        """``"12 failed: 10 connection refused, 2 HTTP 503"``; None when nothing failed."""
        if not self.failed:
            return None
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.failures.most_common())
        return f"{self.failed} failed: {kinds}"


class DescribeStopped(LgaError):
    """The run stopped before the end (what it finished is stored); ``summary`` says how far."""

    def __init__(self, message: str, summary: DescribeSummary):
        super().__init__(message)
        self.summary = summary


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
        truncated=out.truncated,
    )


class _Claimed:
    """The items of a run, each claimed in the store just before the teacher takes it.

    Claims are made ``CLAIM_BATCH`` at a time (one transaction); items done meanwhile or held
    by another live process are counted in ``summary`` and not handed out.
    """

    def __init__(
        self,
        store: DescriptionStore,
        key: dict[str, str],
        items: Sequence[WorkItem],
        summary: DescribeSummary,
        *,
        owner: str,
        lease_s: float,
        on_skip: Callable[[], object],
    ):
        self.store, self.key, self.items, self.summary = store, key, items, summary
        self.owner, self.lease_s, self.on_skip = owner, lease_s, on_skip

    def __iter__(self) -> Iterator[WorkItem]:
        for start in range(0, len(self.items), CLAIM_BATCH):
            block = self.items[start : start + CLAIM_BATCH]
            states = self.store.claim(
                [(it.img_id, it.prompt.name, it.prompt.hash) for it in block],
                **self.key,
                owner=self.owner,
                lease_s=self.lease_s,
            )
            for item, state in zip(block, states, strict=True):
                if state is ClaimState.CLAIMED:
                    yield item
                    continue
                if state is ClaimState.DONE:
                    self.summary.skipped += 1
                    self.summary.done_elsewhere += 1
                else:
                    self.summary.elsewhere += 1
                self.on_skip()


def describe(
    ds: GroupDataset,
    teacher: Teacher,
    store: DescriptionStore,
    prompts: Sequence[Prompt],
    *,
    visual_prompt: VisualPrompt = VisualPrompt.NONE,
    boxes: dict[int, Box] | None = None,
    progress: bool = True,
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES,
    claim_lease_s: float = DEFAULT_CLAIM_LEASE_S,
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
        max_consecutive_failures: stop after this many failed items in a row.
        claim_lease_s: how long a claim on an item outlives this process if it dies (renewed
            every third of it while the run lives).

    Returns:
        Counts of done, failed (by kind) and skipped items.

    Raises:
        DescribeStopped: the run stopped early (the teacher cannot go on, or too many failures
            in a row); its ``summary`` counts what was done, which is stored.
    """
    if max_consecutive_failures < 1 or claim_lease_s <= 0:
        raise ConfigError("max_consecutive_failures must be >= 1 and the claim lease > 0 s")
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
    summary = DescribeSummary(
        skipped=len(ds) * len(prompts) - len(todo),
        todo=len(todo),
        teacher=teacher.id,
        settings_hash=s_hash,
    )
    log.info(
        "%s: %d image(s) x %d prompt(s): %d to do, %d already done (settings %s)",
        teacher.id,
        len(ds),
        len(prompts),
        len(todo),
        summary.skipped,
        s_hash,
    )
    if not todo:
        return summary
    owner = claim_owner()
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="item", desc="describe", disable=not progress, smoothing=0.1)
    items = _Claimed(
        store, key, todo, summary, owner=owner, lease_s=claim_lease_s, on_skip=lambda: bar.update()
    )
    results = teacher.describe(items)
    try:
        with LeaseRenewer(store.path, owner, claim_lease_s):
            _collect(results, store, key, owner, summary, bar, max_consecutive_failures)
    except DescribeStopped:
        raise
    except LgaError as e:  # the teacher cannot go on (credentials, no server)
        raise DescribeStopped(str(e), summary) from e
    finally:
        close = getattr(results, "close", None)  # a generator: stop its threads now
        if close is not None:
            close()
        store.release(owner)  # items claimed but not answered are free for others at once
        bar.close()
        summary.elapsed_s = time.perf_counter() - start
    return summary


def _collect(
    results: Iterator[list[tuple[WorkItem, Outcome]]],
    store: DescriptionStore,
    key: dict[str, str],
    owner: str,
    summary: DescribeSummary,
    bar: Any,
    max_consecutive_failures: int,
) -> None:
    """Commit the teacher's answers as they come; stop after too many failures in a row."""
    in_a_row = 0
    for chunk in results:
        store.put([_row(key, item, out) for item, out in chunk], release=owner)
        for _, out in chunk:
            if out.ok:
                summary.done += 1
                summary.truncated += out.truncated
                in_a_row = 0
            else:
                summary.failed += 1
                summary.failures[out.failure] += 1
                in_a_row += 1
        bar.update(len(chunk))
        bar.set_postfix(failed=summary.failed, refresh=False)
        if in_a_row >= max_consecutive_failures:
            last = next(out for _, out in reversed(chunk) if not out.ok)
            raise DescribeStopped(
                f"stopped after {in_a_row} failed items in a row (last: {last.error}); "
                f"the {summary.done} answer(s) of this run are stored: fix the cause and rerun",
                summary,
            )
