"""The Browse sample and the thumbnails: one streaming pass over the rows the page shows.

The sample is seeded and stratified by who made the row (generator or real source): the strata are taken
round-robin, so every generator and real source shows up before any shows a second image. Thumbnails are
small JPEG files written next to the page (loaded lazily); the bytes come from ``cfx.stream``, the reader of
every command, a few rows at a time.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from cfx.manifest import Manifest
from cfx.progress import NullReporter, Reporter
from cfx.stream import ROW_COLUMN, iter_shard_batches

THUMB_SIDE = 160
THUMB_QUALITY = 80
MAX_PIXELS = 100_000_000  # larger images get no thumbnail (decompression bombs)


def stratified_sample(df: pl.DataFrame, n: int, seed: int, stratum: str = "_source") -> pl.DataFrame:
    """At most ``n`` rows: a seeded random order within each stratum, strata taken round-robin."""
    if n <= 0 or df.height == 0:
        return df.head(0)
    key = np.random.default_rng(seed).random(df.height)
    ranked = df.with_columns(pl.Series("_key", key)).with_columns(
        pl.col("_key").rank("ordinal").over(stratum).alias("_turn")
    )
    return ranked.sort(["_turn", "_key"]).head(n).drop("_key", "_turn")


def thumbnail(data: bytes | None, side: int = THUMB_SIDE) -> bytes | None:
    """A small JPEG of an encoded image, or None when it cannot be decoded."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                return None
            im.draft("RGB", (side, side))  # JPEG: decode at 1/2..1/8 scale directly
            im.thumbnail((side, side))
            rgb = im.convert("RGB")
    except Exception:  # any undecodable image: the page says so instead of a picture
        return None
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=THUMB_QUALITY)
    return buf.getvalue()


def write_thumbnails(
    manifest: Manifest,
    keys: Iterable[tuple[str, int]],
    folder: Path,
    prefix: str,
    reporter: Reporter | None = None,
) -> dict[tuple[str, int], str]:
    """Write a thumbnail of each (shard, row) into ``folder``; returns the file name (relative to the page's
    folder's ``thumbs/``) of each one that could be decoded. One pass, shard by shard, bounded memory."""
    reporter = reporter or NullReporter()
    wanted: dict[str, set[int]] = {}
    for shard, row in keys:
        wanted.setdefault(shard, set()).add(int(row))
    names: dict[tuple[str, int], str] = {}
    task = reporter.task("Thumbnails", total=sum(len(r) for r in wanted.values()), unit="images")
    for shard in sorted(wanted):
        rows = np.asarray(sorted(wanted[shard]), dtype=np.int64)
        for batch in iter_shard_batches(manifest, shard, rows, ("image_data",)):
            for row, data in zip(
                batch.column(ROW_COLUMN).to_pylist(), batch.column(0).to_pylist(), strict=True
            ):
                thumb = thumbnail(data)
                task.advance(1)
                if thumb is None:
                    continue
                name = f"{prefix}{len(names):05d}.jpg"
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(thumb)
                names[(shard, int(row))] = name
    task.close()
    return names
