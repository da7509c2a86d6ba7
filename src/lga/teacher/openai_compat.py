"""A teacher behind any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, TGI).

One ``httpx.Client`` per teacher, its connection pool sized to ``concurrency`` and kept alive
(a run of thousands of requests opens about ``concurrency`` connections), shared by
``concurrency`` worker threads: a timeout per request, retries with exponential backoff and
jitter on 429, 5xx, timeouts, connection errors and malformed bodies (a server's
``Retry-After``, in seconds or as an HTTP date, is honoured), all within a deadline per item.
An item that still fails becomes a failed outcome (the run goes on; the next run retries it).
Bad credentials, a wrong URL or an unknown model (401, 403, 404) stop the run: every item would
fail the same way. So does a server that cannot be reached: a preflight ``GET /models`` before
the first item, then a circuit breaker after ``max_connect_failures`` refused (or unresolvable)
connections in a row.

Answers are capped: a body is streamed and reading stops past ``max_body_bytes``, and an answer
longer than ``max_answer_chars`` (16 characters per token asked for, by default) is cut and
marked truncated.

Every request is one user turn with the image first, then the prompt (LLaVA-1.5 was trained on
``USER: <image>\\n{prompt}``; image-first also lets a server's prefix cache reuse the image's
tokens across the prompts of one image). ``request_options`` (``--teacher-option``) are added to
every request body and are part of the teacher's settings (the store key).

The API key is read from the environment and only ever put in the ``Authorization`` header: it
is not part of the teacher id or settings, and it is scrubbed from every error message. A key
that is no valid header value (a trailing ``\\r`` or ``\\n``, a non-ASCII character) is refused
as malformed, unshown. Credentials in the URL (``http://user:secret@host/v1``) go as basic auth
and are cut from every URL lga shows. (httpx logs each request's method, URL and status at
INFO; request headers are never logged.)
"""

from __future__ import annotations

import base64
import email.utils
import errno
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
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import httpx
from PIL import Image

from lga.data.images import ImageLoadError
from lga.errors import ConfigError, LgaError
from lga.teacher.base import FailureKind, Outcome, Results, WorkItem
from lga.teacher.config import (  # noqa: F401 - RESERVED_OPTIONS: where readers look for it
    DEFAULT_KEY_ENV,
    RESERVED_OPTIONS,
    TeacherConfig,
    check_request_options,
)

log = logging.getLogger(__name__)

_DEFAULT = TeacherConfig()  # the settings' defaults, written once there
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


def _causes(e: BaseException) -> Iterator[BaseException]:
    """``e``, then what caused it (httpx wraps httpcore's error, which wraps the socket's)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__ or getattr(e, "reason", None)
        e = e if isinstance(e, BaseException) else None


def classify_connection_error(e: BaseException) -> tuple[FailureKind, str]:
    """The kind of a failed connection or read, and its reason in words."""
    chain = list(_causes(e))
    root = chain[-1]
    words = f"{type(root).__name__}: {root}" if str(root) else type(e).__name__
    for cause in chain:
        if isinstance(cause, socket.gaierror):
            return FailureKind.DNS, words
        if isinstance(cause, ConnectionRefusedError):
            return FailureKind.CONNECTION_REFUSED, words
        if isinstance(cause, (TimeoutError, httpx.TimeoutException)):
            return FailureKind.TIMEOUT, words
        if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
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


def chat_payload(
    model: str,
    prompt: str,
    image_url: str,
    max_tokens: int,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A chat-completions request: one user turn, the image first, then the prompt.

    ``options`` are extra body fields (``top_k``, ``stop``...); they cannot replace lga's own
    (:func:`check_request_options` refuses those).
    """
    content = [
        {"type": "image_url", "image_url": {"url": image_url}},
        {"type": "text", "text": prompt},
    ]
    return {
        **(options or {}),
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


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: a number, or an HTTP date (RFC 9110).

    None when absent or unreadable; a date in the past gives 0.
    """
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class _ConnectionStats:
    """Requests sent and TCP connections opened (httpcore's ``trace`` events), thread-safe."""

    def __init__(self) -> None:
        self._lock, self.requests, self.connections = threading.Lock(), 0, 0

    def request(self) -> None:
        with self._lock:
            self.requests += 1

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            with self._lock:
                self.connections += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"requests": self.requests, "connections": self.connections}


def check_api_key(key: str | None, env: str) -> str | None:
    """The key as read from ``env``, refused when it cannot be an HTTP header value.

    Such a key (a trailing newline or carriage return from a file, a pasted non-ASCII quote)
    would fail in the HTTP library, whose message shows the whole header. It is refused, never
    repaired: a stripped key that then works would hide a wrongly written secret.

    Raises:
        ConfigError: ``{env} is malformed (contains ...)``; the key itself is not shown.
    """
    if key is None:
        return None
    for why, bad in (
        ("contains a non-ASCII character", lambda c: ord(c) > 126),
        ("contains a control character", lambda c: ord(c) < 32 and c not in " \t" or c == "\x7f"),
        ("contains whitespace", lambda c: c in " \t"),
    ):
        if any(bad(c) for c in key):
            raise ConfigError(f"{env} is malformed ({why}); the key is not shown")
    return key


def split_userinfo(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """``http://user:secret@host/v1`` -> (``http://host/v1``, basic auth of user and secret)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    auth = httpx.BasicAuth(urllib.parse.unquote(user), urllib.parse.unquote(password))
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), auth


class OpenAITeacher:
    """Chat completions over HTTP, ``concurrency`` at a time, over pooled keep-alive connections.

    Args:
        base_url: the API root, e.g. ``http://localhost:8000/v1`` (``/chat/completions`` is added).
        model: the served model name.
        max_new_tokens, concurrency, timeout, item_deadline, max_retries, backoff,
            max_connect_failures, request_options, api_key_env: the settings of
            :class:`lga.teacher.config.TeacherConfig` (its defaults; checked by it). ``timeout``
            bounds each connect and each read of an answer; ``item_deadline`` an item in all,
            retries and their waits included (a server that accepts and never answers costs an
            item this long, not ``(max_retries + 1) * timeout``). ``max_new_tokens`` is sent as
            ``max_tokens``, ``concurrency`` also sizes the connection pool, ``request_options``
            are extra body fields and part of ``settings``. ``api_key_env`` None: OPENAI_API_KEY
            when it is set (none is sent otherwise, as local servers need none); a variable
            named must be set.
        max_backoff: the longest retry delay (a server's ``Retry-After`` is honoured up to it).
        max_answer_chars: longer answers are cut to this and marked truncated (default
            ``16 * max_new_tokens``).
        max_body_bytes: reading a response body stops past this many bytes (the item fails).

    Raises:
        ConfigError: a setting out of range, or a malformed or missing key.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        max_new_tokens: int = _DEFAULT.max_new_tokens,
        concurrency: int = _DEFAULT.concurrency,
        timeout: float = _DEFAULT.timeout,
        item_deadline: float = _DEFAULT.item_deadline,
        max_retries: int = _DEFAULT.max_retries,
        backoff: float = _DEFAULT.backoff,
        max_connect_failures: int = _DEFAULT.max_connect_failures,
        request_options: Mapping[str, Any] | None = None,
        api_key_env: str | None = _DEFAULT.api_key_env,
        max_backoff: float = 60.0,
        max_answer_chars: int | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ):
        cfg = TeacherConfig(  # the one place the settings are checked
            max_new_tokens=max_new_tokens,
            concurrency=concurrency,
            timeout=timeout,
            item_deadline=item_deadline,
            max_retries=max_retries,
            backoff=backoff,
            max_connect_failures=max_connect_failures,
            request_options=dict(request_options or {}),
            api_key_env=api_key_env,
        )
        key_env = cfg.api_key_env or DEFAULT_KEY_ENV
        self._key = check_api_key(os.environ.get(key_env) or None, key_env)
        if self._key is None and cfg.api_key_env is not None:
            raise ConfigError(f"environment variable {key_env} (the API key) is not set")
        self._key_env = key_env
        self.request_options = cfg.request_options
        if self._key and self._key in json.dumps(self.request_options):
            raise ConfigError(
                f"a teacher option holds the API key: it goes in ${key_env} only, so that "
                "it is never stored with the settings"
            )
        self.id = f"openai:{model}"
        self.settings: dict[str, Any] = {
            "max_new_tokens": cfg.max_new_tokens,
            "temperature": 0,
            "image_format": "png",
        }
        if self.request_options:  # absent when none: earlier stores keep their settings key
            self.settings["request_options"] = dict(sorted(self.request_options.items()))
        # Credentials in the URL go as basic auth and are never part of a URL lga shows.
        base_url, self._auth = split_userinfo(base_url)
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model, self.max_new_tokens = model, cfg.max_new_tokens
        self.concurrency, self.timeout, self.max_retries = (
            cfg.concurrency,
            cfg.timeout,
            cfg.max_retries,
        )
        self.item_deadline = cfg.item_deadline
        self.backoff, self.max_backoff = cfg.backoff, max_backoff
        self.max_answer_chars = max_answer_chars or CHARS_PER_TOKEN_CAP * cfg.max_new_tokens
        self.max_body_bytes = max_body_bytes
        self._breaker = _Breaker(cfg.max_connect_failures)
        self._stop = threading.Event()
        self._image_urls = _ImageURLs()
        self._stats = _ConnectionStats()
        self._client_lock = threading.Lock()
        self._http: httpx.Client | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAITeacher(url={self.url!r}, model={self.model!r})"

    @property
    def connection_stats(self) -> dict[str, int]:
        """Requests sent (retries and the preflight included) and TCP connections opened."""
        return self._stats.snapshot()

    def _client(self) -> httpx.Client:
        """The pooled client, made on first use (and again after :meth:`close`)."""
        with self._client_lock:
            if self._http is None:
                host = urllib.parse.urlsplit(self.url).hostname or ""
                n = self.concurrency
                self._http = httpx.Client(
                    limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                    timeout=self.timeout,
                    # Loopback servers are reached directly even when a proxy is configured.
                    trust_env=host not in _LOOPBACK,
                    auth=self._auth,
                )
            return self._http

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
        self._stats.request()
        try:
            resp = self._client().get(
                self.base_url + "/models",
                headers=self._headers(),
                extensions={"trace": self._stats.trace},
            )
        except httpx.TransportError as e:
            kind, reason = classify_connection_error(e)
            raise TeacherUnreachable(
                self._redact(
                    f"cannot reach the teacher server at {self.base_url} ({kind.value}: "
                    f"{reason}); is it running, and is the URL right?"
                )
            ) from None
        log.info(
            "teacher server %s answered GET /models with HTTP %s", self.base_url, resp.status_code
        )

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
        """Stop retry waits and close the pooled connections."""
        self._stop.set()
        with self._client_lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

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
        payload = chat_payload(
            self.model, item.prompt.text, image_url, self.max_new_tokens, self.request_options
        )
        body = json.dumps(payload).encode()
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
            return min(self.max_backoff, retry_after)
        cap = min(self.max_backoff, self.backoff * 2**attempt)
        return cap / 2 + random.uniform(0, cap / 2)  # "equal jitter": spread the retries out

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _post(self, body: bytes, deadline: float) -> tuple[str, bool]:
        """One request: the answer text (capped) and whether it was cut."""
        # Every connect and read waits at most the time left to the item.
        timeout = max(0.001, min(self.timeout, deadline - time.monotonic()))
        self._stats.request()
        try:
            with self._client().stream(
                "POST",
                self.url,
                content=body,
                headers=self._headers(),
                timeout=timeout,
                extensions={"trace": self._stats.trace},
            ) as resp:
                if resp.status_code >= 400:
                    raise self._http_error(resp)
                raw = self._read(resp, deadline)
        except httpx.TransportError as e:  # timeouts, refused/reset connections, bad framing
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

    def _read(self, resp: httpx.Response, deadline: float) -> bytes:
        """The body, at most ``max_body_bytes``, read by the item deadline."""
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self.max_body_bytes:
            raise self._too_large(int(length))
        chunks, size = [], 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > self.max_body_bytes:  # leaving the stream closes it: the rest is not read
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

    def _http_error(self, resp: httpx.Response) -> Exception:
        detail = b""
        try:
            for chunk in resp.iter_bytes():
                detail += chunk
                if len(detail) >= 300:
                    break
        except httpx.TransportError:
            pass
        code = resp.status_code
        text = detail[:300].decode("utf-8", "replace")
        message = f"HTTP {code} from {self.url}: {text}".strip()
        if code in (401, 403):
            return TeacherServerError(
                self._redact(f"{message} (check the API key in ${self._key_env})")
            )
        if code == 404:
            return TeacherServerError(
                self._redact(f"{message} (wrong base URL, or model {self.model!r} not served?)")
            )
        if code in (408, 409, 429) or code >= 500:
            retry_after = retry_after_s(resp.headers.get("Retry-After"))
            return _Retryable(message, FailureKind.HTTP, code, retry_after)
        return _Permanent(message, FailureKind.HTTP, code)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text
