"""The run folder's records, typed: metrics.json as RunMetrics, config.yaml as the run's
FitConfig or EvalRunConfig; round trips, folders written before the types, malformed records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from lga.cli import main
from lga.config import EvalRunConfig
from lga.errors import LgaError
from lga.records import RunMetrics
from lga.report.runs import load_run
from lga.rundir import RunDir
from lga.train.config import FitConfig, load_run_config

MAIN_RUNS = Path(__file__).parent / "data" / "main-runs"  # written by lga before the types
RUNS = ["fit-erm", "fit-zero-shot", "fit-linear-probe", "eval"]


@pytest.mark.parametrize("name", RUNS)
def test_runs_written_before_the_types_read_back_and_write_the_same_json(name, tmp_path):
    run = MAIN_RUNS / name
    text = (run / "metrics.json").read_text()
    record = RunDir(run).read_record()
    assert record.to_json() == json.loads(text)
    assert json.dumps(record.to_json(), indent=2) == text  # the same keys, order and values
    RunDir(tmp_path).write_metrics(record)
    assert (tmp_path / "metrics.json").read_text() == text
    config = load_run_config(run)
    assert isinstance(config, EvalRunConfig if name == "eval" else FitConfig)
    # every setting the old file has reads back as written; settings added since take their
    # defaults (e.g. lga.head)
    old, now = yaml.safe_load((run / "config.yaml").read_text()), config.model_dump(mode="json")
    assert _without_new_keys(now, old) == old
    default = type(config).model_validate(old).model_dump(mode="json")
    assert now == default


def _without_new_keys(now: dict, old: dict) -> dict:
    return {
        k: _without_new_keys(v, old[k]) if isinstance(v, dict) and isinstance(old[k], dict) else v
        for k, v in now.items()
        if k in old
    }


def test_the_report_reads_their_seeds_and_facts_from_the_records():
    runs = {name: load_run(MAIN_RUNS / name) for name in RUNS}
    assert runs["fit-erm"].seed == {"sample.seed": 2, "train.seed": 2}
    assert runs["fit-erm"].record.steps == 3 and runs["fit-erm"].n_train == 24
    assert runs["fit-linear-probe"].record.C is not None
    assert runs["fit-zero-shot"].record.val is not None  # its validation, in metrics.json
    assert runs["eval"].seed == {} and runs["eval"].seed_label == "eval"  # its own seed
    for run in runs.values():
        assert run.base == "toy" and run.record.unseen.places == ["snow", "desert"]
        assert run.metrics["worst_group_accuracy"] == run.record.worst_group_accuracy


def test_metrics_round_trip_keeps_unknown_keys_and_writes_only_what_was_set():
    data = {"method": "erm", "accuracy": 0.5, "worst_group_accuracy": 0.25,
            "group_accuracy": {"a/b": 0.25}, "from_another_tool": [1, 2]}  # fmt: skip
    record = RunMetrics.from_json(data)
    assert record.to_json() == data and record.val is None and record.n is None


def _bad(path: Path, **changes) -> Path:
    run = path / "run"
    shutil.copytree(MAIN_RUNS / "fit-erm", run)
    metrics = json.loads((run / "metrics.json").read_text())
    for key, value in changes.items():
        if value is None:
            del metrics[key]
        elif key == "unseen_n":
            metrics["unseen"]["n"] = value
        else:
            metrics[key] = value
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"accuracy": None}, "'accuracy': Field required"),
        ({"worst_group_accuracy": "high"}, "'worst_group_accuracy'"),
        ({"unseen_n": "eight"}, "'unseen.n'"),
        ({"group_accuracy": [0.5]}, "'group_accuracy'"),
    ],
)
def test_a_malformed_metrics_file_is_named_with_its_key(tmp_path, changes, key):
    run = _bad(tmp_path, **changes)
    with pytest.raises(LgaError, match=rf"{run / 'metrics.json'}: malformed record: key {key}"):
        load_run(run)


def test_a_metrics_file_that_is_not_an_object_is_named(tmp_path):
    run = _bad(tmp_path)
    (run / "metrics.json").write_text("[1, 2]")
    with pytest.raises(LgaError, match=r"metrics.json: expected a JSON object, got list"):
        RunDir(run).read_record()


def test_a_malformed_config_is_named_with_its_key(tmp_path):
    run = _bad(tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["train"]["lr"] = "fast"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(LgaError, match=rf"{run / 'config.yaml'}: not a FitConfig: key 'train.lr'"):
        load_run(run)


def test_lga_never_writes_a_malformed_metrics_file(tmp_path):
    bad = {"method": "erm", "accuracy": "x", "worst_group_accuracy": 0, "group_accuracy": {}}
    with pytest.raises(LgaError, match="key 'accuracy'"):
        RunDir(tmp_path).write_metrics(bad)
    assert not (tmp_path / "metrics.json").exists()


def test_the_report_command_names_the_malformed_file(tmp_path, capsys):
    run = _bad(tmp_path, accuracy=None)
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) != 0
    err = capsys.readouterr().err
    assert f"{run / 'metrics.json'}: malformed record: key 'accuracy'" in err
    assert "Traceback" not in err
