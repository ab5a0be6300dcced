"""`cfx split`: leak-free train/val/test (or K-fold) splits with a built-in leak proof."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cfx.cli._errors import handle_errors
from cfx.cli._options import (
    JsonOpt,
    OutputOpt,
    SeedOpt,
    SkipBadOpt,
    SourceArg,
    TokenOpt,
    WorkersOpt,
    ranged,
)
from cfx.cli._output import (
    CliReporter,
    emit_outcome,
    lineage_entry,
    refuse_clobber,
)
from cfx.defaults import DEDUPE_THRESHOLD, FOLDS_MAX


def render(summary: dict[str, Any], console: Console) -> None:
    t = Table(title=f"cfx {summary['options']}", title_justify="left")
    for name in ("split", "rows", "share", "asked", "gen", "real", "gen %", "models", "sources", "arch"):
        t.add_column(name, justify="left" if name == "split" else "right")
    for s in summary["splits"]:
        share = "-" if s["generated_share"] is None else f"{100 * s['generated_share']:.1f}"
        t.add_row(
            s["split"],
            f"{s['rows']:,}",
            f"{s['fraction']:.3f}",
            f"{summary['requested_fractions'][s['split']]:g}",
            f"{s['generated']:,}",
            f"{s['real']:,}",
            share,
            f"{s['generators']:,}",
            f"{s['real_sources']:,}",
            f"{s['architectures']:,}",
        )
    console.print(t)
    console.print(
        f"{summary['groups']:,} groups; {summary['merged_groups']:,} merged several units "
        f"({summary['rows_in_merged_groups']:,} rows, {summary['moved_rows']:,} moved by a merge); "
        f"largest group {summary['largest_group_rows']:,} rows; "
        f"{summary['held_out_group_rows']:,} rows held out; {summary['near_code_pairs']:,} near pHash pairs",
        markup=False,
    )
    for g in summary.get("largest_groups", [])[:3]:
        if g["units"] > 1:
            console.print(
                f"  merged group {g['key']}: {g['rows']:,} rows from {g['units']:,} units → {g['split']}",
                markup=False,
            )
    _render_dropped(summary, console)
    proof = ", ".join(f"{k} {v:,}" for k, v in summary["leak_proof"].items())
    verdict = "no leaks" if summary["leak_free"] else "LEAKS FOUND (a bug: please report it)"
    console.print(f"Leak proof (values in two splits): {proof} → {verdict}", markup=False)


def _render_dropped(summary: dict[str, Any], console: Console) -> None:
    """--resolve drop: rows dropped per split and label, by reason, and the generated shares."""
    dropped = summary.get("dropped")
    if not dropped:
        return
    per = "; ".join(
        f"{name} {d['generated']:,} generated + {d['real']:,} real" for name, d in dropped["by_split"].items()
    )
    why = ", ".join(f"{k} {v:,}" for k, v in dropped["by_reason"].items() if v)
    console.print(
        f"Dropped {dropped['rows']:,} rows whose bytes, prompt or near copy crossed splits ({why or 'none'}): {per}",
        markup=False,
    )
    share = summary["generated_share"]
    gaps = ", ".join(f"{k} {v:+.3f}" if v is not None else f"{k} -" for k, v in share["gap"].items())
    verdict = "within" if share["within_tolerance"] else "NOT within (a split holds one label only)"
    console.print(
        f"Generated share vs the whole set's {share['overall']:.3f}: {gaps} → {verdict} ±{share['tolerance']:g}",
        markup=False,
    )


SHARE_TOLERANCE = 0.05  # achieved vs asked share of rows per split, before a warning


def share_warnings(summary: dict[str, Any]) -> list[str]:
    """One warning when a split's share of rows is off the asked one by more than ``SHARE_TOLERANCE``: few
    or huge groups (duplicates and prompts chain units together) make the shares coarse."""
    asked = summary["requested_fractions"]
    off = [s for s in summary["splits"] if abs(s["fraction"] - asked[s["split"]]) > SHARE_TOLERANCE]
    if not off:
        return []
    if summary.get("dropped"):
        shares = ", ".join(f"{s['split']} {s['fraction']:.3f} (asked {asked[s['split']]:g})" for s in off)
        return [
            f"split shares are off what was asked: {shares} — the units (--by) alone are too few or too "
            "large for these fractions; try more units or other fractions"
        ]
    shares = ", ".join(f"{s['split']} {s['fraction']:.3f} (asked {asked[s['split']]:g})" for s in off)
    largest = summary.get("largest_groups") or []
    why = ""
    if largest:
        g = largest[0]
        why = f"; the largest group, {g['key']}, holds {g['rows']:,} rows from {g['units']:,} units and went to {g['split']}"
    return [
        f"split shares are off what was asked: {shares}{why} — groups are never cut (that would leak); "
        "try --by generator without --prompts, a lower --threshold, or more units"
    ]


def _floats(text: str) -> tuple[float, ...]:
    from cfx.errors import UsageError

    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(
            f"--fractions {text!r}: not a list of numbers", "e.g. --fractions 0.8,0.1,0.1"
        ) from None


@handle_errors
def split_cmd(
    source: SourceArg,
    output: OutputOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write one manifest per split: DIR/<split>.parquet.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the --out folder if it exists.")
    ] = False,
    names: Annotated[str, typer.Option("--names", help="Split names, comma-separated.")] = "train,val,test",
    fractions: Annotated[
        str, typer.Option("--fractions", help="Fraction of groups per split (sums to 1), comma-separated.")
    ] = "0.8,0.1,0.1",
    folds: Annotated[
        int | None,
        ranged(
            "--folds",
            lo=2,
            hi=FOLDS_MAX,
            help="K group folds named fold0…fold{K-1} (equal shares), replacing the names and fractions; "
            "at most the number of groups.",
            show_default=False,
        ),
    ] = None,
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by",
            help="Unit that must not be shared between splits (repeatable): generator, architecture, family "
            "(base model: --family-table), real-source, or a column name. Generated rows use the generated-side "
            "units, real rows real-source (else each real image is its own unit). Default: generator.",
            show_default=False,
        ),
    ] = None,
    threshold: Annotated[
        int,
        typer.Option("--threshold", "-t", help="Near duplicates (pHash distance <= t) stay in one split."),
    ] = DEDUPE_THRESHOLD,
    no_near: Annotated[bool, typer.Option("--no-near", help="Do not join near-duplicate pHashes.")] = False,
    no_exact: Annotated[
        bool, typer.Option("--no-exact", help="Do not join identical bytes (sha256).")
    ] = False,
    prompts: Annotated[
        bool, typer.Option("--prompts", help="Rows with the same normalised prompt stay in one split.")
    ] = False,
    test_generators: Annotated[
        list[str] | None,
        typer.Option(
            "--test-generators", help="Hold these generators out (names, globs or @file.txt) into test."
        ),
    ] = None,
    test_architectures: Annotated[
        list[str] | None,
        typer.Option(
            "--test-architectures", help="Hold these architectures out into test, e.g. GAN,PixDiff."
        ),
    ] = None,
    test_real_sources: Annotated[
        list[str] | None, typer.Option("--test-real-sources", help="Hold these real sources out into test.")
    ] = None,
    family_table: Annotated[
        Path | None,
        typer.Option("--family-table", help="CSV pattern,family extending the shipped base-model table."),
    ] = None,
    balance: Annotated[
        bool, typer.Option("--balance", help="Re-balance each split as `cfx balance` does (1:1, seeded).")
    ] = False,
    column: Annotated[str, typer.Option("--column", help="Name of the split column.")] = "assigned_split",
    overwrite_column: Annotated[
        bool,
        typer.Option("--overwrite-column", help="Replace --column when the manifest already has it."),
    ] = False,
    resolve: Annotated[
        str,
        typer.Option(
            "--resolve",
            help="Links by bytes, near pHash or prompt across units: merge their groups (may chain much of "
            "the set into one split), or drop the fewest rows that cross splits (units assigned first; "
            "reports rows dropped per split and label, keeps generated shares within 0.05).",
        ),
    ] = "merge",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Ignore and do not update the hash cache.")
    ] = False,
    workers: WorkersOpt = 2,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
) -> None:
    """Split rows into leak-free splits: no generator, duplicate picture or prompt in two splits.

    Rows joined by a shared unit (--by), identical bytes, a near-duplicate pHash (--threshold) or the
    same prompt (--prompts) form one group; each group goes to one split by a seeded hash of its key,
    so a group keeps its split when the data grows. The summary ends with an independent leak proof.
    The manifest (with the split column) goes to -o, or as Arrow IPC to stdout when piped.

    Examples:

    \b
      cfx split data/ -o split.parquet --out splits/
      cfx split manifest.parquet --by family --prompts --test-architectures GAN --json
      cfx split data/ --folds 5 --by generator -o folds.parquet
      cfx split data/ --prompts --resolve drop -o split.parquet
      cfx split data/ --test-generators 'stabilityai/*' -o split.parquet && cfx leaks splits/train.parquet splits/test.parquet
    """
    from cfx.load import load_manifest
    from cfx.select import split_values
    from cfx.split import SplitOptions, split, write_parts

    options = SplitOptions(
        names=tuple(split_values([names])),
        fractions=_floats(fractions),
        folds=folds,
        by=tuple(split_values(by)) or ("generator",),
        exact=not no_exact,
        near=not no_near,
        threshold=threshold,
        prompts=prompts,
        test_generators=tuple(split_values(test_generators)),
        test_architectures=tuple(split_values(test_architectures)),
        test_real_sources=tuple(split_values(test_real_sources)),
        seed=seed,
        balance=balance,
        family_table=family_table,
        column=column,
        overwrite_column=overwrite_column,
        resolve=resolve,
    )
    options.check()
    with CliReporter() as reporter:
        manifest = load_manifest(source, token=token, skip_bad=skip_bad, workers=workers, reporter=reporter)
        refuse_clobber(source, manifest, {"-o": output, "--out": out}, extra_inputs=[family_table])
        result = split(
            manifest, options, workers=workers, use_cache=not no_cache, skip_bad=skip_bad, reporter=reporter
        )
        for line in share_warnings(result.summary):
            reporter.warn(line)
        if out is not None:
            paths = write_parts(result, out, overwrite=overwrite, warn=reporter.warn, lineage=lineage_entry())
            reporter.info(f"Wrote {len(paths)} split manifest(s) to {out}/")
    emit_outcome(result.manifest, output, result.summary, render, as_json=as_json, what="split manifest")


def register(app: typer.Typer) -> None:
    app.command("split")(split_cmd)
