"""Accelerate: two processes equal one, gradient accumulation, precision and checkpointing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fit_support import (
    build_fit_env,
    one_thread,  # noqa: F401  (autouse fixture)
)
from lga.cli import main


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_dir):
    return build_fit_env(tmp_path_factory.mktemp("accelerate"), tiny_clip_dir)


def argv(env: dict, out: Path, method: str, *extra: str) -> list[str]:
    return ["fit", "--data", str(env["data"]), "--student", str(env["clip"]), "--method", method,
            "--descriptions", str(env["store"]), "--out", str(out), "--batch-size", "8",
            "--epochs", "2", "--lr", "1e-3", "--num-workers", "0", "--no-progress",
            "--device", "cpu", "eval.use_cache=false", "eval.at_start=false", *extra]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def steps(run: Path) -> list[dict]:
    lines = (run / "train_log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def assert_close_runs(a: Path, b: Path, *, atol: float) -> None:
    sa, sb = steps(a), steps(b)
    assert [r["step"] for r in sa] == [r["step"] for r in sb] and sa
    for ra, rb in zip(sa, sb, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=atol), (ra["step"], k)
    wa, wb = weights(a), weights(b)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=atol)


@pytest.mark.slow
def test_two_processes_equal_one(env):
    """Same global batch of 8: 2 processes x 4 images vs 1 x 8; contrastive terms gathered."""
    extra = ("lga.weights.class_ce=0.5", "lga.texts=[object_description,object_keywords]")
    one, two = env["root"] / "one", env["root"] / "two"
    assert main(argv(env, one, "lga", *extra)) == 0
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(free_port()),
              "-m", "lga.cli", *argv(env, two, "lga", *extra)]  # fmt: skip
    proc = subprocess.run(
        launch,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert (m1.pop("processes"), m2.pop("processes")) == (1, 2)
    assert m1 == m2
    assert_close_runs(one, two, atol=1e-5)
    assert proc.stdout.count("wrote ") == 1  # only the main process reports (and writes)


def test_gradient_accumulation_equals_the_full_batch(env):
    """ERM's loss is a per-image mean, so 2 micro-batches of 4 equal one batch of 8."""
    full, accum = env["root"] / "erm-full", env["root"] / "erm-accum"
    assert main(argv(env, full, "erm")) == 0
    assert main(argv(env, accum, "erm", "train.gradient_accumulation_steps=2")) == 0
    assert_close_runs(full, accum, atol=1e-5)


def test_gradient_checkpointing_is_exact_and_bf16_runs(env):
    plain, ckpt = env["root"] / "lga-plain", env["root"] / "lga-ckpt"
    assert main(argv(env, plain, "lga")) == 0
    assert main(argv(env, ckpt, "lga", "train.gradient_checkpointing=true")) == 0
    assert_close_runs(plain, ckpt, atol=1e-6)
    bf16 = env["root"] / "lga-bf16"
    assert main(argv(env, bf16, "lga", "train.mixed_precision=bf16")) == 0
    losses = [r["loss"] for r in steps(bf16)]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    # autocast changes the numbers (bf16 matmuls) but not the parameters' dtype
    assert steps(bf16)[0]["loss"] == pytest.approx(steps(plain)[0]["loss"], rel=0.05)
    assert all(w.dtype == torch.float32 for w in weights(bf16).values())


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's TensorBoard event files: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted((run / "logs").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


GROUPS = ["landbird/land", "landbird/water", "waterbird/land", "waterbird/water"]


def test_tensorboard_tracker_logs_groups_and_test(env):
    pytest.importorskip("tensorboard")
    run = env["root"] / "tracked"
    assert main(argv(env, run, "erm", "--report-to", "tensorboard", "eval.every=2")) == 0
    assert (run / "logs" / "lga").is_dir()  # RUN/logs/<tracking.project>
    scalars = _scalars(run)
    log = [json.loads(s) for s in (run / "train_log.jsonl").read_text().splitlines()]
    vals = [r for r in log if "val" in r]
    # every validation, with one tag per group, and the worst group
    assert [step for step, _ in scalars["val/worst_group_accuracy"]] == [r["step"] for r in vals]
    for g in GROUPS:
        got = [v for _, v in scalars[f"val/group_accuracy/{g}"]]
        assert got == pytest.approx([r["val"]["group_accuracy"][g] for r in vals])
    assert [v for _, v in scalars["train/loss"]] == pytest.approx(
        [r["loss"] for r in log if "loss" in r]
    )
    metrics = json.loads((run / "metrics.json").read_text())
    ((step, worst),) = scalars["test/worst_group_accuracy"]
    assert step == metrics["steps"] and worst == pytest.approx(metrics["worst_group_accuracy"])


@pytest.mark.parametrize("method", ["zero-shot", "linear-probe"])
def test_frozen_methods_report_to_trackers(env, method):
    pytest.importorskip("tensorboard")
    run = env["root"] / f"tracked-{method}"
    assert main(argv(env, run, method, "--report-to", "tensorboard")) == 0
    scalars = _scalars(run)
    metrics = json.loads((run / "metrics.json").read_text())
    for g in GROUPS:
        assert scalars[f"test/group_accuracy/{g}"] == [
            (0, pytest.approx(metrics["group_accuracy"][g]))
        ]
    assert len(scalars["val/worst_group_accuracy"]) == 1


def test_report_to_flag(env, tmp_path):
    from lga.cli import build_parser
    from lga.commands.fit import resolve_fit_config
    from lga.train.tracking import run_identity

    parse = build_parser().parse_args
    cfg = resolve_fit_config(parse(argv(env, tmp_path / "r", "lga", "--report-to", "wandb,mlflow")))
    assert cfg.tracking.report_to == ["wandb", "mlflow"]
    cfg = resolve_fit_config(parse(argv(env, tmp_path / "r", "lga", "--report-to", "none")))
    assert cfg.tracking.report_to == []
    with pytest.raises(SystemExit):
        parse(argv(env, tmp_path / "r", "lga", "--report-to", "comet"))
    cfg = resolve_fit_config(
        parse(argv(env, tmp_path / "r", "lga", "--seed", "3", "tracking.tags=[ablation]"))
    )
    name, group, fields, tags = run_identity(cfg, tmp_path / "my-run")
    assert name == "my-run" and group is None
    assert fields["method"] == "lga" and fields["seed"] == "3"
    assert tags[:2] == ["lga", "seed-3"] and tags[-1] == "ablation"


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_stops_the_run_before_training(
    env, tmp_path, capsys, tracker
):
    from lga.train.tracking import tracker_available

    if tracker_available(tracker):
        pytest.skip(f"{tracker} is installed here")
    run = tmp_path / "run"
    assert main(argv(env, run, "erm", "--report-to", f"tensorboard,{tracker}")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: --report-to {tracker}: not installed; install it with "
        f"pip install 'lga[{tracker}]' (or report to none)"
    ]
    assert not run.exists()
