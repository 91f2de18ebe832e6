"""How every command-line entry point of the repo reports bad input: one line, exit status 2.

    from backbones.cli_errors import add_debug_flag, cli_main

    @cli_main
    def main(argv=None):
        p = argparse.ArgumentParser(...)
        add_debug_flag(p)                 # --debug: show the traceback instead
        args = p.parse_args(argv)
        ...

Inside `main`, the repo's own errors (subclasses of `UserError`, and the ValueError / OSError
subclasses the libraries raise: DataError, ImageError, CheckpointError, ...), any OSError or
ValueError, and a `SystemExit("message")` end as one line `error: <message>` on stderr and exit
status 2. With `--debug` or the environment variable LLMSIGHT_DEBUG=1 the exception propagates
with its traceback. It lives in the lowest library so the libraries' own mains (visiondata.*,
lens.*) use it as well as train.* and eval.*.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys

__all__ = ["UserError", "debug_enabled", "one_line", "add_debug_flag", "user_errors", "cli_main"]

DEBUG_ENV = "LLMSIGHT_DEBUG"


class UserError(Exception):
    """Base of the repo's errors that are not already a ValueError or OSError (e.g. the trainers'
    CheckpointError, emoji_setup's FetchError): input or setup the user can fix, so a command
    line reports it as one line, not a traceback."""


def debug_enabled() -> bool:
    """--debug, or LLMSIGHT_DEBUG set to anything but '' or '0': show tracebacks."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class _DebugAction(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        kwargs.setdefault("help", f"show the full traceback of an error (also: environment variable {DEBUG_ENV}=1)")
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True)
        os.environ[DEBUG_ENV] = "1"   # read by user_errors, and by child processes


def add_debug_flag(parser: argparse.ArgumentParser, help: str | None = None) -> argparse.ArgumentParser:
    """Add `--debug` to a parser: when given, LLMSIGHT_DEBUG=1 is set, so errors show their traceback."""
    parser.add_argument("--debug", action=_DebugAction, **({"help": help} if help else {}))
    return parser


@contextlib.contextmanager
def user_errors(also: tuple = ()):
    """UserError, OSError, ValueError, the types in `also` and SystemExit("message") become one line
    `error: ...` on stderr and SystemExit(2); with --debug / LLMSIGHT_DEBUG=1 they propagate instead.
    (argparse's own usage errors, SystemExit(2), pass through unchanged.)"""
    try:
        yield
    except SystemExit as e:
        if not isinstance(e.code, str) or debug_enabled():
            raise
        msg = e.code.strip().splitlines()[0] if e.code.strip() else "SystemExit"
        print(msg if msg.startswith("error: ") else f"error: {msg}", file=sys.stderr)
        raise SystemExit(2) from None
    except (UserError, OSError, ValueError, *also) as e:
        if debug_enabled():
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        raise SystemExit(2) from None


def cli_main(fn=None, *, also: tuple = ()):
    """Decorator of a command line's `main`: runs it inside `user_errors(also)`. `@cli_main` or
    `@cli_main(also=(SomeError,))`."""
    if fn is None:
        return functools.partial(cli_main, also=also)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with user_errors(also):
            return fn(*args, **kwargs)

    return wrapper
