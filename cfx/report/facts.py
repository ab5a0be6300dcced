"""The facts the report shows that need no image bytes: composition, splits and provenance (polars only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from cfx import __version__
from cfx.manifest import Manifest
from cfx.schema import GENERATED, LABEL_NAMES, REAL

SPLIT_COLUMN = "assigned_split"
TOP_GENERATORS = 20
TOP_SIZES = 10
MIN_SIDE_EDGES = [0, 64, 128, 192, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1536, 2048, 4096, 1 << 30]
FILE_SIZE_EDGES_KB = [0, 10, 25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 1 << 30]
QUALITY_EDGES = [0, 50, 60, 70, 75, 80, 85, 90, 92, 94, 96, 98, 100, 101]
NULL = "(none)"


def source_name() -> pl.Expr:
    """Who made a row: the generator (generated rows) or the real source (real rows; its dataset name in
    ``model_name`` when ``real_source`` is empty)."""
    real_source = pl.col("real_source").cast(pl.String)
    real = (
        pl.when(real_source.is_not_null() & (real_source != ""))
        .then(real_source)
        .otherwise(pl.col("model_name").cast(pl.String))
    )
    return (
        pl.when(pl.col("label") == GENERATED).then(pl.col("model_name").cast(pl.String)).otherwise(real)
    ).fill_null(NULL)


def with_helpers(df: pl.DataFrame) -> pl.DataFrame:
    """The manifest with the columns the report groups by (missing metadata columns read as null)."""
    for col in ("model_name", "real_source", "architecture", "format"):
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, pl.String).alias(col))
    extra = [
        source_name().alias("_source"),
        pl.col("label")
        .cast(pl.Int64)
        .replace_strict(LABEL_NAMES, default="unknown", return_dtype=pl.String)
        .alias("_label"),
    ]
    if "width" in df.columns and "height" in df.columns:
        extra.append(pl.min_horizontal(pl.col("width"), pl.col("height")).cast(pl.Int64).alias("_min_side"))
    return df.with_columns(extra)


def _counts(df: pl.DataFrame, column: str, top: int | None = None) -> list[dict[str, Any]]:
    t = (
        df.select(pl.col(column).cast(pl.String).fill_null(NULL).alias("value"))
        .group_by("value")
        .len("rows")
        .sort(["rows", "value"], descending=[True, False])
    )
    rows = t.to_dicts()
    return rows[:top] if top else rows


def histogram(values: pl.Series, edges: Sequence[float]) -> list[int]:
    """Counts of ``values`` in [edges[i], edges[i+1]) (nulls left out)."""
    v = values.drop_nulls().cast(pl.Float64).to_numpy()
    counts, _ = np.histogram(v, bins=np.asarray(edges, dtype=np.float64))
    return [int(c) for c in counts]


def _per_label(
    df: pl.DataFrame, column: str, edges: Sequence[float], scale: float = 1.0
) -> dict[str, Any] | None:
    if column not in df.columns or df.get_column(column).null_count() == df.height:
        return None
    counts = {}
    for label, name in ((REAL, "real"), (GENERATED, "generated")):
        part = df.filter(pl.col("label") == label).get_column(column)
        counts[name] = histogram(part / scale if scale != 1.0 else part, edges)
    used = [i for i, (r, g) in enumerate(zip(counts["real"], counts["generated"], strict=True)) if r or g]
    if not used:
        return None
    lo, hi = used[0], used[-1] + 1  # empty bins at either end are left out
    return {"edges": list(edges[lo : hi + 1]), **{k: v[lo:hi] for k, v in counts.items()}}


def _jpeg_quality(df: pl.DataFrame) -> dict[str, Any] | None:
    if "jpeg_quality" not in df.columns or "actual_format" not in df.columns:
        return None
    jpeg = df.filter(pl.col("jpeg_quality").is_not_null())
    if jpeg.height == 0:
        return None
    hist = _per_label(jpeg, "jpeg_quality", QUALITY_EDGES)
    assert hist is not None
    hist["jpeg_rows"] = jpeg.height
    return hist


def composition(df: pl.DataFrame) -> dict[str, Any]:
    """Counts and distributions of one frame (made by ``with_helpers``)."""
    gen = df.filter(pl.col("label") == GENERATED)
    real = df.filter(pl.col("label") == REAL)
    by_gen = _counts(gen, "_source")
    tail = by_gen[TOP_GENERATORS:]
    arch = (
        df.group_by(pl.col("architecture").cast(pl.String).fill_null(NULL).alias("architecture"))
        .agg(
            (pl.col("label") == REAL).sum().alias("real"),
            (pl.col("label") == GENERATED).sum().alias("generated"),
        )
        .with_columns((pl.col("real") + pl.col("generated")).alias("rows"))
        .sort(["rows", "architecture"], descending=[True, False])
    )
    out: dict[str, Any] = {
        "rows": df.height,
        "real": real.height,
        "generated": gen.height,
        "generators": len(by_gen),
        "real_sources": real.get_column("_source").n_unique() if real.height else 0,
        "architectures": arch.height,
        "label_by_architecture": arch.to_dicts(),
        "top_generators": by_gen[:TOP_GENERATORS],
        "long_tail": {"generators": len(tail), "rows": sum(r["rows"] for r in tail)},
        "real_source_counts": _counts(real, "_source", TOP_GENERATORS),
        "formats": _counts(df, "format"),
        "sizes": _sizes(df),
        "licenses": _counts(df, "license") if "license" in df.columns else None,
        "bytes": int(df.get_column("num_bytes").sum()) if _known(df, "num_bytes") else None,
        "min_side": _per_label(df, "_min_side", MIN_SIDE_EDGES) if "_min_side" in df.columns else None,
        "file_size_kb": _per_label(df, "num_bytes", FILE_SIZE_EDGES_KB, 1000.0)
        if _known(df, "num_bytes")
        else None,
        "jpeg_quality": _jpeg_quality(df),
    }
    return out


def _known(df: pl.DataFrame, column: str) -> bool:
    return column in df.columns and df.get_column(column).null_count() < df.height


def _sizes(df: pl.DataFrame) -> list[dict[str, Any]] | None:
    if "width" not in df.columns or "height" not in df.columns:
        return None
    size = pl.format("{}×{}", pl.col("width"), pl.col("height"))
    return _counts(df.with_columns(size.alias("_size")), "_size", TOP_SIZES)


def split_names(df: pl.DataFrame) -> list[str]:
    """The splits of ``assigned_split`` in a stable order: train/val/test first, then by name."""
    names = [str(s) for s in df.get_column(SPLIT_COLUMN).drop_nulls().unique().to_list()]
    order = {"train": 0, "val": 1, "validation": 1, "test": 2}
    return sorted(names, key=lambda s: (order.get(s, 3), s))


def composition_section(df: pl.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"overall": composition(df), "splits": None}
    if SPLIT_COLUMN in df.columns:
        out["splits"] = [
            {"split": name, **composition(df.filter(pl.col(SPLIT_COLUMN) == name))}
            for name in split_names(df)
        ]
    return out


def history_entries(history: list[Any]) -> list[dict[str, Any]]:
    """Each history entry as a list of (field, value): a string as its text, a dict as its fields."""
    out = []
    for i, entry in enumerate(history):
        if isinstance(entry, dict):
            fields = [{"field": str(k), "value": _text(v)} for k, v in entry.items()]
        else:
            fields = [{"field": "step", "value": _text(entry)}]
        out.append({"step": i + 1, "fields": fields})
    return out


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value, default=str)


def provenance(manifest: Manifest, seed: int, sample: int, against: str | None) -> dict[str, Any]:
    shards = [{"shard": k, **v.to_json()} for k, v in sorted(manifest.shards.items())]
    return {
        "cfx_version": __version__,
        "source": manifest.root,
        "remote": manifest.is_remote,
        "shards": len(shards),
        "shard_fingerprints": shards,
        "seed": seed,
        "sample": sample,
        "against": against,
        "history": history_entries(list(manifest.history)),
    }
