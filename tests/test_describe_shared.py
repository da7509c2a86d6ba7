"""Several describe processes on one store share the work (claims) and take over stale claims."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from describe_support import describe_argv
from lga.cli import main
from lga.store.core import DONE, DescriptionStore
from lga.testing.fake_chat_server import FakeChatServer
from lga.testing.tiny_birds import make_tiny_birds

SRC = Path(__file__).resolve().parents[1] / "src"
N_PROMPTS = 4

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def env() -> dict[str, str]:
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OPENAI_API_KEY": "sk-shared-test"}


def args(birds: Path, store: Path, server: FakeChatServer, *extra: str) -> list[str]:
    return describe_argv(birds, store, server.base_url, "tiny", "--concurrency", "2", *extra)


def claims(store: Path) -> int:
    if not store.exists():
        return 0
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT COUNT(*) FROM claims").fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0
    finally:
        con.close()


def test_three_processes_share_one_store(tmp_path):
    n_images = 24
    total = n_images * N_PROMPTS
    birds = make_tiny_birds(tmp_path / "birds", n_images)
    store = tmp_path / "d.sqlite"
    # Slow answers: one process alone would need 96 * 0.15 / 2 = 7s, so all three overlap.
    with FakeChatServer(delay_s=0.15) as server:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "lga.cli", *args(birds, store, server)],
                env=env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        requests = len(server.requests)
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    done = [int(re.search(r"(\d+) done", out)[1]) for out, _ in outs]
    assert sum(done) == total, outs
    assert all(d > 0 for d in done), f"every process took a share: {done}"
    assert requests <= total * 1.03, f"{requests} requests for {total} items"
    with DescriptionStore(store, read_only=True) as s:
        df = s.frame()
    assert len(df) == total and set(df["status"]) == {DONE}
    assert claims(store) == 0, "finished runs leave no claims"


def _stop_outside_a_transaction(pid: int, store: Path) -> None:
    """SIGSTOP ``pid`` at a moment it holds no write lock on the store (a process stopped inside
    a transaction would block every other writer, which is not what this test is about)."""
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        con = sqlite3.connect(str(store), timeout=0.2, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # locked: let it finish its transaction
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            con.close()
    raise AssertionError("the first run never left its transaction")


def test_claims_of_a_hung_process_are_taken_over_after_their_lease(tmp_path):
    n_images = 8
    total = n_images * N_PROMPTS
    lease = 8.0  # long enough for the second run to start and finish within it, even under load
    birds = make_tiny_birds(tmp_path / "birds", n_images)
    store = tmp_path / "d.sqlite"
    with FakeChatServer(delay_s=30.0) as server:
        cmd = args(birds, store, server, "--claim-lease", str(lease))
        proc = subprocess.Popen(
            [sys.executable, "-m", "lga.cli", *cmd],
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while claims(store) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert claims(store) > 0, "the first run claimed items"
            # A stopped process is alive but renews nothing: only its lease can free its items.
            _stop_outside_a_transaction(proc.pid, store)
            stopped = time.monotonic()
            held = claims(store)
            server.delay_s = 0.0
            assert main(cmd) == 0  # lease still running: its items are left to it
            assert time.monotonic() - stopped < lease, "the second run must end within the lease"
            with DescriptionStore(store, read_only=True) as s:
                assert len(s.frame()) == total - held
            time.sleep(max(0.0, stopped + lease + 0.5 - time.monotonic()))
            assert main(cmd) == 0  # the lease has run out: taken over
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    with DescriptionStore(store, read_only=True) as s:
        df = s.frame()
    assert len(df) == total and set(df["status"]) == {DONE}
