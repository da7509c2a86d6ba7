"""A loopback OpenAI-compatible chat-completions server with injectable faults, for tests.

``FakeChatServer(faults=...)`` answers ``POST /v1/chat/completions`` with a deterministic
description of the prompt and image it received, and records every request (headers, whether it
carried a valid base64 image, the order of its content parts, its body, the client's port).
``GET /v1/models`` (the client's preflight) lists the model and is counted apart
(``preflights``). It speaks HTTP/1.1 with keep-alive, like vLLM, and counts the connections it
accepts (``connections``). ``faults`` maps the 1-based request number to a fault:

- an HTTP status (``"500"``, ``"429"``, ``"401"``...), with a ``Retry-After: retry_after``
  header when ``retry_after`` is set;
- ``"hang"``: sleeps ``hang_s`` before answering;
- ``"malformed"``: a 200 body that is not JSON; ``"no-choices"``: JSON without ``choices``;
- ``"long"``: a 200 answer of ``long_chars`` characters;
- ``"reset"``: starts a 200 answer, then resets the connection mid-body;
- ``"echo-auth"``: a 500 whose body repeats the request's ``Authorization`` header (a server
  that leaks the key into error messages);
- ``"gone"``: the server stops listening (later connections are refused) and drops this one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import struct
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
    content_types: tuple[str, ...] = ()  # the user message's content part types, in order
    body: dict = field(default_factory=dict, repr=False)  # the request body as sent
    client_port: int = 0  # the client's port: one per connection


@dataclass
class _State:
    faults: Callable[[int], Fault]
    delay_s: float
    hang_s: float
    retry_after: str | None = None
    long_chars: int = 100_000
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[Request] = field(default_factory=list)
    preflights: int = 0
    connections: int = 0


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


def _parse(body: dict) -> tuple[str | None, str | None, tuple[str, ...]]:
    prompt = image = None
    types: list[str] = []
    for message in body.get("messages", []):
        for part in message.get("content", []) if isinstance(message.get("content"), list) else []:
            types.append(str(part.get("type")))
            if part.get("type") == "text":
                prompt = part.get("text")
            elif part.get("type") == "image_url":
                image = (part.get("image_url") or {}).get("url")
    return prompt, image, tuple(types)


def answer_for(prompt: str, image_url: str) -> str:
    """The deterministic answer the server gives (depends on prompt and image)."""
    digest = hashlib.sha256(image_url.encode()).hexdigest()[:8]
    return f"A bird seen in image {digest}, answering: {prompt[:40]}, with long neck, webbed feet"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client may send many requests per connection
    disable_nagle_algorithm = True  # headers and body go out at once, as a real server's do
    server: _Server

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):  # the client reset a kept-alive connection
            pass

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path.rstrip("/") != "/v1/models":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        with self.server.state.lock:
            self.server.state.preflights += 1
        self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        state = self.server.state
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = {}
        prompt, image, types = _parse(body)
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
                    types,
                    body,
                    self.client_address[1],
                )
            )
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        if fault == "gone":
            return self._gone()
        time.sleep(state.hang_s if fault == "hang" else state.delay_s)
        if fault and fault.isdigit():
            headers = {"Retry-After": state.retry_after} if state.retry_after else {}
            return self._send(int(fault), {"error": {"message": f"injected {fault}"}}, **headers)
        if fault == "malformed":
            return self._send(200, None, raw=b'{"choices": [{"message": ')
        if fault == "no-choices":
            return self._send(200, {"object": "error", "message": "overloaded"})
        if fault == "echo-auth":
            auth = self.headers.get("Authorization")
            return self._send(500, {"error": {"message": f"bad request with {auth}"}})
        if fault == "reset":
            return self._reset()
        text = answer_for(prompt or "", image or "")
        if fault == "long":
            text = (text + " ") * (state.long_chars // len(text) + 1)
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

    def _reset(self) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
        self.wfile.write(head + b'{"choices": [{"mess')
        self.wfile.flush()
        self._abort()

    def _abort(self) -> None:
        # SO_LINGER 0: close() sends a TCP reset instead of an orderly FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _gone(self) -> None:
        server = self.server

        def stop() -> None:
            server.shutdown()
            server.server_close()

        threading.Thread(target=stop, daemon=True).start()
        self._abort()

    def _send(self, code: int, payload: dict | None, raw: bytes | None = None, **headers) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State

    def process_request(self, request, client_address) -> None:  # noqa: ANN001 - socketserver's
        with self.state.lock:
            self.state.connections += 1
        super().process_request(request, client_address)


class FakeChatServer:
    """Start with ``with FakeChatServer(...) as srv:``; ``srv.base_url`` ends in ``/v1``.

    Args:
        faults: request number (1-based) -> fault, or a dict of them.
        delay_s: seconds every answer takes.
        hang_s: seconds a ``"hang"`` fault sleeps.
        retry_after: the ``Retry-After`` header value sent with injected HTTP errors.
        long_chars: the length of a ``"long"`` answer.
    """

    def __init__(
        self,
        faults: Callable[[int], Fault] | dict[int, str] | None = None,
        *,
        delay_s: float = 0.0,
        hang_s: float = 5.0,
        retry_after: str | None = None,
        long_chars: int = 100_000,
    ):
        schedule = faults.get if isinstance(faults, dict) else faults or (lambda _: None)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State(schedule, delay_s, hang_s, retry_after, long_chars)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[Request]:
        with self._server.state.lock:
            return list(self._server.state.requests)

    @property
    def delay_s(self) -> float:
        """Seconds every answer takes (may be changed while the server runs)."""
        return self._server.state.delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        self._server.state.delay_s = value

    @property
    def preflights(self) -> int:
        with self._server.state.lock:
            return self._server.state.preflights

    @property
    def connections(self) -> int:
        """TCP connections accepted so far (preflight included)."""
        with self._server.state.lock:
            return self._server.state.connections

    def __enter__(self) -> FakeChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
