"""Where a model comes from: a local folder or a Hugging Face Hub id, told apart before loading.

Students (``--student``) and teachers (``hf:...``) name their checkpoints the same way. A spec is
a *path* when it exists here, starts with ``/``, ``./``, ``../``, ``.`` or ``~``, has more than
one ``/``, is no valid hub id, or starts with a folder that exists here (``teachers/nope`` when
``teachers/`` is a folder): a missing one is reported as ``not found: PATH``, never as a failure
to reach the Hub. Only the rest (``name`` or ``owner/name``) goes to the Hub.

A local folder's safetensors files are checked before loading (the header's size against the
file's), so a truncated download is named in one line, ``damaged weights file PATH: ...``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lga.errors import ConfigError

# A hub id: "name" or "owner/name" of letters, digits, "-", "_" and ".".
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_path(spec: str) -> bool:
    """Whether ``spec`` can only mean a local path (see the module docstring)."""
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or not HUB_ID.match(spec):
        return True
    first = spec.split("/")[0]
    return "/" in spec and Path(first).is_dir()


def resolve_model_spec(spec: str, *, what: str) -> tuple[str, bool]:
    """``(folder or hub id, is_local)`` for a checkpoint spec; a local folder's weights checked.

    Args:
        spec: the spec as the user gave it.
        what: what it is, for messages (``student``, ``teacher checkpoint``).

    Raises:
        ConfigError: the spec is a path that does not exist, is a file, or holds a damaged
            safetensors file.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        check_weight_files(path)
        return str(path), True
    if path.exists():
        raise ConfigError(f"{what} {spec}: a file, not a checkpoint folder (save_pretrained)")
    if looks_like_path(spec):
        raise ConfigError(f"{what} folder not found: {spec}")
    return spec, False


def check_weight_files(folder: Path) -> None:
    """Check every ``*.safetensors`` file of ``folder`` against its own header.

    Raises:
        ConfigError: ``damaged weights file PATH: ...`` for the first file that is truncated,
            padded, or whose header is not safetensors JSON.
    """
    for f in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(f)
        if problem:
            raise ConfigError(f"damaged weights file {f}: {problem}; download or save it again")


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a safetensors header"
        n = int.from_bytes(head, "little")
        if n > size - 8:
            return f"{size} bytes, but its header alone claims {n}"
        try:
            header = json.loads(fh.read(n))
            ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "its header is not safetensors JSON"
    expected = 8 + n + max(ends, default=0)
    if expected != size:
        cut = " (truncated)" if size < expected else ""
        return f"{size} bytes where its header describes {expected}{cut}"
    return None
