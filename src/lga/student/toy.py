"""Where the shipped toy CLIP lives: the ``toy`` student spec and its checkpoint folder.

The student layer resolves ``toy`` itself (:func:`lga.student.model.resolve_student_spec`), so
it needs no workflow; :mod:`lga.workflows.toy` (which pretrains the toy) re-exports these names.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from lga.errors import LgaError

TOY_ASSET = "toy-clip"
TOY_STUDENT = "toy"  # the student spec that names the shipped toy CLIP
PROVENANCE_FILE = "lga_toy.json"  # the ToyConfig a checkpoint was pretrained with, and how long


def resolve_student(spec: str) -> str:
    """``toy`` -> the shipped toy CLIP's directory; any other spec unchanged."""
    return str(toy_checkpoint()) if spec == TOY_STUDENT else spec


def toy_checkpoint() -> Path:
    """The shipped toy CLIP directory (inside the installed package)."""
    path = Path(str(resources.files("lga") / "assets" / TOY_ASSET))
    if not (path / "config.json").is_file():
        raise LgaError(f"the toy CLIP is missing from {path}; rebuild it with `lga pretrain-toy`")
    return path
