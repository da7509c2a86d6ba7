"""The run folder's records, typed: ``metrics.json`` as :class:`RunMetrics`.

lga writes ``metrics.json`` through this record and every reader gets it back typed, so a
reader asks ``record.worst_group_accuracy`` instead of guessing keys, and a malformed file is
one error naming the file and the key. The JSON is the one lga has always written:
``to_json`` gives back exactly the keys a record was made with, in the written order (fields
left unset are not written), and keys it does not know (another tool's, a later version's)
are kept as they are.

The run's configuration (``config.yaml``) is read back typed by
:func:`lga.train.config.load_run_config` (a FitConfig, or an EvalRunConfig for ``lga eval``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from lga.errors import LgaError


class _Record(BaseModel):
    # Unknown keys are kept (and written back), known ones are type-checked.
    model_config = ConfigDict(extra="allow", frozen=True)


class SplitMetrics(_Record):
    """The metrics of one split (:func:`lga.evaluation.metrics.group_metrics`), as fractions:
    metrics.json's top level and its ``val``."""

    n: int
    accuracy: float
    weighted_accuracy: float
    worst_group_accuracy: float
    worst_group: str
    class_accuracy: dict[str, float]
    group_accuracy: dict[str, float]  # "<class>/<place>" -> accuracy
    group_count: dict[str, int]


class UnseenMetrics(_Record):
    """metrics.json's ``unseen``: the test images on places no training image has."""

    n: int
    accuracy: float
    class_accuracy: dict[str, float]
    group_accuracy: dict[str, float]
    group_count: dict[str, int]
    worst_group_accuracy: float
    worst_group: str
    places: list[str]


class RunMetrics(_Record):
    """``RUN/metrics.json``: the evaluated split's metrics and the run's facts.

    ``method``, ``accuracy``, ``worst_group_accuracy`` and ``group_accuracy`` are required;
    the others are there when the run has them (``val``: a zero-shot fit's validation; ``C``:
    linear probe and DFR; ``steps``, ``processes``: fine-tuning; ``unseen``: a dataset with
    unseen places).
    """

    name: str | None = None  # the table column (a recipe's name), lga fit only
    method: str
    student: str | None = None  # the spec the run started from
    split: str | None = None
    n: int | None = None
    accuracy: float
    weighted_accuracy: float | None = None
    worst_group_accuracy: float
    worst_group: str | None = None
    class_accuracy: dict[str, float] | None = None
    group_accuracy: dict[str, float]
    group_count: dict[str, int] | None = None
    n_train: int | None = None
    select_by: str | None = None
    selected_step: int | None = None
    val_score: float | None = None
    val: SplitMetrics | None = None
    C: float | None = None
    n_fit: int | None = None
    subsets: int | None = None
    steps: int | None = None
    processes: int | None = None
    unseen: UnseenMetrics | None = None
    skipped_rows: int | None = None

    @classmethod
    def from_json(cls, data: Any, *, source: str | Path = "metrics.json") -> RunMetrics:
        """The record of a parsed ``metrics.json``.

        Raises:
            LgaError: not an object, a required key missing or a value of the wrong type; the
                message names ``source`` and the key (``unseen.group_count``).
        """
        if not isinstance(data, Mapping):
            raise LgaError(f"{source}: expected a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            raise LgaError(f"{source}: malformed record: {_faults(e)}") from e

    def to_json(self) -> dict[str, Any]:
        """The JSON object: the keys the record was made with, in the written order."""
        return self.model_dump(mode="json", exclude_unset=True)

    @classmethod
    def read(cls, path: str | Path) -> RunMetrics:
        """Read and check a ``metrics.json`` file.

        Raises:
            LgaError: unreadable, not JSON, or malformed (file and key named).
        """
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LgaError(f"cannot parse {path}: {e}") from e
        return cls.from_json(data, source=path)

    def write(self, path: str | Path) -> Path:
        """Write to ``path`` through a temporary file (a reader never sees half a record)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(path)
        return path


def _faults(e: ValidationError, shown: int = 3) -> str:
    """``key 'accuracy': Field required; key 'unseen.n': ...`` (the first ``shown``)."""
    parts = []
    for err in e.errors()[:shown]:
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"key {where!r}: {err['msg']}")
    more = len(e.errors()) - shown
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
