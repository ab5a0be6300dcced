"""JPEG header facts from the marker segments alone (no pixel decode): quality, subsampling, metadata.

Quality. libjpeg (and libjpeg-turbo, Pillow, most web encoders) write the IJG example tables of the JPEG
standard (Annex K.1 luminance, K.2 chrominance) scaled by ``jpeg_quality_scaling``::

    scale = 5000 / q  if q < 50  else  200 - 2q        (q clamped to 1..100, integer division)
    entry = clamp((base * scale + 50) // 100, 1, 255)   (255: baseline; 32767 without force_baseline)

``estimate_quality`` compares the file's tables with those scaled tables for q = 1..100: when they are
equal for some q the estimate is **exact** (table 0 against the luminance table, every other table against
the chrominance table). Otherwise the estimate is the q whose scaled tables are nearest in summed squared
error over all entries (ties: the higher q; baseline-clamped tables when all entries fit in 8 bits), with
``exact=False``. docs/inspect.md compares this with ImageMagick's ``identify -format %Q``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Bytes = bytes | memoryview  # encoded image bytes, or a view into a buffer holding them

# Zig-zag position -> natural (row-major) index. DQT segments store entries in zig-zag order.
ZIGZAG = np.array(
    [
        0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
        12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
        35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
        58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    ]
)  # fmt: skip
# JPEG standard Annex K, natural order.
STD_LUMINANCE = np.array(
    [
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
        14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
    ]
)  # fmt: skip
STD_CHROMINANCE = np.array(
    [
        17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
        24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
        *([99] * 32),
    ]
)  # fmt: skip
QUALITIES = np.arange(1, 101)


def quality_scaling(q: int) -> int:
    """libjpeg's ``jpeg_quality_scaling``: quality 1..100 -> percentage scale factor."""
    q = min(max(q, 1), 100)
    return 5000 // q if q < 50 else 200 - 2 * q


def scaled_table(base: np.ndarray, q: int, baseline: bool = True) -> np.ndarray:
    """The table libjpeg writes for ``base`` at quality ``q`` (``jpeg_add_quant_table``)."""
    t = (base.astype(np.int64) * quality_scaling(q) + 50) // 100
    return np.clip(t, 1, 255 if baseline else 32767)


def _scaled_all(base: np.ndarray, baseline: bool) -> np.ndarray:
    return np.stack([scaled_table(base, int(q), baseline) for q in QUALITIES])


# (100, 64) scaled tables per quality, natural order: baseline-clamped and 16-bit variants.
_LUM = {b: _scaled_all(STD_LUMINANCE, b) for b in (True, False)}
_CHROM = {b: _scaled_all(STD_CHROMINANCE, b) for b in (True, False)}


def table_key(zigzag: Sequence[int] | np.ndarray) -> bytes:
    """A dict key for a table's 64 values in zig-zag order: equal values give equal keys, whatever the DQT
    precision (8-bit values as 64 bytes, others as 128 big-endian 16-bit ones)."""
    values = np.asarray(zigzag)
    if values.dtype.kind not in "iu" and not np.array_equal(values, np.round(values)):
        return b""  # no scaled table has fractions
    if values.size != 64 or values.min() < 0 or values.max() > 65535:
        return b""
    return values.astype(np.uint8 if values.max() <= 255 else ">u2").tobytes()


def _qualities_by_key(scaled: np.ndarray) -> dict[bytes, frozenset[int]]:
    found: dict[bytes, set[int]] = {}
    for q, natural in zip(QUALITIES, scaled, strict=True):
        found.setdefault(table_key(natural[ZIGZAG]), set()).add(int(q))
    return {k: frozenset(v) for k, v in found.items()}


# Exact matches by hash lookup: {table key: the qualities whose scaled table it is}, per clamping.
_LUM_KEYS = {b: _qualities_by_key(_LUM[b]) for b in (True, False)}
_CHROM_KEYS = {b: _qualities_by_key(_CHROM[b]) for b in (True, False)}
_NONE: frozenset[int] = frozenset()


def exact_quality(keys: dict[int, bytes]) -> int | None:
    """The quality whose scaled tables equal all the given ones ({table id: table_key}), else None.

    The same rule as ``estimate_quality``'s exact step: baseline-clamped tables first, then 16-bit ones."""
    ids = sorted(keys)
    for baseline in (True, False):
        lum, chrom = _LUM_KEYS[baseline], _CHROM_KEYS[baseline]
        found = lum.get(keys[ids[0]], _NONE)
        for i in ids[1:]:
            if not found:
                break
            found = found & chrom.get(keys[i], _NONE)
        if found:
            return max(found)
    return None


def estimate_quality(tables: dict[int, np.ndarray]) -> tuple[int, bool] | None:
    """(quality, exact) for quantisation tables {table id: 64 entries in natural order}; None if none.

    See the module doc for the rule.
    """
    if not tables:
        return None
    exact = exact_quality({i: table_key(t[ZIGZAG]) for i, t in tables.items()})
    if exact is not None:
        return exact, True
    return nearest_quality(tables), False


def nearest_quality(tables: dict[int, np.ndarray]) -> int:
    """The q whose scaled tables are nearest in summed squared error (ties: the higher q).

    Baseline-clamped tables are the reference when every entry fits in 8 bits: a baseline table at low q is
    mostly 255s, far from the unclamped ones (perturbed q=1 tables came out as q=17 against those)."""
    ids = sorted(tables)
    baseline = all(int(t.max()) <= 255 for t in tables.values())
    err = np.zeros(len(QUALITIES))
    for i in ids:
        ref = _LUM[baseline] if i == ids[0] else _CHROM[baseline]
        err += ((ref - tables[i].astype(np.int64)) ** 2).sum(axis=1)
    best = np.flatnonzero(err == err.min())[-1]
    return int(QUALITIES[best])


@dataclass
class JpegHeader:
    """What the marker segments of one JPEG say (up to the first scan)."""

    width: int | None = None
    height: int | None = None
    bit_depth: int | None = None
    components: int | None = None
    subsampling: str | None = None
    progressive: bool = False
    table_keys: dict[int, bytes] = field(default_factory=dict)  # table id -> table_key (zig-zag order)
    has_exif: bool = False
    has_gps: bool = False
    has_icc: bool = False
    has_c2pa: bool = False
    software: str | None = None  # EXIF Software tag (IFD0)

    @property
    def tables(self) -> dict[int, np.ndarray]:
        """The quantisation tables, {table id: 64 entries in natural order}."""
        out = {}
        for i, key in self.table_keys.items():
            natural = np.empty(64, np.int64)
            natural[ZIGZAG] = np.frombuffer(key, "u1" if len(key) == 64 else ">u2")
            out[i] = natural
        return out

    @property
    def quality(self) -> tuple[int, bool] | None:
        """estimate_quality of the tables: a dict lookup when they are standard, least squares otherwise."""
        if not self.table_keys:
            return None
        exact = exact_quality(self.table_keys)
        return (exact, True) if exact is not None else (nearest_quality(self.tables), False)

    @property
    def mode(self) -> str | None:
        return {1: "L", 3: "RGB", 4: "CMYK"}.get(self.components or 0)


# SOF markers (C4 = DHT, C8 = JPG, CC = DAC are not frames); progressive: C2, C6, CA, CE.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}
_SUBSAMPLING = {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (4, 1): "4:1:1", (1, 2): "4:4:0"}


class JpegError(ValueError):
    """The bytes are not a JPEG whose header can be read."""


def subsampling_name(factors: list[tuple[int, int]]) -> str:
    """Chroma subsampling from the (H, V) sampling factors of the frame's components."""
    if len(factors) == 1:
        return "gray"
    (h0, v0), rest = factors[0], factors[1:]
    if all(f == rest[0] for f in rest) and h0 % rest[0][0] == 0 and v0 % rest[0][1] == 0:
        name = _SUBSAMPLING.get((h0 // rest[0][0], v0 // rest[0][1]))
        if name:
            return name
    return ",".join(f"{h}x{v}" for h, v in factors)  # unusual: spell out every component's factors


def _parse_dqt(seg: Bytes, keys: dict[int, bytes]) -> None:
    pos = 0
    while pos < len(seg):
        pq, tq = seg[pos] >> 4, seg[pos] & 15
        size = 128 if pq else 64
        body = seg[pos + 1 : pos + 1 + size]
        if len(body) < size:
            raise JpegError("truncated quantisation table (DQT)")
        if pq:  # 16-bit entries: the 8-bit key when they all fit (table_key)
            values = struct.unpack(">64H", body)
            keys[tq] = bytes(values) if max(values) <= 255 else bytes(body)
        else:
            keys[tq] = bytes(body)
        pos += 1 + size


def _parse_sof(seg: Bytes, marker: int, head: JpegHeader) -> None:
    if len(seg) < 6:
        raise JpegError("truncated frame header (SOF)")
    head.bit_depth, head.height, head.width, n = struct.unpack(">BHHB", seg[:6])
    comps = seg[6 : 6 + 3 * n]
    if len(comps) < 3 * n or n == 0:
        raise JpegError("truncated frame header (SOF)")
    head.components = n
    head.subsampling = subsampling_name([(comps[3 * i + 1] >> 4, comps[3 * i + 1] & 15) for i in range(n)])
    head.progressive = marker in _PROGRESSIVE


def exif_has_gps(tiff: Bytes) -> bool:
    """Whether IFD0 of a TIFF/EXIF block holds the GPS IFD pointer (tag 0x8825)."""
    return _gps_in_ifd0(tiff, 0, len(tiff))


def _gps_in_ifd0(data: Bytes, start: int, stop: int) -> bool:
    """exif_has_gps of ``data[start:stop]``, read in place (an APP1 segment can be 64 KB)."""
    if stop - start < 8:
        return False
    order = data[start : start + 2]
    if order == b"II":
        u16, u32 = "<H", "<I"
    elif order == b"MM":
        u16, u32 = ">H", ">I"
    else:
        return False
    ifd = start + struct.unpack_from(u32, data, start + 4)[0]
    if ifd + 2 > stop:
        return False
    (count,) = struct.unpack_from(u16, data, ifd)
    at = ifd + 2
    for _ in range(count):  # entries are sorted by tag in valid files, but that is not relied on
        if at + 12 > stop:
            return False
        if struct.unpack_from(u16, data, at)[0] == 0x8825:
            return True
        at += 12
    return False


def exif_software(tiff: Bytes, start: int = 0, stop: int | None = None) -> str | None:
    """The ASCII ``Software`` tag of IFD0 of the TIFF/EXIF block ``tiff[start:stop]``, else None."""
    stop = len(tiff) if stop is None else stop
    if stop - start < 8:
        return None
    order = bytes(tiff[start : start + 2])
    if order not in (b"II", b"MM"):
        return None
    e = "<" if order == b"II" else ">"
    ifd = start + struct.unpack_from(e + "I", tiff, start + 4)[0]
    if ifd + 2 > stop:
        return None
    (count,) = struct.unpack_from(e + "H", tiff, ifd)
    for at in range(ifd + 2, min(ifd + 2 + 12 * count, stop - 11), 12):
        tag, kind, n = struct.unpack_from(e + "HHI", tiff, at)
        if tag != 0x0131 or kind != 2:  # 2: ASCII
            continue
        pos = at + 8 if n <= 4 else start + struct.unpack_from(e + "I", tiff, at + 8)[0]
        raw = bytes(tiff[pos : min(pos + n, stop)]).split(b"\x00", 1)[0]
        text = raw.decode("latin-1").strip()
        return text[:200] or None
    return None


def _parse_app(marker: int, data: Bytes, start: int, stop: int, head: JpegHeader) -> None:
    """An APPn segment's body, ``data[start:stop]``, read in place."""
    if marker == 0xE1 and data[start : start + 5] == b"Exif\x00":
        head.has_exif = True
        head.has_gps = head.has_gps or _gps_in_ifd0(data, start + 6, stop)
        head.software = head.software or exif_software(data, start + 6, stop)
    elif marker == 0xE2 and data[start : start + 12] == b"ICC_PROFILE\x00":
        head.has_icc = True
    elif marker == 0xEB and data[start : start + 2] == b"JP" and b"jumb" in bytes(data[start:stop]):
        head.has_c2pa = True  # JUMBF box (C2PA manifests)


def parse_jpeg(data: Bytes) -> JpegHeader:
    """Read the marker segments of ``data`` up to the first scan (SOS). Raises JpegError when malformed.

    ``data`` may be a memoryview of unsigned bytes (format "B", e.g. into an Arrow buffer): it is read in
    place, never copied whole."""
    if data[:2] != b"\xff\xd8":
        raise JpegError("no JPEG start-of-image marker")
    head = JpegHeader()
    pos, n = 2, len(data)
    unpack = struct.unpack_from
    while pos < n:
        if data[pos] != 0xFF:
            raise JpegError(f"bad marker at byte {pos}")
        pos += 1
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker == 0xD9 or marker == 0xDA:  # EOI, SOS: the header is over
            break
        if pos + 2 > n:
            raise JpegError("truncated marker segment")
        (length,) = unpack(">H", data, pos)
        end = pos + length
        if length < 2 or end > n:
            raise JpegError("truncated marker segment")
        if marker == 0xDB:
            _parse_dqt(data[pos + 2 : end], head.table_keys)
        elif 0xE0 <= marker <= 0xEF:
            _parse_app(marker, data, pos + 2, end, head)
        elif marker in _SOF:
            _parse_sof(data[pos + 2 : end], marker, head)
        pos = end
    if head.width is None:
        raise JpegError("no frame header (SOF) before the image data")
    return head
