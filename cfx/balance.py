"""Balance real and generated rows: equal counts (or a ratio), spread over generators and real sources,
licence-filtered, optionally matched on confounds (size, format, …) and paired one-to-one.

How a selection is made (every step is counted in the report):

1. Licence constraints drop rows first.
2. ``--match`` specs put every row into a bin (e.g. min side in 64-px steps × format). Only bins holding
   both classes can contribute; inside a bin the real:generated ratio is exact, so binned features carry no
   label information in the result.
3. ``--min-per-generator M`` drops generators with fewer than M matchable rows; ``--per-generator N`` keeps
   at most N rows of each generator (a seeded-random subset).
4. In each bin the budget is ``units = min(real // r, generated // g)``: ``units*g`` generated rows are taken
   round-robin over generators (over ``--stratify`` groups first, then over generators inside each group)
   and ``units*r`` real rows round-robin over ``real_source``. Round-robin is water-filling: small groups are
   kept whole, large ones are cut to the same level, so no group dominates unless it must.
5. With a floor, generators that end below M rows are dropped (fewest rows first, just enough of them)
   and the allocation is redone until every kept generator has at least M rows.
6. ``--pair`` links each generated row to one real row of the same bin (``pair_id``).

Every order is a seeded hash of (shard, row) (and of group names), never the order of the input frame, so
the result depends only on the seed and the rows: the same on every run, machine and input order.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from cfx.defaults import BYTE_FACT_MATCHES, MATCH_FEATURES, PIXEL_FACT_COLUMNS, PIXEL_MATCHES, QUANTILE_BINS
from cfx.errors import EmptySelectionError, InputError, UsageError
from cfx.licenses import LICENSE_COLUMN, describe_filter, filter_licenses
from cfx.manifest import Manifest
from cfx.progress import NullReporter, Reporter
from cfx.schema import GENERATED, REAL
from cfx.sources import natural_key

UNNAMED = "(unnamed)"
PAIR_COLUMN = "pair_id"
MAX_FLOOR_ROUNDS = 64  # never reached: eager rounds halve the generators below the floor
EXACT_FLOOR_ROUNDS = 3

_ALIASES = {
    "min_side": "min-side",
    "minside": "min-side",
    "max_side": "max-side",
    "maxside": "max-side",
    "size": "resolution",
    "aspect-ratio": "aspect",
    "aspect_ratio": "aspect",
    "pixel-count": "pixels",
    "file-size": "num-bytes",
    "num_bytes": "num-bytes",
    "bytes": "num-bytes",
    "jpeg_quality": "jpeg-quality",
    "quality": "jpeg-quality",
    "chroma_subsampling": "chroma-subsampling",
    "subsampling": "chroma-subsampling",
    "actual_format": "actual-format",
    "noise_sigma": "noise",
    "dims": "dims-grid",
    "dims_grid": "dims-grid",
}
_CATEGORICAL = ("format", "mode", "resolution", "chroma-subsampling", "actual-format", "dims-grid")
_GRIDS = (64, 32, 16, 8)


# --- option parsing ----------------------------------------------------------------------------------
def parse_ratio(text: str) -> tuple[int, int]:
    """'1:1' / '2:1' (REAL:GENERATED, positive integers) -> reduced (real, generated)."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text or "")
    if not m:
        raise UsageError(
            f"--ratio {text!r} is not REAL:GENERATED",
            "write two positive whole numbers, e.g. --ratio 1:1 or --ratio 2:1 (twice as many real)",
        )
    r, g = int(m.group(1)), int(m.group(2))
    if r == 0 or g == 0:
        raise UsageError(
            f"--ratio {text!r}: both sides must be at least 1",
            "e.g. --ratio 1:1, or select one class with --where",
        )
    d = math.gcd(r, g)
    return r // d, g // d


@dataclass(frozen=True)
class MatchSpec:
    """One ``--match`` spec: a feature (named, or any manifest column) and an optional bin width, or for pixel
    facts and other numeric columns a number of quantile bins."""

    feature: str
    bin: float | None = None
    quantiles: int | None = None

    @property
    def label(self) -> str:
        if self.quantiles is not None:
            return f"{self.feature}:{self.quantiles}"
        if self.bin is None:
            return self.feature
        b = int(self.bin) if float(self.bin).is_integer() else self.bin
        return f"{self.feature}:{b}"

    def expr(self, columns: Sequence[str]) -> pl.Expr:
        """The binned value of each row as a string (null when the feature is unknown)."""
        w, h = pl.col("width").cast(pl.Int64), pl.col("height").cast(pl.Int64)
        f = self.feature
        if self.quantiles is not None:
            return quantile_bins(pl.col(PIXEL_MATCHES.get(f, f)).cast(pl.Float64), self.quantiles)
        numeric: pl.Expr | None = None
        if f == "min-side":
            numeric = pl.min_horizontal(w, h)
        elif f == "max-side":
            numeric = pl.max_horizontal(w, h)
        elif f in ("width", "height"):
            numeric = w if f == "width" else h
        elif f == "pixels":
            numeric = w * h
        elif f == "aspect":
            numeric = w.cast(pl.Float64) / h.cast(pl.Float64)
        elif f == "num-bytes":
            numeric = pl.col("num_bytes")
        elif f == "resolution":
            return pl.when(w.is_not_null() & h.is_not_null()).then(pl.format("{}x{}", w, h))  # exact size
        elif f in BYTE_FACT_MATCHES:
            return self._byte_fact()
        elif f == "dims-grid":
            return _dims_grid(w, h, columns)
        elif f in ("format", "mode"):
            return (
                pl.col(f).cast(pl.String).str.to_uppercase() if f == "format" else pl.col(f).cast(pl.String)
            )
        elif f in columns:
            numeric = None
        if numeric is None:
            col = pl.col(f)
            if self.bin is not None:
                return (col.cast(pl.Float64) / self.bin).floor().cast(pl.Int64).cast(pl.String)
            return col.cast(pl.String)
        if self.bin is not None:
            return (numeric.cast(pl.Float64) / self.bin).floor().cast(pl.Int64).cast(pl.String)
        return numeric.cast(pl.String)

    def _byte_fact(self) -> pl.Expr:
        """jpeg-quality / chroma-subsampling / actual-format; an image without the fact (a PNG has no JPEG
        quality) is in the bin "none"; an image that could not be inspected, or a JPEG whose quality or
        subsampling could not be read, is unknown (null: left out of matching and counted)."""
        inspected = pl.col("actual_format").is_not_null()
        if self.feature == "actual-format":
            return pl.col("actual_format").cast(pl.String)
        if self.feature == "chroma-subsampling":
            raw = pl.col("chroma_subsampling")
            value = raw.cast(pl.String)
        else:
            raw = pl.col("jpeg_quality")
            q = raw.cast(pl.Int64)
            binned = ((q - 1).cast(pl.Float64) / self.bin).floor().cast(pl.Int64) if self.bin else q
            value = binned.cast(pl.String)
        unreadable = (pl.col("actual_format") == "JPEG") & raw.is_null()
        return pl.when(inspected & ~unreadable).then(value.fill_null(pl.lit("none")))


def match_feature(spec: str) -> str:
    """The feature a ``--match`` spec names, aliases resolved (``bytes:1000`` -> ``num-bytes``)."""
    name = (spec or "").partition(":")[0].strip()
    return _ALIASES.get(name.lower(), name.lower())


def quantile_bins(x: pl.Expr, n: int) -> pl.Expr:
    """Bin 0 … n-1 of each value among the frame's known values (both labels together): its mid-rank
    quantile, so equal values share a bin. NaN / infinite / null values are unknown (null)."""
    known = pl.when(x.is_finite()).then(x)
    rank = known.rank("average")
    return ((rank - 1) * n / known.count()).floor().clip(0, n - 1).cast(pl.Int64).cast(pl.String)


def _dims_grid(w: pl.Expr, h: pl.Expr, columns: Sequence[str]) -> pl.Expr:
    """The largest of 64/32/16/8/1 dividing both sides: the pixel fact dims_multiple_of where known, else
    computed from width and height (the same number: both are the decoded size)."""
    computed = pl.lit(1, pl.Int64)
    for g in reversed(_GRIDS):  # the largest grid checked last wins
        computed = pl.when((w % g == 0) & (h % g == 0)).then(pl.lit(g, pl.Int64)).otherwise(computed)
    computed = pl.when((w > 0) & (h > 0)).then(computed)
    if "dims_multiple_of" in columns:
        computed = pl.coalesce(pl.col("dims_multiple_of").cast(pl.Int64), computed)
    return computed.cast(pl.String)


def parse_match(spec: str, columns: Sequence[str]) -> MatchSpec:
    """'min-side', 'min-side:64', 'format', 'aspect:0.1', or any manifest column (with an optional bin)."""
    text = (spec or "").strip()
    name, colon, bin_text = text.partition(":")
    name = name.strip()
    if not name or (colon and not bin_text.strip()):
        raise UsageError(
            f"--match {spec!r}: {'the feature' if not name else 'the bin width after the colon'} is empty",
            "write e.g. --match min-side:64, or --match min-side for its default bin",
        )
    key = _ALIASES.get(name.lower(), name.lower())
    if name in PIXEL_FACT_COLUMNS and name not in columns:
        raise InputError(
            f"--match {spec!r}: the manifest has no pixel facts ({name})",
            "add them with `cfx inspect SOURCE --pixels -o inspected.parquet` and balance that manifest",
        )
    if key not in MATCH_FEATURES and name not in columns:
        raise UsageError(
            f"--match {spec!r}: unknown feature {name!r}",
            f"use one of {', '.join(MATCH_FEATURES)} (optionally with a bin width, e.g. min-side:64) "
            "or a manifest column",
        )
    feature = key if key in MATCH_FEATURES else name
    if feature in PIXEL_MATCHES or (feature not in MATCH_FEATURES and bin_text.strip()):
        return MatchSpec(feature, quantiles=_quantile_count(spec, feature, bin_text))
    bin_width: float | None = None
    if bin_text.strip():
        try:
            bin_width = float(bin_text)
        except ValueError:
            raise UsageError(
                f"--match {spec!r}: bin width {bin_text!r} is not a number", "write e.g. min-side:64"
            ) from None
        if not bin_width > 0 or not math.isfinite(bin_width):
            raise UsageError(f"--match {spec!r}: bin width must be positive", "write e.g. min-side:64")
        if feature in _CATEGORICAL:
            raise UsageError(
                f"--match {spec!r}: {feature} is categorical and takes no bin width",
                f"write --match {feature}",
            )
    elif feature in MATCH_FEATURES:
        bin_width = MATCH_FEATURES[feature][1]
    if feature == "num-bytes" and "num_bytes" not in columns:
        raise UsageError("--match num-bytes: the manifest has no num_bytes column", "index with --num-bytes")
    return MatchSpec(feature, bin_width)


def _quantile_count(spec: str, feature: str, text: str) -> int:
    """N of 'noise:N' / 'COLUMN:N': a whole number of quantile bins (the named pixel facts default to 10)."""
    if not text.strip():
        return QUANTILE_BINS
    try:
        n = int(text)
    except ValueError:
        raise UsageError(
            f"--match {spec!r}: {text!r} is not a whole number of quantile bins",
            f"write e.g. --match {feature}:10 (10 bins of equal row counts over both labels)",
        ) from None
    if not 1 <= n <= 10_000:
        raise UsageError(
            f"--match {spec!r}: the number of quantile bins must be 1 to 10000", f"e.g. {feature}:10"
        )
    return n


@dataclass
class BalanceOptions:
    ratio: tuple[int, int] = (1, 1)
    per_generator: int | None = None
    min_per_generator: int | None = None
    stratify: str | None = None
    pair: bool = False
    match: list[MatchSpec] = field(default_factory=list)
    seed: int = 0
    licenses: list[str] = field(default_factory=list)
    exclude_licenses: list[str] = field(default_factory=list)
    commercial_only: bool = False

    def describe(self) -> str:
        parts = [f"--ratio {self.ratio[0]}:{self.ratio[1]}", f"--seed {self.seed}"]
        if self.per_generator:
            parts.append(f"--per-generator {self.per_generator}")
        if self.min_per_generator:
            parts.append(f"--min-per-generator {self.min_per_generator}")
        if self.stratify:
            parts.append(f"--stratify {self.stratify}")
        parts.extend(f"--match {m.label}" for m in self.match)
        if self.pair:
            parts.append("--pair")
        lic = describe_filter(self.licenses, self.exclude_licenses, self.commercial_only)
        if lic:
            parts.append(lic)
        return " ".join(parts)


# --- report ------------------------------------------------------------------------------------------
@dataclass
class Step:
    """Counts after one constraint."""

    name: str
    detail: str
    rows: int
    real: int
    generated: int
    generators: int
    real_sources: int
    unknown: dict[str, int] | None = None  # a match step: rows per label left out as unknown

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "detail": self.detail,
            "rows": self.rows,
            "real": self.real,
            "generated": self.generated,
            "generators": self.generators,
            "real_sources": self.real_sources,
            **({"unknown": self.unknown} if self.unknown is not None else {}),
        }

    def short(self) -> str:
        return (
            f"{self.name}: {self.rows:,} rows ({self.real:,} real, {self.generated:,} generated, "
            f"{self.generators:,} generators)"
        )


def _counts(df: pl.DataFrame, name: str, detail: str = "") -> Step:
    if df.height == 0:
        return Step(name, detail, 0, 0, 0, 0, 0)
    row = df.select(
        (pl.col("label") == REAL).sum().alias("real"),
        (pl.col("label") == GENERATED).sum().alias("generated"),
        pl.col("__gen").filter(pl.col("label") == GENERATED).n_unique().alias("generators"),
        pl.col("__src").filter(pl.col("label") == REAL).n_unique().alias("real_sources"),
    ).row(0, named=True)
    return Step(
        name,
        detail,
        df.height,
        int(row["real"]),
        int(row["generated"]),
        int(row["generators"]),
        int(row["real_sources"]),
    )


@dataclass
class BalanceResult:
    manifest: Manifest
    steps: list[Step]
    options: BalanceOptions
    bins: int
    unknown: dict[str, int] = field(default_factory=dict)  # match feature -> rows left out as unknown
    floor_dropped: list[str] = field(default_factory=list)
    per_generator: dict[str, int] = field(default_factory=dict)
    per_source: dict[str, int] = field(default_factory=dict)
    per_stratum: dict[str, int] = field(default_factory=dict)

    @property
    def final(self) -> Step:
        return self.steps[-1]

    def to_json(self) -> dict[str, Any]:
        counts = sorted(self.per_generator.values())
        return {
            "options": self.options.describe(),
            "ratio": f"{self.options.ratio[0]}:{self.options.ratio[1]}",
            "seed": self.options.seed,
            "match": [m.label for m in self.options.match],
            "unknown_match_rows": self.unknown,
            "steps": [s.to_json() for s in self.steps],
            "result": {
                "rows": self.final.rows,
                "real": self.final.real,
                "generated": self.final.generated,
                "generators": self.final.generators,
                "real_sources": self.final.real_sources,
                "pairs": self.final.generated if self.options.pair else None,
                "bins": self.bins,
                "rows_per_generator": {
                    "min": counts[0] if counts else 0,
                    "median": counts[len(counts) // 2] if counts else 0,
                    "max": counts[-1] if counts else 0,
                },
                "floor_dropped_generators": len(self.floor_dropped),
            },
            "per_real_source": self.per_source,
            "per_stratum": self.per_stratum,
        }


def _empty_error(steps: list[Step], step: Step) -> EmptySelectionError:
    emptied = [side for side, n in (("real", step.real), ("generated", step.generated)) if n == 0]
    which = f"{emptied[0]} " if len(emptied) == 1 else ""
    trail = " → ".join(s.short() for s in steps)
    err = EmptySelectionError(
        f"'{step.name}'{f' ({step.detail})' if step.detail else ''} left no {which}rows to balance. "
        f"Counts per step: {trail}",
        "relax that constraint (e.g. a coarser --match bin, fewer --match features, other licence options)",
    )
    err.steps = [s.to_json() for s in steps]  # type: ignore[attr-defined]
    return err


# --- deterministic ordering --------------------------------------------------------------------------
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: np.ndarray) -> np.ndarray:
    z = x + _GOLD
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _name_hash(seed: int, kind: str, name: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{kind}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # fits Int64


def _name_hashes(values: Sequence[Any], seed: int, kind: str) -> dict[Any, int]:
    return {v: _name_hash(seed, kind, str(v)) for v in values}


def row_hashes(shard: pl.Series, row: pl.Series, seed: int) -> pl.Series:
    """A seeded 63-bit hash of each (shard, row): the same on every machine, whatever the frame order."""
    shard_h = _name_hashes(shard.unique().to_list(), seed, "shard")
    sh = shard.replace_strict(shard_h, return_dtype=pl.UInt64).to_numpy().astype(np.uint64)
    rw = row.cast(pl.Int64).to_numpy().astype(np.uint64)
    with np.errstate(over="ignore"):
        h = _splitmix(sh ^ _splitmix(rw))
    return pl.Series("__h", (h >> np.uint64(1)).astype(np.int64))


# --- allocation --------------------------------------------------------------------------------------
def _round_robin(frame: pl.DataFrame, levels: Sequence[tuple[str, str]]) -> pl.DataFrame:
    """Add ``__pos``: each row's place in a round-robin over the nested groups ``levels`` (outermost first)
    within its bin. Taking the first k rows of a bin water-fills its groups. ``frame`` must be sorted by
    (``__h``, shard, row) so that the innermost order is the seeded one."""
    keys = ["__bin", *[g for g, _ in levels]]
    frame = frame.with_columns(pl.int_range(pl.len()).over(keys).alias("__pos"))
    for i in reversed(range(len(levels))):
        outer = ["__bin", *[g for g, _ in levels[:i]]]
        frame = frame.sort(["__pos", levels[i][1], "__h"])
        frame = frame.with_columns(pl.int_range(pl.len()).over(outer).alias("__pos"))
    return frame


def _rank_generated(gen: pl.DataFrame, stratified: bool) -> pl.DataFrame:
    levels = [("__strat", "__strat_h"), ("__gen", "__gen_h")] if stratified else [("__gen", "__gen_h")]
    return _round_robin(gen.sort(["__h", "shard", "row"]), levels)


def _rank_real(real: pl.DataFrame) -> pl.DataFrame:
    return _round_robin(real.sort(["__h", "shard", "row"]), [("__src", "__src_h")])


def _take(gen: pl.DataFrame, real: pl.DataFrame, ratio: tuple[int, int]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The first ``units*g`` generated and ``units*r`` real rows (round-robin order) of every bin."""
    r, g = ratio
    budget = (
        gen.group_by("__bin")
        .len("__g")
        .join(real.group_by("__bin").len("__r"), on="__bin", how="inner")
        .with_columns(pl.min_horizontal(pl.col("__r") // r, pl.col("__g") // g).alias("__units"))
        .filter(pl.col("__units") > 0)
        .select("__bin", "__units")
    )
    gen = gen.join(budget, on="__bin", how="inner").filter(pl.col("__pos") < pl.col("__units") * g)
    real = real.join(budget, on="__bin", how="inner").filter(pl.col("__pos") < pl.col("__units") * r)
    return gen.drop("__units"), real.drop("__units")


def _floor_drops(gen_sel: pl.DataFrame, floor: int, eager: bool) -> list[str]:
    """Generators to drop so the ones left can reach ``floor`` rows: among those below it, keep as many as
    the rows they hold could fill (the biggest), drop the rest (fewest rows first, ties by seeded hash).
    ``eager`` drops at least half of them: the freed rows are shared with every generator of their bins,
    so the estimate above is optimistic and would otherwise take many rounds."""
    counts = gen_sel.group_by("__gen", "__gen_h").len("n")
    below = counts.filter(pl.col("n") < floor).sort(["n", "__gen_h"])
    if below.height == 0:
        return []
    keep = int(below.get_column("n").sum()) // floor
    n_drop = max(1, below.height - keep, (below.height + 1) // 2 if eager else 0)
    return below.get_column("__gen").head(n_drop).to_list()


def balance(
    manifest: Manifest, options: BalanceOptions | None = None, reporter: Reporter | None = None
) -> BalanceResult:
    """Select a balanced (and optionally matched and paired) subset of ``manifest``. See the module doc."""
    options = options or BalanceOptions()
    reporter = reporter or NullReporter()
    df = manifest.df
    _check_columns(df, options)
    _check_options(options)
    work = _work_frame(df, options)
    steps = _Steps(reporter, _counts(work, "input"))
    # 1. licences
    if options.licenses or options.exclude_licenses or options.commercial_only:
        work = steps.add(
            filter_licenses(work, options.licenses, options.exclude_licenses, options.commercial_only),
            "licences",
            describe_filter(options.licenses, options.exclude_licenses, options.commercial_only),
        )
    # 2. matching: keep rows in bins holding both classes (at the ratio), one step per added feature
    work, n_bins = _match(work, options, steps)
    work = _with_hashes(work, options.seed)
    # 3. generator floor (availability) and cap
    gen, real = _cap_generators(
        work.filter(pl.col("label") == GENERATED), work.filter(pl.col("label") == REAL), options, steps
    )
    # 4./5. allocate, then enforce the floor on the result
    gen_sel, real_sel, floor_dropped = _allocate(gen, real, options, reporter)
    selected = pl.concat([gen_sel, real_sel])
    steps.add(selected, "balance", _balance_detail(options, n_bins, floor_dropped))
    # 6. pairs
    keep_cols = ["__i"]
    if options.pair:
        selected = selected.join(_pair(gen_sel, real_sel), on="__i", how="left")
        keep_cols.append(PAIR_COLUMN)
    out = (
        df.with_row_index("__i")
        .drop([PAIR_COLUMN] if PAIR_COLUMN in df.columns else [])  # old pairs do not survive
        .join(selected.select(keep_cols), on="__i", how="semi" if not options.pair else "inner")
    )
    out = _sort_rows(out).drop("__i")
    return BalanceResult(
        manifest=manifest.with_df(out, step=f"balance {options.describe()}"),
        steps=steps.steps,
        options=options,
        unknown=steps.unknown,
        bins=int(selected.get_column("__bin").n_unique()),
        floor_dropped=floor_dropped,
        per_generator=dict(gen_sel.group_by("__gen").len("n").sort("__gen").iter_rows()),
        per_source=dict(
            real_sel.group_by("__src").len("n").sort(["n", "__src"], descending=[True, False]).iter_rows()
        ),
        per_stratum=(
            dict(gen_sel.group_by("__strat").len("n").sort("__strat").iter_rows()) if options.stratify else {}
        ),
    )


def _check_options(options: BalanceOptions) -> None:
    r, g = options.ratio
    if options.pair and (r, g) != (1, 1):
        raise UsageError(
            f"--pair links one real row to one generated row, so it needs --ratio 1:1 (got {r}:{g})",
            "drop --pair or use --ratio 1:1",
        )
    for name, v in (
        ("--per-generator", options.per_generator),
        ("--min-per-generator", options.min_per_generator),
    ):
        if v is not None and v < 1:
            raise UsageError(f"{name} {v}: must be at least 1", f"give a positive count or leave {name} out")
    if (
        options.per_generator
        and options.min_per_generator
        and options.per_generator < options.min_per_generator
    ):
        raise UsageError(
            f"--per-generator {options.per_generator} is below --min-per-generator {options.min_per_generator}",
            "no generator could satisfy both; raise the cap or lower the floor",
        )


def _work_frame(df: pl.DataFrame, options: BalanceOptions) -> pl.DataFrame:
    """The columns balancing works on: row index, pointer, label, generator, source, stratum, match features."""
    model = pl.col("model_name").cast(pl.String)
    source = pl.col("real_source").cast(pl.String) if "real_source" in df.columns else pl.lit(None, pl.String)
    work = df.with_row_index("__i").select(
        "__i",
        "shard",
        "row",
        pl.col("label").cast(pl.Int8),
        pl.when(model.is_null() | (model.str.strip_chars() == ""))
        .then(pl.lit(UNNAMED))
        .otherwise(model)
        .alias("__gen"),
        pl.when(source.is_null() | (source.str.strip_chars() == ""))
        .then(pl.lit(UNNAMED))
        .otherwise(source)
        .alias("__src"),
        (
            pl.col(options.stratify).cast(pl.String).fill_null(UNNAMED) if options.stratify else pl.lit("")
        ).alias("__strat"),
        *[m.expr(df.columns).alias(f"__m{i}") for i, m in enumerate(options.match)],
        *([pl.col(LICENSE_COLUMN)] if LICENSE_COLUMN in df.columns else []),
    )
    bad = work.filter(~pl.col("label").is_in([REAL, GENERATED]) | pl.col("label").is_null())
    if bad.height:
        raise InputError(
            f"{bad.height} row(s) have a label other than 0 (real) / 1 (generated)", "re-index the dataset"
        )
    return work


class _Steps:
    """The row counts after each step (the report); a step that leaves one class empty ends the balance."""

    def __init__(self, reporter: Reporter, first: Step) -> None:
        self.reporter = reporter
        self.steps = [first]
        self.unknown: dict[str, int] = {}  # match feature -> rows left out because it is unknown
        if first.real == 0 or first.generated == 0:
            raise _empty_error(self.steps, first)

    def add(
        self, frame: pl.DataFrame, name: str, detail: str = "", unknown: dict[str, int] | None = None
    ) -> pl.DataFrame:
        s = _counts(frame, name, detail)
        s.unknown = unknown
        self.steps.append(s)
        self.reporter.info(s.short())
        if s.real == 0 or s.generated == 0:
            raise _empty_error(self.steps, s)
        return frame


def _match(work: pl.DataFrame, options: BalanceOptions, steps: _Steps) -> tuple[pl.DataFrame, int]:
    """Keep the rows in bins of the match features that hold both classes at the ratio; adds ``__bin``."""
    r, g = options.ratio
    bin_cols: list[str] = []
    for i, m in enumerate(options.match):
        bin_cols.append(f"__m{i}")
        unknown = _unknown(work, f"__m{i}")
        if any(unknown.values()):
            steps.unknown[m.feature] = sum(unknown.values())
        work = work.filter(pl.col(f"__m{i}").is_not_null())
        per_bin = work.group_by(bin_cols).agg(
            ((pl.col("label") == REAL).sum() // r).alias("__ur"),
            ((pl.col("label") == GENERATED).sum() // g).alias("__ug"),
        )
        ok = per_bin.filter((pl.col("__ur") > 0) & (pl.col("__ug") > 0)).select(bin_cols)
        detail = f"rows in bins of {' × '.join(x.label for x in options.match[: i + 1])} holding both classes"
        if any(unknown.values()):
            detail += f"; left out as unknown {m.feature}: {unknown['real']:,} real, {unknown['generated']:,} generated"
        work = steps.add(work.join(ok, on=bin_cols, how="semi"), f"match {m.label}", detail, unknown=unknown)
    if bin_cols:
        work = work.with_columns(
            pl.concat_str([pl.col(c) for c in bin_cols], separator="|").alias("__bin")
        ).drop(bin_cols)
    else:
        work = work.with_columns(pl.lit("").alias("__bin"))
    return work, work.get_column("__bin").n_unique()


def _unknown(work: pl.DataFrame, column: str) -> dict[str, int]:
    """Rows per label whose match value is unknown (null): they cannot be matched and are left out."""
    null = work.filter(pl.col(column).is_null())
    return {
        "real": int((null.get_column("label") == REAL).sum()),
        "generated": int((null.get_column("label") == GENERATED).sum()),
    }


def _with_hashes(work: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Seeded hashes of rows, generators, sources and strata: every order below is drawn from them."""
    work = work.with_columns(row_hashes(work.get_column("shard"), work.get_column("row"), seed))
    for col, kind in (("__gen", "generator"), ("__src", "source"), ("__strat", "stratum")):
        mapping = _name_hashes(work.get_column(col).unique().to_list(), seed, kind)
        work = work.with_columns(pl.col(col).replace_strict(mapping, return_dtype=pl.Int64).alias(f"{col}_h"))
    return work


def _cap_generators(
    gen: pl.DataFrame, real: pl.DataFrame, options: BalanceOptions, steps: _Steps
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """--min-per-generator drops generators with too few matchable rows; --per-generator keeps a seeded
    subset of each."""
    floor = options.min_per_generator
    if floor:
        sizes = gen.group_by("__gen").len("n")
        gen = gen.join(sizes.filter(pl.col("n") >= floor).select("__gen"), on="__gen", how="semi")
        steps.add(
            pl.concat([gen, real]),
            f"min-per-generator {floor}",
            "generators with fewer matchable rows dropped",
        )
    if options.per_generator:
        gen = (
            gen.sort(["__h", "shard", "row"])
            .with_columns(pl.int_range(pl.len()).over("__gen").alias("__k"))
            .filter(pl.col("__k") < options.per_generator)
            .drop("__k")
        )
        steps.add(
            pl.concat([gen, real]),
            f"per-generator {options.per_generator}",
            "seeded subset of each generator",
        )
    return gen, real


def _allocate(
    gen: pl.DataFrame, real: pl.DataFrame, options: BalanceOptions, reporter: Reporter
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Take rows at the ratio; with a floor, drop the generators the result leaves below it and take again."""
    floor = options.min_per_generator
    floor_dropped: list[str] = []
    stratified = bool(options.stratify)
    real_ranked = _rank_real(real)  # the real order does not depend on which generators are kept
    for round_no in range(MAX_FLOOR_ROUNDS):
        gen_sel, real_sel = _take(_rank_generated(gen, stratified), real_ranked, options.ratio)
        if not floor or gen_sel.height == 0:
            break
        drops = _floor_drops(gen_sel, floor, eager=round_no >= EXACT_FLOOR_ROUNDS)
        if not drops:
            break
        floor_dropped.extend(drops)
        gen = gen.filter(~pl.col("__gen").is_in(drops))
    else:  # pragma: no cover - eager rounds end this long before MAX_FLOOR_ROUNDS
        raise AssertionError("min-per-generator did not converge")
    if floor_dropped:
        reporter.info(
            f"min-per-generator {floor}: {len(floor_dropped)} generator(s) could not reach {floor} rows"
        )
    return gen_sel, real_sel, floor_dropped


def _balance_detail(options: BalanceOptions, n_bins: int, floor_dropped: list[str]) -> str:
    r, g = options.ratio
    detail = (
        f"{r}:{g} real:generated in each of {n_bins:,} bin(s)" if options.match else f"{r}:{g} real:generated"
    )
    if options.stratify:
        detail += f", round-robin over {options.stratify} then generators"
    if floor_dropped:
        detail += f"; {len(floor_dropped)} generator(s) dropped below the floor"
    return detail


def _pair(gen_sel: pl.DataFrame, real_sel: pl.DataFrame) -> pl.DataFrame:
    """pair_id per row: the j-th generated and j-th real row (in seeded order) of each bin form a pair."""
    gen = gen_sel.sort(["__h", "shard", "row"]).with_columns(
        pl.int_range(pl.len()).over("__bin").alias("__j")
    )
    real = real_sel.sort(["__h", "shard", "row"]).with_columns(
        pl.int_range(pl.len()).over("__bin").alias("__j")
    )
    ids = (
        gen.select("__bin", "__j", "__h")
        .sort(["__bin", "__j"])
        .with_row_index(PAIR_COLUMN)
        .with_columns(pl.col(PAIR_COLUMN).cast(pl.Int64))
        .select("__bin", "__j", PAIR_COLUMN)
    )
    g = gen.join(ids, on=["__bin", "__j"]).select("__i", PAIR_COLUMN)
    r = real.join(ids, on=["__bin", "__j"]).select("__i", PAIR_COLUMN)
    return pl.concat([g, r])


def _sort_rows(df: pl.DataFrame) -> pl.DataFrame:
    """Shards in natural order (HFCF_small_2 before _10), rows ascending: the order subset reads best."""
    shards = sorted(df.get_column("shard").unique().to_list(), key=natural_key)
    rank = {s: i for i, s in enumerate(shards)}
    return (
        df.with_columns(pl.col("shard").replace_strict(rank, return_dtype=pl.Int64).alias("__s"))
        .sort(["__s", "row"])
        .drop("__s")
    )


def _check_columns(df: pl.DataFrame, options: BalanceOptions) -> None:
    need = {"shard", "row", "label", "model_name"}
    if options.match:
        for m in options.match:
            if m.feature in ("min-side", "max-side", "width", "height", "resolution", "aspect", "pixels"):
                need |= {"width", "height"}
            elif m.feature == "num-bytes":
                need.add("num_bytes")
            elif m.feature in BYTE_FACT_MATCHES:
                need |= set(BYTE_FACT_MATCHES[m.feature])
            elif m.feature == "dims-grid":
                need |= set() if "dims_multiple_of" in df.columns else {"width", "height"}
            else:
                need.add(PIXEL_MATCHES.get(m.feature, m.feature))
    if options.stratify:
        need.add(options.stratify)
    missing = sorted(c for c in need if c not in df.columns)
    facts = {c for cols in BYTE_FACT_MATCHES.values() for c in cols}
    pixel_facts = {*PIXEL_MATCHES.values(), *PIXEL_FACT_COLUMNS}
    if missing and set(missing) <= pixel_facts:
        raise InputError(
            f"the manifest lacks the pixel fact column(s) {', '.join(missing)}",
            "add them with `cfx inspect SOURCE --pixels -o inspected.parquet` and balance that manifest",
        )
    if missing and set(missing) <= facts:
        raise InputError(
            f"the manifest lacks the byte fact column(s) {', '.join(missing)}",
            "add them with `cfx inspect SOURCE -o inspected.parquet` (the balance command does it itself)",
        )
    if missing:
        raise InputError(
            f"the manifest lacks column(s) {', '.join(missing)}",
            f"columns present: {', '.join(df.columns)}; re-create it with `cfx index`",
        )
    if options.stratify and options.stratify not in df.columns:  # pragma: no cover - covered above
        raise UsageError(f"--stratify {options.stratify}: no such column", "e.g. --stratify architecture")
    for m in options.match:
        column = PIXEL_MATCHES.get(m.feature, m.feature)
        if m.quantiles is not None and not df.schema[column].is_numeric():
            raise UsageError(
                f"--match {m.label}: {column} is not numeric ({df.schema[column]}), so it has no quantiles",
                f"match its exact values with --match {m.feature}",
            )
        if m.feature == "num-bytes" and df.get_column("num_bytes").null_count() == df.height and df.height:
            raise UsageError(
                "--match num-bytes: num_bytes is unknown for every row (the index does not read image bytes)",
                "re-index with `cfx index SOURCE --num-bytes -o manifest.parquet`",
            )
