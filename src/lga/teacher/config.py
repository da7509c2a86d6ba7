"""The teacher's settings: one typed config for ``lga describe``, :func:`lga.describe` and the
``teacher:`` block of a reproduce config.

Every default is written once, in :class:`TeacherConfig`; the command line's flags take their
defaults from it, the API's keywords and a config's keys are its field names, and the backends
(:mod:`lga.teacher.hf`, :mod:`lga.teacher.openai_compat`, the oracle) are built from it by
:func:`lga.teacher.build.build_teacher`. Only stdlib here: the CLI's parser imports this module.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lga.errors import ConfigError

__all__ = [
    "DEFAULT_CLAIM_LEASE_S",
    "DEFAULT_KEY_ENV",
    "DEFAULT_MAX_CONSECUTIVE_FAILURES",
    "RESERVED_OPTIONS",
    "TeacherConfig",
    "check_request_options",
    "parse_request_options",
]

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
# Settings of the describe run around the teacher (lga.teacher.runner.describe).
DEFAULT_MAX_CONSECUTIVE_FAILURES = 20
DEFAULT_CLAIM_LEASE_S = 120.0

_HF, _OPENAI, _ORACLE = "hf", "openai", "oracle"  # lga.teacher.base.Backend values


def _setting(
    default: Any,
    backends: tuple[str, ...],
    *,
    at_least: float | None = None,
    above: float | None = None,
) -> Any:
    meta = {"backends": backends, "at_least": at_least, "above": above}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TeacherConfig:
    """Which teacher, and its settings (each backend reads the ones that apply to it).

    Attributes:
        spec: ``hf:<hub id or folder>``, ``openai:<base_url>#<model>`` or ``oracle``; None: no
            teacher (a reproduce config that reads a given store).
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
        api_key_env: environment variable holding the API key (openai); None: OPENAI_API_KEY
            when set; a variable named here must be set.
        device: auto, cpu, cuda, cuda:N (hf).
        trust_remote_code: run a checkpoint's own code (hf).

    Raises:
        ConfigError: a value of the wrong type or out of range, naming the setting.
    """

    spec: str | None = _setting(None, (_HF, _OPENAI, _ORACLE))
    max_new_tokens: int = _setting(128, (_HF, _OPENAI), at_least=1)
    batch_size: int = _setting(8, (_HF,), at_least=1)
    concurrency: int = _setting(8, (_OPENAI,), at_least=1)
    timeout: float = _setting(30.0, (_OPENAI,), above=0)
    item_deadline: float = _setting(60.0, (_OPENAI,), above=0)
    max_retries: int = _setting(5, (_OPENAI,), at_least=0)
    backoff: float = _setting(1.0, (_OPENAI,), at_least=0)
    max_connect_failures: int = _setting(10, (_OPENAI,), at_least=1)
    request_options: dict[str, Any] = _setting({}, (_OPENAI, _ORACLE))
    api_key_env: str | None = _setting(None, (_OPENAI,))
    device: str = _setting("auto", (_HF,))
    trust_remote_code: bool = _setting(False, (_HF,))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = _checked(f, getattr(self, f.name))
            object.__setattr__(self, f.name, value)  # ints as floats, a copy of the options

    # -- the one way in and the one way out -------------------------------------------------

    @classmethod
    def from_mapping(
        cls,
        values: Mapping[str, Any],
        *,
        where: str | None = None,
        name: Callable[[str], str] = lambda key: f"teacher.{key}",
    ) -> TeacherConfig:
        """A config from its keys (a YAML block, the API's keywords, the parsed flags).

        Args:
            values: field names to values; absent ones keep their defaults.
            where: what the values came from (a file, ``lga.describe()``), put before every
                error.
            name: how a key is named in errors (``teacher.max_new_tokens``, ``--max-new-tokens``).

        Raises:
            ConfigError: ``<where>: <name>: <what is wrong>``, for an unknown key or a bad value.
        """
        head = f"{where}: " if where else ""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{head}the teacher settings must be a mapping, not {values!r}")
        known = cls.keys()
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"{head}{name(str(key))}: unknown teacher setting; the settings are "
                    + ", ".join(known)
                )
        try:
            return cls(**values)
        except _BadSetting as e:
            raise ConfigError(f"{head}{name(e.key)}: {e.problem}") from None

    def to_mapping(self) -> dict[str, Any]:
        """Every setting by field name (what :meth:`from_mapping` reads back to an equal config)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["request_options"] = dict(self.request_options)
        return out

    @classmethod
    def keys(cls) -> list[str]:
        """The settings' names, in their order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def default(cls, key: str) -> Any:
        """The default of one setting (the CLI's flags show it)."""
        f = cls.__dataclass_fields__[key]
        return f.default_factory() if f.default is dataclasses.MISSING else f.default

    def replace(self, **changes: Any) -> TeacherConfig:
        """A copy with ``changes`` (field names), checked like any config."""
        return TeacherConfig.from_mapping({**self.to_mapping(), **changes})

    def for_backend(self, backend: str) -> dict[str, Any]:
        """The settings ``backend`` (``hf``, ``openai``, ``oracle``) reads, by field name,
        without ``spec``."""
        backend = getattr(backend, "value", backend)
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "spec" and backend in f.metadata["backends"]
        }


class _BadSetting(ConfigError):
    def __init__(self, key: str, problem: str):
        super().__init__(f"teacher.{key}: {problem}")
        self.key, self.problem = key, problem


_KIND = {  # field annotation -> (accepted Python types, words), bool never taken for a number
    "int": ((int,), "an integer"),
    "float": ((int, float), "a number"),
    "str": ((str,), "a string"),
    "str | None": ((str, type(None)), "a string or null"),
    "bool": ((bool,), "true or false"),
    "dict[str, Any]": ((dict,), "a mapping of option names to values"),
}


def _checked(f: dataclasses.Field, value: Any) -> Any:
    types, words = _KIND[f.type]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise _BadSetting(f.name, f"{value!r} is not {words}")
    if f.name == "spec" and value is not None:
        from lga.teacher.base import parse_teacher_spec

        try:
            parse_teacher_spec(value)
        except ConfigError as e:
            raise _BadSetting(f.name, str(e)) from None
    if f.name == "request_options":
        try:
            return check_request_options(value)
        except ConfigError as e:
            raise _BadSetting(f.name, str(e)) from None
    low, above = f.metadata["at_least"], f.metadata["above"]
    if low is not None and value < low:
        raise _BadSetting(f.name, f"{value!r} is below {low:g}")
    if above is not None and value <= above:
        raise _BadSetting(f.name, f"{value!r} must be above {above:g}")
    return float(value) if f.type == "float" else value


# -- request options (--teacher-option, teacher.request_options) ---------------------------------

# Request fields lga sets itself, and how the user sets them instead.
RESERVED_OPTIONS = {
    "model": "the model is the part of --teacher after '#'",
    "messages": "lga builds the messages (the image, then the prompt)",
    "max_tokens": "use --max-new-tokens (teacher.max_new_tokens in a reproduce config)",
    "max_completion_tokens": "use --max-new-tokens (sent as max_tokens)",
    "temperature": "lga decodes greedily (temperature 0) so that a stored answer is reproducible",
    "stream": "lga reads whole (non-streamed) answers",
    "n": "lga stores one answer per image and prompt (several completions would be paid for "
    "and dropped)",
}
_OPTION_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def check_request_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The extra request-body fields, checked: valid names, none that lga sets itself.

    Raises:
        ConfigError: naming the bad key and, for a reserved one, how it is set.
    """
    for key in options:
        if not isinstance(key, str) or not _OPTION_KEY.fullmatch(key):
            raise ConfigError(f"bad teacher option name {key!r}")
        if key in RESERVED_OPTIONS:
            raise ConfigError(f"teacher option {key!r} is set by lga: {RESERVED_OPTIONS[key]}")
        if not _finite(options[key]):
            raise ConfigError(
                f"teacher option {key!r}: {options[key]!r} holds a number that is not finite "
                "(NaN or infinite: JSON has none, and a server would reject it)"
            )
    return dict(options)


def _finite(value: Any) -> bool:
    """False when ``value`` (or a number inside a list or dict of it) is NaN or infinite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def parse_request_options(pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as request-body fields, each VALUE parsed as JSON when it parses.

    ``top_k=7`` gives 7, ``repetition_penalty=1.1`` 1.1, ``skip_special_tokens=false`` False,
    ``stop=["\\n"]`` a list, ``guided_choice=[...]`` a list; ``seed=abc`` stays the string
    ``"abc"``. A key given twice keeps its last value.

    Raises:
        ConfigError: a pair without ``=``, a bad key, or a key lga sets itself.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"teacher option {pair!r} is not KEY=VALUE (e.g. top_k=7)")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return check_request_options(options)
