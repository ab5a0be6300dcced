"""`cfx leaks`: cross-set overlap between two manifests or datasets (exact, near, prompt, units)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cfx.cli._errors import handle_errors
from cfx.cli._options import JsonOpt, SkipBadOpt, TokenOpt, WorkersOpt
from cfx.cli._output import CliReporter, out_console, print_json, refuse_clobber
from cfx.defaults import DEDUPE_THRESHOLD

SideArg = Annotated[
    str,
    typer.Argument(
        help="A dataset folder, shard glob, saved manifest (.parquet) or hf://datasets/ORG/REPO[@REV].",
        show_default=False,
    ),
]


def render(summary: dict[str, Any], console: Console) -> None:
    t = Table(
        title=f"cfx leaks — A: {summary['a_rows']:,} rows, B: {summary['b_rows']:,} rows",
        title_justify="left",
    )
    for name in ("kind", "shared keys / code pairs", "rows of A", "rows of B"):
        t.add_column(name, justify="left" if name == "kind" else "right")
    for kind, c in summary["by_kind"].items():
        n = c.get("keys", c.get("code_pairs", c.get("values", 0)))
        t.add_row(kind, f"{n:,}", f"{c['rows_a']:,}", f"{c['rows_b']:,}")
    console.print(t)
    if summary["by_generator"]:
        g = Table(title="leaked pairs by generator of A (top 20)", title_justify="left")
        g.add_column("generator")
        g.add_column("pairs", justify="right")
        for row in summary["by_generator"]:
            g.add_row(str(row["generator"]), f"{row['pairs']:,}")
        console.print(g)
    verdict = f"{summary['leaks']:,} leak(s)" if summary["leaks"] else "no leaks"
    console.print(f"{verdict} ({summary['pairs_listed']:,} row pairs listed)", markup=False)


@handle_errors
def leaks_cmd(
    a: SideArg,
    b: SideArg,
    near: Annotated[
        bool, typer.Option("--near", help="Also match near duplicates (pHash distance up to the threshold).")
    ] = False,
    threshold: Annotated[
        int, typer.Option("--threshold", "-t", help="Max pHash Hamming distance for --near.")
    ] = DEDUPE_THRESHOLD,
    no_exact: Annotated[
        bool, typer.Option("--no-exact", help="Do not match identical bytes (sha256).")
    ] = False,
    prompts: Annotated[
        bool, typer.Option("--prompts", help="Also match identical normalised prompts.")
    ] = False,
    units: Annotated[
        bool,
        typer.Option(
            "--units",
            help="Count a generator (generated rows) or real source (real rows) present in both as a leak. "
            "They are always listed.",
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", help="Write pairs.parquet, units.parquet and summary.json into this folder."
        ),
    ] = None,
    gallery: Annotated[
        Path | None,
        typer.Option("--gallery", help="Write PNG contact sheets of leaked pairs (A beside B) here."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the --report / --gallery folders if they exist.")
    ] = False,
    fail_on_leak: Annotated[
        bool, typer.Option("--fail-on-leak", help="Exit 8 when anything overlaps (to gate a pipeline).")
    ] = False,
    as_json: JsonOpt = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Ignore and do not update the hash cache.")
    ] = False,
    workers: WorkersOpt = 2,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
) -> None:
    """Find images, near copies, prompts and units shared by two sets A and B (e.g. train vs eval).

    Near search is exact (identical to a brute-force A × B comparison). Hashes come from the per-shard
    cache. The summary goes to stdout; --fail-on-leak exits 8 when any leak counts.

    Examples:

    \b
      cfx leaks splits/train.parquet splits/test.parquet --near --prompts --fail-on-leak
      cfx leaks subset/ hf://datasets/OwensLab/CommunityForensics-Eval --near --report leaks/
      cfx leaks train.parquet eval.parquet --near -t 6 --gallery sheets/ --json
    """
    from cfx.leaks import LeakFoundError, LeakOptions, leaks, write_leak_gallery, write_report
    from cfx.load import load_manifest

    options = LeakOptions(exact=not no_exact, near=near, threshold=threshold, prompts=prompts, units=units)
    options.check()
    with CliReporter() as reporter:
        ma = load_manifest(a, token=token, skip_bad=skip_bad, workers=workers, reporter=reporter)
        mb = load_manifest(b, token=token, skip_bad=skip_bad, workers=workers, reporter=reporter)
        for side, m in ((a, ma), (b, mb)):
            refuse_clobber(side, m, {"--report": report, "--gallery": gallery})
        result = leaks(
            ma, mb, options, workers=workers, use_cache=not no_cache, skip_bad=skip_bad, reporter=reporter
        )
        if report is not None:
            write_report(result, report, overwrite=overwrite, warn=reporter.warn)
            reporter.info(f"Wrote pairs.parquet, units.parquet and summary.json to {report}/")
        if gallery is not None:
            sheets = write_leak_gallery(result, gallery, overwrite=overwrite, warn=reporter.warn)
            reporter.info(f"Wrote {len(sheets)} contact sheet(s) to {gallery}/")
    if as_json:
        print_json(result.summary)
    else:
        render(result.summary, out_console())
    if fail_on_leak and result.leaks:
        raise LeakFoundError(
            f"{result.leaks:,} leak(s) between {a} and {b}",
            "see the summary (and --report DIR for the pairs); remove them, e.g. with `cfx split` or `cfx dedupe`",
        )


def register(app: typer.Typer) -> None:
    app.command("leaks")(leaks_cmd)
