"""What an encoded image really is, from its first bytes (the file signature), never from a column.

Shared by ``cfx inspect`` (``actual_format``), ``cfx export`` (file extensions) and ``subset --transform``.
Names follow Pillow's ``Image.format`` (PNG, JPEG, WEBP, GIF, BMP, TIFF, …) so they compare with the
dataset's ``format`` column.
"""

from __future__ import annotations

# Signature prefix -> format name. Checked in order; RIFF/ftyp containers are handled in sniff_format.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG2000"),
    (b"\xff\x4f\xff\x51", "JPEG2000"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"qoif", "QOI"),
)
_FTYP_BRANDS = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIF", b"heix": "HEIF", b"mif1": "HEIF"}

# Format name -> the lower-case file extension detector codebases accept (CF trainer: .jpg .jpeg .png
# .bmp .tiff .webp .gif).
EXTENSIONS = {
    "PNG": "png",
    "JPEG": "jpg",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tiff",
    "JPEG2000": "jp2",
    "ICO": "ico",
    "QOI": "qoi",
    "AVIF": "avif",
    "HEIF": "heic",
}


def sniff_format(data: bytes | memoryview | None) -> str | None:
    """The format named by the file signature of ``data``, or None when it is none that cfx knows."""
    if not data:
        return None
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12])
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    return None


def extension(fmt: str | None) -> str | None:
    """File extension (no dot) for a format name as sniff_format returns it; None when unknown."""
    return EXTENSIONS.get(fmt.upper()) if fmt else None
