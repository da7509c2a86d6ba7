"""The store's key: which dataset, prompt text and generation settings an answer belongs to.

A row is keyed by (dataset, image, prompt name, prompt-text hash, teacher, settings hash). The
hashed parts are built here and only here, so every writer (the teacher's runner, ``lga store
import``) and every reader computes the same key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["dataset_key", "prompt_key", "settings_key"]


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


def prompt_key(text: str) -> str:
    """The prompt-text hash of the store key (:attr:`lga.teacher.prompts.Prompt.hash`): a new
    wording of a prompt is a new key, so its answers never mix with the old wording's."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


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
