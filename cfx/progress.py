"""Progress and log reporting without a UI dependency.

Library functions take a ``Reporter``; the CLI passes one that draws rich progress bars on stderr,
tests and library users get the silent default.
"""

from __future__ import annotations

from typing import Protocol


class Task(Protocol):
    def advance(self, n: int = 1) -> None: ...
    def update(self, completed: int | None = None, total: int | None = None) -> None: ...
    def close(self) -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: int | None = None, unit: str = "") -> Task: ...
    def info(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...


class NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, completed: int | None = None, total: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class NullReporter:
    """Reports nothing; warnings are kept so callers and tests can read them."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def task(self, description: str, total: int | None = None, unit: str = "") -> Task:
        return NullTask()

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def null_reporter() -> NullReporter:
    return NullReporter()


class RowsAndBytes:
    """One pass's progress as two tasks of ``reporter``: the rows (or images) done and the image bytes behind
    them (``unit="bytes"``: the CLI shows them as sizes). The same on every engine: the local one advances it
    as its workers report, the Ray engine as the cluster's tasks finish."""

    def __init__(
        self,
        reporter: Reporter,
        description: str,
        rows: int | None,
        nbytes: int | None = None,
        unit: str = "",
    ) -> None:
        self.rows = reporter.task(description, total=rows, unit=unit)
        self.bytes = reporter.task(f"{description}: image bytes", total=nbytes, unit="bytes")

    def advance(self, rows: int, nbytes: int) -> None:
        self.rows.advance(rows)
        self.bytes.advance(nbytes)

    def close(self) -> None:
        self.rows.close()
        self.bytes.close()
