"""Output folders: created up front, so that a bad ``--out`` fails before any work is done."""

from __future__ import annotations

import os
from pathlib import Path

from lga.errors import LgaError


def make_output_dir(path: str | Path, *, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) and check that files can be written in it.

    Raises:
        LgaError: ``path`` is an existing file, lies under a file, or cannot be created or
            written (read-only, ``/proc``, no permission); the message names the path and why.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LgaError(f"{what} {path} is an existing file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LgaError(f"cannot create {what} {path}: {e.strerror or e}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise LgaError(f"cannot write in {what} {path}: permission denied")
    probe = path / f".lga-write-check-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise LgaError(f"cannot write in {what} {path}: {e.strerror or e}") from e
    return path


def _umask() -> int:
    try:  # Linux says it without changing it (os.umask sets it, for a moment, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(folder: str | Path) -> None:
    """Give the files under ``folder`` the mode a new file gets (0644 under umask 022).

    ``save_pretrained`` writes ``model.safetensors`` with mode 0600, so a model saved for others
    to read (a run's ``model/``, an export) would be readable by its owner only.
    """
    mode = 0o666 & ~_umask()
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)
