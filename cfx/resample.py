"""Pillow's LANCZOS downscale of a grey image, reproduced bit for bit with two matrix products.

pHash is defined on ``image.convert("L").resize((32, 32), LANCZOS)``. Pillow computes that resize in
fixed point (Resample.c): per output pixel a window of filter weights, normalised, rounded to integers
with 22 fractional bits; a horizontal and a vertical pass (sum, add ½, shift, clip to 0..255), the second
on the rounded result of the first. Pillow loops over the taps one pixel at a time; here each pass is one float64
matrix product (in bands, skipping the zeros) with the same integer weights (every partial sum stays
below 2**53, so float64 holds it exactly) followed by the same rounding and clipping, so the result equals Pillow's on every pixel
(tests/test_hashing.py checks this against Pillow) at about half its cost.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image
from threadpoolctl import ThreadpoolController

_PRECISION_BITS = 32 - 8 - 2  # Resample.c: PRECISION_BITS for 8-bit images
_HALF = float(1 << (_PRECISION_BITS - 1))
_ONE = float(1 << _PRECISION_BITS)
_SUPPORT = 3.0  # LANCZOS filter support
_BAND = 8  # output pixels per matrix product (see _bands)
_BLOCK_VALUES = 1 << 20  # pixels converted to float64 at a time (8 MB)
_MAX_SIDE = 65536  # longer sides are resized by Pillow itself


def _sinc(x: np.ndarray, sin: Any) -> np.ndarray:
    y = x * math.pi
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0.0, 1.0, sin(y) / y)


@lru_cache(maxsize=1)
def _sin_is_libm() -> bool:
    """numpy's vectorised sin gives the C library's results here (Pillow calls the C library's sin)."""
    x = np.random.default_rng(1).uniform(-10.0, 10.0, 20_000)
    return bool(np.array_equal(np.sin(x), np.array([math.sin(v) for v in x])))


@lru_cache(maxsize=256)
def lanczos_taps(n_in: int, n_out: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's LANCZOS window of each output pixel: (first input (n_out,), integer weights (n_out, ksize)).

    Mirrors ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` of Pillow's Resample.c operation for
    operation (same double arithmetic in the same order: the window sums are sequential, like its loop), so
    the rounded integers are the same; weights past a window's end are 0.
    """
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = _SUPPORT * filterscale
    ksize = math.ceil(support) * 2 + 1
    inv = 1.0 / filterscale
    center = (np.arange(n_out) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    count = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), n_in) - xmin
    tap = np.arange(ksize)
    x = ((tap[None, :] + xmin[:, None]).astype(np.float64) - center[:, None] + 0.5) * inv
    sin = np.sin if _sin_is_libm() else np.vectorize(math.sin, otypes=[np.float64])
    w = np.where((x >= -3.0) & (x < 3.0), _sinc(x, sin) * _sinc(x / 3, sin), 0.0)
    w[tap[None, :] >= count[:, None]] = 0.0
    total = np.cumsum(w, axis=1)[:, -1:]  # sequential, as Pillow's ``ww += w``
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(total != 0.0, w / total, w)
    return xmin, np.where(w < 0, np.trunc(-0.5 + w * _ONE), np.trunc(0.5 + w * _ONE))


def lanczos_weights(n_in: int, n_out: int = 32) -> np.ndarray:
    """The same weights as a dense (n_out, n_in) matrix (for measurements; resizing uses bands)."""
    xmin, taps = lanczos_taps(n_in, n_out)
    out = np.zeros((n_out, n_in + taps.shape[1]))
    for j, first in enumerate(xmin):
        out[j, first : first + taps.shape[1]] = taps[j]
    return out[:, :n_in]


def _round_clip(acc: np.ndarray) -> np.ndarray:
    """Resample.c's ``clip8``: (acc + ½) >> PRECISION_BITS, clipped to 0..255 (floor = arithmetic shift)."""
    return np.clip(np.floor((acc + _HALF) / _ONE), 0.0, 255.0)


def _vertical_first(h: int, w: int, height: int, width: int) -> bool:
    """Pillow 13 runs the vertical pass first when the height shrinks more than twice the width does.

    Found by comparing both orders with Pillow on 18,842 shapes; ``exact()`` re-checks it against the
    installed Pillow, since another version may order the passes differently.
    """
    return h > height and (h - height) > 2 * (w - width)


@lru_cache(maxsize=256)
def _bands(n_in: int, n_out: int) -> list[tuple[int, int, np.ndarray]]:
    """The weights cut into bands of outputs: (first input, last input + 1, weights of those inputs).

    A downscale's output pixel reads only ~6 × scale inputs, so one dense product would spend most of
    its multiplications on zeros; bands of 8 outputs spend about 14 per input pixel instead of 32.
    """
    xmin, taps = lanczos_taps(n_in, n_out)
    ksize = taps.shape[1]
    bands = []
    for first in range(0, n_out, _BAND):
        rows = range(first, min(first + _BAND, n_out))
        lo = int(xmin[first])
        hi = min(int(xmin[rows[-1]]) + ksize, n_in)
        block = np.zeros((hi - lo, len(rows)))
        for col, j in enumerate(rows):
            start = int(xmin[j]) - lo
            n = min(ksize, hi - lo - start)
            block[start : start + n, col] = taps[j, :n]
        bands.append((lo, hi, block))
    return bands


def _pass(pixels: np.ndarray, n_out: int) -> np.ndarray:
    """Resample the rows of ``pixels`` to ``n_out`` columns, rounded and clipped as Pillow does.

    Rows are converted to float64 a block at a time (~8 MB), so a large image costs no 8-byte copy of itself.
    """
    rows, n_in = pixels.shape
    bands = _bands(n_in, n_out)
    out = np.empty((rows, n_out))
    step = max(1, _BLOCK_VALUES // n_in)
    for r0 in range(0, rows, step):
        block = pixels[r0 : r0 + step].astype(np.float64)
        col = 0
        for lo, hi, weights in bands:
            out[r0 : r0 + step, col : col + weights.shape[1]] = block[:, lo:hi] @ weights
            col += weights.shape[1]
    return _round_clip(out)


def _resize(grey: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = grey.shape
    pixels: np.ndarray = grey
    horizontal = w != width  # Pillow skips a pass whose size does not change
    vertical = h != height
    if vertical and _vertical_first(h, w, height, width):
        pixels = _pass(pixels.T, height).T
        vertical = False
    if horizontal:
        pixels = _pass(pixels, width)
    if vertical:
        pixels = _pass(pixels.T, height).T
    return pixels.astype(np.uint8)


# shapes on both sides of the pass-order rule, tiny and upscaled ones, and the old ">100:1" rule
_PROBES = ((300, 100), (100, 300), (169, 100), (168, 100), (2000, 33), (33, 2000), (20, 20), (5, 700))


@lru_cache(maxsize=1)
def exact() -> bool:
    """Whether ``_resize`` reproduces the installed Pillow (checked once per process on probe images)."""
    rng = np.random.default_rng(0)
    for h, w in _PROBES:
        grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
        for width, height in ((32, 32), (9, 8)):
            want = np.asarray(Image.fromarray(grey, "L").resize((width, height), Image.Resampling.LANCZOS))
            if not np.array_equal(_resize(grey, width, height), want):
                return False
    return True


@lru_cache(maxsize=1)
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def one_blas_thread() -> Any:
    """A context in which numpy's BLAS runs on the calling thread only.

    These products are small: BLAS threads only add waiting (measured 2-30× slower on a busy machine),
    and callers hashing many images run one worker per core anyway.
    """
    return _blas().limit(limits=1, user_api="blas")


def lanczos_resize(grey: np.ndarray, width: int = 32, height: int = 32) -> np.ndarray:
    """``Image.fromarray(grey).resize((width, height), LANCZOS)`` as a (height, width) uint8 array.

    Falls back to Pillow itself if the installed Pillow computes differently (``exact()``), and for sides
    above _MAX_SIDE pixels, where the weight windows (~6 × side / 32 values each) stop being small.
    """
    if exact() and max(grey.shape) <= _MAX_SIDE:
        with one_blas_thread():
            return _resize(grey, width, height)
    img = Image.fromarray(grey, "L")
    return np.asarray(img.resize((width, height), Image.Resampling.LANCZOS))
