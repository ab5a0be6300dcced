"""Index shards into a manifest: metadata columns only, bounded memory, cached per shard.

A Community Forensics shard is one multi-GB row group. pyarrow is opened with ``pre_buffer=False`` and a small
``buffer_size`` and asked only for the metadata columns, so neither a local read nor a Hub read touches the
image bytes (a Hub read fetches the footer and the metadata column chunks through HTTP range requests).
``num_bytes`` (length of each encoded image) needs the image column itself: it is filled on request
(``with_num_bytes=True``, local streaming in small batches) or by commands that stream bytes anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cfx.errors import BadShardError, CfxError, NetworkError, PartialError
from cfx.manifest import Manifest
from cfx.outputs import write_atomic
from cfx.progress import NullReporter, Reporter
from cfx.schema import (
    CORE_COLUMNS,
    IMAGE_COLUMN,
    MANIFEST_SCHEMA,
    METADATA_COLUMNS,
    REQUIRED_COLUMNS,
    check_column_names,
    conform_metadata,
)
from cfx.sources import DatasetSource, ShardRef, is_network_error

if TYPE_CHECKING:
    from cfx.engine import ShardEngine

INDEX_VERSION = 2  # 2: schema drift mapped (cfx.schema.conform_metadata), unusable sizes are null
READ_BUFFER = 1 << 20  # bytes pyarrow buffers per column stream: the memory bound of a read
BYTES_BATCH_ROWS = 16  # rows of image bytes held at once while measuring num_bytes

_REAL_WORDS = {"0", "real", "false", "authentic", "pristine", "original"}
_FAKE_WORDS = {"1", "generated", "fake", "synthetic", "true", "ai", "ai-generated"}
_RES_RE = re.compile(r"(-?\d+)[^\d-]+(-?\d+)")  # signs kept: "[-5, 10]" is unusable, not 5 x 10
_MAX_SIDE = 2**31 - 1


def cache_dir() -> Path:
    env = os.environ.get("CFX_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cfx"


# --- the detected order inside ``resolution`` (written by cfx.inspect, read here) ---------------------
def _orders_path() -> Path:
    return cache_dir() / "resolution_order.json"


def source_expr(columns: list[str]) -> pl.Expr:
    """Where a row comes from: ``real_source`` for real rows, ``model_name`` for generated ones."""
    real = pl.col("real_source").cast(pl.String) if "real_source" in columns else pl.lit(None, pl.String)
    gen = pl.col("model_name").cast(pl.String) if "model_name" in columns else pl.lit(None, pl.String)
    if "label" not in columns:
        return gen
    return pl.when(pl.col("label") == 0).then(real).otherwise(gen)


def load_resolution_orders(root: str) -> dict[str, str]:
    """{source: "hw"} for the sources of dataset ``root`` whose ``resolution`` reads [h, w] (cfx inspect)."""
    try:
        data = json.loads(_orders_path().read_text())
    except (OSError, ValueError):
        return {}
    found = data.get(root, {}) if isinstance(data, dict) else {}
    return {str(k): str(v) for k, v in found.items() if v == "hw"}


def save_resolution_orders(root: str, transposed: dict[str, str], examined: list[str]) -> None:
    """Record the detected order of the ``examined`` sources of ``root``; skipped when it cannot be written."""
    path = _orders_path()
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        data = {}
    entry = {k: v for k, v in data.get(root, {}).items() if k not in examined}
    entry.update(transposed)
    if entry == data.get(root, {}) or (not entry and root not in data):
        return
    data[root] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True)))
    except (OSError, CfxError):
        pass


def apply_resolution_order(df: pl.DataFrame, root: str) -> pl.DataFrame:
    """Swap width and height of the rows of sources whose ``resolution`` reads [h, w]."""
    orders = load_resolution_orders(root)
    if not orders or not df.height:
        return df
    swap = source_expr(df.columns).is_in(list(orders))
    return df.with_columns(
        pl.when(swap).then(pl.col("height")).otherwise(pl.col("width")).alias("width"),
        pl.when(swap).then(pl.col("width")).otherwise(pl.col("height")).alias("height"),
    )


@contextmanager
def open_shard(ref: ShardRef, fs: Any = None, *, metadata_only: bool = False) -> Iterator[pq.ParquetFile]:
    """Open a shard for streaming.

    ``metadata_only=True`` lets pyarrow pre-buffer (coalesce) the few small column chunks it is asked for —
    one range request per group instead of many on the Hub; never use it to read ``image_data``, whose
    column chunk is the whole multi-GB shard. Otherwise pages are streamed through a small buffer.
    """
    handle = None
    try:
        if fs is not None:
            # No fsspec read-ahead: pyarrow asks for exactly the byte ranges it needs.
            handle = fs.open(ref.path, "rb", block_size=64 * 1024, cache_type="none")
            source: Any = handle
        else:
            source = ref.path
        try:
            pf = pq.ParquetFile(source, pre_buffer=metadata_only, buffer_size=READ_BUFFER)
        except FileNotFoundError:
            raise BadShardError(
                ref.rel, "file not found", "it moved or was deleted; re-index the dataset"
            ) from None
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
            if fs is not None and is_network_error(exc):
                raise
            raise BadShardError(
                ref.rel,
                f"not a readable parquet file ({_short(exc)})",
                "it may be truncated or still downloading; re-fetch it with `cfx download`",
            ) from None
        yield pf
    except Exception as exc:  # also what the caller's reads through this handle raise
        if fs is None or not is_network_error(exc):
            raise
        raise NetworkError(
            f"the Hub at {getattr(fs, 'endpoint', '?')} failed while reading {ref.rel} ({_short(exc)})",
            "check the connection, HF_ENDPOINT and HF_TOKEN, then re-run: shards already done are cached",
        ) from None
    finally:
        if handle is not None:
            handle.close()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def normalize_labels(values: pa.ChunkedArray | pa.Array, shard: str, row_offset: int = 0) -> pl.Series:
    """Map int/bool/string labels to 0 real / 1 generated; anything else is an error naming shard and row."""
    s = pl.Series("label", values)
    if s.dtype == pl.Boolean:
        out = s.cast(pl.Int8)
    elif s.dtype.is_integer():
        out = s.cast(pl.Int64)
    elif s.dtype == pl.String:
        low = s.str.strip_chars().str.to_lowercase()
        out = (
            pl.select(
                pl.when(low.is_in(list(_REAL_WORDS)))
                .then(0)
                .when(low.is_in(list(_FAKE_WORDS)))
                .then(1)
                .otherwise(None)
            )
            .to_series()
            .cast(pl.Int64)
        )
    else:
        raise BadShardError(
            shard, f"label column has type {s.dtype}", "labels must be integers, booleans or strings"
        )
    bad = out.is_null() | ~out.is_in([0, 1])
    if bad.any():
        row = int(bad.arg_true()[0])
        raise BadShardError(
            shard,
            f"row {row + row_offset}: unknown label {s[row]!r}",
            "labels must be 0/1, true/false or real/generated (0 = real, 1 = generated); fix the shard",
        )
    return out.cast(pl.Int8).alias("label")


def parse_resolution(res: pl.Series, shard: str) -> tuple[pl.Series, pl.Series, str | None]:
    """Width and height from ``"[w, h]"`` strings. A size that is zero, negative, too large or unreadable
    is invalid metadata: null width/height and one warning counting such rows (``cfx audit`` reports them)."""
    parts = res.str.extract_groups(_RES_RE.pattern)
    w = parts.struct.field("1").cast(pl.Int64, strict=False)
    h = parts.struct.field("2").cast(pl.Int64, strict=False)
    usable = ((w > 0) & (h > 0) & (w <= _MAX_SIDE) & (h <= _MAX_SIDE)).fill_null(False)
    unusable = res.is_not_null() & ~usable
    warning = None
    if unusable.any():
        row = int(unusable.arg_true()[0])
        warning = (
            f"{shard}: {int(unusable.sum()):,} row(s) with an unusable resolution (zero, negative or unreadable "
            f"size, e.g. row {row}: {res[row]!r}); their width/height are left null"
        )
    width = pl.select(pl.when(usable).then(w)).to_series().cast(pl.Int32).alias("width")
    height = pl.select(pl.when(usable).then(h)).to_series().cast(pl.Int32).alias("height")
    return width, height, warning


def scan_shard(
    ref: ShardRef, fs: Any = None, *, with_num_bytes: bool = False
) -> tuple[pl.DataFrame, list[str]]:
    """Read one shard's metadata into manifest rows. Returns the rows and warnings."""
    warnings: list[str] = []
    with open_shard(ref, fs, metadata_only=True) as pf:
        names = pf.schema_arrow.names
        check_column_names(names, ref.rel)
        missing_required = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing_required:
            raise BadShardError(
                ref.rel,
                f"missing required column(s) {', '.join(missing_required)}; columns found: {', '.join(names)}",
                "is this a Community Forensics shard? cfx needs image_data and label",
            )
        cols = [c for c in METADATA_COLUMNS if c in names]
        absent = [c for c in METADATA_COLUMNS if c not in names]
        if absent:
            warnings.append(f"{ref.rel}: columns {', '.join(absent)} absent, filled with nulls")
        try:
            table = pf.read(columns=cols)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
            if fs is not None and is_network_error(exc):
                raise  # open_shard reports it as a NetworkError
            raise BadShardError(
                ref.rel, f"cannot read the data ({_short(exc)})", "the file may be truncated; re-fetch it"
            ) from None
    table = conform_metadata(table, ref.rel)  # drifted types -> the source schema, or a BadShardError
    lengths = _image_lengths(ref, fs) if with_num_bytes else None
    n = table.num_rows
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    label = normalize_labels(table.column("label"), ref.rel)
    df = df.with_columns(label)
    for c in absent:
        df = df.with_columns(pl.lit(None, dtype=MANIFEST_SCHEMA[c]).alias(c))
    w, h, res_warning = parse_resolution(df.get_column("resolution").cast(pl.String), ref.rel)
    if res_warning:
        warnings.append(res_warning)
    df = df.with_columns(
        pl.lit(ref.rel, dtype=pl.String).alias("shard"),
        pl.int_range(0, n, dtype=pl.Int64).alias("row"),
        w,
        h,
        (
            pl.Series("num_bytes", lengths, dtype=pl.Int64)
            if lengths is not None
            else pl.lit(None, dtype=pl.Int64)
        ).alias("num_bytes"),
    )
    df = df.select([pl.col(c).cast(MANIFEST_SCHEMA[c]) for c in CORE_COLUMNS])
    return df, warnings


def _image_lengths(ref: ShardRef, fs: Any) -> pa.Array:
    """Byte length of every encoded image, one image at a time (cfx.pages; pyarrow, a few rows at a time,
    where the page reader does not decode the column)."""
    from cfx import pages

    with open_shard(ref, fs) as pf:
        try:
            if pages.unsupported(pf, IMAGE_COLUMN) is None:
                try:
                    with pages.open_source(ref.path, fs) as src:
                        lengths = [
                            None if value is None else len(value)
                            for group in pages.row_groups(pf, None)
                            for _, value in pages.iter_column(src, pf, IMAGE_COLUMN, group)
                        ]
                    return pa.array(lengths, pa.int64())
                except pages.Unsupported:
                    pass  # a page it cannot decode (found while reading): pyarrow reads the column instead
            parts = [
                pc.binary_length(batch.column(0)).cast(pa.int64())
                for batch in pf.iter_batches(
                    batch_size=BYTES_BATCH_ROWS, columns=[IMAGE_COLUMN], use_threads=False
                )
            ]
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError, EOFError) as exc:
            if fs is not None and is_network_error(exc):
                raise  # open_shard reports it as a NetworkError
            raise BadShardError(
                ref.rel,
                f"cannot read the image column ({_short(exc)})",
                "the file may be truncated; re-fetch it",
            ) from None
    return pa.concat_arrays(parts) if parts else pa.array([], pa.int64())


# --- per-shard cache ---------------------------------------------------------------------------------
def _cache_key(root: str, ref: ShardRef) -> str:
    ident = ref.path if not root.startswith("hf://") else f"{root}/{ref.rel}"
    return hashlib.sha1(ident.encode()).hexdigest()


def _cache_tag(ref: ShardRef) -> dict[str, Any]:
    return {"v": INDEX_VERSION, "rel": ref.rel, **ref.info.to_json()}


def _cache_load(root: str, ref: ShardRef, need_bytes: bool) -> pl.DataFrame | None:
    path = cache_dir() / "index" / f"{_cache_key(root, ref)}.parquet"
    try:
        table = pq.ParquetFile(path).read()  # not pq.read_table: pyarrow.dataset costs ~0.4 s to import
    except Exception:
        return None
    meta = (table.schema.metadata or {}).get(b"cfx-index")
    if meta is None or json.loads(meta).get("tag") != _cache_tag(ref):
        return None
    if need_bytes and not json.loads(meta).get("num_bytes"):
        return None
    df = pl.from_arrow(table.replace_schema_metadata(None))
    return df if isinstance(df, pl.DataFrame) else None


def _cache_store(root: str, ref: ShardRef, df: pl.DataFrame, has_bytes: bool) -> None:
    folder = cache_dir() / "index"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        table = df.to_arrow()
        meta = json.dumps({"tag": _cache_tag(ref), "num_bytes": has_bytes}).encode()
        table = table.replace_schema_metadata({b"cfx-index": meta})
        write_atomic(folder / f"{_cache_key(root, ref)}.parquet", lambda tmp: pq.write_table(table, tmp))
    except (OSError, CfxError):
        pass  # a cache that cannot be written only costs time


@dataclass
class IndexResult:
    manifest: Manifest
    bad: list[BadShardError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cached: int = 0


def build_manifest(
    source: DatasetSource,
    *,
    with_num_bytes: bool = False,
    workers: int = 4,
    use_cache: bool = True,
    engine: ShardEngine | None = None,
    reporter: Reporter | None = None,
) -> IndexResult:
    """Index every shard of ``source``. Bad shards are collected (not raised) so all of them can be named.

    Shards are scanned in a thread pool of ``workers``, or on Ray (``engine``, see cfx.engine_ray), which
    runs the same ``scan_shard``; either way this process reads and writes the per-shard cache.
    """
    reporter = reporter or NullReporter()
    task = reporter.task("Indexing shards", total=len(source.shards))
    results: dict[int, pl.DataFrame] = {}
    errors: dict[int, BadShardError] = {}
    warned: dict[int, list[str]] = {}
    cached = 0
    scan_bytes = with_num_bytes and not source.is_remote

    def cached_frame(ref: ShardRef) -> pl.DataFrame | None:
        return _cache_load(source.root, ref, with_num_bytes) if use_cache else None

    def done(i: int, df: pl.DataFrame | None, warn: list[str], err: BadShardError | None, hit: bool) -> None:
        nonlocal cached
        if err is not None:
            errors[i] = err
            reporter.warn(str(err))
        else:
            assert df is not None
            results[i] = df
            cached += hit
            if use_cache and not hit and engine is not None:  # local: stored by the thread that scanned
                _cache_store(source.root, source.shards[i], df, scan_bytes)
        for w in warn:
            reporter.warn(w)
        warned[i] = warn
        task.advance()

    def one(i: int, ref: ShardRef) -> tuple[int, pl.DataFrame | None, list[str], BadShardError | None, bool]:
        hit = cached_frame(ref)
        if hit is not None:
            return i, hit, [], None, True
        try:
            df, warn = scan_shard(ref, source.fs, with_num_bytes=scan_bytes)
        except BadShardError as exc:
            return i, None, [], exc, False
        if use_cache:
            _cache_store(source.root, ref, df, scan_bytes)
        return i, df, warn, None, False

    if engine is not None:
        todo = []
        for i, ref in enumerate(source.shards):
            hit = cached_frame(ref)
            if hit is not None:
                done(i, hit, [], None, True)
            else:
                todo.append((i, ref))
        for i, df, warn, err in engine.scan_shards(todo, source.fs, scan_bytes):
            done(i, df, warn, err, False)
    else:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for out in pool.map(lambda a: one(*a), enumerate(source.shards)):
                done(*out)
    task.close()
    frames = [results[i] for i in sorted(results)]
    df = pl.concat(frames, how="vertical_relaxed") if frames else _empty_frame()
    df = apply_resolution_order(df, source.root)
    good = {source.shards[i].rel: source.shards[i].info for i in sorted(results)}
    manifest = Manifest(df=df, root=source.root, shards=good)
    bad = [errors[i] for i in sorted(errors)]
    warnings = [w for i in sorted(warned) for w in warned[i]]
    return IndexResult(manifest=manifest, bad=bad, warnings=warnings, cached=cached)


def _empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=MANIFEST_SCHEMA)


def raise_for_bad(result: IndexResult, skip_bad: bool, reporter: Reporter | None = None) -> None:
    """Without --skip-bad, any bad shard fails the command (nothing is written); with it, say how many
    shards were skipped (each was named as it failed)."""
    if result.bad and not skip_bad:
        names = ", ".join(e.shard for e in result.bad[:5]) + (" …" if len(result.bad) > 5 else "")
        good = len(result.manifest.shards)
        raise PartialError(
            f"{len(result.bad)} shard(s) could not be read: {names} ({result.bad[0]})",
            f"fix or re-download them, or add --skip-bad to go on with the {good} good shard(s)",
        )
    if result.bad and not result.manifest.shards:
        raise PartialError("no shard could be read", "check the source; see the errors above")
    if result.bad:
        good = len(result.manifest.shards)
        (reporter or NullReporter()).warn(
            f"--skip-bad: skipped {len(result.bad)} bad shard(s), going on with the {good} good one(s)"
        )
