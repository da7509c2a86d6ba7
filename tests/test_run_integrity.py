"""Nothing half made: a failed fit leaves no model/, an unfinished run is never scored, a local
path is never taken for a hub id, and damaged weights are named in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from fit_support import build_fit_env, one_thread  # noqa: F401  (autouse fixture)
from lga.cli import main
from lga.config import resolve_config
from lga.errors import ConfigError
from lga.hub import looks_like_path
from lga.rundir import RunDir
from lga.student.model import resolve_student_spec
from lga.train import FitConfig, fit


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_dir):
    return build_fit_env(tmp_path_factory.mktemp("integrity"), tiny_clip_dir)


def _cfg(env: dict, method: str) -> FitConfig:
    base = {
        "method": method,
        "data": {"root": str(env["data"]), "num_workers": 0},
        "student": {"spec": str(env["clip"]), "device": "cpu"},
        "descriptions": {"store": str(env["store"])},
        "train": {"batch_size": 8, "epochs": 1},
        "eval": {"use_cache": False, "at_start": False},
    }
    return resolve_config(FitConfig, base=base)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _eval(env: dict, student: str | Path, out: Path) -> int:
    argv = ["eval", "--data", str(env["data"]), "--student", str(student), "--out", str(out)]
    return main([*argv, "--no-cache", "--no-progress", "--num-workers", "0"])


def test_a_fine_tune_that_fails_leaves_no_model_and_resumes(env, tmp_path, monkeypatch, capsys):
    import importlib

    fit_module = importlib.import_module("lga.train.finetune")  # where the test is scored

    def boom(*args, **kwargs):
        raise RuntimeError("test split unreadable")

    out = tmp_path / "erm"
    monkeypatch.setattr(fit_module, "evaluate_split", boom)  # fails after training
    with pytest.raises(RuntimeError, match="unreadable"):
        fit(_cfg(env, "erm"), out, progress=False)
    rd = RunDir(out)
    assert not rd.model_path.exists() and not rd.finished
    assert (rd.staged_model_path / "config.json").is_file()  # the best so far, for --resume
    # the unfinished run is not a student, neither as RUN nor as its staged model's run
    assert _eval(env, out, tmp_path / "ev") == 1
    assert f"has not finished: no {out / 'metrics.json'}" in _one_line_error(capsys)
    assert not (tmp_path / "ev").exists()

    monkeypatch.undo()
    result = fit(_cfg(env, "erm"), out, resume=True, progress=False)
    assert result.finished and rd.model_dir == out / "model"
    assert not rd.staged_model_path.exists()
    assert resolve_student_spec(str(out)) == str(out / "model")


def test_a_failure_just_before_the_metrics_removes_the_model(env, tmp_path, monkeypatch):
    def boom(self, metrics):
        raise OSError("disk full")

    monkeypatch.setattr(RunDir, "write_metrics", boom)
    out = tmp_path / "probe"
    with pytest.raises(OSError, match="disk full"):
        fit(_cfg(env, "linear-probe"), out, progress=False)
    assert not (out / "model").exists() and not (out / "metrics.json").exists()


def test_eval_refuses_the_model_of_an_unfinished_run(env, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(env["clip"], run / "model")
    (run / "config.yaml").write_text(yaml.safe_dump({"student": {"spec": str(env["clip"])}}))
    for student in (run, run / "model"):
        assert _eval(env, student, tmp_path / "ev") == 1
        msg = _one_line_error(capsys)
        assert f"{run} is a run that has not finished: no {run / 'metrics.json'}" in msg
    (run / "metrics.json").write_text("{}")  # finished
    assert resolve_student_spec(str(run / "model")) == str(run / "model")
    assert resolve_student_spec(str(run)) == str(run / "model")
    shutil.rmtree(run / "model")  # a finished zero-shot run: its student, unchanged
    assert resolve_student_spec(str(run)) == str(env["clip"])


def test_truncated_student_weights_are_named(env, tmp_path, capsys):
    clip = Path(shutil.copytree(env["clip"], tmp_path / "clip"))
    weights = clip / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "ev"
    assert _eval(env, clip, out) == 1
    msg = _one_line_error(capsys)
    assert msg.startswith(f"error: damaged weights file {weights}: ") and "truncated" in msg
    assert not out.exists()
    assert main(["fit", "--data", str(env["data"]), "--student", str(clip), "--out", str(out),
                 "--method", "zero-shot"]) == 1  # fmt: skip
    assert "damaged weights file" in _one_line_error(capsys) and not out.exists()


def test_a_header_that_is_not_safetensors_is_named(env, tmp_path):
    clip = Path(shutil.copytree(env["clip"], tmp_path / "clip"))
    (clip / "model.safetensors").write_bytes((12).to_bytes(8, "little") + b"not json at all")
    with pytest.raises(ConfigError, match="its header is not safetensors JSON"):
        resolve_student_spec(str(clip))


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ("openai/clip-vit-base-patch32", False),
        ("google/siglip-base-patch16-224", False),
        ("gpt2", False),
        ("./clip", True),
        ("../clip", True),
        ("/abs/clip", True),
        ("~/clip", True),
        ("runs/fit-lga/model", True),  # more than one slash
        ("my clip", True),  # no valid hub id
        ("here/clip", True),  # here/ is a folder in the working directory
    ],
)
def test_paths_and_hub_ids(spec, path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    assert looks_like_path(spec) is path


def test_a_missing_folder_under_a_local_folder_is_not_found(env, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "students").mkdir()
    assert _eval(env, "students/nope", tmp_path / "ev") == 1
    assert _one_line_error(capsys) == "error: student folder not found: students/nope"
