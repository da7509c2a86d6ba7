"""The openai: teacher under faults: each test names one fault and checks what it must cause."""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import socket
import time
from datetime import datetime, timedelta, timezone

import httpcore
import httpx
import pytest
from PIL import Image

from describe_support import describe_argv
from lga.cli import main
from lga.errors import ConfigError
from lga.store.core import DONE, FAILED, DescriptionStore
from lga.teacher.base import FailureKind, WorkItem, parse_teacher_spec
from lga.teacher.openai_compat import (
    OpenAITeacher,
    TeacherUnreachable,
    classify_connection_error,
    retry_after_s,
)
from lga.teacher.prompts import Format, Prompt, Target
from lga.testing.fake_chat_server import FakeChatServer
from lga.testing.tiny_birds import make_tiny_birds

MODEL = "tiny-model"
KEY = "sk-faults-Q7WKEYMUSTNEVERLEAK"
ITEMS = 24  # 6 images x 4 prompts


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    return make_tiny_birds(tmp_path_factory.mktemp("birds"), 6)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def run(birds, store, base_url: str, *extra: str) -> int:
    return main(describe_argv(birds, store, base_url, MODEL, "--backoff", "0.01", *extra))


def rows(store):
    if not store.exists():
        return None
    with DescriptionStore(store, read_only=True) as s:
        return s.frame()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


ITEM = WorkItem(
    1,
    Prompt(name="p", target=Target.OBJECT, format=Format.TEXT, text="Describe the bird."),
    lambda: Image.new("RGB", (8, 8), "blue"),
)


@pytest.mark.parametrize("code", ["502", "503", "504"])
def test_gateway_errors_are_retried_then_succeed(birds, tmp_path, code):
    store = tmp_path / "d.sqlite"
    with FakeChatServer({1: code, 2: code, 5: code}) as server:
        assert run(birds, store, server.base_url, "--concurrency", "1") == 0
        assert len(server.requests) == ITEMS + 3
    df = rows(store)
    assert set(df["status"]) == {DONE} and df["attempts"].sum() == ITEMS + 3


def test_retry_after_is_honoured():
    def timed(retry_after):
        with FakeChatServer({1: "429"}, retry_after=retry_after) as server:
            teacher = OpenAITeacher(server.base_url, MODEL, backoff=0.01)
            start = time.perf_counter()
            _, out = teacher.ask(ITEM)
            return time.perf_counter() - start, out

    waited, out = timed("1")
    assert out.ok and out.attempts == 2
    assert 0.95 <= waited < 3.0, "the retry waits the server's Retry-After, not the 0.01s backoff"
    quick, out = timed(None)
    assert out.ok and out.attempts == 2 and quick < 0.5
    # The HTTP-date form: 2 s ahead at a 1 s resolution waits between 1 and 2 s.
    when = datetime.now(timezone.utc) + timedelta(seconds=2)
    waited, out = timed(email.utils.format_datetime(when, usegmt=True))
    assert out.ok and out.attempts == 2 and 0.9 <= waited < 3.0


def test_retry_after_forms():
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after_s("7", now=now) == 7.0 and retry_after_s("1.5", now=now) == 1.5
    assert retry_after_s("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert retry_after_s("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0  # in the past
    assert retry_after_s("-3", now=now) == 0.0
    assert retry_after_s("soon", now=now) is None and retry_after_s(None) is None


def test_nothing_listening_fails_fast_with_the_cause(birds, tmp_path, capsys):
    store = tmp_path / "d.sqlite"
    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.perf_counter()
    assert run(birds, store, url) == 1
    assert time.perf_counter() - start < 5.0
    err = capsys.readouterr().err
    assert "connection refused" in err and url in err
    df = rows(store)
    assert df is None or df.empty, "no failed rows for a server that is not there"


def _wrapped(cause: BaseException, outer: type[Exception] = httpx.ConnectError) -> Exception:
    """``cause`` as httpx raises it: an httpx error from an httpcore error from the socket's."""
    try:
        try:
            raise cause
        except OSError as e:
            raise httpcore.ConnectError(str(e)) from e
    except httpcore.ConnectError as e:
        try:
            raise outer(str(e)) from e
        except outer as wrapped:
            return wrapped


def test_connection_errors_are_classified_through_httpx_wrapping():
    dns = _wrapped(socket.gaierror(-2, "Name or service not known"))
    kind, words = classify_connection_error(dns)
    assert kind is FailureKind.DNS and "Name or service not known" in words
    refused = _wrapped(ConnectionRefusedError(111, "Connection refused"))
    assert classify_connection_error(refused)[0] is FailureKind.CONNECTION_REFUSED
    assert classify_connection_error(httpx.ReadTimeout("timed out"))[0] is FailureKind.TIMEOUT
    lost = httpx.RemoteProtocolError("peer closed connection without sending complete body")
    assert classify_connection_error(lost)[0] is FailureKind.CONNECTION_LOST


def test_unknown_host_stops_the_run_naming_it():
    teacher = OpenAITeacher("http://no-such-host.invalid:9/v1", MODEL, timeout=5)
    with pytest.raises(TeacherUnreachable, match="DNS failure"):
        teacher.preflight()


def test_server_gone_mid_run_trips_the_breaker_and_keeps_answers(birds, tmp_path, capsys):
    store = tmp_path / "d.sqlite"
    with FakeChatServer({5: "gone"}) as server:
        start = time.perf_counter()
        code = run(
            birds, store, server.base_url, "--concurrency", "1", "--max-connect-failures", "3"
        )
        elapsed = time.perf_counter() - start
        assert server.preflights == 1
    assert code == 1 and elapsed < 5.0
    err = capsys.readouterr().err
    assert "3 connections in a row" in err and "connection refused" in err
    df = rows(store)
    assert (df["status"] == DONE).sum() == 4, "answers from before the server went are kept"


def test_reset_connection_is_retried(birds, tmp_path):
    store = tmp_path / "d.sqlite"
    with FakeChatServer({1: "reset", 2: "reset", 7: "reset"}) as server:
        assert run(birds, store, server.base_url, "--concurrency", "2") == 0
        assert len(server.requests) == ITEMS + 3
    assert set(rows(store)["status"]) == {DONE}


def test_hung_server_costs_an_item_its_deadline(birds, tmp_path, capsys):
    store = tmp_path / "d.sqlite"
    with FakeChatServer(lambda n: "hang", hang_s=10.0) as server:
        start = time.perf_counter()
        code = run(
            birds,
            store,
            server.base_url,
            "--limit",
            "1",
            "--concurrency",
            "4",
            "--timeout",
            "0.3",
            "--item-deadline",
            "1",
        )
        elapsed = time.perf_counter() - start
    assert code == 1
    assert elapsed < 4.0, f"4 hung items in parallel took {elapsed:.1f}s, over their 1s deadline"
    df = rows(store)
    assert set(df["status"]) == {FAILED}
    assert all("deadline" in e or "timeout" in e for e in df["error"])
    assert "4 failed: 4 timeout" in capsys.readouterr().err


def test_long_answer_is_cut_and_marked(birds, tmp_path, capsys):
    store = tmp_path / "d.sqlite"
    with FakeChatServer({1: "long"}, long_chars=10_000_000) as server:
        code = run(birds, store, server.base_url, "--concurrency", "1", "--max-new-tokens", "16")
    assert code == 0
    df = rows(store)
    cut = df[df["truncated"]]
    assert len(cut) == 1 and len(cut["text"].iloc[0]) == 16 * 16  # 16 characters per token
    assert not df[~df["truncated"]]["text"].str.len().gt(256).any()
    assert "1 answer(s) cut to the length cap" in capsys.readouterr().out


def test_body_over_the_limit_is_not_read():
    with FakeChatServer(lambda n: "long", long_chars=50_000) as server:
        teacher = OpenAITeacher(server.base_url, MODEL, max_body_bytes=10_000)
        _, out = teacher.ask(ITEM)
        assert len(server.requests) == 1, "a too-large answer is not asked again"
    assert out.kind is FailureKind.TOO_LARGE and "10000 byte limit" in out.error


@pytest.mark.parametrize(("fault", "words"), [("malformed", "not JSON"), ("no-choices", "choices")])
def test_malformed_answers_are_failures(birds, tmp_path, capsys, fault, words):
    store = tmp_path / "d.sqlite"
    with FakeChatServer(lambda n: fault) as server:
        assert run(birds, store, server.base_url, "--limit", "1", "--max-retries", "0") == 1
    df = rows(store)
    assert set(df["status"]) == {FAILED} and all(words in e for e in df["error"])
    assert "4 failed: 4 malformed answer" in capsys.readouterr().err


def test_key_echoed_by_the_server_is_never_stored_or_shown(birds, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    store = tmp_path / "d.sqlite"
    with FakeChatServer(lambda n: "echo-auth") as server:
        assert run(birds, store, server.base_url, "--limit", "1", "--max-retries", "1") == 1
        assert all(r.authorization == f"Bearer {KEY}" for r in server.requests)
    df = rows(store)
    assert set(df["status"]) == {FAILED}
    assert all("Bearer ***" in e for e in df["error"]), "the error kept, the key blanked"
    files = b"".join(p.read_bytes() for p in tmp_path.glob("d.sqlite*"))
    assert KEY.encode() not in files
    out = capsys.readouterr()
    assert KEY not in caplog.text + out.out + out.err


def test_consecutive_failures_stop_the_run(birds, tmp_path, capsys):
    store = tmp_path / "d.sqlite"
    with FakeChatServer(lambda n: "500") as server:
        code = run(
            birds,
            store,
            server.base_url,
            "--concurrency",
            "1",
            "--max-retries",
            "0",
            "--max-consecutive-failures",
            "5",
        )
        assert len(server.requests) == 5, "stopped after 5 failed items, not 24"
    assert code == 1
    err = capsys.readouterr().err
    assert "5 failed: 5 HTTP 500" in err and "5 failed items in a row" in err
    assert len(rows(store)) == 5


def test_httpx_logs_never_show_the_key(caplog):
    # httpx logs request lines at INFO and httpcore every step at DEBUG (what -vv shows).
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    with FakeChatServer({1: "echo-auth"}) as server:
        teacher = OpenAITeacher(server.base_url, MODEL, backoff=0.01)
        teacher.preflight()
        _, out = teacher.ask(ITEM)
        assert server.requests[0].authorization == f"Bearer {KEY}"
    assert out.ok and out.attempts == 2
    assert "HTTP Request: POST" in caplog.text and "send_request_headers" in caplog.text
    assert KEY not in caplog.text


def test_keys_of_the_api_never_enter_the_settings(monkeypatch):
    with pytest.raises(ConfigError, match=r"holds the API key.*OPENAI_API_KEY"):
        OpenAITeacher("http://127.0.0.1:9/v1", MODEL, request_options={"user": f"x-{KEY}"})
    teacher = OpenAITeacher("http://127.0.0.1:9/v1", MODEL, request_options={"top_k": 7})
    assert KEY not in repr(teacher) + json.dumps(teacher.settings) + teacher.id


@pytest.mark.parametrize(
    "key, why",
    [
        (KEY + "\r", "contains a control character"),
        (KEY + "\n", "contains a control character"),
        (KEY[:8] + "\x1b" + KEY[8:], "contains a control character"),
        (KEY + " ", "contains whitespace"),
        (KEY[:8] + "é" + KEY[8:], "contains a non-ASCII character"),
    ],
)
def test_malformed_key_is_named_and_never_shown(birds, tmp_path, capsys, monkeypatch, key, why):
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with FakeChatServer(lambda n: "ok") as server:
        assert run(birds, tmp_path / "d.sqlite", server.base_url) == 1
        assert server.requests == []
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: OPENAI_API_KEY is malformed ({why}); the key is not shown"]
    assert KEY[8:] not in "\n".join(err)


def test_userinfo_of_the_url_is_never_echoed(birds, tmp_path, capsys, monkeypatch):
    secret = "hunter2-USERINFO-SECRET"
    url = f"http://user:{secret}@127.0.0.1:{free_port()}/v1"
    assert run(birds, tmp_path / "d.sqlite", url) == 1
    err = capsys.readouterr().err
    assert "connection refused" in err and url.replace(f"user:{secret}@", "") in err
    assert secret not in err
    monkeypatch.delenv("OPENAI_API_KEY")
    with FakeChatServer(lambda n: "ok") as server:  # the credentials still go, as basic auth
        url = server.base_url.replace("http://", f"http://user:{secret}@")
        teacher = OpenAITeacher(url, MODEL)
        _, out = teacher.ask(ITEM)
        teacher.close()
    assert out.ok
    basic = base64.b64encode(f"user:{secret}".encode()).decode()
    assert server.requests[0].authorization == f"Basic {basic}"
    assert secret not in repr(teacher) + teacher.url + teacher.base_url
    with pytest.raises(ConfigError, match="bad teacher spec") as e:  # no #model
        parse_teacher_spec(f"openai:http://user:{secret}@127.0.0.1/v1")
    assert secret not in str(e.value)
