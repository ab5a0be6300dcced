"""Transforms on write (``cfx subset --transform SPEC``): re-encode, resize, crop, blur, noise, strip metadata.

A :class:`Pipeline` is parsed once from the ``--transform`` specs and applied to one encoded image at a time,
in a worker process. Every random draw (``jpeg:Q1-Q2``, ``noise:SIGMA``) comes from a numpy PCG64 generator
seeded from a hash of (seed, source shard, source row), so the same source, specs and seed give the same
bytes whatever the number of workers or the row order.

Without an encode step the output keeps the source format: a JPEG is re-encoded with its own quantisation
tables and subsampling, WebP losslessly, anything else as PNG. ``--strip-metadata`` without any other
transform works on the container (JPEG segments, PNG chunks, WebP chunks) and never touches the pixels.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, JpegImagePlugin, PngImagePlugin

from cfx.errors import InputError, UsageError
from cfx.formats import sniff_format

GRAMMAR = (
    "jpeg:Q, jpeg:Q1-Q2, jpeg:Q,subsampling=4:2:0|4:2:2|4:4:4, webp:Q, webp:lossless, png, "
    "resize:min-side=N, resize:max-side=N, resize:FACTOR, center-crop:N, center-crop:WxH, blur:SIGMA, noise:SIGMA"
)
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
_INT = r"[1-9]\d*"
MAX_SIDE = 1 << 20  # pixels: a side larger than this is a typo, whatever the image (JPEG stops at 65,535)
_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"


class BadImageError(InputError):
    """One image could not be transformed; ``shard`` and ``row`` name it (a source row)."""

    def __init__(self, shard: str, row: int, message: str, hint: str = "") -> None:
        super().__init__(f"{shard} row {row}: {message}", hint)
        self.shard = shard
        self.row = row
        self.reason = message

    def to_json(self) -> dict[str, object]:
        return {"shard": self.shard, "row": self.row, "reason": self.reason}


class _RowProblem(Exception):
    """Raised inside ``apply`` for one image; the caller adds shard/row (BadImageError)."""


# --- steps --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Encode:
    format: str  # JPEG, WEBP, PNG
    quality: tuple[int, int] | None = None  # inclusive range; (q, q) for a fixed quality
    subsampling: str | None = None  # JPEG only
    lossless: bool = False  # WEBP only

    def resolve(self, rng: np.random.Generator) -> Encode:
        """This step with its quality drawn (jpeg:Q1-Q2): what was applied to one image."""
        if self.quality is None or self.quality[0] == self.quality[1]:
            return self
        q = int(rng.integers(self.quality[0], self.quality[1] + 1))
        return Encode(self.format, (q, q), self.subsampling, self.lossless)

    def spec(self) -> str:
        if self.format == "PNG":
            return "png"
        name = self.format.lower()
        if self.lossless:
            return f"{name}:lossless"
        assert self.quality is not None
        lo, hi = self.quality
        text = f"{name}:{lo}" if lo == hi else f"{name}:{lo}-{hi}"
        return text + (f",subsampling={self.subsampling}" if self.subsampling else "")


@dataclass(frozen=True)
class Resize:
    how: str  # min-side, max-side, factor
    value: float

    def size(self, w: int, h: int) -> tuple[int, int]:
        if self.how == "factor":
            s = self.value
        elif self.how == "min-side":
            s = self.value / min(w, h)
        else:  # max-side: shrink only
            s = min(1.0, self.value / max(w, h))
        return max(1, round(w * s)), max(1, round(h * s))

    def spec(self) -> str:
        return (
            f"resize:{_num(self.value)}" if self.how == "factor" else f"resize:{self.how}={int(self.value)}"
        )


@dataclass(frozen=True)
class CenterCrop:
    width: int
    height: int

    def spec(self) -> str:
        return (
            f"center-crop:{self.width}"
            if self.width == self.height
            else f"center-crop:{self.width}x{self.height}"
        )


@dataclass(frozen=True)
class Blur:
    sigma: float

    def spec(self) -> str:
        return f"blur:{_num(self.sigma)}"


@dataclass(frozen=True)
class Noise:
    sigma: float

    def spec(self) -> str:
        return f"noise:{_num(self.sigma)}"


Step = Encode | Resize | CenterCrop | Blur | Noise


def _least_pixels(step: Step) -> int:
    """The fewest pixels ``step`` can output, whatever the image (0: no lower bound)."""
    if isinstance(step, Resize) and step.how == "min-side":
        return int(step.value) ** 2
    if isinstance(step, CenterCrop):
        return step.width * step.height
    return 0


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


# --- parsing ------------------------------------------------------------------------------------------
def _bad(spec: str, why: str) -> UsageError:
    return UsageError(f"--transform {spec!r}: {why}", f"use one of: {GRAMMAR}")


def _quality(spec: str, text: str) -> tuple[int, int]:
    m = re.fullmatch(rf"({_INT})(?:-({_INT}))?", text)
    if not m:
        raise _bad(spec, f"quality {text!r} is not a number 1-100 or a range Q1-Q2")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if not 1 <= lo <= hi <= 100:
        raise _bad(spec, "quality must be 1-100 (and Q1 <= Q2)")
    return lo, hi


def _encode_step(spec: str, name: str, arg: str) -> Encode:
    if name == "png":
        if arg:
            raise _bad(spec, "png takes no argument")
        return Encode("PNG")
    parts = arg.split(",")
    if name == "webp":
        if len(parts) != 1 or not arg:
            raise _bad(spec, "webp takes a quality or 'lossless'")
        return Encode("WEBP", lossless=True) if arg == "lossless" else Encode("WEBP", _quality(spec, arg))
    quality = _quality(spec, parts[0])
    subsampling = None  # 4:2:0, Pillow's default, passed explicitly so the output never depends on it
    for opt in parts[1:]:
        key, _, value = opt.partition("=")
        if key != "subsampling" or value not in SUBSAMPLING:
            raise _bad(spec, f"unknown jpeg option {opt!r} (subsampling=4:2:0, 4:2:2 or 4:4:4)")
        subsampling = value
    return Encode("JPEG", quality, subsampling)


def _positive(spec: str, text: str, what: str) -> float:
    if not re.fullmatch(_NUM, text) or float(text) <= 0:
        raise _bad(spec, f"{what} {text!r} must be a positive number")
    return float(text)


def _resize_step(spec: str, arg: str) -> Resize:
    key, eq, value = arg.partition("=")
    if eq:
        if key not in ("min-side", "max-side") or not re.fullmatch(_INT, value):
            raise _bad(spec, "resize takes min-side=N, max-side=N (pixels) or a scale FACTOR")
        if len(value) > 7 or int(value) > MAX_SIDE:
            raise _bad(spec, f"{key} {value} is above {MAX_SIDE:,} pixels")
        return Resize(key, float(value))
    factor = _positive(spec, arg, "scale factor")
    if factor > 16:
        raise _bad(spec, "scale factor above 16 (did you mean resize:max-side=N?)")
    return Resize("factor", factor)


def parse_step(spec: str) -> Step:
    """One ``--transform`` spec as a step; a UsageError naming the spec and the grammar when it is bad."""
    name, _, arg = spec.strip().partition(":")
    name = name.lower()
    if name in ("jpeg", "jpg", "webp", "png"):
        if name != "png" and not arg:
            raise _bad(spec, f"{name} needs a quality, e.g. {name}:96")
        return _encode_step(spec, "jpeg" if name == "jpg" else name, arg)
    if name == "resize":
        return _resize_step(spec, arg)
    if name == "center-crop":
        m = re.fullmatch(rf"({_INT})(?:x({_INT}))?", arg)
        if not m:
            raise _bad(spec, "center-crop takes N or WxH (pixels)")
        if any(len(g) > 7 or int(g) > MAX_SIDE for g in m.groups() if g):
            raise _bad(spec, f"a side above {MAX_SIDE:,} pixels")
        return CenterCrop(int(m.group(1)), int(m.group(2) or m.group(1)))
    if name in ("blur", "noise"):
        sigma = _positive(spec, arg, "sigma")
        return Blur(sigma) if name == "blur" else Noise(sigma)
    raise _bad(spec, f"unknown transform {name!r}")


# --- results ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transformed:
    data: bytes
    format: str  # Pillow's name: JPEG, PNG, WEBP, ...
    width: int
    height: int
    mode: str
    applied: str  # the specs as applied to this image (drawn qualities resolved)
    source_sha256: str = ""
    source_size: tuple[int, int] | None = None  # the source image's decoded (width, height)


def row_rng(seed: int, shard: str, row: int) -> np.random.Generator:
    """The generator of one image's random draws: PCG64 seeded from a hash of (seed, shard, row)."""
    digest = hashlib.blake2b(f"{seed}\0{shard}\0{row}".encode(), digest_size=16).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))


# --- the pipeline -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]
    strip_metadata: bool = False
    keep_icc: bool = False
    max_pixels: int | None = field(default_factory=lambda: Image.MAX_IMAGE_PIXELS)

    @classmethod
    def parse(cls, specs: list[str], strip_metadata: bool = False, keep_icc: bool = False) -> Pipeline:
        if keep_icc and not strip_metadata:
            raise UsageError("--keep-icc needs --strip-metadata", "add --strip-metadata, or drop --keep-icc")
        pipeline = cls(tuple(parse_step(s) for s in specs), strip_metadata, keep_icc)
        pipeline.check_limits()
        return pipeline

    def check_limits(self) -> None:
        """Refuse steps whose output is above ``max_pixels`` for every image (``resize:min-side=100000``
        makes at least 100000x100000): exit 2 before any image is read."""
        if self.max_pixels is None:
            return
        for step in self.steps:
            least = _least_pixels(step)
            if least > self.max_pixels:
                raise UsageError(
                    f"--transform {step.spec()!r}: every output image would have at least {least:,} pixels, "
                    f"above the limit of {self.max_pixels:,} (the decompression-bomb limit)",
                    "pick a smaller size: at most about "
                    f"{math.isqrt(self.max_pixels):,} pixels a side for a square image",
                )

    @property
    def spec(self) -> str:
        """The pipeline as one string, as given on the command line (``resize:max-side=512 jpeg:96``)."""
        words = [s.spec() for s in self.steps]
        if self.strip_metadata:
            words.append("strip-metadata" + ("(keep-icc)" if self.keep_icc else ""))
        return " ".join(words)

    @property
    def is_empty(self) -> bool:
        return not self.steps and not self.strip_metadata

    @property
    def lossless_strip(self) -> bool:
        """Only --strip-metadata: done on the container, pixels untouched."""
        return not self.steps and self.strip_metadata

    def apply(self, data: bytes, key: tuple[str, int], seed: int = 0) -> Transformed:
        """Transform one encoded image; a BadImageError naming ``key`` (shard, row) when it cannot be."""
        try:
            out = self._apply(data, row_rng(seed, *key))
        except _RowProblem as exc:
            raise BadImageError(key[0], key[1], str(exc), "fix or drop the row, or pass --skip-bad") from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as exc:
            raise BadImageError(
                key[0], key[1], f"cannot decode the image ({exc})", "fix or drop the row, or pass --skip-bad"
            ) from None
        return replace(out, source_sha256=hashlib.sha256(data).hexdigest())

    def _apply(self, data: bytes, rng: np.random.Generator) -> Transformed:
        if not data:
            raise _RowProblem("the image is empty")
        image = self._open(data)
        size = image.size
        return replace(self._transform(data, image, rng), source_size=size)

    def _transform(self, data: bytes, image: Image.Image, rng: np.random.Generator) -> Transformed:
        if self.lossless_strip:
            out = strip_container(data, keep_icc=self.keep_icc)
            return _describe(out, self.spec)
        meta = _metadata(image, self.strip_metadata, self.keep_icc)
        source_format = image.format or sniff_format(data) or "PNG"
        like = _jpeg_tables(image) if source_format == "JPEG" else None
        applied: list[str] = []
        current: Image.Image | None = image  # None: ``data`` holds the latest pixels, not yet decoded
        for step in self.steps:
            if current is None:  # decode an encode step's output only when more steps follow
                current = self._open(data)
            if isinstance(step, Encode):
                step = step.resolve(rng)
                data, current = _encode(_encodable(current, step.format), step, meta), None
            else:
                self._check_planned(step, current.size)
                current = _pixels(_workable(current), step, rng)
            applied.append(step.spec())
        if current is not None:  # pixel steps came last: encode like the source
            data = _encode_like(current, source_format, like, meta)
        if self.strip_metadata:
            applied.append("strip-metadata" + ("(keep-icc)" if self.keep_icc else ""))
        return _describe(data, " ".join(applied))

    def _check_planned(self, step: Step, size: tuple[int, int]) -> None:
        """Refuse a pixel step whose planned output is above ``max_pixels``, before anything is allocated
        (``resize:min-side=30000`` on a 96x64 image plans 45000x30000): the message names the step."""
        if self.max_pixels is None or not isinstance(step, Resize):
            return
        w, h = step.size(*size)
        if w * h > self.max_pixels:
            raise _RowProblem(
                f"{step.spec()} would make this {size[0]}x{size[1]} image {w}x{h} = {w * h:,} pixels, above "
                f"the decompression-bomb limit of {self.max_pixels:,}"
            )

    def _open(self, data: bytes) -> Image.Image:
        """Open ``data`` (header only), refusing images above ``max_pixels`` before any pixel is decoded."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                image = Image.open(io.BytesIO(data))
            except Image.DecompressionBombError as exc:  # Pillow refuses > 2 x MAX_IMAGE_PIXELS itself
                raise _RowProblem(f"above the decompression-bomb limit: {exc}") from None
        w, h = image.size
        if self.max_pixels is not None and w * h > self.max_pixels:
            raise _RowProblem(
                f"{w}x{h} = {w * h:,} pixels is above the decompression-bomb limit of {self.max_pixels:,}"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
        return image


def _describe(data: bytes, applied: str) -> Transformed:
    with Image.open(io.BytesIO(data)) as im:
        return Transformed(data, im.format or sniff_format(data) or "", im.width, im.height, im.mode, applied)


# --- pixels -------------------------------------------------------------------------------------------
def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _workable(image: Image.Image) -> Image.Image:
    """A mode every pixel step handles (Lanczos, blur and noise need L, RGB or RGBA)."""
    if image.mode in ("L", "RGB", "RGBA"):
        return image
    if image.mode in ("1", "I", "I;16", "F"):
        return image.convert("L")
    return image.convert("RGBA" if _has_alpha(image) else "RGB")


def _encodable(image: Image.Image, fmt: str) -> Image.Image:
    """JPEG has no alpha and no palette; WebP and PNG take L/RGB/RGBA."""
    image = _workable(image)
    if fmt == "JPEG" and image.mode == "RGBA":
        return image.convert("RGB")
    return image


def _pixels(image: Image.Image, step: Step, rng: np.random.Generator) -> Image.Image:
    if isinstance(step, Resize):
        return image.resize(step.size(*image.size), Image.Resampling.LANCZOS)
    if isinstance(step, CenterCrop):
        w, h = image.size
        if step.width > w or step.height > h:
            raise _RowProblem(
                f"the image is {w}x{h}, smaller than {step.spec()} (resize:min-side=N first to enlarge it)"
            )
        left, top = (w - step.width) // 2, (h - step.height) // 2
        return image.crop((left, top, left + step.width, top + step.height))
    if isinstance(step, Blur):
        return image.filter(ImageFilter.GaussianBlur(radius=step.sigma))  # Pillow's radius is the sigma
    if isinstance(step, Noise):
        pixels = np.asarray(image, dtype=np.float32).copy()
        colour = pixels[..., :3] if image.mode == "RGBA" else pixels  # alpha stays as it is
        colour += rng.normal(0.0, step.sigma, colour.shape).astype(np.float32)
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), image.mode)
    raise AssertionError(step)


# --- encoding and metadata ----------------------------------------------------------------------------
def _metadata(image: Image.Image, strip: bool, keep_icc: bool) -> dict[str, Any]:
    """What a re-encode carries over: EXIF, ICC and PNG text, or with ``strip`` only the ICC (keep_icc)."""
    icc = image.info.get("icc_profile")
    if strip:
        return {"icc_profile": icc} if keep_icc and icc else {}
    meta: dict[str, Any] = {}
    if icc:
        meta["icc_profile"] = icc
    exif = image.info.get("exif")
    if exif:
        meta["exif"] = exif
    text = {k: v for k, v in getattr(image, "text", {}).items() if isinstance(v, str)}
    if text:
        meta["text"] = text
    return meta


def _save_options(fmt: str, meta: dict[str, Any]) -> dict[str, Any]:
    opts = {k: v for k, v in meta.items() if k in ("icc_profile", "exif")}
    if fmt == "PNG" and meta.get("text"):
        info = PngImagePlugin.PngInfo()
        for k, v in meta["text"].items():
            info.add_itxt(k, v)
        opts["pnginfo"] = info
    return opts


def _encode(image: Image.Image, step: Encode, meta: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    opts = _save_options(step.format, meta)
    if step.format == "JPEG":
        assert step.quality is not None
        sampling = SUBSAMPLING[step.subsampling or "4:2:0"]
        image.save(buf, "JPEG", quality=step.quality[0], subsampling=sampling, **opts)
    elif step.format == "WEBP":
        if step.lossless:
            image.save(buf, "WEBP", lossless=True, quality=100, method=4, **opts)
        else:
            assert step.quality is not None
            image.save(buf, "WEBP", quality=step.quality[0], method=4, **opts)
    else:
        image.save(buf, "PNG", compress_level=6, **opts)
    return buf.getvalue()


def _jpeg_tables(image: Image.Image) -> tuple[Any, int] | None:
    """A JPEG's quantisation tables and subsampling, to re-encode it as its own encoder did."""
    tables = getattr(image, "quantization", None)
    return (tables, JpegImagePlugin.get_sampling(image)) if tables else None


def _encode_like(
    image: Image.Image, source_format: str, like: tuple[Any, int] | None, meta: dict[str, Any]
) -> bytes:
    """Re-encode after pixel steps without an encode step: a JPEG with its own tables and subsampling, a
    WebP losslessly, anything else as PNG."""
    buf = io.BytesIO()
    opts = _save_options(source_format, meta)
    if source_format == "JPEG" and like is not None:
        tables, sampling = like
        _encodable(image, "JPEG").save(buf, "JPEG", qtables=tables, subsampling=sampling, **opts)
    elif source_format == "WEBP":
        image.save(buf, "WEBP", lossless=True, quality=100, method=4, **opts)
    else:
        image.save(buf, "PNG", compress_level=6, **_save_options("PNG", meta))
    return buf.getvalue()


# --- lossless metadata strip --------------------------------------------------------------------------
def strip_container(data: bytes, keep_icc: bool = False) -> bytes:
    """Drop metadata from the container without re-encoding: JPEG APPn/COM segments (EXIF, XMP, IPTC, MPF;
    APP0 JFIF and APP14 Adobe stay: they change how pixels decode), PNG ancillary chunks other than the
    rendering ones, WebP EXIF/XMP chunks. ICC profiles go unless ``keep_icc``. Other formats unchanged."""
    fmt = sniff_format(data)
    if fmt == "JPEG":
        return _strip_jpeg(data, keep_icc)
    if fmt == "PNG":
        return _strip_png(data, keep_icc)
    if fmt == "WEBP":
        return _strip_webp(data, keep_icc)
    return data


def _strip_jpeg(data: bytes, keep_icc: bool) -> bytes:
    out = bytearray(data[:2])
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise _RowProblem(f"broken JPEG: no marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        seg = data[i : i + 2 + length]
        if marker == 0xDA:  # start of scan: the rest is image data up to EOI; trailing bytes dropped
            end = data.find(b"\xff\xd9", i + 2 + length)
            out += data[i : (end + 2 if end >= 0 else n)]
            return bytes(out)
        keep = not (0xE1 <= marker <= 0xED or marker == 0xEF or marker == 0xFE)
        if marker == 0xE2 and keep_icc and seg[4:16] == b"ICC_PROFILE\0":
            keep = True
        if keep:
            out += seg
        i += 2 + length
    raise _RowProblem("broken JPEG: no image data (SOS)")


# Ancillary chunks that change how the pixels look (or animate): kept. Everything else ancillary
# (tEXt/zTXt/iTXt, eXIf, tIME, caBX/C2PA, private chunks) goes.
_PNG_RENDERING = {b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"cICP", b"mDCv", b"cLLi", b"pHYs", b"bKGD"}
_PNG_RENDERING |= {b"acTL", b"fcTL", b"fdAT", b"hIST", b"sPLT"}


def _strip_png(data: bytes, keep_icc: bool) -> bytes:
    out = bytearray(data[:8])
    i, n = 8, len(data)
    while i + 12 <= n:
        length = int.from_bytes(data[i : i + 4], "big")
        tag = data[i + 4 : i + 8]
        chunk = data[i : i + 12 + length]
        critical = tag[:1].isupper()
        if critical or tag in _PNG_RENDERING or (tag == b"iCCP" and keep_icc):
            out += chunk
        i += 12 + length
        if tag == b"IEND":
            return bytes(out)
    raise _RowProblem("broken PNG: no IEND chunk")


def _strip_webp(data: bytes, keep_icc: bool) -> bytes:
    chunks: list[bytes] = []
    i, n = 12, min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    while i + 8 <= n:
        tag = data[i : i + 4]
        size = int.from_bytes(data[i + 4 : i + 8], "little")
        chunk = data[i : i + 8 + size + (size & 1)]
        if tag not in (b"EXIF", b"XMP ") and (tag != b"ICCP" or keep_icc):
            chunks.append(chunk)
        i += 8 + size + (size & 1)
    fixed = []
    for c in chunks:
        if c[:4] == b"VP8X":  # flags: ICC 0x20, EXIF 0x08, XMP 0x04
            flags = c[8] & ~0x0C & (0xFF if keep_icc else ~0x20)
            c = c[:8] + bytes([flags & 0xFF]) + c[9:]
        fixed.append(c)
    body = b"WEBP" + b"".join(fixed)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


# --- many images (a worker's share of a subset) --------------------------------------------------------
def transform_rows(
    pipeline: Pipeline, seed: int, shard: str, rows: list[int], images: list[bytes | None]
) -> list[Transformed | BadImageError]:
    """Apply ``pipeline`` to each image of one source shard; a bad image gives its error, not an exception."""
    out: list[Transformed | BadImageError] = []
    for row, data in zip(rows, images, strict=True):
        try:
            out.append(pipeline.apply(data or b"", (shard, row), seed))
        except BadImageError as exc:
            out.append(exc)
    return out


__all__ = [
    "GRAMMAR",
    "BadImageError",
    "Pipeline",
    "Transformed",
    "parse_step",
    "row_rng",
    "strip_container",
    "transform_rows",
]


# --- output size estimate (free-space checks before writing) ------------------------------------------
_HEADER_BYTES = 600  # container, tables and markers of one small encoded image
_LOSSLESS_BPP = 2.0  # PNG / WebP lossless of photographs: 1-3 bytes per RGB pixel
_CHROMA = {"4:4:4": 1.5, "4:2:2": 1.25, "4:2:0": 1.0, None: 1.0}


def _lossy_bpp(step: Encode) -> float:
    """Typical bytes per pixel of a photograph at the step's (highest) quality: ~0.3 at Q50, ~0.7 at Q75,
    ~1.3 at Q96 for JPEG 4:2:0 (WebP a quarter less)."""
    q = (step.quality or (90, 90))[1] / 100
    bpp = (0.15 + 1.35 * q**3) * _CHROMA.get(step.subsampling, 1.0)
    return bpp * (0.75 if step.format == "WEBP" else 1.0)


def estimate_bytes(
    pipeline: Pipeline, width: np.ndarray, height: np.ndarray, source_bytes: np.ndarray
) -> np.ndarray:
    """About how many bytes each image will take after ``pipeline``: its planned size (resize and crop steps
    applied to the manifest's width × height) times the last encoder's typical bytes per pixel; images whose
    size is unknown, or re-encoded like their source, scale their source bytes by the pixel ratio. An
    estimate for free-space checks, not a bound (noise compresses worse than photographs)."""
    src = np.asarray(source_bytes, np.float64)
    w0 = np.asarray(width, np.float64)
    h0 = np.asarray(height, np.float64)
    known = np.isfinite(w0) & np.isfinite(h0) & (w0 > 0) & (h0 > 0)
    w, h = np.where(known, w0, 1.0), np.where(known, h0, 1.0)
    last: Encode | None = None
    for step in pipeline.steps:
        if isinstance(step, Resize):
            if step.how == "factor":
                s = np.full_like(w, step.value)
            elif step.how == "min-side":
                s = step.value / np.minimum(w, h)
            else:
                s = np.minimum(1.0, step.value / np.maximum(w, h))
            w, h = np.maximum(1, np.round(w * s)), np.maximum(1, np.round(h * s))
        elif isinstance(step, CenterCrop):
            w, h = np.minimum(w, step.width), np.minimum(h, step.height)
        elif isinstance(step, Encode):
            last = step
    ratio = np.where(known, (w * h) / np.where(known, w0 * h0, 1.0), 1.0)
    if last is None:  # re-encoded like the source (or only stripped): the source bytes, scaled
        return np.ceil(src * ratio)
    bpp = _LOSSLESS_BPP if last.format == "PNG" or last.lossless else _lossy_bpp(last)
    return np.where(known, np.ceil(w * h * bpp) + _HEADER_BYTES, np.ceil(src * ratio))
