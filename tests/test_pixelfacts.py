"""Pixel facts on real encoded images with known properties, decoded by the hashing pass's own decoder
(cfx.hashing.hash_images with_pixels): noise of known sigma, blur, JPEG blocking, dimension grids,
quantisation tables and EXIF software; undecodable images and bombs; the per-shard cache filled by the
fused dedupe/inspect pass (a later `inspect --pixels` decodes nothing); the CLI."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageFilter

from cfx.errors import PartialError
from cfx.hashing import hash_images, hash_manifest
from cfx.index import cache_dir
from cfx.inspect import cached_pixels, inspect_manifest
from cfx.load import load_manifest
from cfx.pixelfacts import FLOAT_COLUMNS, PIXEL_COLUMNS, dims_multiple_of
from tests.conftest import Run
from tests.shards import rows, write_shard

NOISE_TOLERANCE = 0.10  # relative error of noise_sigma allowed on flat and smooth-textured images


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(pixels: np.ndarray, **options: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", **options)
    return buf.getvalue()


def _facts(data: bytes, **options: Any) -> dict[str, Any]:
    h = hash_images([data], with_pixels=True, **options)
    assert h.pixels is not None
    return h.pixels[0]


def _rgb(grey: np.ndarray) -> np.ndarray:
    """A grey float image as uint8 RGB with equal channels (so luma is the image itself)."""
    g = np.clip(np.round(grey), 0, 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def _smooth_texture(size: int) -> np.ndarray:
    """Low-frequency waves (periods of 40 px and more): texture that a noise estimator must not count."""
    y, x = np.mgrid[:size, :size].astype(np.float64)
    return (
        128
        + 40 * np.sin(2 * np.pi * x / 64) * np.cos(2 * np.pi * y / 48)
        + 25 * np.sin(2 * np.pi * (x + y) / 40)
    )


def _fine_texture(size: int, seed: int = 0, fine: float = 6) -> np.ndarray:
    """Detail at every scale: random noise upsampled 3.7× (not a divisor of 8: an upsampling by 2 or 4 would
    draw a grid of its own), plus fine noise of std ``fine``."""
    rng = np.random.default_rng(seed)
    n = round(size / 3.7)
    small = Image.fromarray(rng.integers(0, 256, (n, n, 3), dtype=np.uint8))
    big = np.asarray(small.resize((size, size), Image.BICUBIC)).astype(np.float64)
    return np.clip(big + rng.normal(0, fine, big.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("sigma", [2.0, 5.0, 10.0])
@pytest.mark.parametrize("base", ["flat", "textured"])
def test_gaussian_noise_of_known_sigma_is_recovered(sigma: float, base: str) -> None:
    size = 200
    clean = np.full((size, size), 128.0) if base == "flat" else _smooth_texture(size)
    noise = np.random.default_rng(int(sigma)).normal(0, sigma, (size, size))
    f = _facts(_png(_rgb(clean + noise)))
    # rounding to uint8 adds uniform noise of variance 1/12
    expected = np.sqrt(sigma**2 + 1 / 12)
    assert f["noise_sigma"] == pytest.approx(expected, rel=NOISE_TOLERANCE), (base, sigma)


def test_noise_free_images_read_almost_no_noise() -> None:
    assert _facts(_png(_rgb(np.full((64, 64), 90.0))))["noise_sigma"] == 0
    assert _facts(_png(_rgb(_smooth_texture(200))))["noise_sigma"] < 0.5


def _blurred(img: Image.Image, radii: tuple[float, ...], key: str) -> list[float]:
    found = [_facts(_png(np.asarray(img.filter(ImageFilter.GaussianBlur(r)) if r else img))) for r in radii]
    return [f[key] for f in found]


def _decreasing(values: list[float]) -> bool:
    return all(a > b for a, b in zip(values, values[1:], strict=False))


def test_blur_lowers_sharpness_and_hf_energy_monotonically() -> None:
    img = Image.fromarray(_fine_texture(256, fine=20))
    for key in ("sharpness", "noise_sigma"):
        values = _blurred(img, (0, 0.7, 1.5, 3, 6), key)
        assert _decreasing(values), (key, values)
    # hf_energy is a share: once blur has removed the detail above half-Nyquist, what is left there is the
    # white 8-bit rounding noise (1/12 grey level²), whose share grows as blur lowers the total. Radii up to
    # 1.5 px keep the detail above that floor.
    values = _blurred(img, (0, 0.5, 1, 1.5), "hf_energy")
    assert _decreasing(values) and values[-1] < values[0] / 10, values


def test_jpeg_compressed_then_png_is_blockier_than_never_compressed() -> None:
    for seed in range(3):
        pixels = _fine_texture(256, seed)
        never = _facts(_png(pixels))["blockiness"]
        assert never == pytest.approx(1.0, abs=0.06)  # no grid: steps across block edges as inside
        found = []
        for quality in (50, 75):  # measured: +0.16 at q=50, +0.08 at q=75; at q=90 +0.03 (docs)
            decoded = np.asarray(Image.open(io.BytesIO(_jpeg(pixels, quality=quality))))
            found.append(_facts(_png(decoded))["blockiness"])
        assert found[0] > found[1] > never + 0.04, (seed, never, found)


def test_blockiness_reads_the_grid_of_the_whole_image() -> None:
    """The crop of a larger image keeps its corner on the image's 8×8 grid: a JPEG of 400×300 is still
    found blocky (a crop off the grid would mix boundary and inside steps)."""
    pixels = _fine_texture(400)[:300]
    decoded = np.asarray(Image.open(io.BytesIO(_jpeg(pixels, quality=60))))
    assert _facts(_png(decoded))["blockiness"] > _facts(_png(pixels))["blockiness"] + 0.04


@pytest.mark.parametrize(
    ("size", "grid"),
    [((512, 512), 64), ((640, 480), 32), ((48, 80), 16), ((24, 40), 8), ((30, 20), 1), ((513, 512), 1)],
)
def test_dims_grid_exact(size: tuple[int, int], grid: int) -> None:
    w, h = size
    assert dims_multiple_of(w, h) == grid
    if w * h <= 48 * 80:  # through the decoder too (small images only: the test stays fast)
        assert _facts(_png(np.zeros((h, w, 3), np.uint8)))["dims_multiple_of"] == grid


def test_luma_colour_and_entropy_of_known_images() -> None:
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    f = _facts(_png(red))
    assert f["luma_mean"] == 76  # Rec. 601: 0.299 × 255 = 76.2, as Pillow's convert("L") rounds it
    assert (f["luma_std"], f["entropy"], f["saturation_mean"]) == (0, 0, 1)
    assert f["colorfulness"] == pytest.approx(
        0.3 * np.hypot(255, 127.5), rel=1e-5
    )  # σ = 0: only the mean term
    halves = np.zeros((32, 32), np.uint8)
    halves[:, 16:] = 200
    buf = io.BytesIO()
    Image.fromarray(halves, "L").save(buf, "PNG")  # a grey PNG: no colour at all
    g = _facts(buf.getvalue())
    assert (g["luma_mean"], g["luma_std"], g["entropy"]) == (100, 100, 1)
    assert (g["saturation_mean"], g["colorfulness"]) == (0, 0)


def test_qtable_id_names_the_encoder_tables(tmp_path: Path) -> None:
    a, b = _fine_texture(64, 1), _fine_texture(64, 2)
    pillow85 = _facts(_jpeg(a, quality=85))["qtable_id"]
    assert pillow85 is not None and len(pillow85) == 12
    assert _facts(_jpeg(b, quality=85))["qtable_id"] == pillow85  # same encoder, same quality, other picture
    assert _facts(_jpeg(a, quality=70))["qtable_id"] != pillow85
    camera = [[1, 1, 1, 2, 2, 3, 4, 5] * 8, [2, 2, 3, 5, 9, 9, 9, 9] * 8]  # fine tables as cameras write
    assert _facts(_jpeg(a, qtables=camera))["qtable_id"] not in (None, pillow85)
    assert _facts(_png(a))["qtable_id"] is None
    if shutil.which("cjpeg"):  # libjpeg's own tool writes the IJG tables too: the same id at the same quality
        ppm = tmp_path / "a.ppm"
        Image.fromarray(a).save(ppm)
        out = subprocess.run(["cjpeg", "-quality", "85", str(ppm)], capture_output=True, check=True).stdout
        assert _facts(out)["qtable_id"] == pillow85
        other = subprocess.run(
            ["cjpeg", "-quality", "85,60", str(ppm)], capture_output=True, check=True
        ).stdout
        assert _facts(other)["qtable_id"] != pillow85  # another chrominance table


def test_exif_software_from_jpeg_and_png() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0131] = "Adobe Photoshop 24.1 (Windows)"
    pixels = _fine_texture(32)
    assert _facts(_jpeg(pixels, exif=exif.tobytes()))["exif_software"] == "Adobe Photoshop 24.1 (Windows)"
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", exif=exif.tobytes())
    assert _facts(buf.getvalue())["exif_software"] == "Adobe Photoshop 24.1 (Windows)"
    assert _facts(_jpeg(pixels))["exif_software"] is None


def test_undecodable_and_bomb_rows_are_recorded() -> None:
    good = _png(_fine_texture(32))
    cut = _jpeg(_fine_texture(64))[:300]
    images = [None, b"", b"not an image", cut, good]
    h = hash_images(images, with_pixels=True)
    assert h.pixels is not None
    for f, error in zip(h.pixels[:4], h.error[:4], strict=True):
        assert f["pixel_error"] == error and error  # the same text as hash_error
        assert "0x" not in error
        assert all(f[c] is None for c in PIXEL_COLUMNS if c != "pixel_error")
    assert h.pixels[4]["pixel_error"] is None and h.pixels[4]["luma_mean"] is not None
    bomb = _facts(good, max_pixels=1000)
    assert "DecompressionBomb" in bomb["pixel_error"] and bomb["sharpness"] is None
    again = hash_images(images, with_pixels=True)
    assert again.pixels == h.pixels  # deterministic


# --- the fused pass and its cache ------------------------------------------------------------------------
def _dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    write_shard(root / "data/HFCF_small_0.parquet", rows(5))
    reals = rows(4, label=0, start=5)
    reals[0]["image_data"] = _jpeg(_fine_texture(32), quality=80)
    reals[1]["image_data"] = b"broken"
    write_shard(root / "data/HFCF_small_1.parquet", reals)
    return root


def _scramble(root: Path) -> None:
    """Garbage of the same size and mtime: the caches still match, any read of image bytes fails."""
    for p in (root / "data").glob("*.parquet"):
        st = p.stat()
        p.write_bytes(b"\0" * st.st_size)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_dedupe_hashing_fills_the_cache_inspect_pixels_reads(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    m = load_manifest(str(root))
    fresh = inspect_manifest(m, workers=1, with_pixels=True, use_cache=False)
    assert fresh.decoded == 9 and not (cache_dir() / "pixels").exists()
    df = fresh.manifest.df
    assert df.get_column("pixel_error").null_count() == 8  # one row does not decode
    assert df.get_column("qtable_id").drop_nulls().len() == 1
    assert "phash" not in df.columns  # hashes only with --hashes
    assert cached_pixels(m) is None
    hashed = hash_manifest(m, workers=1)  # what cfx dedupe runs
    assert hashed.decoded == 9 and "luma_mean" not in hashed.manifest.df.columns
    _scramble(root)
    from_cache = cached_pixels(m)
    assert from_cache is not None
    assert from_cache.df.select(PIXEL_COLUMNS).equals(df.select(PIXEL_COLUMNS))
    after = inspect_manifest(m, workers=1, with_pixels=True)
    assert (after.decoded, after.read_rows, after.cached_rows) == (0, 0, 9)
    assert after.manifest.df.select(PIXEL_COLUMNS).equals(df.select(PIXEL_COLUMNS))


def test_inspect_pixels_decodes_only_rows_without_cached_pixels(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    m = load_manifest(str(root))
    part = m.with_df(m.df.filter(pl.col("row") < 2))
    assert inspect_manifest(part, workers=1, with_pixels=True).decoded == 4
    assert inspect_manifest(m, workers=1, with_pixels=True).decoded == 5
    again = inspect_manifest(m, workers=1, with_pixels=True)
    assert again.decoded == 0 and again.manifest.df.get_column("luma_mean").null_count() == 1
    shutil.rmtree(cache_dir() / "pixels")  # hashes cached, pixel facts not: those rows are decoded again
    redone = hash_manifest(m, workers=1, with_pixels=True)
    assert redone.decoded == 9 and redone.manifest.df.height == 9  # each row once, hashes and pixels
    assert redone.manifest.df.get_column("phash").null_count() == 1
    assert redone.manifest.df.select(PIXEL_COLUMNS).equals(again.manifest.df.select(PIXEL_COLUMNS))


def test_unreadable_shard_rows_get_a_pixel_error(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    m = load_manifest(str(root))
    _scramble(root)
    with pytest.raises(PartialError, match="cannot hash"):
        inspect_manifest(m, workers=1, with_pixels=True)
    df = inspect_manifest(m, workers=1, with_pixels=True, skip_bad=True).manifest.df
    assert df.height == 9 and df.get_column("pixel_error").str.starts_with("unreadable shard").all()
    assert df.get_column("luma_mean").null_count() == 9


def test_cli_inspect_pixels(tmp_path: Path, cfx: Callable[..., Run]) -> None:
    root = _dataset(tmp_path)
    first = cfx("inspect", str(root), "--pixels", "--json", "-o", str(tmp_path / "p.parquet"))
    assert first.returncode == 0, first.stderr
    s = json.loads(first.out)["pixels"]
    assert (s["decoded_now"], s["pixel_errors"]) == (9, 1)
    assert s["dims_multiple_of"] == {"32": 8, "(none)": 1}
    assert set(s["median"]["real"]) == set(FLOAT_COLUMNS)
    df = pl.read_parquet(tmp_path / "p.parquet")
    assert set(PIXEL_COLUMNS) <= set(df.columns)
    second = cfx("inspect", str(root), "--pixels", "-o", str(tmp_path / "again.parquet"))
    assert second.returncode == 0 and "(0 decoded now, 1 undecodable)" in second.out, second.stderr
    assert pl.read_parquet(tmp_path / "again.parquet").select(PIXEL_COLUMNS).equals(df.select(PIXEL_COLUMNS))
