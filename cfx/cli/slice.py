"""`cfx slice`: pick manifest rows by position, shard, SQL filter or seeded sample (no image bytes)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cfx.cli._errors import handle_errors
from cfx.cli._options import (
    COUNT_MAX,
    NO_SELECTION,
    OutputOpt,
    SeedOpt,
    SelectionOptions,
    SkipBadOpt,
    SourceArg,
    TokenOpt,
    WorkersOpt,
    ranged,
)
from cfx.cli._output import CliReporter, emit_manifest, err_console, is_quiet
from cfx.cli._select import load_licensed, with_selection_options

if TYPE_CHECKING:
    import polars as pl


class TextFormat(str, Enum):
    jsonl = "jsonl"
    csv = "csv"


@handle_errors
@with_selection_options()
def slice_(
    source: SourceArg,
    rows: Annotated[
        str | None,
        typer.Option(
            "--rows",
            help="Rows by position, in the `datasets` split syntax: '[:10%]', '[100:200]', '[-5%:]', "
            "'[:10%]+[-10%:]'.",
            show_default=False,
        ),
    ] = None,
    shards: Annotated[
        str | None,
        typer.Option("--shards", help="Only these shard numbers, e.g. 0-9,93.", show_default=False),
    ] = None,
    head: Annotated[
        int | None,
        ranged(
            "--head",
            lo=0,
            hi=COUNT_MAX,
            help="Keep the first N rows (last step).",
            show_default=False,
        ),
    ] = None,
    sample: Annotated[
        str | None,
        typer.Option(
            "--sample",
            help="A seeded random sample: N rows, or a fraction (0.1 or 10%).",
            show_default=False,
        ),
    ] = None,
    seed: SeedOpt = 0,
    stratify: Annotated[
        str | None,
        typer.Option(
            "--stratify",
            help="Sample each value of this column in proportion (e.g. label, model_name).",
            show_default=False,
        ),
    ] = None,
    select: SelectionOptions = NO_SELECTION,
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns", help="Columns shown by --format jsonl/csv, comma-separated.", show_default=False
        ),
    ] = None,
    fmt: Annotated[
        TextFormat | None,
        typer.Option(
            "--format",
            help="Print rows as jsonl or csv instead of a manifest (for jq / awk).",
            show_default=False,
        ),
    ] = None,
    output: OutputOpt = None,
    workers: WorkersOpt = 4,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
) -> None:
    """Select rows of SOURCE by position, shard, SQL filter or seeded sample; no image bytes are read.

    Steps run in this order: --shards, --rows, the row selection (generators, labels, licences… and
    --where, as in `cfx subset`), --sample, --head. The result is a manifest
    (-o FILE.parquet, or Arrow IPC on stdout when piped) or text rows with --format.

    Examples:

    \b
      cfx slice data/ --rows "[:10%]+[-10%:]" -o ends.parquet
      cfx slice manifest.parquet --where "architecture = 'GAN' AND width >= 512" | cfx subset - --out gan512
      cfx slice data/ --sample 1000 --stratify model_name --seed 1 -o sample.parquet
      cfx slice data/ --shards 0-9 --head 5 --format jsonl --columns shard,row,model_name
      cfx slice data/ --commercial-only --labels generated --sample 500 -o open.parquet
    """
    from cfx.outputs import write_atomic
    from cfx.slice import SliceSpec, parse_sample, slice_manifest, write_rows

    selection = select.selection(seed)
    spec = SliceSpec(
        rows=rows,
        shards=shards,
        head=head,
        sample=parse_sample(sample) if sample is not None else None,
        seed=seed,
        stratify=stratify,
        selection=selection,
    )
    with CliReporter() as reporter:
        manifest = load_licensed(
            source,
            select,
            selection,
            outputs={"-o": output},
            token=token,
            skip_bad=skip_bad,
            workers=workers,
            reporter=reporter,
        )
        result = slice_manifest(manifest, spec, reporter=reporter)
        if not is_quiet():
            for step in result.steps:
                reporter.info(f"{step.name}: {step.before:,} → {step.after:,} rows")
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    if fmt is None:
        emit_manifest(result.manifest, output)
        return
    df = result.manifest.df
    if output is not None:
        write_atomic(Path(output), lambda tmp: _write_text(df, tmp, fmt.value, cols))
        if not is_quiet():
            err_console().print(f"Wrote {df.height:,} rows as {fmt.value} to {output}", markup=False)
        return
    write_rows(df, sys.stdout.buffer, fmt.value, cols)
    sys.stdout.buffer.flush()


def _write_text(df: pl.DataFrame, path: str, fmt: str, cols: list[str] | None) -> None:
    from cfx.slice import write_rows

    with open(path, "wb") as fh:
        write_rows(df, fh, fmt, cols)


def register(app: typer.Typer) -> None:
    app.command("slice")(slice_)
