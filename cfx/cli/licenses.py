"""`cfx licenses`: licences per row (generators from the dataset's table, real images by source)."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cfx.cli._errors import handle_errors
from cfx.cli._options import (
    JsonOpt,
    LicenseColumnOpt,
    LicenseTableOpt,
    ModelColumnOpt,
    OutputOpt,
    RealLicenseTableOpt,
    SkipBadOpt,
    SourceArg,
    TokenOpt,
    WorkersOpt,
)
from cfx.cli._output import (
    CliReporter,
    emit_manifest,
    err_console,
    out_console,
    print_json,
    refuse_clobber,
    stdout_is_pipe,
)

SHOW_MISSING = 20


def _flags(entry: dict[str, Any]) -> str:
    out = []
    if entry["unknown"]:
        out.append("unknown")
    elif entry["commercial"] is None:
        out.append("commercial use unknown")
    if entry["non_commercial"]:
        out.append("non-commercial")
    if entry["share_alike"]:
        out.append("share-alike")
    if entry["commercial"] is True:
        out.append("commercial ok")
    return ", ".join(out)


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"cfx licenses — {report['root']} ({report['rows']:,} rows)", title_justify="left")
    for name, justify in (
        ("licence", "left"),
        ("rows", "right"),
        ("real", "right"),
        ("generated", "right"),
        ("generators", "right"),
        ("flags", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for e in report["licenses"]:
        table.add_row(
            e["license"],
            f"{e['rows']:,}",
            f"{e['real']:,}",
            f"{e['generated']:,}",
            f"{e['generators']:,}",
            _flags(e),
        )
    console.print(table)
    f = report["flags"]
    console.print(
        f"non-commercial: {f['non_commercial']['rows']:,} rows · share-alike: {f['share_alike']['rows']:,} rows · "
        f"commercial use unknown: {f['unknown']['rows']:,} rows · commercial ok: {f['commercial']['rows']:,} rows",
        markup=False,
    )
    tbl = report.get("table")
    if tbl:
        console.print(
            f"generator licence table: {', '.join(tbl['files'])} (columns {tbl['key_column']!r}, "
            f"{tbl['license_column']!r}; {tbl['entries']:,} entries)",
            markup=False,
        )
    elif "table" in report:
        console.print(
            "generator licence table: none found — every generator's licence is unknown", markup=False
        )
    missing = report.get("missing_generators") or []
    if missing:
        shown = ", ".join(f"{m['model_name']} ({m['rows']:,})" for m in missing[:SHOW_MISSING])
        more = f", … {len(missing) - SHOW_MISSING:,} more (see --json)" if len(missing) > SHOW_MISSING else ""
        console.print(
            f"{len(missing):,} generator(s) not in the licence table (licence unknown): {shown}{more}",
            markup=False,
        )
    unknown_real = report.get("unknown_real_sources") or []
    if unknown_real:
        shown = ", ".join(f"{m['real_source']} ({m['rows']:,})" for m in unknown_real)
        console.print(
            f"real source(s) not in the real-source table (licence unknown): {shown} — "
            "add them with --real-license-table FILE",
            markup=False,
        )


@handle_errors
def licenses(
    source: SourceArg,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    license_table: LicenseTableOpt = None,
    model_column: ModelColumnOpt = None,
    license_column: LicenseColumnOpt = None,
    real_license_table_path: RealLicenseTableOpt = None,
    workers: WorkersOpt = 4,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
) -> None:
    """Show rows and generators per licence, flag non-commercial / share-alike / unknown ones, annotate rows.

    Generated rows get the licence of their generator from the dataset's data/metadata table (or
    --license-table); real rows get the licence of their real_source from a built-in, documented table
    (extend or override it with --real-license-table). With -o (or when stdout is a pipe) the manifest is
    written with 'license' and 'license_raw' columns added, and the report goes to stdout (-o) or stderr (pipe).

    Examples:

    \b
      cfx licenses data/
      cfx licenses data/ --json
      cfx licenses manifest.parquet --license-table models.csv --model-column repo --license-column spdx
      cfx licenses data/ -o licensed.parquet
    """
    from cfx.licenses import annotate_licenses_info, license_report, load_license_table, real_license_table
    from cfx.load import load_manifest

    with CliReporter() as reporter:
        manifest = load_manifest(source, token=token, skip_bad=skip_bad, workers=workers, reporter=reporter)
        refuse_clobber(
            source, manifest, {"-o": output}, extra_inputs=[license_table, real_license_table_path]
        )
        table = (
            load_license_table(license_table, model_column, license_column)
            if license_table is not None
            else None
        )
        real = real_license_table(real_license_table_path)
        annotated, info = annotate_licenses_info(manifest, table, real, token=token, reporter=reporter)
    report = license_report(annotated, info)
    if output is not None:
        emit_manifest(annotated, output)
    elif not as_json and stdout_is_pipe():
        emit_manifest(annotated, None)
        render(report, err_console())
        return
    if as_json:
        print_json(report)
    else:
        render(report, out_console())


def register(app: typer.Typer) -> None:
    app.command("licenses")(licenses)
