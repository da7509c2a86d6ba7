"""The commands that need no model start without torch: `lga --help` and the parsers, `data
check`, `store stats` (each in a fresh interpreter: this one has torch loaded already)."""

import resource
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "pandas", "numpy", "pydantic")  # the parsers load none


def _python(code: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args, "-c", code], capture_output=True, text=True, timeout=120, **kw
    )


def test_building_the_parser_imports_nothing_heavy():
    code = "import lga.cli, sys; lga.cli.build_parser(); print(sorted(sys.modules))"
    done = _python(code)
    assert done.returncode == 0, done.stderr
    loaded = set(eval(done.stdout))
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    assert "lga.commands.fit" in loaded  # every command was registered


def _imported(importtime: str) -> set[str]:
    """The module names of ``python -X importtime``'s report."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime.splitlines() if "|" in line}


@pytest.mark.parametrize("argv", [["--help"], ["data", "check", "--help"], ["report", "--help"]])
def test_help_does_not_import_torch(argv):
    # The entry point as a user runs it; -X importtime lists every module it imported.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lga.cli", *argv],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: lga" in done.stdout
    loaded = _imported(done.stderr)
    assert {"argparse", "lga.errors"} <= loaded  # the report is read right
    assert "torch" not in loaded and "transformers" not in loaded
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu_s < 0.5, f"lga {' '.join(argv)} took {cpu_s:.2f} s of CPU"  # ~0.1 s measured


def test_data_check_and_store_stats_run_without_torch(tmp_path, small_dataset):
    from lga.store.core import DescriptionStore

    store = tmp_path / "s.sqlite"
    DescriptionStore(store).close()
    code = (
        "import sys, lga.cli\n"
        "codes = [lga.cli.main(a) for a in sys.argv[1:]]\n"
        "print(codes, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    runs = [["data", "check", str(small_dataset), "--no-images"], ["store", "stats", str(store)]]
    done = subprocess.run(
        [sys.executable, "-c", code.replace("sys.argv[1:]", repr(runs))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[0, 0] False False"
