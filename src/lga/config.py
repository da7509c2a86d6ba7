"""Typed, validated configuration: one object per concern, layered from YAML and dotted overrides.

Layering (as in dinov2): the defaults of the pydantic models, then a run file holding only the
changes (``--config run.yaml``), then ``key.sub=value`` overrides from the command line. An
unknown key or a value of the wrong type is an error before any work starts, and the resolved
config is written into the run directory.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lga.errors import ConfigError

Device = Literal["auto", "cpu", "cuda", "mps"]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    """Where the dataset is and how it is read."""

    root: Path
    dataset_config: str | None = None  # shipped name or YAML; None: DIR/dataset.yaml or waterbirds
    skip_bad_rows: bool = False
    check_images: bool = True
    num_workers: int = Field(default=2, ge=0)


class StudentConfig(Strict):
    """The CLIP-family checkpoint and how it is loaded."""

    spec: str = "openai/clip-vit-base-patch32"  # hub id or local directory
    revision: str | None = None
    device: Device = "auto"
    dtype: Dtype = "auto"
    trust_remote_code: bool = False
    templates: Literal["dataset", "single"] = "dataset"  # dataset config's ensemble, or the first


class EvalConfig(Strict):
    """Zero-shot evaluation settings."""

    split: Literal["train", "val", "test", "all"] = "test"
    batch_size: int = Field(default=64, gt=0)
    cache_dir: Path | None = None  # None: $LGA_CACHE or ~/.cache/lga
    use_cache: bool = True


class EvalRunConfig(Strict):
    """Everything ``lga eval`` needs; dumped as the run's ``config.yaml``."""

    method: str = "zero-shot"
    data: DataConfig
    student: StudentConfig = StudentConfig()
    eval: EvalConfig = EvalConfig()


M = TypeVar("M", bound=BaseModel)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-5"`` -> (["train", "lr"], 1e-05); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: cannot parse value: {e}") from e
    return key.split("."), value


def deep_merge(base: dict, changes: dict) -> dict:
    """A copy of ``base`` with ``changes`` merged in, recursively for nested dicts."""
    out = dict(base)
    for k, v in changes.items():
        out[k] = (
            deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def _set_dotted(d: dict, path: list[str], value: Any) -> None:
    for part in path[:-1]:
        d = d.setdefault(part, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override {'.'.join(path)}: {part} is not a section")
    d[path[-1]] = value


def read_yaml(path: str | Path, what: str = "config") -> dict:
    """A YAML file that holds a mapping.

    Raises:
        ConfigError: unreadable, not YAML, or not a mapping (the message names ``what``).
    """
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read {what} {path}: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must be a mapping at the top level")
    return raw


def read_model_file(path: str | Path, model: type[M], what: str) -> M:
    """A YAML file validated as ``model``; every fault is a :class:`ConfigError` naming it."""
    try:
        return model.model_validate(read_yaml(path, what))
    except ValidationError as e:
        raise ConfigError(f"invalid {what} {path}:\n{e}") from e


def validation_lines(e: ValidationError) -> list[str]:
    """One ``key.sub: message`` line per fault of a pydantic error (no help links)."""
    lines = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}" if where else msg)
    return lines


def resolve_config(
    model: type[M], *, base: dict | None = None, files: list[Path] = (), overrides: list[str] = ()
) -> M:
    """Build a config object from layers: ``base`` dict, YAML ``files``, then dotted ``overrides``.

    Raises:
        ConfigError: naming the offending key, for unknown keys and invalid values.
    """
    merged = dict(base or {})
    for f in files:
        merged = deep_merge(merged, read_yaml(f))
    for item in overrides:
        path, value = parse_override(item)
        _set_dotted(merged, path, value)
    try:
        return model.model_validate(merged)
    except ValidationError as e:
        lines = validation_lines(e)
        if len(lines) == 1:
            raise ConfigError(f"invalid configuration: {lines[0]}") from e
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from e


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML (paths as strings, secrets never included)."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def shipped_names(kind: str) -> list[str]:
    """The configs shipped in ``lga/configs/<kind>/`` (runs, datasets, prompts, reproduce)."""
    root = resources.files("lga") / "configs" / kind
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def resolve_config_file(name_or_path: str | Path, kind: str, what: str) -> Path:
    """The one rule for "a shipped name or a YAML file": an existing file is taken as it is; a
    name with a YAML suffix or a ``/`` is a path that must exist; anything else must name a
    config shipped in ``lga/configs/<kind>/``.

    Args:
        name_or_path: what the user gave.
        kind: the folder of shipped configs (``runs``, ``datasets``, ``prompts``, ``reproduce``).
        what: the thing's name in messages (``run config``, ``dataset config``, ...).

    Raises:
        ConfigError: a missing file, or an unknown name (the shipped ones are listed).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    if path.suffix in (".yaml", ".yml") or "/" in name:
        raise ConfigError(f"{what} file not found: {path}")
    names = shipped_names(kind)
    if name not in names:
        raise ConfigError(f"unknown {what} {name!r}; shipped: {names}, or give a YAML file")
    return Path(str(resources.files("lga") / "configs" / kind / f"{name}.yaml"))
