"""The source shard schema (as on the Hub) and the manifest schema (one row per image, no bytes)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

# Source shards, in the order the real dataset has them (dataset-server schema).
SOURCE_SCHEMA = pa.schema(
    [
        ("image_name", pa.string()),
        ("format", pa.string()),
        ("resolution", pa.string()),
        ("mode", pa.string()),
        ("image_data", pa.binary()),
        ("model_name", pa.string()),
        ("nsfw_flag", pa.bool_()),
        ("prompt", pa.string()),
        ("real_source", pa.string()),
        ("subset", pa.string()),
        ("split", pa.string()),
        ("label", pa.int64()),
        ("architecture", pa.string()),
    ]
)
IMAGE_COLUMN = "image_data"
# Columns a shard must have to be indexed at all; the others are filled with nulls when absent.
REQUIRED_COLUMNS = ("image_data", "label")
METADATA_COLUMNS = tuple(n for n in SOURCE_SCHEMA.names if n != IMAGE_COLUMN)

REAL, GENERATED = 0, 1
LABEL_NAMES = {REAL: "real", GENERATED: "generated"}

# The manifest: pointer (shard, row) + every metadata column + parsed/derived columns.
# Later commands add columns (license, sha256, phash, pair_id, ...); they are kept as they come.
MANIFEST_SCHEMA: dict[str, pl.DataType] = {
    "shard": pl.String(),
    "row": pl.Int64(),
    "image_name": pl.String(),
    "format": pl.String(),
    "resolution": pl.String(),
    "mode": pl.String(),
    "model_name": pl.String(),
    "nsfw_flag": pl.Boolean(),
    "prompt": pl.String(),
    "real_source": pl.String(),
    "subset": pl.String(),
    "split": pl.String(),
    "label": pl.Int8(),
    "architecture": pl.String(),
    "width": pl.Int32(),
    "height": pl.Int32(),
    "num_bytes": pl.Int64(),
}
CORE_COLUMNS = tuple(MANIFEST_SCHEMA)

# Where a shard's row goes when written back out (subset): the source columns in source order.
SOURCE_COLUMN_ORDER = tuple(SOURCE_SCHEMA.names)
