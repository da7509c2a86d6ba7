"""Alignment diagnostics: how close image embeddings sit to the class prompts and descriptions.

Per group, the mean cosine between each image's embedding and
- the prompts of its own class and of the other class(es) (the zero-shot classifier's weights);
- its own object description and its own background description from the teacher (when a
  description store is given),
for the pre-trained student and for each fine-tuned one. Fine-tuning that works should raise the
object and own-class cosines and lower the background cosine, most of all in the minority groups.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lga.data.dataset import GroupDataset
from lga.errors import LgaError
from lga.student.features import image_features
from lga.student.model import Student, class_text_features
from lga.teacher.prompts import BACKGROUND_DESCRIPTION, OBJECT_DESCRIPTION

log = logging.getLogger(__name__)

OWN_CLASS, OTHER_CLASS = "class prompt (own class)", "class prompt (other class)"
OBJECT, BACKGROUND = "its object description", "its background description"
MARGIN = "margin: cos(own class prompt) − cos(other class prompt)"
TARGETS = (MARGIN, OWN_CLASS, OTHER_CLASS, OBJECT, BACKGROUND)
# The figure leaves out the other-class panel: the margin and the own-class panel carry it.
PLOTTED = (MARGIN, OWN_CLASS, OBJECT, BACKGROUND)
ALIGNMENT_COLUMNS = ["model", "group", "target", "mean_cos", "std_cos", "n"]


@dataclass
class AlignmentSample:
    """The images the diagnostics are computed on.

    Attributes:
        ds: the images (a few per group).
        source: where they come from, for captions (``"test split"``, ...).
        descriptions: per target (``OBJECT``, ``BACKGROUND``), ``{img_id: text}``; empty when
            no description store is given.
    """

    ds: GroupDataset
    source: str
    descriptions: dict[str, dict[int, str]] = field(default_factory=dict)


def per_group_sample(ds: GroupDataset, per_group: int, *, seed: int = 0) -> GroupDataset:
    """Up to ``per_group`` rows of each group, drawn with a fixed seed (deterministic)."""
    rng = np.random.default_rng(seed)
    groups = ds.group
    picks = [
        rng.permutation(np.flatnonzero(groups == g))[:per_group] for g in range(ds.config.n_groups)
    ]
    return ds.select(np.sort(np.concatenate(picks)).astype(np.int64))


def read_object_and_background(
    store_path: str | Path,
    ds: GroupDataset,
    *,
    object_prompt: str = OBJECT_DESCRIPTION,
    background_prompt: str = BACKGROUND_DESCRIPTION,
    teacher: str | None = None,
) -> dict[str, dict[int, str]]:
    """The teacher's object and background descriptions of the images of ``ds``.

    Raises:
        LgaError: the store is missing or ambiguous (several teachers: pass ``teacher``).
    """
    from lga.store.core import DescriptionStore, dataset_key

    ids = ds.img_ids.tolist()
    with DescriptionStore(store_path, read_only=True) as store:
        key = dataset_key(ds)
        return {
            target: store.texts(prompt, ids, dataset=key, teacher=teacher)
            for target, prompt in ((OBJECT, object_prompt), (BACKGROUND, background_prompt))
        }


def build_sample(
    full: GroupDataset,
    *,
    split: str = "test",
    per_group: int = 100,
    store: str | Path | None = None,
    teacher: str | None = None,
    seed: int = 0,
) -> AlignmentSample:
    """Pick the diagnostic images and read their descriptions.

    Teachers usually describe training images only; when ``store`` has no description for the
    images of ``split``, the sample is drawn from the described images instead (said in
    ``source``).
    """
    ds = full.split(split)
    if store is None:
        return AlignmentSample(per_group_sample(ds, per_group, seed=seed), f"{split} split")
    desc = read_object_and_background(store, ds, teacher=teacher)
    source = f"{split} split"
    if not any(desc.values()):
        log.warning("the store describes no %s image; using the described images instead", split)
        ds, source = full, "described images"
        desc = read_object_and_background(store, ds, teacher=teacher)
    described = set(desc[OBJECT]) & set(desc[BACKGROUND])
    if not described:
        raise LgaError(f"{store} holds no object and background descriptions of {full.root}")
    ds = ds.select(np.isin(ds.img_ids, sorted(described)))
    sample = per_group_sample(ds, per_group, seed=seed)
    keep = set(sample.img_ids.tolist())
    desc = {t: {i: s for i, s in d.items() if i in keep} for t, d in desc.items()}
    return AlignmentSample(sample, source, desc)


def _group_rows(
    model: str, target: str, cos: np.ndarray, groups: np.ndarray, names: Sequence[str]
) -> list[dict]:
    rows = []
    for g, name in enumerate(names):
        x = cos[groups == g]
        x = x[~np.isnan(x)]
        if len(x):
            rows.append(
                {
                    "model": model,
                    "group": name,
                    "target": target,
                    "mean_cos": float(x.mean()),
                    "std_cos": float(x.std()),
                    "n": len(x),
                }
            )
    return rows


@torch.no_grad()
def alignment(
    label: str,
    student: Student,
    sample: AlignmentSample,
    *,
    templates: Sequence[str],
    batch_size: int = 64,
) -> pd.DataFrame:
    """Mean cosines per group of one student (``ALIGNMENT_COLUMNS``, one row per group x target)."""
    ds = sample.ds
    feats = image_features(student, ds, batch_size=batch_size, num_workers=0, progress=False)
    cls = class_text_features(student, ds.config.classes, templates).cpu()  # (C, D)
    sims = (feats @ cls.T).numpy()  # (N, C)
    y = ds.y
    own = sims[np.arange(len(y)), y]
    other = (sims.sum(axis=1) - own) / max(1, sims.shape[1] - 1)
    names = ds.config.group_names()
    rows = _group_rows(label, MARGIN, own - other, ds.group, names)
    rows += _group_rows(label, OWN_CLASS, own, ds.group, names)
    rows += _group_rows(label, OTHER_CLASS, other, ds.group, names)
    for target, texts in sample.descriptions.items():
        ids = [i for i in ds.img_ids.tolist() if i in texts]
        emb = student.encode_texts([texts[i] for i in ids], batch_size=batch_size)
        cos = np.full(len(ds), np.nan)
        pos = {i: k for k, i in enumerate(ds.img_ids.tolist())}
        cos[[pos[i] for i in ids]] = (feats[[pos[i] for i in ids]] * emb).sum(-1).numpy()
        rows += _group_rows(label, target, cos, ds.group, names)
    return pd.DataFrame.from_records(rows, columns=ALIGNMENT_COLUMNS)


def alignment_frame(
    students: Sequence[tuple[str, Student]],
    sample: AlignmentSample,
    *,
    templates: Sequence[str],
    batch_size: int = 64,
) -> pd.DataFrame:
    """``alignment`` of several students (pre-trained first), stacked."""
    frames = [
        alignment(label, s, sample, templates=templates, batch_size=batch_size)
        for label, s in students
    ]
    return pd.concat(frames, ignore_index=True)


def alignment_pivot(df: pd.DataFrame) -> pd.DataFrame:
    """For reading: rows (group, target), columns = models (in order of appearance), 3 decimals."""
    models = list(dict.fromkeys(df["model"]))
    targets = [t for t in TARGETS if t in set(df["target"])]
    groups = list(dict.fromkeys(df["group"]))
    wide = df.pivot_table(index=["group", "target"], columns="model", values="mean_cos", sort=False)
    index = pd.MultiIndex.from_product([groups, targets], names=["group", "target"])
    return wide.reindex(index=index, columns=models).round(3)
