"""File signatures: every format Pillow writes here is recognised from its bytes, garbage is not."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from cfx.formats import extension, sniff_format


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_sniff_matches_pillow(fmt: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(buf, fmt)
    data = buf.getvalue()
    assert sniff_format(data) == fmt == Image.open(io.BytesIO(data)).format
    assert extension(fmt) is not None


@pytest.mark.parametrize("data", [None, b"", b"not an image", b"RIFF\x00\x00\x00\x00WAVE", b"\x89PNX"])
def test_sniff_unknown(data: bytes | None) -> None:
    assert sniff_format(data) is None
    assert extension(None) is None
