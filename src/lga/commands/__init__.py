"""CLI command groups; each module exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse
from collections.abc import Callable


class IntermixedParser(argparse.ArgumentParser):
    """Lets KEY=VALUE overrides sit anywhere among the flags (``... train.lr=1e-5 --resume``).

    Plain argparse fills a ``nargs="*"`` positional from its first run of positional strings
    only and rejects later ones; intermixed parsing collects them all.
    """

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def intermixed(
    sub: argparse._SubParsersAction,
    add: Callable[[argparse._SubParsersAction], argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add a sub-command parser (through ``add(sub)``) that parses KEY=VALUE intermixed."""
    default_class, sub._parser_class = sub._parser_class, IntermixedParser
    try:
        return add(sub)
    finally:
        sub._parser_class = default_class


def positive_int(text: str, *, also: str = "") -> int:
    """An argparse type: ``text`` as a whole number > 0, or an error naming what was expected
    (``also``: the other accepted words, e.g. " or 'all'")."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number{also}, got {text!r}")
    return n
