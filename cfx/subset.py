"""Materialize a manifest as a new parquet dataset: exact source schema, byte-identical images, bounded memory.

Rows are streamed out of the source shards a few at a time (``cfx.stream``) and written straight into small
row groups, so memory stays at a row group or two whatever the size of the source shards. Nothing is decoded.
The dataset is built in ``DIR.tmp-<pid>-<random>`` beside ``DIR`` and renamed into place at the end
(``cfx.outputs.atomic_folder``, under a lock on ``DIR.lock``), so a crash or a kill never leaves a partial
``DIR`` and two writers of one ``DIR`` never both succeed.

``order="shuffle"`` needs a global permutation while shards are read in order: rows are first spilled, in
source order, into an Arrow IPC file inside ``DIR.tmp-*`` (one record batch per row), then read back one row
at a time in the shuffled order. That costs one extra write and read of the selected bytes, not memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from cfx import __version__, lineage
from cfx.card import CardInfo, render_card, source_licenses
from cfx.defaults import DEFAULT_ROW_GROUP_ROWS
from cfx.errors import BadShardError, EmptySelectionError, InputError, OutputError, UsageError
from cfx.evidence import measure as measure_evidence
from cfx.index import open_shard
from cfx.manifest import Manifest, ShardInfo
from cfx.outputs import (
    KeptErrorFile,
    atomic_folder,
    check_folder_output,
    check_free_space,
    output_error,
    write_atomic,
)
from cfx.progress import NullReporter, Reporter, RowsAndBytes
from cfx.schema import GENERATED, IMAGE_COLUMN, REAL
from cfx.sources import natural_key
from cfx.stats import value_counts
from cfx.stream import ROW_COLUMN, iter_shard_batches, shard_ref
from cfx.transform_stage import KeyedBatch, shuffle_order
from cfx.units import human_bytes

if TYPE_CHECKING:  # PIL is imported only when a subset transforms
    from cfx.engine import ShardEngine
    from cfx.transform import BadImageError, Pipeline
    from cfx.transform_stage import TransformStage

DEFAULT_MAX_SHARD_BYTES = 500 * 1000**2
ROW_GROUP_MAX_BYTES = 64 << 20  # a row group never buffers more than this, however large the images
READ_BATCH_ROWS = 16
READ_BATCH_BYTES = 4 << 20  # source rows read at once: about this many bytes (at least one row)
DATA_PAGE_BYTES = 1 << 20  # pyarrow's default data_page_size
CDC_UNCOMPRESSED = {"min_chunk_size": 16 << 20, "max_chunk_size": 18 << 20}  # CDC chunks, uncompressed images
SPLIT = "train"
SPLIT_INDEX = "__cfx_split"  # the split index a row carries from read to write (_SplitRowGroups)
DATA_DIR = "data"
DATA_GLOB = f"{DATA_DIR}/{SPLIT}-*.parquet"
PROVENANCE_COLUMNS = ("source_shard", "source_row")
ORDERS = ("source", "shuffle")
_WRITER_TAG = ".cfx-writer"
_CODECS = {"UNCOMPRESSED": "none", "SNAPPY": "snappy", "GZIP": "gzip", "BROTLI": "brotli", "LZ4": "lz4"}
_CODECS.update({"LZ4_RAW": "lz4", "ZSTD": "zstd"})


def supports_cdc() -> bool:
    """pyarrow >= 21 can cut pages at content-defined boundaries (dedupes well on Xet / the Hub)."""
    import inspect

    return "use_content_defined_chunking" in inspect.signature(pq.ParquetWriter.__init__).parameters


# --- plan ---------------------------------------------------------------------------------------------
@dataclass
class ShardPlan:
    shard: str
    rows: int  # selected rows
    shard_rows: int
    shard_bytes: int
    est_bytes: int  # bytes of the selected rows (exact image bytes + a share of the rest, or a share)


@dataclass
class SubsetPlan:
    """What a subset would write: computed from the manifest and the touched shards' footers only."""

    manifest: Manifest  # unique rows, in output order
    schema: pa.Schema  # the source schema (names, types, order, metadata) — the output schema
    codecs: dict[str, str]  # per column, as in the source
    shards: list[ShardPlan]
    est_bytes: int
    exact: bool  # est_bytes comes from num_bytes of every row
    duplicates: int  # (shard, row) pairs listed more than once, written once
    order: str
    seed: int
    source_index: np.ndarray | None = None  # shuffle: output row j is the source-order row source_index[j]

    @property
    def rows(self) -> int:
        return len(self.manifest)

    def counts(self, column: str, top: int | None = None) -> list[tuple[str, int]]:
        df = self.manifest.df
        if column == "model_name":
            df = df.filter(pl.col("label") == GENERATED)
        rows = [(v, n) for v, n, _, _ in value_counts(df, column)]
        return rows[:top] if top else rows

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "by_label": dict(self.counts("label")),
            "by_architecture": dict(self.counts("architecture")),
            "by_generator": dict(self.counts("model_name")),
            "source_shards": [
                {"shard": s.shard, "rows": s.rows, "of": s.shard_rows, "est_bytes": s.est_bytes}
                for s in self.shards
            ],
            "est_bytes": self.est_bytes,
            "bytes_exact": self.exact,
            "duplicates_dropped": self.duplicates,
            "order": self.order,
            "seed": self.seed,
        }


def _source_order(df: pl.DataFrame) -> pl.DataFrame:
    """Unique (shard, row) in source order: shards in natural order (2 before 10), rows ascending."""
    shards = sorted(df.get_column("shard").unique().to_list(), key=natural_key)
    rank = pl.DataFrame(
        {"shard": shards, "__shard_rank": range(len(shards))}, schema_overrides={"shard": df.schema["shard"]}
    )
    return (
        df.unique(subset=["shard", "row"], keep="first", maintain_order=True)
        .join(rank, on="shard", how="left")
        .sort(["__shard_rank", "row"])
        .drop("__shard_rank")
    )


def plan_subset(
    manifest: Manifest, *, order: str = "source", seed: int = 0, reporter: Reporter | None = None
) -> SubsetPlan:
    """Check the touched shards (fingerprints, schemas) and estimate what would be written. No image bytes."""
    reporter = reporter or NullReporter()
    if order not in ORDERS:
        raise UsageError(f"--order {order!r}: unknown order", "use source or shuffle")
    if not len(manifest):
        raise EmptySelectionError("the selection is empty: nothing to write", "loosen the filters")
    df = manifest.df
    if "num_bytes" not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.Int64).alias("num_bytes"))
    df = _source_order(df)
    duplicates = manifest.df.height - df.height
    if duplicates:
        reporter.warn(f"{duplicates:,} rows are listed more than once; each is written once")
    perm = None
    if order == "shuffle":
        perm = np.random.Generator(np.random.PCG64(seed)).permutation(df.height)
        df = df[perm]
    per_shard = df.group_by("shard", maintain_order=True).agg(
        pl.len().alias("n"),
        pl.col("num_bytes").sum().alias("b"),
        pl.col("num_bytes").null_count().alias("nb"),
    )
    schema: pa.Schema | None = None
    codecs: dict[str, str] = {}
    first = ""
    shard_plans: list[ShardPlan] = []
    exact = True
    for shard, n, nbytes, nulls in sorted(per_shard.iter_rows(), key=lambda r: natural_key(r[0])):
        ref, fs = shard_ref(manifest, shard)
        with open_shard(ref, fs) as pf:
            s = pf.schema_arrow
            meta = pf.metadata
            if schema is None:
                schema, first = s, shard
                rg = meta.row_group(0) if meta.num_row_groups else None
                if rg is not None:
                    for i in range(rg.num_columns):
                        col = rg.column(i)
                        codec = _CODECS.get(str(col.compression).upper(), "snappy")
                        # Encoded images barely compress: when the source's codec saved < 5 %, skip it.
                        saved = 1 - col.total_compressed_size / max(col.total_uncompressed_size, 1)
                        if (
                            col.physical_type == "BYTE_ARRAY"
                            and col.path_in_schema == IMAGE_COLUMN
                            and saved < 0.05
                        ):
                            codec = "none"
                        codecs[col.path_in_schema] = codec
            elif not s.remove_metadata().equals(schema.remove_metadata()):
                raise InputError(
                    f"shard {shard} has a different schema from {first} ({_schema_diff(schema, s)})",
                    "a subset needs shards with one schema: select rows of one dataset (e.g. --where "
                    "\"shard LIKE 'data/%'\")",
                )
            total_rows = meta.num_rows
            if IMAGE_COLUMN not in s.names:
                raise BadShardError(
                    shard, f"no {IMAGE_COLUMN} column", "is this a Community Forensics shard?"
                )
        size = ref.info.size
        share = int(size * n / total_rows) if total_rows else 0
        if nulls == 0 and nbytes is not None:
            est = int(nbytes) + int((size / max(total_rows, 1)) * 0.01 * n)  # + metadata columns (~1 %)
        else:
            est, exact = share, False
        shard_plans.append(ShardPlan(shard, int(n), int(total_rows), int(size), est))
    assert schema is not None
    return SubsetPlan(
        manifest=manifest.with_df(df),
        schema=schema,
        codecs=codecs,
        shards=shard_plans,
        est_bytes=sum(p.est_bytes for p in shard_plans),
        exact=exact,
        duplicates=duplicates,
        order=order,
        seed=seed,
        source_index=perm,
    )


def _schema_diff(a: pa.Schema, b: pa.Schema) -> str:
    if a.names != b.names:
        return f"columns {', '.join(a.names)} vs {', '.join(b.names)}"
    for fa, fb in zip(a, b, strict=True):
        if fa.type != fb.type:
            return f"column {fa.name}: {fa.type} vs {fb.type}"
    return "nullability differs"


# --- output checks ------------------------------------------------------------------------------------
def check_output(manifest: Manifest, out: Path, overwrite: bool) -> Path:
    """The absolute output folder, after refusing the unsafe cases (inside the source, exists, not a folder)."""
    out_abs = Path(os.path.abspath(Path(out).expanduser()))
    if not manifest.is_remote:
        root = Path(os.path.abspath(manifest.root)).resolve()
        real = out_abs.resolve()
        if real == root or root in real.parents:
            raise UsageError(
                f"--out {out} is inside the source folder {root}",
                "write the subset somewhere else, so it does not mix with the source shards",
            )
        if real in root.parents:
            raise UsageError(
                f"--out {out} contains the source folder {root}",
                "pick a folder outside the source: writing there could replace the source",
            )
    check_folder_output(out_abs, overwrite, "--out")
    return out_abs


def _check_space(parent: Path, need: int, how: str = "") -> None:
    """``how``: where ``need`` comes from when it is not the source bytes (said in the message)."""
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        return
    if need > free:
        how = f" ({how})" if how else ""
        raise OutputError(
            f"not enough disk space in {parent}: the output needs about {human_bytes(need)}{how}, "
            f"{human_bytes(free)} are free",
            "free some space, pick another --out, or select fewer rows",
        )


# --- writing ------------------------------------------------------------------------------------------
@dataclass
class WrittenFile:
    name: str  # relative to the output folder, e.g. data/train-00000-of-00002.parquet
    rows: int
    bytes: int
    data_bytes: int = 0  # uncompressed size of its row groups (the card's num_bytes)


class _ShardWriter:
    """Row groups into data/part-N.parquet files, starting a new file before one would pass ``max_bytes``."""

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        codecs: dict[str, str],
        max_bytes: int,
        cdc: bool = True,
        row_bytes: int = 0,
    ) -> None:
        self.folder = folder
        self.schema = schema
        self.max_bytes = max_bytes
        binary = {f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)}
        small = [n for n in schema.names if n not in binary]
        self.kwargs: dict[str, Any] = {
            "compression": {n: codecs.get(n, "snappy") for n in schema.names},
            "use_dictionary": small,  # dictionaries of encoded images only waste time
            "write_statistics": small,
            "write_page_index": True,
            "store_schema": True,
            # pyarrow fills pages write_batch_size values at a time (default 1024), so ~1 MB images made each
            # read batch one page of several MB; pages near data_page_size are written 2x faster (their
            # write() calls stay small enough for the kernel's fast path; docs/benchmarks.md)
            "write_batch_size": min(1024, max(1, DATA_PAGE_BYTES // max(row_bytes, 1))),
        }
        # content-defined pages let the Hub's Xet storage dedupe re-uploaded rows. Uncompressed images sit
        # verbatim in the file, so Xet finds them whatever the page boundaries: there, large chunks dedupe as
        # well as pyarrow's 256 KiB-1 MiB and hash ~1/7 of the bytes instead of all (docs/benchmarks.md)
        if cdc and supports_cdc():
            large = codecs.get(IMAGE_COLUMN) == "none"
            self.kwargs["use_content_defined_chunking"] = dict(CDC_UNCOMPRESSED) if large else True
        self.files: list[tuple[Path, int]] = []  # (path, rows)
        self._sink: pa.NativeFile | None = None
        self._file: KeptErrorFile | None = None
        self._writer: pq.ParquetWriter | None = None
        self._rows = 0
        self._groups = 0

    def _footer_estimate(self, row_groups: int, rows: int) -> int:
        """Bytes the footer (schema, row group metadata, page indexes) adds when the file is closed."""
        return 4096 + row_groups * len(self.schema) * 256 + rows * 64

    def write(self, table: pa.Table) -> None:
        """Write ``table`` as one row group, in a new file when the current one would pass ``max_bytes``."""
        if self._writer is not None and self._rows and self._sink is not None:
            after = self._sink.tell() + table.nbytes
            footer = self._footer_estimate(self._groups + 1, self._rows + table.num_rows)
            if after + footer > self.max_bytes:
                self._close_file()
        # room for the row group (encoded images barely compress; snappy may add a little) and the footer,
        # checked before the C++ writer sees a full disk (see KeptErrorFile)
        check_free_space(self.folder, int(table.nbytes * 1.02) + self._footer_estimate(1, table.num_rows))
        if self._writer is None:
            path = self.folder / f"part-{len(self.files):05d}.parquet"
            if (
                "use_content_defined_chunking" in self.kwargs
            ):  # its C++ aborts on a failed write: see KeptErrorFile
                self._file = KeptErrorFile(path)
                self._sink = pa.PythonFile(self._file, mode="w")
            else:  # raises a failed write as an OSError itself, and is faster (docs/benchmarks.md, "Full disks")
                self._sink = pa.OSFile(str(path), "wb")
            self._writer = pq.ParquetWriter(self._sink, self.schema, **self.kwargs)
            self.files.append((path, 0))
            self._rows = 0
            self._groups = 0
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        if self._file is not None:
            self._file.check()
        self._rows += table.num_rows
        self._groups += 1
        path, _ = self.files[-1]
        self.files[-1] = (path, self._rows)

    def _close_file(self) -> None:
        try:
            if self._writer is not None:
                writer, self._writer = self._writer, None
                writer.close()
        finally:
            if self._sink is not None:
                self._sink.close()
                self._sink = None
            if self._file is not None:
                file, self._file = self._file, None
                file.close()
                file.check()  # a write error of the footer

    def close(self) -> None:
        self._close_file()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._close_file()


class _RowGroups:
    """Collect record batches into row groups of ``rows`` rows (or fewer, past ROW_GROUP_MAX_BYTES)."""

    def __init__(self, writer: _ShardWriter, rows: int, schema: pa.Schema, task: RowsAndBytes) -> None:
        self.writer = writer
        self.rows = rows
        self.schema = schema
        self.task = task
        self._buf: list[pa.RecordBatch] = []
        self._n = 0
        self._bytes = 0
        self.lengths: list[pa.Array] = []  # encoded image length per written row, in order

    def add(self, batch: pa.RecordBatch) -> None:
        start = 0
        while start < batch.num_rows:
            take = min(self.rows - self._n, batch.num_rows - start)
            piece = batch.slice(start, take)
            self._buf.append(piece)
            self._n += take
            self._bytes += piece.nbytes
            start += take
            if self._n >= self.rows or self._bytes >= ROW_GROUP_MAX_BYTES:
                self.flush()

    def flush(self) -> None:
        if not self._n:
            return
        table = pa.Table.from_batches(self._buf, schema=self.schema)
        self.writer.write(table)
        lengths = pc.binary_length(table.column(IMAGE_COLUMN)).cast(pa.int64()).combine_chunks()
        self.lengths.append(lengths)
        self.task.advance(table.num_rows, int(pc.sum(lengths).as_py() or 0))
        self._buf, self._n, self._bytes = [], 0, 0


class _SplitRowGroups:
    """Route the output rows to the row groups of their split's writer.

    With splits, each row carries its split index in a trailing ``SPLIT_INDEX`` column (added when the row is
    read, so it stays right whatever drops a row on the way: --drop-bad-images, a --skip-bad transform, the
    shuffle); it is removed here, before the row is written.
    """

    def __init__(
        self, writers: list[_ShardWriter], rows: int, schema: pa.Schema, task: RowsAndBytes, split: bool
    ) -> None:
        self.parts = [_RowGroups(w, rows, schema, task) for w in writers]
        self.schema = schema
        self.split = split

    def add(self, batch: pa.RecordBatch) -> None:
        if not self.split:
            self.parts[0].add(batch)
            return
        idx = batch.column(batch.num_columns - 1).to_numpy()
        batch = pa.RecordBatch.from_arrays(batch.columns[:-1], schema=self.schema)
        for s in np.unique(idx).tolist():
            self.parts[s].add(batch if (idx == s).all() else batch.filter(pa.array(idx == s)))

    def flush(self) -> None:
        for p in self.parts:
            p.flush()

    @property
    def lengths(self) -> list[pa.Array]:
        return [a for p in self.parts for a in p.lengths]


class _Writers:
    """close/abort every split's writer at once."""

    def __init__(self, writers: list[_ShardWriter]) -> None:
        self.writers = writers

    def close(self) -> None:
        for w in self.writers:
            w.close()

    def abort(self) -> None:
        for w in self.writers:
            w.abort()


_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")
_SPLIT_ORDER = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "dev": 1, "test": 2}


def split_layout(df: pl.DataFrame, column: str) -> tuple[list[str], np.ndarray]:
    """(split names in Hub order: train, validation, test, then the rest by name; split index per row)."""
    if column not in df.columns:
        raise InputError(
            f"--split-column {column}: the manifest has no such column",
            "add one with `cfx split SOURCE -o split.parquet` and subset that manifest",
        )
    values = df.get_column(column).cast(pl.String)
    if values.null_count():
        raise InputError(
            f"--split-column {column}: {values.null_count():,} rows have no split",
            "give every row a split (e.g. with `cfx split`) or filter them out with --where",
        )
    names = sorted(values.unique().to_list(), key=lambda n: (_SPLIT_ORDER.get(n.lower(), 3), n))
    bad = [n for n in names if not _SPLIT_NAME.match(n)]
    if bad:
        raise InputError(
            f"--split-column {column}: {bad[0]!r} is not a valid Hub split name",
            "use letters, digits and underscores (dots between words), e.g. train, val, test, fold0",
        )
    index = values.replace_strict({n: i for i, n in enumerate(names)}, return_dtype=pl.Int64).to_numpy()
    return names, index


@dataclass
class _BadImages:
    """Rows whose image_data is null or empty, found while streaming: kept as they are, or dropped."""

    drop: bool
    positions: list[int] = field(default_factory=list)  # in source order, as _source_batches yields rows
    rows: list[tuple[str, int]] = field(default_factory=list)

    def check(
        self, batch: pa.RecordBatch, shard: str, src_rows: pa.Array, start: int
    ) -> tuple[pa.RecordBatch, pa.Array]:
        """Record the bad rows of ``batch`` (its first row is source-order position ``start``); returns the
        batch and its source rows, without the bad rows when they are dropped."""
        length = pc.binary_length(batch.column(IMAGE_COLUMN))
        bad = pc.fill_null(pc.equal(length, 0), True)
        if not pc.any(bad).as_py():
            return batch, src_rows
        where = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
        self.positions.extend(int(start + i) for i in where)
        rows = src_rows.to_pylist()
        self.rows.extend((shard, rows[i]) for i in where)
        if not self.drop:
            return batch, src_rows
        keep = pc.invert(bad)
        return batch.filter(keep), src_rows.filter(keep)

    def merge(self, part: _BadImages, start: int) -> None:
        """Take over what ``part`` found in the rows from source-order position ``start`` on."""
        self.positions += [start + p for p in part.positions]
        self.rows += part.rows

    def dropped_positions(self) -> list[int]:
        return self.positions if self.drop else []

    def warning(self, skipped: Collection[tuple[str, int]] = ()) -> str | None:
        """What became of the bad rows; ``skipped``: rows the transform stage left out (--skip-bad), which
        were not copied."""
        rows = self.rows if self.drop else [r for r in self.rows if r not in skipped]
        if not rows:
            return None  # every one was skipped by --skip-bad and is named in that warning
        shown = ", ".join(f"{s} row {r}" for s, r in rows[:5]) + (" …" if len(rows) > 5 else "")
        if self.drop:
            return f"dropped {len(rows):,} row(s) with null or empty image_data (--drop-bad-images): {shown}"
        return (
            f"{len(rows):,} row(s) have null or empty image_data, copied as they are: {shown} — "
            "add --drop-bad-images to leave them out"
        )


def _keyed_batches(
    plan: SubsetPlan, source: Manifest, schema: pa.Schema, provenance: bool, bad_images: _BadImages
) -> Iterator[KeyedBatch]:
    """Selected rows shard by shard, in source order, as record batches in the output schema (and, with
    splits, the ``SPLIT_INDEX`` column last)."""
    position = 0
    for sp in plan.shards:
        rows, splits = _shard_rows(plan, sp.shard)
        yield from _shard_batches(
            source, sp, rows, splits, plan.schema, schema, provenance, bad_images, position
        )
        position += sp.rows


def _shard_rows(plan: SubsetPlan, shard: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The selected rows of ``shard`` (ascending) and, with splits, their split index."""
    df = plan.manifest.df
    picked = df.filter(pl.col("shard") == shard).sort("row")
    splits = picked.get_column(SPLIT_INDEX).to_numpy() if SPLIT_INDEX in df.columns else None
    return picked.get_column("row").to_numpy(), splits


def _shard_batches(
    source: Manifest,
    sp: ShardPlan,
    rows: np.ndarray,
    splits: np.ndarray | None,
    source_schema: pa.Schema,
    schema: pa.Schema,
    provenance: bool,
    bad_images: _BadImages,
    position: int,
    hub_fs: Any = None,
) -> Iterator[KeyedBatch]:
    """The selected ``rows`` of one source shard, whose first is source-order ``position``, as
    ``_keyed_batches`` yields them."""
    base = source_schema.remove_metadata()
    per_row = sp.shard_bytes / max(sp.shard_rows, 1)
    batch_rows = int(min(READ_BATCH_ROWS, max(1, READ_BATCH_BYTES // max(per_row, 1))))
    for batch in iter_shard_batches(
        source, sp.shard, rows, columns=None, batch_rows=batch_rows, hub_fs=hub_fs
    ):
        src_rows = batch.column(ROW_COLUMN)
        data = batch.drop_columns([ROW_COLUMN])
        if not data.schema.equals(base):
            raise InputError(
                f"shard {sp.shard} changed its schema while being read ({_schema_diff(base, data.schema)})",
                "re-index the dataset",
            )
        start, position = position, position + data.num_rows
        data, src_rows = bad_images.check(data, sp.shard, src_rows, start)
        arrays = list(data.columns)
        if provenance:
            arrays += [pa.array([sp.shard] * data.num_rows, pa.string()), src_rows]
        if splits is not None:
            arrays.append(pa.array(splits[np.searchsorted(rows, src_rows.to_numpy())], pa.int64()))
        rb = pa.RecordBatch.from_arrays(arrays, schema=schema)
        yield KeyedBatch(sp.shard, src_rows.to_pylist(), rb)


def _source_batches(
    plan: SubsetPlan,
    source: Manifest,
    schema: pa.Schema,
    provenance: bool,
    bad_images: _BadImages,
    stage: TransformStage | None = None,
) -> Iterator[pa.RecordBatch]:
    """The rows to write, in source order: as read, or through the transform stage."""
    keyed = _keyed_batches(plan, source, schema, provenance, bad_images)
    for kb in stage.run(keyed) if stage is not None else keyed:
        yield kb.batch


def _output_schema(source: pa.Schema, provenance: bool) -> pa.Schema:
    if not provenance:
        return source
    schema = source.append(pa.field("source_shard", pa.string())).append(pa.field("source_row", pa.int64()))
    meta = dict(source.metadata or {})
    if b"huggingface" in meta:  # keep the datasets features in step with the columns
        with contextlib.suppress(ValueError, KeyError, TypeError):
            hf = json.loads(meta[b"huggingface"])
            feats = hf.get("info", {}).get("features")
            if isinstance(feats, dict):
                feats["source_shard"] = {"dtype": "string", "_type": "Value"}
                feats["source_row"] = {"dtype": "int64", "_type": "Value"}
                meta[b"huggingface"] = json.dumps(hf).encode()
    return schema.with_metadata(meta) if meta else schema


@dataclass
class SubsetResult:
    out: Path
    manifest: Manifest  # of the new dataset (also saved as DIR/manifest.parquet)
    files: list[WrittenFile]
    plan: SubsetPlan
    warnings: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.manifest)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "rows": self.rows,
            "bytes": self.bytes,
            "files": [{"name": f.name, "rows": f.rows, "bytes": f.bytes} for f in self.files],
            "source_shards": len(self.plan.shards),
            "by_label": dict(self.plan.counts("label")),
        }


def write_subset(
    manifest: Manifest,
    out: Path,
    *,
    order: str = "source",
    seed: int = 0,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    with_provenance: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    selection: str | None = None,
    cdc: bool = True,
    drop_bad_images: bool = False,
    transform: Pipeline | None = None,
    workers: int = 1,
    skip_bad: bool = False,
    split_column: str | None = None,
    joint_canary: bool = False,
    reporter: Reporter | None = None,
    engine: ShardEngine | None = None,
) -> SubsetResult:
    """Write the manifest's rows as a parquet dataset in ``out`` (data/, README.md, manifest.parquet).

    The output has exactly the source schema (plus ``source_shard``/``source_row`` with ``with_provenance``)
    and byte-identical images. ``command`` (the command line) and ``selection`` (the filters, in words) go
    into the dataset card. ``cdc=False`` turns off content-defined chunking (faster writes, less Hub dedupe).
    Rows with null or empty image_data are copied as they are (null stays null), or left out with
    ``drop_bad_images``; either way a warning names them.

    ``transform`` re-encodes the images on ``workers`` processes (cfx.transform_stage): ``format``,
    ``resolution``, ``mode`` follow the new bytes, the manifest keeps the source values. An image that cannot
    be transformed (a kept null image too) stops the write (BadImageError naming shard/row) or, with
    ``skip_bad``, is left out.

    ``split_column`` writes one Hub split per value of that column (``data/<split>-0000i-of-0000N.parquet``).
    The card's Evidence section is measured on the written rows (cfx.evidence); ``joint_canary`` adds the
    joint shortcut canary to it (seconds of model fitting).

    With ``engine`` (cfx.engine_ray) each source shard is one task on the cluster that reads (and transforms)
    its rows into a part file in the build folder; this process writes the parts' rows, in order, through the
    same writer, so the files are the same bytes as the local engine's (cfx.subset_parts).
    """
    reporter = reporter or NullReporter()
    if row_group_rows < 1:
        raise UsageError("--row-group-size must be at least 1", "the default is 100 rows")
    if max_shard_bytes < 1:
        raise UsageError("--max-shard-size must be positive", "e.g. 500MB")
    out_abs = check_output(manifest, out, overwrite)
    plan, names = _plan(manifest, order, seed, split_column, reporter)
    parent = out_abs.parent
    bad_shards: list[BadShardError] = []
    with atomic_folder(out_abs, overwrite=overwrite, warn=reporter.warn) as tmp:
        _check_space(parent, int(plan.est_bytes * (2.05 if order == "shuffle" else 1.05)) + (16 << 20))
        while True:  # once, or once more per shard that --skip-bad leaves out
            _fresh_data_folder(tmp, parent)
            bad_images = _BadImages(drop=drop_bad_images)
            stage = _transform_stage(transform, seed, workers, skip_bad)
            try:
                files, new = _write_rows(
                    tmp,
                    plan,
                    manifest,
                    out_abs,
                    with_provenance,
                    row_group_rows,
                    max_shard_bytes,
                    cdc,
                    reporter,
                    command,
                    bad_images,
                    stage,
                    names,
                    engine,
                )
                break
            except BadShardError as exc:
                if not skip_bad or exc.shard in {e.shard for e in bad_shards}:
                    raise
                # rows of the shard already written are in files that are thrown away: the write starts over
                # without the shard (a bad page is found only by reading it; bad shards are rare)
                bad_shards.append(exc)
                plan, names = _plan(_without(manifest, bad_shards), order, seed, split_column, reporter)
        if bad_images.drop and bad_images.rows and not len(new):
            raise EmptySelectionError(
                f"every selected row ({plan.rows:,}) has null or empty image_data: nothing to write",
                "leave out --drop-bad-images to copy them as they are, or select other rows",
            )
        info = CardInfo(
            title=out_abs.name,
            schema=_output_schema(plan.schema, with_provenance),
            manifest=new,
            files=files,
            source_root=manifest.root,
            source_history=list(manifest.history),
            licenses=source_licenses(manifest, plan.manifest.df),
            command=command,
            selection=selection,
            order=order,
            seed=seed,
            cfx_version=__version__,
            transforms=transform.spec if stage is not None and transform is not None else None,
            skipped=len(stage.skipped) if stage is not None else 0,
            splits=[(n, sum(f.rows for f in files if f.name.startswith(f"{DATA_DIR}/{n}-"))) for n in names]
            if names
            else None,
            evidence=measure_evidence(new, split_column=split_column, joint=joint_canary, seed=seed),
        )
        new.write(tmp / "manifest.parquet")
        write_atomic(tmp / "README.md", lambda p: Path(p).write_text(render_card(info), encoding="utf-8"))
    warnings = _skipped_warnings(stage, reporter)
    skipped = {(e.shard, e.row) for e in stage.skipped} if stage is not None else set()
    if bad_shards:
        text = _bad_shards_message(bad_shards)
        reporter.warn(text)
        warnings.append(text)
    warning = bad_images.warning(skipped)
    if warning:
        reporter.warn(warning)
        warnings.append(warning)
    return SubsetResult(out=out_abs, manifest=new, files=files, plan=plan, warnings=warnings)


def _plan(
    manifest: Manifest, order: str, seed: int, split_column: str | None, reporter: Reporter
) -> tuple[SubsetPlan, list[str] | None]:
    """The subset's plan, with each row's split index when writing one split per ``split_column`` value."""
    plan = plan_subset(manifest, order=order, seed=seed, reporter=reporter)
    if not split_column:
        return plan, None
    names, index = split_layout(plan.manifest.df, split_column)
    df = plan.manifest.df.with_columns(pl.Series(SPLIT_INDEX, index))
    return replace(plan, manifest=plan.manifest.with_df(df)), names


def _without(manifest: Manifest, bad: list[BadShardError]) -> Manifest:
    """``manifest`` without the rows of the ``bad`` shards (EmptySelectionError when none is left)."""
    df = manifest.df.filter(~pl.col("shard").is_in([e.shard for e in bad]))
    if not df.height:
        raise EmptySelectionError(
            f"every selected row is in a shard that cannot be read ({_bad_shards_message(bad)})",
            "re-fetch the shards (`cfx download`) or select rows of other shards",
        )
    return manifest.with_df(df)


def _bad_shards_message(bad: list[BadShardError]) -> str:
    return f"skipped {len(bad):,} shard(s) that cannot be read (--skip-bad): " + "; ".join(
        e.message for e in bad
    )


def _fresh_data_folder(tmp: Path, parent: Path) -> None:
    """An empty ``tmp/data`` (a write that started over leaves its files there)."""
    shutil.rmtree(tmp / DATA_DIR, ignore_errors=True)
    try:
        (tmp / DATA_DIR).mkdir()
    except OSError as exc:
        raise output_error(parent, exc, "cannot write into") from None


def _transform_stage(
    transform: Pipeline | None, seed: int, workers: int, skip_bad: bool
) -> TransformStage | None:
    if transform is None or transform.is_empty:
        return None
    from cfx.transform_stage import TransformStage

    return TransformStage(
        transform, seed=seed, workers=max(1, min(workers, os.cpu_count() or 1)), skip_bad=skip_bad
    )


def _skipped_warnings(stage: TransformStage | None, reporter: Reporter) -> list[str]:
    """One warning naming the images --skip-bad left out."""
    if stage is None or not stage.skipped:
        return []
    text = skipped_message(stage.skipped)
    reporter.warn(text)
    return [text]


def skipped_message(skipped: list[BadImageError]) -> str:
    """The warning naming the images --skip-bad left out (the first five; cfx export too)."""
    names = ", ".join(e.message for e in skipped[:5])
    more = f" and {len(skipped) - 5:,} more" if len(skipped) > 5 else ""
    return f"skipped {len(skipped):,} image(s) that could not be transformed: {names}{more}"


def _check_not_all_skipped(stage: TransformStage | None) -> None:
    """EmptySelectionError when --skip-bad left out every selected image (before anything is renamed)."""
    if stage is not None and stage.skipped and not stage.records().height:
        raise EmptySelectionError(
            f"none of the {len(stage.skipped):,} selected images could be transformed "
            f"(first: {stage.skipped[0].message})",
            "check the source images and the --transform specs",
        )


def _write_rows(
    tmp: Path,
    plan: SubsetPlan,
    manifest: Manifest,
    out_abs: Path,
    with_provenance: bool,
    row_group_rows: int,
    max_shard_bytes: int,
    cdc: bool,
    reporter: Reporter,
    command: str | None,
    bad_images: _BadImages,
    stage: TransformStage | None,
    splits: list[str] | None,
    engine: ShardEngine | None = None,
) -> tuple[list[WrittenFile], Manifest]:
    """The selected rows into ``tmp/data/`` (final file names, one set per split); returns the files and the
    new manifest."""
    schema = _output_schema(plan.schema, with_provenance)
    stream = schema.append(pa.field(SPLIT_INDEX, pa.int64())) if splits else schema
    row_bytes = plan.est_bytes // max(plan.rows, 1)
    names = splits or [SPLIT]
    folders = [tmp / DATA_DIR / (f".{name}" if splits else "") for name in names]
    writers = _Writers(
        [_ShardWriter(f, schema, plan.codecs, max_shard_bytes, cdc=cdc, row_bytes=row_bytes) for f in folders]
    )
    task = RowsAndBytes(reporter, f"Writing {plan.rows:,} rows", plan.rows)
    try:
        for folder in folders if splits else []:
            folder.mkdir()
        groups = _SplitRowGroups(writers.writers, row_group_rows, schema, task, split=bool(splits))
        if engine is not None:  # cfx.subset_parts.write_on, called by the engine (it imports this module)
            engine.write_subset_parts(plan, manifest, stream, with_provenance, groups, tmp, bad_images, stage)
        elif plan.order == "shuffle":
            _write_shuffled(plan, manifest, stream, with_provenance, groups, tmp, bad_images, stage)
        else:
            for batch in _source_batches(plan, manifest, stream, with_provenance, bad_images, stage):
                groups.add(batch)
        groups.flush()
        writers.close()
        files = [
            f
            for name, w in zip(names, writers.writers, strict=True)
            for f in _finalize_files(tmp, w.files, name)
        ]
        for folder in folders if splits else []:
            folder.rmdir()
    except OSError as exc:
        writers.abort()
        raise OutputError(
            f"cannot write the subset into {out_abs.parent}: {exc.strerror or _first_line(exc)}",
            "check free disk space and permissions; nothing was left behind",
        ) from None
    except BaseException:
        writers.abort()
        raise
    finally:
        task.close()
    _check_not_all_skipped(stage)
    if splits:  # the files hold the rows split by split, each in plan order
        df = plan.manifest.df.sort(SPLIT_INDEX, maintain_order=True).drop(SPLIT_INDEX)
        plan = replace(plan, manifest=plan.manifest.with_df(df))
    dropped = bad_images.rows if bad_images.drop else []
    new = _new_manifest(
        plan, manifest, files, groups.lengths, out_abs, tmp, command or "cfx subset", dropped, stage
    )
    return files, new


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _write_shuffled(
    plan: SubsetPlan,
    source: Manifest,
    schema: pa.Schema,
    provenance: bool,
    groups: _SplitRowGroups,
    tmp: Path,
    bad_images: _BadImages,
    stage: TransformStage | None = None,
) -> None:
    """Spill the rows in source order, one record batch per row, then write them in the shuffled order.

    The spill is an Arrow IPC file read back with positioned reads (no memory map), one row at a time, so
    memory stays at a row group whatever the selection; it costs one extra write and read of the bytes.
    """
    assert plan.source_index is not None
    spill = tmp / ".shuffle.arrow"
    with pa.OSFile(str(spill), "wb") as sink, ipc.new_file(sink, schema) as writer:
        for batch in _source_batches(plan, source, schema, provenance, bad_images, stage):
            for i in range(batch.num_rows):
                writer.write_batch(batch.slice(i, 1))
    # rows dropped as bad images, then rows the transform skipped, leave the permutation (in that order)
    dropped = bad_images.dropped_positions()
    order = shuffle_order(plan.source_index, dropped, plan.rows)
    if stage is not None:
        order = shuffle_order(order, stage.skipped_positions, plan.rows - len(dropped))
    with pa.OSFile(str(spill), "rb") as src:
        reader = ipc.open_file(src)
        if reader.num_record_batches != len(order):
            raise OutputError(
                f"the shuffle spill holds {reader.num_record_batches:,} rows, not {len(order):,}",
                "this is a bug in cfx; please report it with CFX_DEBUG=1",
            )
        for i in order:
            groups.add(reader.get_batch(int(i)))
    spill.unlink()


def _finalize_files(tmp: Path, parts: list[tuple[Path, int]], split: str = SPLIT) -> list[WrittenFile]:
    """Rename data/part-N.parquet to the Hub's data/<split>-0000N-of-0000M.parquet."""
    n = len(parts)
    files = []
    for i, (path, rows) in enumerate(parts):
        name = f"{DATA_DIR}/{split}-{i:05d}-of-{n:05d}.parquet"
        os.replace(path, tmp / name)
        meta = pq.read_metadata(tmp / name)
        data = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
        files.append(WrittenFile(name=name, rows=rows, bytes=(tmp / name).stat().st_size, data_bytes=data))
    return files


def _new_manifest(
    plan: SubsetPlan,
    source: Manifest,
    files: list[WrittenFile],
    lengths: list[pa.Array],
    out_abs: Path,
    tmp: Path,
    command: str,
    dropped: list[tuple[str, int]],
    stage: TransformStage | None = None,
) -> Manifest:
    """The manifest of the written dataset: same metadata, pointers into the new shards, provenance columns."""
    df = plan.manifest.df
    if dropped:
        key = pl.col("shard") + pl.lit("\x00") + pl.col("row").cast(pl.String)
        df = df.filter(~key.is_in([f"{s}\x00{r}" for s, r in dropped]))
    if stage is not None:
        df = transformed_rows(df, stage.records())
    shard_col = np.repeat(np.array([f.name for f in files], dtype=object), [f.rows for f in files])
    row_col = (
        np.concatenate([np.arange(f.rows, dtype=np.int64) for f in files]) if files else np.empty(0, np.int64)
    )
    # A null image has a null length: a polars Series keeps it (numpy would need a copy to hold it).
    nbytes = pl.Series("num_bytes", pa.concat_arrays(lengths) if lengths else pa.array([], pa.int64()))
    if not (len(shard_col) == len(nbytes) == df.height):
        raise OutputError(
            f"wrote {len(nbytes):,} rows but {df.height:,} were selected",
            "this is a bug in cfx; please report it with CFX_DEBUG=1",
        )
    extra = {"source_shard": df.get_column("shard"), "source_row": df.get_column("row")}
    new_df = df.with_columns(
        pl.Series("shard", shard_col, dtype=pl.String),
        pl.Series("row", row_col, dtype=pl.Int64),
        nbytes.cast(pl.Int64),
        *(s.alias(name) for name, s in extra.items()),
    )
    shards = {}
    for f in files:
        st = (tmp / f.name).stat()
        shards[f.name] = ShardInfo(size=st.st_size, mtime_ns=st.st_mtime_ns)
    made = lineage.entry(command, lineage.noted_inputs() or [lineage.input_fingerprint(source.root, source)])
    return Manifest(
        df=new_df,
        root=str(out_abs),
        shards=shards,
        history=[*source.history, command],
        lineage=[*source.lineage, made],
    )


_DESCRIBED = ("image_name", "format", "resolution", "mode", "width", "height", "num_bytes")
# Facts about the source bytes (cfx dedupe / inspect) that the new bytes do not share: kept as source_<name>.
_BYTE_FACTS: tuple[str, ...] = (
    "phash",
    "dhash",
    "near_uniform",
    "hash_error",
    "jpeg_quality",
    "jpeg_quality_exact",
)
_BYTE_FACTS += ("chroma_subsampling", "progressive", "bit_depth", "has_exif", "has_gps", "has_icc")
_BYTE_FACTS += (
    "text_chunks",
    "has_c2pa",
    "actual_format",
    "format_mismatch",
    "size_mismatch",
    "mode_mismatch",
)
_BYTE_FACTS += ("inspect_error",)


def transformed_rows(df: pl.DataFrame, records: pl.DataFrame) -> pl.DataFrame:
    """The selected rows that were written (skipped ones dropped, order kept), described by their new bytes;
    the source's values kept as ``source_<column>``, with ``transform`` and ``source_sha256``. ``records``:
    per written row its source ``shard``/``row``, ``transform``, ``source_sha256`` and the new ``_format``,
    ``_width``, ``_height``, ``_mode`` (:meth:`cfx.transform_stage.TransformStage.records`; cfx export too)."""
    from cfx.transform_stage import renamed, resolution_like

    df = df.drop([c for c in ("transform", "source_sha256", "sha256") if c in df.columns])
    df = df.join(records, on=["shard", "row"], how="inner", maintain_order="left")
    df = df.with_columns(pl.col(c).alias(f"source_{c}") for c in _DESCRIBED if c in df.columns)
    df = df.rename({c: f"source_{c}" for c in _BYTE_FACTS if c in df.columns})
    new: list[pl.Series | pl.Expr] = [pl.col("_width").alias("width"), pl.col("_height").alias("height")]
    new += [pl.col("_format").alias("format"), pl.col("_mode").alias("mode")]
    if "resolution" in df.columns:  # in the type it has here (text in a manifest, a list in a list's export)
        blank: list[int] | None = (
            [] if isinstance(df.schema["resolution"], pl.List) else None
        )  # a null takes the column's form
        res = [
            resolution_like(blank if r is None else r, w, h, bool(hw))
            for r, w, h, hw in zip(
                df["resolution"].to_list(),
                df["_width"].to_list(),
                df["_height"].to_list(),
                df["_hw"].to_list(),
                strict=True,
            )
        ]
        new.append(pl.Series("resolution", res, dtype=df.schema["resolution"]))
    if "image_name" in df.columns:
        names = [
            renamed(n, f) for n, f in zip(df["image_name"].to_list(), df["_format"].to_list(), strict=True)
        ]
        new.append(pl.Series("image_name", names, dtype=pl.String))
    return df.with_columns(new).drop("_format", "_width", "_height", "_mode", "_hw")


__all__ = [
    "DEFAULT_MAX_SHARD_BYTES",
    "DEFAULT_ROW_GROUP_ROWS",
    "PROVENANCE_COLUMNS",
    "REAL",
    "SubsetPlan",
    "SubsetResult",
    "check_output",
    "plan_subset",
    "skipped_message",
    "transformed_rows",
    "write_subset",
]
