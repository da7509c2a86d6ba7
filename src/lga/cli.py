"""The ``lga`` command line: a thin layer that parses arguments and calls the library.

Each command group lives in ``lga.commands.<name>`` and exposes ``register(subparsers)``,
which adds its parser(s) and sets ``func`` (called with the parsed namespace; returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from lga import __version__
from lga.errors import DataError, LgaError

# Order = order in `lga --help`.
COMMAND_MODULES = (
    "data",
    "describe",
    "store",
    "eval",
    "probe",
    "fit",
    "report",
    "explain",
    "export",
    "toy",
    "reproduce",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lga",
        description="Language-guided abstractions: make CLIP robust to spurious correlations "
        "with descriptions from a multimodal teacher.",
    )
    parser.add_argument("--version", action="version", version=f"lga {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"lga.commands.{name}").register(sub)
    return parser


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        # transformers/hf_hub chatter (weight-loading bars, backend notices) is not for the user.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:
            import transformers

            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
        except ImportError:  # pragma: no cover
            pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        for p in e.problems[:50]:
            print(f"  {p}", file=sys.stderr)
        if len(e.problems) > 50:
            print(f"  ... and {len(e.problems) - 50} more", file=sys.stderr)
        return 1
    except LgaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
