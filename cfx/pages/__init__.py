"""A page-level reader of one binary parquet column (the image bytes), in constant memory per reader.

pyarrow decodes a whole page (compressed and uncompressed copies) before it yields a row, and the real shards
hold the image column in 0.4–1.4 GB pages. This package walks the column's page headers from the footer's
offsets, decompresses each page as a stream and takes the wanted rows' values one at a time, skipping the row
groups and pages that hold none of them. The rest of cfx uses only what is exported here (through cfx.stream).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from cfx.pages.codecs import Unsupported
from cfx.pages.layout import Layout, read_layout
from cfx.pages.reader import CHUNK, Source, chunks, iter_chunk, unsupported

__all__ = [
    "CHUNK",
    "Layout",
    "RowGroupRows",
    "Source",
    "Unsupported",
    "iter_column",
    "open_source",
    "read_layout",
    "row_groups",
    "unsupported",
]


@dataclass(frozen=True)
class RowGroupRows:
    """The wanted rows of one row group: its index, its first row in the file, the rows inside it."""

    index: int
    first: int
    rows: np.ndarray | None  # None: all


def row_groups(pf: pq.ParquetFile, wanted: np.ndarray | None) -> list[RowGroupRows]:
    """The row groups holding ``wanted`` rows (sorted; None: all rows), each with its rows."""
    meta = pf.metadata
    out, first = [], 0
    for rg in range(meta.num_row_groups):
        n = meta.row_group(rg).num_rows
        if wanted is None:
            out.append(RowGroupRows(rg, first, None))
        else:
            lo, hi = np.searchsorted(wanted, [first, first + n])
            if hi > lo:
                out.append(RowGroupRows(rg, first, wanted[lo:hi] - first))
        first += n
    return out


def iter_column(
    src: Source, pf: pq.ParquetFile, column: str, group: RowGroupRows
) -> Iterator[tuple[int, bytes | None]]:
    """(row in file, value or None for a null) of ``group``'s rows of ``column``, in row order.

    Raises Unsupported (before or while reading) for what the reader does not decode, EOFError for a
    damaged file."""
    chunk = chunks(pf, column)[group.index]
    for row, value in iter_chunk(src, chunk, group.rows):
        yield group.first + row, value


@contextmanager
def open_source(path: str, fs: Any = None) -> Iterator[Source]:
    """A handle for positioned reads of a local file, or of ``path`` on ``fs`` (HfFileSystem for hf://: each
    read fetches exactly the range asked for)."""
    if fs is not None:
        handle = fs.open(path, "rb", block_size=CHUNK, cache_type="none")
    else:
        handle = open(path, "rb", buffering=0)  # noqa: SIM115 (closed below)
    try:
        yield Source(handle)
    finally:
        handle.close()
