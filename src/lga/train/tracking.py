"""Experiment trackers (TensorBoard, Weights & Biases, MLflow) through Accelerate.

What a run logs, under tags that name what they hold:

- ``train/<term>``: the loss terms, learning rate and epoch at every logged step;
- ``val/<metric>``, ``val/class_accuracy/<class>``, ``val/group_accuracy/<class>/<place>``:
  every validation (fine-tuning), or the one validation of a frozen method (step 0);
- ``test/...``: the same for the test split, once, at the selected checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lga.errors import ConfigError
from lga.train.config import FitConfig


def tracker_values(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """Numbers of a metrics dict as tracker scalars: ``{prefix}/{metric}``, and one scalar per
    class and per group (``{prefix}/group_accuracy/waterbird/land``)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[f"{prefix}/{key}"] = float(value)
        elif key in ("group_accuracy", "class_accuracy") and isinstance(value, dict):
            out |= {f"{prefix}/{key}/{name}": float(v) for name, v in value.items()}
    return out


def flat_config(cfg: FitConfig) -> dict[str, Any]:
    """The run's settings as flat tracker parameters: ``{"train.lr": 1e-05, ...}``."""
    return _flat(cfg.model_dump(mode="json"))


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested config -> flat ``{"a.b": scalar}`` (lists as strings)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, int | float | str | bool) else str(v)
    return out


def run_identity(cfg: FitConfig, out: Path) -> tuple[str, str | None, dict[str, str], list[str]]:
    """(run name, group, descriptive fields, tags) of a run for the trackers."""
    tc = cfg.tracking
    fields = {
        "method": cfg.method.value,
        "seed": str(cfg.train.seed),
        "dataset": Path(cfg.data.root).name,
        "student": Path(str(cfg.student.spec).rstrip("/")).name or str(cfg.student.spec),
    }
    tags = [fields["method"], f"seed-{fields['seed']}", f"data-{fields['dataset']}",
            f"student-{fields['student']}", *tc.tags]  # fmt: skip
    return tc.run_name or Path(out).resolve().name, tc.group, fields, tags


def tracker_available(name: str) -> bool:
    """Whether Accelerate can start the tracker ``name`` (its package is installed)."""
    from accelerate.utils import imports

    check = {
        "tensorboard": imports.is_tensorboard_available,
        "wandb": imports.is_wandb_available,
        "mlflow": imports.is_mlflow_available,
    }
    return check[name]()


def check_trackers(names: list[str]) -> None:
    """Refuse, before any work, trackers whose package is missing: Accelerate would only warn
    and the run would log nothing.

    Raises:
        ConfigError: naming each missing tracker and the extra that installs it.
    """
    missing = [n for n in names if not tracker_available(n)]
    if missing:
        extras = ",".join(missing)
        raise ConfigError(
            f"--report-to {', '.join(missing)}: not installed; install it with "
            f"pip install 'lga[{extras}]' (or report to none)"
        )


def init_trackers(acc, cfg: FitConfig, out: Path, config: dict[str, Any]) -> None:
    """Start the configured trackers on ``acc`` with the run's name, group, tags and settings."""
    name, group, fields, tags = run_identity(cfg, out)
    mlflow_tags = {**fields, "group": group or "", "tags": ",".join(cfg.tracking.tags)}
    acc.init_trackers(
        cfg.tracking.project,
        config=config,
        init_kwargs={
            "wandb": {"name": name, "group": group, "tags": tags, "dir": str(out)},
            "mlflow": {"run_name": name, "tags": mlflow_tags},
        },
    )
