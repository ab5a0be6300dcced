"""`cfx balance`: equal real and generated rows, spread over generators, licence-filtered, matched, paired."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

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
from cfx.cli._output import CliReporter, emit_manifest, err_console, is_quiet, print_json, refuse_clobber
from cfx.cli._select import add_licenses, with_selection_options
from cfx.defaults import BYTE_FACT_MATCHES, MATCH_FEATURES, PIXEL_FACT_COLUMNS, PIXEL_MATCHES


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"cfx balance — {report['options']}", title_justify="left")
    for name, justify in (
        ("step", "left"),
        ("rows", "right"),
        ("real", "right"),
        ("generated", "right"),
        ("generators", "right"),
        ("real sources", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in report["steps"]:
        table.add_row(
            s["step"],
            f"{s['rows']:,}",
            f"{s['real']:,}",
            f"{s['generated']:,}",
            f"{s['generators']:,}",
            f"{s['real_sources']:,}",
        )
    console.print(table)
    r = report["result"]
    per = r["rows_per_generator"]
    line = (
        f"kept {r['real']:,} real + {r['generated']:,} generated from {r['generators']:,} generators "
        f"(rows per generator: min {per['min']:,}, median {per['median']:,}, max {per['max']:,}); "
        f"{r['bins']:,} bin(s)"
    )
    if r["pairs"] is not None:
        line += f"; {r['pairs']:,} pairs"
    console.print(line, markup=False)
    if report["per_real_source"]:
        console.print(
            "real sources: " + ", ".join(f"{k} {v:,}" for k, v in report["per_real_source"].items()),
            markup=False,
        )
    if report["per_stratum"]:
        console.print(
            "generated per stratum: " + ", ".join(f"{k} {v:,}" for k, v in report["per_stratum"].items()),
            markup=False,
        )


def _byte_fact(spec: str) -> bool:
    name = spec.partition(":")[0].strip().lower().replace("_", "-")
    return name in BYTE_FACT_MATCHES or name in ("quality", "subsampling")


def _pixel_fact(spec: str) -> bool:
    name = spec.partition(":")[0].strip()
    return name.lower() in PIXEL_MATCHES or name in PIXEL_FACT_COLUMNS


@handle_errors
@with_selection_options(without={"max_per_generator"})
def balance_cmd(
    source: SourceArg,
    output: OutputOpt = None,
    ratio: Annotated[
        str, typer.Option("--ratio", help="REAL:GENERATED rows, e.g. 1:1 (default) or 2:1.")
    ] = "1:1",
    per_generator: Annotated[
        int | None,
        ranged("--per-generator", lo=1, hi=COUNT_MAX, help="At most N rows from each generator."),
    ] = None,
    min_per_generator: Annotated[
        int | None,
        ranged(
            "--min-per-generator",
            lo=1,
            hi=COUNT_MAX,
            help="Drop generators that cannot contribute at least M rows.",
        ),
    ] = None,
    stratify: Annotated[
        str | None,
        typer.Option(
            "--stratify",
            help="Spread generated rows evenly over this column first (e.g. architecture), then over generators.",
        ),
    ] = None,
    match: Annotated[
        list[str] | None,
        typer.Option(
            "--match",
            help="Pair real and generated rows only within the same bin of this feature (repeatable): "
            + ", ".join(MATCH_FEATURES)
            + " or a column; named size features take a bin width (min-side:64), pixel facts and other numeric "
            "columns a number of quantile bins over both labels (noise:10, blockiness:10).",
        ),
    ] = None,
    pair: Annotated[
        bool, typer.Option("--pair", help="Add pair_id linking each generated row to one real row (1:1).")
    ] = False,
    seed: SeedOpt = 0,
    select: SelectionOptions = NO_SELECTION,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the report as JSON on stdout (then the manifest is only written with -o)."
        ),
    ] = False,
    workers: WorkersOpt = 4,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
) -> None:
    """Select equal real and generated rows (or --ratio), spread over generators and real sources.

    The row selection (generators, labels, --where…, as in `cfx subset`) and the licence options apply first; --match keeps real:generated at the ratio inside every bin of the matched
    features, so size and format stop predicting the label (byte facts such as jpeg-quality come from the
    `cfx inspect` cache, or one pass over the image bytes); --pair links the rows one to one. The selection
    is as large as the constraints allow and depends only on --seed and the rows. The report (rows and
    generators left after each step) goes to stderr, or as JSON to stdout with the --json option.

        Examples:

        \b
          cfx balance data/ -o balanced.parquet
          cfx balance manifest.parquet --match min-side:64 --match format --pair -o pairs.parquet
          cfx balance data/ --per-generator 500 --min-per-generator 50 --stratify architecture --commercial-only -o b.parquet
          cfx balance data/ --match resolution --json
          cfx balance data/ --match jpeg-quality:5 --match chroma-subsampling --match actual-format -o b.parquet
          cfx balance data/ --ratio 2:1 | cfx stats -
          cfx inspect data/ --pixels -o px.parquet && cfx balance px.parquet --match noise:10 --match dims-grid
    """
    from cfx.balance import BalanceOptions, balance, match_feature, parse_match, parse_ratio
    from cfx.licenses import check_license_patterns
    from cfx.load import load_manifest
    from cfx.select import apply_selection

    r = parse_ratio(ratio)
    # licences are balance's own first step (BalanceOptions), not a filter of the row selection
    rows = replace(select, licenses=None, exclude_licenses=None, commercial_only=False).selection(seed)
    include = check_license_patterns(select.licenses, "--licenses")
    exclude = check_license_patterns(select.exclude_licenses, "--exclude-licenses")
    with CliReporter() as reporter:
        manifest = load_manifest(source, token=token, skip_bad=skip_bad, workers=workers, reporter=reporter)
        refuse_clobber(source, manifest, {"-o": output}, extra_inputs=select.tables)
        if not rows.is_empty():
            manifest = apply_selection(manifest, rows, reporter=reporter).manifest
        if any(_byte_fact(s) for s in match or []) and "actual_format" not in manifest.df.columns:
            from cfx.inspect import (
                inspect_manifest,
            )  # byte facts: from the cache, else one pass over the bytes

            manifest = inspect_manifest(
                manifest, workers=workers, skip_bad=skip_bad, reporter=reporter
            ).manifest
        if any(match_feature(s) == "num-bytes" for s in match or []):
            from cfx.inspect import with_file_sizes

            manifest = with_file_sizes(manifest)  # the same num_bytes audit scores
        if any(_pixel_fact(s) for s in match or []):
            from cfx.inspect import cached_pixels  # pixel facts: from the cache (`cfx inspect --pixels`)

            manifest = cached_pixels(manifest) or manifest
        specs = [parse_match(s, manifest.df.columns) for s in match or []]
        needed = bool(include or exclude or select.commercial_only)
        manifest = add_licenses(manifest, select, needed=needed, token=token, reporter=reporter)
        options = BalanceOptions(
            ratio=r,
            per_generator=per_generator,
            min_per_generator=min_per_generator,
            stratify=stratify,
            pair=pair,
            match=specs,
            seed=seed,
            licenses=include,
            exclude_licenses=exclude,
            commercial_only=select.commercial_only,
        )
        result = balance(manifest, options)
    report = result.to_json()
    if as_json:
        if output is not None:
            emit_manifest(result.manifest, output)
        print_json(report)
        return
    if not is_quiet():
        render(report, err_console())
    emit_manifest(result.manifest, output)


def register(app: typer.Typer) -> None:
    app.command("balance")(balance_cmd)
