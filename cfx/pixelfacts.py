"""Pixel facts: low-level statistics of what an image shows, from its decoded pixels (no model).

``pixel_facts(colour, grey, data)`` returns one dict per image with the columns of PIXEL_SCHEMA. The image
is decoded once, by the hashing pass (cfx.hashing), which hands over the decoded pixels and the Rec. 601
grey image it needs for pHash anyway. Formulas (docs/inspect.md "Pixel facts" gives references):

- ``luma_mean``, ``luma_std``: mean and standard deviation of Rec. 601 luma ``Y = 0.299 R + 0.587 G +
  0.114 B`` (0–255; Pillow's ``convert("L")``, the grey image of pHash), over every pixel;
- ``entropy``: Shannon entropy in bits of the 256-bin luma histogram (0 for a flat image, at most 8);
- ``saturation_mean``: mean HSV saturation ``(max − min) / max`` of R, G, B (0 where max = 0), 0–1;
- ``colorfulness``: Hasler & Süsstrunk (2003): ``rg = R − G``, ``yb = (R + G)/2 − B``,
  ``sqrt(σ_rg² + σ_yb²) + 0.3 sqrt(μ_rg² + μ_yb²)`` (0–255 scale);
- ``sharpness``: variance of the 4-neighbour Laplacian of luma;
- ``noise_sigma``: Immerkær (1996) fast noise estimate: ``sqrt(π/2) / (6 (W−2)(H−2)) Σ |Y * N|`` with
  ``N = [[1,−2,1],[−2,4,−2],[1,−2,1]]`` (the difference of two Laplacians: blind to flat and linear areas);
- ``hf_energy``: share of the spectral energy (``|FFT|²`` of the mean-removed, Hann-windowed luma) at radial
  frequencies above half-Nyquist (> 0.25 cycles/pixel), 0–1;
- ``blockiness``: mean absolute luma step across the 8×8 block boundaries of the image grid divided by the
  mean step between neighbours inside blocks (both directions): ≈ 1 for an image never JPEG-compressed,
  above 1 for one that was (blocking artefacts survive a re-encode as PNG);
- ``dims_multiple_of``: the largest of 64, 32, 16, 8, 1 that divides both sides (latent VAEs give 8 or 64);
- ``qtable_id``: 12 hex digits of the SHA-1 of the JPEG quantisation tables (ids and entries): which encoder
  wrote the file (libjpeg at a quality, a camera, an editor); null for other formats;
- ``exif_software``: the EXIF ``Software`` tag (IFD0, 0x0131) of a JPEG (APP1) or PNG (eXIf), else null;
- ``pixel_error``: why the image could not be decoded (the same text as ``hash_error``); its facts are null.

Cost. The spatial facts (sharpness, noise, hf_energy, blockiness) are computed on the centred
``CROP``×``CROP`` luma crop, its corner on the 8×8 grid (the whole image when smaller), and the colour
facts on a regular grid of about ``COLOUR_SAMPLES`` pixels (every s-th pixel of every s-th row,
``s = floor(sqrt(h w / COLOUR_SAMPLES))``, at least 1); luma statistics use every pixel. That keeps
the fused pass within 1.3× of hashing alone (docs/benchmarks.md "Pixel facts").
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.fft
from PIL import Image

from cfx.bytefacts import ShardCache
from cfx.defaults import PIXEL_FACT_COLUMNS
from cfx.jpegquality import Bytes, JpegError, exif_software, parse_jpeg
from cfx.manifest import ShardInfo

PIXEL_FACTS_VERSION = 1
CROP = 192  # side of the centred luma crop of the spatial facts (256: 1.30x hashing alone, 192: 1.23x)
COLOUR_SAMPLES = 1 << 14  # colour facts read about this many pixels, on a regular grid
GRIDS = (64, 32, 16, 8, 1)
BLOCK = 8  # JPEG block size

FLOAT_COLUMNS = PIXEL_FACT_COLUMNS  # the numeric facts, named once in cfx.defaults
PIXEL_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        *((name, pa.float32()) for name in FLOAT_COLUMNS),
        ("dims_multiple_of", pa.int16()),
        ("qtable_id", pa.string()),
        ("exif_software", pa.string()),
        ("pixel_error", pa.string()),
    ]
)
PIXEL_COLUMNS = tuple(PIXEL_SCHEMA.names[1:])
NUMERIC_COLUMNS = (*FLOAT_COLUMNS, "dims_multiple_of")  # what an audit can score

_IMMERKAER = np.sqrt(np.pi / 2) / 6
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def empty(error: str | None = None) -> dict[str, Any]:
    """The facts of an image that could not be decoded: all null but ``pixel_error``."""
    out: dict[str, Any] = dict.fromkeys(PIXEL_COLUMNS)
    out["pixel_error"] = error
    return out


# --- per-image computation -------------------------------------------------------------------------------
def dims_multiple_of(width: int, height: int) -> int:
    """The largest of 64, 32, 16, 8, 1 dividing both sides."""
    return next(g for g in GRIDS if width % g == 0 and height % g == 0)


def luma_stats(grey: np.ndarray) -> tuple[float, float, float]:
    """Mean, standard deviation and histogram entropy (bits) of a uint8 luma image, from its histogram."""
    hist = np.asarray(Image.fromarray(grey, "L").histogram(), np.float64)  # 4× np.bincount's speed
    p = hist / hist.sum()
    levels = np.arange(256, dtype=np.float64)
    mean = float(p @ levels)
    std = float(np.sqrt(max(float(p @ (levels - mean) ** 2), 0.0)))
    nz = p[p > 0]
    return mean, std, abs(float((nz * np.log2(nz)).sum()))  # abs: 0.0, not -0.0, for a flat image


def colour_stats(rgb: np.ndarray) -> tuple[float, float]:
    """Mean HSV saturation (0–1) and Hasler–Süsstrunk colorfulness of an (h, w, 3) uint8 RGB image."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    hi = np.maximum(np.maximum(r, g), b)
    lo = np.minimum(np.minimum(r, g), b)
    sat = np.divide(hi - lo, hi, out=np.zeros_like(hi), where=hi > 0)
    rg = r - g
    yb = 0.5 * (r + g) - b
    colourful = np.sqrt(rg.var() + yb.var()) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(sat.mean()), float(colourful)


def centred_crop(grey: np.ndarray, size: int | None = None) -> np.ndarray:
    """The centred ``size``×``size`` crop (default CROP; whole sides when smaller), its top-left corner on
    the 8×8 grid."""
    size = size or CROP
    h, w = grey.shape
    ch, cw = min(h, size), min(w, size)
    y0 = (h - ch) // 2 // BLOCK * BLOCK
    x0 = (w - cw) // 2 // BLOCK * BLOCK
    return grey[y0 : y0 + ch, x0 : x0 + cw]


def _second_differences(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[1, −2, 1] along rows (h, w−2) and along columns (h−2, w) of ``y``: the Laplacian is their sum and
    Immerkær's N the one applied to the other."""
    dxx = y[:, 2:] - 2 * y[:, 1:-1]
    dxx += y[:, :-2]
    dyy = y[2:] - 2 * y[1:-1]
    dyy += y[:-2]
    return dxx, dyy


def sharpness(y: np.ndarray, diffs: tuple[np.ndarray, np.ndarray] | None = None) -> float | None:
    """Variance of the 4-neighbour Laplacian of float luma ``y`` (None below 3×3)."""
    if min(y.shape) < 3:
        return None
    dxx, dyy = diffs or _second_differences(y)
    flat = (dxx[1:-1] + dyy[:, 1:-1]).ravel()
    mean = float(flat.mean(dtype=np.float64))
    return max(float(np.dot(flat, flat)) / flat.size - mean * mean, 0.0)


def noise_sigma(y: np.ndarray, diffs: tuple[np.ndarray, np.ndarray] | None = None) -> float | None:
    """Immerkær's noise standard deviation of float luma ``y`` (N is separable: [1,−2,1] ⊗ [1,−2,1])."""
    if min(y.shape) < 3:
        return None
    d = (diffs or _second_differences(y))[0]
    e = d[2:] - 2 * d[1:-1]
    e += d[:-2]
    return float(_IMMERKAER * np.abs(e).mean())


@lru_cache(maxsize=16)
def _spectrum_weights(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For an h×w crop: the 2-D Hann window (no zero ends: every pixel counts), and per rfft2 coefficient
    its weight in the full spectrum (rfft keeps half of a symmetric one) and that weight above half-Nyquist."""
    window = np.outer(np.hanning(h + 2)[1:-1], np.hanning(w + 2)[1:-1]).astype(np.float32)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    weight = np.where((fx == 0) | (fx == 0.5), 1.0, 2.0) * np.ones_like(fy)
    high = weight * ((fx**2 + fy**2) > 0.25**2)
    return window, weight.astype(np.float32).ravel(), high.astype(np.float32).ravel()


def hf_energy(y: np.ndarray) -> float | None:
    """Share of spectral energy above half-Nyquist of float luma ``y`` (mean removed, Hann window)."""
    h, w = y.shape
    if min(h, w) < 8:
        return None
    window, weight, high = _spectrum_weights(h, w)
    spectrum = scipy.fft.rfft2((y - y.mean()) * window)
    power = (spectrum.real**2 + spectrum.imag**2).ravel()
    total = float(np.dot(power, weight))
    return float(np.dot(power, high)) / total if total > 0 else None


def blockiness(y: np.ndarray) -> float | None:
    """Mean |step| across 8×8 block boundaries / mean |step| inside blocks, both directions (``y``'s
    corner on the grid). None when smaller than 16 px a side or when flat inside blocks."""
    h, w = y.shape
    if h < 2 * BLOCK or w < 2 * BLOCK:
        return None
    sx = np.abs(np.diff(y, axis=1)).sum(axis=0, dtype=np.float64)  # sx[j]: steps between columns j, j+1
    sy = np.abs(np.diff(y, axis=0)).sum(axis=1, dtype=np.float64)
    bx = (np.arange(w - 1) % BLOCK) == BLOCK - 1
    by = (np.arange(h - 1) % BLOCK) == BLOCK - 1
    across = sx[bx].sum() + sy[by].sum()
    n_across = h * bx.sum() + w * by.sum()
    inside = sx[~bx].sum() + sy[~by].sum()
    n_inside = h * (~bx).sum() + w * (~by).sum()
    if inside <= 0:
        return None
    return float((across / n_across) / (inside / n_inside))


def spatial_facts(grey: np.ndarray) -> dict[str, float | None]:
    """sharpness, noise_sigma, hf_energy and blockiness of the centred crop of a uint8 luma image."""
    y = centred_crop(grey).astype(np.float32)
    diffs = _second_differences(y) if min(y.shape) >= 3 else None
    return {
        "sharpness": sharpness(y, diffs),
        "noise_sigma": noise_sigma(y, diffs),
        "hf_energy": hf_energy(y),
        "blockiness": blockiness(y),
    }


def colour_step(h: int, w: int) -> int:
    """The colour facts read every ``colour_step``-th pixel of every such row (about COLOUR_SAMPLES)."""
    return max(1, int(np.sqrt(h * w / COLOUR_SAMPLES)))


def pixel_facts(colour: np.ndarray | None, grey: np.ndarray, data: Bytes | None = None) -> dict[str, Any]:
    """The pixel facts of one decoded image.

    ``grey``: its (h, w) uint8 Rec. 601 luma; ``colour``: its colour grid, ``rgb[::s, ::s]`` of its uint8
    RGB(A) pixels with ``s = colour_step(h, w)`` (alpha is ignored), or None for a grey image (saturation
    and colorfulness 0); ``data``: the encoded bytes, for ``qtable_id`` and ``exif_software``."""
    h, w = grey.shape
    mean, std, ent = luma_stats(grey)
    if colour is None or colour.ndim == 2:
        sat, colourful = 0.0, 0.0
    else:
        sat, colourful = colour_stats(colour[..., :3])
    out: dict[str, Any] = {
        "luma_mean": mean,
        "luma_std": std,
        "saturation_mean": sat,
        "colorfulness": colourful,
        "entropy": ent,
        **spatial_facts(grey),
        "dims_multiple_of": dims_multiple_of(w, h),
        "pixel_error": None,
    }
    out.update(encoder_facts(data))
    return out


# --- facts of the encoded bytes --------------------------------------------------------------------------
def encoder_facts(data: Bytes | None) -> dict[str, str | None]:
    """``qtable_id`` and ``exif_software`` from the file's headers (null when absent or unreadable)."""
    out: dict[str, str | None] = {"qtable_id": None, "exif_software": None}
    if not data:
        return out
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    if view[:2] == b"\xff\xd8":
        try:
            head = parse_jpeg(view)
        except (JpegError, struct.error):
            return out
        out["qtable_id"] = qtable_id(head.table_keys)
        out["exif_software"] = head.software
    elif view[:8] == _PNG_SIGNATURE:
        exif = _png_exif(view)
        out["exif_software"] = exif_software(exif) if exif is not None else None
    return out


def qtable_id(table_keys: dict[int, bytes]) -> str | None:
    """12 hex digits identifying a set of quantisation tables ({table id: cfx.jpegquality.table_key})."""
    if not table_keys:
        return None
    digest = hashlib.sha1()
    for i in sorted(table_keys):
        digest.update(bytes([i, len(table_keys[i]) // 64]))
        digest.update(table_keys[i])
    return digest.hexdigest()[:12]


def _png_exif(data: Bytes) -> Bytes | None:
    """The body of a PNG's eXIf chunk (chunk headers only are read), or None."""
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = bytes(data[pos + 4 : pos + 8])
        if kind == b"eXIf":
            return data[pos + 8 : pos + 8 + length]
        if kind in (b"IDAT", b"IEND"):  # eXIf must come before the image data
            return None
        pos += 12 + length
    return None


# --- tables ----------------------------------------------------------------------------------------------
def table_of(rows: Sequence[int] | np.ndarray, found: Sequence[dict[str, Any]]) -> pa.Table:
    """PIXEL_SCHEMA table of ``pixel_facts`` / ``empty`` results and their row numbers."""
    cols: dict[str, Any] = {"row": pa.array(np.asarray(rows, np.int64))}
    for name, typ in zip(PIXEL_COLUMNS, PIXEL_SCHEMA.types[1:], strict=True):
        cols[name] = pa.array([f[name] for f in found], typ)
    return pa.table(cols, schema=PIXEL_SCHEMA)


# --- per-shard cache: its own file beside the byte facts (<cache>/pixels), since only a decoding pass fills
# it, while a plain `cfx inspect` fills the byte facts without decoding
CACHE = ShardCache("pixels", PIXEL_FACTS_VERSION, PIXEL_SCHEMA)


def load_cached(root: str, shard: str, info: ShardInfo | None) -> pa.Table | None:
    """The cached pixel facts of a shard (the rows decoded so far), or None."""
    return CACHE.load(root, shard, info)


def store_cached(root: str, shard: str, info: ShardInfo | None, table: pa.Table) -> pa.Table:
    """Merge ``table`` into the shard's cached pixel facts and save them; returns the merged table."""
    return CACHE.store(root, shard, info, table)


def join(df: pl.DataFrame, tables: dict[str, pa.Table]) -> pl.DataFrame:
    """The manifest rows (order kept) with the PIXEL_COLUMNS of ``tables`` ({shard: PIXEL_SCHEMA table})."""
    frames = []
    for shard, table in tables.items():
        f = pl.from_arrow(table.cast(PIXEL_SCHEMA))
        assert isinstance(f, pl.DataFrame)
        frames.append(f.with_columns(pl.lit(shard, pl.String).alias("shard")))
    if not frames:
        empty = pl.from_arrow(PIXEL_SCHEMA.empty_table())
        assert isinstance(empty, pl.DataFrame)
        frames.append(empty.with_columns(pl.lit(None, pl.String).alias("shard")))
    base = df.drop([c for c in PIXEL_COLUMNS if c in df.columns])
    return base.join(pl.concat(frames), on=["shard", "row"], how="left", maintain_order="left")
