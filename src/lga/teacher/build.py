"""A teacher from its :class:`~lga.teacher.config.TeacherConfig` (the backends load lazily)."""

from __future__ import annotations

from pathlib import Path

from lga.errors import ConfigError
from lga.teacher.base import Backend, Teacher, parse_teacher_spec
from lga.teacher.config import TeacherConfig


def build_teacher(config: TeacherConfig | str, *, data_root: str | Path | None = None) -> Teacher:
    """The teacher a config names (``hf:...``, ``openai:<url>#<model>``, ``oracle``).

    Args:
        config: the teacher's config, or only its spec (every other setting at its default).
        data_root: the dataset folder (the oracle reads ``attributes.csv`` there).

    Raises:
        ConfigError: no spec, options given to the hf teacher, or the oracle without its data.
    """
    config = TeacherConfig(spec=config) if isinstance(config, str) else config
    if config.spec is None:
        raise ConfigError("no teacher named: give its spec (hf:..., openai:URL#MODEL or oracle)")
    spec = parse_teacher_spec(config.spec)
    if config.request_options and spec.backend is Backend.HF:
        raise ConfigError(
            "teacher options (--teacher-option) are request-body fields of openai: teachers and "
            "fault rates of the oracle; the hf teacher takes none"
        )
    if spec.backend is Backend.ORACLE:
        from lga.teacher.faults import fault_rates
        from lga.teacher.oracle import OracleTeacher

        if data_root is None:
            raise ConfigError("the oracle teacher needs the dataset folder")
        return OracleTeacher(data_root, faults=fault_rates(config.request_options))
    if spec.backend is Backend.HF:
        from lga.teacher.hf import HFTeacher

        return HFTeacher(spec.model, **config.for_backend(Backend.HF))
    from lga.teacher.openai_compat import OpenAITeacher

    return OpenAITeacher(spec.base_url, spec.model, **config.for_backend(Backend.OPENAI))
