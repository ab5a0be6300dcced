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


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


@lru_cache(maxsize=512)
def lanczos_weights(n_in: int, n_out: int = 32) -> np.ndarray:
    """(n_out, n_in) integer weights (as float64) of Pillow's LANCZOS resample from n_in to n_out.

    Mirrors ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` of Pillow's Resample.c, operation for
    operation (same double arithmetic, same order), so the rounded integers are the same.
    """
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = _SUPPORT * filterscale
    inv = 1.0 / filterscale
    out = np.zeros((n_out, n_in), np.float64)
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in) - xmin
        k = [_lanczos((x + xmin - center + 0.5) * inv) for x in range(xmax)]
        ww = 0.0
        for w in k:
            ww += w
        for x, w in enumerate(k):
            if ww != 0.0:
                w /= ww
            out[xx, xmin + x] = int(-0.5 + w * _ONE) if w < 0 else int(0.5 + w * _ONE)
    return out


def _round_clip(acc: np.ndarray) -> np.ndarray:
    """Resample.c's ``clip8``: (acc + ½) >> PRECISION_BITS, clipped to 0..255 (floor = arithmetic shift)."""
    return np.clip(np.floor((acc + _HALF) / _ONE), 0.0, 255.0)


def _vertical_first(h: int, w: int, height: int, width: int) -> bool:
    """Pillow 13 runs the vertical pass first when the height shrinks more than twice the width does.

    Found by comparing both orders with Pillow on 18,842 shapes; ``exact()`` re-checks it against the
    installed Pillow, since another version may order the passes differently.
    """
    return h > height and (h - height) > 2 * (w - width)


@lru_cache(maxsize=512)
def _bands(n_in: int, n_out: int) -> list[tuple[int, int, np.ndarray]]:
    """The weights cut into bands of outputs: (first input, last input + 1, weights of those inputs).

    A downscale's output pixel reads only ~6 × scale inputs, so one dense product would spend most of
    its multiplications on zeros; bands of 8 outputs spend about 14 per input pixel instead of 32.
    """
    weights = lanczos_weights(n_in, n_out)
    bands = []
    for first in range(0, n_out, _BAND):
        block = weights[first : first + _BAND]
        used = np.flatnonzero(block.any(axis=0))
        lo, hi = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 1)
        bands.append((lo, hi, np.ascontiguousarray(block[:, lo:hi].T)))
    return bands


def _pass(pixels: np.ndarray, n_out: int) -> np.ndarray:
    """Resample the rows of ``pixels`` (float64) to ``n_out`` columns, rounded and clipped as Pillow does."""
    parts = [pixels[:, lo:hi] @ block for lo, hi, block in _bands(pixels.shape[1], n_out)]
    return _round_clip(np.hstack(parts) if len(parts) > 1 else parts[0])


def _resize(grey: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = grey.shape
    pixels = grey.astype(np.float64)
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

    Falls back to Pillow itself if the installed Pillow computes differently (``exact()``).
    """
    if exact():
        with one_blas_thread():
            return _resize(grey, width, height)
    img = Image.fromarray(grey, "L")
    return np.asarray(img.resize((width, height), Image.Resampling.LANCZOS))
