"""Row selection shared by subset, balance and download: which images to keep, and why a selection is empty.

A ``Selection`` holds every filter a user can give; ``apply_selection`` applies them in a fixed order and
records the row count before and after each step, so an empty result names the filter that emptied it.

Filters act per side: ``generators`` and ``architectures`` choose among the *generated* rows and leave real
rows alone, ``real_sources`` chooses among the *real* rows and leaves generated rows alone, and ``labels``
keeps whole sides. So ``--generators X --real-sources COCO`` means "X's images plus COCO's", which is the
pairing a detector needs; add ``--labels generated`` for X's images only.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from cfx.errors import EmptySelectionError, UsageError
from cfx.licenses import LICENSE_COLUMN, filter_licenses
from cfx.manifest import Manifest
from cfx.progress import NullReporter, Reporter
from cfx.schema import GENERATED, LABEL_NAMES, REAL

_GLOB_CHARS = set("*?[")
_LABEL_WORDS = {
    "real": REAL,
    "0": REAL,
    "generated": GENERATED,
    "fake": GENERATED,
    "1": GENERATED,
}


@dataclass
class Selection:
    """Every filter option. Empty lists / None / False mean "no filter"."""

    generators: list[str] = field(default_factory=list)  # names, shell globs, or @file.txt
    architectures: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # real | generated
    real_sources: list[str] = field(default_factory=list)
    exclude_nsfw: bool = False
    where: str | None = None  # polars SQL expression over manifest columns
    max_per_generator: int | None = None
    seed: int = 0
    licenses: list[str] = field(default_factory=list)  # globs over the `license` column
    exclude_licenses: list[str] = field(default_factory=list)
    commercial_only: bool = False
    allow_missing: bool = False  # unknown generator names only warn

    @property
    def filters_licenses(self) -> bool:
        """Whether rows are chosen by licence (so they need a ``license`` column first)."""
        return bool(self.licenses or self.exclude_licenses or self.commercial_only)

    def is_empty(self) -> bool:
        return not (
            self.generators
            or self.architectures
            or self.labels
            or self.real_sources
            or self.exclude_nsfw
            or self.where
            or self.max_per_generator is not None
            or self.filters_licenses
        )

    def describe(self) -> str:
        """A short text of the active filters, for manifest history and dataset cards."""
        parts: list[str] = []
        for name in ("generators", "architectures", "labels", "real_sources", "licenses", "exclude_licenses"):
            values = getattr(self, name)
            if values:
                parts.append(f"{name}={','.join(values)}")
        if self.exclude_nsfw:
            parts.append("exclude_nsfw")
        if self.commercial_only:
            parts.append("commercial_only")
        if self.where:
            parts.append(f"where={self.where}")
        if self.max_per_generator is not None:
            parts.append(f"max_per_generator={self.max_per_generator} seed={self.seed}")
        return " ".join(parts) or "all rows"


@dataclass(frozen=True)
class SelectionStep:
    """One filter: its name (as the user wrote it) and the row count before and after."""

    name: str
    before: int
    after: int


@dataclass
class SelectionResult:
    manifest: Manifest
    steps: list[SelectionStep] = field(default_factory=list)
    missing_generators: list[str] = field(default_factory=list)  # unknown names kept by allow_missing
    matched_generators: list[str] = field(default_factory=list)

    def explain(self) -> str:
        """``--generators: 1,200 → 300 rows; --exclude-nsfw: 300 → 280 rows``."""
        return "; ".join(f"{s.name}: {s.before:,} → {s.after:,} rows" for s in self.steps)


# --- helpers reused by slice / balance -----------------------------------------------------------------
def random_keys(n: int, seed: int) -> np.ndarray:
    """One uniform key per row, from a seeded PCG64: the same seed gives the same keys on every machine."""
    return np.random.Generator(np.random.PCG64(seed)).random(n)


def where_filter(df: pl.DataFrame, where: str, option: str = "--where") -> pl.DataFrame:
    """Rows of ``df`` for which the SQL expression holds; malformed SQL or unknown columns are UsageErrors."""
    try:
        expr = pl.sql_expr(where)
    except pl.exceptions.PolarsError as exc:
        raise UsageError(
            f"{option} {where!r} is not a valid SQL expression ({_first_line(exc)})",
            "write e.g. \"architecture = 'GAN' AND width >= 512\" (strings in single quotes)",
        ) from None
    try:
        return df.filter(expr)
    except pl.exceptions.ColumnNotFoundError as exc:
        raise UsageError(
            f"{option} {where!r}: unknown column ({_first_line(exc)})",
            f"manifest columns are: {', '.join(df.columns)}",
        ) from None
    except pl.exceptions.PolarsError as exc:
        raise UsageError(
            f"{option} {where!r} cannot be evaluated ({_first_line(exc)})",
            "the expression must be a condition (true/false) over manifest columns",
        ) from None


def cap_per_group(
    df: pl.DataFrame, column: str, n: int, seed: int, mask: pl.Expr | None = None
) -> pl.DataFrame:
    """Keep at most ``n`` random rows per value of ``column`` (only among rows where ``mask`` holds).

    The choice depends on the seed and the row order only, so it is the same on every machine.
    """
    keys = pl.Series("__key", random_keys(df.height, seed))
    rank = pl.col("__key").rank("ordinal").over(column)
    keep = rank <= n
    if mask is not None:
        keep = keep | ~mask
    return df.with_columns(keys).filter(keep).drop("__key")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def split_values(values: Iterable[str] | None) -> list[str]:
    """Flatten repeated and comma-separated option values: ``["a,b", "c"]`` → ``["a", "b", "c"]``."""
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in str(v).split(",") if p.strip())
    return out


def read_name_file(path: str, option: str = "--generators") -> list[str]:
    """Names from ``@file.txt``: one per line, blank lines and ``#`` comments ignored."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{option} @{path}: no such file", "write one name per line into it") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option} @{path}: cannot read it ({exc})", "pass a UTF-8 text file") from None
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def expand_patterns(patterns: Sequence[str], option: str = "--generators") -> list[str]:
    """Replace each ``@file`` by the names it lists (one level, no recursion)."""
    out: list[str] = []
    for p in patterns:
        if p.startswith("@"):
            out.extend(read_name_file(p[1:], option))
        else:
            out.append(p)
    return out


def match_names(
    patterns: Sequence[str], known: Sequence[str], option: str, allow_missing: bool
) -> tuple[list[str], list[str]]:
    """Known names matched by ``patterns`` (exact names or globs) and the patterns that matched nothing.

    Without ``allow_missing`` an unmatched pattern is a UsageError naming the closest known names.
    """
    known_set = set(known)
    matched: set[str] = set()
    missing: list[str] = []
    for pattern in patterns:
        if _GLOB_CHARS & set(pattern):
            hits = fnmatch.filter(known, pattern)
        else:
            hits = [pattern] if pattern in known_set else []
        if not hits:
            missing.append(pattern)
        matched.update(hits)
    if missing and not allow_missing:
        first = missing[0]
        close = difflib.get_close_matches(first, list(known_set), n=5, cutoff=0.5)
        if not close:
            low = first.lower().split("/")[-1]
            close = sorted(k for k in known_set if low and low in k.lower())[:5]
        what = "matches no" if _GLOB_CHARS & set(first) else "is not a known"
        more = f" (and {len(missing) - 1} more unknown)" if len(missing) > 1 else ""
        hint = (
            f"closest known: {', '.join(close)}"
            if close
            else f"{len(known_set)} names are known; list them with `cfx stats SOURCE --by model_name`"
        )
        raise UsageError(
            f"{option} {first!r} {what} {option.lstrip('-').rstrip('s')} in the source{more}",
            hint + "; or pass --allow-missing to go on without it",
        )
    return sorted(matched), missing


def parse_labels(values: Sequence[str]) -> list[int]:
    out = []
    for v in values:
        code = _LABEL_WORDS.get(v.strip().lower())
        if code is None:
            raise UsageError(f"--labels {v!r}: unknown label", "use real or generated")
        out.append(code)
    return sorted(set(out))


def _glob_mask(df: pl.DataFrame, column: str, patterns: Sequence[str]) -> pl.Expr:
    """Rows whose ``column`` matches any shell glob of ``patterns`` (case-insensitive); nulls never match."""
    values = df.get_column(column).cast(pl.String).drop_nulls().unique().to_list()
    low = [p.lower() for p in patterns]
    hits = [v for v in values if any(fnmatch.fnmatchcase(v.lower(), p) for p in low)]
    return pl.col(column).cast(pl.String).is_in(hits).fill_null(False)


# --- licences -----------------------------------------------------------------------------------------
def _need_license_column(df: pl.DataFrame, option: str) -> None:
    if LICENSE_COLUMN not in df.columns:
        raise UsageError(
            f"{option} needs a `license` column, and this manifest has none",
            "annotate it first: `cfx licenses SOURCE -o manifest.parquet`, then select from manifest.parquet",
        )


# --- the pipeline ------------------------------------------------------------------------------------
def apply_selection(
    manifest: Manifest,
    selection: Selection,
    *,
    allow_empty: bool = False,
    reporter: Reporter | None = None,
) -> SelectionResult:
    """Apply every filter of ``selection`` in a fixed order, recording row counts per step.

    Order: labels, generators, architectures, real sources, nsfw, licences, where, max-per-generator (last,
    so the cap counts only rows that pass every other filter). An empty result raises EmptySelectionError
    listing the counts, unless ``allow_empty``.
    """
    reporter = reporter or NullReporter()
    df = manifest.df
    steps: list[SelectionStep] = []
    is_gen = pl.col("label") == GENERATED
    is_real = pl.col("label") == REAL

    def step(name: str, new: pl.DataFrame) -> None:
        nonlocal df
        steps.append(SelectionStep(name, df.height, new.height))
        df = new

    matched: list[str] = []
    missing: list[str] = []
    if selection.labels:
        codes = parse_labels(selection.labels)
        names = ",".join(LABEL_NAMES[c] for c in codes)
        step(f"--labels {names}", df.filter(pl.col("label").is_in(codes)))
    if selection.generators:
        patterns = expand_patterns(selection.generators, "--generators")
        if not patterns:
            raise UsageError("--generators: no names given (the file is empty?)", "list at least one name")
        known = manifest.df.filter(is_gen).get_column("model_name").drop_nulls().unique().sort().to_list()
        matched, missing = match_names(patterns, known, "--generators", selection.allow_missing)
        for m in missing:
            reporter.warn(f"--generators {m!r} matches no generator in the source; going on without it")
        step(
            f"--generators ({len(matched)} matched)",
            df.filter(is_real | (is_gen & pl.col("model_name").is_in(matched))),
        )
    if selection.architectures:
        known = manifest.df.filter(is_gen).get_column("architecture").drop_nulls().unique().sort().to_list()
        archs, arch_missing = match_names(
            selection.architectures, known, "--architectures", selection.allow_missing
        )
        for m in arch_missing:
            reporter.warn(f"--architectures {m!r} matches no architecture in the source")
        step(
            f"--architectures {','.join(selection.architectures)}",
            df.filter(~is_gen | pl.col("architecture").is_in(archs)),
        )
    if selection.real_sources:
        mask = _glob_mask(df, "real_source", selection.real_sources)
        step(f"--real-sources {','.join(selection.real_sources)}", df.filter(~is_real | mask))
    if selection.exclude_nsfw:
        step("--exclude-nsfw", df.filter(~pl.col("nsfw_flag").fill_null(False)))
    if selection.licenses:
        _need_license_column(df, "--licenses")
        step(f"--licenses {','.join(selection.licenses)}", filter_licenses(df, include=selection.licenses))
    if selection.exclude_licenses:
        _need_license_column(df, "--exclude-licenses")
        step(
            f"--exclude-licenses {','.join(selection.exclude_licenses)}",
            filter_licenses(df, exclude=selection.exclude_licenses),
        )
    if selection.commercial_only:
        _need_license_column(df, "--commercial-only")
        step("--commercial-only", filter_licenses(df, commercial_only=True))
    if selection.where:
        step(f"--where {selection.where}", where_filter(df, selection.where))
    if selection.max_per_generator is not None:
        if selection.max_per_generator < 1:
            raise UsageError("--max-per-generator must be at least 1", "or leave it out for no cap")
        step(
            f"--max-per-generator {selection.max_per_generator}",
            cap_per_group(df, "model_name", selection.max_per_generator, selection.seed, mask=is_gen),
        )
    result = SelectionResult(
        manifest=manifest.with_df(
            df, step=None if selection.is_empty() else f"select {selection.describe()}"
        ),
        steps=steps,
        missing_generators=missing,
        matched_generators=matched,
    )
    if df.height == 0 and not allow_empty:
        raise_empty(manifest.df.height, steps)
    return result


def raise_empty(total: int, steps: Sequence[SelectionStep]) -> None:
    """EmptySelectionError naming the step that emptied the selection and every count on the way."""
    if not total:
        raise EmptySelectionError("the source has no rows", "check the source")
    culprit = next((s for s in steps if s.before and not s.after), None)
    counts = "; ".join(f"{s.name}: {s.before:,} → {s.after:,}" for s in steps)
    where = f" ({culprit.name} left no rows)" if culprit else ""
    raise EmptySelectionError(
        f"the selection is empty{where}: {total:,} rows in the source; {counts}",
        "loosen that filter; `cfx stats SOURCE --by model_name` shows what the source holds",
    )
