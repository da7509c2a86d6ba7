"""Dataset config: the class and spurious-attribute names of a Waterbirds-layout dataset.

A dataset folder may carry its own ``dataset.yaml`` (``lga data synth`` writes one); otherwise
the shipped config named on the command line (default ``waterbirds``) applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lga.config import read_model_file, resolve_config_file, shipped_names

DATASET_FILE = "dataset.yaml"


class Group(NamedTuple):
    """One class x place group. ``key`` is its name in metrics (``"waterbird/land"``): the only
    place where a group becomes a string, and :meth:`from_key` the only place one is parsed."""

    cls: str
    place: str

    @property
    def key(self) -> str:
        return f"{self.cls}/{self.place}"

    @property
    def display(self) -> str:
        return f"{self.cls} on {self.place}"

    @classmethod
    def from_key(cls, key: str) -> Group:
        name, _, place = key.partition("/")
        return cls(name, place)


class DatasetConfig(BaseModel):
    """Names of a dataset's classes (``y``) and spurious attribute values (``place``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    classes: list[str] = Field(min_length=2)
    spurious_attribute: str = "background"
    places: list[str] = Field(min_length=1)
    object_noun: str = "object"
    class_templates: list[str] = Field(default_factory=lambda: ["a photo of a {}."], min_length=1)
    spurious_prompts: dict[str, list[str]] = Field(default_factory=dict)
    prompt_set: str | None = None  # teacher prompt set name or file (see lga.teacher)
    # Places that only test images have (place codes len(places), len(places) + 1, ...): the
    # abstraction test of backgrounds never seen in training. Their rows are scored apart from
    # the usual groups (metrics.json's ``unseen``) and never enter worst group or training.
    unseen_places: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        if set(self.unseen_places) & set(self.places):
            raise ValueError(
                f"unseen_places {self.unseen_places} repeat names of places {self.places}"
            )
        for field in ("classes", "places", "unseen_places"):
            values = getattr(self, field)
            if len(set(values)) != len(values):
                raise ValueError(f"{field} has duplicate names: {values}")
        for t in self.class_templates:
            if "{}" not in t:
                raise ValueError(f"class template {t!r} has no '{{}}' for the class name")
        unknown = set(self.spurious_prompts) - set(self.places)
        if unknown:
            raise ValueError(f"spurious_prompts names unknown places {sorted(unknown)}")
        return self

    def group_name(self, y: int, place: int) -> str:
        """The ``"<class>/<place>"`` key used in metrics."""
        return Group(self.classes[y], self.places[place]).key

    @property
    def n_groups(self) -> int:
        return len(self.classes) * len(self.places)

    def group_id(self, y, place):
        """Group index ``y * n_places + place`` (works on ints and numpy arrays)."""
        return y * len(self.places) + place

    def group_names(self) -> list[str]:
        return [
            self.group_name(y, p) for y in range(len(self.classes)) for p in range(len(self.places))
        ]

    def with_unseen(self) -> DatasetConfig:
        """This config with the unseen places appended to ``places`` (codes as in metadata), to
        name and score the unseen-place test rows."""
        return self.model_copy(update={"places": self.places + self.unseen_places,
                                       "unseen_places": []})  # fmt: skip

    @property
    def n_place_codes(self) -> int:
        """Valid values of the ``place`` column: the places, then the unseen places."""
        return len(self.places) + len(self.unseen_places)

    def spurious_texts(self) -> dict[str, list[str]]:
        """Prompts describing each spurious value (defaults to 'a photo of {place}.')."""
        return {p: self.spurious_prompts.get(p) or [f"a photo of {p}."] for p in self.places}


def shipped_dataset_names() -> list[str]:
    return shipped_names("datasets")


def _read_spec_file(path: Path) -> DatasetConfig:
    return read_model_file(path, DatasetConfig, "dataset config")


def load_dataset_config(
    name_or_path: str | Path | None = None, data_dir: Path | None = None
) -> DatasetConfig:
    """Resolve a dataset config.

    Args:
        name_or_path: a shipped config name (``waterbirds``) or a YAML file. When None, the
            dataset folder's own ``dataset.yaml`` is used if present, else ``waterbirds``.
        data_dir: the dataset folder.
    """
    if name_or_path is None:
        if data_dir is not None and (Path(data_dir) / DATASET_FILE).is_file():
            return _read_spec_file(Path(data_dir) / DATASET_FILE)
        name_or_path = "waterbirds"
    return _read_spec_file(resolve_config_file(name_or_path, "datasets", "dataset config"))
