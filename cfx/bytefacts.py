"""Byte facts: what the encoded bytes of an image say about it, from its headers (no pixel decode).

``facts(data)`` returns one dict per image with the columns of FACTS_SCHEMA:

- ``actual_format`` (file signature, cfx.formats), ``num_bytes`` (length of the encoded file), ``header_width``/``header_height`` and ``header_mode`` from the
  header (PNG IHDR, JPEG SOF, WebP VP8/VP8L/VP8X, GIF, BMP; any other format: Pillow's lazy open, which
  reads the header only and is bounded by the decompression-bomb guard), ``bit_depth``;
- JPEG: ``jpeg_quality`` + ``jpeg_quality_exact`` (cfx.jpegquality), ``chroma_subsampling``, ``progressive``;
- metadata presence: ``has_exif`` (JPEG APP1, PNG eXIf, WebP EXIF), ``has_gps`` (EXIF GPS IFD),
  ``has_icc`` (JPEG APP2, PNG iCCP, WebP ICCP), ``has_c2pa`` (JPEG APP11 JUMBF, PNG caBX),
  ``text_chunks`` (PNG tEXt/iTXt/zTXt keywords, e.g. ``parameters`` from Stable Diffusion front-ends);
- ``inspect_error``: why the header could not be read (missing/empty bytes, truncated, unknown format).

Never raises for a bad image. Consistency with the declared columns (``format_mismatch`` …) is computed on
the manifest by cfx.inspect, since the declared values live there, not in the bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from cfx.errors import CfxError, error_text
from cfx.formats import sniff_format
from cfx.index import cache_dir
from cfx.jpegquality import Bytes, JpegError, exif_has_gps, parse_jpeg
from cfx.manifest import ShardInfo
from cfx.outputs import write_atomic

FACTS_VERSION = 1
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

FACTS_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("actual_format", pa.string()),
        ("num_bytes", pa.int64()),
        ("header_width", pa.int32()),
        ("header_height", pa.int32()),
        ("header_mode", pa.string()),
        ("bit_depth", pa.int16()),
        ("jpeg_quality", pa.int16()),
        ("jpeg_quality_exact", pa.bool_()),
        ("chroma_subsampling", pa.string()),
        ("progressive", pa.bool_()),
        ("has_exif", pa.bool_()),
        ("has_gps", pa.bool_()),
        ("has_icc", pa.bool_()),
        ("has_c2pa", pa.bool_()),
        ("text_chunks", pa.list_(pa.string())),
        ("inspect_error", pa.string()),
    ]
)
FACT_COLUMNS = tuple(FACTS_SCHEMA.names[1:])

# PNG colour type (and bit depth) -> Pillow mode
_PNG_MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")


def _empty() -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(FACT_COLUMNS)
    out.update(has_exif=False, has_gps=False, has_icc=False, has_c2pa=False, text_chunks=[])
    return out


def _png_mode(colour: int, depth: int) -> str | None:
    if colour == 0 and depth == 1:
        return "1"
    if colour == 0 and depth == 16:
        return "I;16"
    return _PNG_MODES.get(colour)


def _png(data: Bytes, out: dict[str, Any]) -> None:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ValueError("PNG without an IHDR header")
    w, h, depth, colour = struct.unpack_from(">IIBB", data, 16)
    out.update(header_width=w, header_height=h, bit_depth=depth, header_mode=_png_mode(colour, depth))
    pos, keys = 8, []
    while pos + 8 <= len(data):  # every chunk's header; IDAT bodies are skipped, not read
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        if kind in _PNG_TEXT:
            body = data[pos + 8 : pos + 8 + min(length, 80)]
            keys.append(bytes(body).split(b"\x00", 1)[0].decode("latin-1"))
        elif kind == b"iCCP":
            out["has_icc"] = True
        elif kind == b"eXIf":
            out["has_exif"] = True
            out["has_gps"] = exif_has_gps(data[pos + 8 : pos + 8 + length])
        elif kind == b"caBX":
            out["has_c2pa"] = True
        elif kind == b"IEND":
            break
        pos += 12 + length
    out["text_chunks"] = sorted(set(keys))


def _jpeg(data: Bytes, out: dict[str, Any]) -> None:
    head = parse_jpeg(data)
    quality = head.quality
    out.update(
        header_width=head.width,
        header_height=head.height,
        header_mode=head.mode,
        bit_depth=head.bit_depth,
        chroma_subsampling=head.subsampling,
        progressive=head.progressive,
        has_exif=head.has_exif,
        has_gps=head.has_gps,
        has_icc=head.has_icc,
        has_c2pa=head.has_c2pa,
    )
    if quality is not None:
        out["jpeg_quality"], out["jpeg_quality_exact"] = quality


def _webp(data: Bytes, out: dict[str, Any]) -> None:
    pos, mode = 12, "RGB"
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"VP8X" and len(body) >= 10:
            flags = body[0]
            mode = "RGBA" if flags & 0x10 else "RGB"
            w = 1 + int.from_bytes(body[4:7], "little")
            h = 1 + int.from_bytes(body[7:10], "little")
            out.update(header_width=w, header_height=h)
        elif kind == b"VP8 " and len(body) >= 10 and out["header_width"] is None:
            w, h = struct.unpack_from("<HH", body, 6)
            out.update(header_width=w & 0x3FFF, header_height=h & 0x3FFF)
        elif kind == b"VP8L" and len(body) >= 5 and out["header_width"] is None:
            (bits,) = struct.unpack_from("<I", body, 1)
            out.update(header_width=1 + (bits & 0x3FFF), header_height=1 + ((bits >> 14) & 0x3FFF))
            mode = "RGBA" if bits >> 28 & 1 else "RGB"
        elif kind == b"ICCP":
            out["has_icc"] = True
        elif kind == b"EXIF":
            out["has_exif"] = True
            tiff = body[6:] if body[:5] == b"Exif\x00" else body
            out["has_gps"] = exif_has_gps(tiff)
        pos += 8 + length + (length & 1)
    if out["header_width"] is None:
        raise ValueError("WebP without an image header")
    out.update(header_mode=mode, bit_depth=8)


def _pillow_header(data: Bytes, out: dict[str, Any], max_pixels: int) -> None:
    """Any other format: Pillow's open reads the header only (no pixels)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data))
    w, h = img.size
    if w * h > max_pixels:
        raise ValueError(f"{w * h:,} pixels exceeds the limit of {max_pixels:,} (decompression bomb?)")
    out.update(header_width=w, header_height=h, header_mode=img.mode)
    out["has_icc"] = bool(img.info.get("icc_profile"))
    out["has_exif"] = bool(img.info.get("exif"))
    if out["actual_format"] is None:
        out["actual_format"] = img.format


_PARSERS = {"PNG": _png, "JPEG": _jpeg, "WEBP": _webp}


def facts(data: bytes | bytearray | memoryview | None, max_pixels: int = MAX_PIXELS) -> dict[str, Any]:
    """The byte facts of one encoded image (see the module doc). Never raises.

    A memoryview (e.g. into an Arrow buffer, ``binary_views``) is read in place: only headers are copied."""
    out = _empty()
    if data is None:
        out["inspect_error"] = "no image data"
        return out
    if not data:
        out["inspect_error"] = "empty image data"
        return out
    if not isinstance(data, bytes):
        data = memoryview(data)
        if data.format != "B":  # parsers index bytes as 0..255
            data = data.cast("B")
    out["num_bytes"] = len(data)
    out["actual_format"] = sniff_format(data)
    try:
        parser = _PARSERS.get(out["actual_format"] or "")
        if parser is not None:
            parser(data, out)
        else:
            _pillow_header(data, out, max_pixels)
    except (JpegError, ValueError, OSError, struct.error, Image.DecompressionBombError) as exc:
        text = error_text(exc)
        fmt = out["actual_format"] or "unknown format"
        out = {**_empty(), "actual_format": out["actual_format"], "num_bytes": len(data)}
        out["inspect_error"] = f"{fmt}: {text}"[:300]
    return out


def facts_table(rows: Sequence[int] | np.ndarray, images: Sequence[Bytes | None]) -> pa.Table:
    """FACTS_SCHEMA table for encoded images and their row numbers."""
    return table_of(rows, [facts(data) for data in images])


def table_of(rows: Sequence[int] | np.ndarray, found: Sequence[dict[str, Any]]) -> pa.Table:
    """FACTS_SCHEMA table of ``facts`` results and their row numbers."""
    cols: dict[str, Any] = {"row": pa.array(np.asarray(rows, np.int64))}
    for name, typ in zip(FACT_COLUMNS, FACTS_SCHEMA.types[1:], strict=True):
        cols[name] = pa.array([f[name] for f in found], typ)
    return pa.table(cols, schema=FACTS_SCHEMA)


def binary_views(column: pa.Array) -> list[memoryview | None]:
    """The values of a binary column as memoryviews into its Arrow buffer (no copy; None for nulls).

    ``to_pylist`` would copy every image (a fresh allocation each, so page faults too): on 351 MB of
    images that copy took longer than reading the shard."""
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        return list(column.to_pylist())
    _, offsets_buf, data_buf = column.buffers()
    width = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    offsets = np.frombuffer(offsets_buf, width)[column.offset : column.offset + len(column) + 1].tolist()
    data = memoryview(data_buf if data_buf is not None else b"").cast("B")  # Arrow exports signed bytes
    views: list[memoryview | None] = [data[a:b] for a, b in pairwise(offsets)]
    if column.null_count:
        for i in np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False)).tolist():
            views[i] = None
    return views


# --- per-shard cache (like the hashes: keyed by shard path + fingerprint) --------------------------------
@dataclass(frozen=True)
class ShardCache:
    """A per-shard cache of one table per shard (rows inspected so far), ``<cache>/<kind>/<key>.parquet``,
    valid while the shard's fingerprint and the table's version are those it was written for."""

    kind: str  # folder name, and the schema metadata key ``cfx-<kind>``
    version: int
    schema: pa.Schema

    def _fingerprint(self, root: str, shard: str, info: ShardInfo) -> dict[str, Any]:
        ident = f"{root}/{shard}" if root.startswith("hf://") else str(Path(root) / shard)
        return {"v": self.version, "shard": ident, **info.to_json()}

    def path(self, root: str, shard: str, info: ShardInfo) -> Path:
        fp = json.dumps(self._fingerprint(root, shard, info), sort_keys=True)
        return cache_dir() / self.kind / f"{hashlib.sha1(fp.encode()).hexdigest()}.parquet"

    def load(self, root: str, shard: str, info: ShardInfo | None) -> pa.Table | None:
        """The cached table of a shard, or None."""
        if info is None:
            return None
        try:
            table = pq.read_table(self.path(root, shard, info))
        except Exception:
            return None
        meta = (table.schema.metadata or {}).get(f"cfx-{self.kind}".encode())
        if meta is None or json.loads(meta) != self._fingerprint(root, shard, info):
            return None
        try:
            return table.replace_schema_metadata(None).cast(self.schema)
        except (ValueError, pa.ArrowInvalid):  # written by another cfx version: read the bytes again
            return None

    def store(self, root: str, shard: str, info: ShardInfo | None, table: pa.Table) -> pa.Table:
        """Merge ``table`` into the shard's cached table and save it; returns the merged table. A cache that
        cannot be written is skipped."""
        if info is None:
            return table
        merged = merge_tables(self.load(root, shard, info), table.cast(self.schema))
        meta = json.dumps(self._fingerprint(root, shard, info)).encode()
        path = self.path(root, shard, info)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            out = merged.replace_schema_metadata({f"cfx-{self.kind}".encode(): meta})
            write_atomic(path, lambda tmp: pq.write_table(out, tmp))
        except (OSError, CfxError):
            pass
        return merged


FACTS_CACHE = ShardCache("facts", FACTS_VERSION, FACTS_SCHEMA)


def cache_path(root: str, shard: str, info: ShardInfo) -> Path:
    """Where the byte facts of one shard are cached (``<cache>/facts/<key>.parquet``)."""
    return FACTS_CACHE.path(root, shard, info)


def load_cached(root: str, shard: str, info: ShardInfo | None) -> pa.Table | None:
    """The cached facts of a shard (the rows inspected so far), or None."""
    return FACTS_CACHE.load(root, shard, info)


def merge_tables(old: pa.Table | None, new: pa.Table) -> pa.Table:
    """Rows of ``old`` and ``new`` (``new`` wins for a row in both), sorted by row."""
    if old is None or not old.num_rows:
        return new.sort_by("row")
    keep = pa.array(~np.isin(old.column("row").to_numpy(), new.column("row").to_numpy()))
    return pa.concat_tables([old.filter(keep), new]).sort_by("row")


def store_cached(root: str, shard: str, info: ShardInfo | None, table: pa.Table) -> pa.Table:
    """Merge ``table`` into the shard's cached facts and save them; returns the merged table. A cache that
    cannot be written is skipped."""
    return FACTS_CACHE.store(root, shard, info, table)
