"""One rule for every command: a user error is one line on stderr and exit code 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lga.cli import main
from lga.errors import ConfigError
from lga.student.model import resolve_student_spec


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_missing_student_folder_is_named_before_any_hub_lookup(small_dataset, tmp_path, capsys):
    out = tmp_path / "ev"
    for student in ("/nonexistent/clip", "./not-here", "runs/a/model"):
        assert (
            main(["eval", "--data", str(small_dataset), "--student", student, "--out", str(out)])
            == 1
        )
        assert _one_line_error(capsys) == f"error: student folder not found: {student}"
        assert not out.exists()
    assert main(["fit", "--data", str(small_dataset), "--student", "/nope", "--out", str(out),
                 "--method", "zero-shot"]) == 1  # fmt: skip
    assert "student folder not found: /nope" in _one_line_error(capsys)
    assert not out.exists()


def test_student_spec_resolution(tmp_path, tiny_clip_dir):
    from lga.workflows.toy import toy_checkpoint

    assert resolve_student_spec("toy") == str(toy_checkpoint())
    assert resolve_student_spec("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"
    assert resolve_student_spec(str(tiny_clip_dir)) == str(tiny_clip_dir)
    with pytest.raises(ConfigError, match="cannot be scored as saved: no config.json"):
        resolve_student_spec(str(tmp_path))  # a folder without a checkpoint
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="a file, not a checkpoint folder"):
        resolve_student_spec(str(tmp_path / "weights.bin"))


def test_toy_is_a_student_for_eval(small_dataset, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["eval", "--data", str(small_dataset), "--student", "toy", "--out", str(out)]) == 0
    assert (out / "metrics.json").is_file()


@pytest.mark.parametrize("where", ["file", "under-file", "proc"])
def test_bad_out_location(small_dataset, tiny_clip_dir, tmp_path, capsys, where):
    (tmp_path / "a-file").write_text("x")
    out = {
        "file": tmp_path / "a-file",
        "under-file": tmp_path / "a-file" / "run",
        "proc": Path("/proc/lga-test/run"),
    }[where]
    for command in (["eval"], ["fit", "--method", "zero-shot"]):
        argv = [*command, "--data", str(small_dataset), "--student", str(tiny_clip_dir)]
        assert main([*argv, "--out", str(out)]) == 1
        line = _one_line_error(capsys)
        assert str(out) in line, line
    assert (tmp_path / "a-file").read_text() == "x"


def _run_raising(monkeypatch, exc: BaseException, *flags: str) -> int:
    """``main`` with a command whose work raises ``exc`` (the real parser and handlers)."""
    import lga.cli

    real = lga.cli.build_parser

    def parser():
        p = real()
        p.set_defaults(func=lambda args: (_ for _ in ()).throw(exc))
        return p

    monkeypatch.setattr(lga.cli, "build_parser", parser)
    return main([*flags])


def test_os_errors_and_bugs_are_one_line_unless_verbose(monkeypatch, capsys):
    denied = PermissionError(13, "Permission denied", "/data/metadata.csv")
    assert _run_raising(monkeypatch, denied) == 1
    assert _one_line_error(capsys) == "error: /data/metadata.csv: permission denied"
    bug = TypeError("unsupported operand")
    assert _run_raising(monkeypatch, bug) == 1
    line = _one_line_error(capsys)
    assert line.startswith("error: TypeError: unsupported operand") and "-v" in line
    assert _run_raising(monkeypatch, bug, "-v") == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "TypeError: unsupported operand" in err


def test_broken_pipe_is_quiet(tmp_path):
    from lga.store.core import DescriptionStore

    DescriptionStore(tmp_path / "s.sqlite").close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lga.cli", "store", "stats", str(tmp_path / "s.sqlite")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader goes away, like `| head -0`
    err = proc.stderr.read().decode()
    assert proc.wait() in (0, 141)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize(
    "flags, line",
    [
        (["--n-train", "-5"], "error: --n-train -5: input should be greater than 0"),
        (["--size", "0"], "error: --size 0: input should be greater than or equal to 32"),
        (["--correlation", "2"], "error: --correlation 2.0: input should be less than or equal"),
    ],
)
def test_synth_values_out_of_range_are_usage_errors(tmp_path, capsys, flags, line):
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), *flags]) == 2
    assert _one_line_error(capsys).startswith(line)
    assert not out.exists()


def test_explain_names_a_missing_or_bad_image_before_loading_any_model(tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    for path, why in ((tmp_path / "gone.png", "image file not found"), (bad, "not an image")):
        out = str(tmp_path / "s")
        assert main(["explain", "--student", "/nonexistent/clip", str(path), "--out", out]) == 1
        assert _one_line_error(capsys).startswith(f"error: {path}: {why}")  # not the student's
    assert not (tmp_path / "s").exists()
