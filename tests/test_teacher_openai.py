"""The openai: teacher against a loopback chat-completions server that injects faults."""

from __future__ import annotations

import logging

import pytest

from describe_support import describe_argv
from lga.cli import main
from lga.store.core import DONE, FAILED, DescriptionStore
from lga.teacher.openai_compat import chat_payload, parse_completion
from lga.testing.fake_chat_server import FakeChatServer, answer_for, every_nth
from lga.testing.tiny_birds import make_tiny_birds

MODEL = "llava-hf/llava-1.5-7b-hf"
KEY = "sk-test-Zq9XKEYNEVERSTORED"


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    return make_tiny_birds(tmp_path_factory.mktemp("birds"), 6)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


def describe(birds, store, server, *extra: str) -> int:
    argv = describe_argv(birds, store, server.base_url, MODEL, "--backoff", "0.01", *extra)
    return main(argv)


def store_bytes(store) -> bytes:
    return b"".join(p.read_bytes() for p in store.parent.glob(store.name + "*"))


def test_faults_are_retried_and_the_key_never_stored(birds, tmp_path, api_key, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    store = tmp_path / "d.sqlite"
    faults = {1: "500", 2: "429", 3: "hang", 4: "malformed", 9: "500", 10: "malformed"}
    with FakeChatServer(faults, hang_s=3.0) as server:
        assert describe(birds, store, server, "--timeout", "0.5", "--concurrency", "3") == 0
        requests = server.requests
    assert len(requests) == 24 + len(faults)
    assert all(r.image_ok for r in requests), "every request carries a base64 PNG image"
    assert all(r.model == MODEL for r in requests)
    assert all(r.authorization == f"Bearer {KEY}" for r in requests)
    with DescriptionStore(store, create=False) as s:
        df = s.frame()
    assert len(df) == 24 and set(df["status"]) == {DONE}
    assert df["attempts"].sum() == 24 + len(faults)
    assert all(t.startswith("A bird seen in image") for t in df["text"])
    out = capsys.readouterr()
    assert KEY.encode() not in store_bytes(store)
    assert KEY not in caplog.text + out.out + out.err


def test_every_fourth_request_failing_is_done_within_three_runs(birds, tmp_path, api_key):
    store = tmp_path / "d.sqlite"
    with FakeChatServer(every_nth(4)) as server:
        counts = []
        for _ in range(3):
            code = describe(birds, store, server, "--max-retries", "0")
            with DescriptionStore(store, create=False) as s:
                df = s.frame()
            counts.append((df["status"] == DONE).sum())
            assert code == (0 if counts[-1] == 24 else 1)  # non-zero while items remain failed
            if counts[-1] == 24:
                break
        assert counts[0] == 18  # 6 of 24 failed on the first run, recorded as failed
        assert counts[-1] == 24 and len(df) == 24
        assert all(r.image_ok for r in server.requests)
        assert len(server.requests) == 24 + 6 + 1  # reruns ask only what is not done
    assert KEY.encode() not in store_bytes(store)


def test_failed_rows_keep_their_error(birds, tmp_path, capsys):
    store = tmp_path / "d.sqlite"
    with FakeChatServer(lambda n: "500") as server:
        assert describe(birds, store, server, "--max-retries", "1", "--limit", "1") == 1
        assert len(server.requests) == 8
    assert "4 failed: 4 HTTP 500" in capsys.readouterr().err
    with DescriptionStore(store, create=False) as s:
        df = s.frame()
    assert set(df["status"]) == {FAILED} and df["text"].isna().all()
    assert all("HTTP 500" in e and "2 attempt" in e for e in df["error"])


@pytest.mark.parametrize("code", ["401", "404"])
def test_refusals_stop_the_run(birds, tmp_path, capsys, monkeypatch, code):
    monkeypatch.setenv("MY_KEY", KEY)
    with FakeChatServer(lambda n: code) as server:
        assert describe(birds, tmp_path / "d.sqlite", server, "--api-key-env", "MY_KEY") == 1
        assert len(server.requests) <= 8  # stopped early, not 24 requests
    err = capsys.readouterr().err
    assert f"HTTP {code}" in err and KEY not in err


def test_named_key_variable_must_be_set(birds, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    with FakeChatServer() as server:
        assert describe(birds, tmp_path / "d.sqlite", server, "--api-key-env", "UNSET_KEY_VAR") == 1
        assert server.requests == []
    assert "UNSET_KEY_VAR" in capsys.readouterr().err


def test_no_key_no_authorization_header(birds, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeChatServer() as server:
        assert describe(birds, tmp_path / "d.sqlite", server, "--limit", "1") == 0
        assert [r.authorization for r in server.requests] == [None] * 4


def test_payload_and_response_parsing():
    body = chat_payload("m", "Describe.", "data:image/png;base64,AAAA", 64)
    image, text = body["messages"][0]["content"]  # the image first, as LLaVA was trained
    assert image["image_url"]["url"].startswith("data:image/png")
    assert text == {"type": "text", "text": "Describe."}
    assert body["max_tokens"] == 64 and body["temperature"] == 0
    ok = b'{"choices": [{"message": {"role": "assistant", "content": " A gull. "}}]}'
    assert parse_completion(ok) == "A gull."
    parts = b'{"choices": [{"message": {"content": [{"type": "text", "text": "A duck"}]}}]}'
    assert parse_completion(parts) == "A duck"
    for bad in (
        b"",
        b"{}",
        b'{"choices": []}',
        b'{"choices": [{"message": {"content": 3}}]}',
        b"<html>502</html>",
    ):
        with pytest.raises(ValueError, match="malformed"):
            parse_completion(bad)
    assert answer_for("p", "u") == answer_for("p", "u")


def test_requests_put_the_image_first_and_reuse_connections(birds, tmp_path):
    with FakeChatServer() as server:
        assert describe(birds, tmp_path / "d.sqlite", server, "--concurrency", "3") == 0
        requests, connections = server.requests, server.connections
    assert len(requests) == 24
    assert {r.content_types for r in requests} == {("image_url", "text")}
    ports = {r.client_port for r in requests}
    # Keep-alive: 24 requests (and the preflight) over at most 3 pooled connections.
    assert 1 <= len(ports) <= connections <= 3


def test_teacher_options_reach_the_body_with_their_json_types(birds, tmp_path, api_key):
    store = tmp_path / "d.sqlite"
    options = ["top_k=7", "repetition_penalty=1.1", 'stop=["\\n", "USER:"]']
    options += ["skip_special_tokens=false", "guided_choice=null", "seed=abc", "top_k=8"]
    with FakeChatServer() as server:
        assert describe(birds, store, server, "--limit", "1") == 0
        flags = [a for o in options for a in ("--teacher-option", o)]
        assert describe(birds, store, server, "--limit", "1", *flags) == 0
        plain, with_options = server.requests[:4], server.requests[4:]
    assert len(with_options) == 4, "other options are another settings variant: asked again"
    assert not {"top_k", "stop"} & set(plain[0].body)
    body = with_options[0].body
    assert body["top_k"] == 8 and type(body["repetition_penalty"]) is float  # the last top_k
    assert body["stop"] == ["\n", "USER:"] and body["skip_special_tokens"] is False
    assert body["guided_choice"] is None and body["seed"] == "abc"
    assert body["model"] == MODEL and body["max_tokens"] == 128 and body["temperature"] == 0
    with DescriptionStore(store, create=False) as s:
        df = s.frame()
    assert len(df) == 8 and df["settings_hash"].nunique() == 2
    assert KEY.encode() not in store_bytes(store)
    assert b'"top_k": 8' in store_bytes(store), "the options are recorded with the settings"


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("model=x", "part of --teacher after '#'"),
        ("messages=[]", "lga builds the messages"),
        ("max_tokens=5", "--max-new-tokens"),
        ("temperature=0.7", "greedily"),
        ("top_k", "not KEY=VALUE"),
        ("=3", "bad teacher option name"),
        ("n=3", "teacher option 'n' is set by lga: lga stores one answer"),
        ("top_p=NaN", "teacher option 'top_p': nan holds a number that is not finite"),
        ("repetition_penalty=1e999", "'repetition_penalty': inf holds a number that is not"),
        ('logit_bias={"50256": -Infinity}', "'logit_bias': {'50256': -inf} holds a number"),
    ],
)
def test_teacher_options_lga_sets_are_refused(birds, tmp_path, capsys, option, words):
    with FakeChatServer() as server:
        code = describe(birds, tmp_path / "d.sqlite", server, "--teacher-option", option)
        assert code == 1 and server.requests == [] and server.preflights == 0
    assert words in capsys.readouterr().err


def test_teacher_options_are_refused_for_other_backends(birds, tmp_path, capsys):
    args = ["describe", "--data", str(birds), "--store", str(tmp_path / "d.sqlite")]
    assert main([*args, "--teacher", "oracle", "--teacher-option", "top_k=1"]) == 1
    assert "openai: teachers" in capsys.readouterr().err
