"""Shared option aliases, defined once (STYLE.md §3)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from cfx.select import Selection

# Ranges of numeric options, checked by typer before a command runs (exit 2, the range in the message).
# A count is stored as int64 (polars, parquet); a seed feeds numpy's PCG64 and 64-bit hashes.
COUNT_MAX = 2**63 - 1
SEED_MAX = 2**63 - 1
WORKERS_MAX = 1024
ROW_GROUP_MAX = 2**31 - 1  # parquet row groups hold at most int32 rows in most readers


def in_range(lo: float, hi: float) -> Callable[[Any], Any]:
    """An option callback: a value outside [lo, hi] (or NaN) is a usage error naming the allowed range."""

    def check(value: Any) -> Any:
        if value is not None and not lo <= value <= hi:  # NaN fails both comparisons
            raise typer.BadParameter(f"{value} is out of range: allowed {lo} to {hi}")
        return value

    return check


def ranged(*names: str, lo: float, hi: float, help: str, **kwargs: Any) -> Any:
    """A typer.Option whose value must lie in [lo, hi]: checked by ``in_range``, the range shown in --help."""
    return typer.Option(*names, callback=in_range(lo, hi), help=f"{help} [{lo} to {hi}]", **kwargs)


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
    int,
    ranged(
        "--seed",
        lo=0,
        hi=SEED_MAX,
        help="Random seed: the same seed gives the same rows everywhere.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
WorkersOpt = Annotated[
    int,
    ranged(
        "--workers",
        "-w",
        lo=1,
        hi=WORKERS_MAX,
        help="Parallel workers (processes or connections).",
    ),
]
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Where shards are read (hashed, inspected, transformed): local (this machine's processes) or "
        "ray (the cluster at RAY_ADDRESS or --ray-address, else a local Ray; needs cfx[ray]). See docs/scale.md.",
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

# Transforms on write (cfx subset, cfx export; see docs/subset.md#transforms).
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

DropQualityOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--drop-quality-issues",
        help="Leave out rows with these quality issues (comma-separated or repeated): dark, overexposed, "
        "blurry, low-information, near-uniform, grayscale, odd-aspect — thresholds in docs/audit.md; needs "
        "pixel facts (`cfx inspect --pixels`) except odd-aspect. Counted per label on stderr.",
        show_default=False,
    ),
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

# Row selection options: declared once, as the fields of SelectionOptions (below).
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
    ranged(
        "--max-per-generator",
        lo=1,
        hi=COUNT_MAX,
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


# --- the row selection shared by every selecting command (cfx.select.Selection) ----------------------
@dataclass(frozen=True)
class SelectionOptions:
    """The selection and licence options of every selecting command, declared once.

    ``cfx.cli._select.with_selection_options`` adds these fields, in this order, as typer options to a
    command and hands the command their values as one SelectionOptions."""

    generators: GeneratorsOpt = None
    architectures: ArchitecturesOpt = None
    labels: LabelsOpt = None
    real_sources: RealSourcesOpt = None
    exclude_nsfw: ExcludeNsfwOpt = False
    max_per_generator: MaxPerGeneratorOpt = None
    where: WhereOpt = None
    licenses: LicensesOpt = None
    exclude_licenses: ExcludeLicensesOpt = None
    commercial_only: CommercialOnlyOpt = False
    license_table: LicenseTableOpt = None
    model_column: ModelColumnOpt = None
    license_column: LicenseColumnOpt = None
    real_license_table: RealLicenseTableOpt = None
    allow_missing: AllowMissingOpt = False

    @property
    def tables(self) -> list[Path | None]:
        """The licence tables given: inputs, never to be overwritten by an output."""
        return [self.license_table, self.real_license_table]

    def selection(self, seed: int) -> Selection:
        """The Selection these options ask for (comma-separated values are split).

        An option given with nothing in it (``--generators ''``) is a usage error, never "no filter"."""
        from cfx.errors import UsageError
        from cfx.select import Selection, split_values

        given = {
            "--generators": self.generators,
            "--architectures": self.architectures,
            "--labels": self.labels,
            "--real-sources": self.real_sources,
            "--licenses": self.licenses,
            "--exclude-licenses": self.exclude_licenses,
        }
        for option, values in given.items():
            if values is not None and not split_values(values):
                raise UsageError(
                    f"{option} was given no value", f"name at least one, or leave {option} out for no filter"
                )
        if self.where is not None and not self.where.strip():
            raise UsageError(
                "--where was given an empty expression", "write a condition, or leave --where out"
            )

        return Selection(
            generators=split_values(self.generators),
            architectures=split_values(self.architectures),
            labels=split_values(self.labels),
            real_sources=split_values(self.real_sources),
            exclude_nsfw=self.exclude_nsfw,
            where=self.where,
            max_per_generator=self.max_per_generator,
            seed=seed,
            licenses=split_values(self.licenses),
            exclude_licenses=split_values(self.exclude_licenses),
            commercial_only=self.commercial_only,
            allow_missing=self.allow_missing,
        )


NO_SELECTION = SelectionOptions()
# Every selecting command takes all of these (balance: its --per-generator stands for --max-per-generator);
# tests/test_reliability_inputs.py checks that they do.
SELECTION_OPTIONS = tuple(
    "--" + f.name.replace("_", "-") for f in fields(SelectionOptions) if f.name != "max_per_generator"
)
SELECTING_COMMANDS = ("subset", "download", "slice", "balance", "inspect", "export")


# --- empty values: `--by ''`, `--names ' , '` are refused for every command, never read as "default" ------
def _flag_of(name: str, annotation: Any) -> str:
    """The option's long flag (``--by``) from its typer annotation, else the name as typer would spell it."""
    for info in getattr(annotation, "__metadata__", ()):
        default = getattr(info, "default", None)
        decls = [default, *(getattr(info, "param_decls", None) or ())]
        for d in decls:
            if isinstance(d, str) and d.startswith("--"):
                return d
        if getattr(info, "metavar", None):
            return str(info.metavar)
    return "--" + name.replace("_", "-")


def _blank(value: Any) -> bool:
    """'' or only spaces and commas: no value at all (``split_values`` would read it as nothing)."""
    return isinstance(value, str) and not value.replace(",", "").strip()


def refuse_empty_values(func: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """A string option (or one item of a repeatable one) given an empty value is a usage error (exit 2).

    Checked for every command by ``handle_errors``: an empty value otherwise falls back to a default
    (``--by ''`` meant "generator") or means "no filter". A value equal to the option's default is not
    given by the user and passes, so a default of "" stays allowed."""
    import inspect

    from cfx.errors import UsageError

    try:
        params = inspect.signature(func, eval_str=True).parameters
    except (NameError, TypeError, ValueError):  # annotations that do not evaluate: nothing to check
        return
    for name, value in kwargs.items():
        p = params.get(name)
        if p is None or value is None or value == p.default:
            continue
        items = value if isinstance(value, list | tuple) else [value]
        if any(_blank(v) for v in items):
            flag = _flag_of(name, p.annotation)
            hint = (
                f"give a value, or leave {flag} out for its default" if flag.startswith("-") else "give one"
            )
            raise UsageError(f"{flag} was given no value", hint)
