"""Parquet page headers: the Thrift definitions of parquet-format, as the ``parquet.thrift`` that fastparquet
ships (a well-kept Parquet library), read with thriftpy2's compact protocol. fastparquet's own Cython reader is
not used: it has no bounds checks on damaged bytes. Its package is located, not imported (that would import
pandas)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Any, Protocol

HEADER_PROBE = 16 * 1024  # page statistics of a binary column can take ~8 KB (4 KB min + max)
HEADER_MAX = 16 << 20


class Source(Protocol):
    def read_at(self, pos: int, n: int) -> bytes: ...


@cache
def thrift() -> Any:
    import thriftpy2  # imported on first use: loading the definitions costs ~40 ms

    return thriftpy2.load(str(definitions()), module_name="cfx_pages_thrift")


def definitions() -> Path:
    """fastparquet's parquet.thrift (the Apache parquet-format definitions), found without importing it."""
    spec = importlib.util.find_spec("fastparquet")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "parquet.thrift"
        if path.is_file():
            return path
    raise ImportError("fastparquet's parquet.thrift not found: reinstall cfx (pip install -e .)")


class _Buffer:
    """The transport thriftpy2's protocol reads from: exact reads, EOFError past the end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise EOFError("page header cut short")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def parse(data: bytes) -> tuple[Any, int]:
    """(PageHeader, its length in bytes) from bytes that start with one; EOFError if they hold only part."""
    from thriftpy2.protocol.compact import TCompactProtocol

    buf = _Buffer(data)
    header = thrift().PageHeader()
    try:
        header.read(TCompactProtocol(buf))
    except EOFError:
        raise
    except Exception as exc:  # thriftpy2 raises its own types on a malformed struct
        raise EOFError(f"malformed page header ({exc})") from None
    if header.type is None or header.compressed_page_size is None or header.compressed_page_size < 0:
        raise EOFError("malformed page header (no type or size)")
    return header, buf.pos


def read_header(src: Source, pos: int, end: int) -> tuple[Any, int, bytes]:
    """The page header at ``pos`` (of a column chunk ending at ``end``): (header, its length, the bytes read,
    which run on into the page)."""
    size = min(HEADER_PROBE, end - pos)
    while True:
        data = src.read_at(pos, size)
        try:
            header, length = parse(data)
            return header, length, data
        except EOFError:
            if size >= end - pos or size >= HEADER_MAX or len(data) < size:
                raise
            size = min(size * 8, end - pos)
