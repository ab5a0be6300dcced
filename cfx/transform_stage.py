"""The transform stage of ``cfx subset --transform``: source record batches in, transformed batches out.

``resolution`` keeps its source's type (a list stays a list, a string keeps its text around the numbers) and
its order: a row whose declared resolution is its decoded size transposed reads ``[h, w]``, and a row that
cannot tell (square, or neither order matches) takes the order its shard showed so far (:class:`SizeOrder`).

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
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa

from cfx.formats import EXTENSIONS, extension
from cfx.pool import shared_map
from cfx.schema import IMAGE_COLUMN, is_list_type

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
    "_hw": pl.Boolean,  # the new resolution is written [h, w], as its source wrote it
}


@dataclass(frozen=True)
class KeyedBatch:
    """Source rows of one shard: ``rows`` are their row numbers there, ``batch`` the rows (output schema)."""

    shard: str
    rows: list[int]
    batch: pa.RecordBatch


Resolution = str | list[int]


def declared_pair(source: object) -> tuple[int, int] | None:
    """The two numbers of a declared resolution (a list or a string such as ``"[512, 512]"``), as written."""
    if isinstance(source, list | tuple):
        if len(source) == 2 and all(isinstance(v, int) for v in source):
            return int(source[0]), int(source[1])
        return None
    m = _RES_PARTS.match(source) if isinstance(source, str) else None
    return (int(m.group(2)), int(m.group(4))) if m else None


@dataclass
class SizeOrder:
    """Which order (``[w, h]`` or ``[h, w]``) each shard writes ``resolution`` in, learnt from the rows whose
    declared resolution matches their decoded size one way only (a square image cannot tell)."""

    hw: dict[str, bool] = field(default_factory=dict)  # shard -> reads [h, w]

    def reads_hw(self, shard: str, declared: object, decoded: tuple[int, int] | None) -> bool:
        pair = declared_pair(declared)
        if pair is not None and decoded is not None and decoded[0] != decoded[1]:
            if pair == decoded:
                self.hw[shard] = False
            elif pair == decoded[::-1]:
                self.hw[shard] = True
        return self.hw.get(shard, False)


def resolution_like(source: object, width: int, height: int, hw: bool = False) -> Resolution:
    """``width`` and ``height`` written the way ``source`` writes a resolution: a list stays a list, a string
    keeps its text around the numbers (``[512, 512]`` when ``source`` is neither); ``hw``: height first."""
    first, second = (height, width) if hw else (width, height)
    if isinstance(source, list | tuple):
        return [first, second]
    m = _RES_PARTS.match(source) if isinstance(source, str) else None
    if not m:
        return f"[{first}, {second}]"
    return f"{m.group(1)}{first}{m.group(3)}{second}{m.group(5)}"


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
    _order: SizeOrder = field(default_factory=SizeOrder)

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
        hw = self._orders(kb.shard, batch, done)
        self._record(kb.shard, rows, done, hw)
        return KeyedBatch(kb.shard, rows, _replace_columns(batch, done, hw))

    def _orders(self, shard: str, batch: pa.RecordBatch, done: list[Transformed]) -> list[bool]:
        """Per row: is the new resolution written [h, w] (as its source writes it)."""
        if "resolution" not in batch.schema.names:
            return [False] * len(done)
        declared = batch.column(batch.schema.get_field_index("resolution")).to_pylist()
        return [self._order.reads_hw(shard, d, t.source_size) for d, t in zip(declared, done, strict=True)]

    def _record(self, shard: str, rows: list[int], done: list[Transformed], hw: list[bool]) -> None:
        rec = self._records
        for key in ("shard", "row", *RECORD_COLUMNS):
            rec.setdefault(key, [])
        rec["shard"] += [shard] * len(rows)
        rec["row"] += rows
        rec["transform"] += [sys.intern(t.applied) for t in done]  # one string per distinct pipeline
        rec["source_sha256"] += [t.source_sha256 for t in done]
        rec["_format"] += [t.format for t in done]
        rec["_width"] += [t.width for t in done]
        rec["_height"] += [t.height for t in done]
        rec["_mode"] += [t.mode for t in done]
        rec["_hw"] += hw

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


def _replace_columns(batch: pa.RecordBatch, done: list[Transformed], hw: list[bool]) -> pa.RecordBatch:
    """``batch`` with the new bytes and the columns that describe them (where the schema has them)."""
    names = batch.schema.names
    arrays = list(batch.columns)

    def put(name: str, values: Sequence[object]) -> None:
        if name in names:
            i = names.index(name)
            arrays[i] = pa.array(values, batch.schema.field(i).type)

    put(IMAGE_COLUMN, [t.data for t in done])
    put("format", [t.format for t in done])
    put("mode", [t.mode for t in done])
    if "resolution" in names:
        i = names.index("resolution")
        blank: list[int] | None = (
            [] if is_list_type(batch.schema.field(i).type) else None
        )  # a null takes the column's form
        old = [blank if o is None else o for o in batch.column(i).to_pylist()]
        new = [resolution_like(o, t.width, t.height, h) for o, t, h in zip(old, done, hw, strict=True)]
        put("resolution", new)
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
