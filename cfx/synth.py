"""Synthetic CommunityForensics-shaped datasets for tests, the offline demo and benchmarks.

Three generators, all deterministic for a given seed (same arguments -> byte-identical files):

- ``make_dataset``: a small, realistic set (textured images, the known size/format shortcuts, generator
  licences, a dataset card) with injected exact and near duplicates and their ground truth.
- ``make_scale_replica``: the real shard layout and row counts (556,541 rows) with tiny image bytes.
- ``make_large_shard``: one shard above a byte target as one single row group, for bounded-memory tests.

Shards have the real layout (cf-small.md): ``resolution`` a ``list<int64>`` holding ``[width, height]``
(``resolution_type="string"`` writes the other form, ``"[width, height]"``), a real row's ``model_name`` its
source dataset (FFHQ, COCO, ...), a generated row's ``real_source`` where its prompt came from (LAION), ``subset``
Systematic / Manual / Real, one row group per shard and pyarrow's default pages and dictionary for every column
(``make_large_shard`` aside: see there).

Layout written under ``root``::

    README.md                        dataset card (licence, config data/*.parquet)
    data/HFCF_small_{i}.parquet      shards, SOURCE_SCHEMA, one row group each
    data/metadata/generators.csv     model_name,license (some generators deliberately missing)
    ground_truth/duplicates.parquet  injected duplicate pairs (make_dataset with duplicates=True)
"""

from __future__ import annotations

import csv
import io
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from cfx.errors import InputError, UsageError
from cfx.outputs import ensure_folder, write_atomic
from cfx.progress import NullReporter, Reporter
from cfx.schema import (
    GENERATED,
    IMAGE_COLUMN,
    REAL,
    RESOLUTION_LIST,
    RESOLUTION_TYPES,
    SOURCE_SCHEMA,
    source_schema,
)

__all__ = [
    "GROUND_TRUTH_SCHEMA",
    "SynthInfo",
    "load_ground_truth",
    "make_dataset",
    "make_large_shard",
    "make_scale_replica",
    "shard_name",
]

GROUND_TRUTH_SCHEMA = pa.schema(
    [
        ("shard_a", pa.string()),
        ("row_a", pa.int64()),
        ("shard_b", pa.string()),
        ("row_b", pa.int64()),
        ("kind", pa.string()),
        ("transform", pa.string()),
        ("cross_label", pa.bool_()),
        ("cross_shard", pa.bool_()),
    ]
)
GROUND_TRUTH_PATH = Path("ground_truth") / "duplicates.parquet"
GENERATORS_PATH = Path("data") / "metadata" / "generators.csv"

# pHash (64-bit) distances, by construction: distinct originals are re-drawn until they are >= 18 bits
# from every earlier one; a near copy is <= 8 bits from its original and >= 14 from every other image.
# So "within 12 bits" finds exactly the injected pairs.
_MIN_DISTINCT_BITS = 18
_NEAR_MAX_BITS = 8
_UNRELATED_MIN_BITS = 14
_PNG_LEVEL = 1
# Where the prompts of generated rows came from (their ``real_source``, as in the real set).
_PROMPT_SOURCE = "LAION"
_SYSTEMATIC, _MANUAL, _REAL_SUBSET = "Systematic", "Manual", "Real"
# Share of rows per injected duplicate kind (at least 3 pairs per kind when the set allows).
_DUP_SHARE = 0.025
_NSFW_SHARE = 0.03


@dataclass(frozen=True)
class SynthInfo:
    """What a generator wrote."""

    root: Path
    shards: tuple[Path, ...]
    n_rows: int
    n_real: int
    n_generated: int
    ground_truth: Path | None = None
    n_pairs: int = 0
    n_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "shards": [str(p) for p in self.shards],
            "n_shards": len(self.shards),
            "n_rows": self.n_rows,
            "n_real": self.n_real,
            "n_generated": self.n_generated,
            "ground_truth": str(self.ground_truth) if self.ground_truth else None,
            "n_pairs": self.n_pairs,
            "n_bytes": self.n_bytes,
        }


def shard_name(i: int) -> str:
    """The real dataset's shard file name for shard ``i``."""
    return f"HFCF_small_{i}.parquet"


def load_ground_truth(root: Path) -> pl.DataFrame:
    """The injected duplicate pairs of a ``make_dataset`` folder (see ``make_dataset`` for the columns)."""
    path = Path(root) / GROUND_TRUTH_PATH
    if not path.is_file():
        raise InputError(
            f"no duplicate ground truth at {path}",
            "generate the folder with make_dataset(..., duplicates=True) / `cfx synth DIR`",
        )
    return pl.read_parquet(path)


# --------------------------------------------------------------------------------------------------------
# Vocabulary: generators, real sources, prompts


@dataclass(frozen=True)
class _Generator:
    model_name: str
    architecture: str
    weight: float
    license: str | None  # None: deliberately missing from generators.csv


# Uneven weights on purpose: later code balances by generator.
_GENERATORS: tuple[_Generator, ...] = (
    _Generator("runwayml/stable-diffusion-v1-5", "LatDiff", 30, "creativeml-openrail-m"),
    _Generator("CompVis/stable-diffusion-v1-4", "LatDiff", 20, "creativeml-openrail-m"),
    _Generator("stabilityai/stable-diffusion-2", "LatDiff", 12, "openrail++"),
    _Generator("stabilityai/stable-diffusion-2-1", "LatDiff", 10, "openrail++"),
    _Generator("stabilityai/stable-diffusion-xl-base-1.0", "LatDiff", 8, "openrail++"),
    _Generator("prompthero/openjourney", "LatDiff", 5, "creativeml-openrail-m"),
    _Generator("dreamlike-art/dreamlike-photoreal-2.0", "LatDiff", 3, "creativeml-openrail-m"),
    _Generator("SG161222/Realistic_Vision_V5.1_noVAE", "LatDiff", 2, "creativeml-openrail-m"),
    _Generator("kandinsky-community/kandinsky-2-2-decoder", "LatDiff", 2, "apache-2.0"),
    _Generator("segmind/SSD-1B", "LatDiff", 1, "apache-2.0"),
    _Generator("stabilityai/sdxl-turbo", "LatDiff", 1, None),
    _Generator("DeepFloyd/IF-I-XL-v1.0", "PixDiff", 5, "deepfloyd-if-license"),
    _Generator("DeepFloyd/IF-I-M-v1.0", "PixDiff", 2, "deepfloyd-if-license"),
    _Generator("google/ddpm-celebahq-256", "PixDiff", 1, "apache-2.0"),
    _Generator("openai/diffusers-cd_imagenet64_l2", "Other", 3, "mit"),
    _Generator("openai/diffusers-cd_imagenet64_lpips", "Other", 1, "mit"),
    _Generator("kakaobrain/karlo-v1-alpha", "Other", 1, "creativeml-openrail-m"),
    _Generator("StyleGAN2", "GAN", 6, "cc-by-nc-4.0"),
    _Generator("ProGAN", "GAN", 3, "cc-by-nc-4.0"),
    _Generator("BigGAN", "GAN", 3, "mit"),
    _Generator("StyleGAN3", "GAN", 2, None),
)
_ARCHITECTURES = ("LatDiff", "GAN", "PixDiff", "Other")
# Architecture mix of the "mixed" generated shards (real shards 66-92).
_MIXED_ARCH_WEIGHTS = {"LatDiff": 0.4, "GAN": 0.3, "PixDiff": 0.15, "Other": 0.15}
# Share of generated-only shards that are LatDiff-only (real: shards 0-65 of 0-92).
_LATDIFF_ONLY_SHARE = 66 / 93


@dataclass(frozen=True)
class _RealSource:
    name: str
    weight: float
    png_share: float
    sizes: tuple[tuple[int, int], ...]  # (width, height)
    gray_share: float = 0.0


# FFHQ/MetFaces/LHQ are big PNGs, most of the rest JPEGs of assorted sizes: the known shortcuts.
_REAL_SOURCES: tuple[_RealSource, ...] = (
    _RealSource(
        "LAION", 0.22, 0.15, ((512, 512), (600, 400), (1024, 768), (800, 600), (256, 256), (736, 736))
    ),
    _RealSource("COCO", 0.16, 0.0, ((640, 480), (640, 427), (480, 640), (640, 426), (500, 375)), 0.03),
    _RealSource("FFHQ", 0.14, 1.0, ((1024, 1024),)),
    _RealSource("ImageNet", 0.12, 0.0, ((500, 375), (500, 333), (375, 500), (500, 500), (333, 500)), 0.03),
    _RealSource("CelebA", 0.08, 0.0, ((178, 218),)),
    _RealSource("AFHQ-v2", 0.06, 1.0, ((512, 512),)),
    _RealSource("LandscapesHQ", 0.05, 1.0, ((1024, 1024),)),
    _RealSource("VISION", 0.05, 0.0, ((1280, 960), (960, 1280))),
    _RealSource("MetFaces", 0.04, 1.0, ((1024, 1024),)),
    _RealSource("Forchheim", 0.04, 0.0, ((1024, 768), (768, 1024))),
    _RealSource("IMD2020", 0.04, 0.0, ((1024, 768), (640, 480), (1280, 720))),
)

# make_dataset: "mostly 512x512, a few others".
_GEN_SIZES: tuple[tuple[tuple[int, int], float], ...] = (
    ((512, 512), 0.85),
    ((256, 256), 0.05),
    ((768, 768), 0.05),
    ((1024, 576), 0.05),
)
_GEN_JPEG_SHARE = 0.01
_MANUAL_SHARE = 0.15

_SUBJECTS = (
    "a red fox",
    "an old lighthouse",
    "a bowl of ramen",
    "a cyberpunk street market",
    "a portrait of an elderly fisherman",
    "a snowy mountain cabin",
    "a vintage sports car",
    "a golden retriever puppy",
    "a medieval castle",
    "an astronaut riding a horse",
    "a bouquet of sunflowers",
    "a futuristic city skyline",
    "a wooden sailing ship",
    "a cup of coffee on a table",
    "a dragon made of glass",
    "a quiet library",
)
_SETTINGS = (
    "at sunset",
    "in the rain",
    "under neon lights",
    "on a misty morning",
    "in a dense forest",
    "on the surface of mars",
    "in a busy train station",
    "by the sea",
    "in the desert",
    "at night",
    "in winter",
    "inside a cathedral",
)
_STYLES = (
    "highly detailed, 8k",
    "oil painting",
    "watercolor",
    "cinematic lighting",
    "studio photograph, 35mm",
    "digital art, trending on artstation",
    "anime style",
    "concept art",
    "octane render",
    "pencil sketch",
    "photorealistic",
    "low poly",
)


def _prompt(rng: np.random.Generator) -> str:
    return (
        f"{_SUBJECTS[rng.integers(len(_SUBJECTS))]} {_SETTINGS[rng.integers(len(_SETTINGS))]}, "
        f"{_STYLES[rng.integers(len(_STYLES))]}"
    )


# --------------------------------------------------------------------------------------------------------
# Files


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through cfx.outputs.write_atomic so readers never see a half-written file."""
    ensure_folder(path.parent, "check the folder's permissions and free disk space")
    write_atomic(path, lambda tmp: write(Path(tmp)))


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))


def _write_table(path: Path, table: pa.Table, **options: Any) -> None:
    # One row group per file, like the real shards; pyarrow's defaults otherwise (dictionary, snappy, pages
    # cut every 1,024 values), as the real shards were written.
    _atomic_write(
        path, lambda tmp: pq.write_table(table, tmp, row_group_size=max(1, table.num_rows), **options)
    )


def _clear_stale(root: Path, keep: Sequence[Path], keep_ground_truth: bool) -> None:
    """Remove shards (and ground truth) a previous run left that this run does not rewrite.

    Only names this module writes are touched, so a folder never mixes two generated sets.
    """
    keep_set = {p.name for p in keep}
    data = root / "data"
    if data.is_dir():
        for p in data.glob("HFCF_small_*.parquet"):
            if p.name not in keep_set:
                p.unlink()
    if not keep_ground_truth:
        gt = root / GROUND_TRUTH_PATH
        gt.unlink(missing_ok=True)
        if gt.parent.is_dir() and not any(gt.parent.iterdir()):
            gt.parent.rmdir()


def _write_card(root: Path, title: str, lines: Sequence[str]) -> None:
    text = "\n".join(
        [
            "---",
            "license: cc-by-nc-sa-4.0",
            "task_categories:",
            "- image-classification",
            "tags:",
            "- image-forensics",
            "- synthetic-image-detection",
            "pretty_name: CommunityForensics-Small (synthetic)",
            "configs:",
            "- config_name: default",
            "  data_files:",
            "  - split: train",
            "    path: data/*.parquet",
            "---",
            "",
            f"# {title}",
            "",
            "Synthetic stand-in for `OwensLab/CommunityForensics-Small`, written by `cfx synth`.",
            "Same schema and shard naming as the real set; the images are procedural textures, not photos.",
            "",
            *lines,
            "",
            "Each generator keeps its own licence: see `data/metadata/generators.csv`.",
            "",
        ]
    )
    _write_text(root / "README.md", text)


def _write_licences(root: Path, rows: Sequence[tuple[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model_name", "license"])
    writer.writerows(sorted(rows))
    _write_text(root / GENERATORS_PATH, buf.getvalue())


def _shard_paths(root: Path, n: int) -> list[Path]:
    return [root / "data" / shard_name(i) for i in range(n)]


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


# --------------------------------------------------------------------------------------------------------
# Pixels

_TWO_PI = np.float32(2 * np.pi)


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A coloured, photo-ish texture (uint8 HxWx3).

    Low-frequency plane waves and gradients set the coarse layout, and so the pHash, which differs
    between draws like random bits; a mid-frequency pattern, ellipses and noise give real texture.
    """
    # The smooth part is computed on a grid of ~1/4 size and upsampled: pHash only sees 32x32 anyway.
    # Waves are summed one by one on purpose: a matmul would start OpenBLAS threads that spin against
    # the rendering threads.
    cw, ch = min(width, max(128, -(-width // 4))), min(height, max(128, -(-height // 4)))
    x = np.linspace(0.0, 1.0, cw, dtype=np.float32)
    y = np.linspace(0.0, 1.0, ch, dtype=np.float32)
    n_low, n_mid = 8, 6
    fx = np.concatenate([rng.uniform(-4, 4, n_low), rng.uniform(-24, 24, n_mid)]).astype(np.float32)
    fy = np.concatenate([rng.uniform(-4, 4, n_low), rng.uniform(-24, 24, n_mid)]).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, n_low + n_mid).astype(np.float32)
    amp = np.concatenate([rng.uniform(10, 45, (n_low, 3)), rng.uniform(2, 10, (n_mid, 3))]).astype(np.float32)
    ax = _TWO_PI * np.outer(x, fx) + phase
    by = _TWO_PI * np.outer(y, fy)
    sa, ca, sb, cb = np.sin(ax), np.cos(ax), np.sin(by), np.cos(by)
    base = rng.uniform(40, 215, 3).astype(np.float32)
    grad = rng.uniform(-60, 60, (3, 2)).astype(np.float32)
    field = np.empty((ch, cw, 3), np.float32)
    field[:] = base + x[:, None] * grad[:, 0]
    field += (y[:, None] * grad[:, 1])[:, None, :]
    for i in range(n_low + n_mid):
        # sin(a + b) = sin a cos b + cos a sin b: a plane wave from two outer products
        wave = cb[:, i, None] * sa[None, :, i] + sb[:, i, None] * ca[None, :, i]
        field += wave[:, :, None] * amp[i]
    np.clip(field, 0, 255, out=field)
    smooth = Image.fromarray(field.astype(np.uint8))
    if (cw, ch) != (width, height):
        smooth = smooth.resize((width, height), Image.Resampling.BICUBIC)
    img = np.asarray(smooth, dtype=np.float32).copy()
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)
    for _ in range(int(rng.integers(3, 8))):
        cx, cy = rng.uniform(0, 1, 2)
        rx, ry = rng.uniform(0.05, 0.3, 2)
        colour = rng.uniform(-70, 70, 3).astype(np.float32)
        x0, x1 = max(0, int((cx - rx) * width)), min(width, int((cx + rx) * width) + 1)
        y0, y1 = max(0, int((cy - ry) * height)), min(height, int((cy + ry) * height) + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        inside = ((x[None, x0:x1] - cx) / rx) ** 2 + ((y[y0:y1, None] - cy) / ry) ** 2 <= 1.0
        img[y0:y1, x0:x1] += inside[:, :, None] * colour
    # uniform sensor-like noise; uint8 draws are ~6x cheaper than normal float draws
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8).astype(np.float32)
    img += noise * np.float32(rng.uniform(4, 14) / 255)
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


def _png(pixels: np.ndarray) -> bytes:
    """Encode an L or RGB uint8 array as PNG.

    PIL's PNG encoder holds the GIL; this one (Sub filter + zlib, which releases it) lets the
    rendering threads overlap and is ~3x faster on noisy images.
    """
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = pixels.reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), np.uint8)
    filtered[:, 0] = 1  # filter type Sub: each byte minus the same channel of the pixel to its left
    filtered[:, 1 : channels + 1] = rows[:, :channels]
    np.subtract(rows[:, channels:], rows[:, :-channels], out=filtered[:, channels + 1 :], casting="unsafe")
    colour_type = {1: 0, 3: 2}[channels]

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", _deflate(filtered.tobytes()))
        + chunk(b"IEND", b"")
    )


def _deflate(data: bytes) -> bytes:
    # Sub-filtered noisy pixels have no repeats worth searching for: Huffman-only coding is ~2x faster
    # than level 1 and smaller.
    z = zlib.compressobj(_PNG_LEVEL, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    return z.compress(data) + z.flush()


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    if fmt == "PNG":
        return _png(np.asarray(image))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _phash(image: Image.Image) -> int:
    bits = np.packbits(imagehash.phash(image).hash.flatten())
    return int.from_bytes(bits.tobytes(), "big")


def _bits(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _min_bits(hashes: np.ndarray, h: int) -> int:
    """Smallest Hamming distance from ``h`` to any of ``hashes`` (uint64); 64 when there are none."""
    if not hashes.size:
        return 64
    # unpackbits rather than np.bitwise_count, which needs numpy >= 2
    diff = (hashes ^ np.uint64(h)).view(np.uint8)
    return int(np.unpackbits(diff).reshape(-1, 64).sum(axis=1).min())


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --------------------------------------------------------------------------------------------------------
# make_dataset


@dataclass
class _Row:
    shard: int
    row: int
    gidx: int
    label: int
    architecture: str
    model_name: str
    real_source: str
    subset: str
    prompt: str
    nsfw: bool
    fmt: str
    width: int
    height: int
    mode: str
    quality: int


@dataclass(frozen=True)
class _Pair:
    a: int  # the original: earlier in (shard, row) order
    b: int  # the copy
    kind: str
    transform: str


@dataclass
class _Image:
    data: bytes
    fmt: str
    width: int
    height: int
    mode: str
    phash: int


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(8, round(size[0] * scale)), max(8, round(size[1] * scale))


def _mixed_shard(shards: int) -> int:
    # Real set: 186 shards, shard 93 mixed.
    return shards // 2


def _pick(rng: np.random.Generator, items: Sequence[Any], weights: Sequence[float]) -> Any:
    p = np.asarray(weights, dtype=np.float64)
    return items[int(rng.choice(len(items), p=p / p.sum()))]


def _plan_rows(shards: int, rows_per_shard: int, scale: float, rng: np.random.Generator) -> list[_Row]:
    mixed = _mixed_shard(shards)
    n_latdiff_only = round(_LATDIFF_ONLY_SHARE * mixed)
    if mixed >= 2:
        n_latdiff_only = min(n_latdiff_only, mixed - 1)  # keep at least one mixed-architecture shard
    # the mixed shard starts with a few GAN rows (real: 160 of 2,992), but keeps at least one real row
    n_gan_mixed = max(1, min(round(rows_per_shard * 160 / 2992), rows_per_shard - 1))
    out: list[_Row] = []
    for s in range(shards):
        for r in range(rows_per_shard):
            if s < mixed or (s == mixed and r < n_gan_mixed):
                if s == mixed:
                    arch = "GAN"
                elif s < n_latdiff_only:
                    arch = "LatDiff"
                else:
                    arch = _pick(rng, list(_MIXED_ARCH_WEIGHTS), list(_MIXED_ARCH_WEIGHTS.values()))
                out.append(_generated_row(s, r, len(out), arch, scale, rng))
            else:
                out.append(_real_row(s, r, len(out), scale, rng))
    _cover_generators(out, rng)
    return out


def _generated_row(
    shard: int, row: int, gidx: int, arch: str, scale: float, rng: np.random.Generator
) -> _Row:
    gens = [g for g in _GENERATORS if g.architecture == arch]
    gen = _pick(rng, gens, [g.weight for g in gens])
    width, height = _scaled(_pick(rng, [s for s, _ in _GEN_SIZES], [w for _, w in _GEN_SIZES]), scale)
    return _Row(
        shard=shard,
        row=row,
        gidx=gidx,
        label=GENERATED,
        architecture=arch,
        model_name=gen.model_name,
        real_source=_PROMPT_SOURCE,
        subset=_MANUAL if rng.random() < _MANUAL_SHARE else _SYSTEMATIC,
        prompt=_prompt(rng),
        nsfw=bool(rng.random() < _NSFW_SHARE),
        fmt="JPEG" if rng.random() < _GEN_JPEG_SHARE else "PNG",
        width=width,
        height=height,
        mode="RGB",
        quality=int(rng.integers(90, 96)),
    )


def _real_row(shard: int, row: int, gidx: int, scale: float, rng: np.random.Generator) -> _Row:
    src = _pick(rng, _REAL_SOURCES, [x.weight for x in _REAL_SOURCES])
    width, height = _scaled(src.sizes[int(rng.integers(len(src.sizes)))], scale)
    fmt = "PNG" if rng.random() < src.png_share else "JPEG"
    return _Row(
        shard=shard,
        row=row,
        gidx=gidx,
        label=REAL,
        architecture="Real",
        model_name=src.name,  # the real set names a real row by its source dataset
        real_source=src.name,
        subset=_REAL_SUBSET,
        prompt="",
        nsfw=bool(rng.random() < _NSFW_SHARE),
        fmt=fmt,
        width=width,
        height=height,
        mode="L" if fmt == "JPEG" and rng.random() < src.gray_share else "RGB",
        quality=int(rng.integers(85, 96)),
    )


def _cover_generators(rows: list[_Row], rng: np.random.Generator) -> None:
    """Make every generator of an architecture present in the set appear at least once (rare ones too)."""
    for gen in _GENERATORS:
        pool = [r for r in rows if r.label == GENERATED and r.architecture == gen.architecture]
        if not pool or any(r.model_name == gen.model_name for r in pool):
            continue
        counts: dict[str, int] = {}
        for r in pool:
            counts[r.model_name] = counts.get(r.model_name, 0) + 1
        donors = [r for r in pool if counts[r.model_name] > 1]
        if donors:
            donors[int(rng.integers(len(donors)))].model_name = gen.model_name


# (kind, transform, placement): placement says where the copy may go relative to the original.
_DUP_KINDS: tuple[tuple[str, str, str], ...] = (
    ("exact", "copy", "same_shard"),
    ("exact", "copy", "cross_shard"),
    ("exact", "copy", "cross_label"),
    ("near", "jpeg", "any"),
    ("near", "resize", "any"),
    ("near", "crop", "any"),
    ("near", "brightness", "any"),
)


def _plan_pairs(rows: list[_Row], rng: np.random.Generator) -> list[_Pair]:
    # At least 3 pairs per kind, but copies and originals never take more than half the rows
    # (so sets below 84 rows get fewer).
    per_kind = min(max(3, round(_DUP_SHARE * len(rows))), len(rows) // (4 * len(_DUP_KINDS)))
    used: set[int] = set()
    pairs: list[_Pair] = []
    n_near = 0
    for kind, transform, placement in _DUP_KINDS:
        for _ in range(per_kind):
            if placement == "any":
                # about one near pair in four crosses labels; the rest keep their original's label
                cross = n_near % 4 == 3
                n_near += 1
                rule = "cross_label" if cross else "same_label"
            else:
                rule = placement
            pair = _draw_pair(rows, rule, used, rng)
            if pair is None:
                continue
            a, b = pair
            used.update(pair)
            pairs.append(_Pair(a, b, kind, transform))
    return pairs


def _draw_pair(
    rows: list[_Row], rule: str, used: set[int], rng: np.random.Generator
) -> tuple[int, int] | None:
    free = [r.gidx for r in rows if r.gidx not in used]
    for _ in range(40):
        if len(free) < 2:
            return None
        x = rows[free[int(rng.integers(len(free)))]]

        def fits(y: _Row, x: _Row = x) -> bool:
            if y.gidx == x.gidx:
                return False
            if rule == "cross_label":
                return y.label != x.label
            # same label and architecture, so a copy that takes its original's provenance never breaks
            # its shard's architecture rule
            if y.architecture != x.architecture:
                return False
            if rule == "same_shard":
                return y.shard == x.shard
            if rule == "cross_shard":
                return y.shard != x.shard
            return True

        cands = [g for g in free if fits(rows[g])]
        if cands:
            y = cands[int(rng.integers(len(cands)))]
            return min(x.gidx, y), max(x.gidx, y)
    return None


def _render_original(row: _Row, seed: int, attempt: int) -> _Image:
    rng = np.random.default_rng([seed, 1, row.gidx, attempt])
    image = Image.fromarray(_texture(rng, row.width, row.height))
    if row.mode == "L":
        image = image.convert("L")
    data = _encode(image, row.fmt, row.quality)
    # A JPEG's hash is taken from what a reader decodes, not from the pixels before encoding.
    hashed = image if row.fmt == "PNG" else _decode(data)
    return _Image(data, row.fmt, row.width, row.height, row.mode, _phash(hashed))


def _near_copy(source: _Image, transform: str, rng: np.random.Generator, others: np.ndarray) -> _Image:
    """A transformed copy close to its source and far from ``others`` (the pHashes of every other image).

    Parameters are drawn from the documented ranges; later attempts move towards the mild end.
    """
    original = _decode(source.data)
    best: tuple[int, _Image] | None = None
    for attempt in range(8):
        mild = attempt / 7
        image = original
        fmt, quality = source.fmt, 92
        w, h = original.size
        if transform == "jpeg":
            fmt, quality = "JPEG", int(rng.integers(70, 91))
        elif transform == "resize":
            f = rng.uniform(0.5 + 0.4 * mild, 0.9)
            image = original.resize((max(8, round(w * f)), max(8, round(h * f))), Image.Resampling.BICUBIC)
        elif transform == "crop":
            fl, ft, fr, fb = rng.uniform(0.01 * (1 - mild), 0.08 - 0.07 * mild, 4)
            image = original.crop((round(w * fl), round(h * ft), w - round(w * fr), h - round(h * fb)))
        elif transform == "brightness":
            f = rng.uniform(0.10, 0.20 - 0.10 * mild) * (1 if rng.random() < 0.5 else -1)
            arr = np.asarray(original, dtype=np.float32) * np.float32(1 + f)
            image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), original.mode)
        else:  # pragma: no cover - the kinds are fixed in _DUP_KINDS
            raise ValueError(transform)
        data = _encode(image, fmt, quality)
        out = _Image(
            data, fmt, image.width, image.height, image.mode, _phash(image if fmt == "PNG" else _decode(data))
        )
        near = _bits(out.phash, source.phash)
        far = _min_bits(others, out.phash)
        if near <= _NEAR_MAX_BITS and far >= _UNRELATED_MIN_BITS:
            return out
        if far >= _UNRELATED_MIN_BITS and (best is None or near < best[0]):
            best = (near, out)
    # Not seen in practice: fall back to the closest copy that stays clear of the other images.
    if best is None:
        raise RuntimeError(f"no {transform} copy keeps clear of the other images")  # pragma: no cover
    return best[1]


def _render_all(
    rows: list[_Row], originals: list[int], seed: int, reporter: Reporter, workers: int
) -> dict[int, _Image]:
    task = reporter.task("Rendering images", total=len(originals), unit="images")
    images: dict[int, _Image] = {}
    accepted = np.zeros(0, dtype=np.uint64)
    # Rendering runs in threads (numpy, zlib and PIL resizing release the GIL); acceptance is sequential,
    # in row order, and each image has its own seeded stream, so the result does not depend on scheduling.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        first = pool.map(lambda g: _render_original(rows[g], seed, 0), originals)
        for g, img in zip(originals, first, strict=True):
            attempt = 0
            while _min_bits(accepted, img.phash) < _MIN_DISTINCT_BITS:
                attempt += 1
                img = _render_original(rows[g], seed, attempt)
            accepted = np.append(accepted, np.uint64(img.phash))
            images[g] = img
            task.advance()
    task.close()
    return images


def _apply_pair(rows: list[_Row], pair: _Pair) -> None:
    """Give the copy row the metadata it should carry; image fields are set from the bytes later."""
    a, b = rows[pair.a], rows[pair.b]
    if a.label == b.label:
        # A duplicate is the same picture with the same provenance.
        for name in ("architecture", "model_name", "real_source", "subset", "prompt", "nsfw"):
            setattr(b, name, getattr(a, name))
    elif b.label == REAL:
        # A generated image that leaked into a scraped real source.
        b.model_name = b.real_source = "LAION"
        b.subset = _REAL_SUBSET


def _resolution(width: int, height: int, resolution_type: str) -> list[int] | str:
    """``[width, height]`` as the real shards write it (a list) or as text (``resolution_type="string"``)."""
    return [width, height] if resolution_type == "list" else f"[{width}, {height}]"


def _shard_table(rows: Sequence[_Row], images: dict[int, _Image], resolution_type: str) -> pa.Table:
    cols: dict[str, list[Any]] = {n: [] for n in SOURCE_SCHEMA.names}
    for r in rows:
        img = images[r.gidx]
        cols["image_name"].append(f"{r.gidx:08d}.{'png' if img.fmt == 'PNG' else 'jpg'}")
        cols["format"].append(img.fmt)
        cols["resolution"].append(_resolution(img.width, img.height, resolution_type))
        cols["mode"].append(img.mode)
        cols["image_data"].append(img.data)
        cols["model_name"].append(r.model_name)
        cols["nsfw_flag"].append(r.nsfw)
        cols["prompt"].append(r.prompt)
        cols["real_source"].append(r.real_source)
        cols["subset"].append(r.subset)
        cols["split"].append("train")
        cols["label"].append(r.label)
        cols["architecture"].append(r.architecture)
    return pa.table(cols, schema=source_schema(resolution_type))


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}", "pass a non-negative --seed")


def _check_resolution_type(resolution_type: str) -> None:
    if resolution_type not in RESOLUTION_TYPES:
        raise UsageError(
            f"resolution type {resolution_type!r} is not known", "use list (as the real shards) or string"
        )


def make_dataset(
    root: Path,
    *,
    shards: int = 6,
    rows_per_shard: int = 60,
    seed: int = 0,
    scale: float = 1.0,
    duplicates: bool = True,
    resolution_type: str = "list",
    reporter: Reporter | None = None,
) -> SynthInfo:
    """Write a small, realistic CF-shaped dataset under ``root``.

    Layout (as the real set): shards ``0 .. shards//2 - 1`` hold only generated images (the first ~71%
    of them LatDiff only, the others a LatDiff/GAN/PixDiff/Other mix); shard ``shards//2`` starts with
    a few GAN rows (~5%) followed by real rows; later shards are real only. Generated images are mostly
    PNG 512x512; real ones follow their source (FFHQ PNG 1024x1024, COCO/ImageNet JPEGs, ...). All
    pixel sizes are multiplied by ``scale`` (min 8 px); ``resolution`` always matches the bytes.

    Distinct images are at least 18 bits apart in 64-bit pHash. With ``duplicates`` a share of rows
    (~2.5% per kind; at least 3 pairs per kind from 84 rows on, as the layout allows) are copies of an
    earlier row:

    - ``exact``/``copy``: identical bytes, in the same shard, in another shard (same label) and across
      labels (the same bytes as a real and a generated row);
    - ``near``: ``jpeg`` re-encode (q 70-90), ``resize`` (0.5-0.9x), ``crop`` (<= 8% per side),
      ``brightness`` (+-10-20%), each within 8 bits pHash of the original and at least 14 bits from
      every other image; one in four crosses labels.

    So pHash distance <= 12 finds exactly the injected pairs. Each row is in at most one pair.

    Same-label copies carry their original's provenance (model, source, prompt); a cross-label copy
    keeps its row's label (a generated image in a real row is marked LAION). Near copies are resized or
    cropped, so their ``resolution`` differs from their source's (e.g. an FFHQ near copy is not 1024^2).
    ``ground_truth/duplicates.parquet`` has one row per pair: ``shard_a, row_a`` the original,
    ``shard_b, row_b`` the copy (always later in shard/row order), ``kind``, ``transform``,
    ``cross_label``, ``cross_shard``. Shard paths are relative to ``root`` (``data/HFCF_small_0.parquet``),
    rows 0-based.

    Also writes ``data/metadata/generators.csv`` (two generators deliberately missing) and ``README.md``.
    Shards or ground truth left by an earlier run that this one does not rewrite are removed.
    ``resolution_type``: ``list`` (the real shards' ``[width, height]`` list) or ``string``.
    """
    reporter = reporter or NullReporter()
    _check_seed(seed)
    _check_resolution_type(resolution_type)
    if shards < 1 or rows_per_shard < 1:
        raise UsageError(
            "shards and rows per shard must be >= 1", "pass --shards N and --rows-per-shard N >= 1"
        )
    if not 0.01 <= scale <= 4.0:
        raise UsageError(
            f"scale must be within 0.01..4, got {scale}", "use e.g. --scale 0.25 for quick tests"
        )
    root = Path(root)
    rng = np.random.default_rng([seed, 0])
    rows = _plan_rows(shards, rows_per_shard, scale, rng)
    pairs = _plan_pairs(rows, rng) if duplicates else []
    for pair in pairs:
        _apply_pair(rows, pair)
    copies = {p.b: p for p in pairs}
    originals = [r.gidx for r in rows if r.gidx not in copies]
    images = _render_all(rows, originals, seed, reporter, workers=min(4, os.cpu_count() or 1))
    known = {g: img.phash for g, img in images.items()}
    for pair in sorted(pairs, key=lambda p: p.b):
        source = images[pair.a]
        if pair.kind == "exact":
            images[pair.b] = source
        else:
            others = np.array([h for g, h in known.items() if g != pair.a], dtype=np.uint64)
            pair_rng = np.random.default_rng([seed, 2, pair.b])
            images[pair.b] = _near_copy(source, pair.transform, pair_rng, others)
        known[pair.b] = images[pair.b].phash

    paths = _shard_paths(root, shards)
    _clear_stale(root, paths, keep_ground_truth=bool(pairs))
    task = reporter.task("Writing shards", total=shards, unit="shards")
    n_bytes = 0
    for s, path in enumerate(paths):
        part = rows[s * rows_per_shard : (s + 1) * rows_per_shard]
        _write_table(path, _shard_table(part, images, resolution_type))
        n_bytes += path.stat().st_size
        task.advance()
    task.close()

    gt_path: Path | None = None
    if pairs:
        gt_path = root / GROUND_TRUTH_PATH
        pairs = sorted(pairs, key=lambda p: (p.a, p.b))
        ra, rb = [rows[p.a] for p in pairs], [rows[p.b] for p in pairs]
        gt = pa.table(
            {
                "shard_a": [_rel(root, paths[r.shard]) for r in ra],
                "row_a": [r.row for r in ra],
                "shard_b": [_rel(root, paths[r.shard]) for r in rb],
                "row_b": [r.row for r in rb],
                "kind": [p.kind for p in pairs],
                "transform": [p.transform for p in pairs],
                "cross_label": [x.label != y.label for x, y in zip(ra, rb, strict=True)],
                "cross_shard": [x.shard != y.shard for x, y in zip(ra, rb, strict=True)],
            },
            schema=GROUND_TRUTH_SCHEMA,
        )
        _write_table(gt_path, gt)
    _write_licences(root, [(g.model_name, g.license) for g in _GENERATORS if g.license is not None])
    n_real = sum(r.label == REAL for r in rows)
    _write_card(
        root,
        "CommunityForensics-Small — synthetic demo set",
        [
            f"{shards} shards x {rows_per_shard} rows = {len(rows)} images "
            f"({len(rows) - n_real} generated, {n_real} real); seed {seed}, scale {scale:g}.",
            f"Injected duplicate pairs: {len(pairs)} (ground truth in `ground_truth/duplicates.parquet`).",
        ],
    )
    return SynthInfo(root, tuple(paths), len(rows), n_real, len(rows) - n_real, gt_path, len(pairs), n_bytes)


# --------------------------------------------------------------------------------------------------------
# make_scale_replica

_REAL_SHARDS = 186
_REAL_MIXED_SHARD = 93
_REAL_GAN_IN_MIXED = 160
_REPLICA_POOL_PER_KIND = 128
_REPLICA_LATDIFF_NAMES = 1650

_REPLICA_GEN_SIZES: dict[str, tuple[tuple[tuple[int, int], float], ...]] = {
    "LatDiff": (
        ((512, 512), 0.60),
        ((768, 768), 0.12),
        ((1024, 1024), 0.12),
        ((512, 768), 0.04),
        ((768, 512), 0.04),
        ((640, 640), 0.03),
        ((1024, 576), 0.03),
        ((256, 256), 0.02),
    ),
    "GAN": (((256, 256), 0.4), ((512, 512), 0.3), ((1024, 1024), 0.2), ((128, 128), 0.1)),
    "PixDiff": (((256, 256), 0.5), ((1024, 1024), 0.3), ((64, 64), 0.2)),
    "Other": (((64, 64), 0.5), ((256, 256), 0.3), ((512, 512), 0.2)),
}

_OWNERS = (
    "nitrosocke", "hakurei", "wavymulder", "darkstorm2150", "Linaqruf", "gsdf", "andite", "digiplay",
    "stablediffusionapi", "emilianJR", "Yntec", "xyn-ai", "dallinmackay", "Envvi", "ItsJayQz", "johnslegers",
    "lambdalabs", "ogkalu", "plasmo", "22h", "Fictiverse", "nousr", "Norod78", "sd-dreambooth-library",
    "sd-concepts-library", "dreamlike-art", "prompthero", "SG161222", "Lykon", "segmind", "playgroundai",
    "proximasanfinetuning", "Joeythemonster", "DGSpitzer", "Guizmus", "eimiss", "naclbit", "coreco",
    "ShadoWxShinigamI", "alvdansen",
)  # fmt: skip
_STEMS = (
    "anything", "realistic", "dream", "photo", "anime", "pastel", "cyber", "fantasy", "portrait", "landscape",
    "pixel", "comic", "ink", "oil", "retro", "neon", "cinematic", "vintage", "mecha", "chibi", "arcane",
    "ghibli", "disney", "elden", "spider", "van-gogh", "redshift", "analog", "future", "mo-di",
)  # fmt: skip
_SUFFIXES = ("-diffusion", "-v1", "-v2", "-v3", "-mix", "-xl", "-style", "-v1-5")
_GAN_DATASETS = (
    "ffhq", "afhqcat", "afhqdog", "afhqwild", "metfaces", "lsun-car", "lsun-cat", "lsun-church", "lsun-horse",
    "lsun-bedroom", "celebahq", "brecahad", "cifar10", "imagenet",
)  # fmt: skip
_GAN_FAMILIES = ("StyleGAN2", "StyleGAN3-t", "StyleGAN3-r", "ProGAN", "StyleGAN-XL")
_PIXDIFF_NAMES = tuple(
    ["DeepFloyd/IF-I-XL-v1.0", "DeepFloyd/IF-I-L-v1.0", "DeepFloyd/IF-I-M-v1.0"]
    + [f"google/ddpm-{d}" for d in ("cifar10-32", "celebahq-256", "church-256", "bedroom-256", "cat-256")]
    + [f"google/ddpm-ema-{d}" for d in ("celebahq-256", "church-256", "bedroom-256", "cat-256")]
    + [f"openai/improved-diffusion-{d}" for d in ("imagenet64", "cifar10", "lsun-bedroom", "lsun-cat")]
    + [f"openai/guided-diffusion-{d}" for d in ("256x256", "512x512", "128x128", "64x64", "lsun-horse")]
)
_OTHER_NAMES = tuple(
    [
        f"openai/diffusers-cd_{d}"
        for d in ("imagenet64_l2", "imagenet64_lpips", "bedroom256_l2", "cat256_lpips")
    ]
    + [f"openai/diffusers-ct_{d}" for d in ("imagenet64", "bedroom256", "cat256")]
    + [
        "kakaobrain/karlo-v1-alpha",
        "openai/shap-e-img2img",
        "CompVis/ldm-celebahq-256",
        "Glide",
        "DALL-E-mini",
    ]
    + [f"VQGAN-{d}" for d in ("imagenet-f16-1024", "imagenet-f16-16384", "openimages-f8-8192", "ffhq-f16")]
)
_FINETUNE_LICENCES = (
    ("creativeml-openrail-m", 0.84),
    ("openrail++", 0.08),
    ("apache-2.0", 0.02),
    ("mit", 0.01),
    ("cc-by-nc-4.0", 0.02),
    (None, 0.03),  # unknown: not in generators.csv
)


@dataclass(frozen=True)
class _Vocab:
    """Lookup tables for the replica: every string column is a ``take`` from one of these."""

    names: pa.Array  # generators, then the real sources (real rows are named by their dataset)
    licences: tuple[tuple[str, str | None], ...]
    arch_models: dict[str, tuple[np.ndarray, np.ndarray]]  # arch -> (indices into names, probabilities)
    resolutions: pa.Array
    arch_res: dict[str, tuple[np.ndarray, np.ndarray]]
    source_res: tuple[np.ndarray, ...]
    source_png: np.ndarray
    source_gray: np.ndarray
    source_p: np.ndarray
    source_names: np.ndarray  # index into names of each real source
    sources: pa.Array  # the prompt source first (generated rows), then the real sources
    subsets: pa.Array  # Systematic, Manual, Real
    prompts: pa.Array  # "" first (real rows)
    archs: pa.Array
    pool: pa.Array
    resolution_type: str  # tiny images: PNG/RGB, JPEG/RGB, JPEG/L blocks of _REPLICA_POOL_PER_KIND


def _zipf(n: int) -> np.ndarray:
    w = 1.0 / (np.arange(n) + 5.0) ** 1.1
    return w / w.sum()


def _replica_names() -> dict[str, list[tuple[str, str | None]]]:
    # Seed-independent, so the licence table of a replica is the same for every seed.
    rng = np.random.default_rng(20240601)
    out: dict[str, list[tuple[str, str | None]]] = {
        a: [(g.model_name, g.license) for g in _GENERATORS if g.architecture == a] for a in _ARCHITECTURES
    }
    seen = {n for names in out.values() for n, _ in names}
    combos = [f"{o}/{s}{x}" for o in _OWNERS for s in _STEMS for x in _SUFFIXES]
    lic_names = [n for n, _ in _FINETUNE_LICENCES]
    lic_p = np.array([p for _, p in _FINETUNE_LICENCES])
    for i in rng.permutation(len(combos)):
        if len(out["LatDiff"]) >= _REPLICA_LATDIFF_NAMES:
            break
        name = combos[int(i)]
        if name not in seen:
            seen.add(name)
            out["LatDiff"].append((name, lic_names[int(rng.choice(len(lic_names), p=lic_p))]))
    gan = [f"{f}-{d}" for f in _GAN_FAMILIES for d in _GAN_DATASETS] + [
        f"BigGAN-{v}{r}" for v in ("", "deep-") for r in (128, 256, 512)
    ]
    out["GAN"] += [(n, "cc-by-nc-4.0" if n.startswith(("StyleGAN", "ProGAN")) else "mit") for n in gan]
    out["PixDiff"] += [(n, "apache-2.0") for n in _PIXDIFF_NAMES if n not in seen]
    out["Other"] += [(n, "mit") for n in _OTHER_NAMES if n not in seen]
    return out


def _tiny_pool(seed: int) -> list[bytes]:
    out: list[bytes] = []
    for fmt, mode in (("PNG", "RGB"), ("JPEG", "RGB"), ("JPEG", "L")):
        for i in range(_REPLICA_POOL_PER_KIND):
            rng = np.random.default_rng([seed, 3, len(out), i])
            image = Image.fromarray(_texture(rng, 16, 16))
            out.append(_encode(image.convert(mode), fmt, 90))
    return out


def _build_vocab(seed: int, resolution_type: str) -> _Vocab:
    by_arch = _replica_names()
    names: list[str] = []
    licences: list[tuple[str, str | None]] = []
    arch_models: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for arch in _ARCHITECTURES:
        entries = by_arch[arch]
        start = len(names)
        names += [n for n, _ in entries]
        licences += entries
        arch_models[arch] = (np.arange(start, len(names)), _zipf(len(entries)))
    source_names = np.arange(len(names), len(names) + len(_REAL_SOURCES))
    names += [s.name for s in _REAL_SOURCES]
    sizes: list[tuple[int, int]] = []

    def res_index(size: tuple[int, int]) -> int:
        if size not in sizes:
            sizes.append(size)
        return sizes.index(size)

    arch_res = {
        a: (
            np.array([res_index(s) for s, _ in sizes]),
            np.array([p for _, p in sizes]) / sum(p for _, p in sizes),
        )
        for a, sizes in _REPLICA_GEN_SIZES.items()
    }
    source_res = tuple(np.array([res_index(s) for s in src.sizes]) for src in _REAL_SOURCES)
    prompts = [""] + [f"{a} {b}, {c}" for a in _SUBJECTS for b in _SETTINGS for c in _STYLES]
    weights = np.array([s.weight for s in _REAL_SOURCES])
    return _Vocab(
        names=pa.array(names, pa.string()),
        licences=tuple(licences),
        arch_models=arch_models,
        resolutions=pa.array(
            [_resolution(w, h, resolution_type) for w, h in sizes],
            RESOLUTION_LIST if resolution_type == "list" else pa.string(),
        ),
        arch_res=arch_res,
        source_res=source_res,
        source_png=np.array([s.png_share for s in _REAL_SOURCES]),
        source_gray=np.array([s.gray_share for s in _REAL_SOURCES]),
        source_p=weights / weights.sum(),
        source_names=source_names,
        sources=pa.array([_PROMPT_SOURCE] + [s.name for s in _REAL_SOURCES], pa.string()),
        subsets=pa.array([_SYSTEMATIC, _MANUAL, _REAL_SUBSET], pa.string()),
        prompts=pa.array(prompts, pa.string()),
        archs=pa.array([*_ARCHITECTURES, "Real"], pa.string()),
        pool=pa.array(_tiny_pool(seed), pa.binary()),
        resolution_type=resolution_type,
    )


def _real_layout(i: int) -> tuple[int, int, str]:
    """(rows, generated rows, architecture rule) of real shard ``i`` (cf-small.md)."""
    n = 2993 if i < 29 else 2992
    if i < 66:
        return n, n, "LatDiff"
    if i < _REAL_MIXED_SHARD:
        return n, n, "mixed"
    if i == _REAL_MIXED_SHARD:
        return n, _REAL_GAN_IN_MIXED, "GAN"
    return n, 0, "Real"


def replica_source_shards(shards: int) -> list[int]:
    """Which real shard each of ``shards`` replica shards mirrors (identity for 186).

    ``shards//2`` generated shards spread evenly over real shards 0-92 (first and last included), then
    the mixed shard 93, then the remaining shards spread evenly over the real-only shards 94-185.
    """
    if not 1 <= shards <= _REAL_SHARDS:
        raise UsageError(f"the replica has 1..{_REAL_SHARDS} shards, got {shards}", "pass --shards 1..186")

    def spread(lo: int, hi: int, k: int) -> list[int]:
        return [lo + i * (hi - lo) // (k - 1) for i in range(k)] if k > 1 else [lo] * k

    mixed = _mixed_shard(shards)
    gen = spread(0, _REAL_MIXED_SHARD - 1, mixed)
    real = spread(_REAL_MIXED_SHARD + 1, _REAL_SHARDS - 1, shards - mixed - 1)
    return [*gen, _REAL_MIXED_SHARD, *real]


def _sample(rng: np.random.Generator, choices: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    idx, p = choices
    return idx[rng.choice(len(idx), size=n, p=p)]


def _replica_table(
    vocab: _Vocab, rng: np.random.Generator, start: int, n: int, n_gen: int, rule: str
) -> pa.Table:
    n_real = n - n_gen
    arch_ids = {a: i for i, a in enumerate(_ARCHITECTURES)}
    # generated rows first: the real mixed shard starts with the last generated images
    if rule == "mixed":
        arch = rng.choice(len(_ARCHITECTURES), size=n_gen, p=[_MIXED_ARCH_WEIGHTS[a] for a in _ARCHITECTURES])
    else:
        arch = np.full(n_gen, arch_ids.get(rule, 0))
    model = np.zeros(n, np.int64)
    res = np.zeros(n, np.int64)
    # the real set: LatDiff-only shards are the Systematic subset, the mixed ones (and shard 93) Manual
    subset = np.full(n, 0 if rule == "LatDiff" else 1, np.int64)
    for a, i in arch_ids.items():
        sel = np.flatnonzero(arch == i)
        model[sel] = _sample(rng, vocab.arch_models[a], sel.size)
        res[sel] = _sample(rng, vocab.arch_res[a], sel.size)
    src = rng.choice(len(_REAL_SOURCES), size=n_real, p=vocab.source_p)
    model[n_gen:] = vocab.source_names[src]
    subset[n_gen:] = 2
    for i, choices in enumerate(vocab.source_res):
        sel = np.flatnonzero(src == i)
        res[n_gen + sel] = choices[rng.integers(len(choices), size=sel.size)]
    is_jpeg = np.concatenate(
        [rng.random(n_gen) < _GEN_JPEG_SHARE, rng.random(n_real) >= vocab.source_png[src]]
    )
    is_gray = np.concatenate(
        [np.zeros(n_gen, bool), is_jpeg[n_gen:] & (rng.random(n_real) < vocab.source_gray[src])]
    )
    # pool blocks: 0 PNG/RGB, 1 JPEG/RGB, 2 JPEG/L
    block = is_jpeg.astype(np.int64) + is_gray
    pool_idx = block * _REPLICA_POOL_PER_KIND + rng.integers(_REPLICA_POOL_PER_KIND, size=n)
    prompt = np.concatenate([rng.integers(1, len(vocab.prompts), size=n_gen), np.zeros(n_real, np.int64)])
    label = np.concatenate([np.full(n_gen, GENERATED), np.full(n_real, REAL)]).astype(np.int64)
    arch_all = np.concatenate([arch, np.full(n_real, len(_ARCHITECTURES))])
    numbers = pc.utf8_lpad(pc.cast(pa.array(np.arange(start, start + n)), pa.string()), 8, "0")
    ext = pa.array(["png", "jpg"]).take(pa.array(is_jpeg.astype(np.int8)))
    columns = {
        "image_name": pc.binary_join_element_wise(numbers, ext, "."),
        "format": pa.array(["PNG", "JPEG"]).take(pa.array(is_jpeg.astype(np.int8))),
        "resolution": vocab.resolutions.take(pa.array(res)),
        "mode": pa.array(["RGB", "L"]).take(pa.array(is_gray.astype(np.int8))),
        IMAGE_COLUMN: vocab.pool.take(pa.array(pool_idx)),
        "model_name": vocab.names.take(pa.array(model)),
        "nsfw_flag": pa.array(rng.random(n) < _NSFW_SHARE),
        "prompt": vocab.prompts.take(pa.array(prompt)),
        "real_source": vocab.sources.take(pa.array(np.concatenate([np.zeros(n_gen, np.int64), 1 + src]))),
        "subset": vocab.subsets.take(pa.array(subset)),
        "split": pa.array(np.full(n, "train"), pa.string()),
        "label": pa.array(label, pa.int64()),
        "architecture": vocab.archs.take(pa.array(arch_all)),
    }
    return pa.table(columns, schema=source_schema(vocab.resolution_type))


def make_scale_replica(
    root: Path,
    *,
    seed: int = 0,
    shards: int = 186,
    resolution_type: str = "list",
    reporter: Reporter | None = None,
) -> SynthInfo:
    """Write the real set's shard layout with tiny images: for scale tests of indexing and planning.

    With ``shards=186`` shard ``i`` has exactly the real row counts and composition (cf-small.md):
    2,993 rows in shards 0-28 and 2,992 after (556,541 rows); shards 0-65 LatDiff only, 66-92 a
    LatDiff/GAN/PixDiff/Other mix, shard 93 160 GAN rows then 2,832 real rows, 94-185 real only
    (278,445 generated, 278,096 real).

    With fewer shards the layout is sampled, not cut: ``shards//2`` generated shards mirror real shards
    spread evenly over 0-92 (so both the LatDiff-only and the mixed range appear), then the mixed shard
    93, then real shards spread over 94-185 (see ``replica_source_shards``; 3 shards -> 0, 93, 94).
    Each written shard copies the row count and composition of the real shard it mirrors; files are
    still named 0..shards-1 and ``image_name`` counts rows across the written set.

    Metadata is realistic (~1,760 generators with a long-tailed frequency, per-architecture resolutions,
    real sources with their sizes and formats) but ``image_data`` cycles through a pool of 384 tiny 16x16
    images whose format and mode match the row; ``resolution`` does NOT match these bytes. Also writes
    ``generators.csv`` (about 3% of generators missing) and ``README.md``; no duplicate ground truth.
    Generated rows of LatDiff-only shards are ``Systematic``, those of the other shards ``Manual``.
    """
    reporter = reporter or NullReporter()
    _check_seed(seed)
    _check_resolution_type(resolution_type)
    root = Path(root)
    sources = replica_source_shards(shards)
    vocab = _build_vocab(seed, resolution_type)
    paths = _shard_paths(root, shards)
    _clear_stale(root, paths, keep_ground_truth=False)
    task = reporter.task("Writing replica shards", total=shards, unit="shards")
    start = n_real = n_gen_total = n_bytes = 0
    for i, (src, path) in enumerate(zip(sources, paths, strict=True)):
        n, n_gen, rule = _real_layout(src)
        table = _replica_table(vocab, np.random.default_rng([seed, 4, i]), start, n, n_gen, rule)
        _write_table(path, table)
        start += n
        n_gen_total += n_gen
        n_real += n - n_gen
        n_bytes += path.stat().st_size
        task.advance()
    task.close()
    _write_licences(root, [(n, lic) for n, lic in vocab.licences if lic is not None])
    _write_card(
        root,
        "CommunityForensics-Small — synthetic scale replica",
        [
            f"{shards} shards, {start:,} rows ({n_gen_total:,} generated, {n_real:,} real); seed {seed}.",
            "Row counts and composition follow the real shards; images are tiny 16x16 placeholders,",
            "so `resolution` describes the real distribution, not the bytes.",
        ],
    )
    return SynthInfo(root, tuple(paths), start, n_real, n_gen_total, None, 0, n_bytes)


# --------------------------------------------------------------------------------------------------------
# make_large_shard

_LARGE_POOL = 30
_LARGE_SIZES = ((592, 592), (640, 544), (544, 640), (576, 608))


def _noisy_png(seed: int, i: int) -> tuple[bytes, tuple[int, int]]:
    rng = np.random.default_rng([seed, 5, i])
    w, h = _LARGE_SIZES[i % len(_LARGE_SIZES)]
    base = _texture(rng, w, h).astype(np.int16)
    # strong noise: PNG cannot compress it, so the file stays ~ its raw size (~1 MB)
    noisy = base + rng.integers(-60, 61, size=base.shape, dtype=np.int16)
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    return _encode(image, "PNG", 0), (w, h)


def make_large_shard(
    root: Path,
    *,
    target_bytes: int = 1_100_000_000,
    seed: int = 0,
    resolution_type: str = "list",
    reporter: Reporter | None = None,
) -> Path:
    """Write ``data/HFCF_small_0.parquet`` of at least ``target_bytes`` as ONE row group.

    Rows cycle through 30 distinct noisy ~1 MB PNGs (so rows i and i+30 are exact duplicates) with
    varied metadata; ``resolution``/``format``/``mode`` match the bytes; the schema is the real one.
    Unlike the real shards, ``image_data`` is stored uncompressed, without dictionary and without
    statistics: with pyarrow's default dictionary the 30 repeated images would be stored once each (a small
    file, not a large one), and the column is a chunked array that repeats the pool zero-copy, so the writer
    needs ~the pool (~30 MB) in RAM, not the shard.
    """
    reporter = reporter or NullReporter()
    _check_seed(seed)
    _check_resolution_type(resolution_type)
    if target_bytes < 1:
        raise UsageError(f"target size must be positive, got {target_bytes}", "pass e.g. --large-bytes 1.1GB")
    root = Path(root)
    task = reporter.task("Encoding image pool", total=_LARGE_POOL, unit="images")
    pool: list[bytes] = []
    sizes: list[tuple[int, int]] = []
    for i in range(_LARGE_POOL):
        data, size = _noisy_png(seed, i)
        pool.append(data)
        sizes.append(size)
        task.advance()
    task.close()
    lengths = np.array([len(b) for b in pool], np.int64)
    cycle = int(lengths.sum())
    full, rest = divmod(target_bytes, cycle)
    extra = int(np.searchsorted(np.cumsum(lengths), rest, side="left")) + 1 if rest else 0
    n = full * _LARGE_POOL + min(extra, _LARGE_POOL)
    pool_arr = pa.array(pool, pa.binary())
    chunks = [pool_arr] * full + ([pool_arr.slice(0, extra)] if extra else [])
    image_col = pa.chunked_array(chunks, pa.binary())

    rng = np.random.default_rng([seed, 6])
    pool_idx = np.arange(n) % _LARGE_POOL
    label = rng.integers(0, 2, size=n)
    gens = [g for g in _GENERATORS if g.architecture == "LatDiff"]
    names = pa.array(["LAION"] + [g.model_name for g in gens])  # real rows: their source dataset
    model = np.where(label == GENERATED, 1 + rng.integers(len(gens), size=n), 0)
    prompts = pa.array([""] + [f"{a} {b}, {c}" for a in _SUBJECTS for b in _SETTINGS for c in _STYLES])
    prompt = np.where(label == GENERATED, rng.integers(1, len(prompts), size=n), 0)
    res_type = RESOLUTION_LIST if resolution_type == "list" else pa.string()
    res = pa.array([_resolution(w, h, resolution_type) for w, h in sizes], res_type).take(pa.array(pool_idx))
    is_real = label == REAL
    columns = {
        "image_name": pa.array([f"{i:08d}.png" for i in range(n)], pa.string()),
        "format": pa.array(np.full(n, "PNG"), pa.string()),
        "resolution": res,
        "mode": pa.array(np.full(n, "RGB"), pa.string()),
        IMAGE_COLUMN: image_col,
        "model_name": names.take(pa.array(model)),
        "nsfw_flag": pa.array(rng.random(n) < _NSFW_SHARE),
        "prompt": prompts.take(pa.array(prompt)),
        "real_source": pa.array(
            np.full(n, "LAION"), pa.string()
        ),  # real: the source; generated: the prompts'
        "subset": pa.array(np.where(is_real, _REAL_SUBSET, _SYSTEMATIC), pa.string()),
        "split": pa.array(np.full(n, "train"), pa.string()),
        "label": pa.array(label, pa.int64()),
        "architecture": pa.array(np.where(is_real, "Real", "LatDiff"), pa.string()),
    }
    schema = source_schema(resolution_type)
    table = pa.table(columns, schema=schema)
    path = root / "data" / shard_name(0)
    _clear_stale(root, [path], keep_ground_truth=False)
    others = [c for c in schema.names if c != IMAGE_COLUMN]
    reporter.info(f"Writing {path} ({n} rows, one row group)")
    _write_table(
        path,
        table,
        use_dictionary=others,
        write_statistics=others,
        compression={c: ("none" if c == IMAGE_COLUMN else "snappy") for c in schema.names},
    )
    return path
