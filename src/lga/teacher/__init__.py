"""The teacher: a multimodal LLM (or the oracle) describing each image's object and background.

A :class:`TeacherConfig` names the teacher and its settings (``TeacherConfig(spec="oracle")``,
``spec="hf:llava-hf/llava-1.5-7b-hf"``, ``spec="openai:http://host/v1#model"``);
:func:`build_teacher` gives its :class:`Teacher`; :func:`build_describe_run` gives the run that
asks it about a dataset's images into a description store (:meth:`DescribeRun.run`).

The names are imported lazily: ``lga.teacher.config`` (what the command line's parser reads)
loads without the dataset, store and image code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lga.teacher.base import (
        Backend,
        FailureKind,
        Outcome,
        Teacher,
        TeacherSpec,
        WorkItem,
        parse_teacher_spec,
    )
    from lga.teacher.build import build_teacher
    from lga.teacher.config import TeacherConfig
    from lga.teacher.describe_run import DescribeRun, build_describe_run
    from lga.teacher.prompts import (
        Format,
        Prompt,
        PromptSet,
        Target,
        load_prompt_set,
        resolve_prompts,
    )
    from lga.teacher.runner import (
        DescribeStopped,
        DescribeSummary,
        Shard,
        describe,
        parse_shard,
        select_images,
    )
    from lga.teacher.visual import VisualPrompt

_WHERE = {  # name -> the module defining it
    **dict.fromkeys(
        ["Backend", "FailureKind", "Outcome", "Teacher", "TeacherSpec", "WorkItem"],
        "lga.teacher.base",
    ),
    "parse_teacher_spec": "lga.teacher.base",
    "build_teacher": "lga.teacher.build",
    "TeacherConfig": "lga.teacher.config",
    "DescribeRun": "lga.teacher.describe_run",
    "build_describe_run": "lga.teacher.describe_run",
    **dict.fromkeys(
        ["Format", "Prompt", "PromptSet", "Target", "load_prompt_set", "resolve_prompts"],
        "lga.teacher.prompts",
    ),
    **dict.fromkeys(
        ["DescribeStopped", "DescribeSummary", "Shard", "describe", "parse_shard", "select_images"],
        "lga.teacher.runner",
    ),
    "VisualPrompt": "lga.teacher.visual",
}

__all__ = [
    "Backend",
    "DescribeRun",
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
    "TeacherConfig",
    "TeacherSpec",
    "VisualPrompt",
    "WorkItem",
    "build_describe_run",
    "build_teacher",
    "describe",
    "load_prompt_set",
    "parse_shard",
    "parse_teacher_spec",
    "resolve_prompts",
    "select_images",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'lga.teacher' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
