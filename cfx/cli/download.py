"""`cfx download`: parse options, call cfx.download (or cfx.plan with a selection), print the plan or the summary."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table

from cfx.cli._errors import handle_errors
from cfx.cli._options import (
    NO_SELECTION,
    JsonOpt,
    RevisionOpt,
    SeedOpt,
    SelectionOptions,
    TokenOpt,
    WorkersOpt,
)
from cfx.cli._output import (
    CliReporter,
    byte_progress,
    command_line,
    is_quiet,
    out_console,
    print_json,
    refuse_clobber,
)
from cfx.cli._select import with_selection_options
from cfx.defaults import DEFAULT_REPO, DOWNLOAD_WORKERS
from cfx.errors import UsageError
from cfx.progress import NullReporter, Task
from cfx.units import parse_size

if TYPE_CHECKING:
    from cfx.download import DownloadPlan, DownloadResult
    from cfx.plan import Coverage, FetchPlan

RepoArg = Annotated[
    str, typer.Argument(help="Dataset repo on the Hub (ORG/NAME).", show_default=True, metavar="REPO")
]
OutDirOpt = Annotated[
    Path,
    typer.Option("--out", "-o", help="Folder to download into (created if missing).", show_default=False),
]
ShardsOpt = Annotated[
    str | None,
    typer.Option(
        "--shards",
        help="Shard numbers to fetch among data/*.parquet, e.g. 0-9,93 (default: all). With a row selection: "
        "select only among the rows of these shards.",
    ),
]
IncludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--include",
        help="Also fetch repo paths matching this glob (repeatable); alone, fetch only matching files; with a "
        "row selection, fetch them along with the planned shards. README.md and data/metadata/* always "
        "come along.",
    ),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would be fetched; download nothing.")]
VerifyOpt = Annotated[
    bool, typer.Option("--verify", help="Re-hash every local file, even those verified by an earlier run.")
]
ManifestOpt = Annotated[
    str | None,
    typer.Option(
        "--manifest",
        help="Fetch the shards of this manifest of REPO (a saved .parquet, or '-' for one piped on stdin), "
        "at the manifest's commit.",
        show_default=False,
    ),
]
BudgetOpt = Annotated[
    str | None,
    typer.Option(
        "--budget",
        help="At most this many shard bytes (e.g. 50GB): shards are picked by greedy coverage of the selected "
        "generators/architectures/real sources per byte.",
        show_default=False,
    ),
]
SubsetOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--subset-out",
        help="After the download, write the selected rows as a new dataset here (as `cfx subset` does).",
        show_default=False,
    ),
]


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


def _print_plan(plan: DownloadPlan) -> None:
    from cfx.download import iter_plan_lines

    rev = f" (revision {plan.revision})" if plan.revision else ""
    print(f"Plan: {plan.repo_id}@{plan.commit[:12]}{rev} -> {plan.out}")
    lines = list(iter_plan_lines(plan))
    width = max(len(path) for path, _, _ in lines)
    for path, size, what in lines:
        print(f"  {path:<{width}}  {_size(size):>12}  {what}")
    to_fetch = sum(1 for p in plan.files if p.bytes_to_fetch > 0)
    print(
        f"{_files(len(plan.files))}, {_size(plan.total_bytes)} in all; "
        f"to fetch: {_files(to_fetch)}, {_size(plan.bytes_to_fetch)} (dry run: nothing downloaded)"
    )


def _print_fetch_plan(plan: FetchPlan, dry_run: bool) -> None:
    from cfx.download import iter_plan_lines

    console = out_console()
    source = "the manifest" if plan.from_manifest else "the index"
    console.print(
        f"Plan: {plan.repo_id}@{plan.commit[:12]} -> {plan.download.out} (rows from {source}: {plan.selection})",
        markup=False,
    )
    chosen = set(plan.chosen)
    budgeted = plan.budget_plan is not None
    statuses = {path: what for path, _, what in iter_plan_lines(plan.download)}
    table = Table(title_justify="left")
    for name, justify in (("shard", "left"), ("rows", "right"), ("of", "right"), ("bytes", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("action")
    for n in plan.needs:
        of = f"{n.source_rows:,}" if n.source_rows is not None else "?"
        action = statuses[n.shard] if n.shard in chosen else "skip (over --budget)"
        table.add_row(n.shard, f"{n.rows:,}", of, _size(n.size), action)
    for p in plan.extra_files:
        table.add_row(p.remote.path, "", "", _size(p.remote.size), statuses[p.remote.path])
    console.print(table)
    cov = plan.coverage
    console.print(
        f"Needed: {_shards(len(plan.needs))}, {_size(plan.needed_bytes)}, {plan.needed_rows:,} rows selected",
        markup=False,
    )
    if budgeted:
        console.print(
            f"Budget {_size(plan.budget or 0)}: {len(plan.chosen)} of {len(plan.needs)} shards, "
            f"{_size(cov.bytes)}, {cov.rows:,} of {plan.needed_rows:,} rows; covers {_coverage(cov)}",
            markup=False,
        )
    alt = plan.alternative
    if alt is not None and not budgeted:
        console.print(
            f"Cheaper: {_shards(len(alt.shards))} ({_size(alt.bytes)}, {alt.rows:,} rows) covering every "
            f"requested value ({_coverage(alt)}); --budget {_size_up(alt.bytes)} picks them",
            markup=False,
        )
    tail = " (dry run: nothing downloaded)" if dry_run else ""
    console.print(
        f"To fetch: {_size(plan.download.bytes_to_fetch)} ({_files(len(plan.download.files))} incl. "
        f"README/metadata){tail}",
        markup=False,
    )


def _size_up(n: int) -> str:
    """A size to type after --budget that is not below ``n`` (three significant digits, rounded up)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{math.ceil((n + 1) / scale * 100) / 100:g}{unit}"  # +1: float round-off
    return f"{n}B"


def _shards(n: int) -> str:
    return "1 shard" if n == 1 else f"{n} shards"


def _coverage(cov: Coverage) -> str:
    words = {"generator": "generators", "architecture": "architectures", "real_source": "real sources"}
    parts = [f"{words[k]} {c}/{r}" for k, (c, r) in cov.by_kind().items()]
    return ", ".join(parts) or "no values"


def _print_summary(result: DownloadResult) -> None:
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
@with_selection_options()
def download(
    repo: RepoArg = DEFAULT_REPO,
    out: OutDirOpt = ...,  # type: ignore[assignment]
    revision: RevisionOpt = None,
    shards: ShardsOpt = None,
    include: IncludeOpt = None,
    select: SelectionOptions = NO_SELECTION,
    seed: SeedOpt = 0,
    manifest: ManifestOpt = None,
    budget: BudgetOpt = None,
    subset_out: SubsetOutOpt = None,
    workers: WorkersOpt = DOWNLOAD_WORKERS,
    dry_run: DryRunOpt = False,
    verify: VerifyOpt = False,
    json: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Download dataset shards from the Hub, verified by hash and resumable across runs.

    Files land at their repo paths (DIR/data/HFCF_small_3.parquet) and are verified against the Hub's sha256
    (git blob id for non-LFS files); DIR/.cfx keeps the verification record and partial downloads, so
    re-running skips verified files and resumes interrupted ones.

    Plan-first: with any selection option (the same as `cfx subset`), --manifest, --budget or --subset-out,
    cfx first selects rows from the remote metadata-only index (cached; well under 2% of the bytes), prints
    the plan (shards, bytes, rows per shard, a cheaper covering alternative), then fetches only those shards
    at the index's commit and, with --subset-out, writes the subset. See docs/download.md.

    Exit codes: 2 bad option (also: --budget below the smallest needed shard, a manifest of another repo),
    3 bad manifest, 4 Hub/network, 5 nothing selected, 7 cannot write --out / --subset-out, 130 interrupted
    (re-run to resume).

    Examples:

    \b
      cfx download --out cf-small --shards 0-9,93
      cfx download --out cf-small --dry-run
      cfx download OwensLab/CommunityForensics-Small --out cf --revision main --include 'data/metadata/*' --json
      cfx download --out cf --generators 'stabilityai/*' --labels generated --dry-run
      cfx download --out cf --architectures GAN --budget 50GB --subset-out gan
      cfx slice hf://datasets/OwensLab/CommunityForensics-Small --where "width >= 1024" | cfx download --out cf --manifest -
    """
    selection = select.selection(seed)
    # --out holds the files a re-run resumes from: refused only when it *is* a file this run reads
    tables = [manifest if manifest != "-" else None, *select.tables]
    refuse_clobber(None, None, {"--out": out}, extra_inputs=tables, within=False)
    refuse_clobber(None, None, {"--subset-out": subset_out}, extra_inputs=tables)
    plan_first = (
        not selection.is_empty()
        or any(table is not None for table in select.tables)
        or manifest is not None
        or budget is not None
        or subset_out is not None
    )
    if plan_first:
        _download_planned(
            repo,
            out,
            selection=selection,
            manifest_spec=manifest,
            budget=budget,
            subset_out=subset_out,
            revision=revision,
            shards=shards,
            include=include,
            select=select,
            workers=workers,
            dry_run=dry_run,
            verify=verify,
            as_json=json,
            token=token,
        )
        return
    from cfx.download import plan_download, run_plan

    with _DownloadReporter() as reporter:
        plan = plan_download(
            out, repo, revision=revision, shards=shards, include=include or (), token=token, reporter=reporter
        )
        if dry_run:
            result = None
        else:
            result = run_plan(plan, workers=workers, verify=verify, token=token, reporter=reporter)
    if result is None:
        print_json(plan.to_dict()) if json else _print_plan(plan)
    else:
        print_json(result.to_dict()) if json else _print_summary(result)


def _download_planned(
    repo: str,
    out: Path,
    *,
    selection: Any,
    manifest_spec: str | None,
    budget: str | None,
    subset_out: Path | None,
    revision: str | None,
    shards: str | None,
    include: list[str] | None,
    select: SelectionOptions,
    workers: int,
    dry_run: bool,
    verify: bool,
    as_json: bool,
    token: str | None,
) -> None:
    from cfx import plan as pf
    from cfx.load import load_manifest
    from cfx.manifest import is_manifest_file
    from cfx.shardspec import parse_shard_set

    if manifest_spec is not None and manifest_spec != "-" and not is_manifest_file(Path(manifest_spec)):
        raise UsageError(
            f"--manifest {manifest_spec} is not a cfx manifest",
            "pass a .parquet written by a cfx command (e.g. `cfx slice hf://datasets/ORG/REPO -o m.parquet`), "
            "or '-' for a manifest piped on stdin",
        )
    max_bytes = parse_size(budget, "--budget") if budget is not None else None
    with _DownloadReporter() as reporter:
        source = (
            load_manifest(manifest_spec, token=token, reporter=reporter)
            if manifest_spec is not None
            else None
        )
        plan = pf.plan_fetch(
            out,
            repo,
            selection=selection,
            manifest=source,
            revision=revision,
            budget=max_bytes,
            license_table=select.license_table,
            model_column=select.model_column,
            license_column=select.license_column,
            real_license_table=select.real_license_table,
            shards=parse_shard_set(shards) if shards is not None else None,
            include=include or (),
            token=token,
            workers=workers,
            reporter=reporter,
        )
        if subset_out is not None:
            pf.check_subset_out(plan, subset_out)
        if not as_json:
            _print_fetch_plan(plan, dry_run)
        if dry_run:
            if as_json:
                print_json({"dry_run": True, **plan.to_dict()})
            return
        result = pf.run_fetch(plan, workers=workers, verify=verify, token=token, reporter=reporter)
        written = (
            pf.write_fetched_subset(plan, subset_out, command=command_line(), reporter=reporter)
            if subset_out is not None
            else None
        )
    if as_json:
        print_json(
            {
                "dry_run": False,
                **plan.to_dict(),
                "result": result.to_dict(),
                "subset": written.to_json() if written is not None else None,
            }
        )
        return
    _print_summary(result)
    if written is not None and not is_quiet():
        out_console().print(
            f"Wrote {written.rows:,} rows ({_size(written.bytes)}) in {len(written.files)} file(s) to {subset_out}/",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    app.command("download")(download)
