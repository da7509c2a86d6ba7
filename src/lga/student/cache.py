"""On-disk cache of frozen-model image features.

Keyed by checkpoint (weights fingerprint), dataset (folder + metadata hash), preprocessing (the
image processor's settings) and image id: a second evaluation of the same frozen model reuses the
features; a change of any key part computes them afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("LGA_CACHE", Path.home() / ".cache" / "lga"))


class FeatureCache:
    """Features of one (checkpoint, dataset, preprocessing) key, indexed by image id."""

    def __init__(self, root: str | Path, key: dict):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        self.dir = Path(root) / "features" / digest[:24]
        self.file = self.dir / "features.safetensors"
        self.key = key
        self._feats: dict[int, torch.Tensor] = {}
        if self.file.is_file():
            try:
                data = load_file(self.file)
                self._feats = dict(zip(data["ids"].tolist(), data["features"], strict=True))
            except Exception as e:  # a corrupt cache is rebuilt, never trusted
                log.warning("ignoring unreadable feature cache %s: %s", self.file, e)

    def __len__(self) -> int:
        return len(self._feats)

    def missing(self, img_ids) -> list[int]:
        return [int(i) for i in img_ids if int(i) not in self._feats]

    def get(self, img_ids) -> torch.Tensor:
        """(N, D) features of ``img_ids``, all of which must be present."""
        return torch.stack([self._feats[int(i)] for i in img_ids])

    def put(self, img_ids, features: torch.Tensor) -> None:
        for i, f in zip(img_ids, features, strict=True):
            self._feats[int(i)] = f.detach().cpu().float().clone()

    def flush(self) -> None:
        """Write atomically (temp file + rename): a killed run never leaves a torn cache."""
        if not self._feats:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        ids = sorted(self._feats)
        tmp = self.file.with_name(f"{self.file.name}.{os.getpid()}.tmp")  # runs in parallel
        save_file(
            {
                "ids": torch.tensor(ids, dtype=torch.int64),
                "features": torch.stack([self._feats[i] for i in ids]).contiguous(),
            },
            tmp,
        )
        os.replace(tmp, self.file)
        (self.dir / "key.json").write_text(
            json.dumps(self.key, indent=1, sort_keys=True, default=str)
        )
