"""Hand-made shards for bad-input tests (real parquet files, written with pyarrow)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from cfx.schema import source_schema


def png(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def rows(n: int, label: Any = 1, start: int = 0) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + n):
        out.append(
            dict(
                image_name=f"{i:08d}.png",
                format="PNG",
                resolution=[32, 32],
                mode="RGB",
                image_data=png(i),
                model_name="stabilityai/stable-diffusion-2" if label in (1, True, "generated") else "COCO",
                nsfw_flag=False,
                prompt="a photo",
                real_source="LAION" if label in (1, True, "generated") else "COCO",
                subset="Systematic" if label in (1, True, "generated") else "Real",
                split="train",
                label=label,
                architecture="LatDiff" if label in (1, True, "generated") else "Real",
            )
        )
    return out


def _text_resolution(record: dict[str, Any]) -> dict[str, Any]:
    res = record.get("resolution")
    return {**record, "resolution": "[{}, {}]".format(*res)} if isinstance(res, list) else record


def write_shard(path: Path, records: list[dict[str, Any]], schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if schema is None:  # the real schema; the string form of resolution when a record uses it
        if any(isinstance(r.get("resolution"), str) for r in records):
            schema = source_schema("string")
            records = [_text_resolution(r) for r in records]
        else:
            schema = source_schema("list")
    table = pa.Table.from_pylist(records, schema=schema)
    pq.write_table(table, path, row_group_size=max(1, len(records)))
    return path
