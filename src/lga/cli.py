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
import traceback

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
    # httpx logs every request line at INFO (a teacher run sends thousands): only with -vv.
    logging.getLogger("httpx").setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)
    if verbose < 2:
        # transformers/hf_hub chatter (weight-loading bars, backend notices) is not for the user.
        # transformers reads both variables when it is imported; a command that needs no model
        # never imports it (`lga data check` starts in a fraction of a second).
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        transformers = sys.modules.get("transformers")
        if transformers is not None:  # imported already: the variables came too late
            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()


def _error(message: str, verbose: int) -> int:
    """One line on stderr (the traceback before it with ``-v``); exit code 1."""
    if verbose:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return 1


def _os_error(e: OSError) -> str:
    """``[Errno 13] Permission denied: 'x'`` -> ``x: permission denied``."""
    if e.strerror and e.filename is not None:
        what = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
        return f"{what}: {e.strerror[0].lower()}{e.strerror[1:]}"
    return str(e) or type(e).__name__


def _invalid_flags(e) -> str:
    """A pydantic ValidationError of a config made from flags, by flag: ``SynthConfig(n_train=-5)``
    -> ``--n-train -5: input should be greater than 0``."""
    lines = []
    for err in e.errors():
        loc = err["loc"]
        msg = err["msg"].removeprefix("Value error, ")
        msg = msg[:1].lower() + msg[1:]
        if len(loc) == 1 and isinstance(loc[0], str):
            lines.append(f"--{loc[0].replace('_', '-')} {err.get('input')!r}: {msg}")
        else:
            where = ".".join(map(str, loc))
            lines.append(f"{where}: {msg}" if where else msg)
    return "; ".join(lines)


def _broken_pipe() -> int:
    """The reader of our output went away (``lga ... | head``): stop quietly, as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit flush does not fail again
    except OSError:  # pragma: no cover
        pass
    return 128 + 13  # killed by SIGPIPE, as the shell reports it


def main(argv: list[str] | None = None) -> int:
    """Run one command. User errors end in one line on stderr and exit code 1 (a traceback only
    with ``-v``); an interrupt exits 130; a closed output pipe exits quietly."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except DataError as e:
        code = _error(str(e), args.verbose)
        if not e.listed:
            return code
        for p in e.problems[:50]:
            print(f"  {p}", file=sys.stderr)
        if len(e.problems) > 50:
            print(f"  ... and {len(e.problems) - 50} more", file=sys.stderr)
        return code
    except LgaError as e:
        return _error(str(e), args.verbose)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _broken_pipe()
    except OSError as e:  # a file or folder that cannot be read or written
        return _error(_os_error(e), args.verbose)
    except Exception as e:  # a bug: say so in one line; -v shows where
        from pydantic import ValidationError  # here: `lga --help` does not import pydantic

        if isinstance(e, ValidationError):  # a typed config built from the flags
            _error(_invalid_flags(e), args.verbose)
            return 2  # a usage error, as argparse's
        return _error(
            f"{type(e).__name__}: {e} (unexpected: rerun with -v for the traceback, and "
            "please report it)",
            args.verbose,
        )


if __name__ == "__main__":
    sys.exit(main())
