"""Find exact, perceptual and cross-label duplicates in a manifest; keep one row per group.

Pipeline: ``hash_manifest`` (cached sha256 + pHash per row) → ``distinct_code_pairs`` (every pair of
distinct pHashes within ``threshold``, exact) → ``group_rows`` (leader clustering: no chaining) → survivors,
label conflicts, report tables.

Grouping. Rows are visited in survivor-priority order (``--keep``, ties broken by shard then row). An
unassigned row becomes a group's leader (its survivor) and takes every unassigned row of its scope that is
an exact copy or within ``threshold`` of it. So every member is within ``threshold`` of its survivor
(group diameter <= 2 × threshold), A~B~C chains do not merge A and C, no two survivors are duplicates of
each other, and running dedupe again on its output removes nothing.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from cfx.defaults import DEDUPE_THRESHOLD as DEFAULT_THRESHOLD
from cfx.defaults import KEEP_POLICIES, SCOPES
from cfx.errors import UsageError
from cfx.hashing import hash_manifest
from cfx.manifest import Manifest
from cfx.outputs import atomic_folder, write_atomic
from cfx.pairs import MAX_THRESHOLD, distinct_code_pairs
from cfx.progress import NullReporter, Reporter
from cfx.schema import GENERATED, LABEL_NAMES, REAL
from cfx.sources import natural_key
from cfx.stats import NULL_VALUE

if TYPE_CHECKING:
    from cfx.engine import ShardEngine

CONFLICT_MODES = ("drop", "keep", "report")
STAR_LIMIT = 200  # identical-code groups larger than this are listed as a star in pairs.parquet

PAIR_SCHEMA = {
    "shard_a": pl.String,
    "row_a": pl.Int64,
    "shard_b": pl.String,
    "row_b": pl.Int64,
    "distance": pl.UInt8,
    "kind": pl.String,
    "cross_label": pl.Boolean,
    "same_group": pl.Boolean,
}
GROUP_SCHEMA = {
    "group_id": pl.Int64,
    "shard": pl.String,
    "row": pl.Int64,
    "survivor": pl.Boolean,
    "survivor_shard": pl.String,
    "survivor_row": pl.Int64,
    "distance": pl.UInt8,
    "kind": pl.String,
    "label": pl.Int8,
    "model_name": pl.String,
    "conflict": pl.Boolean,
    "action": pl.String,
    "reason": pl.String,
}


@dataclass(frozen=True)
class DedupeOptions:
    exact: bool = True
    near: bool = True
    threshold: int = DEFAULT_THRESHOLD
    keep: str = "first"
    scope: str = "all"
    conflicts: str = "drop"

    def check(self) -> None:
        if not (self.exact or self.near):
            raise UsageError("nothing to match", "give --exact, --near or both (the default)")
        if not 0 <= self.threshold <= MAX_THRESHOLD:
            raise UsageError(
                f"--threshold {self.threshold}: must be between 0 and {MAX_THRESHOLD}",
                f"pHash distances are bits out of 64; the default is {DEFAULT_THRESHOLD}",
            )
        for name, value, allowed in (
            ("--keep", self.keep, KEEP_POLICIES),
            ("--scope", self.scope, SCOPES),
            ("--conflicts", self.conflicts, CONFLICT_MODES),
        ):
            if value not in allowed:
                raise UsageError(f"{name} {value!r}: unknown", f"pick one of: {', '.join(allowed)}")


@dataclass
class Grouping:
    """Result of ``group_rows``: per-row arrays over the manifest's rows (positions 0..n-1)."""

    group: np.ndarray  # int64 group id, -1 for rows in no group
    leader: np.ndarray  # int64 position of the row's survivor, -1 for rows in no group
    distance: np.ndarray  # uint8 distance to the survivor
    exact: np.ndarray  # bool: byte-identical to the survivor
    pairs: dict[str, np.ndarray]  # a, b (positions, a < b), distance, exact, cross_label
    conflict_rows: np.ndarray  # bool: row is in a cross-label pair
    pairs_truncated: bool = False


@dataclass
class DedupeResult:
    kept: Manifest
    pairs: pl.DataFrame
    groups: pl.DataFrame
    summary: dict[str, Any]
    hashed: Manifest  # every input row with hash columns (for the gallery)
    removed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


# --- priorities and scopes --------------------------------------------------------------------------
def priority(df: pl.DataFrame, keep: str) -> np.ndarray:
    """Rank of each row as a survivor (0 = kept first). Ties: shard in natural order, then row."""
    shards = sorted(df.get_column("shard").unique().to_list(), key=natural_key)
    shard_rank = {s: i for i, s in enumerate(shards)}
    keys: list[np.ndarray] = [
        df.get_column("row").to_numpy(),
        np.array([shard_rank[s] for s in df.get_column("shard").to_list()], np.int64),
    ]

    def col(name: str) -> np.ndarray:
        if name not in df.columns:
            return np.zeros(df.height, np.int64)
        return df.get_column(name).cast(pl.Int64).fill_null(0).to_numpy()

    if keep in ("largest", "smallest"):
        sign = -1 if keep == "largest" else 1
        keys += [sign * col("num_bytes"), sign * col("width") * col("height")]
    elif keep in ("prefer-real", "prefer-generated"):
        want = REAL if keep == "prefer-real" else GENERATED
        keys.append((col("label") != want).astype(np.int64))
    order = np.lexsort(keys)  # last key is primary
    rank = np.empty(df.height, np.int64)
    rank[order] = np.arange(df.height)
    return rank


def scope_ids(df: pl.DataFrame, scope: str) -> np.ndarray:
    if scope == "all":
        return np.zeros(df.height, np.int64)
    label = df.get_column("label").cast(pl.String).fill_null("?")
    if scope == "within-label":
        key = label
    else:  # within-generator: the model for generated rows, the source for real ones
        model = df.get_column("model_name").fill_null("") if "model_name" in df.columns else label
        source = df.get_column("real_source").fill_null("") if "real_source" in df.columns else label
        key = pl.select(
            pl.concat_str(
                [
                    pl.lit(label),
                    pl.when(pl.lit(label) == str(REAL)).then(pl.lit(source)).otherwise(pl.lit(model)),
                ],
                separator=":",
            )
        ).to_series()
    return key.rank("dense").cast(pl.Int64).to_numpy()


def _dense_ids(values: pl.Series) -> np.ndarray:
    """Integer id per distinct non-null value, -1 for null."""
    ids = values.rank("dense").cast(pl.Int64).fill_null(0).to_numpy() - 1
    return ids


# --- grouping ----------------------------------------------------------------------------------------
def group_rows(
    *,
    sha_id: np.ndarray,
    code_id: np.ndarray,
    code_pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    rank: np.ndarray,
    scope: np.ndarray,
    label: np.ndarray,
    exact: bool = True,
    near: bool = True,
) -> Grouping:
    """Leader clustering over rows (see module doc).

    ``sha_id``: id of each row's bytes (-1: none); ``code_id``: id of its distinct pHash (-1: not matched
    perceptually); ``code_pairs``: (a, b, distance) between distinct code ids.
    """
    n = rank.size
    by_rank = np.argsort(rank, kind="stable")
    # only rows with a possible partner take part (most rows have none): shared bytes, shared code, or a
    # code with a neighbour
    sha_multi = _shared(sha_id) if exact else np.zeros(n, bool)
    code_multi = _shared(code_id) if near else np.zeros(n, bool)
    if near and code_pairs[0].size:
        has_nbr = np.zeros(int(code_id.max()) + 1, bool)
        has_nbr[code_pairs[0]] = True
        has_nbr[code_pairs[1]] = True
        code_multi |= (code_id >= 0) & has_nbr[np.maximum(code_id, 0)]
    involved = sha_multi | code_multi
    sha_rows: dict[int, list[int]] = defaultdict(list)
    code_rows: dict[int, list[int]] = defaultdict(list)
    for pos in by_rank[involved[by_rank]].tolist():
        if sha_multi[pos]:
            sha_rows[int(sha_id[pos])].append(pos)
        if code_multi[pos]:
            code_rows[int(code_id[pos])].append(pos)
    nbrs: dict[int, list[tuple[int, int]]] = defaultdict(list)
    if near:
        for a, b, d in zip(*(x.tolist() for x in code_pairs), strict=True):
            nbrs[a].append((b, d))
            nbrs[b].append((a, d))

    group = np.full(n, -1, np.int64)
    leader = np.full(n, -1, np.int64)
    dist = np.zeros(n, np.uint8)
    same = np.zeros(n, bool)
    assigned = np.zeros(n, bool)
    next_group = 0
    for pos in by_rank[involved[by_rank]].tolist():
        if assigned[pos]:
            continue
        assigned[pos] = True
        members: list[tuple[int, int]] = []
        lists: list[tuple[dict[int, list[int]], int, int]] = []
        if exact and sha_id[pos] >= 0 and int(sha_id[pos]) in sha_rows:
            lists.append((sha_rows, int(sha_id[pos]), 0))
        if near and code_id[pos] >= 0:
            c = int(code_id[pos])
            lists.append((code_rows, c, 0))
            lists.extend((code_rows, c2, d) for c2, d in nbrs.get(c, ()))
        for table, key, d in lists:
            found = table.get(key)
            if not found:
                continue
            rows = found
            for other in rows:
                if not assigned[other] and scope[other] == scope[pos]:
                    assigned[other] = True
                    members.append((other, d))
            table[key] = [r for r in rows if not assigned[r]]
        if not members:
            continue
        g = next_group
        next_group += 1
        group[pos], leader[pos] = g, pos
        same[pos] = True
        for other, d in members:
            group[other], leader[other] = g, pos
            is_exact = sha_id[other] >= 0 and sha_id[other] == sha_id[pos]
            same[other] = is_exact
            dist[other] = 0 if is_exact else d
    pairs, truncated = _row_pairs(
        sha_id,
        np.where(sha_multi, sha_id, -1),
        np.where(code_multi, code_id, -1),
        code_pairs,
        scope,
        label,
        exact=exact,
        near=near,
        rank=rank,
    )
    conflict_rows = np.zeros(n, bool)
    cross = pairs["cross_label"]
    conflict_rows[pairs["a"][cross]] = True
    conflict_rows[pairs["b"][cross]] = True
    return Grouping(group, leader, dist, same, pairs, conflict_rows, truncated)


def _shared(ids: np.ndarray) -> np.ndarray:
    """Rows whose id (>= 0) is shared with another row."""
    valid = ids >= 0
    if not valid.any():
        return valid
    counts = np.bincount(ids[valid])
    return valid & (counts[np.maximum(ids, 0)] > 1)


def _row_pairs(
    sha_id: np.ndarray,
    sha_list: np.ndarray,
    code_id: np.ndarray,
    code_pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    scope: np.ndarray,
    label: np.ndarray,
    *,
    exact: bool,
    near: bool,
    rank: np.ndarray,
) -> tuple[dict[str, np.ndarray], bool]:
    """Row-level pairs (in scope, or across labels). Huge identical groups are listed as stars."""
    truncated = False
    a_parts: list[np.ndarray] = []
    b_parts: list[np.ndarray] = []
    d_parts: list[np.ndarray] = []

    def members(ids: np.ndarray) -> dict[int, np.ndarray]:
        valid = np.flatnonzero(ids >= 0)
        if not valid.size:
            return {}
        order = valid[np.lexsort((rank[valid], ids[valid]))]
        keys, starts = np.unique(ids[order], return_index=True)
        return {int(k): g for k, g in zip(keys, np.split(order, starts[1:]), strict=True)}

    def within(rows: np.ndarray) -> None:
        nonlocal truncated
        if rows.size < 2:
            return
        if rows.size > STAR_LIMIT:
            truncated = True
            a, b = np.full(rows.size - 1, rows[0]), rows[1:]
        else:
            i, j = np.triu_indices(rows.size, 1)
            a, b = rows[i], rows[j]
        a_parts.append(a)
        b_parts.append(b)
        d_parts.append(np.zeros(a.size, np.uint8))

    if exact:
        for rows in members(sha_list).values():
            within(rows)
    if near:
        groups = members(code_id)
        for rows in groups.values():
            within(rows)
        for ca, cb, d in zip(*(x.tolist() for x in code_pairs), strict=True):
            ra, rb = groups.get(ca), groups.get(cb)
            if ra is None or rb is None:
                continue
            if ra.size * rb.size > STAR_LIMIT * STAR_LIMIT:
                truncated = True
                ra, rb = ra[:1], rb[:1]
            a_parts.append(np.repeat(ra, rb.size))
            b_parts.append(np.tile(rb, ra.size))
            d_parts.append(np.full(ra.size * rb.size, d, np.uint8))
    if not a_parts:
        e = np.zeros(0, np.int64)
        return {
            "a": e,
            "b": e,
            "distance": e.astype(np.uint8),
            "exact": e.astype(bool),
            "cross_label": e.astype(bool),
        }, truncated
    a = np.concatenate(a_parts)
    b = np.concatenate(b_parts)
    d = np.concatenate(d_parts)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo.astype(np.int64) * (len(rank) + 1) + hi
    _, first = np.unique(key, return_index=True)  # exact and near listings of one pair: keep one
    lo, hi, d = lo[first], hi[first], d[first]
    is_exact = (sha_id[lo] >= 0) & (sha_id[lo] == sha_id[hi])
    d = np.where(is_exact, 0, d).astype(np.uint8)
    cross = label[lo] != label[hi]
    keep = cross | (scope[lo] == scope[hi])
    return {
        "a": lo[keep],
        "b": hi[keep],
        "distance": d[keep],
        "exact": is_exact[keep],
        "cross_label": cross[keep],
    }, truncated


# --- the whole command -----------------------------------------------------------------------------
@dataclass
class Decision:
    """What dedupe decided for a hashed frame (before any output is built)."""

    grouping: Grouping
    removed: np.ndarray  # bool per row
    action: list[str | None]
    reason: list[str | None]
    conflict_group: np.ndarray  # bool per row: its group is a label conflict
    eligible: np.ndarray  # bool per row: matched perceptually
    distinct_codes: int
    search_s: float = 0.0


def decide(df: pl.DataFrame, options: DedupeOptions, *, workers: int = 1) -> Decision:
    """Search, group and choose survivors over a frame that already has the hash columns (no I/O)."""
    options.check()
    n = df.height
    eligible = (
        df.get_column("phash").is_not_null()
        & ~df.get_column("near_uniform").fill_null(False)
        & df.get_column("hash_error").is_null()
    ).to_numpy()
    codes = df.get_column("phash").fill_null(0).to_numpy().astype(np.uint64)
    uniq, inverse = np.unique(codes[eligible], return_inverse=True)
    code_id = np.full(n, -1, np.int64)
    code_id[eligible] = inverse
    t0 = time.perf_counter()
    if options.near:
        cp = distinct_code_pairs(uniq, options.threshold, workers=workers)
        code_pairs = (cp.a, cp.b, cp.distance)
    else:
        e = np.zeros(0, np.int64)
        code_pairs = (e, e, e.astype(np.uint8))
    search_s = time.perf_counter() - t0
    label = df.get_column("label").cast(pl.Int64).fill_null(-1).to_numpy()
    g = group_rows(
        sha_id=_dense_ids(df.get_column("sha256")),
        code_id=code_id,
        code_pairs=code_pairs,
        rank=priority(df, options.keep),
        scope=scope_ids(df, options.scope),
        label=label,
        exact=options.exact,
        near=options.near,
    )
    removed, action, reason, conflict_group = _decide(g, options.conflicts, df)
    return Decision(g, removed, action, reason, conflict_group, eligible, int(uniq.size), search_s)


def dedupe(
    manifest: Manifest,
    options: DedupeOptions | None = None,
    *,
    workers: int = 2,
    use_cache: bool = True,
    skip_bad: bool = False,
    with_dhash: bool = False,
    engine: ShardEngine | None = None,
    reporter: Reporter | None = None,
) -> DedupeResult:
    """Hash, search, group and choose survivors; returns the kept manifest and the report tables."""
    options = options or DedupeOptions()
    options.check()
    reporter = reporter or NullReporter()
    t0 = time.perf_counter()
    hashed = hash_manifest(
        manifest,
        workers=workers,
        use_cache=use_cache,
        skip_bad=skip_bad,
        with_dhash=with_dhash,
        engine=engine,
        reporter=reporter,
    )
    t1 = time.perf_counter()
    df = hashed.manifest.df
    d = decide(df, options, workers=workers)
    t2 = time.perf_counter()
    step = (
        f"dedupe threshold={options.threshold} keep={options.keep} scope={options.scope} "
        f"conflicts={options.conflicts}"
        + ("" if options.near else " exact-only")
        + ("" if options.exact else " near-only")
        + f" removed={int(d.removed.sum())}"
    )
    kept = hashed.manifest.with_df(df.filter(pl.Series(~d.removed)), step=step)
    summary = _summary(
        df,
        d.grouping,
        d.removed,
        d.conflict_group,
        options,
        hashed,
        d.eligible,
        timings={"hash_s": t1 - t0, "search_s": d.search_s, "group_s": t2 - t1 - d.search_s},
    )
    summary["distinct_codes"] = d.distinct_codes
    return DedupeResult(
        kept,
        _pairs_frame(df, d.grouping),
        _groups_frame(df, d.grouping, d.action, d.reason, d.conflict_group),
        summary,
        hashed.manifest,
        d.removed,
    )


def write_report(
    result: DedupeResult, folder: Path, *, overwrite: bool = False, reporter: Reporter | None = None
) -> list[Path]:
    """pairs.parquet, groups.parquet and summary.json into ``folder``: all three appear together or none
    (built aside, renamed once; an existing folder is replaced as a whole only with ``overwrite``)."""
    folder = Path(folder)
    names = ["pairs.parquet", "groups.parquet", "summary.json"]
    text = json.dumps(result.summary, indent=2, default=str) + "\n"
    warn = reporter.warn if reporter is not None else None
    with atomic_folder(folder, overwrite=overwrite, option="--report", warn=warn) as tmp:
        write_atomic(tmp / names[0], result.pairs.write_parquet)
        write_atomic(tmp / names[1], result.groups.write_parquet)
        write_atomic(tmp / names[2], lambda p: Path(p).write_text(text))
    return [folder / n for n in names]


def _decide(
    g: Grouping, conflicts: str, df: pl.DataFrame
) -> tuple[np.ndarray, list[str | None], list[str | None], np.ndarray]:
    """Which rows go, and why. Returns (removed, action, reason, conflict flag per row's group)."""
    n = g.group.size
    in_group = g.group >= 0
    # a group is in conflict when it holds both labels or any member is in a cross-label pair
    conflict_group_ids = set(g.group[g.conflict_rows & in_group].tolist())
    label = df.get_column("label").cast(pl.Int64).fill_null(-1).to_numpy()
    for gid in np.unique(g.group[in_group]).tolist():
        if np.unique(label[g.group == gid]).size > 1:
            conflict_group_ids.add(gid)
    conflict_group = np.isin(g.group, list(conflict_group_ids)) & in_group
    suspect = conflict_group | g.conflict_rows
    is_survivor = in_group & (g.leader == np.arange(n))
    removed = in_group & ~is_survivor
    if conflicts == "report":
        removed &= ~suspect
    elif conflicts == "drop":
        removed |= suspect
    action: list[str | None] = [None] * n
    reason: list[str | None] = [None] * n
    shards = df.get_column("shard").to_list()
    rows = df.get_column("row").to_list()
    for pos in np.flatnonzero(in_group | suspect).tolist():
        action[pos] = "remove" if removed[pos] else "keep"
        lead = int(g.leader[pos])
        if suspect[pos] and conflicts != "keep":
            reason[pos] = "label conflict: the same picture is labelled real and generated" + (
                " (dropped)" if conflicts == "drop" else " (kept for review)"
            )
        elif lead == pos:
            reason[pos] = "survivor"
        elif lead >= 0:
            what = "exact copy" if g.exact[pos] else f"near duplicate (distance {int(g.distance[pos])})"
            reason[pos] = f"{what} of {shards[lead]}:{rows[lead]}"
        else:
            reason[pos] = "label conflict"
    return removed, action, reason, conflict_group


def _pairs_frame(df: pl.DataFrame, g: Grouping) -> pl.DataFrame:
    p = g.pairs
    shard = df.get_column("shard")
    row = df.get_column("row")
    a, b = p["a"], p["b"]
    return pl.DataFrame(
        {
            "shard_a": shard.gather(a),
            "row_a": row.gather(a),
            "shard_b": shard.gather(b),
            "row_b": row.gather(b),
            "distance": p["distance"],
            "kind": np.where(p["exact"], "exact", "near"),
            "cross_label": p["cross_label"],
            "same_group": (g.group[a] >= 0) & (g.group[a] == g.group[b]),
        },
        schema=PAIR_SCHEMA,
    )


def _groups_frame(
    df: pl.DataFrame,
    g: Grouping,
    action: list[str | None],
    reason: list[str | None],
    conflict_group: np.ndarray,
) -> pl.DataFrame:
    pos = np.flatnonzero(g.group >= 0)
    pos = pos[np.lexsort((g.leader[pos] != pos, g.group[pos]))]  # survivor first within each group
    shard = df.get_column("shard")
    row = df.get_column("row")
    lead = g.leader[pos]
    model = df.get_column("model_name") if "model_name" in df.columns else pl.Series([None] * df.height)
    return pl.DataFrame(
        {
            "group_id": g.group[pos],
            "shard": shard.gather(pos),
            "row": row.gather(pos),
            "survivor": lead == pos,
            "survivor_shard": shard.gather(lead),
            "survivor_row": row.gather(lead),
            "distance": g.distance[pos],
            "kind": np.where(lead == pos, "survivor", np.where(g.exact[pos], "exact", "near")),
            "label": df.get_column("label").gather(pos),
            "model_name": model.gather(pos),
            "conflict": conflict_group[pos],
            "action": [action[i] for i in pos.tolist()],
            "reason": [reason[i] for i in pos.tolist()],
        },
        schema=GROUP_SCHEMA,
    )


def _counts(
    df: pl.DataFrame, removed: np.ndarray, column: str, top: int | None = None
) -> list[dict[str, Any]]:
    t = (
        df.select(pl.col(column).cast(pl.String).fill_null(NULL_VALUE).alias("value"))
        .with_columns(pl.Series("removed", removed))
        .group_by("value")
        .agg(pl.len().alias("rows"), pl.col("removed").sum().alias("removed"))
        .sort(["removed", "rows", "value"], descending=[True, True, False])
    )
    out = t.to_dicts()
    return out[:top] if top else out


def _summary(
    df: pl.DataFrame,
    g: Grouping,
    removed: np.ndarray,
    conflict_group: np.ndarray,
    options: DedupeOptions,
    hashed: Any,
    eligible: np.ndarray,
    timings: dict[str, float],
) -> dict[str, Any]:
    n = df.height
    in_group = g.group >= 0
    not_leader = in_group & (g.leader != np.arange(n))
    cross = g.pairs["cross_label"]
    labels = (
        df.get_column("label")
        .cast(pl.Int64)
        .replace_strict({k: v for k, v in LABEL_NAMES.items()}, default="unknown", return_dtype=pl.String)
    )
    gen = df.filter(pl.col("label") == GENERATED) if "model_name" in df.columns else None
    return {
        "rows": n,
        "kept": int(n - removed.sum()),
        "removed": int(removed.sum()),
        "options": {
            "exact": options.exact,
            "near": options.near,
            "threshold": options.threshold,
            "keep": options.keep,
            "scope": options.scope,
            "conflicts": options.conflicts,
        },
        "hashing": {
            "decoded": hashed.decoded,
            "from_cache": hashed.cached_rows,
            "hash_errors": int(df.get_column("hash_error").is_not_null().sum()),
            "near_uniform": int(df.get_column("near_uniform").fill_null(False).sum()),
            "matched_perceptually": int(eligible.sum()),
            "bad_shards": [e.shard for e in hashed.bad],
        },
        "groups": int(np.unique(g.group[in_group]).size),
        "exact_duplicates": int((not_leader & g.exact).sum()),
        "near_duplicates": int((not_leader & ~g.exact).sum()),
        "pairs": int(g.pairs["a"].size),
        "pairs_truncated": g.pairs_truncated,
        "conflicts": {
            "pairs": int(cross.sum()),
            "rows": int(g.conflict_rows.sum()),
            "groups": int(np.unique(g.group[conflict_group]).size),
            "removed": int((removed & (conflict_group | g.conflict_rows)).sum()),
        },
        "by_label": _counts(df.with_columns(labels.alias("label_name")), removed, "label_name"),
        "by_generator": _counts(
            gen, removed[(df.get_column("label") == GENERATED).to_numpy()], "model_name", top=20
        )
        if gen is not None
        else [],
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
