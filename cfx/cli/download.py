"""`cfx download`: parse options, call cfx.download, print the plan or the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from cfx import download as dl
from cfx.cli._errors import handle_errors
from cfx.cli._options import JsonOpt, RevisionOpt, TokenOpt, WorkersOpt
from cfx.cli._output import CliReporter, byte_progress, print_json
from cfx.progress import NullReporter, Task

RepoArg = Annotated[
    str, typer.Argument(help="Dataset repo on the Hub (ORG/NAME).", show_default=True, metavar="REPO")
]
OutDirOpt = Annotated[
    Path,
    typer.Option("--out", "-o", help="Folder to download into (created if missing).", show_default=False),
]
ShardsOpt = Annotated[
    str | None,
    typer.Option("--shards", help="Shard numbers to fetch among data/*.parquet, e.g. 0-9,93 (default: all)."),
]
IncludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--include",
        help="Also fetch repo paths matching this glob (repeatable); alone, fetch only matching files. "
        "README.md and data/metadata/* always come along.",
    ),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would be fetched; download nothing.")]
VerifyOpt = Annotated[
    bool, typer.Option("--verify", help="Re-hash every local file, even those verified by an earlier run.")
]

EPILOG = """Examples:

  cfx download --out cf-small --shards 0-9,93

  cfx download --out cf-small --dry-run

  cfx download OwensLab/CommunityForensics-Small --out cf --revision 6c539a534c07917307c381f5af4053c6091b5278 --include 'data/metadata/*' --json

Files land at their repo paths (DIR/data/HFCF_small_3.parquet) and are verified against the Hub's sha256
(git blob id for non-LFS files); DIR/.cfx keeps the verification record and partial downloads, so re-running
skips verified files and resumes interrupted ones. Exit codes: 2 bad option, 4 Hub/network, 5 nothing selected,
7 cannot write --out, 130 interrupted (re-run to resume).
"""


class _Bar:
    def __init__(self, progress: Progress, description: str, total: int | None, keep: bool) -> None:
        self._progress = progress
        self._id = progress.add_task(description, total=total)
        self._keep = keep

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._id, n)

    def update(self, completed: int | None = None, total: int | None = None) -> None:
        self._progress.update(self._id, completed=completed, total=total)

    def close(self) -> None:
        if not self._keep:
            self._progress.update(self._id, visible=False)  # a finished file's bar goes; the total stays


class _DownloadReporter(CliReporter):
    """CliReporter with transfer bars (bytes, speed, ETA) on stderr, only on a terminal and without --quiet."""

    def __enter__(self) -> _DownloadReporter:
        self._bars: Progress | None = None
        if not self.quiet and self.console.is_terminal:
            self._bars = byte_progress(self.console)
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def task(self, description: str, total: int | None = None, unit: str = "") -> Task:
        if self._bars is None:
            return NullReporter().task(description, total, unit)
        return _Bar(self._bars, description, total, keep=description == "total")


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _print_plan(plan: dl.DownloadPlan) -> None:
    rev = f" (revision {plan.revision})" if plan.revision else ""
    print(f"Plan: {plan.repo_id}@{plan.commit[:12]}{rev} -> {plan.out}")
    lines = list(dl.iter_plan_lines(plan))
    width = max(len(path) for path, _, _ in lines)
    for path, size, what in lines:
        print(f"  {path:<{width}}  {_size(size):>12}  {what}")
    to_fetch = sum(1 for p in plan.files if p.bytes_to_fetch > 0)
    print(
        f"{_files(len(plan.files))}, {_size(plan.total_bytes)} in all; "
        f"to fetch: {_files(to_fetch)}, {_size(plan.bytes_to_fetch)} (dry run: nothing downloaded)"
    )


def _print_summary(result: dl.DownloadResult) -> None:
    d: dict[str, Any] = result.to_dict()
    print(f"Downloaded {result.repo_id}@{result.commit[:12]} into {result.out}")
    resumed = f" ({d['files_resumed']} resumed)" if d["files_resumed"] else ""
    print(f"  downloaded: {_files(d['files_downloaded'])}{resumed}")
    print(f"  skipped:    {_files(d['files_skipped'])} (already verified)")
    if d["files_updated"]:
        print(f"  updated:    {_files(d['files_updated'])} (changed on the Hub)")
    if d["files_refetched"]:
        print(f"  re-fetched: {_files(d['files_refetched'])} (local copy did not match the Hub)")
    print(f"  {_size(result.bytes_fetched)} in {result.seconds:.1f} s ({result.mb_per_s:,.1f} MB/s)")


@handle_errors
def download(
    repo: RepoArg = dl.DEFAULT_REPO,
    out: OutDirOpt = ...,  # type: ignore[assignment]
    revision: RevisionOpt = None,
    shards: ShardsOpt = None,
    include: IncludeOpt = None,
    workers: WorkersOpt = dl.DEFAULT_WORKERS,
    dry_run: DryRunOpt = False,
    verify: VerifyOpt = False,
    json: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Download dataset shards from the Hub, verified by hash and resumable across runs."""
    with _DownloadReporter() as reporter:
        plan = dl.plan_download(
            out, repo, revision=revision, shards=shards, include=include or (), token=token, reporter=reporter
        )
        if dry_run:
            result = None
        else:
            result = dl.run_plan(plan, workers=workers, verify=verify, token=token, reporter=reporter)
    if result is None:
        print_json(plan.to_dict()) if json else _print_plan(plan)
    else:
        print_json(result.to_dict()) if json else _print_summary(result)


def register(app: typer.Typer) -> None:
    app.command("download", epilog=EPILOG)(download)
