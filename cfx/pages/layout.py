"""A source's physical layout: row groups, the image column's pages, page index — why a read costs what it costs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from cfx.pages.header import read_header
from cfx.pages.reader import Source, chunks, thrift_name, unsupported


@dataclass
class Layout:
    """The physical layout of one shard's image column."""

    rows: int
    row_groups: int
    rows_per_group: list[int]
    codec: str
    pages: int = 0
    dictionary_pages: int = 0
    largest_page: int = 0  # uncompressed bytes
    largest_page_rows: int = 0
    encodings: dict[str, int] = field(default_factory=dict)  # data pages by value encoding
    page_versions: dict[str, int] = field(default_factory=dict)
    page_index: bool = False
    reader: str = "pages"  # or "pyarrow (<why>)"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_layout(src: Source, pf: pq.ParquetFile, column: str) -> Layout:
    """Walk the page headers of ``column`` (reads only the headers)."""
    meta = pf.metadata
    groups = [meta.row_group(rg) for rg in range(meta.num_row_groups)]
    why = unsupported(pf, column)
    leaf = next(
        (i for i in range(meta.num_columns) if pf.schema.column(i).path.split(".")[0] == column), None
    )
    out = Layout(
        rows=meta.num_rows,
        row_groups=meta.num_row_groups,
        rows_per_group=[g.num_rows for g in groups],
        codec=groups[0].column(leaf).compression if groups and leaf is not None else "?",
        page_index=any(g.column(leaf).has_offset_index for g in groups) if leaf is not None else False,
        reader="pages" if why is None else f"pyarrow ({why})",
    )
    if why is not None and leaf is None:
        return out
    encodings: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    for chunk in chunks(pf, column):
        pos = chunk.start
        while pos < chunk.end:
            head, hlen, _ = read_header(src, pos, chunk.end)
            kind = thrift_name("PageType", head.type)
            out.pages += 1
            out.largest_page = max(out.largest_page, head.uncompressed_page_size)
            if kind == "DICTIONARY_PAGE":
                out.dictionary_pages += 1
                n = head.dictionary_page_header.num_values
            else:
                dph = head.data_page_header if kind == "DATA_PAGE" else head.data_page_header_v2
                n = dph.num_values if dph is not None else 0
                if dph is not None:
                    encodings[thrift_name("Encoding", dph.encoding)] += 1
                versions["v1" if kind == "DATA_PAGE" else "v2" if kind == "DATA_PAGE_V2" else kind] += 1
            if head.uncompressed_page_size == out.largest_page:
                out.largest_page_rows = n
            pos += hlen + head.compressed_page_size
    out.encodings, out.page_versions = dict(encodings), dict(versions)
    return out
