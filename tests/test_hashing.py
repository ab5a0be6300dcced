"""Hashing: imagehash-identical pHash/dHash, errors and bombs as data, per-shard cache, process pool."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import imagehash
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cfx import resample
from cfx.errors import PartialError
from cfx.hashing import (
    HASH_COLUMNS,
    _describe,
    _grey,
    _png_header,
    cache_path,
    hash_images,
    hash_manifest,
    hash_shard_batches,
    load_cached,
)
from cfx.load import load_manifest
from cfx.resample import lanczos_resize
from cfx.stream import iter_shard_batches
from tests.shards import rows, write_shard


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _texture(seed: int, w: int, h: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    base = sum(
        rng.uniform(20, 60)
        * np.sin(2 * np.pi * (rng.uniform(-4, 4) * x + rng.uniform(-4, 4) * y) + rng.uniform(0, 6))
        for _ in range(6)
    )
    chans = [np.clip(128 + base * rng.uniform(0.5, 1.5) + rng.normal(0, 6, (h, w)), 0, 255) for _ in range(3)]
    img = Image.fromarray(np.stack(chans, axis=2).astype(np.uint8), "RGB")
    return img.convert(mode) if mode != "RGB" else img


def _variety() -> list[bytes]:
    out = []
    for seed, (w, h) in enumerate([(512, 512), (333, 500), (1024, 768), (64, 64), (31, 17), (8, 8)]):
        img = _texture(seed, w, h)
        out.append(_encode(img, "PNG"))
        out.append(_encode(img, "JPEG", quality=85))
    out.append(_encode(_texture(20, 200, 150, "L"), "PNG"))
    out.append(_encode(_texture(21, 200, 150, "RGBA"), "PNG"))
    out.append(_encode(_texture(22, 200, 150, "P"), "PNG"))
    out.append(_encode(_texture(23, 300, 200, "L"), "JPEG"))
    out.append(_encode(_texture(24, 300, 200, "CMYK"), "JPEG"))
    out.append(_encode(_texture(25, 120, 90), "WEBP", quality=80))
    out.append(_encode(_texture(26, 120, 90), "GIF"))
    return out


def test_phash_and_dhash_match_imagehash_exactly() -> None:
    images = _variety()
    h = hash_images(images, with_dhash=True)
    assert h.ok.all()
    plain = hash_images(images)  # dHash is opt-in: one more resize per image
    assert np.array_equal(plain.phash, h.phash) and not plain.dhash.any()
    for i, data in enumerate(images):
        img = Image.open(io.BytesIO(data))
        assert int(h.phash[i]) == int(str(imagehash.phash(img)), 16), i
        assert int(h.dhash[i]) == int(str(imagehash.dhash(Image.open(io.BytesIO(data)))), 16), i
        assert h.sha256[i] == __import__("hashlib").sha256(data).hexdigest()
        assert h.num_bytes[i] == len(data)
        assert (h.width[i], h.height[i]) == img.size
    assert h.decoded == len(images)


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header announcing a huge image (the data is tiny and wrong: never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def test_bad_images_are_data_not_crashes() -> None:
    good = _encode(_texture(1, 64, 64), "PNG")
    truncated = good[: len(good) // 2]
    images = [
        good,
        b"",
        b"not an image at all",
        truncated,
        None,
        _bomb_png(200_000, 200_000),
        _bomb_png(12_000, 10_000),
    ]
    h = hash_images(images)
    assert h.ok.tolist() == [True, False, False, False, False, False, False]
    errors = h.error
    assert errors[0] is None
    assert "UnidentifiedImageError" in errors[2]
    assert errors[3] and ("truncated" in errors[3].lower() or "OSError" in errors[3])
    assert errors[4] == "no image data"
    assert "DecompressionBomb" in errors[5]
    assert "DecompressionBomb" in errors[6]  # 120 Mpx: above the limit, below Pillow's own 2x error
    # the exact hash of undecodable bytes still exists (identical broken files are still duplicates)
    assert h.sha256[3] is not None and h.sha256[4] is None
    assert h.phash[1:].tolist() == [0] * 6
    # a lower limit refuses an ordinary image too
    assert "DecompressionBomb" in hash_images([good], max_pixels=1000).error[0]


def test_near_uniform_flag() -> None:
    flat = Image.new("RGB", (256, 256), (12, 12, 14))
    faint = Image.fromarray(
        (np.random.default_rng(0).normal(40, 0.6, (256, 256))).clip(0, 255).astype(np.uint8)
    )
    images = [_encode(flat, "PNG"), _encode(faint, "PNG"), _encode(_texture(3, 256, 256), "PNG")]
    h = hash_images(images)
    assert h.near_uniform.tolist() == [True, True, False]


def _dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    recs0 = rows(5)
    recs1 = rows(4, label=0, start=5)
    recs1[1]["image_data"] = b"garbage"
    recs1[2]["image_data"] = recs0[0]["image_data"]
    write_shard(root / "data" / "HFCF_small_0.parquet", recs0)
    write_shard(root / "data" / "HFCF_small_1.parquet", recs1)
    return root


def test_hash_manifest_cache_rerun_decodes_nothing(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    m = load_manifest(str(root))
    first = hash_manifest(m, workers=1)
    assert first.decoded == 9 and first.cached_rows == 0
    df = first.manifest.df
    assert df.select("shard", "row").equals(m.df.select("shard", "row"))
    assert all(c in df.columns for c in HASH_COLUMNS)
    assert df.get_column("num_bytes").null_count() == 0  # filled while streaming
    err = df.filter(pl.col("hash_error").is_not_null())
    assert err.select("shard", "row").rows() == [("data/HFCF_small_1.parquet", 1)]
    assert err.get_column("phash").null_count() == 1 and err.get_column("sha256").null_count() == 0
    assert df.get_column("sha256")[0] == df.get_column("sha256")[7]
    again = hash_manifest(m, workers=1)
    assert again.decoded == 0 and again.cached_rows == 9
    assert again.manifest.df.equals(df)
    # a changed shard is a new fingerprint: its cache no longer applies
    shard = root / "data" / "HFCF_small_0.parquet"
    write_shard(shard, rows(5, start=100))
    os.utime(shard, ns=(1, 1))
    changed = hash_manifest(load_manifest(str(root)), workers=1)
    assert changed.decoded == 5 and changed.cached_rows == 4


def test_dhash_column_on_request(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    m = load_manifest(str(root))
    plain = hash_manifest(m, workers=1).manifest.df
    assert "dhash" not in plain.columns
    with_d = hash_manifest(m, workers=1, with_dhash=True)
    assert with_d.decoded == 9  # its own cache entry: the plain one has no dHash
    assert with_d.manifest.df.get_column("dhash").null_count() == 1  # the undecodable row
    assert with_d.manifest.df.drop("dhash").equals(plain)
    assert hash_manifest(m, workers=1, with_dhash=True).decoded == 0


def test_partial_cache_hashes_only_missing_rows(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    m = load_manifest(str(root))
    some = m.with_df(m.df.filter(pl.col("row") < 2))
    assert hash_manifest(some, workers=1).decoded == 4
    full = hash_manifest(m, workers=1)
    assert full.decoded == 5 and full.cached_rows == 4
    info = m.shards["data/HFCF_small_0.parquet"]
    cached = load_cached(m.root, "data/HFCF_small_0.parquet", info)
    assert cached is not None and cached.column("row").to_pylist() == [0, 1, 2, 3, 4]
    assert cache_path(m.root, "data/HFCF_small_0.parquet", info).is_file()


def test_reuses_hash_columns_without_reading_shards(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    hashed = hash_manifest(load_manifest(str(root)), workers=1).manifest
    for p in (root / "data").glob("*.parquet"):
        p.unlink()
    again = hash_manifest(hashed, workers=1)
    assert again.decoded == 0 and again.manifest.df.equals(hashed.df)


def test_pure_batches_function_matches_manifest_path(tmp_path: Path) -> None:
    """What a Ray map_batches run would call: same table as the pool path (so the same cache)."""
    root = _dataset(tmp_path)
    m = load_manifest(str(root))
    shard = "data/HFCF_small_1.parquet"
    table, decoded = hash_shard_batches(iter_shard_batches(m, shard, None, ("image_data",), 3))
    assert decoded == 4
    hash_manifest(m, workers=1)
    cached = load_cached(m.root, shard, m.shards[shard])
    assert cached is not None and cached.equals(table)


def test_process_pool_gives_same_result(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    m = load_manifest(str(root))
    one = hash_manifest(m, workers=1, use_cache=False)
    two = hash_manifest(m, workers=2, use_cache=False)
    assert two.decoded == 9
    assert two.manifest.df.equals(one.manifest.df)


def test_unreadable_shard(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    m = load_manifest(str(root))
    bad = root / "data" / "HFCF_small_1.parquet"
    st = bad.stat()
    data = bad.read_bytes()
    bad.write_bytes(data[:200] + b"\0" * (len(data) - 200))  # same size, garbage pages
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(PartialError, match="HFCF_small_1"):
        hash_manifest(m, workers=1, use_cache=False)
    result = hash_manifest(m, workers=1, use_cache=False, skip_bad=True)
    df = result.manifest.df
    assert (
        df.filter(pl.col("shard") == "data/HFCF_small_1.parquet").get_column("hash_error").null_count() == 0
    )
    assert df.filter(pl.col("shard") == "data/HFCF_small_0.parquet").get_column("phash").null_count() == 0
    assert [e.shard for e in result.bad] == ["data/HFCF_small_1.parquet"]


def test_hash_table_schema_roundtrip() -> None:
    h = hash_images([_encode(_texture(1, 40, 40), "PNG"), b"x"])
    from cfx.hashing import HASH_TABLE_SCHEMA, hashes_to_table

    t = hashes_to_table([3, 9], h)
    assert t.schema == HASH_TABLE_SCHEMA
    assert t.column("phash").null_count == 1
    assert t.column("phash").type == pa.uint64()


# --- the fast paths reproduce Pillow exactly --------------------------------------------------------------
@pytest.mark.parametrize(
    "shape", [(512, 512), (480, 640), (768, 1024), (17, 31), (8, 8), (32, 32), (32, 700), (1, 1), (2000, 33)]
)
def test_lanczos_resize_equals_pillow(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 7919 + shape[1])
    smooth = _texture(shape[0] + shape[1], shape[1], shape[0], "L")  # photo-like, then hard noise
    for grey in (np.asarray(smooth), rng.integers(0, 256, shape, dtype=np.uint8)):
        img = Image.fromarray(grey, "L")
        for size in ((32, 32), (9, 8)):
            want = np.asarray(img.resize(size, Image.Resampling.LANCZOS))
            assert np.array_equal(lanczos_resize(grey, *size), want), (shape, size)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _insert_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    """Put a chunk right after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    return png[:33] + _chunk(kind, data) + png[33:]


def _interlaced_png(rgb: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit RGB PNG (Pillow cannot write one)."""
    h, w, _ = rgb.shape
    raw = b""
    for y0, x0, dy, dx in (
        (0, 0, 8, 8),
        (0, 4, 8, 8),
        (4, 0, 8, 4),
        (0, 2, 4, 4),
        (2, 0, 4, 2),
        (0, 1, 2, 2),
        (1, 0, 2, 1),
    ):
        sub = rgb[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\0" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    idat = zlib.compress(raw)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def test_png_fast_path_gives_pillows_pixels() -> None:
    rgb = _texture(30, 77, 45)
    plain = _encode(rgb, "PNG")
    cases = {
        "rgb": plain,
        "rgb+gAMA": _insert_chunk(plain, b"gAMA", struct.pack(">I", 45455)),
        "rgb+tRNS": _insert_chunk(plain, b"tRNS", struct.pack(">HHH", 10, 20, 30)),
        "interlaced": _interlaced_png(np.asarray(rgb)),
        "grey": _encode(rgb.convert("L"), "PNG"),
        "rgba": _encode(rgb.convert("RGBA"), "PNG"),
        "grey+alpha": _encode(rgb.convert("LA"), "PNG"),
        "palette": _encode(rgb.convert("P"), "PNG"),
        "16-bit grey": _encode(Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257), "PNG"),
    }
    for name, data in cases.items():
        fast = _png_header(data) is not None
        assert fast == (name not in ("grey+alpha", "palette", "16-bit grey")), name
        grey, size = _grey(data, 10**8)
        img = Image.open(io.BytesIO(data))
        assert size == img.size, name
        assert np.array_equal(grey, np.asarray(img.convert("L"))), name
        assert hash_images([data]).phash[0] == int(str(imagehash.phash(img)), 16), name


def test_png_fast_path_errors_read_as_pillows() -> None:
    data = _encode(_texture(31, 300, 200), "PNG")
    cut = data[: len(data) // 2]
    h = hash_images([cut])
    with pytest.raises(OSError) as pillow:
        Image.open(io.BytesIO(cut)).load()
    assert not h.ok[0] and h.error[0] == f"OSError: {pillow.value}"
    # a flipped byte in stored (incompressible) image data: the deflate stream still inflates, only the
    # chunk CRC tells; libspng would decode it, Pillow refuses it, and so does cfx
    noise = np.random.default_rng(5).integers(0, 256, (60, 70, 3), dtype=np.uint8)
    rotten = bytearray(_encode(Image.fromarray(noise), "PNG"))
    rotten[len(rotten) // 2] ^= 0x40
    h = hash_images([bytes(rotten)])
    with pytest.raises(OSError) as pillow:
        Image.open(io.BytesIO(bytes(rotten))).load()
    assert not h.ok[0] and h.error[0] == f"OSError: {pillow.value}"
    bomb = hash_images([_bomb_png(20_000, 20_000)], max_pixels=10**8)
    assert not bomb.ok[0] and "exceeds the limit" in (bomb.error[0] or "")


def test_resize_falls_back_to_pillow_when_its_pass_order_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resample.exact()  # the installed Pillow is reproduced (else hashing silently runs slower)
    monkeypatch.setattr(resample, "_vertical_first", lambda *shape: False)  # a Pillow with another rule
    resample.exact.cache_clear()
    try:
        assert not resample.exact()
        grey = np.random.default_rng(3).integers(0, 256, (300, 100), dtype=np.uint8)
        want = np.asarray(Image.fromarray(grey).resize((32, 32), Image.Resampling.LANCZOS))
        assert np.array_equal(lanczos_resize(grey), want)
    finally:
        resample.exact.cache_clear()


_NOISE_PNGS = [
    _encode(Image.fromarray(np.random.default_rng(6).integers(0, 256, (40, 50, 3), dtype=np.uint8)), "PNG"),
    _encode(_texture(7, 50, 40, "RGBA"), "PNG"),
]


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(0, len(_NOISE_PNGS) - 1),
    flips=st.lists(st.tuples(st.integers(8, 10**6), st.integers(1, 255)), min_size=1, max_size=5),
    cut=st.one_of(st.none(), st.integers(20, 10**6)),
)
def test_damaged_pngs_fail_or_hash_exactly_as_in_pillow(
    which: int, flips: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(_NOISE_PNGS[which])
    for pos, bits in flips:
        data[pos % len(data)] ^= bits
    damaged = bytes(data[:cut] if cut is not None else data)
    h = hash_images([damaged])
    try:
        want = int(str(imagehash.phash(Image.open(io.BytesIO(damaged)))), 16)
    except Exception as exc:
        assert not h.ok[0] and h.error[0] is not None
        assert h.error[0] == _describe(exc)
    else:
        assert h.ok[0] and int(h.phash[0]) == want


def _after_idat(png: bytes, kind: bytes, data: bytes) -> bytes:
    """Put a chunk just before IEND (the last 12 bytes)."""
    return png[:-12] + _chunk(kind, data) + png[-12:]


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        (b"gAMA", b"\0\1"),  # too short: Pillow refuses it
        (b"sRGB", b""),
        (b"pHYs", b"\0\0\0\1"),
        (b"tRNS", b"\0\1"),  # 2 bytes on an RGB image
        (b"zTXt", b"k\0\1xx"),  # compression method 1 does not exist
        (b"iCCP", b"p\0\1xx"),
        (b"iTXt", b"k\0\0\0\0\0hello"),  # a valid one: Pillow reads it, cfx leaves the file to Pillow
        (b"acTL", b"\0\0\0\1"),
        (b"fcTL", b"\0" * 26),
        (b"tEXt", b"key\0value"),
        (b"zzZz", b"unknown"),
    ],
)
def test_png_chunks_with_valid_crcs_read_as_in_pillow(kind: bytes, data: bytes) -> None:
    """Malformed or unusual chunks whose CRCs are right (written by a broken encoder, or crafted): the PNG
    either goes to Pillow or is one libspng reads as Pillow does — same hash, or same error."""
    plain = _encode(_texture(32, 60, 40), "PNG")
    for png in (_insert_chunk(plain, kind, data), _after_idat(plain, kind, data)):
        h = hash_images([png])
        try:
            want = int(str(imagehash.phash(Image.open(io.BytesIO(png)))), 16)
        except Exception as exc:
            assert not h.ok[0] and h.error[0] == _describe(exc), (h.error[0], exc)
        else:
            assert h.ok[0] and int(h.phash[0]) == want, h.error[0]
