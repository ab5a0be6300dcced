"""One error map: CfxError -> ``Error: <what> — <how to fix>`` on stderr and a documented exit code."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import typer

from cfx.cli._options import refuse_empty_values
from cfx.errors import CfxError, ExitCode, Terminated

F = TypeVar("F", bound=Callable[..., Any])


def _debug() -> bool:
    return os.environ.get("CFX_DEBUG", "") not in ("", "0")


def is_broken_pipe(exc: BaseException) -> bool:
    """EPIPE from Python (BrokenPipeError) or from Rust/C++ writers (polars, pyarrow: a plain OSError)."""
    if isinstance(exc, BrokenPipeError):
        return True
    if not isinstance(exc, OSError):
        return False
    return exc.errno == errno.EPIPE or "os error 32" in str(exc) or "Broken pipe" in str(exc)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush does not fail a second time."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def handle_errors(func: F) -> F:
    """Wrap a command so domain errors become a one-line message and an exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            refuse_empty_values(func, kwargs)
            return func(*args, **kwargs)
        except CfxError as exc:
            if _debug():
                traceback.print_exc()
            msg = f"Error: {exc.message}"
            if exc.hint:
                msg += f" — {exc.hint}"
            print(msg, file=sys.stderr)
            raise typer.Exit(int(exc.exit_code)) from None
        except Terminated:
            print("Terminated.", file=sys.stderr)
            raise typer.Exit(int(ExitCode.TERMINATED)) from None
        except KeyboardInterrupt:
            print("Interrupted.", file=sys.stderr)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # a bug: say so, point at CFX_DEBUG
            if is_broken_pipe(exc):
                # The reader of our stdout went away (`| head -1`): quiet, status 141 as if killed by SIGPIPE.
                _silence_stdout()
                raise typer.Exit(int(ExitCode.BROKEN_PIPE)) from None
            if _debug():
                traceback.print_exc()
            print(
                f"Error: internal error: {type(exc).__name__}: {exc} — this is a bug in cfx; "
                "re-run with CFX_DEBUG=1 for the traceback and report it",
                file=sys.stderr,
            )
            raise typer.Exit(int(ExitCode.FAILURE)) from None

    return wrapper  # type: ignore[return-value]


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwind as Ctrl-C does (pools stop, temp files go); a second SIGTERM must not break that cleanup.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def run(app: typer.Typer) -> None:
    """The CLI entry point: SIGTERM unwinds the command and exits 143 (``handle_errors`` prints why)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app(prog_name="cfx")
    except Terminated:  # arrived outside a command, e.g. while parsing arguments
        print("Terminated.", file=sys.stderr)
        sys.exit(int(ExitCode.TERMINATED))
