"""A store's files on disk: the file with its ``-wal`` and ``-shm``, and the temporary stores
of a merge or recover that was killed before it could clean up."""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def tmp_store(out: Path, job: str) -> Path:
    """The temporary store a ``job`` (``merge``, ``recover``) of this process writes before
    renaming it to ``out``: hidden beside ``out``, named with the process id."""
    return out.with_name(f".{out.name}.{job}-{os.getpid()}.tmp")


def remove_stale_tmp(out: Path, job: str) -> None:
    """Remove the temporary store (and its -wal, -shm) of an earlier ``job`` into ``out`` that
    was killed before it could clean up: one whose process is gone on this machine."""
    for tmp in out.parent.glob(f".{glob.escape(out.name)}.{job}-*.tmp"):
        pid = tmp.name.removesuffix(".tmp").rpartition("-")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            log.info("removing %s, left by a %s that was killed", tmp, job)
            remove_store_files(tmp)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine (and PID namespace) runs; one that exists but
    cannot be signalled (another user's) counts as running."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_store_files(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)
