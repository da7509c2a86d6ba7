"""A loopback OpenAI-compatible chat-completions server with injectable faults, for tests.

``FakeChatServer(faults=...)`` answers ``POST /v1/chat/completions`` with a deterministic
description of the prompt and image it received, and records every request (headers, whether it
carried a valid base64 image). ``faults`` maps the 1-based request number to a fault: an HTTP
status (``"500"``, ``"429"``, ``"401"``...), ``"hang"`` (sleeps ``hang_s`` before answering) or
``"malformed"`` (a body that is not a chat completion).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

Fault = str | None


@dataclass
class Request:
    """What the server saw of one request."""

    number: int
    authorization: str | None
    model: str | None
    prompt: str | None
    image_ok: bool
    fault: Fault


@dataclass
class _State:
    faults: Callable[[int], Fault]
    delay_s: float
    hang_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[Request] = field(default_factory=list)


def every_nth(n: int, fault: str = "500") -> Callable[[int], Fault]:
    """A fault schedule failing requests n, 2n, 3n, ..."""
    return lambda k: fault if k % n == 0 else None


def _image_ok(url: str | None) -> bool:
    if not url or not url.startswith("data:image/") or ";base64," not in url:
        return False
    try:
        Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1], validate=True))).load()
    except Exception:  # noqa: BLE001 - any decoding failure means "not a valid image"
        return False
    return True


def _parse(body: dict) -> tuple[str | None, str | None]:
    prompt = image = None
    for message in body.get("messages", []):
        for part in message.get("content", []) if isinstance(message.get("content"), list) else []:
            if part.get("type") == "text":
                prompt = part.get("text")
            elif part.get("type") == "image_url":
                image = (part.get("image_url") or {}).get("url")
    return prompt, image


def answer_for(prompt: str, image_url: str) -> str:
    """The deterministic answer the server gives (depends on prompt and image)."""
    digest = hashlib.sha256(image_url.encode()).hexdigest()[:8]
    return f"A bird seen in image {digest}, answering: {prompt[:40]}, with long neck, webbed feet"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        state = self.server.state
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = {}
        prompt, image = _parse(body)
        with state.lock:
            number = len(state.requests) + 1
            fault = state.faults(number)
            state.requests.append(
                Request(
                    number,
                    self.headers.get("Authorization"),
                    body.get("model"),
                    prompt,
                    _image_ok(image),
                    fault,
                )
            )
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        time.sleep(state.hang_s if fault == "hang" else state.delay_s)
        if fault and fault.isdigit():
            return self._send(int(fault), {"error": {"message": f"injected {fault}"}})
        if fault == "malformed":
            return self._send(200, None, raw=b'{"choices": [{"message": ')
        text = answer_for(prompt or "", image or "")
        self._send(
            200,
            {
                "id": f"cmpl-{number}",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
            },
        )

    def _send(self, code: int, payload: dict | None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class FakeChatServer:
    """Start with ``with FakeChatServer(...) as srv:``; ``srv.base_url`` ends in ``/v1``.

    Args:
        faults: request number (1-based) -> fault, or a dict of them.
        delay_s: seconds every answer takes.
        hang_s: seconds a ``"hang"`` fault sleeps.
    """

    def __init__(
        self,
        faults: Callable[[int], Fault] | dict[int, str] | None = None,
        *,
        delay_s: float = 0.0,
        hang_s: float = 5.0,
    ):
        schedule = faults.get if isinstance(faults, dict) else faults or (lambda _: None)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State(schedule, delay_s, hang_s)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[Request]:
        with self._server.state.lock:
            return list(self._server.state.requests)

    def __enter__(self) -> FakeChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
