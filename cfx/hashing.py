"""Exact and perceptual hashes of every image of a manifest, cached per shard, computed in a process pool.

- ``sha256``: SHA-256 of the encoded bytes (identical files), as 64 hex characters.
- ``phash``: 64-bit perceptual hash with the exact definition of ``imagehash.phash`` (grey, 32×32 LANCZOS,
  2-D DCT-II, top-left 8×8, bit = coefficient > median, first coefficient = most significant bit), so
  ``int(str(imagehash.phash(img)), 16) == phash``. Stored as ``uint64``. Bit-exact, only faster: 8-bit
  PNGs are decoded by libspng (lossless: Pillow's pixels) and the resize is cfx.resample's exact copy of
  Pillow's fixed-point LANCZOS. Exactness matters: for ~1 image in 5 the two middle DCT coefficients lie
  closer than the thumbnail's rounding noise, so any approximate pipeline changes those hashes
  (docs/benchmarks.md, "pHash agreement").
- ``dhash`` (only with ``with_dhash=True``): 64-bit difference hash with the definition of
  ``imagehash.dhash`` (grey, 9×8, left < right). It costs a second full-resolution resize per image and is
  not used for matching (measured: no better than pHash on crops), so it is off by default.
- ``near_uniform``: the 32×32 grey image is almost flat (std below ``NEAR_UNIFORM_STD``): its pHash is
  decided by noise, so it is left out of near-duplicate matching (exact matching still applies).
- ``hash_error``: why an image could not be decoded (None when it could). Such rows get no perceptual hash.

With ``with_pixels`` the same decode also gives the pixel facts (cfx.pixelfacts) of each image; the pass
stores them in their per-shard cache whenever it stores byte facts (``with_facts``), so a dedupe fills the
cache that ``cfx inspect --pixels`` reads.

The pure part (``hash_images``, ``hash_shard_batches``, ``shard_hashes_and_facts``) knows nothing of caches or
pools, so another executor (cfx.engine_ray) runs it and the driver writes the same caches (``store_cached``,
``bytefacts.store_cached``).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.fft
from PIL import Image

from cfx import bytefacts, pixelfacts
from cfx.errors import BadShardError, CfxError, PartialError, error_text
from cfx.index import cache_dir
from cfx.manifest import Manifest, ShardInfo
from cfx.outputs import write_atomic
from cfx.pool import shared_work
from cfx.progress import NullReporter, Reporter, RowsAndBytes
from cfx.resample import lanczos_resize
from cfx.schema import IMAGE_COLUMN
from cfx.stream import ROW_COLUMN, iter_shard_batches, planned_readers, rows_by_shard

if TYPE_CHECKING:
    from cfx.engine import ShardEngine

try:  # a required dependency; without its wheel Pillow decodes every PNG (same pixels, slower)
    import pyspng as _spng
except ImportError:  # pragma: no cover
    _spng = None

HASH_VERSION = 1
NEAR_UNIFORM_STD = 2.0  # grey levels (0-255) of the 32×32 thumbnail; see docs/dedupe.md
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # larger images are refused (decompression bombs)
HASH_BATCH_ROWS = 16
_GREY_BLOCK = 1 << 20  # pixels converted to grey at a time

HASH_COLUMNS = ("sha256", "phash", "near_uniform", "hash_error")  # + "dhash" when asked for
HASH_TABLE_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("sha256", pa.string()),
        ("phash", pa.uint64()),
        ("dhash", pa.uint64()),
        ("near_uniform", pa.bool_()),
        ("hash_error", pa.string()),
        ("num_bytes", pa.int64()),
        ("img_width", pa.int32()),
        ("img_height", pa.int32()),
    ]
)
HASH_DTYPES: dict[str, pl.DataType] = {
    "sha256": pl.String(),
    "phash": pl.UInt64(),
    "dhash": pl.UInt64(),
    "near_uniform": pl.Boolean(),
    "hash_error": pl.String(),
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SPNG_FORMATS = {0: "L", 2: "RGB", 6: "RGBA"}  # PNG colour type -> pyspng output format
_SPNG_COLOURS = {fmt: colour for colour, fmt in _SPNG_FORMATS.items()}
_MSB_FIRST = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)


# --- pure hashing ------------------------------------------------------------------------------------
@dataclass
class HashedImages:
    """Hashes of a list of encoded images, index-aligned with it."""

    sha256: list[str | None]
    phash: np.ndarray  # uint64, 0 where there is none (see ``ok``)
    dhash: np.ndarray  # uint64
    ok: np.ndarray  # bool: decoded, perceptual hashes valid
    near_uniform: np.ndarray  # bool
    error: list[str | None]
    num_bytes: np.ndarray  # int64, -1 for missing bytes
    width: np.ndarray  # int32, -1 when unknown
    height: np.ndarray  # int32
    decoded: int = 0  # images actually decoded (a cache hit decodes nothing)
    with_dhash: bool = False
    pixels: list[dict[str, Any]] | None = None  # cfx.pixelfacts results, with ``with_pixels``


def bits_to_uint64(bits: np.ndarray) -> np.ndarray:
    """(n, 64) booleans, first = most significant bit (imagehash's hex order) -> (n,) uint64."""
    return (bits.reshape(-1, 64).astype(np.uint64) * _MSB_FIRST).sum(axis=1, dtype=np.uint64)


def phash_from_thumbs(thumbs: np.ndarray) -> np.ndarray:
    """pHash of (n, 32, 32) grey thumbnails, as imagehash computes it (DCT-II on both axes, unnormalised)."""
    if not len(thumbs):
        return np.zeros(0, np.uint64)
    coeffs = scipy.fft.dct(scipy.fft.dct(thumbs.astype(np.float64), axis=1), axis=2)[:, :8, :8]
    low = coeffs.reshape(len(thumbs), 64)
    med = np.median(low, axis=1, keepdims=True)
    return bits_to_uint64(low > med)


def dhash_from_small(small: np.ndarray) -> np.ndarray:
    """dHash of (n, 8, 9) grey images: bit = pixel > its left neighbour (imagehash.dhash)."""
    if not len(small):
        return np.zeros(0, np.uint64)
    return bits_to_uint64(small[:, :, 1:] > small[:, :, :-1])


def _png_header(data: bytes) -> tuple[int, int, str] | None:
    """Width, height and pyspng format of an 8-bit grey/RGB/RGBA PNG, else None (Pillow decodes it).

    PNG is lossless: any correct decoder gives Pillow's pixels; libspng (pyspng) does it in about 60% of
    Pillow's time (docs/benchmarks.md). Other PNG kinds (palette, 16-bit, grey+alpha) stay with Pillow.
    """
    if _spng is None or len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    fmt = _SPNG_FORMATS.get(colour)
    return (width, height, fmt) if depth == 8 and fmt is not None else None


# Chunks the fast path accepts, with the lengths Pillow accepts them at (None: any). Everything else —
# iCCP, zTXt, iTXt, sBIT, bKGD, APNG frames, unknown chunks — and any other length goes to Pillow.
_PLAIN_CHUNKS: dict[bytes, int | None] = {
    b"IHDR": 13,
    b"IDAT": None,
    b"IEND": 0,
    b"gAMA": 4,
    b"cHRM": 32,
    b"sRGB": 1,
    b"pHYs": 9,
    b"tIME": 7,
    b"tEXt": None,
}
_TRNS_LENGTH = {0: 2, 2: 6}  # grey, RGB (RGBA has no tRNS)
_MAX_PLAIN_TEXT = 1 << 20  # bytes of tEXt (Pillow's limit per chunk; it also caps the total)


def _png_plain(data: bytes, colour: int) -> bool:
    """Whether Pillow would read every chunk of this PNG as libspng does: each chunk up to IEND is complete,
    matches its CRC (libspng as pyspng calls it checks none), is of a kind and length in _PLAIN_CHUNKS (or a
    tRNS of the right length), and the IDAT chunks are consecutive. Other files go to Pillow, which decodes
    them or names what is wrong (tests: damaged and unusual PNGs give Pillow's result and error). ~0.06 ms
    per 400 KB. Not detected: a wrong zlib checksum inside valid chunks (a crafted file)."""
    pos, end, text, idat = 8, len(data), 0, 0  # idat: 0 before, 1 inside, 2 after the IDAT run
    while pos + 12 <= end:
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        stop = pos + 8 + length
        if stop + 4 > end or zlib.crc32(data[pos + 4 : stop]) != struct.unpack_from(">I", data, stop)[0]:
            return False
        want = _TRNS_LENGTH.get(colour, -1) if kind == b"tRNS" else _PLAIN_CHUNKS.get(kind, -1)
        if want is not None and want != length:
            return False
        if kind == b"IDAT":
            if idat == 2:
                return False
            idat = 1
        elif idat == 1:
            idat = 2
        if kind == b"tEXt":
            text += length
            if text > _MAX_PLAIN_TEXT:
                return False
        if kind == b"IEND":
            return idat == 2
        pos = stop + 4
    return False


def _check_pixels(w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise Image.DecompressionBombError(
            f"{w * h:,} pixels ({w}x{h}) exceeds the limit of {max_pixels:,} (decompression bomb?)"
        )


def _to_grey(pixels: np.ndarray, fmt: str) -> np.ndarray:
    """Pillow's ``convert("L")`` of decoded pixels, a block of rows at a time (no full-size RGBA copy)."""
    if fmt == "L":
        return pixels
    grey = np.empty(pixels.shape[:2], np.uint8)
    step = max(1, _GREY_BLOCK // pixels.shape[1])
    for r0 in range(0, pixels.shape[0], step):
        grey[r0 : r0 + step] = np.asarray(Image.fromarray(pixels[r0 : r0 + step], fmt).convert("L"))
    return grey


def _grey(data: bytes, max_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The image as imagehash sees it, ``convert('L')``, as a (height, width) uint8 array, and its size."""
    grey, size, _ = _pixels(data, max_pixels, False)
    return grey, size


def _colour_grid(img: Image.Image) -> np.ndarray | None:
    """The pixel facts' colour grid (cfx.pixelfacts.colour_step) of a decoded Pillow image, None for grey
    ones. Read a block of rows at a time: no full-size RGB copy of a large image."""
    if img.mode in ("L", "1", "I", "I;16", "I;16B", "I;16L", "F"):
        return None
    w, h = img.size
    step = pixelfacts.colour_step(h, w)
    rows = max(1, _GREY_BLOCK // w // step) * step
    parts = []
    for r0 in range(0, h, rows):
        block = img if rows >= h else img.crop((0, r0, w, min(h, r0 + rows)))  # a crop is a copy
        parts.append(
            np.asarray(block if img.mode in ("RGB", "RGBA") else block.convert("RGB"))[::step, ::step]
        )
    return np.concatenate(parts)


def _pixels(
    data: bytes, max_pixels: int, keep_colour: bool
) -> tuple[np.ndarray, tuple[int, int], np.ndarray | Image.Image | None]:
    """``_grey``'s result and, with ``keep_colour``, the colour of the pixel facts: the colour grid (every
    ``cfx.pixelfacts.colour_step``-th pixel of every such row, RGB(A)) of a libspng-decoded PNG, else the
    decoded Pillow image (its grid is read by ``_pixel_facts``, where a failure is the pixel facts' only)."""
    head = _png_header(data)
    if head is not None and _png_plain(data, _SPNG_COLOURS[head[2]]):
        w, h, fmt = head
        _check_pixels(w, h, max_pixels)
        try:
            pixels = _spng.load(data, fmt)
        except Exception:  # let Pillow decode it, or say in its words why it cannot
            pass
        else:
            step = pixelfacts.colour_step(h, w)
            colour = pixels[::step, ::step] if keep_colour and fmt != "L" else None
            return _to_grey(pixels, fmt), (w, h), colour
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow: "Image size (N pixels) exceeds ..."
            size = f"{int(found[1]):,} pixels" if found else "the image"  # its size is not known here
            raise Image.DecompressionBombError(
                f"{size} exceeds the limit of {max_pixels:,} (decompression bomb?)"
            ) from None
        w, h = img.size
        _check_pixels(w, h, max_pixels)
        grey = np.asarray(img.convert("L"))
        return grey, (w, h), img if keep_colour else None


def _decode(
    data: bytes, max_pixels: int, with_dhash: bool, with_pixels: bool = False
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int], dict[str, Any] | None]:
    """The 32×32 (and 9×8) grey thumbnails imagehash would compute, the image size, and with
    ``with_pixels`` its pixel facts (from the same decoded pixels).

    imagehash: ``image.convert('L').resize((32, 32), LANCZOS)``; the resize is cfx.resample's
    bit-exact copy of Pillow's.
    """
    grey, size, colour = _pixels(data, max_pixels, with_pixels)
    thumb = lanczos_resize(grey, 32, 32)
    small = lanczos_resize(grey, 9, 8) if with_dhash else None
    facts = _pixel_facts(colour, grey, data) if with_pixels else None
    return thumb, small, size, facts


def _pixel_facts(colour: np.ndarray | Image.Image | None, grey: np.ndarray, data: bytes) -> dict[str, Any]:
    try:
        grid = _colour_grid(colour) if isinstance(colour, Image.Image) else colour
        return pixelfacts.pixel_facts(grid, grey, data)
    except Exception as exc:  # a statistic that fails is recorded; the hashes stand
        return pixelfacts.empty(_describe(exc))


def _describe(exc: BaseException) -> str:
    """A stable one-line description (no memory addresses, so caches are reproducible)."""
    text = error_text(exc) if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def hash_images(
    images: Sequence[bytes | None],
    *,
    max_pixels: int = MAX_PIXELS,
    near_uniform_std: float = NEAR_UNIFORM_STD,
    with_dhash: bool = False,
    with_pixels: bool = False,
) -> HashedImages:
    """Hash encoded images (and with ``with_pixels`` compute their pixel facts from the same decode).
    Never raises for a bad image: it gets ``ok=False`` and an ``error`` text."""
    n = len(images)
    sha: list[str | None] = [None] * n
    error: list[str | None] = [None] * n
    num_bytes = np.full(n, -1, np.int64)
    width = np.full(n, -1, np.int32)
    height = np.full(n, -1, np.int32)
    ok = np.zeros(n, bool)
    thumbs = np.zeros((n, 32, 32), np.uint8)
    smalls = np.zeros((n, 8, 9), np.uint8)
    pixels: list[dict[str, Any]] = []
    decoded = 0
    for i, data in enumerate(images):
        if not data:  # a bad row, not a bad shard: recorded as its hash_error, the rest goes on
            error[i] = "no image data" if data is None else "empty image data (0 bytes)"
            num_bytes[i] = -1 if data is None else 0
            pixels.append(pixelfacts.empty(error[i]))
            continue
        num_bytes[i] = len(data)
        sha[i] = hashlib.sha256(data).hexdigest()
        decoded += 1
        try:
            thumbs[i], small, (width[i], height[i]), facts = _decode(
                data, max_pixels, with_dhash, with_pixels
            )
            if small is not None:
                smalls[i] = small
        except Exception as exc:  # any decoder failure is data, not a crash
            error[i] = _describe(exc)
            pixels.append(pixelfacts.empty(error[i]))
            continue
        pixels.append(facts or {})
        ok[i] = True
    phash = np.zeros(n, np.uint64)
    dhash = np.zeros(n, np.uint64)
    phash[ok] = phash_from_thumbs(thumbs[ok])
    if with_dhash:
        dhash[ok] = dhash_from_small(smalls[ok])
    std = thumbs.reshape(n, -1).std(axis=1) if n else np.zeros(0)
    near_uniform = ok & (std < near_uniform_std)
    return HashedImages(
        sha,
        phash,
        dhash,
        ok,
        near_uniform,
        error,
        num_bytes,
        width,
        height,
        decoded,
        with_dhash,
        pixels if with_pixels else None,
    )


def hashes_to_table(rows: Sequence[int] | np.ndarray, h: HashedImages) -> pa.Table:
    """One row per image in HASH_TABLE_SCHEMA (nulls where a value does not exist)."""
    ok = h.ok
    return pa.table(
        {
            "row": pa.array(np.asarray(rows, np.int64)),
            "sha256": pa.array(h.sha256, pa.string()),
            "phash": pa.array(h.phash, pa.uint64(), mask=~ok),
            "dhash": pa.array(h.dhash, pa.uint64(), mask=~ok | (not h.with_dhash)),
            "near_uniform": pa.array(h.near_uniform, pa.bool_(), mask=~ok),
            "hash_error": pa.array(h.error, pa.string()),
            "num_bytes": pa.array(h.num_bytes, pa.int64(), mask=h.num_bytes < 0),
            "img_width": pa.array(h.width, pa.int32(), mask=h.width < 0),
            "img_height": pa.array(h.height, pa.int32(), mask=h.height < 0),
        },
        schema=HASH_TABLE_SCHEMA,
    )


def hash_shard_batches(
    batches: Iterable[pa.RecordBatch],
    pixels: list[pa.Table] | None = None,
    **options: Any,
) -> tuple[pa.Table, int]:
    """Hash record batches holding ``image_data`` and ``__row`` (as ``cfx.stream.iter_shard_batches`` yields).

    Returns the HASH_TABLE_SCHEMA table sorted by row, and the number of images decoded. Given a list
    ``pixels``, the pixel facts of the same images are computed too and appended to it as one
    PIXEL_SCHEMA table (cfx.pixelfacts).
    """
    parts = []
    decoded = 0
    found: list[dict[str, Any]] = []
    for batch in batches:
        h = hash_images(batch.column(IMAGE_COLUMN).to_pylist(), with_pixels=pixels is not None, **options)
        decoded += h.decoded
        parts.append(hashes_to_table(batch.column(ROW_COLUMN).to_numpy(), h))
        found.extend(h.pixels or ())
    if pixels is not None:  # one table per shard: Arrow arrays per 16-row batch cost more than their facts
        rows = np.concatenate([p.column("row").to_numpy() for p in parts]) if parts else np.zeros(0, np.int64)
        pixels.append(pixelfacts.table_of(rows, found))
    if not parts:
        return HASH_TABLE_SCHEMA.empty_table(), decoded
    return pa.concat_tables(parts).sort_by("row"), decoded


# --- per-shard cache -----------------------------------------------------------------------------------
def _fingerprint(root: str, shard: str, info: ShardInfo, with_dhash: bool = False) -> dict[str, Any]:
    ident = f"{root}/{shard}" if root.startswith("hf://") else str(Path(root) / shard)
    return {"v": HASH_VERSION, "shard": ident, **info.to_json(), **({"dhash": True} if with_dhash else {})}


def cache_path(root: str, shard: str, info: ShardInfo, with_dhash: bool = False) -> Path:
    """Where the hashes of one shard (identified by path and fingerprint) are cached."""
    fp = _fingerprint(root, shard, info, with_dhash)
    key = hashlib.sha1(json.dumps(fp, sort_keys=True).encode()).hexdigest()
    return cache_dir() / "hashes" / f"{key}.parquet"


def load_cached(root: str, shard: str, info: ShardInfo, with_dhash: bool = False) -> pa.Table | None:
    """The cached hash table of a shard (all rows hashed so far), or None."""
    path = cache_path(root, shard, info, with_dhash)
    try:
        table = pq.read_table(path)
    except Exception:
        return None
    meta = (table.schema.metadata or {}).get(b"cfx-hashes")
    if meta is None or json.loads(meta) != _fingerprint(root, shard, info, with_dhash):
        return None
    return table.replace_schema_metadata(None).cast(HASH_TABLE_SCHEMA)


def store_cached(root: str, shard: str, info: ShardInfo, table: pa.Table, with_dhash: bool = False) -> None:
    """Save a shard's hash table (sorted by row); a cache that cannot be written is skipped."""
    path = cache_path(root, shard, info, with_dhash)
    table = table.cast(HASH_TABLE_SCHEMA).sort_by("row")
    meta = json.dumps(_fingerprint(root, shard, info, with_dhash)).encode()
    table = table.replace_schema_metadata({b"cfx-hashes": meta})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp: pq.write_table(table, tmp))
    except (OSError, CfxError):
        pass


# --- a manifest's hashes --------------------------------------------------------------------------------
def hash_shard(
    root: str,
    shard: str,
    info: ShardInfo | None,
    rows: np.ndarray,
    with_facts: bool = False,
    **options: Any,
) -> tuple[pa.Table, int, pa.Table | None]:
    """Hash the given rows of one shard (runs in a worker process of this machine; options see
    ``shard_hashes_and_facts``): the hash table, the images decoded and the pixel facts (with
    ``with_pixels``). ``with_facts``: also parse the byte facts of the same bytes (cfx.bytefacts) and merge
    them, and the pixel facts, into that shard's caches, so a later ``cfx inspect`` reads nothing."""
    table, decoded, facts, pixels = shard_hashes_and_facts(
        root, shard, info, rows, with_facts=with_facts, **options
    )
    if facts is not None:
        bytefacts.store_cached(root, shard, info, facts)
        if pixels is not None:
            pixelfacts.store_cached(root, shard, info, pixels)
    return table, decoded, pixels


def shard_hashes_and_facts(
    root: str,
    shard: str,
    info: ShardInfo | None,
    rows: np.ndarray,
    batch_rows: int = HASH_BATCH_ROWS,
    hub_fs: Any = None,
    with_facts: bool = True,
    with_pixels: bool = False,
    **options: Any,
) -> tuple[pa.Table, int, pa.Table | None, pa.Table | None]:
    """Stream the given rows of one shard and hash them (``hub_fs`` see ``cfx.sources.hub_filesystem``):
    the hash table, the images decoded, with ``with_facts`` the byte facts of the same bytes (None when
    not asked or no row was read) and with ``with_pixels`` their pixel facts (cfx.pixelfacts; else None).
    Writes no cache: an engine whose workers may not share this machine's cache folder (cfx.engine_ray)
    returns the facts for the driver to store."""
    m = Manifest(df=pl.DataFrame(), root=root, shards={shard: info} if info is not None else {})
    batches = iter_shard_batches(m, shard, rows, (IMAGE_COLUMN,), batch_rows, hub_fs)
    pixels: list[pa.Table] | None = [] if with_pixels else None
    facts: list[pa.Table] = []
    if with_facts:
        batches = _with_facts(batches, facts)
    table, decoded = hash_shard_batches(batches, pixels, **options)
    return table, decoded, pa.concat_tables(facts) if facts else None, pixels[0] if pixels else None


def _with_facts(batches: Iterable[pa.RecordBatch], out: list[pa.Table]) -> Iterator[pa.RecordBatch]:
    """Pass the batches on, collecting the byte facts of their images (the fused hash + inspect pass)."""
    for batch in batches:
        images = bytefacts.binary_views(batch.column(IMAGE_COLUMN))
        out.append(bytefacts.facts_table(batch.column(ROW_COLUMN).to_numpy(), images))
        yield batch


@dataclass
class HashResult:
    manifest: Manifest  # the input rows, with hash columns (num_bytes/width/height filled when null)
    decoded: int = 0
    cached_rows: int = 0
    hashed_rows: int = 0
    shards: int = 0
    bad: list[BadShardError] = field(default_factory=list)
    pixels: dict[str, pa.Table] = field(default_factory=dict)  # with ``with_pixels``: facts per shard


def _has_hashes(df: pl.DataFrame, with_dhash: bool) -> bool:
    """Every row already has its hashes (or the error that prevented them)."""
    if not all(c in df.columns for c in (*HASH_COLUMNS, *(("dhash",) if with_dhash else ()))):
        return False
    complete = pl.col("hash_error").is_not_null() | (
        pl.col("phash").is_not_null() & pl.col("sha256").is_not_null()
    )
    return bool(df.select(complete.all()).item())


def hash_manifest(
    manifest: Manifest,
    *,
    workers: int = 2,
    use_cache: bool = True,
    skip_bad: bool = False,
    reuse_columns: bool = True,
    with_dhash: bool = False,
    with_pixels: bool = False,
    engine: ShardEngine | None = None,
    reporter: Reporter | None = None,
    **options: Any,
) -> HashResult:
    """Add hash columns to every row of ``manifest`` (see module doc), hashing only what no cache holds.

    Each shard is one task of a process pool (``workers``); a worker streams its shard's bytes itself,
    so only row numbers and small result tables cross process boundaries. With ``reuse_columns`` a
    manifest that already carries complete hash columns (e.g. the output of an earlier dedupe) is kept
    as it is and no shard is read. ``with_dhash`` also computes the ``dhash`` column. With ``engine``
    (cfx.engine_ray) each shard is a Ray task running the same ``shard_hashes_and_facts``; its caches, hashes
    and the fused byte facts alike, are written here (``use_cache=False``: none, as locally).

    Pixel facts (cfx.pixelfacts) come from the same decode: with the cache on they are computed for every
    image decoded and cached; ``with_pixels`` also decodes the rows their cache lacks and joins the
    PIXEL_COLUMNS to the manifest (``result.pixels`` holds them per shard).
    """
    reporter = reporter or NullReporter()
    options["with_dhash"] = with_dhash
    df = manifest.df
    has_pixels = not with_pixels or all(c in df.columns for c in pixelfacts.PIXEL_COLUMNS)
    if reuse_columns and df.height and has_pixels and _has_hashes(df, with_dhash):
        return HashResult(manifest=manifest, cached_rows=df.height)
    parts = rows_by_shard(manifest)
    tables: dict[str, pa.Table] = {}
    pixel_tables: dict[str, pa.Table] = {}
    todo: list[tuple[str, np.ndarray]] = []
    cached_rows = 0
    for part in parts:
        info = manifest.shards.get(part.shard)
        missing = part.rows
        hit = (
            load_cached(manifest.root, part.shard, info, with_dhash)
            if use_cache and info is not None
            else None
        )
        if hit is not None:
            missing = np.setdiff1d(part.rows, hit.column("row").to_numpy(), assume_unique=True)
            tables[part.shard] = hit
        if with_pixels:
            px = pixelfacts.load_cached(manifest.root, part.shard, info) if use_cache else None
            if px is not None:
                pixel_tables[part.shard] = px
            have = px.column("row").to_numpy() if px is not None else np.zeros(0, np.int64)
            missing = np.union1d(missing, np.setdiff1d(part.rows, have, assume_unique=True))
        cached_rows += part.rows.size - missing.size
        if missing.size:
            todo.append((part.shard, missing))
    result = HashResult(manifest=manifest, cached_rows=cached_rows, shards=len(parts))
    task = RowsAndBytes(reporter, "Hashing images", int(sum(r.size for _, r in todo)), unit="images")

    def finish(shard: str, table: pa.Table, decoded: int, pixels: pa.Table | None = None) -> None:
        if pixels is not None:
            pixel_tables[shard] = bytefacts.merge_tables(pixel_tables.get(shard), pixels)
        result.decoded += decoded
        result.hashed_rows += table.num_rows
        tables[shard] = bytefacts.merge_tables(tables.get(shard), table)  # rows decoded again replace theirs
        info = manifest.shards.get(shard)
        if use_cache and info is not None:
            store_cached(manifest.root, shard, info, tables[shard], with_dhash)
        task.advance(table.num_rows, int(pc.sum(table.column("num_bytes")).as_py() or 0))

    def failed(shard: str, rows: np.ndarray, exc: BadShardError) -> None:
        if not skip_bad:
            raise PartialError(
                f"cannot hash {shard}: {exc}", "fix or re-download the shard, or add --skip-bad"
            ) from None
        reporter.warn(f"{exc} (its {rows.size:,} rows get a hash_error)")
        result.bad.append(exc)
        bad = pa.table(
            {
                "row": pa.array(rows, pa.int64()),
                "hash_error": pa.array([f"unreadable shard: {exc.message}"] * rows.size, pa.string()),
            }
        )
        tables[shard] = _align(bad)
        pixel_tables[shard] = pixelfacts.table_of(
            rows, [pixelfacts.empty(f"unreadable shard: {exc.message}")] * rows.size
        )

    options["with_pixels"] = with_pixels or use_cache  # fused pass: the pixel facts of what is decoded
    local = {**options, "with_facts": use_cache}  # fused pass: the facts caches fill as a side effect
    if todo and engine is not None:
        infos = [(s, manifest.shards.get(s), r) for s, r in todo]
        for got in engine.hash_shards(manifest.root, infos, options, with_facts=use_cache):
            if got.error is not None:
                failed(got.shard, got.rows, got.error)
                continue
            assert got.table is not None
            info = manifest.shards.get(got.shard)
            if got.facts is not None:  # stored here as hash_shard's with_facts stores them in a local worker
                bytefacts.store_cached(manifest.root, got.shard, info, got.facts)
                if got.pixels is not None:
                    pixelfacts.store_cached(manifest.root, got.shard, info, got.pixels)
            finish(got.shard, got.table, got.decoded, got.pixels)
    elif todo:  # this process hashes too, from the start (cfx.pool.shared_work)
        tasks = [(manifest.root, s, manifest.shards.get(s), r) for s, r in todo]
        workers = planned_readers(min(workers, len(tasks)), reporter)
        with closing(shared_work(partial(hash_shard, **local), tasks, workers)) as done:
            for i, fut in done:  # closed on an error: the pool stops
                shard, rows = todo[i]
                try:
                    finish(shard, *fut.result())
                except BadShardError as exc:
                    failed(shard, rows, exc)
    task.close()
    joined = _join(df, tables)
    if not with_dhash:
        joined = joined.drop("dhash")
    if with_pixels:
        joined = pixelfacts.join(joined, pixel_tables)
        result.pixels = pixel_tables
    result.manifest = manifest.with_df(joined)
    return result


def _align(table: pa.Table) -> pa.Table:
    cols = {
        name: table.column(name) if name in table.column_names else pa.nulls(table.num_rows, typ)
        for name, typ in zip(HASH_TABLE_SCHEMA.names, HASH_TABLE_SCHEMA.types, strict=True)
    }
    return pa.table(cols, schema=HASH_TABLE_SCHEMA)


def _join(df: pl.DataFrame, tables: dict[str, pa.Table]) -> pl.DataFrame:
    """The manifest rows (order kept) with hash columns; num_bytes/width/height filled where null."""
    frames = []
    for shard, table in tables.items():
        f = pl.from_arrow(_align(table))
        assert isinstance(f, pl.DataFrame)
        frames.append(f.with_columns(pl.lit(shard, pl.String).alias("shard")))
    extra = {"num_bytes": "_num_bytes", "img_width": "_width", "img_height": "_height"}
    if frames:
        hashes = pl.concat(frames).rename(extra)
    else:
        schema: dict[str, pl.DataType] = {"row": pl.Int64(), "shard": pl.String(), **HASH_DTYPES}
        schema |= {"_num_bytes": pl.Int64(), "_width": pl.Int32(), "_height": pl.Int32()}
        hashes = pl.DataFrame(schema=schema)
    base = df.drop([c for c in (*HASH_COLUMNS, "dhash") if c in df.columns])
    out = base.join(hashes, on=["shard", "row"], how="left", maintain_order="left")
    fills = []
    for col, src, dtype in (
        ("num_bytes", "_num_bytes", pl.Int64),
        ("width", "_width", pl.Int32),
        ("height", "_height", pl.Int32),
    ):
        value = pl.col(src).cast(dtype)
        fills.append((pl.col(col).fill_null(value) if col in base.columns else value).alias(col))
    out = out.with_columns(fills).drop(list(extra.values()))
    return out.with_columns([pl.col(c).cast(t) for c, t in HASH_DTYPES.items()])
