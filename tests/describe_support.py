"""The ``lga describe`` command line against a loopback OpenAI-compatible server, for tests."""

from __future__ import annotations

from pathlib import Path


def describe_argv(data: Path, store: Path, base_url: str, model: str, *extra: str) -> list[str]:
    """``describe --data DATA --store STORE --teacher openai:<base_url>#<model> --no-progress``."""
    return ["describe", "--data", str(data), "--store", str(store), "--no-progress",
            "--teacher", f"openai:{base_url}#{model}", *extra]  # fmt: skip
