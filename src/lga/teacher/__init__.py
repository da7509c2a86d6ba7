"""The teacher: a multimodal LLM (or the oracle) describing each image's object and background.

``build_teacher("hf:llava-hf/llava-1.5-7b-hf")``, ``build_teacher("openai:http://host/v1#model")``
or ``build_teacher("oracle", data_root=...)`` give a :class:`Teacher`; :func:`describe` runs it
over a dataset into a :class:`lga.store.core.DescriptionStore`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lga.teacher.base import (
    Backend,
    FailureKind,
    Outcome,
    Teacher,
    TeacherSpec,
    WorkItem,
    parse_teacher_spec,
)
from lga.teacher.prompts import Format, Prompt, PromptSet, Target, load_prompt_set, resolve_prompts
from lga.teacher.runner import (
    DescribeStopped,
    DescribeSummary,
    Shard,
    describe,
    parse_shard,
    select_images,
)
from lga.teacher.visual import VisualPrompt

__all__ = [
    "Backend",
    "DescribeStopped",
    "DescribeSummary",
    "FailureKind",
    "Format",
    "Outcome",
    "Prompt",
    "PromptSet",
    "Shard",
    "Target",
    "Teacher",
    "TeacherOptions",
    "TeacherSpec",
    "VisualPrompt",
    "WorkItem",
    "build_teacher",
    "describe",
    "describe_with",
    "load_prompt_set",
    "parse_shard",
    "parse_teacher_spec",
    "resolve_prompts",
    "select_images",
]


@dataclass(frozen=True)
class TeacherOptions:
    """Backend settings (each backend uses the ones that apply to it).

    Attributes:
        max_new_tokens: answer length limit (hf, openai).
        batch_size: items per generate call (hf).
        concurrency: requests in flight (openai).
        timeout: seconds a request may wait for the server, per connect or read (openai).
        item_deadline: seconds an item may take in all, retries included (openai).
        max_retries: retries per item after the first attempt (openai).
        backoff: first retry delay in seconds, doubled per retry (openai).
        max_connect_failures: refused/unresolvable connections in a row that stop the run
            (openai).
        request_options: extra request-body fields, e.g. ``{"top_k": 7}`` (openai), or the
            oracle's fault rates (``{"faults": "llava-like"}``, :mod:`lga.teacher.faults`); part
            of the teacher's settings, so answers under other options are another store variant.
        api_key_env: environment variable holding the API key; None: OPENAI_API_KEY if set.
        device: auto, cpu, cuda, cuda:N (hf).
        trust_remote_code: run a checkpoint's own code (hf).
    """

    max_new_tokens: int = 128
    batch_size: int = 8
    concurrency: int = 8
    timeout: float = 30.0
    item_deadline: float = 60.0
    max_retries: int = 5
    backoff: float = 1.0
    max_connect_failures: int = 10
    request_options: dict[str, Any] = field(default_factory=dict)
    api_key_env: str | None = None
    device: str = "auto"
    trust_remote_code: bool = False


def build_teacher(
    spec: str | TeacherSpec,
    options: TeacherOptions | None = None,
    *,
    data_root: str | Path | None = None,
) -> Teacher:
    """A teacher from its spec (``hf:...``, ``openai:<url>#<model>``, ``oracle``).

    Args:
        spec: the teacher spec.
        options: backend settings.
        data_root: the dataset folder (the oracle reads ``attributes.csv`` there).
    """
    from lga.errors import ConfigError

    spec = parse_teacher_spec(spec) if isinstance(spec, str) else spec
    opt = options or TeacherOptions()
    if opt.request_options and spec.backend is Backend.HF:
        raise ConfigError(
            "teacher options (--teacher-option) are request-body fields of openai: teachers and "
            "fault rates of the oracle; the hf teacher takes none"
        )
    if spec.backend is Backend.ORACLE:
        from lga.teacher.faults import fault_rates
        from lga.teacher.oracle import OracleTeacher

        if data_root is None:
            raise ConfigError("the oracle teacher needs the dataset folder")
        return OracleTeacher(data_root, faults=fault_rates(opt.request_options))
    if spec.backend is Backend.HF:
        from lga.teacher.hf import HFTeacher

        return HFTeacher(
            spec.model,
            max_new_tokens=opt.max_new_tokens,
            batch_size=opt.batch_size,
            device=opt.device,
            trust_remote_code=opt.trust_remote_code,
        )
    from lga.teacher.openai_compat import DEFAULT_KEY_ENV, OpenAITeacher

    return OpenAITeacher(
        spec.base_url,
        spec.model,
        max_new_tokens=opt.max_new_tokens,
        concurrency=opt.concurrency,
        timeout=opt.timeout,
        item_deadline=opt.item_deadline,
        max_retries=opt.max_retries,
        backoff=opt.backoff,
        max_connect_failures=opt.max_connect_failures,
        request_options=opt.request_options,
        api_key_env=opt.api_key_env or DEFAULT_KEY_ENV,
        require_key=opt.api_key_env is not None,
    )


def describe_with(
    spec: str | TeacherSpec,
    options: TeacherOptions,
    ds: Any,
    store: str | Path,
    prompts: list[Prompt],
    *,
    data_root: str | Path,
    announce: Any = None,
    **run: Any,
) -> DescribeSummary:
    """Build the teacher, describe ``ds`` into the store file, close the teacher: what
    ``lga describe``, ``lga reproduce`` and :func:`lga.describe` share.

    Args:
        spec, options: the teacher (:func:`build_teacher`).
        ds: the images (after :func:`select_images`).
        store: the description store file (created).
        prompts: the rendered prompts.
        data_root: the dataset folder.
        announce: called with the built teacher before the first request (a CLI line).
        **run: :func:`describe`'s keywords (``visual_prompt``, ``boxes``, ``progress``, ...).

    Raises:
        DescribeStopped: the run stopped early; what was done is stored.
    """
    from lga.store.core import DescriptionStore

    teacher = build_teacher(spec, options, data_root=data_root)
    try:
        if announce is not None:
            announce(teacher)
        with DescriptionStore(store) as s:
            return describe(ds, teacher, s, prompts, **run)
    finally:
        teacher.close()
