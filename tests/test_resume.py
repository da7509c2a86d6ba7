"""Checkpoints and ``--resume``: a stopped or killed run continues to the same final result."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fit_support import (
    build_fit_env,
    one_thread,  # noqa: F401  (autouse fixture)
)
from lga.cli import build_parser, main
from lga.commands.fit import resolve_fit_config
from lga.errors import LgaError
from lga.train import fit


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_dir):
    return build_fit_env(tmp_path_factory.mktemp("resume"), tiny_clip_dir)


def argv(env: dict, out: Path, epochs: int, *extra: str) -> list[str]:
    return ["fit", "--data", str(env["data"]), "--student", str(env["clip"]), "--method", "lga",
            "--descriptions", str(env["store"]), "--out", str(out), "--batch-size", "8",
            "--epochs", str(epochs), "--lr", "1e-3", "--num-workers", "0", "--no-progress",
            "--device", "cpu", "eval.use_cache=false", "eval.every=2", "train.checkpoint_every=3",
            "lga.weights.class_ce=0.5", *extra]  # fmt: skip


def assert_same_run(a: Path, b: Path) -> None:
    assert (a / "train_log.jsonl").read_text() == (b / "train_log.jsonl").read_text()
    assert json.loads((a / "metrics.json").read_text()) == json.loads(
        (b / "metrics.json").read_text()
    )
    wa, wb = (
        load_file(str(a / "model/model.safetensors")),
        load_file(str(b / "model/model.safetensors")),
    )
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def reference(env):
    """Uninterrupted runs: 3 epochs (12 steps) and 6 epochs (24 steps).

    One thread, as the runs it is compared with: float sums depend on the thread count, and this
    module-scoped fixture runs before the function-scoped ``one_thread`` sets it (run alone, the
    module used to compare a two-thread reference with one-thread resumed runs).
    """
    out, n = {}, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for epochs in (3, 6):
            out[epochs] = env["root"] / f"ref-{epochs}"
            assert main(argv(env, out[epochs], epochs)) == 0
    finally:
        torch.set_num_threads(n)
    return out


def test_stop_then_resume_equals_uninterrupted(env, reference):
    run = env["root"] / "stopped"
    assert main(argv(env, run, 3, "train.stop_after_steps=5")) == 0
    assert not (run / "metrics.json").exists()
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step_00000003", "step_00000005"]  # every 3 steps + at the stop
    # As if killed after step 5 but before its checkpoint was complete: redo steps 4-5.
    shutil.rmtree(run / "checkpoints" / "step_00000005")
    assert main(argv(env, run, 3, "--resume")) == 0
    assert_same_run(reference[3], run)
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["step_00000009", "step_00000012"]  # train.keep_checkpoints = 2


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(env, reference):
    run = env["root"] / "killed"
    cmd = [sys.executable, "-m", "lga.cli", *argv(env, run, 6)]
    envvars = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=envvars, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = run / "checkpoints" / "step_00000003" / "trainer_state.json"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert first.exists(), err.decode()[-2000:]
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "metrics.json").exists()  # killed mid-run, not after the end
    assert main(argv(env, run, 6, "--resume")) == 0
    assert_same_run(reference[6], run)


def test_resume_refuses_a_different_config(env, reference, capsys):
    run = env["root"] / "changed"
    assert main(argv(env, run, 3, "train.stop_after_steps=3")) == 0
    assert main(argv(env, run, 3, "--resume", "train.lr=0.5")) == 1
    err = capsys.readouterr().err
    assert "train.lr: 0.001 -> 0.5" in err
    cfg = resolve_fit_config(build_parser().parse_args(argv(env, run, 4)))
    with pytest.raises(LgaError, match="train.epochs: 3 -> 4"):
        fit(cfg, run, resume=True, progress=False)


# A child process that runs `lga fit` and dies by SIGKILL while it saves the step-6 checkpoint:
# "partial" after writing part of it, "unrenamed" with it complete but not yet moved into place.
_KILL_IN_SAVE = """
import os, signal, sys
from pathlib import Path
import accelerate
from lga.cli import main

mode, real = sys.argv[1], accelerate.Accelerator.save_state

def save_state(self, output_dir=None, **kw):
    if "step_00000006" not in str(output_dir):
        return real(self, output_dir, **kw)
    if mode == "partial":
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"half a file")
    else:
        real(self, output_dir, **kw)
    os.kill(os.getpid(), signal.SIGKILL)

accelerate.Accelerator.save_state = save_state
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["partial", "unrenamed"])
def test_kill_during_checkpoint_save_then_resume(env, reference, mode):
    run = env["root"] / f"killed-in-save-{mode}"
    cmd = [sys.executable, "-c", _KILL_IN_SAVE, mode, *argv(env, run, 6)]
    envvars = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=envvars, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [".step_00000006.tmp", "step_00000003"]
    assert main(argv(env, run, 6, "--resume")) == 0  # from step 3; the half-saved one ignored
    assert_same_run(reference[6], run)
    assert not (ckpts / ".step_00000006.tmp").exists()
