"""One output object: data on stdout, progress/logs/warnings on stderr.

Progress bars only when stderr is a terminal and --quiet is not given.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from cfx.errors import UsageError
from cfx.progress import Task

if TYPE_CHECKING:
    from cfx.manifest import Manifest

_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def is_quiet() -> bool:
    return _state["quiet"]


def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


class _OutConsole(Console):
    def on_broken_pipe(self) -> None:
        # rich exits 1 here; raise instead so handle_errors gives the documented quiet exit 141.
        raise BrokenPipeError("stdout closed by its reader")


def out_console() -> Console:
    return _OutConsole(highlight=False, soft_wrap=True)


def stdout_is_pipe() -> bool:
    return not sys.stdout.isatty()


class _CountColumn(ProgressColumn):
    """``done/total`` of a task: a count, or sizes for a task made with ``unit="bytes"``."""

    def __init__(self) -> None:
        super().__init__()
        self._counts = MofNCompleteColumn()

    def render(self, task: Any) -> Any:
        if task.fields.get("unit") != "bytes":
            return self._counts.render(task)
        done = decimal(int(task.completed))
        return Text(
            done if task.total is None else f"{done}/{decimal(int(task.total))}", style="progress.download"
        )


class _RichTask:
    def __init__(self, progress: Progress, task_id: Any) -> None:
        self._progress = progress
        self._id = task_id

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._id, n)

    def update(self, completed: int | None = None, total: int | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        self._progress.update(self._id, **kwargs)

    def close(self) -> None:
        self._progress.update(self._id, visible=True)


class _LineTask:
    """Without a terminal: one line at the end of each task, nothing per step."""

    def __init__(self, reporter: CliReporter, description: str, total: int | None) -> None:
        self._reporter = reporter
        self._description = description
        self._total = total
        self._done = 0

    def advance(self, n: int = 1) -> None:
        self._done += n

    def update(self, completed: int | None = None, total: int | None = None) -> None:
        if completed is not None:
            self._done = completed
        if total is not None:
            self._total = total

    def close(self) -> None:
        pass


class CliReporter:
    """Reporter for the CLI (see cfx.progress.Reporter). Use as a context manager."""

    def __init__(self, quiet: bool | None = None) -> None:
        self.quiet = is_quiet() if quiet is None else quiet
        self.console = err_console()
        self._progress: Progress | None = None
        self.warnings: list[str] = []

    def __enter__(self) -> CliReporter:
        if not self.quiet and self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                _CountColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def task(self, description: str, total: int | None = None, unit: str = "") -> Task:
        if self._progress is None:
            return _LineTask(self, description, total)
        return _RichTask(self._progress, self._progress.add_task(description, total=total, unit=unit))

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.console.print(f"Warning: {message}", markup=False, style="yellow")


def byte_progress(console: Console) -> Progress:
    """A progress display for transfers (download): bytes, speed, ETA."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def emit_manifest(manifest: Manifest, output: Path | None, what: str = "manifest") -> None:
    """Save to ``output``, else stream Arrow IPC to stdout when it is a pipe; never dump binary on a terminal.
    Either way the manifest gains this command's lineage entry (cfx.lineage)."""
    manifest = manifest.with_lineage(lineage_entry())
    if output is not None:
        manifest.write(output)
        if not is_quiet():
            err_console().print(f"Wrote {what} with {len(manifest):,} rows to {output}", markup=False)
        return
    if not stdout_is_pipe():
        raise UsageError(
            f"refusing to write a binary {what} to the terminal",
            "give -o FILE.parquet, or pipe it into another command (`… | cfx stats -`)",
        )
    manifest.write_ipc(sys.stdout.buffer)
    sys.stdout.buffer.flush()


def emit_outcome(
    manifest: Manifest,
    output: Path | None,
    summary: dict[str, Any],
    render: Callable[[dict[str, Any], Console], None],
    *,
    as_json: bool,
    what: str,
    note_without_manifest: str | None = None,
) -> None:
    """Where a manifest-and-summary command's results go: the manifest to -o or to a piped stdout; the
    summary to stdout (rich, or JSON with --json) unless the manifest is using it, then rich to stderr
    (which --quiet silences). ``note_without_manifest`` goes to stderr when no manifest is written."""
    to_stdout = output is None and stdout_is_pipe() and not as_json
    if output is not None or to_stdout:
        emit_manifest(manifest, output, what=what)
    elif note_without_manifest and not is_quiet():
        err_console().print(note_without_manifest, markup=False)
    if to_stdout:
        if not is_quiet():
            render(summary, err_console())
    elif as_json:
        print_json(summary)
    else:
        render(summary, out_console())


def refuse_clobber(
    source: str | None,
    manifest: Manifest | None,
    outputs: dict[str, Path | None],
    *,
    extra_inputs: Iterable[Path | str | None] = (),
    within: bool = True,
) -> None:
    """Every command with an output calls this once, before writing: no output may be, or be written into,
    what the command reads (SOURCE, the shard files its manifest points at, tables given as options)."""
    from cfx.manifest import source_inputs
    from cfx.outputs import refuse_outputs_on_inputs

    inputs = [*source_inputs(source, manifest), *(Path(p) for p in extra_inputs if p is not None)]
    refuse_outputs_on_inputs(dict(outputs), inputs, within=within)


def lineage_entry() -> dict[str, Any]:
    """This command's lineage entry: its command line and the inputs it loaded (cfx.lineage)."""
    from cfx import lineage

    return lineage.entry(command_line(), lineage.noted_inputs())


def command_line() -> str:
    """The command line this process was started with, as the user would type it (for provenance), without
    the options that change only how it runs (cfx.lineage.RUN_OPTIONS): outputs are the same on any engine."""
    from cfx.lineage import command_text

    return command_text(sys.argv[1:])


_NUMBER = re.compile(r"0x[0-9a-fA-F]+|\d+")


@contextlib.contextmanager
def counted_warnings() -> Iterator[Counter[str]]:
    """Python warnings raised by libraries while a command runs (Pillow's ``Corrupt EXIF data``, …) are
    counted by kind instead of printed raw, one per image, with a file path and line: at the end, one
    ``Warning: <category>: <message> (N times)`` line per kind on stderr. Numbers in a message are part of
    its kind only as ``N``, so per-image values do not split a kind."""
    counts: Counter[str] = Counter()
    first: dict[str, str] = {}

    def count(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        text = str(message).strip().splitlines()[0] if str(message).strip() else ""
        kind = f"{category.__name__}: {_NUMBER.sub('N', text)}"
        counts[kind] += 1
        first.setdefault(kind, f"{category.__name__}: {text}")

    with warnings.catch_warnings():
        # every occurrence of what is shown by default is counted (the filters stay: DeprecationWarning of a
        # library stays hidden)
        warnings.filterwarnings("always", category=UserWarning)
        warnings.filterwarnings("always", category=RuntimeWarning)
        warnings.showwarning = count
        try:
            yield counts
        finally:
            for kind, n in counts.items():
                times = f" ({n:,} times)" if n > 1 else ""
                print(f"Warning: {first[kind]}{times}", file=sys.stderr)
