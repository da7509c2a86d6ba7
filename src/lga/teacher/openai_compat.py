"""A teacher behind any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, TGI).

Standard library only (``urllib`` in a thread pool): ``concurrency`` requests in flight, a
timeout per request, retries with exponential backoff and jitter on 429, 5xx, timeouts,
connection errors and malformed bodies. An item that still fails becomes a failed outcome (the
run goes on; the next run retries it). Bad credentials, a wrong URL or an unknown model (401,
403, 404) stop the run: every item would fail the same way.

The API key is read from the environment and only ever put in the ``Authorization`` header: it
is not part of the teacher id or settings, and it is scrubbed from every error message.
"""

from __future__ import annotations

import base64
import http.client
import io
import itertools
import json
import logging
import os
import queue
import random
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
from lga.teacher.base import Outcome, Results, WorkItem

log = logging.getLogger(__name__)

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class TeacherServerError(LgaError):
    """The server refuses every request (credentials, URL, model): the run cannot go on."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _Permanent(Exception):
    """This item cannot succeed by retrying (e.g. HTTP 400 for its image)."""


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
        content = body["choices"][0]["message"]["content"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"malformed response ({type(e).__name__}): {raw[:200]!r}") from e
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
        timeout: seconds per request (connect and each read).
        max_retries: retries after the first attempt of an item.
        backoff: first retry delay in seconds; doubles each retry, capped by ``max_backoff``,
            with jitter (a server's ``Retry-After`` is honoured up to ``max_backoff``).
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
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        api_key_env: str = DEFAULT_KEY_ENV,
        require_key: bool = False,
    ):
        if concurrency < 1 or max_new_tokens < 1 or max_retries < 0 or timeout <= 0:
            raise ConfigError(
                "concurrency and max_new_tokens must be >= 1, max_retries >= 0, timeout > 0"
            )
        self.id = f"openai:{model}"
        self.settings: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "temperature": 0,
            "image_format": "png",
        }
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.max_new_tokens = model, max_new_tokens
        self.concurrency, self.timeout, self.max_retries = concurrency, timeout, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
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
        """Answer one item, retrying transient failures; never raises but for a server refusal."""
        try:
            image_url = self._image_urls(item.load_image())
        except (ImageLoadError, OSError, LgaError) as e:
            return item, Outcome(error=f"image: {e}")
        body = json.dumps(
            chat_payload(self.model, item.prompt.text, image_url, self.max_new_tokens)
        ).encode()
        error = "not attempted"
        for attempt in range(self.max_retries + 1):
            if attempt and self._stop.is_set():
                break
            start = time.perf_counter()
            try:
                text = self._post(body)
                return item, Outcome(
                    text=text, latency_s=time.perf_counter() - start, attempts=attempt + 1
                )
            except _Permanent as e:
                return item, Outcome(error=self._redact(str(e)), attempts=attempt + 1)
            except _Retryable as e:
                error = self._redact(str(e))
                if attempt < self.max_retries:
                    delay = self._delay(attempt, e.retry_after)
                    log.debug(
                        "img_id %s / %s: %s; retry in %.2fs",
                        item.img_id,
                        item.prompt.name,
                        error,
                        delay,
                    )
                    self._stop.wait(delay)
        return item, Outcome(
            error=f"failed after {attempt + 1} attempt(s): {error}", attempts=attempt + 1
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_backoff, max(0.0, retry_after))
        cap = min(self.max_backoff, self.backoff * 2**attempt)
        return cap / 2 + random.uniform(0, cap / 2)  # "equal jitter": spread the retries out

    def _post(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise self._http_error(e) from None
        except (OSError, http.client.HTTPException) as e:  # timeouts, refused/reset connections
            reason = getattr(e, "reason", None) or e
            raise _Retryable(f"{type(e).__name__}: {reason}") from None
        try:
            return parse_completion(raw)
        except ValueError as e:
            raise _Retryable(str(e)) from None

    def _http_error(self, e: urllib.error.HTTPError) -> Exception:
        try:
            detail = e.read()[:300].decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            detail = ""
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
            return _Retryable(message, _retry_after(e.headers))
        return _Permanent(message)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text
