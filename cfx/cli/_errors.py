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
from cfx.errors import WRITE_ERRNOS, CfxError, ExitCode, Terminated, io_error

F = TypeVar("F", bound=Callable[..., Any])
WRITE_HINT = "free some disk space or pick another location"


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
        from cfx.cli._output import counted_warnings

        try:
            refuse_empty_values(func, kwargs)
            with counted_warnings():
                return func(*args, **kwargs)
        except Terminated:
            print("Terminated.", file=sys.stderr)
            raise typer.Exit(int(ExitCode.TERMINATED)) from None
        except KeyboardInterrupt:
            print("Interrupted.", file=sys.stderr)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            raise typer.Exit(int(_report(exc))) from None

    return wrapper  # type: ignore[return-value]


def _report(exc: Exception) -> ExitCode:
    """Print what ``exc`` means for the user (nothing for a broken pipe) and return the exit code."""
    if was_interrupted(exc):  # before all else: a Ctrl-C is exit 130 whatever it interrupted
        print("Interrupted.", file=sys.stderr)
        return ExitCode.INTERRUPTED
    if isinstance(exc, CfxError):
        if _debug():
            traceback.print_exc()
        print(f"Error: {exc.message}" + (f" — {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return exc.exit_code
    if is_broken_pipe(exc):
        # The reader of our stdout went away (`| head -1`): quiet, status 141 as if killed by SIGPIPE.
        _silence_stdout()
        return ExitCode.BROKEN_PIPE
    err = io_error(exc)
    if err is not None and err.errno in WRITE_ERRNOS:  # a full disk met outside cfx.outputs
        print(f"Error: cannot write the output: {err.strerror or err} — {WRITE_HINT}", file=sys.stderr)
        return ExitCode.OUTPUT
    if _debug():
        traceback.print_exc()
    print(
        f"Error: internal error: {type(exc).__name__}: {exc} — this is a bug in cfx; "
        "re-run with CFX_DEBUG=1 for the traceback and report it",
        file=sys.stderr,
    )
    return ExitCode.FAILURE


def was_interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` stands for a Ctrl-C: a KeyboardInterrupt in its chain (pybind11 modules turn one that
    lands in their initialisation into ``ImportError: initialization failed`` raised from it), or a SIGINT
    seen by this process's handler that some library turned into another error without a chain."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return _sigint_seen


_sigint_seen = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    # Python's own behaviour (KeyboardInterrupt), remembered: a library may catch the KeyboardInterrupt and
    # raise something else, and an interrupt stays exit 130 whatever it interrupted (issue 21).
    global _sigint_seen
    _sigint_seen = True
    raise KeyboardInterrupt


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwind as Ctrl-C does (pools stop, temp files go); a second SIGTERM must not break that cleanup.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def run(app: typer.Typer) -> None:
    """The CLI entry point: SIGTERM unwinds the command and exits 143 (``handle_errors`` prints why)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when SIGINT is ignored
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        app(prog_name="cfx")
    except Terminated:  # arrived outside a command, e.g. while parsing arguments
        print("Terminated.", file=sys.stderr)
        sys.exit(int(ExitCode.TERMINATED))
