"""`cfx export`: write a selection in the folder/tar layouts detector codebases read."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cfx.cli._errors import handle_errors
from cfx.cli._options import (
    NO_SELECTION,
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
)
from cfx.cli._output import CliReporter, err_console, is_quiet, out_console, print_json
from cfx.cli._select import drop_quality, load_selected, quality_kinds, with_selection_options
from cfx.units import human_bytes, parse_size

if TYPE_CHECKING:
    from cfx.export import ExportPlan
    from cfx.quality import DropReport


class Format(str, Enum):
    cnndetection = "cnndetection"
    cf = "cf"
    imagefolder = "imagefolder"
    webdataset = "webdataset"


def _render_plan(plan: ExportPlan, out: Path) -> None:
    info = plan.to_json()
    approx = "" if info["bytes_exact"] else "≈ "
    splits = ", ".join(f"{k}: {v:,}" for k, v in info["by_split"].items())
    text = (
        f"Would write {plan.rows:,} images ({approx}{human_bytes(info['est_bytes'])}) as {plan.options.format} to "
        f"{out}/: {plan.files():,} files, {info['categories']:,} categories, splits {splits}"
    )
    if info["transform"]:
        text += (
            f"\nImages will be transformed ({info['transform']}): the size is an estimate from the transform "
            "(planned sizes × typical bytes per pixel); extensions and metadata follow the new bytes"
        )
    out_console().print(text, markup=False)


@handle_errors
@with_selection_options()
def export(
    source: SourceArg,
    format: Annotated[
        Format,
        typer.Option("--format", "-f", help="Layout to write (see docs/export.md).", show_default=False),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the export into.", show_default=False)],
    category: Annotated[
        str,
        typer.Option(
            "--category",
            help="Category folder level (cnndetection, cf, imagefolder): generator, architecture, family or any "
            "manifest column. Real rows go with their pair_id partner, else under their real_source.",
        ),
    ] = "generator",
    split: Annotated[
        str, typer.Option("--split", help="Split name when the manifest has no assigned_split column.")
    ] = "train",
    shard_size: Annotated[
        str | None,
        typer.Option(
            "--shard-size",
            help="webdataset: about this many bytes per tar (e.g. 1GB, 64MB). Default: 1GB.",
            show_default=False,
        ),
    ] = None,
    shuffle: Annotated[
        bool, typer.Option("--shuffle", help="webdataset: shuffle samples across and within tars (--seed).")
    ] = False,
    select: SelectionOptions = NO_SELECTION,
    drop_quality_issues: DropQualityOpt = None,
    seed: SeedOpt = 0,
    transform: TransformOpt = None,
    strip_metadata: StripMetadataOpt = False,
    keep_icc: KeepIccOpt = False,
    keep_non_images: Annotated[
        bool,
        typer.Option(
            "--keep-non-images",
            help="Folder layouts: also write rows that are not images (null, 0 bytes, unknown signature, "
            "unreadable header) as .bin; by default they are left out, counted and named.",
        ),
    ] = False,
    drop_bad_images: Annotated[
        bool,
        typer.Option(
            "--drop-bad-images", help="Leave out rows whose image_data is null or empty (every format)."
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be written (files, bytes); write nothing.")
    ] = False,
    as_json: JsonOpt = False,
    workers: WorkersOpt = 4,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    skip_bad: SkipBadOpt = False,
    token: TokenOpt = None,
) -> None:
    """Export SOURCE's images to a folder or tar layout detector codebases read, byte-identical or --transform'ed.

    cnndetection: DIR/<split>/<category>/0_real|1_fake/ (CNNDetection, UniversalFakeDetect, NPR).
    cf: DIR/<split>/<generator>/<real|fake>/ + index.csv (the official Community Forensics trainer; pass
    DIR/<split> as its root). imagefolder: DIR/<split>/… + metadata.jsonl for
    `datasets.load_dataset("imagefolder", data_dir=DIR)`. webdataset: DIR/<split>-000000.tar … with
    KEY.<ext>, KEY.json, KEY.cls. Extensions follow the image bytes; names are made safe (DIR/names.csv
    maps them back); DIR appears only when complete. --transform/--strip-metadata rewrite the images as
    `cfx subset` does (same bytes for the same row and --seed); the metadata then describes the new bytes.

    Examples:

    \b
      cfx export balanced.parquet --format cnndetection --out cnn-data
      cfx export data/ --format cf --out cf-data --architectures GAN --real-sources FFHQ
      cfx export data/ --format imagefolder --out hf-data --max-per-generator 100
      cfx export data/ --format webdataset --out wds --shard-size 500MB --shuffle --seed 1
      cfx export manifest.parquet --format cnndetection --out x --category architecture --dry-run
      cfx export data/ --format cnndetection --out cnn-fixed --transform resize:max-side=512 --transform jpeg:96
      cfx export /shared/cf/ --format webdataset --out /shared/wds --engine ray
    """
    from cfx.engine_ray import open_engine
    from cfx.errors import UsageError
    from cfx.export import ExportOptions, plan_export, write_export
    from cfx.subset import check_output
    from cfx.transform import Pipeline

    pipeline = Pipeline.parse(transform or [], strip_metadata=strip_metadata, keep_icc=keep_icc)
    if shard_size is not None and format != Format.webdataset:
        raise UsageError(
            f"--shard-size applies to --format webdataset only, not {format.value}",
            "folder layouts write one file per image: leave --shard-size out",
        )
    options = ExportOptions(
        format=format.value,
        category=category,
        split=split,
        shard_bytes=parse_size(shard_size or "1GB", "--shard-size"),
        shuffle=shuffle,
        seed=seed,
        workers=workers,
        overwrite=overwrite,
        transform=pipeline,
        skip_bad=skip_bad,
        keep_non_images=keep_non_images,
        drop_bad_images=drop_bad_images,
    )
    kinds = quality_kinds(drop_quality_issues)
    with open_engine(engine, ray_address) as eng, CliReporter() as reporter:
        selected, _ = load_selected(
            source, select, seed, {"--out": out}, reporter, token=token, skip_bad=skip_bad, workers=workers
        )
        selected, dropped = drop_quality(selected, kinds, reporter)
        if dry_run:
            check_output(selected, out, overwrite)
            plan = plan_export(selected, options, reporter=reporter)
        else:
            result = write_export(selected, out, options, reporter=reporter, engine=eng)
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
            f"Wrote {result.rows:,} images ({human_bytes(result.bytes)}) in {result.files:,} file(s) to {out}/",
            markup=False,
        )


def _dropped_json(dropped: DropReport | None) -> dict[str, Any]:
    return {"quality_dropped": dropped.to_json()} if dropped is not None else {}


def register(app: typer.Typer) -> None:
    app.command("export")(export)
