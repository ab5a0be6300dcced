"""Leak-free splits: every row of a group lands in one split, and the split proves it.

Pipeline: ``unit_keys`` (the unit that must not be shared: generator, architecture, family, real source or
any column; a row with none is its own unit) → ``group_ids`` (union–find over units, identical sha256,
pHash pairs within ``threshold`` from the exact multi-index search of ``cfx.pairs`` and identical
normalised prompts) → ``assign`` (a seeded hash of each group's key picks its split) → ``leak_proof``
(recomputes exact / near / prompt / unit overlaps between splits by a separate path: joins and a fresh
search) → summary.

Assignment rule (stable as data grows). A group's key is the smallest unit key of its rows; its position
``u = blake2b(seed, key) / 2**64`` on [0, 1) falls in one of the cumulative ranges
``[0, f1), [f1, f1+f2), …`` of the requested fractions. A group's split depends on nothing but its own key,
so adding shards or generators never moves an old group — unless new rows merge it with another group
whose key is smaller (such rows are counted as ``moved``: their own unit alone would have gone elsewhere).
Fractions hold in expectation for rows of every label × architecture stratum (each group is an
independent draw), so the achieved fractions are close when a stratum has many groups and coarse when a
few huge groups dominate; the summary reports the achieved fractions and per-split balance.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cfx.defaults import DEDUPE_THRESHOLD, FOLDS_MAX
from cfx.errors import EmptySelectionError, InputError, UsageError
from cfx.manifest import Manifest
from cfx.pairs import MAX_THRESHOLD, CodePairs, distinct_code_pairs
from cfx.progress import NullReporter, Reporter
from cfx.safenames import is_windows_device, slug
from cfx.schema import GENERATED, REAL
from cfx.select import expand_patterns, split_values

SPLIT_COLUMN = "assigned_split"
GROUP_COLUMN = "split_group"  # the group's key: rows with the same value are always in one split
UNIT_KINDS = ("generator", "architecture", "family", "real-source")
FRACTION_SUM_TOLERANCE = 1e-6
RESOLVE_MODES = ("merge", "drop")
GENERATED_SHARE_TOLERANCE = 0.05  # --resolve drop: a split's generated share vs the whole set's
# columns cfx reads its own meaning from: a split column of that name would break later commands
_HASH_AND_FACT_COLUMNS = ("image_data", "sha256", "phash", "dhash", "near_uniform", "hash_error", "license")


def reserved_columns() -> frozenset[str]:
    """Column names ``--column`` may never take: the manifest's own (``shard``, ``row``, ``label``…), the hash
    and byte-fact columns, and the group column split writes beside it."""
    from cfx.bytefacts import FACT_COLUMNS
    from cfx.schema import CORE_COLUMNS

    return frozenset((*CORE_COLUMNS, *_HASH_AND_FACT_COLUMNS, *FACT_COLUMNS, GROUP_COLUMN))


@dataclass(frozen=True)
class SplitOptions:
    names: tuple[str, ...] = ("train", "val", "test")
    fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    folds: int | None = None  # K group folds fold0…fold{K-1} (replaces names/fractions)
    by: tuple[str, ...] = ("generator",)
    exact: bool = True
    near: bool = True
    threshold: int = DEDUPE_THRESHOLD
    prompts: bool = False
    test_generators: tuple[str, ...] = ()  # names, globs or @file.txt
    test_architectures: tuple[str, ...] = ()
    test_real_sources: tuple[str, ...] = ()
    seed: int = 0
    balance: bool = False
    family_table: Path | None = None
    column: str = SPLIT_COLUMN
    overwrite_column: bool = False  # the manifest may already have ``column``: replace it
    resolve: str = "merge"  # how links between units are kept: merge groups, or drop rows (cfx.splitdrop)

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(f"fold{i}" for i in range(self.folds)) if self.folds else self.names

    @property
    def split_fractions(self) -> tuple[float, ...]:
        return (1.0 / self.folds,) * self.folds if self.folds else self.fractions

    @property
    def holdout_split(self) -> str:
        return "test" if "test" in self.names else self.names[-1]

    @property
    def has_holdouts(self) -> bool:
        return bool(self.test_generators or self.test_architectures or self.test_real_sources)

    def check(self) -> None:
        if self.folds is not None and not 2 <= self.folds <= FOLDS_MAX:
            raise UsageError(
                f"--folds {self.folds}: allowed 2 to {FOLDS_MAX:,}", "give --folds 5, for example"
            )
        if self.folds and self.has_holdouts:
            raise UsageError(
                "--folds cannot be combined with --test-generators/--test-architectures/--test-real-sources",
                "hold out with --names/--fractions, or drop the hold-outs",
            )
        names, fr = self.split_names, self.split_fractions
        self._check_names(names)
        if len(names) != len(fr):
            raise UsageError(
                f"--names has {len(names)} names but --fractions has {len(fr)} values",
                "give one fraction per split name",
            )
        if not all(math.isfinite(f) and f >= 0 for f in fr) or abs(sum(fr) - 1) > 1e-3:
            raise UsageError(
                f"--fractions {','.join(f'{f:g}' for f in fr)}: must be finite, >= 0 and sum to 1",
                "e.g. --fractions 0.8,0.1,0.1",
            )
        if not 0 <= self.threshold <= MAX_THRESHOLD:
            raise UsageError(
                f"--threshold {self.threshold}: must be between 0 and {MAX_THRESHOLD}",
                f"pHash distances are bits out of 64; the default is {DEDUPE_THRESHOLD}",
            )
        if not self.by:
            raise UsageError(
                "--by: give at least one unit", f"one of {', '.join(UNIT_KINDS)} or a column name"
            )
        if any(not b.strip() for b in self.by):
            raise UsageError("--by was given no value", f"one of {', '.join(UNIT_KINDS)} or a column name")
        if self.resolve not in RESOLVE_MODES:
            raise UsageError(f"--resolve {self.resolve!r}: unknown", f"one of {', '.join(RESOLVE_MODES)}")
        self._check_column()

    @staticmethod
    def _check_names(names: tuple[str, ...]) -> None:
        """Split names become file names (``--out DIR/<name>.parquet``) and values: safe and distinct."""
        if not names or not all(names):
            raise UsageError("--names: a split name is empty", "e.g. --names train,val,test")
        bad = [n for n in names if slug(n) != n or is_windows_device(n)]
        if bad:
            raise UsageError(
                f"--names {bad[0]!r}: not a safe file name",
                "use letters, digits, '.', '_' and '-' (not leading '.' or '-', at most 64 characters, "
                "not a Windows device name such as con or nul)",
            )
        folded = [n.lower() for n in names]
        if len(set(folded)) != len(folded):
            dup = next(n for n in names if folded.count(n.lower()) > 1)
            raise UsageError(
                f"--names {','.join(names)}: {dup!r} is given twice (ignoring case)",
                "give distinct names: they are file names, and some file systems ignore case",
            )

    def _check_column(self) -> None:
        if not self.column.strip():
            raise UsageError("--column was given no value", f"omit it for {SPLIT_COLUMN!r} or name a column")
        if self.column in reserved_columns():
            raise UsageError(
                f"--column {self.column}: cfx relies on that column",
                f"pick another name, e.g. {SPLIT_COLUMN}",
            )

    def check_against(self, columns: list[str]) -> None:
        """``--column`` may name a column the manifest has only with ``--overwrite-column``."""
        if self.column in columns and not self.overwrite_column:
            raise UsageError(
                f"--column {self.column}: the manifest already has that column",
                "pass --overwrite-column to replace it, or pick another name",
            )


@dataclass
class SplitResult:
    manifest: Manifest  # every input row with the split column (and hash columns when hashed)
    summary: dict[str, Any]
    parts: dict[str, Manifest] = field(default_factory=dict)  # one manifest per split


# --- units ---------------------------------------------------------------------------------------------
def read_family_table(extra: Path | None = None) -> list[tuple[str, str]]:
    """(glob, family) rows: ``extra``'s first (they override), then the shipped cfx/data/base_models.csv."""
    rows: list[tuple[str, str]] = []
    sources: list[tuple[str, str]] = []
    if extra is not None:
        try:
            sources.append((str(extra), Path(extra).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--family-table {extra}: cannot read it ({exc})", "pass a CSV file") from None
    sources.append(("base_models.csv", resources.files("cfx.data").joinpath("base_models.csv").read_text()))
    for origin, text in sources:
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        header = [h.strip() for h in lines[0].split(",")] if lines else []
        if "pattern" not in header or "family" not in header:
            raise UsageError(
                f"--family-table {origin}: needs columns pattern,family (got {','.join(header) or 'nothing'})",
                "write a CSV header `pattern,family` and one glob per row",
            )
        ip, ifam = header.index("pattern"), header.index("family")
        for line in lines[1:]:
            cells = [c.strip() for c in line.split(",")]
            if len(cells) > max(ip, ifam) and cells[ip] and cells[ifam]:
                rows.append((cells[ip].lower(), cells[ifam]))
    return rows


def family_of(name: str, table: list[tuple[str, str]]) -> str:
    low = name.lower()
    for pattern, family in table:
        if fnmatch.fnmatchcase(low, pattern):
            return family
    return name.split("/", 1)[0] if "/" in name else name


def _column(df: pl.DataFrame, name: str) -> pl.Series:
    if name not in df.columns:
        raise InputError(
            f"--by {name}: the manifest has no column {name!r}",
            f"pick one of {', '.join(UNIT_KINDS)} or an existing column ({', '.join(df.columns[:12])}…)",
        )
    return _blank_to_null(df.get_column(name).cast(pl.String))


def _blank_to_null(s: pl.Series) -> pl.Series:
    return pl.select(pl.when(s == "").then(None).otherwise(s).alias(s.name)).to_series()


def _side(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    label = df.get_column("label").cast(pl.Int64).to_numpy()
    return label == GENERATED, label == REAL


def unit_keys(df: pl.DataFrame, options: SplitOptions) -> list[pl.Series]:
    """One string series per unit kind in ``--by`` (null where it does not apply to the row's side)."""
    gen, real = _side(df)
    out: list[pl.Series] = []
    table = read_family_table(options.family_table) if "family" in options.by else []
    for kind in options.by:
        if kind == "generator":
            values, mask = _column(df, "model_name"), gen
        elif kind == "architecture":
            values, mask = _column(df, "architecture"), gen
        elif kind == "family":
            names = _column(df, "model_name")
            fam = {n: family_of(n, table) for n in names.drop_nulls().unique().to_list()}
            values, mask = names.replace_strict(fam, default=None, return_dtype=pl.String), gen
        elif kind == "real-source":
            values, mask = _column(df, "real_source"), real
        else:
            values, mask = _column(df, kind), np.ones(df.height, bool)
        keys = pl.select(pl.when(pl.Series(mask)).then(f"{kind}=" + values).otherwise(None)).to_series()
        out.append(keys.alias(kind))
    return out


def own_keys(df: pl.DataFrame, units: list[pl.Series]) -> pl.Series:
    """Each row's own unit key: the smallest of its unit keys, else its image (``image=shard:row``)."""
    image = "image=" + df.get_column("shard") + ":" + df.get_column("row").cast(pl.String)
    if not units:
        return image.alias("own")
    frame = pl.DataFrame(units)
    smallest = frame.select(pl.min_horizontal(pl.all())).to_series()
    return smallest.fill_null(image).alias("own")


def normalise_prompts(prompts: pl.Series) -> pl.Series:
    """Case-folded, punctuation and whitespace runs collapsed to one space; empty → null."""
    s = prompts.cast(pl.String)
    uniq = s.unique()  # prompts repeat (a generator reuses its templates): normalise each text once
    norm = _blank_to_null(
        uniq.str.to_lowercase().str.replace_all(r"[^\p{L}\p{N}]+", " ").str.strip_chars().alias("n")
    )
    table = pl.DataFrame({"p": uniq, "n": norm}).drop_nulls("p")
    out = pl.DataFrame({"p": s}).join(table, on="p", how="left", maintain_order="left")
    return out.get_column("n").alias(prompts.name)


# --- grouping -----------------------------------------------------------------------------------------
def _dense(values: pl.Series) -> np.ndarray:
    """An integer id per distinct non-null value (-1 for null); ids are arbitrary but consistent."""
    ids, _ = _dense_first(values)
    return ids


def _dense_first(values: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(id per row, -1 for null; index of one row per id). Ids come from the values' 64-bit hashes when
    those are distinct for distinct values (checked: a collision falls back to a categorical)."""
    null = values.is_null().to_numpy()
    h = values.hash().to_numpy()
    uniq, first, ids = np.unique(h, return_index=True, return_inverse=True)
    if uniq.size != values.n_unique():  # two values share a hash (or one shares the null's)
        cat = values.cast(pl.String).cast(pl.Categorical).to_physical().cast(pl.Int64).fill_null(-1)
        _, first, ids = np.unique(cat.to_numpy(), return_index=True, return_inverse=True)
    ids = ids.reshape(-1).astype(np.int64)
    if null.any():
        # the null's id is dropped and the ids above it close the gap
        nid = int(ids[np.flatnonzero(null)[0]])
        first = np.delete(first, nid)
        ids = np.where(null, -1, ids - (ids > nid))
    return ids, first


def near_eligible(df: pl.DataFrame) -> np.ndarray:
    """Rows matched perceptually (as dedupe does): a pHash, not near-uniform, no hash error."""
    ok = df.get_column("phash").is_not_null()
    if "near_uniform" in df.columns:
        ok &= ~df.get_column("near_uniform").fill_null(False)
    if "hash_error" in df.columns:
        ok &= df.get_column("hash_error").is_null()
    return ok.to_numpy()


def group_ids(
    df: pl.DataFrame,
    units: list[pl.Series],
    options: SplitOptions,
    *,
    workers: int = 1,
    prompts: pl.Series | None = None,
) -> tuple[np.ndarray, NearPairs | None]:
    """Connected components of rows joined by a shared unit, sha256, near pHash or prompt.

    Returns (component id per row, the near code pairs searched). Graph: one node per row plus one per distinct
    key value; a row links to each of its keys; near pairs link their two code nodes. ``prompts``: the
    normalised prompts when already computed.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = df.height
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    offset = n

    def link(ids: np.ndarray, *, keep_single: bool = False) -> int:
        nonlocal offset
        rows = np.flatnonzero(ids >= 0)
        if not keep_single and rows.size:  # a value only one row has joins nothing: no edge for it
            shared = np.bincount(ids[rows]) > 1
            rows = rows[shared[ids[rows]]]
        src.append(rows)
        dst.append(ids[rows] + offset)
        base, offset = offset, offset + (int(ids.max()) + 1 if rows.size else 0)
        return base

    for keys in units:
        link(_dense(keys))
    if options.exact:
        link(_dense(df.get_column("sha256")))
    if options.prompts and "prompt" in df.columns:
        link(_dense(prompts if prompts is not None else normalise_prompts(df.get_column("prompt"))))
    found = None
    if options.near:
        eligible = near_eligible(df)
        codes = df.get_column("phash").fill_null(0).to_numpy().astype(np.uint64)
        uniq, inverse = np.unique(codes[eligible], return_inverse=True)
        code_id = np.full(n, -1, np.int64)
        code_id[eligible] = inverse
        base = link(code_id, keep_single=True)  # near pairs join codes one row has
        pairs = distinct_code_pairs(uniq, options.threshold, workers=workers)
        found = NearPairs(uniq, pairs)
        src.append(pairs.a + base)
        dst.append(pairs.b + base)
    a = np.concatenate(src) if src else np.zeros(0, np.int64)
    b = np.concatenate(dst) if dst else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(offset, offset))
    _, labels = connected_components(graph, directed=False)
    return labels[:n].astype(np.int64), found


@dataclass(frozen=True)
class NearPairs:
    """The distinct eligible codes and every pair of them within the threshold (exact search)."""

    codes: np.ndarray
    pairs: CodePairs


# --- assignment ----------------------------------------------------------------------------------------
def key_positions(keys: list[str], seed: int) -> np.ndarray:
    """Seeded position of each key on [0, 1): blake2b of (seed, key), the same on every machine."""
    prefix = hashlib.blake2b(f"{seed}\x00split\x00".encode(), digest_size=8)

    def digest(key: str) -> bytes:
        h = prefix.copy()  # the shared prefix is hashed once
        h.update(key.encode())
        return h.digest()

    raw = b"".join(map(digest, keys))
    return np.frombuffer(raw, "<u8") / 2.0**64


def split_of(positions: np.ndarray, fractions: tuple[float, ...]) -> np.ndarray:
    """Index of the cumulative fraction range holding each position."""
    edges = np.cumsum(np.asarray(fractions, np.float64))
    edges[-1] = np.inf  # rounding never drops a position past the last split
    return np.searchsorted(edges, positions, side="right")


def _holdout_rows(df: pl.DataFrame, options: SplitOptions) -> np.ndarray:
    from cfx.select import match_names

    gen, real = _side(df)
    held = np.zeros(df.height, bool)
    for values, column, mask, option in (
        (options.test_generators, "model_name", gen, "--test-generators"),
        (options.test_architectures, "architecture", gen, "--test-architectures"),
        (options.test_real_sources, "real_source", real, "--test-real-sources"),
    ):
        patterns = expand_patterns(split_values(values), option)
        if not patterns:
            continue
        col = _column(df, column)
        known = col.drop_nulls().unique().sort().to_list()
        names, _ = match_names(patterns, known, option, allow_missing=False)
        held |= mask & col.is_in(names).fill_null(False).to_numpy()
    return held


def assign(
    df: pl.DataFrame, comp: np.ndarray, own: pl.Series, options: SplitOptions
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Split index (``__split``) and group key (``__key``) per row, and the merge counts.

    Integer ids throughout: one per distinct own key and one per group; a group's key (its smallest own
    key) is found by a group-by, every count is a numpy reduction.
    """
    names, fractions = options.split_names, options.split_fractions
    held = _holdout_rows(df, options)
    own_id, first = _dense_first(own)
    keys = own.gather(first)  # keys[own_id] is the row's own key
    _, gid = np.unique(comp, return_inverse=True)  # groups numbered 0…G-1
    gid = gid.reshape(-1).astype(np.int64)
    n_groups = int(gid.max()) + 1 if gid.size else 0
    smallest = (
        pl.DataFrame({"g": gid, "own": own, "id": own_id})
        .group_by("g")
        .agg(pl.col("id").sort_by("own").first())
    )
    gkey = np.empty(n_groups, np.int64)
    gkey[smallest.get_column("g").to_numpy()] = smallest.get_column("id").to_numpy()
    rows = np.bincount(gid, minlength=n_groups)
    gheld = np.bincount(gid, weights=held, minlength=n_groups) > 0
    width = np.int64(max(keys.len(), 1))
    pair = np.sort(gid * width + own_id)  # (group, own key)
    distinct = np.ones(pair.size, bool)
    distinct[1:] = pair[1:] != pair[:-1]
    units = np.bincount(pair[distinct] // width, minlength=n_groups)
    # a group's key is an own key, so one hash per distinct own key serves both
    own_split = split_of(key_positions(keys.to_list(), options.seed), fractions)
    split = own_split[gkey]
    if options.has_holdouts:
        split = np.where(gheld, names.index(options.holdout_split), split)
    assigned = split[gid]
    alone = own_split[own_id]
    merged = units > 1
    counts = {
        "groups": n_groups,
        "merged_groups": int(merged.sum()),
        "rows_in_merged_groups": int(rows[merged].sum()),
        "largest_group_rows": int(rows.max(initial=0)),
        "largest_groups": _largest_groups(rows, units, split, keys.gather(gkey), names),
        "moved_rows": int(((alone != assigned) & ~held).sum()),
        "held_out_rows": int(held.sum()),
        "held_out_group_rows": int(rows[gheld].sum()),
    }
    out = pl.DataFrame({"__split": assigned, "__key": keys.gather(gkey[gid])})
    return out, counts


def _largest_groups(
    rows: np.ndarray, units: np.ndarray, split: np.ndarray, key: pl.Series, names: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The five largest groups (ties by key)."""
    if not rows.size:
        return []
    k = min(5, rows.size)
    fifth = np.partition(rows, rows.size - k)[rows.size - k]
    top = np.flatnonzero(rows >= fifth)
    frame = pl.DataFrame(
        {
            "key": key.gather(top),
            "rows": rows[top],
            "units": units[top],
            "split": np.asarray(names)[split[top]],
        }
    )
    return frame.sort(["rows", "key"], descending=[True, False]).head(5).to_dicts()


# --- the leak proof (independent of the assignment path) -----------------------------------------------
def leak_proof(
    df: pl.DataFrame,
    column: str,
    options: SplitOptions,
    units: list[pl.Series],
    near: NearPairs | None = None,
    *,
    prompts: pl.Series | None = None,
) -> dict[str, int]:
    """Values seen in more than one split, recomputed from the output column alone: sha256, prompt, each
    unit kind (by joins) and near pHash pairs (a pair leaks when its codes' splits differ). ``near``: the
    pairs of an exact search already run over the same codes (else the search runs again); ``prompts``:
    the normalised prompts (else normalised again).
    """
    split = df.get_column(column)
    out: dict[str, int] = {}

    def shared(values: pl.Series) -> int:
        t = pl.DataFrame({"v": values, "s": split}).drop_nulls()
        return int(t.group_by("v").agg(pl.col("s").n_unique()).filter(pl.col("s") > 1).height)

    if options.exact:
        out["exact"] = shared(df.get_column("sha256"))
    if options.prompts and "prompt" in df.columns:
        out["prompt"] = shared(prompts if prompts is not None else normalise_prompts(df.get_column("prompt")))
    for keys in units:
        out[f"unit:{keys.name}"] = shared(keys)
    if options.near:
        out["near"] = near_leaks(df, split, options.threshold, near)
    return out


def near_leaks(df: pl.DataFrame, split: pl.Series, threshold: int, near: NearPairs | None = None) -> int:
    """Distinct codes or code pairs (within ``threshold``) that occur in two splits."""
    eligible = near_eligible(df)
    codes = df.get_column("phash").fill_null(0).to_numpy().astype(np.uint64)[eligible]
    sid = _dense(split)[eligible]
    if not codes.size:
        return 0
    uniq, inverse = np.unique(codes, return_inverse=True)
    masks = np.zeros(uniq.size, np.uint64)
    np.bitwise_or.at(masks, inverse, np.left_shift(np.uint64(1), (sid % 64).astype(np.uint64)))
    single = (masks & (masks - np.uint64(1))) == 0
    if near is not None and np.array_equal(near.codes, uniq):
        pairs = near.pairs
    else:
        pairs = distinct_code_pairs(uniq, threshold)
    cross = masks[pairs.a] != masks[pairs.b]
    cross |= ~single[pairs.a] | ~single[pairs.b]
    return int((~single).sum() + cross.sum())


# --- summary ---------------------------------------------------------------------------------------------
def split_summary(df: pl.DataFrame, column: str, names: tuple[str, ...]) -> list[dict[str, Any]]:
    total = max(df.height, 1)
    out = []
    for name in names:
        part = df.filter(pl.col(column) == name)
        gen = part.filter(pl.col("label") == GENERATED)
        real = part.filter(pl.col("label") == REAL)

        def distinct(frame: pl.DataFrame, col: str) -> int:
            return int(frame.get_column(col).drop_nulls().n_unique()) if col in frame.columns else 0

        arch = (
            part.group_by("architecture").len().sort("architecture", nulls_last=True).rows()
            if "architecture" in part.columns
            else []
        )
        out.append(
            {
                "split": name,
                "rows": part.height,
                "fraction": round(part.height / total, 4),
                "generated": gen.height,
                "real": real.height,
                "generated_share": round(gen.height / part.height, 4) if part.height else None,
                "generators": distinct(gen, "model_name"),
                "real_sources": distinct(real, "real_source"),
                "architectures": distinct(part, "architecture"),
                "by_architecture": {str(a): int(c) for a, c in arch},
            }
        )
    return out


# --- the whole command ------------------------------------------------------------------------------------
def _hash(manifest: Manifest, options: SplitOptions, reporter: Reporter, **hash_kw: Any) -> Manifest:
    if not (options.exact or options.near):
        return manifest
    from cfx.hashing import hash_manifest

    return hash_manifest(manifest, reporter=reporter, **hash_kw).manifest


def _rebalance(
    df: pl.DataFrame, manifest: Manifest, options: SplitOptions, reporter: Reporter
) -> pl.DataFrame:
    from cfx.balance import BalanceOptions, balance

    parts = []
    for name in options.split_names:
        part = df.filter(pl.col(options.column) == name)
        if part.filter(pl.col("label") == GENERATED).height and part.filter(pl.col("label") == REAL).height:
            part = balance(manifest.with_df(part), BalanceOptions(seed=options.seed), reporter).manifest.df
        parts.append(part)
    return pl.concat(parts, how="vertical_relaxed")


def split(
    manifest: Manifest,
    options: SplitOptions | None = None,
    *,
    workers: int = 2,
    use_cache: bool = True,
    skip_bad: bool = False,
    reporter: Reporter | None = None,
) -> SplitResult:
    """Assign every row to one split (column ``options.column``); see the module doc."""
    import time

    options = options or SplitOptions()
    options.check()
    reporter = reporter or NullReporter()
    _check_input(manifest, options)
    t0 = time.perf_counter()
    hashed = _hash(manifest, options, reporter, workers=workers, use_cache=use_cache, skip_bad=skip_bad)
    df = hashed.df
    t1 = time.perf_counter()
    units = unit_keys(df, options)
    prompts = (
        normalise_prompts(df.get_column("prompt")) if options.prompts and "prompt" in df.columns else None
    )
    linked = options if options.resolve == "merge" else _units_only(options)
    comp, near = group_ids(df, units, linked, workers=workers, prompts=prompts)
    _check_folds(options, comp)
    sidx, counts = assign(df, comp, own_keys(df, units), options)
    names = options.split_names
    df = df.with_columns(
        sidx.get_column("__split")
        .replace_strict(dict(enumerate(names)), return_dtype=pl.String)
        .alias(options.column),
        sidx.get_column("__key").alias(GROUP_COLUMN),
    )
    dropped: dict[str, Any] = {}
    if options.resolve == "drop":
        df, dropped, near = _drop_crossing(
            df, sidx.get_column("__split").to_numpy(), options, prompts, workers
        )
        units, prompts = unit_keys(df, options), _kept(prompts, dropped)
    t2 = time.perf_counter()
    proof = leak_proof(df, options.column, options, units, near, prompts=prompts)
    t3 = time.perf_counter()
    if options.balance:
        df = _rebalance(df, hashed, options, reporter)
    step = _describe(options)
    out = hashed.with_df(df, step=step)
    summary = {
        "rows": df.height,
        "options": step,
        "column": options.column,
        "splits": split_summary(df, options.column, names),
        "requested_fractions": dict(zip(names, options.split_fractions, strict=True)),
        **counts,
        "near_code_pairs": len(near.pairs) if near else 0,
        **({"dropped": _public(dropped)} if dropped else {}),
        "leak_proof": proof,
        "leak_free": not any(proof.values()),
        "timings": {"hash_s": round(t1 - t0, 3), "split_s": round(t2 - t1, 3), "proof_s": round(t3 - t2, 3)},
    }
    if options.resolve == "drop":
        summary["generated_share"] = share_report(summary["splits"], dropped["overall_generated_share"])
    parts = {name: out.with_df(df.filter(pl.col(options.column) == name)) for name in names}
    return SplitResult(out, summary, parts)


def _check_input(manifest: Manifest, options: SplitOptions) -> None:
    if "label" not in manifest.df.columns:
        raise InputError("the manifest has no label column", "split needs label (0 real, 1 generated)")
    if not manifest.df.height:
        raise EmptySelectionError("the source has no rows to split", "check the source and its filters")
    options.check_against(manifest.df.columns)


def _units_only(options: SplitOptions) -> SplitOptions:
    """Group by units alone: links by bytes, pHash and prompt are resolved by dropping rows instead."""
    from dataclasses import replace

    return replace(options, exact=False, near=False, prompts=False)


def _drop_crossing(
    df: pl.DataFrame, split_idx: np.ndarray, options: SplitOptions, prompts: pl.Series | None, workers: int
) -> tuple[pl.DataFrame, dict[str, Any], NearPairs | None]:
    """--resolve drop (cfx.splitdrop): the kept rows, what was dropped, and the near pairs searched."""
    from cfx.splitdrop import REASONS, resolve

    values: list[tuple[str, np.ndarray]] = []
    if options.exact:
        values.append(("exact", _dense(df.get_column("sha256"))))
    if prompts is not None:
        values.append(("prompt", _dense(prompts)))
    code_id = pair_a = pair_b = None
    near = None
    if options.near:
        eligible = near_eligible(df)
        codes = df.get_column("phash").fill_null(0).to_numpy().astype(np.uint64)
        uniq, inverse = np.unique(codes[eligible], return_inverse=True)
        code_id = np.full(df.height, -1, np.int64)
        code_id[eligible] = inverse
        near = NearPairs(uniq, distinct_code_pairs(uniq, options.threshold, workers=workers))
        pair_a, pair_b = near.pairs.a, near.pairs.b
    generated = df.get_column("label").cast(pl.Int64).to_numpy() == GENERATED
    pointer = (df.get_column("shard") + ":" + df.get_column("row").cast(pl.String)).to_numpy()

    def order(rows: np.ndarray) -> np.ndarray:
        return key_positions([f"drop\x00{p}" for p in pointer[rows].tolist()], options.seed)

    drop = resolve(
        split_idx,
        options.split_fractions,
        value_ids=values,
        code_id=code_id,
        pair_a=pair_a,
        pair_b=pair_b,
        generated=generated,
        tolerance=GENERATED_SHARE_TOLERANCE,
        order=order,
    )
    names = np.asarray(options.split_names)
    gone = ~drop.keep
    by_split = {
        str(n): {
            "generated": int((gone & generated & (split_idx == i)).sum()),
            "real": int((gone & ~generated & (split_idx == i)).sum()),
        }
        for i, n in enumerate(names)
    }
    by_reason = {r: int((drop.reason == i + 1).sum()) for i, r in enumerate(REASONS)}
    info = {
        "rows": int(gone.sum()),
        "by_split": by_split,
        "by_reason": by_reason,
        "overall_generated_share": round(float(generated.mean()), 4),
        "_keep": drop.keep,
    }
    return df.filter(pl.Series(drop.keep)), info, _kept_pairs(near, code_id, drop.keep)


def _kept_pairs(near: NearPairs | None, code_id: np.ndarray | None, keep: np.ndarray) -> NearPairs | None:
    """The near pairs among the kept rows' codes: the exact search's pairs restricted to them (a search over
    a subset finds exactly the pairs of the whole whose two codes are both in the subset)."""
    if near is None or code_id is None:
        return None
    alive = np.zeros(near.codes.size, bool)
    alive[code_id[keep & (code_id >= 0)]] = True
    new_id = np.cumsum(alive) - 1
    both = alive[near.pairs.a] & alive[near.pairs.b]
    p = near.pairs
    pairs = CodePairs(new_id[p.a[both]], new_id[p.b[both]], p.distance[both])
    return NearPairs(near.codes[alive], pairs)


def _kept(values: pl.Series | None, dropped: dict[str, Any]) -> pl.Series | None:
    return None if values is None else values.filter(pl.Series(dropped["_keep"]))


def _public(dropped: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dropped.items() if not k.startswith("_")}


def share_report(splits: list[dict[str, Any]], overall: float) -> dict[str, Any]:
    """Each split's generated share beside the whole set's, and whether all are within the tolerance."""
    gaps = {
        s["split"]: None if s["generated_share"] is None else round(s["generated_share"] - overall, 4)
        for s in splits
    }
    return {
        "overall": overall,
        "tolerance": GENERATED_SHARE_TOLERANCE,
        "gap": gaps,
        "within_tolerance": all(
            g is None or abs(g) <= GENERATED_SHARE_TOLERANCE + 1e-9 for g in gaps.values()
        ),
    }


def _check_folds(options: SplitOptions, comp: np.ndarray) -> None:
    """More folds than groups leaves folds empty: a usage error naming the number of groups."""
    if not options.folds:
        return
    groups = int(np.unique(comp).size)
    if options.folds > groups:
        raise UsageError(
            f"--folds {options.folds}: the rows form only {groups:,} group(s), so some folds would be empty",
            f"give at most --folds {groups}" if groups >= 2 else "select rows of more than one unit",
        )


def _describe(o: SplitOptions) -> str:
    parts = [
        "split",
        f"--folds {o.folds}"
        if o.folds
        else f"--names {','.join(o.names)} --fractions " + ",".join(f"{f:g}" for f in o.fractions),
    ]
    parts += [f"--by {b}" for b in o.by]
    parts.append(f"--threshold {o.threshold}" if o.near else "--no-near")
    if not o.exact:
        parts.append("--no-exact")
    if o.prompts:
        parts.append("--prompts")
    for flag, v in (
        ("--test-generators", o.test_generators),
        ("--test-architectures", o.test_architectures),
        ("--test-real-sources", o.test_real_sources),
    ):
        if v:
            parts.append(f"{flag} {','.join(v)}")
    if o.resolve != "merge":
        parts.append(f"--resolve {o.resolve}")
    if o.balance:
        parts.append("--balance")
    parts.append(f"--seed {o.seed}")
    return " ".join(parts)


def write_parts(
    result: SplitResult,
    folder: Path,
    *,
    overwrite: bool = False,
    warn: Callable[[str], None] | None = None,
    lineage: dict[str, Any] | None = None,
) -> list[Path]:
    """One manifest per split, ``folder/<split>.parquet``: the folder appears with all of them or not at all
    (``cfx.outputs.atomic_folder``; an existing one is replaced as a whole only with ``overwrite``).
    ``lineage``: this command's entry (cfx.lineage), added to each part."""
    from cfx.outputs import atomic_folder

    with atomic_folder(Path(folder), overwrite=overwrite, option="--out", warn=warn) as tmp:
        for name, part in result.parts.items():
            (part.with_lineage(lineage) if lineage else part).write(tmp / f"{name}.parquet")
    return [Path(folder) / f"{name}.parquet" for name in result.parts]
