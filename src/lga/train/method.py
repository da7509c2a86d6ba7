"""The methods of ``lga fit --method``: a plain enum with no heavy import (the CLI's parser
lists them before any command runs; :mod:`lga.train.config` re-exports it)."""

from __future__ import annotations

from enum import Enum


class Method(str, Enum):
    """The values of ``lga fit --method``."""

    ZERO_SHOT = "zero-shot"
    LINEAR_PROBE = "linear-probe"
    ERM = "erm"
    SPURIOUS_AWARE = "spurious-aware"
    LGA = "lga"
    DFR = "dfr"

    @property
    def fine_tunes(self) -> bool:
        """Whether the method trains CLIP (the others only read frozen features)."""
        return self in (Method.ERM, Method.SPURIOUS_AWARE, Method.LGA)
