"""`cfx dedupe`: remove exact and perceptual duplicates, report label conflicts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cfx.cli._errors import handle_errors
from cfx.cli._options import (
    EngineOpt,
    JsonOpt,
    OutputOpt,
    RayAddressOpt,
    SkipBadOpt,
    SourceArg,
    TokenOpt,
    WorkersOpt,
)
from cfx.cli._output import (
    CliReporter,
    emit_outcome,
    refuse_clobber,
)
from cfx.defaults import DEDUPE_THRESHOLD, KEEP_POLICIES, SCOPES


def _render(summary: dict[str, Any], console: Console) -> None:
    o = summary["options"]
    h = summary["hashing"]
    c = summary["conflicts"]
    t = Table(
        title=f"cfx dedupe — threshold {o['threshold']}, keep {o['keep']}, scope {o['scope']}, "
        f"conflicts {o['conflicts']}",
        show_header=False,
        title_justify="left",
    )
    t.add_column("what")
    t.add_column("value", justify="right")
    for name, value in (
        ("rows", summary["rows"]),
        ("decoded now / from cache", f"{h['decoded']:,} / {h['from_cache']:,}"),
        ("undecodable (hash_error)", h["hash_errors"]),
        ("near-uniform (not matched perceptually)", h["near_uniform"]),
        ("duplicate groups", summary["groups"]),
        ("exact duplicates", summary["exact_duplicates"]),
        ("near duplicates", summary["near_duplicates"]),
        ("label conflicts: pairs / rows / groups", f"{c['pairs']:,} / {c['rows']:,} / {c['groups']:,}"),
        ("removed", summary["removed"]),
        ("kept", summary["kept"]),
    ):
        t.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(t)
    for key, title in (("by_label", "by label"), ("by_generator", "by generator (top 20 by removed)")):
        if not summary[key]:
            continue
        bt = Table(title=title, title_justify="left")
        bt.add_column("value")
        bt.add_column("rows", justify="right")
        bt.add_column("removed", justify="right")
        for v in summary[key]:
            bt.add_row(str(v["value"]), f"{v['rows']:,}", f"{v['removed']:,}")
        console.print(bt)


@handle_errors
def dedupe_cmd(
    source: SourceArg,
    exact: Annotated[
        bool, typer.Option("--exact", help="Match identical bytes (sha256). Default: both kinds.")
    ] = False,
    near: Annotated[
        bool, typer.Option("--near", help="Match perceptual near-duplicates (pHash). Default: both kinds.")
    ] = False,
    threshold: Annotated[
        int,
        typer.Option(
            "--threshold",
            "-t",
            help="Max pHash Hamming distance (bits of 64) for a near-duplicate.",
        ),
    ] = DEDUPE_THRESHOLD,
    keep: Annotated[
        str,
        typer.Option(
            "--keep", help=f"Which row of a group survives: {', '.join(KEEP_POLICIES)}. Ties: shard, row."
        ),
    ] = "first",
    scope: Annotated[
        str, typer.Option("--scope", help=f"Where duplicates count: {', '.join(SCOPES)}.")
    ] = "all",
    conflicts: Annotated[
        str,
        typer.Option(
            "--conflicts",
            help="Same picture labelled real and generated: drop (all its rows), keep (the survivor as "
            "usual) or report (remove none of them). Always reported.",
        ),
    ] = "drop",
    output: OutputOpt = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", help="Write pairs.parquet, groups.parquet and summary.json into this folder."
        ),
    ] = None,
    gallery: Annotated[
        Path | None,
        typer.Option("--gallery", help="Write PNG contact sheets of the largest/most uncertain groups here."),
    ] = None,
    dhash: Annotated[
        bool,
        typer.Option(
            "--dhash", help="Also store imagehash's dHash in a dhash column (one more resize per image)."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the --report / --gallery folders if they exist.")
    ] = False,
    as_json: JsonOpt = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Ignore and do not update the hash cache.")
    ] = False,
    workers: WorkersOpt = 2,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
) -> None:
    """Remove exact and near-duplicate images (pHash), keeping one row per group; report label conflicts.

    The kept manifest (with sha256, phash, near_uniform and hash_error columns) goes to -o, or as
    Arrow IPC to stdout when piped; the summary then goes to stderr. Without -o and with --json or a
    terminal on stdout, only the summary is printed (nothing is removed anywhere).

    Examples:

    \b
      cfx dedupe data/ -o kept.parquet --report dedupe-report/
      cfx dedupe manifest.parquet --threshold 6 --keep largest --scope within-label --json
      cfx dedupe data/ --gallery sheets/ | cfx stats -
      RAY_ADDRESS=10.0.0.5:6379 cfx dedupe /shared/cf/ --engine ray -o kept.parquet
    """
    from cfx.dedupe import DedupeOptions, dedupe, write_report
    from cfx.engine_ray import open_engine
    from cfx.gallery import write_gallery
    from cfx.load import load_manifest
    from cfx.outputs import check_folder_output

    both = not (exact or near)
    options = DedupeOptions(
        exact=exact or both,
        near=near or both,
        threshold=threshold,
        keep=keep,
        scope=scope,
        conflicts=conflicts,
    )
    options.check()
    with open_engine(engine, ray_address) as eng, CliReporter() as reporter:
        manifest = load_manifest(
            source, token=token, skip_bad=skip_bad, workers=workers, engine=eng, reporter=reporter
        )
        refuse_clobber(source, manifest, {"-o": output, "--report": report, "--gallery": gallery})
        for option, folder in (("--report", report), ("--gallery", gallery)):
            if folder is not None:  # before hashing: refuse an existing folder at once, not after the work
                check_folder_output(folder, overwrite, option)
        result = dedupe(
            manifest,
            options,
            workers=workers,
            use_cache=not no_cache,
            skip_bad=skip_bad,
            with_dhash=dhash,
            engine=eng,
            reporter=reporter,
        )
        if report is not None:
            write_report(result, report, overwrite=overwrite, reporter=reporter)
            reporter.info(f"Wrote pairs.parquet, groups.parquet and summary.json to {report}/")
        if gallery is not None:
            sheets = write_gallery(
                result.hashed,
                result.groups,
                gallery,
                threshold=options.threshold,
                overwrite=overwrite,
                reporter=reporter,
            )
            reporter.info(
                f"Wrote {len(sheets)} contact sheet(s) to {gallery}/"
                + (f" (first: {sheets[0].name})" if sheets else " (no duplicate groups)")
            )
    emit_outcome(
        result.kept,
        output,
        result.summary,
        _render,
        as_json=as_json,
        what="deduplicated manifest",
        note_without_manifest="No manifest written (summary only): give -o kept.parquet or pipe into another command.",
    )


def register(app: typer.Typer) -> None:
    app.command("dedupe")(dedupe_cmd)
