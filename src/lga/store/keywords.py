"""Keyword answers: a teacher's free-form keyword list, normalised as the store keeps it."""

from __future__ import annotations

import re

__all__ = ["parse_keywords"]

_SPLIT = re.compile(r"[,;\n|]+|(?<=[.!?])\s+|\s+-\s+")
_BULLET = re.compile(r"^\s*(?:[-*•·]+|\d+[.)]|[a-z][.)](?=\s))\s*")
_LABEL = re.compile(r"^(?:[a-z][a-z ]{0,30}):\s*")
_EDGE = re.compile(r"^[\s\"'`“”‘’(\[]+|[\s\"'`“”‘’)\].!?:]+$")


def parse_keywords(text: str | None) -> list[str]:
    """Normalise a keyword answer into a list of lower-case keywords, in order, without repeats.

    Splits on commas, semicolons, new lines, bullets and sentence ends; drops list markers,
    leading labels ("Keywords:", "Common name:"), quotes and end punctuation.

    >>> parse_keywords("Gull, webbed feet; Long neck.\\n- flat bill")
    ['gull', 'webbed feet', 'long neck', 'flat bill']
    """
    if not text:
        return []
    out: list[str] = []
    for piece in _SPLIT.split(text):
        word = _BULLET.sub("", piece.strip().lower())
        word = _LABEL.sub("", word)
        word = " ".join(_EDGE.sub("", word).split())
        word = _EDGE.sub("", word)
        if word and word not in out:
            out.append(word)
    return out
