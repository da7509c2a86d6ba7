"""The import contracts of pyproject.toml's [tool.importlinter] hold (so CI fails on a wrong-way
import), and the contract checker itself catches a wrong-way import."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    exe = Path(sys.executable).parent / "lint-imports"
    found = str(exe) if exe.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports is missing: install the dev extra (pip install -e '.[dev]')")
    return found


def _run(root: Path, src: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src)}
    return subprocess.run(
        [_lint_imports(), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_layers_and_no_fixtures_in_shipped_code():
    done = _run(ROOT, ROOT / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "layers one way KEPT" in done.stdout
    assert "no shipped code imports the test fixtures KEPT" in done.stdout
    assert "no circle between the modules of a package KEPT" in done.stdout


def test_a_wrong_way_import_breaks_the_contract(tmp_path):
    # A copy of the package where the store imports the teacher (the circle this contract ended).
    shutil.copytree(ROOT / "src", tmp_path / "src")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    keys = tmp_path / "src" / "lga" / "store" / "keys.py"
    keys.write_text(keys.read_text() + "\nfrom lga.teacher.visual import VisualPrompt  # noqa\n")
    done = _run(tmp_path, tmp_path / "src")
    assert done.returncode != 0
    assert "lga.store.keys -> lga.teacher.visual" in done.stdout


def test_a_circle_inside_a_package_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "src", tmp_path / "src")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    visual = tmp_path / "src" / "lga" / "teacher" / "visual.py"  # the runner imports it
    visual.write_text(visual.read_text() + "\nfrom lga.teacher import runner  # noqa\n")
    done = _run(tmp_path, tmp_path / "src")
    assert done.returncode != 0
    assert "No cycles are allowed in lga.teacher" in done.stdout
