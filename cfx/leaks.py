"""Cross-set leaks between two manifests A and B: the same picture, a near copy, a prompt or a unit in both.

Kinds: ``exact`` (identical sha256), ``near`` (pHash within ``threshold``; pairs with identical bytes are
``exact`` instead), ``prompt`` (the same normalised prompt, as ``cfx split`` normalises it) and the shared
units ``generator`` (generated rows) and ``real_source`` (real rows).

Near search: ``cfx.pairs.cross_code_pairs``, the exact multi-index search between the distinct codes of A
and those of B (the larger side indexed, the smaller probing), so only A × B candidates are generated and
the result is exactly a brute-force A × B comparison. Row pairs sharing one key are listed up to
``max_per_key`` rows per side (the counts in the summary are always complete).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cfx.defaults import DEDUPE_THRESHOLD
from cfx.errors import CfxError, ExitCode, UsageError
from cfx.manifest import Manifest
from cfx.outputs import atomic_folder, write_atomic
from cfx.pairs import MAX_THRESHOLD
from cfx.pairs import cross_code_pairs as cross_distinct_pairs
from cfx.progress import NullReporter, Reporter
from cfx.schema import GENERATED, REAL
from cfx.split import near_eligible, normalise_prompts

PAIR_KINDS = ("exact", "near", "prompt")
UNIT_COLUMNS = {"generator": ("model_name", GENERATED), "real_source": ("real_source", REAL)}
PAIR_SCHEMA = {
    "kind": pl.String,
    "shard_a": pl.String,
    "row_a": pl.Int64,
    "shard_b": pl.String,
    "row_b": pl.Int64,
    "distance": pl.UInt8,
    "value": pl.String,
    "model_name_a": pl.String,
    "model_name_b": pl.String,
    "label_a": pl.Int8,
    "label_b": pl.Int8,
}


class LeakFoundError(CfxError):
    """``--fail-on-leak`` and A and B overlap."""

    exit_code = ExitCode.LEAK


@dataclass(frozen=True)
class LeakOptions:
    exact: bool = True
    near: bool = False
    threshold: int = DEDUPE_THRESHOLD
    prompts: bool = False
    units: bool = False  # a shared generator / real source counts as a leak
    max_per_key: int = 50

    def check(self) -> None:
        if not 0 <= self.threshold <= MAX_THRESHOLD:
            raise UsageError(
                f"--threshold {self.threshold}: must be between 0 and {MAX_THRESHOLD}",
                f"pHash distances are bits out of 64; the default is {DEDUPE_THRESHOLD}",
            )


@dataclass
class LeakResult:
    pairs: pl.DataFrame  # PAIR_SCHEMA
    units: pl.DataFrame  # kind, value, rows_a, rows_b
    summary: dict[str, Any]
    a: Manifest  # hashed
    b: Manifest

    @property
    def leaks(self) -> int:
        return int(self.summary["leaks"])


# --- the near search ---------------------------------------------------------------------------------
def cross_code_pairs(
    codes_a: np.ndarray, codes_b: np.ndarray, threshold: int, *, workers: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (code of A, code of B) within ``threshold``, as values (uint64, uint64, distance)."""
    ua, ub = np.unique(codes_a.astype(np.uint64)), np.unique(codes_b.astype(np.uint64))
    p = cross_distinct_pairs(ua, ub, threshold, workers=workers)
    return ua[p.a], ub[p.b], p.distance


def brute_force_cross(codes_a: np.ndarray, codes_b: np.ndarray, threshold: int) -> set[tuple[int, int, int]]:
    """The reference: every distinct (A code, B code, distance) within ``threshold`` (O(|A| × |B|))."""
    from cfx.pairs import popcount

    ua, ub = np.unique(codes_a.astype(np.uint64)), np.unique(codes_b.astype(np.uint64))
    out: set[tuple[int, int, int]] = set()
    for start in range(0, ua.size, 1024):
        block = ua[start : start + 1024]
        d = popcount(block[:, None] ^ ub[None, :])
        i, j = np.nonzero(d <= threshold)
        out.update(zip(block[i].tolist(), ub[j].tolist(), d[i, j].tolist(), strict=True))
    return out


# --- row pairs -----------------------------------------------------------------------------------------
def _side(df: pl.DataFrame, key: pl.Series, cap: int) -> pl.DataFrame:
    """(key, shard, row, model_name, label) of rows with a key, at most ``cap`` rows per key."""
    model = df.get_column("model_name") if "model_name" in df.columns else pl.Series([None] * df.height)
    t = pl.DataFrame(
        {
            "key": key,
            "shard": df.get_column("shard"),
            "row": df.get_column("row"),
            "model_name": model.cast(pl.String),
            "label": df.get_column("label").cast(pl.Int8),
        }
    ).drop_nulls("key")
    return t.filter(pl.int_range(pl.len()).over("key") < cap)


def _key_pairs(
    kind: str, ka: pl.Series, kb: pl.Series, a: pl.DataFrame, b: pl.DataFrame, cap: int
) -> pl.DataFrame:
    sa, sb = _side(a, ka, cap), _side(b, kb, cap)
    j = sa.join(sb, on="key", suffix="_b")
    return _pair_frame(kind, j, pl.lit(0, pl.UInt8), pl.col("key").cast(pl.String))


def _pair_frame(kind: str, j: pl.DataFrame, distance: pl.Expr, value: pl.Expr) -> pl.DataFrame:
    return j.select(
        pl.lit(kind).alias("kind"),
        pl.col("shard").alias("shard_a"),
        pl.col("row").alias("row_a"),
        pl.col("shard_b"),
        pl.col("row_b"),
        distance.cast(pl.UInt8).alias("distance"),
        value.alias("value"),
        pl.col("model_name").alias("model_name_a"),
        pl.col("model_name_b"),
        pl.col("label").alias("label_a"),
        pl.col("label_b"),
    )


def _key_counts(ka: pl.Series, kb: pl.Series) -> dict[str, int]:
    """Keys in both, and the rows of each side that carry one (complete, not capped)."""
    shared = set(ka.drop_nulls().unique().to_list()) & set(kb.drop_nulls().unique().to_list())
    sh = pl.Series(list(shared), dtype=ka.dtype).implode()
    return {"keys": len(shared), "rows_a": int(ka.is_in(sh).sum()), "rows_b": int(kb.is_in(sh).sum())}


def _near_pairs(
    a: pl.DataFrame, b: pl.DataFrame, options: LeakOptions, workers: int
) -> tuple[pl.DataFrame, dict[str, int]]:
    def codes(df: pl.DataFrame) -> pl.Series:
        c = df.get_column("phash").cast(pl.UInt64)
        return c.set(pl.Series(~near_eligible(df)), None) if df.height else c

    ca, cb = codes(a), codes(b)
    xa, xb, d = cross_code_pairs(
        ca.drop_nulls().to_numpy(), cb.drop_nulls().to_numpy(), options.threshold, workers=workers
    )
    code_pairs = pl.DataFrame(
        {"key": xa, "key_b": xb, "d": d}, schema={"key": pl.UInt64, "key_b": pl.UInt64, "d": pl.UInt8}
    )
    sa = _side(a, ca, options.max_per_key)
    sb = _side(b, cb, options.max_per_key).rename({"key": "key_b"})
    j = sa.join(code_pairs, on="key").join(sb, on="key_b", suffix="_b")
    frame = _pair_frame("near", j, pl.col("d"), pl.lit(None, pl.String))
    hit_a = np.isin(ca.fill_null(0).to_numpy(), xa) & ca.is_not_null().to_numpy()
    hit_b = np.isin(cb.fill_null(0).to_numpy(), xb) & cb.is_not_null().to_numpy()
    counts = {"code_pairs": int(xa.size), "rows_a": int(hit_a.sum()), "rows_b": int(hit_b.sum())}
    return frame, counts


def _drop_exact(near: pl.DataFrame, a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """Near pairs whose bytes are identical are exact pairs, listed once as such."""
    sha_a = a.select(
        pl.col("shard").alias("shard_a"), pl.col("row").alias("row_a"), pl.col("sha256").alias("sa")
    )
    sha_b = b.select(
        pl.col("shard").alias("shard_b"), pl.col("row").alias("row_b"), pl.col("sha256").alias("sb")
    )
    j = near.join(sha_a, on=["shard_a", "row_a"], how="left").join(sha_b, on=["shard_b", "row_b"], how="left")
    return j.filter(pl.col("sa").is_null() | (pl.col("sa") != pl.col("sb"))).drop("sa", "sb")


# --- units ---------------------------------------------------------------------------------------------
def unit_overlap(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """Generators (generated rows) and real sources (real rows) present in both, with row counts."""
    parts = []
    for kind, (column, label) in UNIT_COLUMNS.items():
        if column not in a.columns or column not in b.columns:
            continue

        def counts(df: pl.DataFrame, name: str, column: str = column, label: int = label) -> pl.DataFrame:
            return (
                df.filter((pl.col("label") == label) & pl.col(column).is_not_null() & (pl.col(column) != ""))
                .group_by(pl.col(column).alias("value"))
                .agg(pl.len().alias(name))
            )

        j = counts(a, "rows_a").join(counts(b, "rows_b"), on="value")
        parts.append(j.select(pl.lit(kind).alias("kind"), "value", "rows_a", "rows_b"))
    schema = {"kind": pl.String, "value": pl.String, "rows_a": pl.UInt32, "rows_b": pl.UInt32}
    if not parts:
        return pl.DataFrame(schema=schema)
    return pl.concat(parts).cast(schema).sort(["kind", "rows_a", "value"], descending=[False, True, False])  # type: ignore[arg-type]


# --- the whole command -----------------------------------------------------------------------------------
def find_leaks(
    a: pl.DataFrame, b: pl.DataFrame, options: LeakOptions, *, workers: int = 1
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """(pairs, units, summary) for two frames that already have the columns the options need."""
    frames: list[pl.DataFrame] = []
    kinds: dict[str, dict[str, int]] = {}
    cap = options.max_per_key
    if options.exact:
        ka, kb = a.get_column("sha256"), b.get_column("sha256")
        frames.append(_key_pairs("exact", ka, kb, a, b, cap))
        kinds["exact"] = _key_counts(ka, kb)
    if options.near:
        near, counts = _near_pairs(a, b, options, workers)
        near = _drop_exact(near, a, b) if options.exact else near
        frames.append(near)
        counts["pairs_not_exact"] = near.height
        kinds["near"] = counts
    if options.prompts:
        ka, kb = (
            normalise_prompts(df.get_column("prompt"))
            if "prompt" in df.columns
            else pl.Series([None] * df.height, dtype=pl.String)
            for df in (a, b)
        )
        frames.append(_key_pairs("prompt", ka, kb, a, b, cap))
        kinds["prompt"] = _key_counts(ka, kb)
    pairs = pl.concat([f.cast(PAIR_SCHEMA) for f in frames]) if frames else pl.DataFrame(schema=PAIR_SCHEMA)  # type: ignore[arg-type]
    pairs = pairs.sort(["kind", "shard_a", "row_a", "shard_b", "row_b"])
    units = unit_overlap(a, b)
    for kind in UNIT_COLUMNS:
        u = units.filter(pl.col("kind") == kind)
        kinds[kind] = {
            "values": u.height,
            "rows_a": int(u.get_column("rows_a").sum() or 0),
            "rows_b": int(u.get_column("rows_b").sum() or 0),
        }
    # a leak: a shared sha256 or prompt, or a near row pair that is not already an exact one
    leaks = sum(kinds[k].get("keys", kinds[k].get("pairs_not_exact", 0)) for k in PAIR_KINDS if k in kinds)
    if options.units:
        leaks += units.height
    summary = {
        "a_rows": a.height,
        "b_rows": b.height,
        "options": {
            "exact": options.exact,
            "near": options.near,
            "threshold": options.threshold,
            "prompts": options.prompts,
            "units": options.units,
        },
        "by_kind": kinds,
        "pairs_listed": pairs.height,
        "leaks": leaks,
        "by_generator": _by_generator(pairs),
    }
    return pairs, units, summary


def _by_generator(pairs: pl.DataFrame, top: int = 20) -> list[dict[str, Any]]:
    if pairs.is_empty():
        return []
    t = (
        pairs.with_columns(
            pl.when(pl.col("label_a") == REAL)
            .then(pl.lit("(real)"))
            .otherwise(pl.col("model_name_a").fill_null("(unknown)"))
            .alias("generator")
        )
        .group_by("generator", "kind")
        .len()
        .pivot(on="kind", index="generator", values="len")
        .fill_null(0)
    )
    cols = [c for c in PAIR_KINDS if c in t.columns]
    t = t.with_columns(pl.sum_horizontal(cols).alias("pairs")).sort(
        ["pairs", "generator"], descending=[True, False]
    )
    return t.head(top).to_dicts()


def leaks(
    a: Manifest,
    b: Manifest,
    options: LeakOptions | None = None,
    *,
    workers: int = 2,
    use_cache: bool = True,
    skip_bad: bool = False,
    reporter: Reporter | None = None,
) -> LeakResult:
    """Hash both sides when needed (per-shard cache), then ``find_leaks``."""
    options = options or LeakOptions()
    options.check()
    reporter = reporter or NullReporter()
    if options.exact or options.near:
        from cfx.hashing import hash_manifest

        a = hash_manifest(
            a, workers=workers, use_cache=use_cache, skip_bad=skip_bad, reporter=reporter
        ).manifest
        b = hash_manifest(
            b, workers=workers, use_cache=use_cache, skip_bad=skip_bad, reporter=reporter
        ).manifest
    pairs, units, summary = find_leaks(a.df, b.df, options, workers=workers)
    summary["a_root"], summary["b_root"] = a.root, b.root
    return LeakResult(pairs, units, summary, a, b)


def write_report(
    result: LeakResult, folder: Path, *, overwrite: bool = False, warn: Callable[[str], None] | None = None
) -> list[Path]:
    """pairs.parquet, units.parquet and summary.json into ``folder``: all three appear together or none
    (``cfx.outputs.atomic_folder``; an existing folder is replaced as a whole only with ``overwrite``)."""
    folder = Path(folder)
    names = ["pairs.parquet", "units.parquet", "summary.json"]
    text = json.dumps(result.summary, indent=2, default=str) + "\n"
    with atomic_folder(folder, overwrite=overwrite, option="--report", warn=warn) as tmp:
        write_atomic(tmp / names[0], result.pairs.write_parquet)
        write_atomic(tmp / names[1], result.units.write_parquet)
        write_atomic(tmp / names[2], lambda p: Path(p).write_text(text))
    return [folder / n for n in names]


def _pair_members(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The two contact-sheet cells of one leaked pair (the fields ``cfx.gallery.render_sheet`` reads)."""
    return [
        {
            "shard": f"{side.upper()}:{r['shard_' + side]}",
            "row": r["row_" + side],
            "action": "keep" if side == "a" else "drop",  # the frame colour: green for A, red for B
            "conflict": False,
            "label": r["label_" + side],
            "model_name": r["model_name_" + side],
            "survivor": False,
            "kind": f"{r['kind']} in {side.upper()}",
            "distance": r["distance"],
            "status": side.upper(),
        }
        for side in ("a", "b")
    ]


def write_leak_gallery(
    result: LeakResult,
    folder: Path,
    max_sheets: int = 12,
    per_sheet: int = 4,
    *,
    overwrite: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[Path]:
    """Contact sheets of leaked pairs (A's row beside B's), the closest first; the folder appears complete
    (``cfx.outputs.atomic_folder``) and replaces an earlier one as a whole only with ``overwrite``."""
    folder = Path(folder)
    with atomic_folder(folder, overwrite=overwrite, option="--gallery", warn=warn) as tmp:
        names = _draw_leak_sheets(result, tmp, max_sheets, per_sheet)
    return [folder / n for n in names]


def _draw_leak_sheets(result: LeakResult, folder: Path, max_sheets: int, per_sheet: int) -> list[str]:
    from cfx.gallery import THUMB, _fetch, _save_png, render_sheet

    pairs = (
        result.pairs.filter(pl.col("kind") != "prompt")
        .sort(["distance", "kind", "shard_a", "row_a"])
        .head(max_sheets * per_sheet)
    )
    if pairs.is_empty():
        return []
    rows = pairs.to_dicts()
    thumbs_a = _fetch(result.a, sorted({(r["shard_a"], r["row_a"]) for r in rows}), THUMB)
    thumbs_b = _fetch(result.b, sorted({(r["shard_b"], r["row_b"]) for r in rows}), THUMB)
    thumbs = {("A:" + k[0], k[1]): v for k, v in thumbs_a.items()} | {
        ("B:" + k[0], k[1]): v for k, v in thumbs_b.items()
    }
    names = []
    for s in range(0, len(rows), per_sheet):
        members = [m for r in rows[s : s + per_sheet] for m in _pair_members(r)]
        title = f"cross-set leaks {s // per_sheet + 1}: {len(members) // 2} pair(s), A (green) beside B (red)\nA = {result.a.root}  vs  B = {result.b.root}"
        sheet = render_sheet(members, thumbs, title)
        name = f"leaks-{s // per_sheet:04d}.png"
        write_atomic(folder / name, functools.partial(_save_png, sheet))
        names.append(name)
    return names
