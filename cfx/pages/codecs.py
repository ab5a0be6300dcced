"""Decompress one page as a stream: ``read(n)`` / ``skip(n)`` over its uncompressed bytes, holding O(chunk) memory.

gzip (zlib) and zstd (``zstandard``) have streaming decoders in well-kept libraries. Raw snappy and LZ4 block
format (LZ4_RAW) have none in Python that we found (python-snappy's and cramjam's streaming classes speak the
*framed* formats, lz4's the frame format), so small pages are decoded whole by pyarrow's codecs and large ones by
the windowed decoders below: both formats only refer back within 64 KB (snappy's compressor works in 64 KB
blocks; LZ4's offsets are 16-bit), so a window of recent output is all a copy needs.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator
from typing import Protocol

import pyarrow as pa

WINDOW = 1 << 16  # the furthest back a snappy or LZ4 copy refers
WHOLE_PAGE_BYTES = 8 << 20  # pages up to this size (uncompressed) are decoded at once, by pyarrow's codecs
OUT_STEP = 1 << 20  # how much output a streaming decoder makes per step


class Unsupported(Exception):
    """A page the page reader does not decode (its codec, encoding or a copy beyond the window)."""


class Stream(Protocol):
    def read(self, n: int) -> bytes: ...

    def skip(self, n: int) -> None: ...


class BytesStream:
    """An in-memory page (uncompressed, or decoded whole)."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def read(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out.tobytes()

    def skip(self, n: int) -> None:
        self.pos += n


class Chunks:
    """A file-like view of an iterator of byte chunks (the compressed page as it is read)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buf = b""
        self.pos = 0

    def take(self, n: int) -> bytes:
        """Exactly n bytes, or fewer at the end of the page."""
        parts = []
        while n > 0:
            if self.pos >= len(self.buf):
                self.buf = next(self.chunks, b"")
                self.pos = 0
                if not self.buf:
                    break
            part = self.buf[self.pos : self.pos + n]
            self.pos += len(part)
            n -= len(part)
            parts.append(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            return self.take(1 << 62)
        if self.pos >= len(self.buf):
            self.buf = next(self.chunks, b"")
            self.pos = 0
        part = self.buf[self.pos : self.pos + n]
        self.pos += len(part)
        return part

    def rest(self) -> Iterator[bytes]:
        """The bytes not yet taken, as chunks."""
        if self.pos < len(self.buf):
            yield self.buf[self.pos :]
        self.buf, self.pos = b"", 0
        yield from self.chunks

    def byte(self) -> int:
        b = self.take(1)
        if not b:
            raise EOFError("page ends inside a compressed element")
        return b[0]


class _Produced:
    """Output of a streaming decoder: bytes made and not yet consumed."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0

    def available(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> bytes:
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += len(out)
        self._compact()
        return out

    def drop(self, n: int) -> int:
        n = min(n, self.available())
        self.pos += n
        self._compact()
        return n

    def _compact(self) -> None:
        if self.pos > OUT_STEP:
            del self.buf[: self.pos]
            self.pos = 0


class _Streaming:
    """read/skip on top of a ``_fill()`` that appends decoded bytes to ``self.out`` (False at the end)."""

    out: _Produced

    def _fill(self) -> bool:
        raise NotImplementedError

    def read(self, n: int) -> bytes:
        while self.out.available() < n and self._fill():
            pass
        return self.out.take(n)

    def skip(self, n: int) -> None:
        while n > 0:
            if not self.out.available() and not self._fill():
                return
            n -= self.out.drop(n)


class ZlibStream(_Streaming):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.src = Chunks(chunks)
        self.dec = zlib.decompressobj(wbits=47)  # gzip or zlib header, detected
        self.pending = b""
        self.out = _Produced()

    def _fill(self) -> bool:
        if not self.pending:
            self.pending = self.dec.unconsumed_tail or self.src.read(OUT_STEP)
            if not self.pending:
                return False
        made = self.dec.decompress(self.pending, OUT_STEP)
        self.pending = self.dec.unconsumed_tail
        self.out.buf += made
        return True


class ZstdStream(_Streaming):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        import zstandard  # streaming zstd (pyarrow's codec decodes a whole buffer only)

        self.reader = zstandard.ZstdDecompressor().stream_reader(Chunks(chunks), read_size=OUT_STEP)  # type: ignore[arg-type]
        self.out = _Produced()

    def _fill(self) -> bool:
        made = self.reader.read(OUT_STEP)
        self.out.buf += made
        return bool(made)


class _Windowed(_Streaming):
    """A decoder whose copies refer back into its own output: keeps WINDOW bytes of history."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.src = Chunks(chunks)
        self.out = _Produced()
        self.done = False

    def _copy(self, offset: int, length: int) -> None:
        buf = self.out.buf
        if offset <= 0 or offset > len(buf):
            raise Unsupported(f"a copy {offset:,} bytes back, beyond the {len(buf):,} bytes kept")
        start = len(buf) - offset
        if length <= offset:
            buf += buf[start : start + length]
        else:  # overlapping: the copy repeats its own output
            while length > 0:
                part = buf[start : start + min(length, offset)]
                buf += part
                length -= len(part)

    def _keep_window(self) -> None:
        out = self.out
        excess = min(out.pos, len(out.buf) - WINDOW)
        if excess > OUT_STEP:
            del out.buf[:excess]
            out.pos -= excess

    def _fill(self) -> bool:
        if self.done:
            return False
        target = len(self.out.buf) + OUT_STEP
        while len(self.out.buf) < target:
            if not self._element():
                self.done = True
                break
        self._keep_window()
        return True

    def _element(self) -> bool:
        raise NotImplementedError


class _History(_Produced):
    def _compact(self) -> None:  # history is dropped by _Windowed._keep_window
        pass


class SnappyStream(_Windowed):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__(chunks)
        self.out = _History()
        while self.src.byte() & 0x80:  # the uncompressed length (a varint): the page header has it too
            pass

    def _element(self) -> bool:
        tag_b = self.src.read(1)
        if not tag_b:
            return False
        tag = tag_b[0]
        kind = tag & 3
        if kind == 0:
            n = tag >> 2
            if n >= 60:
                n = int.from_bytes(self.src.take(n - 59), "little")
            n += 1
            data = self.src.take(n)
            if len(data) != n:
                raise EOFError("page ends inside a snappy literal")
            self.out.buf += data
        elif kind == 1:
            self._copy(((tag >> 5) << 8) | self.src.byte(), ((tag >> 2) & 7) + 4)
        elif kind == 2:
            self._copy(int.from_bytes(self.src.take(2), "little"), (tag >> 2) + 1)
        else:
            self._copy(int.from_bytes(self.src.take(4), "little"), (tag >> 2) + 1)
        return True


class Lz4RawStream(_Windowed):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__(chunks)
        self.out = _History()

    def _length(self, n: int) -> int:
        if n == 15:
            while True:
                b = self.src.byte()
                n += b
                if b != 255:
                    break
        return n

    def _element(self) -> bool:
        token_b = self.src.read(1)
        if not token_b:
            return False
        token = token_b[0]
        n = self._length(token >> 4)
        data = self.src.take(n)
        if len(data) != n:
            raise EOFError("page ends inside an LZ4 literal")
        self.out.buf += data
        offset_b = self.src.take(2)
        if not offset_b:  # the last sequence has literals only
            return False
        self._copy(int.from_bytes(offset_b, "little"), self._length(token & 15) + 4)
        return True


# pyarrow names both LZ4_RAW and the old Hadoop-framed LZ4 "LZ4" (and writes LZ4_RAW): told apart per page
_WHOLE = {"SNAPPY": "snappy", "LZ4": "lz4_raw", "GZIP": "gzip", "ZSTD": "zstd"}
_STREAMING = {"SNAPPY": SnappyStream, "LZ4": Lz4RawStream, "GZIP": ZlibStream, "ZSTD": ZstdStream}
CODECS = frozenset(["UNCOMPRESSED", *_STREAMING])


def _hadoop_lz4(first: bytes, compressed: int, uncompressed: int) -> bool:
    """A page in the Hadoop LZ4 framing: big-endian (uncompressed, compressed) sizes before the block."""
    return (
        len(first) >= 8
        and int.from_bytes(first[:4], "big") == uncompressed
        and int.from_bytes(first[4:8], "big") == compressed - 8
    )


def open_stream(codec: str, chunks: Iterator[bytes], compressed: int, uncompressed: int) -> Stream:
    """The uncompressed bytes of a page whose compressed bytes ``chunks`` yields."""
    if codec == "LZ4":
        first = next(chunks, b"")
        if _hadoop_lz4(first, compressed, uncompressed):
            raise Unsupported("codec LZ4 (Hadoop framing)")
        chunks = itertools.chain([first], chunks)
    if codec == "UNCOMPRESSED":
        return BytesStream(b"".join(chunks)) if compressed <= WHOLE_PAGE_BYTES else _Passthrough(chunks)
    if codec not in _STREAMING:
        raise Unsupported(f"codec {codec}")
    if uncompressed <= WHOLE_PAGE_BYTES:
        data = b"".join(chunks)
        try:
            return BytesStream(pa.Codec(_WHOLE[codec]).decompress(data, uncompressed, asbytes=True))
        except (OSError, pa.ArrowException) as exc:
            raise EOFError(f"cannot decompress a {codec} page ({exc})") from None
    return _STREAMING[codec](chunks)  # type: ignore[abstract]


class _Passthrough:
    """An uncompressed page read as it arrives."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.src = Chunks(chunks)

    def read(self, n: int) -> bytes:
        return self.src.take(n)

    def skip(self, n: int) -> None:
        while n > 0:
            got = len(self.src.take(min(n, OUT_STEP)))
            if not got:
                return
            n -= got
