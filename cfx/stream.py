"""Stream selected rows (with their image bytes) out of source shards, with bounded memory.

Shards are single multi-GB row groups, so rows are read in small record batches (``pre_buffer=False``,
a small ``buffer_size``) and only the selected rows of each batch are kept. Memory stays at a few batches
whatever the shard size. Before reading, each shard is checked against the fingerprint the manifest recorded,
so a manifest never silently points at moved or changed data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cfx.errors import BadShardError, InputError
from cfx.index import open_shard
from cfx.manifest import Manifest, ShardInfo
from cfx.sources import HubSpec, ShardRef, hub_filesystem, is_network_error

ROW_COLUMN = "__row"
DEFAULT_BATCH_ROWS = 16


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

    Batches hold at most ``batch_rows`` source rows, so memory is bounded by the largest images in them.
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
        start = 0
        pos = 0  # next index into wanted
        last = int(wanted[-1]) if wanted is not None and wanted.size else -1
        try:
            for batch in pf.iter_batches(batch_size=batch_rows, columns=cols, use_threads=False):
                n = batch.num_rows
                if wanted is None:
                    idx = np.arange(n)
                else:
                    end = np.searchsorted(wanted, start + n, side="left")
                    idx = wanted[pos:end] - start
                    pos = int(end)
                if idx.size:
                    picked = batch.take(pa.array(idx)) if idx.size != n else batch
                    yield picked.append_column(ROW_COLUMN, pa.array(idx + start, pa.int64()))
                start += n
                if wanted is not None and start > last:
                    break
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
            if fs is not None and is_network_error(exc):
                raise  # open_shard reports it as a NetworkError
            raise BadShardError(
                shard,
                f"cannot read rows after row {start} ({str(exc).splitlines()[0][:200]})",
                "the file may be truncated; re-fetch it",
            ) from None
        if wanted is None and start != total or wanted is not None and pos != wanted.size:
            raise BadShardError(
                shard, f"ended after {start:,} of {total:,} rows", "the file is truncated; re-fetch it"
            )


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
