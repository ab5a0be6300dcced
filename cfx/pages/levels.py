"""The RLE / bit-packed hybrid encoding of definition levels and dictionary indices (small: decoded whole)."""

from __future__ import annotations

import numpy as np


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(data):
            raise EOFError("page ends inside a run header")
        b = data[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, pos
        shift += 7


def decode_hybrid(data: bytes | memoryview, width: int, count: int) -> np.ndarray:
    """``count`` values of ``width`` bits (int64), from runs of repeated values and bit-packed groups of 8."""
    buf = memoryview(data)
    out = np.empty(count, np.int64)
    if width == 0:
        out[:] = 0
        return out
    if width > 32:
        raise EOFError(f"bit width {width} is not a level or dictionary index width")
    nbytes = (width + 7) // 8
    done = pos = 0
    while done < count:
        header, pos = _varint(buf, pos)
        if header & 1:  # bit-packed: (header >> 1) groups of 8 values
            n = (header >> 1) * 8
            raw = np.frombuffer(buf[pos : pos + n * width // 8], np.uint8)
            if raw.size * 8 < n * width:
                raise EOFError("page ends inside a bit-packed run")
            pos += n * width // 8
            bits = np.unpackbits(raw, bitorder="little")[: n * width].reshape(n, width).astype(np.int64)
            vals = bits @ (np.int64(1) << np.arange(width, dtype=np.int64))
        else:  # a run: one value repeated (header >> 1) times
            n = header >> 1
            if pos + nbytes > len(buf):
                raise EOFError("page ends inside a repeated run")
            vals = np.full(n, int.from_bytes(buf[pos : pos + nbytes], "little"), np.int64)
            pos += nbytes
        if n == 0:
            raise EOFError("an empty run (corrupt levels or indices)")
        take = min(n, count - done)
        out[done : done + take] = vals[:take]
        done += take
    return out
