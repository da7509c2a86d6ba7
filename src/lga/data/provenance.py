"""``import.yaml``: the record that ``lga data import`` leaves in a dataset folder.

It says which files the importer wrote (with their SHA-256, so that a file edited by hand since,
or one some other tool wrote, is never overwritten silently) and, for a dataset whose images are
symlinks, the folders they link into. ``lga data check`` accepts a symlink that resolves inside
one of those folders; any other symlink out of the dataset folder stays an error.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

IMPORT_FILE = "import.yaml"


class ImportRecord(BaseModel):
    """What an import wrote, from where, and how its images got into the dataset folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    importer: str  # celeba | table
    source: str  # the source folder or table, absolute
    images: str  # in place | symlink | copy
    linked_from: list[str] = Field(default_factory=list)  # real folders the symlinks point into
    written: dict[str, str]  # file name in the dataset folder -> sha256 of what was written
    options: dict[str, object] = Field(default_factory=dict)
    lga_version: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_record(root: Path) -> ImportRecord | None:
    """The folder's import record; None when there is none or it cannot be read (logged)."""
    path = Path(root) / IMPORT_FILE
    if not path.is_file():
        return None
    try:
        return ImportRecord.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValidationError) as e:
        log.warning("ignoring %s: %s", path, e)
        return None


def written_by_import(root: Path, name: str) -> bool:
    """True when ``root/name`` is exactly what an import wrote there."""
    record = read_record(root)
    path = Path(root) / name
    return (
        record is not None
        and name in record.written
        and path.is_file()
        and file_sha256(path) == record.written[name]
    )


def linked_roots(root: Path) -> list[str]:
    """The real folders an import's symlinks point into (absolute, never ``/``)."""
    record = read_record(root)
    if record is None:
        return []
    out = []
    for folder in record.linked_from:
        real = os.path.realpath(folder)
        if os.path.isabs(folder) and real != os.path.realpath(os.sep):
            out.append(real)
    return out
