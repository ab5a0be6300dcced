"""Shared option aliases, defined once (STYLE.md §3)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from cfx.select import Selection

SourceArg = Annotated[
    str,
    typer.Argument(
        help="Dataset folder, shard file or glob, saved manifest (.parquet), '-' for a manifest on stdin, "
        "or hf://datasets/ORG/REPO[@REV].",
        show_default=False,
        metavar="SOURCE",
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Write the manifest here (parquet). Default: Arrow IPC on stdout when piped."
    ),
]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Random seed: the same seed gives the same rows everywhere.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
WorkersOpt = Annotated[
    int, typer.Option("--workers", "-w", min=1, help="Parallel workers (processes or connections).")
]
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Where shards are read and hashed: local (this machine's threads/processes) or ray (Ray Data "
        "on RAY_ADDRESS or --ray-address, else a local Ray; needs cfx[ray]). See docs/scale.md.",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Ray cluster to use with --engine ray, e.g. 10.0.0.5:6379 (default: RAY_ADDRESS, else a local Ray).",
        show_default=False,
    ),
]
RevisionOpt = Annotated[
    str | None, typer.Option("--revision", help="Git revision (branch, tag or commit) of the Hub repo.")
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="Hugging Face token (default: HF_TOKEN or the saved login).")
]
SkipBadOpt = Annotated[
    bool,
    typer.Option(
        "--skip-bad",
        help="Skip unreadable shards (named on stderr) and exit 0 instead of 6; with --transform also skip "
        "(and count) images that cannot be decoded instead of stopping with exit 3.",
    ),
]
WhereOpt = Annotated[
    str | None,
    typer.Option(
        "--where", help="SQL filter over manifest columns, e.g. \"architecture = 'GAN' AND width >= 512\"."
    ),
]

# Transforms on write (cfx subset; see docs/subset.md#transforms).
TransformOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--transform",
        help="Transform every image on write, repeatable, applied in order: jpeg:Q, jpeg:Q1-Q2 (drawn per "
        "image with --seed), jpeg:Q,subsampling=4:2:0|4:2:2|4:4:4, webp:Q, webp:lossless, png, "
        "resize:min-side=N, resize:max-side=N, resize:FACTOR (Lanczos), center-crop:N|WxH, blur:SIGMA, "
        "noise:SIGMA.",
        show_default=False,
    ),
]
StripMetadataOpt = Annotated[
    bool,
    typer.Option(
        "--strip-metadata",
        help="Remove EXIF (incl. GPS), XMP, PNG text chunks and ICC profiles; alone it edits the file "
        "container only (pixels untouched).",
    ),
]
KeepIccOpt = Annotated[
    bool, typer.Option("--keep-icc", help="With --strip-metadata: keep the ICC colour profile.")
]

# Licence options: every selecting command accepts them (see docs/licenses.md).
LicensesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--licenses",
        help="Keep only rows whose licence id matches one of these globs (repeatable or comma-separated), "
        "e.g. 'creativeml-openrail-m,cc-by-*'.",
    ),
]
ExcludeLicensesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude-licenses", help="Drop rows whose licence id matches one of these globs, e.g. '*-nc-*'."
    ),
]
CommercialOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--commercial-only", help="Keep only rows under licences known to allow commercial use (not unknown)."
    ),
]
LicenseTableOpt = Annotated[
    Path | None,
    typer.Option(
        "--license-table",
        help="Generator licence table (CSV/TSV/JSON/JSONL/parquet). Default: the dataset's data/metadata.",
    ),
]
ModelColumnOpt = Annotated[
    str | None,
    typer.Option("--model-column", help="Model-name column of --license-table (default: found by name)."),
]
LicenseColumnOpt = Annotated[
    str | None,
    typer.Option("--license-column", help="Licence column of --license-table (default: found by name)."),
]
RealLicenseTableOpt = Annotated[
    Path | None,
    typer.Option(
        "--real-license-table",
        help="Table (real_source, license) extending/overriding the built-in real-source licences.",
    ),
]

# --- the row selection shared by subset, balance and download (cfx.select.Selection) ----------------
GeneratorsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--generators",
        "-g",
        help="Keep generated images of these generators: names, shell globs ('stabilityai/*') or @file.txt "
        "(one per line); comma-separated or repeated. Real images are not affected.",
        show_default=False,
    ),
]
ArchitecturesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--architectures",
        help="Keep generated images of these architectures (LatDiff, GAN, PixDiff, Other). Real images are "
        "not affected.",
        show_default=False,
    ),
]
LabelsOpt = Annotated[
    list[str] | None,
    typer.Option("--labels", help="Keep only these labels: real, generated.", show_default=False),
]
RealSourcesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--real-sources",
        help="Keep real images from these sources (COCO, FFHQ, LAION…; globs allowed). Generated images are "
        "not affected.",
        show_default=False,
    ),
]
ExcludeNsfwOpt = Annotated[bool, typer.Option("--exclude-nsfw", help="Drop rows flagged NSFW.")]
MaxPerGeneratorOpt = Annotated[
    int | None,
    typer.Option(
        "--max-per-generator",
        min=1,
        help="At most N random images per generator (after the other filters; seeded by --seed).",
        show_default=False,
    ),
]
AllowMissingOpt = Annotated[
    bool,
    typer.Option(
        "--allow-missing", help="Unknown generator/architecture names are a warning instead of an error."
    ),
]


def build_selection(
    *,
    generators: list[str] | None = None,
    architectures: list[str] | None = None,
    labels: list[str] | None = None,
    real_sources: list[str] | None = None,
    exclude_nsfw: bool = False,
    where: str | None = None,
    max_per_generator: int | None = None,
    seed: int = 0,
    licenses: list[str] | None = None,
    exclude_licenses: list[str] | None = None,
    commercial_only: bool = False,
    allow_missing: bool = False,
) -> Selection:
    """A Selection from the parsed options above (comma-separated values are split)."""
    from cfx.select import Selection, split_values

    return Selection(
        generators=split_values(generators),
        architectures=split_values(architectures),
        labels=split_values(labels),
        real_sources=split_values(real_sources),
        exclude_nsfw=exclude_nsfw,
        where=where,
        max_per_generator=max_per_generator,
        seed=seed,
        licenses=split_values(licenses),
        exclude_licenses=split_values(exclude_licenses),
        commercial_only=commercial_only,
        allow_missing=allow_missing,
    )
