"""`cfx report`: gather the facts (no image bytes), make the thumbnails (one streaming pass), write the page.

Steps: ``gather`` (report.json's content) → ``write_report`` (thumbnails, charts, index.html, report.json,
all in one folder that appears complete or not at all).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

import cfx.report.evidence as evidence
import cfx.report.facts as facts
from cfx.defaults import REPORT_SAMPLE
from cfx.errors import EmptySelectionError
from cfx.manifest import Manifest
from cfx.outputs import atomic_folder, check_folder_output, ensure_folder, write_atomic
from cfx.progress import NullReporter, Reporter
from cfx.report.gathered import Gathered
from cfx.report.thumbs import stratified_sample, write_thumbnails

DEFAULT_SAMPLE = REPORT_SAMPLE
BROWSE_FIELDS = (
    "image_name", "label", "architecture", "model_name", "real_source", "format", "width", "height",
    "num_bytes", "mode", "subset", "split", "assigned_split", "license", "nsfw_flag", "prompt",
    "actual_format", "jpeg_quality", "chroma_subsampling", "progressive", "bit_depth", "has_exif",
    "has_gps", "has_icc", "has_c2pa", "text_chunks", "sha256", "phash",
)  # fmt: skip
FILTERS = ("label", "architecture", "generator", "format", "split")


@dataclass
class ReportOptions:
    sample: int = DEFAULT_SAMPLE
    seed: int = 0
    joint: bool = True
    workers: int = 2
    dedupe_report: Path | None = None  # a `cfx dedupe --report` folder: its duplicates instead of the hashes'


def gather(
    manifest: Manifest,
    options: ReportOptions,
    *,
    against: Manifest | None = None,
    against_source: str | None = None,
    reporter: Reporter | None = None,
) -> Gathered:
    """Every number of the report (report.json), from the manifest and the caches; reads no image."""
    reporter = reporter or NullReporter()
    if manifest.df.height == 0:
        raise EmptySelectionError(
            "SOURCE has no rows: there is nothing to report", "report a manifest or dataset that holds images"
        )
    from cfx.inspect import cached_facts

    manifest = cached_facts(manifest) or manifest
    hashed = evidence.cached_hashes(manifest)
    if hashed is not None:
        manifest = hashed
    df = facts.with_helpers(manifest.df)
    browse = _browse(df, options)
    report: dict[str, Any] = {
        "cfx_report": 1,
        "composition": facts.composition_section(df),
        "audit": evidence.audit_section(manifest, seed=options.seed, joint=options.joint),
        "duplicates": (
            evidence.duplicates_from_report(options.dedupe_report)
            if options.dedupe_report is not None
            else evidence.duplicates_section(hashed)
        ),
        "splits": evidence.splits_section(manifest.df, hashed),
        "against": None,
        "browse": _browse_json(df, browse, options),
        "provenance": facts.provenance(manifest, options.seed, options.sample, against_source),
    }
    if "features" in report["audit"]:
        report["audit"]["distributions"] = evidence.feature_distributions(manifest.df, report["audit"])
    if against is not None:
        report["against"] = evidence.against_section(
            manifest, against, workers=options.workers, reporter=reporter
        )
    return Gathered(report, manifest, browse, against)


def _browse(df: pl.DataFrame, options: ReportOptions) -> pl.DataFrame:
    sample = stratified_sample(df, options.sample, options.seed)
    split = pl.col(facts.SPLIT_COLUMN) if facts.SPLIT_COLUMN in df.columns else pl.col("split")
    if "split" not in df.columns and facts.SPLIT_COLUMN not in df.columns:
        split = pl.lit(None, pl.String)
    return sample.with_columns(
        pl.col("_label").alias("f_label"),
        pl.col("architecture").cast(pl.String).fill_null(facts.NULL).alias("f_architecture"),
        pl.col("_source").alias("f_generator"),
        pl.col("format").cast(pl.String).fill_null(facts.NULL).alias("f_format"),
        split.cast(pl.String).fill_null(facts.NULL).alias("f_split"),
    )


def _browse_json(df: pl.DataFrame, browse: pl.DataFrame, options: ReportOptions) -> dict[str, Any]:
    strata = df.get_column("_source").n_unique()
    per_filter = {
        name: browse.group_by(f"f_{name}")
        .len("rows")
        .sort(["rows", f"f_{name}"], descending=[True, False])
        .rename({f"f_{name}": "value"})
        .to_dicts()
        for name in FILTERS
    }
    return {
        "requested": options.sample,
        "rows_in_set": df.height,
        "sampled": browse.height,
        "strata": strata,
        "seed": options.seed,
        "filters": per_filter,
        "note": (
            f"--sample {options.sample:,} is more than the set's {df.height:,} rows: every row is shown"
            if options.sample > df.height
            else ""
        ),
    }


def _row_fields(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in BROWSE_FIELDS if k in row and row[k] is not None}
    if isinstance(out.get("prompt"), str) and len(out["prompt"]) > 400:
        out["prompt"] = out["prompt"][:400] + "…"
    if "phash" in out:
        out["phash"] = f"{int(out['phash']) & (2**64 - 1):016x}"
    return {"shard": row["shard"], "row": row["row"], **out}


def browse_rows(g: Gathered) -> list[dict[str, Any]]:
    thumbs = g.thumbs.get("a", {})
    out = []
    for row in g.browse.iter_rows(named=True):
        out.append(
            {
                "thumb": thumbs.get((row["shard"], row["row"])),
                **{name: row[f"f_{name}"] for name in FILTERS},
                "fields": _row_fields(row),
            }
        )
    return out


def _thumb_keys(g: Gathered) -> list[tuple[str, int]]:
    keys = list(
        zip(g.browse.get_column("shard").to_list(), g.browse.get_column("row").to_list(), strict=True)
    )
    for group in (g.report["duplicates"] or {}).get("shown_groups", []):
        keys.extend((m["shard"], m["row"]) for m in group["members"])
    for pair in (g.report["against"] or {}).get("shown_pairs", []):
        keys.append((pair["shard_a"], pair["row_a"]))
    return keys


def write_report(
    g: Gathered, out: Path, *, overwrite: bool = False, reporter: Reporter | None = None
) -> Path:
    """The report folder: index.html, report.json, assets/, thumbs/ — complete or not at all."""
    from cfx.report.page import render_page

    reporter = reporter or NullReporter()
    with atomic_folder(out, overwrite=overwrite, warn=reporter.warn) as tmp:
        thumbs = ensure_folder(tmp / "thumbs")
        g.thumbs["a"] = write_thumbnails(g.manifest, _thumb_keys(g), thumbs, "a", reporter)
        if g.against is not None:
            pairs = g.report["against"]["shown_pairs"]
            keys = [(p["shard_b"], p["row_b"]) for p in pairs]
            g.thumbs["b"] = write_thumbnails(g.against, keys, thumbs, "b", reporter)
        g.report["browse"]["thumbnails"] = sum(1 for r in browse_rows(g) if r["thumb"])
        _copy_assets(ensure_folder(tmp / "assets"))
        html = render_page(g, browse_rows(g))
        text = json.dumps(g.report, indent=1, default=str) + "\n"
        write_atomic(tmp / "report.json", lambda p: Path(p).write_text(text))
        write_atomic(tmp / "index.html", lambda p: Path(p).write_text(html, encoding="utf-8"))
    return Path(out)


def _copy_assets(folder: Path) -> None:
    for name in ("report.css", "report.js"):
        with resources.as_file(resources.files("cfx.report") / "assets" / name) as src:
            shutil.copyfile(src, folder / name)


def report(
    manifest: Manifest,
    out: Path,
    options: ReportOptions | None = None,
    *,
    against: Manifest | None = None,
    against_source: str | None = None,
    overwrite: bool = False,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Gather and write the report folder; returns report.json's content."""
    options = options or ReportOptions()
    check_folder_output(Path(out), overwrite)  # before the work: an existing --out is refused at once
    g = gather(manifest, options, against=against, against_source=against_source, reporter=reporter)
    write_report(g, out, overwrite=overwrite, reporter=reporter)
    return g.report
