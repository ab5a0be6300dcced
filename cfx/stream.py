"""Stream selected rows (with their image bytes) out of source shards, with bounded memory.

Shards are single multi-GB row groups, so rows are read in small record batches (``pre_buffer=False``,
a small ``buffer_size``) and only the selected rows of each batch are kept. Memory stays at a few batches
whatever the shard size. Before reading, each shard is checked against the fingerprint the manifest recorded,
so a manifest never silently points at moved or changed data.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cfx import pages
from cfx.errors import BadShardError, InputError
from cfx.index import open_shard
from cfx.manifest import Manifest, ShardInfo
from cfx.progress import Reporter
from cfx.schema import IMAGE_COLUMN
from cfx.sources import HubSpec, ShardRef, hub_filesystem, is_network_error
from cfx.units import human_bytes, parse_size

ROW_COLUMN = "__row"
DEFAULT_BATCH_ROWS = 16
# Peak RSS of one process reading images (interpreter and libraries, a batch of ~1 MB images decoded, the page
# reader's buffers), whatever the page size: measured by bench/bench_pages.py (docs/benchmarks.md).
READER_MB = 400
MEMORY_ENV = "CFX_MEMORY"  # the memory cfx may plan for (e.g. 8GB); default: what the system has available


def available_memory() -> int:
    """Bytes the planned readers may use: $CFX_MEMORY, else MemAvailable (else the physical memory)."""
    if os.environ.get(MEMORY_ENV):
        return parse_size(os.environ[MEMORY_ENV], MEMORY_ENV)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def planned_readers(workers: int, reporter: Reporter | None = None) -> int:
    """``workers`` processes reading images, capped so their READER_MB each fit the available memory (said
    once through ``reporter`` when capped)."""
    avail = available_memory()
    fit = max(1, avail // (READER_MB << 20))
    if workers <= fit:
        return workers
    if reporter is not None:
        reporter.warn(
            f"--workers {workers} capped to {fit}: each worker reading images needs up to ~{READER_MB} MB and "
            f"{human_bytes(avail)} is available (set {MEMORY_ENV}, e.g. {MEMORY_ENV}=16GB, to plan for another budget)"
        )
    return int(fit)


@dataclass(frozen=True)
class ShardRows:
    """The rows of one shard a command needs, in ascending order."""

    shard: str
    rows: np.ndarray


def rows_by_shard(manifest: Manifest) -> list[ShardRows]:
    """Group the manifest's (shard, row) pointers by shard, in the manifest's shard order of first appearance."""
    df = manifest.df.select("shard", "row")
    out = []
    for (shard,), part in df.group_by("shard", maintain_order=True):
        rows = np.unique(part.get_column("row").to_numpy())
        out.append(ShardRows(shard=str(shard), rows=rows))
    return out


def shard_ref(manifest: Manifest, shard: str, hub_fs: Any = None) -> tuple[ShardRef, Any]:
    """Locate a shard of the manifest and check it is the file that was indexed. Returns (ref, fs).

    ``hub_fs``: the HfFileSystem for hf:// manifests (default: one for this process's Hub settings).
    """
    info = manifest.shards.get(shard)
    if manifest.is_remote:
        hub = HubSpec.parse(manifest.root)
        path = f"datasets/{hub.repo_id}@{hub.revision}/{shard}"
        return ShardRef(rel=shard, path=path, info=info or ShardInfo(size=0)), hub_fs or hub_filesystem()
    local = Path(manifest.root) / shard
    try:
        st = local.stat()
    except FileNotFoundError:
        raise InputError(
            f"shard {shard} is missing under {manifest.root}",
            "the dataset moved or was deleted: re-index it (`cfx index NEWPATH -o manifest.parquet`)",
        ) from None
    if info is not None and (
        st.st_size != info.size or (info.mtime_ns is not None and st.st_mtime_ns != info.mtime_ns)
    ):
        raise InputError(
            f"shard {shard} changed since the manifest was made (size {info.size:,} → {st.st_size:,} bytes"
            + (", modified" if st.st_size == info.size else "")
            + ")",
            "re-index the dataset so rows point at the right images",
        )
    return ShardRef(
        rel=shard, path=str(local), info=info or ShardInfo(size=st.st_size, mtime_ns=st.st_mtime_ns)
    ), None


def iter_shard_batches(
    manifest: Manifest,
    shard: str,
    rows: np.ndarray | None = None,
    columns: Sequence[str] | None = ("image_data",),
    batch_rows: int = DEFAULT_BATCH_ROWS,
    hub_fs: Any = None,
) -> Iterator[pa.RecordBatch]:
    """Record batches of ``columns`` (None: all) for ``rows`` (None: all) of one shard, plus a ``__row`` column.

    Batches hold at most ``batch_rows`` source rows. The image column is read by cfx.pages (constant memory
    whatever the page size; only the row groups and pages holding wanted rows are read); a shard it cannot
    decode is read by pyarrow, which holds a whole page, and that is said once on stderr.
    A shard that ends early or cannot be decoded raises BadShardError naming it.
    """
    ref, fs = shard_ref(manifest, shard, hub_fs)
    wanted = None if rows is None else np.asarray(rows, dtype=np.int64)
    with open_shard(ref, fs) as pf:
        names = pf.schema_arrow.names
        cols = None if columns is None else list(columns)
        if cols is not None:
            missing = [c for c in cols if c not in names]
            if missing:
                raise BadShardError(
                    shard, f"missing column(s) {', '.join(missing)}", "is this a Community Forensics shard?"
                )
        total = pf.metadata.num_rows
        if wanted is not None and wanted.size and (wanted[-1] >= total or wanted[0] < 0):
            raise InputError(
                f"manifest points at row {int(wanted[-1])} of {shard}, which has {total:,} rows",
                "the shard changed since indexing: re-index the dataset",
            )
        read = _Read(shard, pf, cols or names, batch_rows, fs)
        count = 0
        for batch in read.batches(ref, wanted):
            count += batch.num_rows
            yield batch
        expected = total if wanted is None else int(wanted.size)
        if count != expected:
            raise BadShardError(
                shard, f"ended after {count:,} of {expected:,} rows", "the file is truncated; re-fetch it"
            )


_NOTED: set[str] = set()


def _note_once(reason: str) -> None:
    if reason not in _NOTED:
        _NOTED.add(reason)
        print(
            f"note: the image column is read by pyarrow where {reason} is used (cfx's page reader does not "
            "decode it): memory grows with the page size",
            file=sys.stderr,
        )


@dataclass
class _Read:
    """One read of a shard: the image column through cfx.pages, the other columns (small) through pyarrow."""

    shard: str
    pf: Any
    cols: list[str]
    batch_rows: int
    fs: Any
    done: int = -1  # the last row yielded

    def batches(self, ref: ShardRef, wanted: np.ndarray | None) -> Iterator[pa.RecordBatch]:
        paged = IMAGE_COLUMN in self.cols
        why = pages.unsupported(self.pf, IMAGE_COLUMN) if paged else None
        try:
            if paged and why is None:
                with pages.open_source(ref.path, self.fs) as src:
                    yield from self._paged(src, wanted)
                return
        except pages.Unsupported as exc:
            why = str(exc)
        except (EOFError, pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
            if self.fs is not None and is_network_error(exc):
                raise  # open_shard reports it as a NetworkError
            raise BadShardError(
                self.shard,
                f"cannot read row {self.done + 1} or later ({str(exc).splitlines()[0][:200]})",
                "the file may be truncated; re-fetch it",
            ) from None
        if why is not None:
            _note_once(why)
        rest = wanted if wanted is None or self.done < 0 else wanted[wanted > self.done]
        yield from self._arrow(rest, self.done + 1 if wanted is None else 0)

    def _paged(self, src: pages.Source, wanted: np.ndarray | None) -> Iterator[pa.RecordBatch]:
        image_type = self.pf.schema_arrow.field(IMAGE_COLUMN).type
        for group in pages.row_groups(self.pf, wanted):
            others = self._others(group)
            rows: list[int] = []
            values: list[bytes | None] = []
            for row, value in pages.iter_column(src, self.pf, IMAGE_COLUMN, group):
                rows.append(row)
                values.append(value)
                if len(rows) == self.batch_rows:
                    yield self._batch(others, rows, values, image_type)
                    rows, values = [], []
            if rows:
                yield self._batch(others, rows, values, image_type)

    def _others(self, group: pages.RowGroupRows) -> Iterator[pa.Table] | None:
        """The wanted rows of the other columns of one row group (metadata: small next to the images), in
        slices of one batch."""
        others = [c for c in self.cols if c != IMAGE_COLUMN]
        if not others:
            return None
        table = self.pf.read_row_group(group.index, columns=others, use_threads=False)
        if group.rows is not None:
            table = table.take(pa.array(group.rows))
        return _slices(table, self.batch_rows)

    def _batch(
        self,
        others: Iterator[pa.Table] | None,
        rows: list[int],
        values: list[bytes | None],
        image_type: pa.DataType,
    ) -> pa.RecordBatch:
        self.done = rows[-1]
        arrays: dict[str, pa.Array] = {IMAGE_COLUMN: pa.array(values, image_type)}
        if others is not None:
            part = next(others)
            arrays.update({c: part.column(c).combine_chunks() for c in part.column_names})
        arrays[ROW_COLUMN] = pa.array(rows, pa.int64())
        names = [*self.cols, ROW_COLUMN]
        return pa.RecordBatch.from_arrays([arrays[c] for c in names], names=names)

    def _arrow(self, wanted: np.ndarray | None, first: int) -> Iterator[pa.RecordBatch]:
        """pyarrow's reader (whole pages in memory), row group by row group, from row ``first``."""
        for group in pages.row_groups(self.pf, wanted):
            start = group.first
            idx_all = None if group.rows is None else group.rows + group.first
            try:
                for batch in self.pf.iter_batches(
                    batch_size=self.batch_rows, row_groups=[group.index], columns=self.cols, use_threads=False
                ):
                    n = batch.num_rows
                    if idx_all is None:
                        idx = np.arange(max(first - start, 0), n)
                    else:
                        idx = idx_all[(idx_all >= start) & (idx_all < start + n)] - start
                    if idx.size:
                        picked = batch.take(pa.array(idx)) if idx.size != n else batch
                        yield picked.append_column(ROW_COLUMN, pa.array(idx + start, pa.int64()))
                    start += n
                    if idx_all is not None and start > idx_all[-1]:
                        break
            except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
                if self.fs is not None and is_network_error(exc):
                    raise  # open_shard reports it as a NetworkError
                raise BadShardError(
                    self.shard,
                    f"cannot read rows after row {start} ({str(exc).splitlines()[0][:200]})",
                    "the file may be truncated; re-fetch it",
                ) from None


def _slices(table: pa.Table, n: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, n):
        yield table.slice(start, n)


def shard_layout(ref: ShardRef, fs: Any = None) -> pages.Layout:
    """The physical layout of one shard's image column: row groups, pages (only the page headers are read)."""
    with open_shard(ref, fs) as pf:
        if IMAGE_COLUMN not in pf.schema_arrow.names:
            raise BadShardError(ref.rel, f"no {IMAGE_COLUMN} column", "is this a Community Forensics shard?")
        with pages.open_source(ref.path, fs) as src:
            try:
                return pages.read_layout(src, pf, IMAGE_COLUMN)
            except EOFError as exc:
                raise BadShardError(
                    ref.rel, f"cannot read its page headers ({exc})", "the file may be truncated; re-fetch it"
                ) from None


def iter_images(
    manifest: Manifest, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[tuple[str, int, bytes | None]]:
    """(shard, row, encoded image bytes) for every manifest row, shard by shard (the manifest's row order is not
    kept). A row whose image_data is null gives None: a bad row for the caller to record, not an error."""
    for part in rows_by_shard(manifest):
        for batch in iter_shard_batches(manifest, part.shard, part.rows, ("image_data",), batch_rows):
            rows = batch.column(ROW_COLUMN).to_pylist()
            for row, data in zip(rows, batch.column(0).to_pylist(), strict=True):
                yield part.shard, row, data
