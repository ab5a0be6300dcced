"""A shard laid out as the real ones are: one row group written by ``pq.write_table`` with its defaults
(dictionary + snappy, v1 pages), so the first 1,024 images land in ONE dictionary page (~1 MB each: a page of
~1 GB for 1,024 images). Used by tests/test_pages.py and bench/bench_pages.py.

The images are a few noisy PNGs (PNG cannot compress noise, nor can snappy) made byte-distinct per row by a
``tEXt`` chunk holding the row number, so the dictionary keeps one entry per row, as with real images.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

SHARD = "data/HFCF_small_0.parquet"


def noisy_png(seed: int, side: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def with_text(png: bytes, text: str) -> bytes:
    """The same image with a tEXt chunk after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    data = b"row\x00" + text.encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:33] + chunk + png[33:]


def write_big_page_shard(root: Path, n: int, side: int = 580, pool: int = 4, **write: object) -> Path:
    """``root``/data/HFCF_small_0.parquet with ``n`` distinct ~side²×3-byte PNGs in one row group."""
    base = [noisy_png(i, side) for i in range(pool)]
    images = [with_text(base[i % pool], str(i)) for i in range(n)]
    label = np.arange(n) % 2
    table = pa.table(
        {
            "image_name": [f"{i:08d}.png" for i in range(n)],
            "format": ["PNG"] * n,
            "resolution": pa.array([[side, side]] * n, pa.list_(pa.int64())),
            "mode": ["RGB"] * n,
            "image_data": pa.array(images, pa.binary()),
            "model_name": ["FFHQ" if lab == 0 else "stabilityai/stable-diffusion-2" for lab in label],
            "nsfw_flag": [False] * n,
            "prompt": ["a photo"] * n,
            "real_source": ["FFHQ" if lab == 0 else "LAION" for lab in label],
            "subset": ["Real" if lab == 0 else "Systematic" for lab in label],
            "split": ["train"] * n,
            "label": pa.array(label, pa.int64()),
            "architecture": ["Real" if lab == 0 else "LatDiff" for lab in label],
        }
    )
    del images
    path = Path(root) / SHARD
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=n, **write)  # type: ignore[arg-type]
    return path
