"""The report's data model: what ``build_report`` is asked to make and what it made."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lga.report.table import ResultsTable

log = logging.getLogger("lga.report.build")


@dataclass
class ReportOptions:
    """What ``build_report`` makes besides the tables.

    Attributes:
        images: img_ids for the class-probability and saliency figures (None: picked).
        n_images: how many to pick from the zero-shot run's worst group.
        descriptions: a description store, for the alignment to object/background descriptions.
        teacher: the teacher whose descriptions to read, when the store holds several.
        alignment: compute the alignment diagnostics (loads the models).
        saliency: draw saliency maps of the chosen images (loads the models).
        alignment_split: the split the diagnostic images come from.
        alignment_per_group: images per group for the diagnostics.
        device: where the models run.
        dpi: resolution of the figures.
    """

    images: list[int] | None = None
    n_images: int = 4
    descriptions: Path | None = None
    teacher: str | None = None
    alignment: bool = True
    saliency: bool = True
    alignment_split: str = "test"
    alignment_per_group: int = 100
    device: str = "auto"
    dpi: int = 130


@dataclass
class Report:
    """What was written (paths relative to the output folder) and what was left out and why."""

    out: Path
    table: ResultsTable
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    alignment: pd.DataFrame | None = None
    chosen: list[int] = field(default_factory=list)
    chosen_group: str | None = None
    chosen_from: str | None = None
    alignment_source: str | None = None

    def note(self, text: str) -> None:
        log.warning("report: %s", text)
        self.notes.append(text)
