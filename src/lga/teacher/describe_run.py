"""One describe run: the images, the prompts, the teacher and the store, built in one place.

``lga describe``, :func:`lga.describe` and ``lga reproduce`` each build their run with
:func:`build_describe_run` and start it with :meth:`DescribeRun.run`, so that a dataset is read,
its prompts resolved and its images chosen the same way whichever of them asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lga.data.dataset import GroupDataset, load_dataset
from lga.data.dataset_config import load_dataset_config
from lga.errors import ConfigError
from lga.teacher.base import Teacher
from lga.teacher.build import build_teacher
from lga.teacher.config import (
    DEFAULT_CLAIM_LEASE_S,
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    TeacherConfig,
)
from lga.teacher.prompts import Prompt, resolve_prompts
from lga.teacher.runner import (
    DescribeSummary,
    Shard,
    check_boxes,
    describe,
    parse_shard,
    select_images,
)
from lga.teacher.visual import Box, VisualPrompt


@dataclass(frozen=True)
class DescribeRun:
    """Everything one describe run asks and where it writes (see :func:`build_describe_run`).

    Attributes:
        teacher: the teacher's config (built when the run starts).
        store: the description store file (created when missing).
        data_root: the dataset folder.
        images: the images to describe.
        prompts: the rendered prompts asked about each image.
        shard: the shard of the split these images are, if any.
        visual_prompt, boxes: what is drawn on each image (boxes for the circle).
        progress: a progress bar.
        max_consecutive_failures: failed items in a row that stop the run.
        claim_lease_s: seconds after which a dead run's claims are taken over.
    """

    teacher: TeacherConfig
    store: Path
    data_root: Path
    images: GroupDataset = field(compare=False, repr=False)
    prompts: tuple[Prompt, ...]
    shard: Shard | None = None
    visual_prompt: VisualPrompt = VisualPrompt.NONE
    boxes: dict[int, Box] | None = field(default=None, compare=False, repr=False)
    progress: bool = True
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES
    claim_lease_s: float = DEFAULT_CLAIM_LEASE_S

    def run(self, announce: Callable[[Teacher], None] | None = None) -> DescribeSummary:
        """Build the teacher, describe the images into the store, close the teacher.

        Args:
            announce: called with the built teacher before the first request (a CLI line).

        Raises:
            DescribeStopped: the run stopped early; what was done is stored.
        """
        from lga.store.core import DescriptionStore

        teacher = build_teacher(self.teacher, data_root=self.data_root)
        try:
            if announce is not None:
                announce(teacher)
            with DescriptionStore(self.store) as store:
                return describe(
                    self.images,
                    teacher,
                    store,
                    list(self.prompts),
                    visual_prompt=self.visual_prompt,
                    boxes=self.boxes,
                    progress=self.progress,
                    max_consecutive_failures=self.max_consecutive_failures,
                    claim_lease_s=self.claim_lease_s,
                )
        finally:
            teacher.close()


def build_describe_run(
    data: str | Path,
    teacher: TeacherConfig,
    store: str | Path,
    *,
    split: str = "train",
    dataset_config: str | Path | None = None,
    prompts: str | Path | None = None,
    only_prompts: Sequence[str] | None = None,
    limit: int | None = None,
    shard: Shard | str | None = None,
    img_ids: Iterable[int] | None = None,
    skip_bad_rows: bool = False,
    visual_prompt: VisualPrompt | str = VisualPrompt.NONE,
    boxes: str | Path | None = None,
    progress: bool = True,
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES,
    claim_lease_s: float = DEFAULT_CLAIM_LEASE_S,
) -> DescribeRun:
    """The describe run of a dataset folder, checked before any teacher is loaded.

    Args:
        data: the dataset folder.
        teacher: the teacher's config (its spec must be set).
        store: the description store file.
        split: ``train``, ``val``, ``test`` or ``all``.
        dataset_config: a shipped name or YAML file; None: ``DATA/dataset.yaml``, else waterbirds.
        prompts: a prompt set name or YAML file; None: the dataset's.
        only_prompts: ask only these prompts of the set (in this order).
        limit: only the split's first ``limit`` images by img_id.
        shard: only the images with ``img_id % N == i`` (a :class:`Shard` or ``"i/N"``).
        img_ids: only these images (``lga reproduce``: the union of its training samples).
        skip_bad_rows: leave out faulty metadata rows rather than refuse the dataset.
        visual_prompt: ``none``, ``grid`` or ``circle``.
        boxes: a CSV ``img_id,x0,y0,x1,y1`` of object boxes (circle); None: a synthetic
            dataset's own.
        progress, max_consecutive_failures, claim_lease_s: see :class:`DescribeRun`.

    Raises:
        ConfigError: no teacher spec, a bad shard, prompt set, visual prompt or missing boxes.
        DataError: the dataset cannot be read.
    """
    if teacher.spec is None:
        raise ConfigError("no teacher named: give its spec (hf:..., openai:URL#MODEL or oracle)")
    shard = parse_shard(shard) if isinstance(shard, str) else shard
    try:
        visual = VisualPrompt(visual_prompt)
    except ValueError:
        choices = ", ".join(v.value for v in VisualPrompt)
        raise ConfigError(f"visual prompt {visual_prompt!r}: choose {choices}") from None
    ds_config = load_dataset_config(dataset_config, data)
    rendered = resolve_prompts(
        ds_config, prompts, only=list(only_prompts) if only_prompts else None
    )
    # Images are decoded by the teacher; a bad one becomes a failed row, not a refused run.
    ds = load_dataset(
        data, ds_config, splits=[split], check_images=False, skip_bad_rows=skip_bad_rows
    )
    ds = select_images(ds, split=split, limit=limit, shard=shard)
    if img_ids is not None:
        ds = ds.select(ds.table["img_id"].isin(set(img_ids)).to_numpy())
    box_map = None
    if visual is VisualPrompt.CIRCLE:
        box_map = _boxes(data, boxes)
        check_boxes(ds, box_map)  # before loading a model
    return DescribeRun(
        teacher=teacher,
        store=Path(store),
        data_root=Path(data),
        images=ds,
        prompts=tuple(rendered),
        shard=shard,
        visual_prompt=visual,
        boxes=box_map,
        progress=progress,
        max_consecutive_failures=max_consecutive_failures,
        claim_lease_s=claim_lease_s,
    )


def _boxes(data: str | Path, boxes: str | Path | None) -> dict[int, Box]:
    from lga.data.attributes import attributes_path
    from lga.teacher.oracle import load_attribute_boxes
    from lga.teacher.visual import load_boxes

    if boxes is not None:
        return load_boxes(boxes)
    if attributes_path(data).is_file():
        return load_attribute_boxes(data)
    raise ConfigError(
        "--visual-prompt circle needs object boxes: give --boxes FILE "
        "(CSV img_id,x0,y0,x1,y1 in pixels)"
    )
