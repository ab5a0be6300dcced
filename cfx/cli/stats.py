"""`cfx stats`: totals and breakdowns of a dataset or manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cfx.cli._errors import handle_errors
from cfx.cli._options import COUNT_MAX, JsonOpt, SkipBadOpt, SourceArg, TokenOpt, WorkersOpt, ranged
from cfx.cli._output import CliReporter, err_console, out_console, print_json, refuse_clobber
from cfx.errors import UsageError
from cfx.units import human_bytes

# Columns `cfx inspect` adds (cfx.bytefacts.FACT_COLUMNS + consistency); listed here so stats starts fast.
BYTE_FACTS = (
    "actual_format",
    "num_bytes",
    "header_width",
    "header_height",
    "header_mode",
    "bit_depth",
    "jpeg_quality",
    "jpeg_quality_exact",
    "chroma_subsampling",
    "progressive",
    "has_exif",
    "has_gps",
    "has_icc",
    "has_c2pa",
    "inspect_error",
    "format_mismatch",
    "size_mismatch",
    "mode_mismatch",
)


def _render(stats: dict[str, Any]) -> None:
    console = out_console()
    t = stats["totals"]
    head = Table(title=f"cfx stats — {stats['root']}", show_header=False, title_justify="left")
    head.add_column("what")
    head.add_column("value", justify="right")
    for key in ("rows", "real", "generated", "generators", "shards"):
        head.add_row(key, f"{t[key]:,}")
    head.add_row("shard bytes", human_bytes(t["shard_bytes"]))
    head.add_row("image bytes", human_bytes(t["image_bytes"]))
    console.print(head)
    for column, b in stats["breakdowns"].items():
        table = Table(title=f"by {column} ({b['distinct']:,} values)", title_justify="left")
        for name, justify in (
            ("value", "left"),
            ("rows", "right"),
            ("real", "right"),
            ("generated", "right"),
            ("share", "right"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for v in b["values"]:
            table.add_row(
                str(v["value"]),
                f"{v['rows']:,}",
                f"{v['real']:,}",
                f"{v['generated']:,}",
                f"{v['share']:.1%}",
            )
        if b["omitted"]:
            table.add_row(f"… {b['omitted']:,} more (use --top)", "", "", "", "")
        console.print(table)


@handle_errors
def stats(
    source: SourceArg,
    by: Annotated[
        list[str] | None,
        typer.Option("--by", help="Break down by this manifest column instead of the defaults (repeatable)."),
    ] = None,
    top: Annotated[
        int,
        ranged(
            "--top",
            lo=1,
            hi=COUNT_MAX,
            help="Values shown for long breakdowns (generators, resolutions).",
        ),
    ] = 20,
    as_json: JsonOpt = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw the main breakdowns into this PNG file.")
    ] = None,
    workers: WorkersOpt = 4,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
) -> None:
    """Show totals (rows, real, generated, generators, shards, bytes) and breakdowns of SOURCE.

    --by also takes the byte facts of `cfx inspect` (jpeg_quality, chroma_subsampling, actual_format, …):
    they come from the inspect cache, or one pass over the image bytes fills it. With a jpeg_quality
    column, --plot adds the quality histogram of real against generated images.

    Examples:

    \b
      cfx stats data/
      cfx stats manifest.parquet --by architecture --by format --json
      cfx stats hf://datasets/OwensLab/CommunityForensics-Small --plot cf-small.png
      cfx stats data/ --by jpeg_quality --by chroma_subsampling --plot quality.png
    """
    from cfx.load import load_manifest
    from cfx.stats import compute_stats, plot_stats

    with CliReporter() as reporter:
        manifest = load_manifest(source, token=token, skip_bad=skip_bad, workers=workers, reporter=reporter)
        if any(c in BYTE_FACTS and c not in manifest.df.columns for c in by or []):
            from cfx.inspect import (
                inspect_manifest,
            )  # byte facts: from the cache, else one pass over the bytes

            manifest = inspect_manifest(
                manifest, workers=workers, skip_bad=skip_bad, reporter=reporter
            ).manifest
    refuse_clobber(source, manifest, {"--plot": plot})
    for column in by or []:
        if column not in manifest.df.columns:
            raise UsageError(
                f"--by {column}: no such manifest column",
                f"pick one of: {', '.join(manifest.df.columns)}",
            )
    result = compute_stats(manifest, by=by, top=top)
    if plot is not None:
        plot_stats(result, str(plot))
        err_console().print(f"Wrote plot to {plot}", markup=False)
    if as_json:
        print_json(result)
    else:
        _render(result)


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)
