"""The public Python API: lazy, typed, and the README's example runs verbatim."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The Python block of the README's "Python API" section."""
    text = README.read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_import_lga_is_lazy_and_complete():
    code = (
        "import sys, lga\n"
        "heavy = ('torch', 'transformers', 'matplotlib', 'pandas')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "for name in lga.__all__:\n"
        "    getattr(lga, name)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.slow  # the example fits three methods on a small synthetic world: ~1 min
def test_readme_example_runs_verbatim_under_another_backend(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(
        "import matplotlib\n"
        "matplotlib.use('svg')  # as a notebook would have chosen its own\n"
        + readme_example()
        + "\nassert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
    )
    env = {**os.environ, "LGA_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    work = tmp_path / "lga-api-example"
    assert (work / "report" / "group_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "worst group" in out.stdout and "| accuracy (%)" in out.stdout
    for method in ("zero-shot", "erm", "lga"):
        assert (work / "runs" / method / "metrics.json").is_file()
