"""JPEG header facts on real Pillow (libjpeg-turbo) encodings: quality exact at every q, subsampling, metadata."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from cfx.jpegquality import (
    QUALITIES,
    STD_CHROMINANCE,
    STD_LUMINANCE,
    JpegError,
    estimate_quality,
    parse_jpeg,
    scaled_table,
)

_RNG = np.random.default_rng(0)
_PIXELS = _RNG.integers(0, 256, (24, 40, 3), dtype=np.uint8)


def _jpeg(mode: str = "RGB", **options: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_PIXELS).convert(mode).save(buf, "JPEG", **options)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("subsampling", [0, 2])  # Pillow: 0 = 4:4:4, 2 = 4:2:0
def test_quality_exact_at_every_q(mode: str, subsampling: int) -> None:
    wrong = []
    for q in range(1, 101):
        head = parse_jpeg(_jpeg(mode, quality=q, subsampling=subsampling))
        if head.quality != (q, True):
            wrong.append((q, head.quality))
    assert wrong == []


def test_scaled_luminance_tables_are_distinct() -> None:
    tables = {tuple(scaled_table(STD_LUMINANCE, int(q))) for q in QUALITIES}
    assert len(tables) == 100  # so an exact match names exactly one quality


def test_standard_tables_given_as_qtables_are_exact() -> None:
    tables = [list(map(int, scaled_table(b, 80))) for b in (STD_LUMINANCE, STD_CHROMINANCE)]
    assert parse_jpeg(_jpeg("RGB", qtables=tables)).quality == (80, True)


def test_custom_tables_are_not_exact_but_near() -> None:
    lum = scaled_table(STD_LUMINANCE, 80).copy()
    lum[5] += 3  # one entry off: not the IJG table at any quality
    tables = [list(map(int, lum)), list(map(int, scaled_table(STD_CHROMINANCE, 80)))]
    assert parse_jpeg(_jpeg("RGB", qtables=tables)).quality == (80, False)
    tables[1] = [7] * 64  # a flat chrominance table: still a quality near the luminance one's
    q, exact = parse_jpeg(_jpeg("RGB", qtables=tables)).quality or (0, True)
    assert not exact and 75 <= q <= 95


def test_flat_custom_table_gets_a_sane_estimate() -> None:
    q, exact = parse_jpeg(_jpeg("L", qtables=[[2] * 64])).quality or (0, True)
    assert not exact and 90 <= q <= 99


def test_estimate_no_tables() -> None:
    assert estimate_quality({}) is None


@pytest.mark.parametrize(("subsampling", "name"), [(0, "4:4:4"), (1, "4:2:2"), (2, "4:2:0")])
def test_subsampling(subsampling: int, name: str) -> None:
    head = parse_jpeg(_jpeg("RGB", quality=90, subsampling=subsampling))
    assert head.subsampling == name
    assert (head.width, head.height, head.bit_depth, head.mode) == (40, 24, 8, "RGB")


def test_gray_and_progressive() -> None:
    head = parse_jpeg(_jpeg("L", quality=75))
    assert (head.subsampling, head.progressive, head.mode) == ("gray", False, "L")
    assert parse_jpeg(_jpeg("RGB", quality=75, progressive=True)).progressive is True


def test_exif_with_and_without_gps() -> None:
    exif = Image.Exif()
    exif[0x010F] = "cfx-camera"  # Make
    plain = parse_jpeg(_jpeg("RGB", exif=exif.tobytes()))
    assert (plain.has_exif, plain.has_gps) == (True, False)
    exif[0x8825] = {1: "N", 2: (1.0, 2.0, 3.0)}  # GPS IFD: latitude ref and latitude
    gps = parse_jpeg(_jpeg("RGB", exif=exif.tobytes()))
    assert (gps.has_exif, gps.has_gps) == (True, True)
    bare = parse_jpeg(_jpeg("RGB"))
    assert (bare.has_exif, bare.has_gps, bare.has_icc, bare.has_c2pa) == (False, False, False, False)


def test_icc_profile() -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert parse_jpeg(_jpeg("RGB", icc_profile=icc)).has_icc is True


def _with_segment(data: bytes, marker: int, payload: bytes) -> bytes:
    return data[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def test_jumbf_app11_is_c2pa() -> None:
    box = struct.pack(">I", 24) + b"jumb" + struct.pack(">I", 16) + b"jumdc2pa" + b"\x00" * 4
    payload = b"JP" + b"\x00\x00" + b"\x00\x00\x00\x01" + box
    assert parse_jpeg(_with_segment(_jpeg(), 0xEB, payload)).has_c2pa is True


@pytest.mark.parametrize("cut", [2, 5, 30, 100])
def test_truncated_header_raises(cut: int) -> None:
    with pytest.raises(JpegError):
        parse_jpeg(_jpeg()[:cut])


def test_not_a_jpeg() -> None:
    with pytest.raises(JpegError, match="start-of-image"):
        parse_jpeg(b"\x89PNG\r\n\x1a\n")
