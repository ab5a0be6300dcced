"""Totals and breakdowns of a manifest, as plain data (the CLI renders tables, JSON or a plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from cfx.manifest import Manifest
from cfx.outputs import write_atomic
from cfx.schema import GENERATED, REAL

DEFAULT_BREAKDOWNS = (
    "label",
    "architecture",
    "model_name",
    "real_source",
    "format",
    "resolution",
    "subset",
    "split",
    "nsfw_flag",
)
# Breakdowns that only make sense on one side of the label.
NULL_VALUE = "(null)"  # how a missing value is counted and shown
_ONLY_GENERATED = {"model_name"}
_ONLY_REAL = {"real_source"}


def totals(m: Manifest) -> dict[str, Any]:
    df = m.df
    gen = df.filter(pl.col("label") == GENERATED)
    generators = gen.filter(pl.col("model_name").is_not_null() & (pl.col("model_name") != ""))
    image_bytes = df.get_column("num_bytes").sum() if "num_bytes" in df.columns else None
    known = int(df.get_column("num_bytes").is_not_null().sum()) if "num_bytes" in df.columns else 0
    return {
        "rows": df.height,
        "real": int((df.get_column("label") == REAL).sum()),
        "generated": gen.height,
        "generators": generators.get_column("model_name").n_unique() if generators.height else 0,
        "shards": df.get_column("shard").n_unique() if df.height else 0,
        "shard_bytes": sum(
            m.shards[s].size for s in df.get_column("shard").unique().to_list() if s in m.shards
        ),
        "image_bytes": int(image_bytes or 0) if known == df.height and df.height else None,
    }


def _value_names(column: str) -> pl.Expr:
    if column == "label":
        return pl.col(column).replace_strict(
            {REAL: "real", GENERATED: "generated"}, default=None, return_dtype=pl.String
        )
    return pl.col(column).cast(pl.String)


def value_counts(df: pl.DataFrame, column: str) -> list[tuple[str, int, int, int]]:
    """(value, rows, real, generated) per value of ``column``, most rows first (ties by value).

    Labels read "real"/"generated", nulls NULL_VALUE. The one per-value count behind stats, the dataset
    card and the subset plan.
    """
    if column not in df.columns:
        return []
    counts = (
        df.with_columns(_value_names(column).fill_null(NULL_VALUE).alias("__value"))
        .group_by("__value")
        .agg(
            pl.len().alias("rows"),
            (pl.col("label") == REAL).sum().alias("real"),
            (pl.col("label") == GENERATED).sum().alias("generated"),
        )
        .rename({"__value": "value"})
        .sort(["rows", "value"], descending=[True, False])
    )
    rows = counts.select("value", "rows", "real", "generated").iter_rows()
    return [(str(v), int(n), int(r), int(g)) for v, n, r, g in rows]


def breakdown(m: Manifest, column: str, top: int | None = None) -> dict[str, Any]:
    """Rows per value of ``column``, with real/generated split, most frequent first (ties by value)."""
    df = m.df
    if column in _ONLY_GENERATED:
        df = df.filter(pl.col("label") == GENERATED)
    elif column in _ONLY_REAL:
        df = df.filter(pl.col("label") == REAL)
    total = df.height
    values: list[dict[str, Any]] = [
        {"value": v, "rows": n, "real": r, "generated": g, "share": round(n / total, 6) if total else 0.0}
        for v, n, r, g in value_counts(df, column)
    ]
    shown = values[:top] if top else values
    return {
        "column": column,
        "distinct": len(values),
        "rows": total,
        "values": shown,
        "omitted": len(values) - len(shown),
    }


def quality_histogram(df: pl.DataFrame) -> dict[str, dict[int, int]]:
    """JPEG quality -> rows, per label ("real", "generated"); rows without a quality are left out."""
    out: dict[str, dict[int, int]] = {}
    for name, value in (("real", REAL), ("generated", GENERATED)):
        q = df.filter((pl.col("label") == value) & pl.col("jpeg_quality").is_not_null())
        counts = q.get_column("jpeg_quality").value_counts().sort("jpeg_quality")
        out[name] = {int(k): int(n) for k, n in counts.iter_rows()}
    return out


def compute_stats(m: Manifest, by: list[str] | None = None, top: int | None = 20) -> dict[str, Any]:
    columns = list(by) if by else [c for c in DEFAULT_BREAKDOWNS if c in m.df.columns]
    out: dict[str, Any] = {
        "root": m.root,
        "totals": totals(m),
        "breakdowns": {
            c: breakdown(m, c, top if c in ("model_name", "resolution", "prompt") or by else None)
            for c in columns
        },
    }
    if "jpeg_quality" in m.df.columns:
        out["jpeg_quality"] = quality_histogram(m.df)
    return out


def _plot_quality(ax: Any, hist: dict[str, dict[int, int]]) -> None:
    """Histogram of JPEG quality, real against generated (the Grommelt et al. shortcut)."""
    for name, color in (("real", "#4C72B0"), ("generated", "#DD8452")):
        qs = sorted(hist[name])
        ax.bar(qs, [hist[name][q] for q in qs], width=1.0, alpha=0.6, color=color, label=name)
    ax.set_xlim(0, 101)
    ax.set_xlabel("JPEG quality")
    ax.set_title("jpeg_quality by label")
    ax.legend(fontsize=8)


def plot_stats(stats: dict[str, Any], path: str) -> None:
    """Draw the main breakdowns into one PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        c
        for c in ("label", "architecture", "model_name", "real_source", "format", "resolution")
        if c in stats["breakdowns"]
    ]
    if not panels:
        panels = list(stats["breakdowns"])[:6]
    quality = stats.get("jpeg_quality")
    cols = 2
    rows = max(1, (len(panels) + (quality is not None) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    if quality is not None:
        axes.flat[len(panels)].axis("on")
        _plot_quality(axes.flat[len(panels)], quality)
    for ax, column in zip(axes.flat, panels, strict=False):
        values = stats["breakdowns"][column]["values"][:15][::-1]
        labels = [str(v["value"])[:40] for v in values]
        ax.barh(labels, [v["real"] for v in values], color="#4C72B0", label="real")
        ax.barh(
            labels,
            [v["generated"] for v in values],
            left=[v["real"] for v in values],
            color="#DD8452",
            label="generated",
        )
        ax.set_title(column)
        ax.tick_params(axis="y", labelsize=7)
    axes.flat[0].legend(loc="lower right", fontsize=8)
    t = stats["totals"]
    fig.suptitle(
        f"{t['rows']:,} rows — {t['real']:,} real, {t['generated']:,} generated, {t['generators']:,} generators"
    )
    fig.tight_layout()
    write_atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
