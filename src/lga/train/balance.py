"""Balanced batches: per-image sampling weights from the dataset's groups or from the groups
read off the teacher's background answers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lga.rundir import RunDir
from lga.train.config import FitConfig, Method
from lga.train.data import group_weights, read_descriptions
from lga.train.rundata import RunData

log = logging.getLogger(__name__)


def batch_balance(cfg: FitConfig) -> str:
    """How the fine-tuning batches are balanced: ``none``, ``background`` (groups read from the
    teacher's background answers) or ``groups`` (the dataset's group labels)."""
    if cfg.method is Method.SPURIOUS_AWARE:
        return {"teacher": "background", "groups": "groups", "none": "none"}[
            cfg.spurious_aware.balance
        ]
    return cfg.sample.balance


def batch_weights(
    cfg: FitConfig,
    data: RunData,
    student,
    out: Path | None,
    read: tuple[str, np.ndarray] | None = None,
) -> np.ndarray | None:
    """Per-image sampling weights of the balanced batches (``batch_balance``), or None.

    What they were read from and the group counts go to the log and ``RUN/balance.json``.
    ``read``: (prompt, places) already read by :func:`teacher_places`, reused when balancing
    reads the same prompt's answers.
    """
    mode = batch_balance(cfg)
    if mode == "none":
        return None
    if mode == "background":
        weights, summary = teacher_groups(cfg, data, student, read)
    else:
        spec = data.full.config
        counts = np.bincount(data.sample.group, minlength=spec.n_groups)
        weights = group_weights(data.sample.group)
        summary = {"group_counts": dict(zip(spec.group_names(), counts.tolist(), strict=True))}
    summary = {"source": "teacher" if mode == "background" else "groups", **summary}
    log.info("balanced batches: %s", summary)
    if out is not None:
        RunDir(out).write_balance(summary)
    return weights


@torch.no_grad()
def teacher_places(cfg: FitConfig, data: RunData, student, prompt: str) -> np.ndarray:
    """(N,) the place each sample image's ``prompt`` answer (a background description) is read
    as: the place whose spurious prompts (the dataset config's, template-averaged) its text
    embedding is nearest to."""
    texts = read_descriptions(cfg.descriptions, data.full, data.sample, [prompt])[prompt]
    ids = data.sample.img_ids.tolist()
    spurious = data.full.config.spurious_texts()  # place name -> prompts
    place_feats = torch.stack(
        [student.encode_texts(spurious[p]).mean(dim=0) for p in data.full.config.places]
    )  # (P, D)
    desc = student.encode_texts([texts[i] for i in ids])  # (N, D)
    return (desc @ F.normalize(place_feats, dim=-1).T).argmax(dim=1).numpy()  # (N,)


def teacher_groups(
    cfg: FitConfig, data: RunData, student, read: tuple[str, np.ndarray] | None = None
) -> tuple[np.ndarray, dict]:
    """Sampling weights 1 / count(class, place read from the teacher's background description).

    Each background description is given a place as :func:`teacher_places` does (``read``:
    that reading, reused where its prompt is the one balancing reads). The inferred group
    counts and how often the inferred place agrees with the dataset's own column (for
    information: it is not used) are returned with the weights.
    """
    prompt = cfg.sample.balance_prompt
    if read is not None and read[0] == prompt:
        inferred = read[1]
    else:
        inferred = teacher_places(cfg, data, student, prompt)
    spec = data.full.config
    groups = spec.group_id(data.sample.y, inferred)
    counts = np.bincount(groups, minlength=spec.n_groups)
    agree = float((inferred == data.sample.place).mean())
    summary = {
        "prompt": prompt,
        "inferred_group_counts": dict(zip(spec.group_names(), counts.tolist(), strict=True)),
        "agreement_with_place_column": round(agree, 4),
    }
    return 1.0 / counts[groups], summary
