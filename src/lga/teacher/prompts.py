"""Teacher prompt sets: YAML data shipped in ``lga/configs/prompts`` or given as a file.

A prompt set lists named prompts, each saying what its answer describes (``target``: the object
or the background) and how it is shaped (``format``: free text or keywords). Prompt texts may use
``{object}``, ``{classes_or}``, ``{classes_and}`` and ``{spurious}``, filled from the dataset
config, so one generic set serves any dataset in the Waterbirds layout.
"""

from __future__ import annotations

import string
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lga.config import read_model_file, resolve_config_file, shipped_names
from lga.data.dataset_config import DatasetConfig
from lga.errors import ConfigError
from lga.store.keys import prompt_key

GENERIC = "generic"

# The prompt names of the shipped prompt sets (configs/prompts/*.yaml): the store's rows are
# keyed by them, and the training and report configs name them as their defaults.
OBJECT_DESCRIPTION = "object_description"
OBJECT_KEYWORDS = "object_keywords"
BACKGROUND_DESCRIPTION = "background_description"
BACKGROUND_KEYWORDS = "background_keywords"
SHIPPED_PROMPTS = (OBJECT_DESCRIPTION, OBJECT_KEYWORDS, BACKGROUND_DESCRIPTION, BACKGROUND_KEYWORDS)


class Target(str, Enum):
    """What a prompt's answer describes."""

    OBJECT = "object"
    BACKGROUND = "background"


class Format(str, Enum):
    """The shape of a prompt's answer; keyword answers are also parsed into lists."""

    TEXT = "text"
    KEYWORDS = "keywords"


class PromptTemplate(BaseModel):
    """One prompt of a set, before its placeholders are filled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    target: Target
    format: Format = Format.TEXT
    text: str = Field(min_length=1)


class PromptSet(BaseModel):
    """A named list of prompt templates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    prompts: list[PromptTemplate] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> PromptSet:
        names = [p.name for p in self.prompts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate prompt names {dup}")
        return self

    def render(self, spec: DatasetConfig) -> list[Prompt]:
        """The prompts with their placeholders filled from a dataset config."""
        values = prompt_variables(spec)
        return [_render(self.name, t, values) for t in self.prompts]


class Prompt(BaseModel):
    """A ready-to-send prompt; ``hash`` identifies its exact text in the store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    target: Target
    format: Format
    text: str

    @property
    def hash(self) -> str:
        return prompt_key(self.text)


def prompt_variables(spec: DatasetConfig) -> dict[str, str]:
    """The placeholder values a dataset config provides."""
    return {
        "object": spec.object_noun,
        "classes_or": " or ".join(spec.classes),
        "classes_and": " and ".join(spec.classes),
        "spurious": spec.spurious_attribute,
    }


def _render(set_name: str, template: PromptTemplate, values: dict[str, str]) -> Prompt:
    where = f"prompt set {set_name!r}, prompt {template.name!r}"
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template.text) if f is not None}
    except ValueError as e:
        raise ConfigError(f"{where}: {e} (write {{{{ and }}}} for literal braces)") from e
    unknown = sorted(fields - set(values))
    if unknown:
        raise ConfigError(f"{where}: unknown placeholder(s) {unknown}; known: {sorted(values)}")
    text = template.text.format(**values)
    return Prompt(name=template.name, target=template.target, format=template.format, text=text)


def shipped_prompt_sets() -> list[str]:
    """Names of the prompt sets shipped with lga."""
    return shipped_names("prompts")


def _read(path: Path) -> PromptSet:
    return read_model_file(path, PromptSet, "prompt set")


def load_prompt_set(name_or_path: str | Path) -> PromptSet:
    """A shipped prompt set by name (``waterbirds``, ``generic``) or a YAML file."""
    return _read(resolve_config_file(name_or_path, "prompts", "prompt set"))


def resolve_prompts(
    spec: DatasetConfig, name_or_path: str | Path | None = None, *, only: list[str] | None = None
) -> list[Prompt]:
    """The rendered prompts for a dataset.

    Args:
        spec: the dataset config (placeholder values; its ``prompt_set`` is the default set).
        name_or_path: a prompt set name or file; None picks the dataset's ``prompt_set``, else
            the shipped set named like the dataset, else ``generic``.
        only: keep only these prompt names (in this order).

    Raises:
        ConfigError: unknown set, invalid file, unknown placeholder or unknown prompt name.
    """
    if name_or_path is None:
        name_or_path = spec.prompt_set or (
            spec.name if spec.name in shipped_prompt_sets() else GENERIC
        )
    prompts = load_prompt_set(name_or_path).render(spec)
    if only is None:
        return prompts
    by_name = {p.name: p for p in prompts}
    unknown = [n for n in only if n not in by_name]
    if unknown:
        raise ConfigError(f"unknown prompt name(s) {unknown}; the set has {sorted(by_name)}")
    return [by_name[n] for n in only]
