"""Byte facts of real encoded images (Pillow writes them): sizes and modes agree with Pillow's, metadata found."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from cfx.bytefacts import FACT_COLUMNS, binary_views, facts, facts_table

_RNG = np.random.default_rng(1)


def _encode(mode: str, fmt: str, size: tuple[int, int] = (37, 21), **options: object) -> bytes:
    w, h = size
    img = Image.fromarray(_RNG.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("PNG", "RGB"),
        ("PNG", "RGBA"),
        ("PNG", "L"),
        ("PNG", "LA"),
        ("PNG", "P"),
        ("PNG", "1"),
        ("JPEG", "RGB"),
        ("JPEG", "L"),
        ("JPEG", "CMYK"),
        ("WEBP", "RGB"),
        ("WEBP", "RGBA"),
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("TIFF", "RGB"),
    ],
)
def test_header_size_and_mode_agree_with_pillow(fmt: str, mode: str) -> None:
    data = _encode(mode, fmt)
    f = facts(data)
    img = Image.open(io.BytesIO(data))
    assert f["inspect_error"] is None
    assert (f["actual_format"], f["header_width"], f["header_height"]) == (img.format, *img.size)
    assert f["header_mode"] == img.mode


@pytest.mark.parametrize("lossless", [False, True])
def test_webp_sizes(lossless: bool) -> None:
    f = facts(_encode("RGB", "WEBP", (301, 17), lossless=lossless))
    assert (f["header_width"], f["header_height"], f["header_mode"]) == (301, 17, "RGB")


def test_png_text_chunk_keys_and_bit_depth() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat, Steps: 20")
    info.add_text("workflow", "{}", zip=True)  # zTXt
    info.add_itxt("prompt", "{}")
    f = facts(_encode("RGB", "PNG", pnginfo=info))
    assert f["text_chunks"] == ["parameters", "prompt", "workflow"]
    assert f["bit_depth"] == 8
    assert facts(_encode("RGB", "PNG"))["text_chunks"] == []


def test_png_16_bit() -> None:
    img = Image.fromarray(_RNG.integers(0, 65535, (5, 7), dtype=np.uint16))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    assert facts(buf.getvalue())["bit_depth"] == 16


def _icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_icc_and_exif(fmt: str) -> None:
    exif = Image.Exif()
    exif[0x010F] = "cfx"
    exif[0x8825] = {1: "N", 2: (1.0, 2.0, 3.0)}
    f = facts(_encode("RGB", fmt, icc_profile=_icc(), exif=exif.tobytes()))
    assert (f["has_icc"], f["has_exif"], f["has_gps"]) == (True, True, True)
    bare = facts(_encode("RGB", fmt))
    assert (bare["has_icc"], bare["has_exif"], bare["has_gps"], bare["has_c2pa"]) == (False,) * 4


def test_png_cabx_is_c2pa() -> None:
    data = _encode("RGB", "PNG")
    body = b"\x00\x00\x00\x10jumb"
    chunk = struct.pack(">I", len(body)) + b"caBX" + body + struct.pack(">I", zlib.crc32(b"caBX" + body))
    assert facts(data[:33] + chunk + data[33:])["has_c2pa"] is True


def test_jpeg_fields() -> None:
    f = facts(_encode("RGB", "JPEG", quality=87, subsampling=2, progressive=True))
    assert (f["jpeg_quality"], f["jpeg_quality_exact"]) == (87, True)
    assert (f["chroma_subsampling"], f["progressive"], f["bit_depth"]) == ("4:2:0", True, 8)
    png = facts(_encode("RGB", "PNG"))
    assert png["jpeg_quality"] is None and png["chroma_subsampling"] is None


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (None, "no image data"),
        (b"", "empty image data"),
        (b"definitely not an image", "unknown format"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "PNG"),
    ],
)
def test_bad_bytes_are_recorded_not_raised(data: bytes | None, error: str) -> None:
    f = facts(data)
    assert f["inspect_error"] is not None and error in f["inspect_error"]
    assert f["header_width"] is None


def test_facts_table_schema() -> None:
    table = facts_table([4, 9], [_encode("RGB", "PNG"), None])
    assert table.column_names == ["row", *FACT_COLUMNS]
    assert table.column("row").to_pylist() == [4, 9]
    assert table.column("inspect_error").to_pylist() == [None, "no image data"]


@pytest.mark.parametrize("typ", [pa.binary(), pa.large_binary()])
def test_facts_of_arrow_views_equal_facts_of_bytes(typ: pa.DataType) -> None:
    images = [_encode("RGB", "JPEG", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00"), None, b""]
    images += [_encode(m, f) for m, f in (("RGBA", "PNG"), ("RGB", "WEBP"), ("P", "GIF"))]
    column = pa.array(images, typ).slice(1)  # a slice: offsets start past 0
    views = binary_views(column)
    assert [v if v is None else bytes(v) for v in views] == images[1:]
    assert [facts(v) for v in views] == [facts(b) for b in images[1:]]
