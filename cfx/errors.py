"""Domain errors. Every user-facing failure is a CfxError with a message and a hint.

The CLI turns them into ``Error: <message> — <hint>`` and the exit code below.
"""

from __future__ import annotations

import errno
import os
import re
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # unexpected internal error (a bug: please report with CFX_DEBUG=1)
    USAGE = 2  # bad option or argument value
    INPUT = 3  # bad input data: missing file, not parquet, missing column, bad label
    NETWORK = 4  # Hub / network problem: unknown repo or revision, offline, HTTP errors
    EMPTY = 5  # the selection is empty: nothing to write
    PARTIAL = 6  # some inputs were bad; the rest was processed (e.g. a truncated shard during index)
    OUTPUT = 7  # cannot write output: exists, permission, disk full
    LEAK = 8  # cfx leaks --fail-on-leak: the two sets overlap (a leak was found)
    SHORTCUT = 9  # cfx audit --fail-above: a canary (single feature or joint) is above the limit
    INTERRUPTED = 130  # Ctrl-C (SIGINT)
    BROKEN_PIPE = 141  # the reader of stdout went away (`| head -1`): 128 + SIGPIPE, as a killed `cat` gives
    TERMINATED = 143  # SIGTERM: 128 + 15, as a shell reports a program killed by it


class CfxError(Exception):
    """Base class: ``message`` says what went wrong, ``hint`` how to fix it."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Pickle the attributes, not the constructor arguments (subclasses take other arguments):
        # errors cross process boundaries (process pools, Ray tasks) unchanged.
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type[CfxError], args: tuple[object, ...], state: dict[str, object]) -> CfxError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class UsageError(CfxError):
    exit_code = ExitCode.USAGE


class InputError(CfxError):
    exit_code = ExitCode.INPUT


class BadShardError(InputError):
    """One shard could not be read; ``shard`` names it."""

    def __init__(self, shard: str, message: str, hint: str = "") -> None:
        super().__init__(f"{shard}: {message}", hint)
        self.shard = shard


class NetworkError(CfxError):
    exit_code = ExitCode.NETWORK


class EmptySelectionError(CfxError):
    exit_code = ExitCode.EMPTY


class PartialError(CfxError):
    """Some inputs failed; the rest was processed."""

    exit_code = ExitCode.PARTIAL


class OutputError(CfxError):
    exit_code = ExitCode.OUTPUT


class ShortcutFoundError(CfxError):
    """``cfx audit --fail-above X`` and a canary is above X (the report was still printed)."""

    exit_code = ExitCode.SHORTCUT


class Terminated(BaseException):
    """SIGTERM arrived (the CLI's handler raises it). A BaseException, as KeyboardInterrupt is, so that no
    ``except Exception`` swallows it and every ``with`` block (process pools, temp files) unwinds."""


_OS_ERROR = re.compile(r"\(os error (\d+)\)|\[errno (\d+)\]", re.I)
# errnos that only a write gives: a command failing with one of these could not write its output
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def io_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc``, or None when it is not an I/O error.

    polars reports a failed write of parquet as ``ComputeError: … underlying IO error: No space left on
    device (os error 28)`` and its CSV/JSON writers as an ``OSError`` without ``errno``; pyarrow's messages
    carry ``[errno 28]``. The errno is read back from the text, so a full disk is a full disk whichever
    library met it.
    """
    m = _OS_ERROR.search(str(exc))
    code = int(m.group(1) or m.group(2)) if m else None
    if isinstance(exc, OSError):
        if exc.errno is None and code is not None:
            return OSError(code, os.strerror(code))
        return exc
    if code is not None and type(exc).__module__.split(".")[0] in ("polars", "pyarrow"):
        return OSError(code, os.strerror(code))
    return None


_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def error_text(exc: BaseException) -> str:
    """The first line of ``exc``'s message with memory addresses replaced (Pillow's ``cannot identify image
    file <_io.BytesIO object at 0x7f…>`` becomes ``… image file image``), or its type's name: the same data
    gives the same text in every run, so manifests and caches that keep it are reproducible."""
    text = str(exc).strip()
    return _ADDRESS.sub("image", text.splitlines()[0]) if text else type(exc).__name__
