"""The source shard schema (as on the Hub) and the manifest schema (one row per image, no bytes)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from cfx.errors import BadShardError

# ``resolution`` as the real shards store it: a list<int64> (Parquet leaf ``element``) of two sizes. The other
# form, a string such as ``"[512, 512]"``, is read as well; every output keeps the form (and the order) its
# source has.
RESOLUTION_LIST = pa.list_(pa.int64())
RESOLUTION_TYPES = ("list", "string")

# Source shards, in the order the real dataset has them (footer probes of the real shards; cf-small.md).
SOURCE_SCHEMA = pa.schema(
    [
        ("image_name", pa.string()),
        ("format", pa.string()),
        ("resolution", RESOLUTION_LIST),
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


def source_schema(resolution_type: str = "list") -> pa.Schema:
    """SOURCE_SCHEMA with ``resolution`` as a ``list`` (the real shards) or as a ``string`` (the other form)."""
    if resolution_type not in RESOLUTION_TYPES:
        raise ValueError(f"resolution type {resolution_type!r}: use one of {', '.join(RESOLUTION_TYPES)}")
    if resolution_type == "list":
        return SOURCE_SCHEMA
    return SOURCE_SCHEMA.set(SOURCE_SCHEMA.get_field_index("resolution"), pa.field("resolution", pa.string()))


def is_list_type(t: pa.DataType) -> bool:
    """A list type of any kind (list, large list, fixed-size list)."""
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


# --- the one schema mapping layer: a shard's metadata columns -> the manifest's types ------------------
# Types with one obvious meaning are mapped (the list resolution to its text ``"[512, 512]"`` in the list's
# order, "True"/"0" NSFW strings); anything else is a BadShardError naming shard and column, which
# ``--skip-bad`` skips and counts. The manifest keeps ``resolution`` as text whichever form the source has
# (one type across sources; ``width``/``height`` are the parsed numbers); outputs written from source rows
# (cfx subset) keep the source's own type.
_METADATA_TYPES = {f.name: f.type for f in SOURCE_SCHEMA} | {"resolution": pa.string()}
_TRUE_WORDS = ("true", "1", "yes")
_FALSE_WORDS = ("false", "0", "no")


def check_column_names(names: list[str], shard: str) -> None:
    """A column that appears twice has no one meaning: refuse the shard, naming the column."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BadShardError(
            shard,
            f"column {', '.join(repr(n) for n in twice)} appears more than once",
            "cfx cannot tell which one holds the data; rewrite the shard with one column of each name",
        )


def conform_metadata(table: pa.Table, shard: str) -> pa.Table:
    """``table`` (a shard's metadata columns) with each column in the manifest's type (SOURCE_SCHEMA's, with
    ``resolution`` as text; label aside: ``cfx.index.normalize_labels`` maps it). Raises BadShardError for a
    type without one obvious meaning."""
    check_column_names(table.column_names, shard)
    for i, name in enumerate(table.column_names):
        if name == "label" or name not in _METADATA_TYPES:
            continue
        target = _METADATA_TYPES[name]
        column = table.column(i)
        if column.type != target:
            table = table.set_column(i, name, _conform(column, name, target, shard))
    return table


def _conform(column: pa.ChunkedArray, name: str, target: pa.DataType, shard: str) -> pa.ChunkedArray:
    t = column.type
    if pa.types.is_null(t):
        return column.cast(target)
    if pa.types.is_dictionary(t):
        return _conform(column.cast(t.value_type), name, target, shard)
    if target == pa.string() and (pa.types.is_large_string(t) or pa.types.is_string_view(t)):
        return column.cast(pa.string())
    if name == "resolution" and _is_int_list(t):
        return _resolution_from_list(column, shard)
    if target == pa.bool_() and (pa.types.is_integer(t) or _is_text(t)):
        return _bool_from_words(column, name, shard)
    raise BadShardError(
        shard,
        f"column {name!r} has type {t}, where cfx expects {target}",
        "this is not a type with one obvious meaning; convert the column, or add --skip-bad to go on without it",
    )


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_int_list(t: pa.DataType) -> bool:
    return is_list_type(t) and pa.types.is_integer(t.value_type)


def _resolution_from_list(column: pa.ChunkedArray, shard: str) -> pa.ChunkedArray:
    """``[512, 512]`` as a list -> the text ``"[512, 512]"`` (the list's order kept); other lengths are bad."""
    s = pl.Series("resolution", column.combine_chunks().cast(pa.large_list(pa.int64())))
    lengths = s.list.len()
    bad = (lengths != 2).fill_null(False)
    if bad.any():
        row = int(bad.arg_true()[0])
        raise BadShardError(
            shard,
            f"row {row}: resolution {s[row].to_list()} is not a [width, height] pair",
            "resolution lists must hold two sizes; fix the shard, or add --skip-bad",
        )
    text = pl.format("[{}, {}]", s.list.get(0), s.list.get(1))
    out = pl.select(pl.when(s.is_not_null()).then(text)).to_series()
    return pa.chunked_array([out.to_arrow().cast(pa.string())])


def _bool_from_words(column: pa.ChunkedArray, name: str, shard: str) -> pa.ChunkedArray:
    """0/1 and "true"/"false"/"1"/"0"/"yes"/"no" (any case, spaces around) -> bool; other values are bad."""
    s = pl.Series(name, column.combine_chunks()).cast(pl.String).str.strip_chars().str.to_lowercase()
    out = pl.select(
        pl.when(s.is_in(_TRUE_WORDS)).then(True).when(s.is_in(_FALSE_WORDS)).then(False).otherwise(None)
    ).to_series()
    bad = out.is_null() & s.is_not_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        raise BadShardError(
            shard,
            f"row {row}: {name} {column[row].as_py()!r} is not a yes/no value",
            f"{name} must be a boolean, 0/1 or true/false; fix the shard, or add --skip-bad",
        )
    return pa.chunked_array([out.to_arrow().cast(pa.bool_())])
