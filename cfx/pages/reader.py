"""Walk one binary column's pages from the footer's offsets and take the wanted rows' values one at a time.

Memory per reader is O(a value + CHUNK + a small page), never O(page): page bodies are read in CHUNK-sized
ranges and decompressed as a stream (cfx.pages.codecs); a large dictionary page is streamed too, with a cursor
that restarts when an index goes back (a bounded cache of entries keeps repeats cheap). Pages and row groups that
hold no wanted row are skipped (seeked over locally; not fetched over hf://, beyond their header).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq

import cfx.pages.codecs as codecs
import cfx.pages.header as header
from cfx.pages.codecs import Unsupported
from cfx.pages.levels import decode_hybrid

CHUNK = 2 << 20  # bytes read (or fetched) at a time from a page body
DICT_CACHE_BYTES = 32 << 20  # dictionary entries kept for repeats, per reader
_VALUE_ENCODINGS = frozenset(["PLAIN", "PLAIN_DICTIONARY", "RLE_DICTIONARY"])
_LEVEL_ENCODINGS = frozenset(["RLE", "BIT_PACKED"])  # BIT_PACKED: listed by old writers, refused per page


class Source:
    """Positioned reads of one file (local, or an hf:// handle that fetches exactly the ranges asked for)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.fetched = 0

    def read_at(self, pos: int, n: int) -> bytes:
        self.handle.seek(pos)
        parts = []
        while n > 0:
            part = self.handle.read(n)
            if not part:
                break
            parts.append(part)
            n -= len(part)
            self.fetched += len(part)
        return b"".join(parts)


@dataclass(frozen=True)
class Chunk:
    """The column chunk of one row group: where it lies and how its pages are compressed."""

    start: int
    end: int
    codec: str
    rows: int
    max_def: int


def unsupported(pf: pq.ParquetFile, column: str) -> str | None:
    """Why the page reader cannot read ``column`` of this file (None: it can)."""
    meta = pf.metadata
    idx = pf.schema_arrow.get_field_index(column)
    leaf = [i for i in range(meta.num_columns) if pf.schema.column(i).path.split(".")[0] == column]
    if idx < 0 or len(leaf) != 1:
        return f"the nested column {column}"
    desc = pf.schema.column(leaf[0])
    if desc.physical_type != "BYTE_ARRAY" or desc.max_repetition_level > 0:
        return f"a {desc.physical_type} column"
    for rg in range(meta.num_row_groups):
        col = meta.row_group(rg).column(leaf[0])
        if col.compression not in codecs.CODECS:
            return f"codec {col.compression}"
        odd = set(col.encodings) - _VALUE_ENCODINGS - _LEVEL_ENCODINGS
        if odd:
            return f"encoding {', '.join(sorted(odd))}"
    return None


def chunks(pf: pq.ParquetFile, column: str) -> list[Chunk]:
    """The column chunk of ``column`` in every row group (call ``unsupported`` first)."""
    meta = pf.metadata
    leaf = next(i for i in range(meta.num_columns) if pf.schema.column(i).path.split(".")[0] == column)
    max_def = pf.schema.column(leaf).max_definition_level
    out = []
    for rg in range(meta.num_row_groups):
        col = meta.row_group(rg).column(leaf)
        start = col.data_page_offset
        if col.has_dictionary_page and col.dictionary_page_offset:
            start = min(start, col.dictionary_page_offset)
        out.append(
            Chunk(
                start,
                start + col.total_compressed_size,
                col.compression,
                meta.row_group(rg).num_rows,
                max_def,
            )
        )
    return out


def _body(src: Source, start: int, size: int, head: bytes) -> Iterator[bytes]:
    """A page body of ``size`` bytes at ``start``, in CHUNK pieces; ``head`` holds its first bytes, if read."""
    if head:
        yield head[:size]
    pos, end = start + len(head[:size]), start + size
    while pos < end:
        part = src.read_at(pos, min(CHUNK, end - pos))
        if not part:
            raise EOFError("the file ends inside a page")
        yield part
        pos += len(part)


class Dictionary:
    """A dictionary page, read only when an entry is asked for. A large page is streamed with a forward cursor
    (restarted from the page start when an index goes back to an entry no longer cached); a small one is
    decoded whole once and its entries found again by offset."""

    def __init__(self, src: Source, chunk: Chunk, start: int, head: Any) -> None:
        self.src, self.chunk, self.start, self.head = src, chunk, start, head
        enc = thrift_name("Encoding", head.dictionary_page_header.encoding)
        if enc not in ("PLAIN", "PLAIN_DICTIONARY"):
            raise Unsupported(f"dictionary page encoding {enc}")
        self.size = head.dictionary_page_header.num_values
        self.stream: codecs.Stream | None = None
        self.next = 0
        self.offsets: list[int] = []  # where entry k starts, in a page decoded whole
        self.cache: OrderedDict[int, bytes] = OrderedDict()
        self.cached = 0

    def _open(self) -> None:
        h = self.head
        body = _body(self.src, self.start, h.compressed_page_size, b"")
        self.stream = codecs.open_stream(
            self.chunk.codec, body, h.compressed_page_size, h.uncompressed_page_size
        )
        self.next = 0
        self.offsets = []

    def get(self, i: int) -> bytes:
        if i < 0 or i >= self.size:
            raise EOFError(f"dictionary index {i} beyond the {self.size:,} entries")
        if i in self.cache:
            return self.cache[i]
        whole = self.stream if isinstance(self.stream, codecs.BytesStream) else None
        if whole is not None and i < len(self.offsets):
            here, whole.pos = whole.pos, self.offsets[i]
            value = _value(whole)
            whole.pos = here
            return value
        if self.stream is None or i < self.next:
            self._open()
        stream = self.stream
        assert stream is not None
        whole = stream if isinstance(stream, codecs.BytesStream) else None
        while self.next < i:
            if whole is not None:
                self.offsets.append(whole.pos)
            stream.skip(_length(stream))
            self.next += 1
        if whole is not None:
            self.offsets.append(whole.pos)
        value = _value(stream)
        self.next += 1
        self._keep(i, value)
        return value

    def _keep(self, i: int, value: bytes) -> None:
        self.cache[i] = value
        self.cached += len(value)
        while self.cached > DICT_CACHE_BYTES and len(self.cache) > 1:
            self.cached -= len(self.cache.popitem(last=False)[1])


def thrift_name(enum: str, value: int) -> str:
    return str(getattr(header.thrift(), enum)._VALUES_TO_NAMES.get(value, value))


def _length(stream: codecs.Stream) -> int:
    raw = stream.read(4)
    if len(raw) != 4:
        raise EOFError("page ends inside a value length")
    return int.from_bytes(raw, "little")


def _value(stream: codecs.Stream) -> bytes:
    n = _length(stream)
    data = stream.read(n)
    if len(data) != n:
        raise EOFError("page ends inside a value")
    return data


def _levels(data: bytes, chunk: Chunk, n: int) -> np.ndarray:
    """Which of the page's n values are present (definition level at its maximum)."""
    if chunk.max_def == 0:
        return np.ones(n, bool)
    return decode_hybrid(data, chunk.max_def.bit_length(), n) == chunk.max_def


def _page_v1(
    src: Source, chunk: Chunk, start: int, head: Any, probe: bytes
) -> tuple[np.ndarray, codecs.Stream]:
    dph = head.data_page_header
    if chunk.max_def and thrift_name("Encoding", dph.definition_level_encoding) != "RLE":
        raise Unsupported(f"definition levels in {thrift_name('Encoding', dph.definition_level_encoding)}")
    body = _body(src, start, head.compressed_page_size, probe)
    stream = codecs.open_stream(chunk.codec, body, head.compressed_page_size, head.uncompressed_page_size)
    present = np.ones(dph.num_values, bool)
    if chunk.max_def:
        size = _length(stream)
        if size > _hybrid_bytes(dph.num_values):
            raise EOFError(f"definition levels of {size:,} bytes for {dph.num_values:,} values")
        present = _levels(stream.read(size), chunk, dph.num_values)
    return present, stream


def _hybrid_bytes(n: int) -> int:
    """The most bytes n values of ≤ 32 bits can take in the RLE / bit-packed hybrid (a bound against damage)."""
    return 5 * n + 64


def _page_v2(
    src: Source, chunk: Chunk, start: int, head: Any, probe: bytes
) -> tuple[np.ndarray, codecs.Stream]:
    dph = head.data_page_header_v2
    rl, dl = dph.repetition_levels_byte_length or 0, dph.definition_levels_byte_length or 0
    if rl or dl < 0 or dl > min(_hybrid_bytes(dph.num_values), head.compressed_page_size):
        raise EOFError(f"levels of {rl:,} + {dl:,} bytes for {dph.num_values:,} values of a flat column")
    raw = codecs.Chunks(_body(src, start, head.compressed_page_size, probe))
    levels = raw.take(rl + dl)
    if len(levels) != rl + dl:
        raise EOFError("page ends inside its levels")
    present = _levels(levels[rl:], chunk, dph.num_values)
    codec = chunk.codec if dph.is_compressed is not False else "UNCOMPRESSED"
    rest = head.compressed_page_size - rl - dl
    stream = codecs.open_stream(codec, raw.rest(), rest, head.uncompressed_page_size - rl - dl)
    return present, stream


def _page_values(
    page: tuple[np.ndarray, codecs.Stream], encoding: str, want: np.ndarray, dictionary: Dictionary | None
) -> Iterator[tuple[int, bytes | None]]:
    """(row in page, value) for the ``want`` rows (ascending) of one data page."""
    present, stream = page
    if encoding == "PLAIN":
        row = 0
        for w in want:
            while row < w:  # skip the values before the wanted row
                if present[row]:
                    stream.skip(_length(stream))
                row += 1
            yield int(w), _value(stream) if present[w] else None
            row = int(w) + 1
        return
    if encoding not in ("PLAIN_DICTIONARY", "RLE_DICTIONARY"):
        raise Unsupported(f"data page encoding {encoding}")
    if dictionary is None:
        raise EOFError("dictionary-encoded page without a dictionary page")
    rest = stream.read(_hybrid_bytes(len(present)) + 1)
    if not rest:
        raise EOFError("page ends before its bit width")
    indices = decode_hybrid(memoryview(rest)[1:], rest[0], int(present.sum()))
    slot = np.cumsum(present) - 1  # row → position among the present values
    for w in want:
        yield int(w), dictionary.get(int(indices[slot[w]])) if present[w] else None


def iter_chunk(src: Source, chunk: Chunk, want: np.ndarray | None) -> Iterator[tuple[int, bytes | None]]:
    """(row in row group, value) of the wanted rows (None: all) of one column chunk, in row order."""
    pos, row, dictionary = chunk.start, 0, None
    last = chunk.rows - 1 if want is None else (int(want[-1]) if want.size else -1)
    while pos < chunk.end and row <= last:
        head, hlen, probe = header.read_header(src, pos, chunk.end)
        start, size = pos + hlen, head.compressed_page_size
        if start + size > chunk.end:
            raise EOFError("a page runs past its column chunk")
        probe = probe[hlen:]
        kind = thrift_name("PageType", head.type)
        if kind == "DICTIONARY_PAGE":
            dictionary = Dictionary(src, chunk, start, head)
        elif kind in ("DATA_PAGE", "DATA_PAGE_V2"):
            dph = head.data_page_header if kind == "DATA_PAGE" else head.data_page_header_v2
            if dph is None or dph.num_values is None or dph.num_values < 0:
                raise EOFError("data page without its header")
            n = dph.num_values
            if n > chunk.rows - row:
                raise EOFError(f"a page of {n:,} values where {chunk.rows - row:,} rows are left")
            if want is None:
                sel = np.arange(min(n, chunk.rows - row))
            else:
                lo, hi = np.searchsorted(want, [row, row + n])
                sel = want[lo:hi] - row
            if sel.size:
                read = _page_v1 if kind == "DATA_PAGE" else _page_v2
                encoding = thrift_name("Encoding", dph.encoding)
                for r, value in _page_values(read(src, chunk, start, head, probe), encoding, sel, dictionary):
                    yield row + r, value
            row += n
        pos = start + size
    if row <= last:
        raise EOFError(f"the column chunk ends after {row:,} of {chunk.rows:,} rows")
