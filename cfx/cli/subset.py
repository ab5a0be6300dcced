"""`cfx subset`: filter a dataset and write the rows as a new parquet dataset (card + manifest included)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cfx.cli._errors import handle_errors
from cfx.cli._options import (
    NO_SELECTION,
    ROW_GROUP_MAX,
    DropQualityOpt,
    EngineOpt,
    JsonOpt,
    KeepIccOpt,
    RayAddressOpt,
    SeedOpt,
    SelectionOptions,
    SkipBadOpt,
    SourceArg,
    StripMetadataOpt,
    TokenOpt,
    TransformOpt,
    WorkersOpt,
    ranged,
)
from cfx.cli._output import (
    CliReporter,
    command_line,
    err_console,
    is_quiet,
    out_console,
    print_json,
)
from cfx.cli._select import drop_quality, load_selected, quality_kinds, with_selection_options
from cfx.defaults import DEFAULT_ROW_GROUP_ROWS
from cfx.units import human_bytes, parse_size

if TYPE_CHECKING:
    from cfx.quality import DropReport
    from cfx.subset import SubsetPlan


class Order(str, Enum):
    source = "source"
    shuffle = "shuffle"


def _render_plan(plan: SubsetPlan, out: Path) -> None:
    console = out_console()
    approx = "" if plan.exact else "≈ "
    console.print(
        f"Would write {plan.rows:,} rows ({approx}{human_bytes(plan.est_bytes)}) from {len(plan.shards)} source "
        f"shard(s) to {out}/ (order: {plan.order})",
        markup=False,
    )
    for column, title in (("label", "label"), ("architecture", "architecture"), ("model_name", "generator")):
        counts = plan.counts(column)
        if not counts:
            continue
        table = Table(title=f"by {title} ({len(counts):,} values)", title_justify="left")
        table.add_column(title)
        table.add_column("rows", justify="right")
        for value, n in counts[:20]:
            table.add_row(value, f"{n:,}")
        if len(counts) > 20:
            table.add_row(f"… {len(counts) - 20:,} more", f"{sum(n for _, n in counts[20:]):,}")
        console.print(table)
    shards = Table(title="source shards touched", title_justify="left")
    for name, justify in (("shard", "left"), ("rows", "right"), ("of", "right"), ("bytes", "right")):
        shards.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in plan.shards:
        shards.add_row(s.shard, f"{s.rows:,}", f"{s.shard_rows:,}", approx + human_bytes(s.est_bytes))
    console.print(shards)


@handle_errors
@with_selection_options()
def subset(
    source: SourceArg,
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write the new dataset into.", show_default=False)
    ],
    select: SelectionOptions = NO_SELECTION,
    drop_quality_issues: DropQualityOpt = None,
    seed: SeedOpt = 0,
    order: Annotated[
        Order, typer.Option("--order", help="Row order: as in the source, or shuffled with --seed.")
    ] = Order.source,
    row_group_size: Annotated[
        int,
        ranged(
            "--row-group-size",
            lo=1,
            hi=ROW_GROUP_MAX,
            help="Rows per row group (small: fast random access).",
        ),
    ] = DEFAULT_ROW_GROUP_ROWS,
    max_shard_size: Annotated[
        str, typer.Option("--max-shard-size", help="Start a new output shard before one passes this size.")
    ] = "500MB",
    with_provenance: Annotated[
        bool, typer.Option("--with-provenance", help="Add source_shard and source_row columns.")
    ] = False,
    cdc: Annotated[
        bool,
        typer.Option(
            "--cdc/--no-cdc",
            help="Content-defined chunking of pages (Hub/Xet dedupe of re-uploads); --no-cdc skips its rolling hash.",
        ),
    ] = True,
    transform: TransformOpt = None,
    strip_metadata: StripMetadataOpt = False,
    keep_icc: KeepIccOpt = False,
    split_column: Annotated[
        str | None,
        typer.Option(
            "--split-column",
            help="Write one Hub split per value of this column (e.g. assigned_split from `cfx split`): "
            "data/<split>-0000i-of-0000N.parquet and a card listing each split.",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
    drop_bad_images: Annotated[
        bool,
        typer.Option(
            "--drop-bad-images",
            help="Leave out rows whose image_data is null or empty (default: copy them as they are, with a warning).",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print what would be written (rows, shards, bytes); write nothing."),
    ] = False,
    joint_canary: Annotated[
        bool,
        typer.Option(
            "--joint-canary",
            help="Add the joint shortcut canary (cfx audit --joint) of the written rows to the card's Evidence "
            "section (fits a model: seconds to a minute); the single-feature audit is always there.",
        ),
    ] = False,
    as_json: JsonOpt = False,
    workers: WorkersOpt = 4,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
) -> None:
    """Filter SOURCE and write the rows as a new parquet dataset: data/*.parquet, README.md, manifest.parquet.

    The output keeps exactly the source schema and byte-identical images (unless --transform or
    --strip-metadata rewrite them: then format, resolution and mode follow the new bytes and manifest.parquet
    keeps the source values); it loads with
    `datasets.load_dataset("parquet", data_dir=DIR)`. Memory stays bounded whatever the shard size, and the
    folder appears only when complete. Generator/architecture filters pick among generated images and
    --real-sources among real ones; add --labels to keep one side only. Licence options annotate the rows
    first (as `cfx licenses` does) unless the manifest already has a license column.

    Examples:

    \b
      cfx subset data/ --out sd2 --generators "stabilityai/*" --labels generated
      cfx subset data/ --out pairs --generators @gens.txt --real-sources COCO,FFHQ --max-per-generator 500
      cfx subset data/ --out open --commercial-only --exclude-nsfw
      cfx slice data/ --sample 10% --seed 1 | cfx subset - --out sample --order shuffle
      cfx subset manifest.parquet --out gan --architectures GAN --dry-run
      cfx subset data/ --out fixed --transform resize:max-side=512 --transform jpeg:96
      cfx subset data/ --out eval-jpeg30 --labels generated --transform jpeg:30
      cfx subset data/ --out share --labels real --strip-metadata --keep-icc
      cfx split data/ -o split.parquet && cfx subset split.parquet --out cf-split --split-column assigned_split
      cfx subset /shared/cf/ --out /shared/cf-512 --transform resize:max-side=512 --engine ray
    """
    from cfx.engine_ray import open_engine
    from cfx.subset import check_output, plan_subset, write_subset
    from cfx.transform import Pipeline

    max_bytes = parse_size(max_shard_size, "--max-shard-size")
    pipeline = Pipeline.parse(transform or [], strip_metadata=strip_metadata, keep_icc=keep_icc)
    kinds = quality_kinds(drop_quality_issues)
    with open_engine(engine, ray_address) as eng, CliReporter() as reporter:
        selected, selection = load_selected(
            source, select, seed, {"--out": out}, reporter, token=token, skip_bad=skip_bad, workers=workers
        )
        selected, dropped = drop_quality(selected, kinds, reporter)
        if dry_run:
            check_output(selected, out, overwrite)
            plan = plan_subset(selected, order=order.value, seed=seed, reporter=reporter)
        else:
            result = write_subset(
                selected,
                out,
                order=order.value,
                seed=seed,
                row_group_rows=row_group_size,
                max_shard_bytes=max_bytes,
                with_provenance=with_provenance,
                overwrite=overwrite,
                command=command_line(),
                selection=_describe(selection.describe(), kinds),
                cdc=cdc,
                drop_bad_images=drop_bad_images,
                transform=pipeline,
                workers=workers,
                skip_bad=skip_bad,
                split_column=split_column,
                joint_canary=joint_canary,
                reporter=reporter,
                engine=eng,
            )
    if dry_run:
        if as_json:
            print_json({"dry_run": True, "out": str(out), **plan.to_json(), **_dropped_json(dropped)})
        else:
            _render_plan(plan, out)
        return
    if as_json:
        print_json({**result.to_json(), **_dropped_json(dropped)})
    elif not is_quiet():
        err_console().print(
            f"Wrote {result.rows:,} rows ({human_bytes(result.bytes)}) in {len(result.files)} file(s) to {out}/",
            markup=False,
        )


def _describe(selection: str, kinds: list[str] | None) -> str:
    """The selection for the dataset card, with the quality issues dropped."""
    if not kinds:
        return selection
    dropped = f"drop_quality_issues={','.join(kinds)}"
    return dropped if selection == "all rows" else f"{selection} {dropped}"


def _dropped_json(dropped: DropReport | None) -> dict[str, Any]:
    return {"quality_dropped": dropped.to_json()} if dropped is not None else {}


def register(app: typer.Typer) -> None:
    app.command("subset")(subset)
