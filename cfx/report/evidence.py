"""The measured evidence: the shortcut audit, duplicates, the split leak proof and the cross-set check.

Each reuses the module that measures it for its own command (cfx.audit, cfx.dedupe, cfx.split, cfx.leaks), so
the report shows the numbers those commands print. None of them reads image bytes except ``against``, which
hashes what the hash cache does not hold (as `cfx leaks` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cfx.errors import InputError
from cfx.hashing import HASH_COLUMNS, hash_manifest, load_cached
from cfx.manifest import Manifest
from cfx.progress import Reporter
from cfx.report.facts import SPLIT_COLUMN, split_names
from cfx.stream import rows_by_shard

MAX_GROUPS = 12  # duplicate groups shown as thumbnails (label conflicts first)
MAX_GROUP_MEMBERS = 8
MAX_PAIRS = 24  # cross-set pairs shown as thumbnails


def audit_section(manifest: Manifest, *, seed: int, joint: bool) -> dict[str, Any]:
    """`cfx audit`'s report (single features, joint canary, fixes) on the manifest, byte facts included when
    the manifest or the inspect cache has them for every row."""
    from cfx.audit import audit
    from cfx.errors import EmptySelectionError

    try:
        result = audit(manifest, joint=joint, seed=seed).to_json()
    except EmptySelectionError as exc:
        return {"missing": f"{exc.message} — the audit needs both classes"}
    result["byte_facts"] = "actual_format" in manifest.df.columns
    return result


def cached_hashes(manifest: Manifest) -> Manifest | None:
    """The manifest with hash columns when it has them or the hash cache holds every row (hashes nothing),
    else None."""
    df = manifest.df
    if all(c in df.columns for c in HASH_COLUMNS) and df.get_column("sha256").null_count() < df.height:
        return manifest
    for part in rows_by_shard(manifest):
        info = manifest.shards.get(part.shard)
        hit = load_cached(manifest.root, part.shard, info) if info is not None else None
        if hit is None or not np.isin(part.rows, hit.column("row").to_numpy()).all():
            return None
    return hash_manifest(manifest, workers=1).manifest  # every row is cached: a join, no image read


def duplicates_section(hashed: Manifest | None) -> dict[str, Any]:
    """`cfx dedupe`'s counts (default options) from the hashes, and the groups to show as thumbnails."""
    if hashed is None:
        return {
            "missing": "no hashes for these rows: run `cfx dedupe SOURCE` (or `cfx inspect SOURCE --hashes`), "
            "which caches them, and report again — or pass a dedupe report folder with --dedupe DIR"
        }
    from cfx.dedupe import DedupeOptions, dedupe

    result = dedupe(hashed, DedupeOptions(), workers=1)
    return _duplicates(result.summary, result.groups, "the hashes of these rows (`cfx dedupe` defaults)")


def duplicates_from_report(folder: Path) -> dict[str, Any]:
    """The same section from a `cfx dedupe --report DIR` folder (summary.json + groups.parquet)."""
    import json

    try:
        summary = json.loads((folder / "summary.json").read_text())
        groups = pl.read_parquet(folder / "groups.parquet")
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        raise InputError(
            f"--dedupe {folder}: not a readable `cfx dedupe --report` folder ({exc})",
            "give the folder `cfx dedupe SOURCE --report DIR` wrote (summary.json, groups.parquet)",
        ) from None
    return _duplicates(summary, groups, f"the dedupe report {folder}")


def _duplicates(s: dict[str, Any], frame: pl.DataFrame, origin: str) -> dict[str, Any]:
    from cfx.gallery import choose_groups

    threshold = int(s["options"]["threshold"])
    groups = []
    for gid, why in choose_groups(frame, threshold, max_sheets=MAX_GROUPS):
        part = frame.filter(pl.col("group_id") == gid)
        keep = ("shard", "row", "label", "model_name", "kind", "distance", "action")
        groups.append(
            {
                "group_id": gid,
                "why": why,
                "size": part.height,
                "members": part.head(MAX_GROUP_MEMBERS).select(keep).to_dicts(),
            }
        )
    return {
        "origin": origin,
        "threshold": threshold,
        "rows": s["rows"],
        "exact": s["exact_duplicates"],
        "near": s["near_duplicates"],
        "groups": s["groups"],
        "cross_label_pairs": s["conflicts"]["pairs"],
        "cross_label_rows": s["conflicts"]["rows"],
        "conflict_groups": s["conflicts"]["groups"],
        "removed_by_default": s["removed"],
        "hash_errors": s["hashing"]["hash_errors"],
        "shown_groups": groups,
    }


def splits_section(df: pl.DataFrame, hashed: Manifest | None) -> dict[str, Any]:
    """The per-split table and the leak proof (`cfx split`'s), when the manifest has ``assigned_split``."""
    if SPLIT_COLUMN not in df.columns:
        return {
            "missing": "no assigned_split column: split with `cfx split SOURCE -o split.parquet` and report it"
        }
    from cfx.split import GROUP_COLUMN, SplitOptions, leak_proof, split_summary, unit_keys

    names = tuple(split_names(df))
    frame = hashed.df if hashed is not None else df
    options = SplitOptions(exact=hashed is not None, near=hashed is not None, prompts="prompt" in df.columns)
    units = unit_keys(frame, options)
    if GROUP_COLUMN in frame.columns:
        units.append(frame.get_column(GROUP_COLUMN).alias(GROUP_COLUMN))
    proof = leak_proof(frame, SPLIT_COLUMN, options, units)
    return {
        "splits": split_summary(df, SPLIT_COLUMN, names),
        "leak_proof": proof,
        "leak_free": not any(proof.values()),
        "hashes": hashed is not None,
        "note": ""
        if hashed is not None
        else "exact and near leaks need hashes: run `cfx dedupe SOURCE` first",
    }


def against_section(a: Manifest, b: Manifest, *, workers: int, reporter: Reporter) -> dict[str, Any]:
    """`cfx leaks A B --near --prompts`: the cross-set check, and the first pairs to show as thumbnails."""
    from cfx.leaks import LeakOptions, leaks

    result = leaks(a, b, LeakOptions(near=True, prompts=True), workers=workers, reporter=reporter)
    s = result.summary
    pairs = result.pairs.filter(pl.col("kind") != "prompt").head(MAX_PAIRS)
    return {
        "b_source": b.root,
        "a_rows": s["a_rows"],
        "b_rows": s["b_rows"],
        "leaks": s["leaks"],
        "exact_keys": s["by_kind"]["exact"]["keys"],
        "near_pairs": s["by_kind"]["near"]["pairs_not_exact"],
        "prompt_keys": s["by_kind"]["prompt"]["keys"],
        "shared_generators": s["by_kind"]["generator"]["values"],
        "shared_real_sources": s["by_kind"]["real_source"]["values"],
        "pairs_listed": s["pairs_listed"],
        "shown_pairs": pairs.to_dicts(),
    }


NUMERIC_BINS = 12
MAX_CATEGORIES = 8


def feature_distributions(df: pl.DataFrame, audit: dict[str, Any]) -> list[dict[str, Any]]:
    """For every feature the audit scored: the share of real and of generated rows per bin (numeric: 12
    bins between the 1st and 99th percentile, the ends open; few distinct values or categorical: one bin per
    value, the rarest pooled as "other"), computed from the audit's own feature expressions."""
    from cfx.audit import BYTE_FEATURES, FEATURES

    exprs = {f.name: f for f in (*FEATURES, *BYTE_FEATURES)}
    out = []
    for score in audit.get("features", []):
        feat = exprs[score["feature"]]
        frame = df.select(feat.expr().alias("x"), pl.col("label")).filter(pl.col("x").is_not_null())
        if feat.kind == "numeric":
            frame = frame.filter(pl.col("x").is_finite())
        bins, codes = _bins(frame.get_column("x"), feat.kind == "categorical")
        frame = frame.with_columns(pl.Series("bin", codes))
        shares = {}
        for label, name in ((0, "real"), (1, "generated")):
            part = frame.filter(pl.col("label") == label).get_column("bin").to_numpy()
            counts = np.bincount(part, minlength=len(bins)) if part.size else np.zeros(len(bins), np.int64)
            shares[name] = [round(float(c) / max(part.size, 1), 4) for c in counts]
        out.append(
            {
                "feature": score["feature"],
                "auroc": score["auroc"],
                "flagged": score["flagged"],
                "bins": bins,
                "real_share": shares["real"],
                "generated_share": shares["generated"],
            }
        )
    return out


def _bins(x: pl.Series, categorical: bool) -> tuple[list[str], np.ndarray]:
    """Bin labels and each value's bin index."""
    distinct = x.n_unique()
    if categorical or distinct <= NUMERIC_BINS:
        values = x.cast(pl.String) if categorical else x
        top = values.value_counts(sort=True).head(MAX_CATEGORIES).get_column(values.name).to_list()
        top = top if categorical else sorted(top)
        index = {v: i for i, v in enumerate(top)}
        labels = [_fmt(v) for v in top]
        other = len(top)
        codes = values.replace_strict(index, default=other, return_dtype=pl.Int64).to_numpy()
        if (codes == other).any():
            labels.append("other")
        return labels, codes
    v = x.cast(pl.Float64).to_numpy()
    lo, hi = np.quantile(v, [0.01, 0.99])
    if hi <= lo:
        lo, hi = float(v.min()), float(v.max())
    edges = np.linspace(lo, hi, NUMERIC_BINS + 1)
    codes = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, NUMERIC_BINS - 1)
    return [_fmt(e) for e in edges[:-1]], codes.astype(np.int64)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)
