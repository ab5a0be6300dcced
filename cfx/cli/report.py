"""`cfx report`: the evidence for a set in one self-contained folder (index.html + report.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cfx.cli._errors import handle_errors
from cfx.cli._options import SeedOpt, SkipBadOpt, SourceArg, TokenOpt, WorkersOpt, ranged
from cfx.cli._output import CliReporter, refuse_clobber
from cfx.defaults import REPORT_SAMPLE


@handle_errors
def report_cmd(
    source: SourceArg,
    out: Annotated[
        Path,
        typer.Option("--out", help="The report folder to write (index.html, report.json, assets/, thumbs/)."),
    ],
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="Also check this set against another (e.g. the evaluation set): exact, near and prompt "
            "leaks, with the pairs as thumbnails.",
        ),
    ] = None,
    sample: Annotated[
        int,
        ranged(
            "--sample", lo=0, hi=100_000, help="Thumbnails in Browse (stratified by generator / real source)."
        ),
    ] = REPORT_SAMPLE,
    seed: SeedOpt = 0,
    dedupe_report: Annotated[
        Path | None,
        typer.Option(
            "--dedupe",
            help="A `cfx dedupe --report` folder: show its duplicates (e.g. what was removed before SOURCE).",
        ),
    ] = None,
    joint: Annotated[
        bool, typer.Option("--joint/--no-joint", help="Measure the joint shortcut canary too.")
    ] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
    workers: WorkersOpt = 2,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
) -> None:
    """Write a report of SOURCE to open in a browser (no network needed): composition (per split),
    the shortcut audit, duplicates, splits and leaks, a filterable sample of thumbnails and provenance.

    Each section needs its facts: byte facts from `cfx inspect`, hashes from `cfx dedupe` (both cached),
    splits from `cfx split`; a missing one says which command adds it. Only the thumbnails read image
    bytes (one streaming pass); with --against, rows the hash cache lacks are hashed as `cfx leaks` does.
    report.json holds every number the page shows.

    Examples:

    \b
      cfx report train.parquet --out report/
      cfx report split.parquet --out report/ --against eval.parquet --sample 2000 --seed 1
      cfx dedupe data/ -o kept.parquet --report dd/ && cfx report kept.parquet --dedupe dd/ --out report/
      xdg-open report/index.html
    """
    from cfx.load import load_manifest
    from cfx.report import ReportOptions, report

    with CliReporter() as reporter:
        manifest = load_manifest(source, token=token, skip_bad=skip_bad, workers=workers, reporter=reporter)
        refuse_clobber(source, manifest, {"--out": out}, extra_inputs=[dedupe_report])
        other = None
        if against is not None:
            other = load_manifest(against, token=token, skip_bad=skip_bad, workers=workers, reporter=reporter)
            refuse_clobber(against, other, {"--out": out})
        options = ReportOptions(
            sample=sample, seed=seed, joint=joint, workers=workers, dedupe_report=dedupe_report
        )
        report(
            manifest,
            out,
            options,
            against=other,
            against_source=against,
            overwrite=overwrite,
            reporter=reporter,
        )
        reporter.info(f"Wrote {out}/index.html and {out}/report.json")


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
