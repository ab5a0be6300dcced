"""The transform stage of ``cfx subset --transform``: source record batches in, transformed batches out.

Batches (a few source rows each) are transformed by this process and a pool of ``workers - 1`` (encoding is
CPU-bound; cfx.pool.shared_map) and come back in order; at most ``4 * workers`` batches are in flight, so
memory stays bounded whatever the selection. Each output row keeps
the source schema with ``image_data`` replaced and ``format`` / ``resolution`` / ``mode`` (and the extension
of ``image_name``) describing the new bytes. What each row was before, and what was done to it, is kept for
the subset's manifest (:meth:`TransformStage.records`).
"""

from __future__ import annotations

import re
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa

from cfx.formats import EXTENSIONS, extension
from cfx.pool import shared_map
from cfx.schema import IMAGE_COLUMN

if TYPE_CHECKING:
    from cfx.transform import BadImageError, Pipeline, Transformed

_RES_PARTS = re.compile(r"^(\D*)(\d+)(\D+)(\d+)(\D*)$")
_IMAGE_EXT = re.compile(r"\.(" + "|".join(sorted({*EXTENSIONS.values(), "jpeg", "tif"})) + r")$", re.I)


# What the stage records per written row besides its source (shard, row): the transform applied, the source's
# sha256 and the new bytes' facts (renamed onto the manifest by cfx.subset.transformed_rows; cfx.export's
# workers report the same columns)
RECORD_COLUMNS: dict[str, pl.DataType | type[pl.DataType]] = {
    "transform": pl.String,
    "source_sha256": pl.String,
    "_format": pl.String,
    "_width": pl.Int32,
    "_height": pl.Int32,
    "_mode": pl.String,
}


@dataclass(frozen=True)
class KeyedBatch:
    """Source rows of one shard: ``rows`` are their row numbers there, ``batch`` the rows (output schema)."""

    shard: str
    rows: list[int]
    batch: pa.RecordBatch


def resolution_like(source: str | None, width: int, height: int) -> str:
    """``width`` and ``height`` written the way ``source`` writes a resolution (``[512, 512]`` by default)."""
    m = _RES_PARTS.match(source or "")
    if not m:
        return f"[{width}, {height}]"
    return f"{m.group(1)}{width}{m.group(3)}{height}{m.group(5)}"


def renamed(name: str | None, fmt: str) -> str | None:
    """``name`` with its image extension changed to ``fmt``'s (00001.png -> 00001.jpg); others unchanged."""
    ext = extension(fmt)
    m = _IMAGE_EXT.search(name or "")
    if name is None or ext is None or m is None or _EXT_FORMAT.get(m.group(1).lower()) == fmt:
        return name  # no image extension, or already right (.jpeg stays .jpeg)
    return name[: m.start()] + "." + ext


_EXT_FORMAT = {**{e: f for f, e in EXTENSIONS.items()}, "jpeg": "JPEG", "tif": "TIFF"}


@dataclass
class TransformStage:
    pipeline: Pipeline
    seed: int = 0
    workers: int = 1
    skip_bad: bool = False
    skipped: list[BadImageError] = field(default_factory=list)
    skipped_positions: list[int] = field(default_factory=list)  # in source order, 0-based
    _records: dict[str, list[object]] = field(default_factory=dict)
    _position: int = 0

    def run(self, batches: Iterator[KeyedBatch]) -> Iterator[KeyedBatch]:
        """The transformed batches, in the order of ``batches``."""
        from cfx.transform import transform_rows

        keyed: deque[KeyedBatch] = deque()

        def tasks() -> Iterator[tuple[object, ...]]:
            for kb in batches:
                keyed.append(kb)
                yield (self.pipeline, self.seed, kb.shard, kb.rows, _images(kb))

        with closing(shared_map(transform_rows, tasks(), self.workers)) as done:  # closed: the pool stops
            for fut in done:
                yield self._rebuild(keyed.popleft(), fut.result())

    def _rebuild(self, kb: KeyedBatch, results: list[Transformed | BadImageError]) -> KeyedBatch:
        from cfx.transform import BadImageError, Transformed

        keep: list[int] = []
        for i, r in enumerate(results):
            if isinstance(r, BadImageError):
                if not self.skip_bad:
                    raise r
                self.skipped.append(r)
                self.skipped_positions.append(self._position + i)
            else:
                keep.append(i)
        self._position += len(results)
        batch = kb.batch.take(pa.array(keep, pa.int64())) if len(keep) < len(results) else kb.batch
        done = [r for r in results if isinstance(r, Transformed)]
        rows = [kb.rows[i] for i in keep]
        self._record(kb.shard, rows, batch, done)
        return KeyedBatch(kb.shard, rows, _replace_columns(batch, done))

    def _record(self, shard: str, rows: list[int], batch: pa.RecordBatch, done: list[Transformed]) -> None:
        rec = self._records
        for key in ("shard", "row", "transform", "source_sha256", "_format", "_width", "_height", "_mode"):
            rec.setdefault(key, [])
        rec["shard"] += [shard] * len(rows)
        rec["row"] += rows
        rec["transform"] += [sys.intern(t.applied) for t in done]  # one string per distinct pipeline
        rec["source_sha256"] += [t.source_sha256 for t in done]
        rec["_format"] += [t.format for t in done]
        rec["_width"] += [t.width for t in done]
        rec["_height"] += [t.height for t in done]
        rec["_mode"] += [t.mode for t in done]

    def merge(self, part: TransformStage) -> None:
        """Take over what ``part`` (a stage that ran the next rows of the stream elsewhere, e.g. one source
        shard on a cluster) recorded, as if this stage had run them."""
        self.skipped += part.skipped
        self.skipped_positions += [self._position + p for p in part.skipped_positions]
        self._position += part._position
        for key, values in part._records.items():
            self._records.setdefault(key, []).extend(values)

    def records(self) -> pl.DataFrame:
        """Per written row: source (shard, row), the transform applied, source_sha256 and the new facts."""
        schema = {"shard": pl.String, "row": pl.Int64, **RECORD_COLUMNS}
        if not self._records:
            return pl.DataFrame(schema=schema)
        return pl.DataFrame(self._records, schema=schema)


def _images(kb: KeyedBatch) -> list[bytes | None]:
    return kb.batch.column(kb.batch.schema.get_field_index(IMAGE_COLUMN)).to_pylist()


def _replace_columns(batch: pa.RecordBatch, done: list[Transformed]) -> pa.RecordBatch:
    """``batch`` with the new bytes and the columns that describe them (where the schema has them)."""
    names = batch.schema.names
    arrays = list(batch.columns)

    def put(name: str, values: list[object]) -> None:
        if name in names:
            i = names.index(name)
            arrays[i] = pa.array(values, batch.schema.field(i).type)

    put(IMAGE_COLUMN, [t.data for t in done])
    put("format", [t.format for t in done])
    put("mode", [t.mode for t in done])
    if "resolution" in names:
        old = batch.column(names.index("resolution")).to_pylist()
        put("resolution", [resolution_like(o, t.width, t.height) for o, t in zip(old, done, strict=True)])
    if "image_name" in names:
        old = batch.column(names.index("image_name")).to_pylist()
        put("image_name", [renamed(o, t.format) for o, t in zip(old, done, strict=True)])
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def shuffle_order(source_index: np.ndarray, skipped_positions: list[int], total: int) -> np.ndarray:
    """The shuffled output order over the rows that were kept (skipped rows leave the permutation)."""
    if not skipped_positions:
        return source_index
    kept = np.ones(total, dtype=bool)
    kept[np.asarray(skipped_positions, dtype=np.int64)] = False
    new_pos = np.cumsum(kept) - 1
    return np.asarray(new_pos[source_index[kept[source_index]]], dtype=np.int64)
