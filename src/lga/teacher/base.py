"""The teacher protocol, its work items, and teacher specs (``hf:``, ``openai:``, ``oracle``).

A teacher takes an iterable of :class:`WorkItem` (one image x one prompt) and yields lists of
``(item, Outcome)`` as answers arrive; the runner commits each list in one store transaction.
Items carry a loader, not pixels, so images are read (and visual prompts drawn) only when, and
where, the teacher needs them: in the worker threads of a server teacher, in batches for a local
model, never for the oracle.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from lga.errors import ConfigError
from lga.teacher.prompts import Prompt


@dataclass(frozen=True)
class WorkItem:
    """One question for the teacher: a prompt about one image."""

    img_id: int
    prompt: Prompt
    load_image: Callable[[], Image.Image] = field(repr=False, compare=False)


class FailureKind(str, enum.Enum):
    """Why an item has no answer, for the run's summary of failures by kind."""

    CONNECTION_REFUSED = "connection refused"
    DNS = "DNS failure"
    UNREACHABLE = "host unreachable"
    CONNECTION_LOST = "connection lost"
    TIMEOUT = "timeout"
    HTTP = "HTTP"
    MALFORMED = "malformed answer"
    TOO_LARGE = "answer too large"
    IMAGE = "image"
    MODEL = "model error"
    OTHER = "other"


@dataclass(frozen=True)
class Outcome:
    """A teacher's answer (``text``) or the reason it has none (``error``, ``kind``).

    ``truncated``: the answer was longer than the teacher's cap and was cut to it.
    ``http_status``: the status of the last HTTP error (``kind`` is ``HTTP``).
    """

    text: str | None = None
    error: str | None = None
    latency_s: float | None = None
    attempts: int = 1
    kind: FailureKind | None = None
    http_status: int | None = None
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def failure(self) -> str | None:
        """A short label of the failure (``HTTP 503``, ``connection refused``); None when ok."""
        if self.ok:
            return None
        kind = self.kind or FailureKind.OTHER
        if kind is FailureKind.HTTP and self.http_status is not None:
            return f"HTTP {self.http_status}"
        return kind.value


Results = Iterator[list[tuple[WorkItem, Outcome]]]


@runtime_checkable
class Teacher(Protocol):
    """What the describe loop needs from a teacher.

    Attributes:
        id: a stable name for the store key, never holding a secret (``oracle``,
            ``hf:llava-hf/llava-1.5-7b-hf``, ``openai:<model>``).
        settings: the generation settings that change the answers (they enter the store key).
    """

    id: str
    settings: dict[str, Any]

    def describe(self, items: Iterable[WorkItem]) -> Results:
        """Answer every item; yield ``(item, outcome)`` lists as they are ready.

        A failure of one item is an outcome with an ``error``, never an exception; an exception
        means the whole run cannot go on (bad model, bad credentials).
        """
        ...

    def close(self) -> None:
        """Release models, threads and connections."""
        ...


class Backend(str, enum.Enum):
    HF = "hf"
    OPENAI = "openai"
    ORACLE = "oracle"


@dataclass(frozen=True)
class TeacherSpec:
    """A parsed ``--teacher`` value."""

    backend: Backend
    model: str | None = None  # hub id or folder (hf); model name (openai)
    base_url: str | None = None  # openai only

    def __str__(self) -> str:
        if self.backend is Backend.ORACLE:
            return "oracle"
        if self.backend is Backend.HF:
            return f"hf:{self.model}"
        return f"openai:{self.base_url}#{self.model}"


_OPENAI = re.compile(r"^openai:(?P<url>https?://[^#\s]+)#(?P<model>\S+)$")


def parse_teacher_spec(spec: str) -> TeacherSpec:
    """Parse ``hf:<hub id or dir>``, ``openai:<base_url>#<model>`` or ``oracle``.

    Raises:
        ConfigError: the spec matches none of these forms.
    """
    spec = spec.strip()
    if spec == "oracle":
        return TeacherSpec(Backend.ORACLE)
    if spec.startswith("hf:") and len(spec) > 3:
        return TeacherSpec(Backend.HF, model=spec[3:])
    m = _OPENAI.match(spec)
    if m:
        return TeacherSpec(Backend.OPENAI, model=m["model"], base_url=m["url"].rstrip("/"))
    shown = re.sub(r"//[^/@\s]*@", "//***@", spec)  # credentials in a URL are never echoed
    raise ConfigError(
        f"bad teacher spec {shown!r}; expected one of: hf:<hub id or folder> "
        "(e.g. hf:llava-hf/llava-1.5-7b-hf), openai:<base_url>#<model> "
        "(e.g. openai:http://localhost:8000/v1#llava-hf/llava-1.5-7b-hf), oracle"
    )
