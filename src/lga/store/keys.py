"""The store's key: which dataset, and which generation settings, an answer belongs to.

A row is keyed by (dataset, image, prompt, teacher, settings hash). The store owns both halves
built here, so every writer (the teacher's runner, ``lga store import``) computes the same key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["dataset_key", "settings_key"]


def settings_key(teacher_settings: dict[str, Any], visual_prompt: str) -> tuple[str, dict]:
    """The generation-settings hash of the store key, and what it stands for.

    Args:
        teacher_settings: the teacher's generation settings (``Teacher.settings``).
        visual_prompt: what was drawn on the image (``none``, ``grid``, ``circle``; a
            :class:`lga.teacher.visual.VisualPrompt` is one of these strings).
    """
    visual = getattr(visual_prompt, "value", visual_prompt)
    settings = {"teacher": teacher_settings, "visual_prompt": visual}
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12], settings


def dataset_key(dataset: Any) -> str:
    """The store's name for a dataset: ``<config name>@<hash of metadata.csv>``.

    Independent of the folder's location (shards made on other machines merge), but changes
    when the metadata changes, so answers about other images are never reused.

    Args:
        dataset: a :class:`lga.data.GroupDataset` (any split or sample of it).
    """
    from lga.data.dataset import METADATA_FILE

    digest = hashlib.sha256((Path(dataset.root) / METADATA_FILE).read_bytes()).hexdigest()[:12]
    return f"{dataset.config.name}@{digest}"
