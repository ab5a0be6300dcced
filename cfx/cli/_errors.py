"""One error map: CfxError -> ``Error: <what> — <how to fix>`` on stderr and a documented exit code."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from cfx.errors import CfxError, ExitCode

F = TypeVar("F", bound=Callable[..., Any])


def _debug() -> bool:
    return os.environ.get("CFX_DEBUG", "") not in ("", "0")


def handle_errors(func: F) -> F:
    """Wrap a command so domain errors become a one-line message and an exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CfxError as exc:
            if _debug():
                traceback.print_exc()
            msg = f"Error: {exc.message}"
            if exc.hint:
                msg += f" — {exc.hint}"
            print(msg, file=sys.stderr)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            print("Interrupted.", file=sys.stderr)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except BrokenPipeError:
            # The reader of our stdout went away (e.g. `| head`): not an error of ours.
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            raise typer.Exit(0) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # a bug: say so, point at CFX_DEBUG
            if _debug():
                traceback.print_exc()
            print(
                f"Error: internal error: {type(exc).__name__}: {exc} — this is a bug in cfx; "
                "re-run with CFX_DEBUG=1 for the traceback and report it",
                file=sys.stderr,
            )
            raise typer.Exit(int(ExitCode.FAILURE)) from None

    return wrapper  # type: ignore[return-value]
