"""A describe run killed with SIGKILL mid-way resumes: every (image, prompt) exactly once."""

from __future__ import annotations

import os
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
N_IMAGES, N_PROMPTS = 30, 4
TOTAL = N_IMAGES * N_PROMPTS


def done_rows(store: Path) -> int:
    """Done rows as another process sees them (0 while the store does not exist yet)."""
    if not store.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
        try:
            sql = "SELECT COUNT(*) FROM descriptions WHERE status='done'"
            return con.execute(sql).fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # schema not created yet
        return 0


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_kill_9_then_resume(tmp_path):
    birds = make_tiny_birds(tmp_path / "birds", N_IMAGES)
    store = tmp_path / "d.sqlite"
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "OPENAI_API_KEY": "sk-resume-test"}
    with FakeChatServer(delay_s=0.05) as server:
        args = describe_argv(birds, store, server.base_url, "tiny", "--concurrency", "2")
        proc = subprocess.Popen(
            [sys.executable, "-m", "lga.cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while done_rows(store) < 12 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read()!r}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        time.sleep(0.3)  # let requests the killed client left in flight reach the server

        con = sqlite3.connect(store)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
        with DescriptionStore(store, create=False) as s:
            before = s.frame()
        assert 12 <= len(before) < TOTAL, "the kill must land mid-run"
        assert set(before["status"]) == {DONE} and before["text"].notna().all()
        asked_before = len(server.requests)

        assert main(args) == 0  # resume in-process
        asked_after = len(server.requests) - asked_before

    with DescriptionStore(store, create=False) as s:
        after = s.frame()
    assert len(after) == TOTAL and set(after["status"]) == {DONE}
    assert after.groupby(["img_id", "prompt"]).size().eq(1).all()
    assert asked_after == TOTAL - len(before), "finished items are never asked again"
    kept = before.set_index(["img_id", "prompt"])["text"]
    assert after.set_index(["img_id", "prompt"])["text"].loc[kept.index].equals(kept)
