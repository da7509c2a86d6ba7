"""Which image files already decoded cleanly, so that checking an unchanged dataset again is quick.

Decoding every image is the slow part of validating a dataset (Waterbirds: 11,788 JPEGs, seconds
to minutes), and every ``lga eval``/``lga fit`` validates the splits it reads. A file whose
(size, mtime_ns, ctime_ns) are those recorded when it last decoded without a problem is not
decoded again; any change to the file (rewritten, truncated, replaced, touched) changes them.
Only successes are recorded, so a faulty file is decoded, and reported, every time. Each record
keeps the file's sha1 too, so that finding the same image under two rows needs no second read.

One small JSON file per dataset folder, under ``$LGA_CACHE/validated/`` (default
``~/.cache/lga``), written atomically; an unreadable or unwritable cache is ignored (the images
are then simply decoded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

VERSION = 2  # bump when what "valid" means or the record changes: every image is decoded again

Signature = tuple[int, int, int]  # (size, mtime_ns, ctime_ns)


def cache_root() -> Path:
    """``$LGA_CACHE`` or ``~/.cache/lga``: the root of :func:`lga.student.cache.default_cache_dir`.

    Read here rather than imported from :mod:`lga.student.cache`, which loads torch:
    ``lga data check`` does not need it.
    """
    return Path(os.environ.get("LGA_CACHE", Path.home() / ".cache" / "lga"))


def file_signature(path: Path) -> Signature | None:
    """(size, mtime_ns, ctime_ns) of a regular file, or None when it is missing or not a file."""
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class ValidationCache:
    """The images of one dataset folder known to decode, by name relative to the folder.

    Args:
        root: the dataset folder.
        max_pixels: the decompression-bomb limit the images were checked against (part of the key).
        cache_dir: where the cache files live (default :func:`cache_root`).
    """

    def __init__(self, root: Path, *, max_pixels: int, cache_dir: Path | None = None):
        key = f"v{VERSION}|{os.path.realpath(root)}|{max_pixels}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        self.file = (cache_dir or cache_root()) / "validated" / f"{digest}.json"
        self._valid: dict[str, list] = {}  # name -> [size, mtime_ns, ctime_ns, sha1]
        self._dirty = False
        try:
            data = json.loads(self.file.read_text())
            if data.get("key") == key:
                self._valid = dict(data["valid"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("ignoring unreadable validation cache %s: %s", self.file, e)
        self._key = key

    def __len__(self) -> int:
        return len(self._valid)

    def digest(self, name: str, signature: Signature | None) -> str | None:
        """The sha1 of ``name`` if it decoded cleanly when it had this very ``signature``."""
        record = self._valid.get(name)
        if signature is None or not isinstance(record, list) or len(record) != 4:
            return None
        if tuple(record[:3]) != signature:
            return None
        return str(record[3])

    def add(self, name: str, signature: Signature | None, sha1: str) -> None:
        """Record that ``name`` (content ``sha1``, ``signature`` taken before reading it)
        decoded cleanly."""
        if signature is not None:
            self._valid[name] = [*signature, sha1]
            self._dirty = True

    def save(self) -> None:
        """Write the cache (temp file + rename) if anything was added; failures are logged."""
        if not self._dirty:
            return
        tmp = self.file.with_name(f"{self.file.name}.{os.getpid()}.tmp")
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"key": self._key, "valid": self._valid}))
            os.replace(tmp, self.file)
            self._dirty = False
        except OSError as e:
            log.warning("cannot write the validation cache %s: %s", self.file, e)
            tmp.unlink(missing_ok=True)
