"""A teacher behind any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, TGI).

Standard library only (``urllib`` in a thread pool): ``concurrency`` requests in flight, a
timeout per request, retries with exponential backoff and jitter on 429, 5xx, timeouts,
connection errors and malformed bodies, all within a deadline per item. An item that still fails
becomes a failed outcome (the run goes on; the next run retries it). Bad credentials, a wrong URL
or an unknown model (401, 403, 404) stop the run: every item would fail the same way. So does a
server that cannot be reached: a preflight ``GET /models`` before the first item, then a circuit
breaker after ``max_connect_failures`` refused (or unresolvable) connections in a row.

Answers are capped: a body over ``max_body_bytes`` is not read, and an answer longer than
``max_answer_chars`` (16 characters per token asked for, by default) is cut and marked truncated.

The API key is read from the environment and only ever put in the ``Authorization`` header: it
is not part of the teacher id or settings, and it is scrubbed from every error message.
"""

from __future__ import annotations

import base64
import errno
import http.client
import io
import itertools
import json
import logging
import os
import queue
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from PIL import Image

from lga.data.images import ImageLoadError
from lga.errors import ConfigError, LgaError
from lga.teacher.base import FailureKind, Outcome, Results, WorkItem

log = logging.getLogger(__name__)

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
CHARS_PER_TOKEN_CAP = 16  # an answer of max_new_tokens tokens is far shorter than this
MAX_BODY_BYTES = 16 * 2**20
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Failures that mean no server is there at all (not a slow or failing one).
_UNREACHABLE = {FailureKind.CONNECTION_REFUSED, FailureKind.DNS, FailureKind.UNREACHABLE}


class TeacherServerError(LgaError):
    """The server refuses every request (credentials, URL, model): the run cannot go on."""


class TeacherUnreachable(LgaError):
    """No server answers at the URL (connection refused, unknown host): the run cannot go on."""


class _Failure(Exception):
    def __init__(self, message: str, kind: FailureKind, status: int | None = None):
        super().__init__(message)
        self.kind, self.status = kind, status


class _Retryable(_Failure):
    def __init__(
        self,
        message: str,
        kind: FailureKind,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, kind, status)
        self.retry_after = retry_after


class _Permanent(_Failure):
    """This item cannot succeed by retrying (e.g. HTTP 400 for its image)."""


def classify_connection_error(e: BaseException) -> tuple[FailureKind, str]:
    """The kind of a failed connection or read, and its reason in words."""
    reason = getattr(e, "reason", None) if isinstance(e, urllib.error.URLError) else e
    reason = reason if isinstance(reason, BaseException) else e
    words = f"{type(reason).__name__}: {reason}"
    if isinstance(reason, socket.gaierror):
        return FailureKind.DNS, words
    if isinstance(reason, ConnectionRefusedError):
        return FailureKind.CONNECTION_REFUSED, words
    if isinstance(reason, TimeoutError):
        return FailureKind.TIMEOUT, words
    if isinstance(reason, OSError) and reason.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return FailureKind.UNREACHABLE, words
    return FailureKind.CONNECTION_LOST, words  # reset, closed mid-answer, incomplete body


class _Breaker:
    """Counts unreachable-server failures in a row (any answer resets it); trips at ``limit``."""

    def __init__(self, limit: int):
        self.limit, self._count, self._lock = limit, 0, threading.Lock()

    def reached(self) -> None:
        with self._lock:
            self._count = 0

    def unreachable(self) -> bool:
        """Count one failure; True when the limit is reached."""
        with self._lock:
            self._count += 1
            return self._count >= self.limit


def image_data_url(image: Image.Image) -> str:
    """The image as a ``data:image/png;base64,...`` URL."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class _ImageURLs:
    """Data URLs of the last few images, each encoded once (thread-safe).

    The prompts of one image arrive together and share its PIL object (the describe loop's image
    source hands the same object to every prompt), so PNG encoding, the client's main CPU cost,
    is paid once per image instead of once per prompt. Keyed by object identity: the entry keeps
    the image alive, so an id is never reused while its entry exists.
    """

    def __init__(self, size: int = 64):
        self._size, self._lock = size, threading.Lock()
        self._entries: OrderedDict[int, tuple[Image.Image, threading.Lock, list[str]]] = (
            OrderedDict()
        )

    def __call__(self, image: Image.Image) -> str:
        with self._lock:
            entry = self._entries.get(id(image))
            if entry is None or entry[0] is not image:
                entry = (image, threading.Lock(), [])
                self._entries[id(image)] = entry
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(id(image))
        _, once, url = entry
        with once:  # the first thread encodes; the others wait for its result
            if not url:
                url.append(image_data_url(image))
        return url[0]


def chat_payload(model: str, prompt: str, image_url: str, max_tokens: int) -> dict[str, Any]:
    """A chat-completions request: one user turn with the text and the image."""
    content = [
        {"type": "text", "text": prompt},
        {"type": "image_url", "image_url": {"url": image_url}},
    ]
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


def parse_completion(raw: bytes) -> str:
    """The answer text of a chat-completions response body.

    Raises:
        ValueError: the body is not a chat completion with a text message.
    """
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"malformed response (not JSON: {e}): {raw[:200]!r}") from e
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(
            f"malformed response (no choices[0].message.content): {raw[:200]!r}"
        ) from e
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ValueError(f"malformed response: message content is {type(content).__name__}")
    return content.strip()


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAITeacher:
    """Chat completions over HTTP, ``concurrency`` at a time.

    Args:
        base_url: the API root, e.g. ``http://localhost:8000/v1`` (``/chat/completions`` is added).
        model: the served model name.
        max_new_tokens: sent as ``max_tokens``.
        concurrency: requests in flight.
        timeout: seconds per request without progress (connect, and each read of the answer).
        item_deadline: seconds an item may take in all, retries and their waits included: a
            server that accepts and never answers costs an item this long, not
            ``(max_retries + 1) * timeout``.
        max_retries: retries after the first attempt of an item.
        backoff: first retry delay in seconds; doubles each retry, capped by ``max_backoff``,
            with jitter (a server's ``Retry-After`` is honoured up to ``max_backoff``).
        max_connect_failures: refused or unresolvable connections in a row (over all items)
            that stop the run with :class:`TeacherUnreachable`.
        max_answer_chars: longer answers are cut to this and marked truncated (default
            ``16 * max_new_tokens``).
        max_body_bytes: a response body larger than this is not read (the item fails).
        api_key_env: the environment variable holding the API key; none is sent when it is
            unset (local servers), unless ``require_key``.
        require_key: fail when the variable is unset (set when the user named one).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        max_new_tokens: int = 128,
        concurrency: int = 8,
        timeout: float = 30.0,
        item_deadline: float = 60.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        max_connect_failures: int = 10,
        max_answer_chars: int | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        api_key_env: str = DEFAULT_KEY_ENV,
        require_key: bool = False,
    ):
        if concurrency < 1 or max_new_tokens < 1 or max_retries < 0 or max_connect_failures < 1:
            raise ConfigError(
                "concurrency, max_new_tokens and max_connect_failures must be >= 1, "
                "max_retries >= 0"
            )
        if timeout <= 0 or item_deadline <= 0:
            raise ConfigError("timeout and item_deadline must be > 0 seconds")
        self.id = f"openai:{model}"
        self.settings: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "temperature": 0,
            "image_format": "png",
        }
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model, self.max_new_tokens = model, max_new_tokens
        self.concurrency, self.timeout, self.max_retries = concurrency, timeout, max_retries
        self.item_deadline = item_deadline
        self.backoff, self.max_backoff = backoff, max_backoff
        self.max_answer_chars = max_answer_chars or CHARS_PER_TOKEN_CAP * max_new_tokens
        self.max_body_bytes = max_body_bytes
        self._breaker = _Breaker(max_connect_failures)
        self._key = os.environ.get(api_key_env) or None
        if self._key is None and require_key:
            raise ConfigError(f"environment variable {api_key_env} (the API key) is not set")
        self._key_env = api_key_env
        self._stop = threading.Event()
        self._image_urls = _ImageURLs()
        host = urllib.parse.urlsplit(self.url).hostname or ""
        # Loopback servers are reached directly even when a proxy is configured.
        handlers = [urllib.request.ProxyHandler({})] if host in _LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAITeacher(url={self.url!r}, model={self.model!r})"

    # -- the describe loop ----------------------------------------------------------------------

    def describe(self, items: Iterable[WorkItem]) -> Results:
        # One daemon thread per request in flight (at most ``concurrency``): a Ctrl-C or an
        # error exits at once instead of joining a pool stuck in requests to a hung server.
        self._stop.clear()
        finished: queue.Queue = queue.Queue()
        source = iter(items)
        first = next(source, None)
        if first is None:
            return
        self.preflight()
        source = itertools.chain([first], source)
        try:
            in_flight = self._start(source, finished, self.concurrency)
            while in_flight:
                chunk = [finished.get()]
                while not finished.empty():
                    chunk.append(finished.get_nowait())
                in_flight -= len(chunk)
                results = [r for r in chunk if not isinstance(r, BaseException)]
                if results:
                    yield results
                for r in chunk:
                    if isinstance(r, BaseException):
                        raise r
                in_flight += self._start(source, finished, len(chunk))
        finally:
            self._stop.set()  # wakes retry sleeps; requests in flight end at their timeout

    def preflight(self) -> None:
        """One ``GET /models``: any HTTP answer means a server is there.

        Raises:
            TeacherUnreachable: the connection is refused, the host unknown, or nothing answers
                within ``timeout`` (naming the URL and the cause).
        """
        url = self.base_url + "/models"
        req = urllib.request.Request(url, headers=self._headers(), method="GET")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status = resp.status
        except urllib.error.HTTPError as e:  # a server answered, if not with a model list
            status = e.code
            e.close()
        except (OSError, http.client.HTTPException) as e:
            kind, reason = classify_connection_error(e)
            raise TeacherUnreachable(
                self._redact(
                    f"cannot reach the teacher server at {self.base_url} ({kind.value}: "
                    f"{reason}); is it running, and is the URL right?"
                )
            ) from None
        log.info("teacher server %s answered GET /models with HTTP %s", self.base_url, status)

    def _start(self, source: Iterator[WorkItem], finished: queue.Queue, n: int) -> int:
        started = 0
        for item in itertools.islice(source, n):
            worker = threading.Thread(
                target=self._work, args=(item, finished), name="lga-teacher", daemon=True
            )
            worker.start()
            started += 1
        return started

    def _work(self, item: WorkItem, finished: queue.Queue) -> None:
        try:
            finished.put(self.ask(item))
        except BaseException as e:  # noqa: BLE001 - handed to the describe loop, which raises it
            finished.put(e)

    def close(self) -> None:
        self._stop.set()

    # -- one item -------------------------------------------------------------------------------

    def ask(self, item: WorkItem) -> tuple[WorkItem, Outcome]:
        """Answer one item, retrying transient failures within ``item_deadline``.

        Never raises but when the run cannot go on: a server refusal
        (:class:`TeacherServerError`) or an unreachable server (:class:`TeacherUnreachable`).
        """
        deadline = time.monotonic() + self.item_deadline
        try:
            image_url = self._image_urls(item.load_image())
        except (ImageLoadError, OSError, LgaError) as e:
            return item, Outcome(error=f"image: {e}", kind=FailureKind.IMAGE)
        body = json.dumps(
            chat_payload(self.model, item.prompt.text, image_url, self.max_new_tokens)
        ).encode()
        attempt, last = 0, _Retryable("not attempted", FailureKind.OTHER)
        while attempt <= self.max_retries and not (attempt and self._stop.is_set()):
            attempt += 1
            start = time.perf_counter()
            try:
                text, truncated = self._post(body, deadline)
                return item, Outcome(
                    text=text,
                    latency_s=time.perf_counter() - start,
                    attempts=attempt,
                    truncated=truncated,
                )
            except _Permanent as e:
                return item, self._failed(str(e), e, attempt)
            except _Retryable as e:
                last = e
                self._count_for_breaker(e)
            if attempt > self.max_retries:
                break
            delay = self._delay(attempt - 1, last.retry_after)
            if time.monotonic() + delay >= deadline:
                message = f"gave up at the {self.item_deadline:g}s item deadline after {attempt}"
                return item, self._failed(f"{message} attempt(s): {last}", last, attempt)
            log.debug(
                "img_id %s / %s: %s; retry in %.2fs",
                item.img_id,
                item.prompt.name,
                self._redact(str(last)),
                delay,
            )
            self._stop.wait(delay)
        return item, self._failed(f"failed after {attempt} attempt(s): {last}", last, attempt)

    def _failed(self, message: str, e: _Failure, attempts: int) -> Outcome:
        return Outcome(
            error=self._redact(message), attempts=attempts, kind=e.kind, http_status=e.status
        )

    def _count_for_breaker(self, e: _Retryable) -> None:
        if e.kind not in _UNREACHABLE:
            self._breaker.reached()
        elif self._breaker.unreachable():
            raise TeacherUnreachable(
                self._redact(
                    f"{self._breaker.limit} connections in a row to {self.base_url} failed "
                    f"(last: {e}); stopped the run (answers already stored are kept; rerun "
                    "to continue when the server is back)"
                )
            )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_backoff, max(0.0, retry_after))
        cap = min(self.max_backoff, self.backoff * 2**attempt)
        return cap / 2 + random.uniform(0, cap / 2)  # "equal jitter": spread the retries out

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _post(self, body: bytes, deadline: float) -> tuple[str, bool]:
        """One request: the answer text (capped) and whether it was cut."""
        req = urllib.request.Request(self.url, data=body, headers=self._headers(), method="POST")
        # Every connect and read waits at most the time left to the item.
        timeout = max(0.001, min(self.timeout, deadline - time.monotonic()))
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                raw = self._read(resp, deadline)
        except urllib.error.HTTPError as e:
            raise self._http_error(e) from None
        except (OSError, http.client.HTTPException) as e:  # timeouts, refused/reset connections
            kind, reason = classify_connection_error(e)
            raise _Retryable(f"{kind.value} ({reason})", kind) from None
        try:
            text = parse_completion(raw)
        except ValueError as e:
            raise _Retryable(f"{e} from {self.url}", FailureKind.MALFORMED) from None
        if len(text) > self.max_answer_chars:
            log.debug("answer of %d characters cut to %d", len(text), self.max_answer_chars)
            return text[: self.max_answer_chars], True
        return text, False

    def _read(self, resp: http.client.HTTPResponse, deadline: float) -> bytes:
        """The body, at most ``max_body_bytes``, read by the item deadline."""
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self.max_body_bytes:
            raise self._too_large(int(length))
        chunks, size = [], 0
        while chunk := resp.read1(65536):
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large(size)
            if time.monotonic() > deadline:  # a server trickling bytes
                raise _Retryable("answer still arriving at the item deadline", FailureKind.TIMEOUT)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, size: int) -> _Permanent:
        return _Permanent(
            f"answer body of {size}+ bytes from {self.url} is over the {self.max_body_bytes} "
            f"byte limit (max_tokens was {self.max_new_tokens})",
            FailureKind.TOO_LARGE,
        )

    def _http_error(self, e: urllib.error.HTTPError) -> Exception:
        try:
            detail = e.read(300).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            detail = ""
        finally:
            e.close()
        message = f"HTTP {e.code} from {self.url}: {detail}".strip()
        if e.code in (401, 403):
            return TeacherServerError(
                self._redact(f"{message} (check the API key in ${self._key_env})")
            )
        if e.code == 404:
            return TeacherServerError(
                self._redact(f"{message} (wrong base URL, or model {self.model!r} not served?)")
            )
        if e.code in (408, 409, 429) or e.code >= 500:
            return _Retryable(message, FailureKind.HTTP, e.code, _retry_after(e.headers))
        return _Permanent(message, FailureKind.HTTP, e.code)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text
