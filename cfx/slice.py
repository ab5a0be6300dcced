"""Slice a manifest: positional ranges (HF split syntax), shard numbers, SQL filters and seeded samples.

Slicing touches no image bytes: it only picks manifest rows. Steps run in a fixed order — shards, rows,
where, sample, head — and each records its row counts, so an empty slice says which step emptied it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import polars as pl

from cfx.errors import UsageError
from cfx.manifest import Manifest
from cfx.progress import NullReporter, Reporter
from cfx.select import Selection, SelectionStep, apply_selection, raise_empty, random_keys, where_filter
from cfx.shardspec import ShardSet, parse_shard_set, shard_number

# --- --rows: the `datasets` split-slicing syntax, without (or with) a split name ---------------------------
_PART_RE = re.compile(
    r"""^
    (?P<split>[A-Za-z_][\w.-]*)?
    (?:\[
        (?:(?P<from>-?[\d_]+)(?P<from_pct>%)?)?
        :
        (?:(?P<to>-?[\d_]+)(?P<to_pct>%)?)?
    \])?
    (?:\((?P<rounding>[^)]*)\))?
    $""",
    re.X,
)
_ROWS_HINT = "write e.g. [:10%], [100:200], [-5%:] or [:10%]+[-10%:] (integers, % for percent)"


@dataclass(frozen=True)
class RowRange:
    """One ``[from:to]`` part; ``unit`` is ``%`` or ``abs``; ``rounding`` is closest | pct1_dropremainder."""

    from_: int | None
    to: int | None
    unit: str = "abs"
    rounding: str = "closest"

    def resolve(self, n: int) -> tuple[int, int]:
        """Absolute [start, stop) over ``n`` rows, exactly as ``datasets`` computes it."""
        if self.unit == "%":
            if self.rounding == "pct1_dropremainder":
                if n < 100:
                    raise UsageError(
                        f"--rows: pct1_dropremainder needs at least 100 rows, the source has {n}",
                        "drop the (pct1_dropremainder) suffix",
                    )

                def to_abs(b: int) -> int:
                    return b * math.trunc(n / 100.0)
            else:

                def to_abs(b: int) -> int:
                    return int(round(b * n / 100.0))

            start = 0 if self.from_ is None else to_abs(self.from_)
            stop = n if self.to is None else to_abs(self.to)
        else:
            start = 0 if self.from_ is None else self.from_
            stop = n if self.to is None else self.to
        if start < 0:
            start = max(n + start, 0)
        if stop < 0:
            stop = max(n + stop, 0)
        return min(start, n), min(stop, n)


def parse_rows_spec(spec: str) -> list[RowRange]:
    """Parse ``[:10%]+[-10%:]`` (an optional split name such as ``train`` before each bracket is ignored)."""
    if not spec or not spec.strip():
        raise UsageError("--rows: empty spec", _ROWS_HINT)
    parts = re.split(r"\s*\+\s*", spec.strip())
    out = []
    for part in parts:
        m = _PART_RE.match(part)
        if not m or not part:
            raise UsageError(f"--rows {spec!r}: cannot parse {part!r}", _ROWS_HINT)
        if m["split"] is not None and m["split"].lower() != "train":
            raise UsageError(
                f"--rows {spec!r}: {m['split']!r} is not a split of the source (it has only train)",
                _ROWS_HINT,
            )
        if (
            m["from_pct"]
            and m["to"] is not None
            and not m["to_pct"]
            or (m["to_pct"] and m["from"] is not None and not m["from_pct"])
        ):
            raise UsageError(
                f"--rows {spec!r}: {part!r} mixes percent and row numbers", "use % on both ends or neither"
            )
        unit = "%" if m["from_pct"] or m["to_pct"] else "abs"
        rounding = m["rounding"]
        if rounding is not None and rounding not in ("closest", "pct1_dropremainder"):
            raise UsageError(
                f"--rows {spec!r}: unknown rounding {rounding!r}", "use (closest) or (pct1_dropremainder)"
            )
        if rounding is not None and unit != "%":
            raise UsageError(f"--rows {spec!r}: rounding needs percent bounds", _ROWS_HINT)
        from_ = int(m["from"]) if m["from"] not in (None, "") else None
        to = int(m["to"]) if m["to"] not in (None, "") else None
        if unit == "%" and any(b is not None and abs(b) > 100 for b in (from_, to)):
            raise UsageError(f"--rows {spec!r}: percent bounds must be within -100%..100%", _ROWS_HINT)
        out.append(RowRange(from_, to, unit, rounding or "closest"))
    return out


def row_positions(spec: str | Sequence[RowRange], n: int) -> np.ndarray:
    """Row positions (0..n-1) selected by ``spec``, in spec order; a row named twice is kept once."""
    ranges = parse_rows_spec(spec) if isinstance(spec, str) else spec
    pieces = [np.arange(*r.resolve(n), dtype=np.int64) for r in ranges]
    allpos = np.concatenate(pieces) if pieces else np.empty(0, np.int64)
    _, first = np.unique(allpos, return_index=True)
    return allpos[np.sort(first)]


# --- --sample -----------------------------------------------------------------------------------------
def parse_sample(text: str) -> int | float:
    """``"500"`` → 500 rows; ``"0.1"`` or ``"10%"`` → a fraction."""
    t = text.strip()
    try:
        if t.endswith("%"):
            value: int | float = float(t[:-1]) / 100
        elif re.fullmatch(r"\d+", t):
            value = int(t)
        else:
            value = float(t)
    except ValueError:
        raise UsageError(
            f"--sample {text!r} is not a number", "give a row count (500) or a fraction (0.1 or 10%)"
        ) from None
    if isinstance(value, float) and not 0 < value <= 1:
        raise UsageError(f"--sample {text!r}: a fraction must be in (0, 1]", "or give a whole row count")
    if isinstance(value, int) and value < 1:
        raise UsageError("--sample must be at least 1 row", "or leave it out")
    return value


def _allocate(sizes: np.ndarray, k: int) -> np.ndarray:
    """Split ``k`` over strata proportionally to ``sizes`` (largest remainders; ties to the earlier stratum)."""
    total = int(sizes.sum())
    quota = sizes * (k / total)
    base = np.minimum(np.floor(quota).astype(np.int64), sizes)
    rest = k - int(base.sum())
    if rest > 0:
        order = sorted(range(len(sizes)), key=lambda i: (-(quota[i] - base[i]), i))
        for i in order:
            if rest == 0:
                break
            if base[i] < sizes[i]:
                base[i] += 1
                rest -= 1
    return base


def sample_rows(df: pl.DataFrame, size: int | float, seed: int, stratify: str | None = None) -> pl.DataFrame:
    """A seeded uniform (or stratified, proportional) sample, in the input row order.

    Every row gets a key from a PCG64 seeded with ``seed``; a stratum keeps its rows with the smallest keys.
    So the result depends only on the seed and the input rows, on every machine.
    """
    n = df.height
    k = min(n, size if isinstance(size, int) else int(round(size * n)))
    keys = random_keys(n, seed)
    if stratify is None:
        keep = np.sort(np.argsort(keys, kind="stable")[:k])
        return df[keep]
    if stratify not in df.columns:
        raise UsageError(
            f"--stratify {stratify}: no such manifest column", f"pick one of: {', '.join(df.columns)}"
        )
    groups = df.select(pl.col(stratify).cast(pl.String).fill_null("\x00null")).to_series()
    names, inverse = np.unique(groups.to_numpy().astype(str), return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(names))
    quota = _allocate(sizes, k)
    # rank of each row's key within its stratum
    order = np.lexsort((keys, inverse))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, sizes)
    keep = np.flatnonzero(rank < quota[inverse])
    return df[keep]


# --- the slice ----------------------------------------------------------------------------------------
@dataclass
class SliceSpec:
    rows: str | None = None
    shards: str | None = None
    head: int | None = None
    sample: int | float | None = None
    seed: int = 0
    stratify: str | None = None
    where: str | None = None
    selection: Selection | None = None  # the row selection every selecting command has (at the --where step)

    def describe(self) -> str:
        parts = [
            f"{k}={v}"
            for k, v in (
                ("shards", self.shards),
                ("rows", self.rows),
                ("where", self.where),
                ("sample", self.sample),
                ("stratify", self.stratify),
                ("head", self.head),
            )
            if v is not None
        ]
        if self.sample is not None:
            parts.append(f"seed={self.seed}")
        if self.selection is not None and not self.selection.is_empty():
            parts.append(self.selection.describe())
        return " ".join(parts) or "all rows"


@dataclass
class SliceResult:
    manifest: Manifest
    steps: list[SelectionStep] = field(default_factory=list)


def slice_manifest(
    manifest: Manifest, spec: SliceSpec, *, allow_empty: bool = False, reporter: Reporter | None = None
) -> SliceResult:
    """Apply ``spec`` (shards, rows, selection, where, sample, head — in that order) to the manifest's row
    order. The selection's licence filters need a ``license`` column (``cfx.licenses.ensure_licenses``)."""
    reporter = reporter or NullReporter()
    if spec.rows is not None:
        ranges = parse_rows_spec(spec.rows)  # parse before any work: a typo fails fast
    if spec.stratify is not None and spec.sample is None:
        raise UsageError("--stratify needs --sample", "e.g. --sample 1000 --stratify model_name")
    if spec.head is not None and spec.head < 0:
        raise UsageError("--head must be >= 0", "e.g. --head 100")
    df = manifest.df
    steps: list[SelectionStep] = []

    def step(name: str, new: pl.DataFrame) -> None:
        nonlocal df
        steps.append(SelectionStep(name, df.height, new.height))
        df = new

    if spec.shards is not None:
        wanted = parse_shard_set(spec.shards)  # ranges: `0-99999999999` is never expanded
        shards = df.get_column("shard").unique().to_list()
        numbers = {s: shard_number(s) for s in shards}
        keep = [s for s, num in numbers.items() if num in wanted]
        present = [n for n in numbers.values() if n is not None]
        absent = wanted.without(present)
        if len(absent) > 1000:  # an open end (`--shards 90-99999999`): warn only about the gaps inside
            absent = absent.up_to(max(present, default=-1))
        if absent.ranges:
            reporter.warn(
                f"--shards: {len(absent):,} shard number(s) not in the source: {_short_spec(absent)}"
            )
        step(f"--shards {spec.shards}", df.filter(pl.col("shard").is_in(keep)))
    if spec.rows is not None:
        step(f"--rows {spec.rows}", df[row_positions(ranges, df.height)])
    if spec.selection is not None and not spec.selection.is_empty():
        chosen = apply_selection(manifest.with_df(df), spec.selection, allow_empty=True, reporter=reporter)
        steps.extend(chosen.steps)
        df = chosen.manifest.df
    if spec.where is not None:
        step(f"--where {spec.where}", where_filter(df, spec.where))
    if spec.sample is not None:
        if isinstance(spec.sample, int) and spec.sample > df.height:
            reporter.warn(f"--sample {spec.sample}: only {df.height:,} rows to sample from; keeping all")
        name = f"--sample {spec.sample}" + (f" --stratify {spec.stratify}" if spec.stratify else "")
        step(name, sample_rows(df, spec.sample, spec.seed, spec.stratify))
    if spec.head is not None:
        step(f"--head {spec.head}", df.head(spec.head))
    if df.height == 0 and not allow_empty:
        raise_empty(manifest.df.height, steps)
    return SliceResult(manifest.with_df(df, step=f"slice {spec.describe()}"), steps)


# --- text output ----------------------------------------------------------------------------------------
def _short_spec(shards: ShardSet, n: int = 10) -> str:
    text = str(ShardSet(shards.ranges[:n]))
    return text + (" …" if len(shards.ranges) > n else "")


def write_rows(df: pl.DataFrame, stream: IO[bytes], fmt: str, columns: Sequence[str] | None = None) -> None:
    """Manifest rows as JSON Lines or CSV (for jq / awk), optionally only ``columns``."""
    if columns:
        unknown = [c for c in columns if c not in df.columns]
        if unknown:
            raise UsageError(
                f"--columns: no such column(s) {', '.join(unknown)}", f"pick from: {', '.join(df.columns)}"
            )
        df = df.select(list(columns))
    if fmt == "jsonl":
        df.write_ndjson(stream)
    elif fmt == "csv":
        df.write_csv(stream)
    else:
        raise UsageError(f"--format {fmt!r}: unknown format", "use jsonl or csv")
