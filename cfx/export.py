"""Export a selection to the layouts detector codebases read: CNNDetection folders, the CF trainer's folders,
Hugging Face ``imagefolder``, WebDataset tar shards. Image bytes are copied verbatim (sha256-identical), or
written through a ``cfx.transform.Pipeline`` (``--transform``, as ``cfx subset``) in the workers.

A pipeline of named steps: ``plan_export`` (rows in source order, split, category, safe names, file stems —
metadata and footers only) → ``write_export`` (a process pool, one source shard per task, each streaming its
rows a few at a time, so memory stays at a small batch per worker however large the single-row-group shards
are) → index files (``names.csv``, ``metadata.jsonl``, ``index.csv``) → one rename of ``DIR.tmp-<pid>-<rand>``
to ``DIR``. File extensions follow the bytes written (``cfx.formats.sniff_format``), never the ``format``
column; with a transform the metadata beside the images describes the new bytes (``source_*`` the old ones).
See docs/export.md for the layouts.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import queue
import re
import shutil
import tarfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa

from cfx.errors import EmptySelectionError, InputError, OutputError, UsageError
from cfx.formats import extension, sniff_format
from cfx.manifest import Manifest
from cfx.outputs import atomic_folder
from cfx.pool import process_pool, wait_first
from cfx.pool import results as in_order
from cfx.progress import NullReporter, Reporter, RowsAndBytes
from cfx.safenames import safe_names
from cfx.schema import GENERATED, IMAGE_COLUMN, REAL, is_list_type
from cfx.stream import iter_shard_batches, planned_readers
from cfx.subset import (
    ShardPlan,
    _check_space,
    check_output,
    plan_subset,
    skipped_message,
    transformed_rows,
)
from cfx.transform_stage import RECORD_COLUMNS, SizeOrder

if TYPE_CHECKING:  # PIL is imported only when an export transforms
    from cfx.engine import ShardEngine
    from cfx.transform import BadImageError, Pipeline, Transformed

FORMATS = ("cnndetection", "cf", "imagefolder", "webdataset")
CATEGORIES = ("generator", "architecture", "family")  # or any manifest column
DEFAULT_SPLIT = "train"
DEFAULT_SHARD_BYTES = 1000**3
SPLIT_COLUMN = "assigned_split"  # written by `cfx split`
PAIR_COLUMN = "pair_id"  # written by `cfx balance --pair`
NAMES_FILE = "names.csv"
UNKNOWN_EXT = "bin"
LABEL_NAMES = {REAL: "real", GENERATED: "fake"}
_LABEL_DIRS = {"cnndetection": {REAL: "0_real", GENERATED: "1_fake"}}
_PARTS = ".parts"  # webdataset: tar pieces written by the workers, renamed or merged at the end
_STARTED = ".started"  # export_job: one empty file per task that started (a second start is a retry)
_BATCH_ROWS = 8
_BATCH_BYTES = 8 << 20
_PROGRESS_EVERY = 16  # rows per progress message from a worker

# What a transform worker reports per written row: the transform stage's record columns
_FACT_COLUMNS = RECORD_COLUMNS


@dataclass
class ExportOptions:
    format: str
    category: str = "generator"
    split: str = DEFAULT_SPLIT  # used when the manifest has no assigned_split column (or it is null)
    shard_bytes: int = DEFAULT_SHARD_BYTES  # webdataset
    shuffle: bool = False  # webdataset: rows shuffled across shards and within them
    seed: int = 0
    workers: int = 4
    overwrite: bool = False
    transform: Pipeline | None = None  # --transform/--strip-metadata; random draws seeded by ``seed``
    skip_bad: bool = False  # an image the transform cannot handle is left out (and named) instead of exit 3
    keep_non_images: bool = False  # folder layouts: also write rows that are not images (as .bin)
    drop_bad_images: bool = False  # leave out rows with null or empty image_data (every format), as subset

    @property
    def folder_layout(self) -> bool:
        return self.format != "webdataset"

    @property
    def transforming(self) -> bool:
        return self.transform is not None and not self.transform.is_empty


# --- plan ---------------------------------------------------------------------------------------------
@dataclass
class ExportPlan:
    """What an export writes. ``df``: one row per image in source order with ``__split``/``__cat`` (safe
    names), ``__stem`` (path without extension, relative to DIR; webdataset: the tar key) and ``__bucket``."""

    options: ExportOptions
    manifest: Manifest
    df: pl.DataFrame
    names: list[tuple[str, str, str]]  # (kind, original, safe)
    est_bytes: int
    exact: bool
    shards: list[ShardPlan]

    @property
    def rows(self) -> int:
        return self.df.height

    def files(self) -> int:
        """Files an export writes: images (webdataset: about how many tars) plus the index files."""
        fmt = self.options.format
        splits = self.df.get_column("__split").n_unique() if self.rows else 0
        if fmt == "webdataset":
            if self.options.shuffle:
                tars = self.df.select("__split", "__bucket").n_unique()
            else:
                tars = max(splits, -(-self.est_bytes // self.options.shard_bytes))
            return tars + 2  # + names.csv, README.md
        return self.rows + 1 + (splits if fmt in ("cf", "imagefolder") else 0)

    def to_json(self) -> dict[str, Any]:
        by_split = self.df.group_by("__split").len().sort("__split").iter_rows()
        transform = self.options.transform
        return {
            "format": self.options.format,
            "rows": self.rows,
            "files": self.files(),
            "est_bytes": _space_needed(self)[0],  # transformed: estimated from the transform
            "bytes_exact": self.exact and not self.options.transforming,
            "transform": transform.spec if transform is not None and self.options.transforming else None,
            "source_shards": len(self.shards),
            "by_split": dict(by_split),
            "categories": self.df.get_column("__cat").n_unique() if self.rows else 0,
        }


def _family(name: str) -> str:
    """A generator family from its name: the last path part without trailing version tokens.

    ``stabilityai/stable-diffusion-2-1`` → ``stable-diffusion``, ``StyleGAN2`` → ``StyleGAN``,
    ``DeepFloyd/IF-I-XL-v1.0`` → ``IF-I-XL``. A ``family`` column in the manifest is used instead when present.
    """
    last = name.rsplit("/", 1)[-1]
    tokens = re.split(r"[-_. ]", last)
    while len(tokens) > 1 and re.search(r"\d", tokens[-1]):
        tokens.pop()
    head = re.sub(r"[-_ ]?v?\d+(\.\d+)*$", "", "-".join(tokens)) if len(tokens) == 1 else "-".join(tokens)
    return head or last


def _category_expr(df: pl.DataFrame, category: str) -> pl.Expr:
    """The category value of each row's own metadata (before real rows are moved next to their pair)."""
    if category == "generator":
        return pl.col("model_name")
    if category == "family" and "family" not in df.columns:
        return pl.col("model_name").map_elements(_family, return_dtype=pl.String)
    if category not in df.columns:
        raise UsageError(
            f"--category {category}: the manifest has no such column",
            f"use generator, architecture, family or one of: {', '.join(c for c in df.columns if not c.startswith('__'))}",
        )
    return pl.col(category).cast(pl.String)


def _categories(df: pl.DataFrame, category: str) -> pl.Series:
    """Category per row. For generator/architecture/family, real rows go with the generated row they are
    paired with (``pair_id``), else under their ``real_source``; any other column: every row's own value."""
    own = _category_expr(df, category)
    if category not in CATEGORIES:
        return df.with_columns(own.fill_null("").alias("__c")).get_column("__c")
    label = pl.col("label")
    real_home = pl.col("real_source").cast(pl.String) if "real_source" in df.columns else pl.lit("")
    if PAIR_COLUMN in df.columns:
        partner = (
            df.filter((label == GENERATED) & pl.col(PAIR_COLUMN).is_not_null())
            .select(PAIR_COLUMN, own.alias("__pcat"))
            .unique(PAIR_COLUMN, keep="first")
        )
        joined = df.join(partner, on=PAIR_COLUMN, how="left", maintain_order="left")
        expr = pl.when(label == GENERATED).then(own).otherwise(pl.coalesce(pl.col("__pcat"), real_home))
        return joined.with_columns(expr.fill_null("").alias("__c")).get_column("__c")
    expr = pl.when(label == GENERATED).then(own).otherwise(real_home)
    return df.with_columns(expr.fill_null("").alias("__c")).get_column("__c")


def _splits(df: pl.DataFrame, default: str) -> pl.Series:
    if SPLIT_COLUMN in df.columns:
        expr = pl.col(SPLIT_COLUMN).cast(pl.String).fill_null(default)
    else:
        expr = pl.lit(default, pl.String)
    return df.with_columns(expr.alias("__s")).get_column("__s")


def _check_options(options: ExportOptions) -> None:
    if options.format not in FORMATS:
        raise UsageError(f"--format {options.format!r}: unknown format", f"use one of {', '.join(FORMATS)}")
    if options.shard_bytes < 1:
        raise UsageError("--shard-size must be positive", "e.g. 1GB or 64MB")
    if options.workers < 1:
        raise UsageError("--workers must be at least 1", "e.g. --workers 4")
    if not options.split:
        raise UsageError("--split must not be empty", "e.g. --split train")
    if options.shuffle and options.folder_layout:
        raise UsageError(
            f"--shuffle applies to --format webdataset only, not {options.format}",
            "folder layouts have no order to shuffle: leave --shuffle out (loaders shuffle at training time)",
        )


def plan_export(manifest: Manifest, options: ExportOptions, reporter: Reporter | None = None) -> ExportPlan:
    """Work out every output path from the metadata and the touched shards' footers. No image bytes."""
    reporter = reporter or NullReporter()
    _check_options(options)
    sub = plan_subset(manifest, reporter=reporter)  # unique rows in source order, shards checked, bytes
    df = sub.manifest.df
    for col in ("label", "model_name"):
        if col not in df.columns:
            raise InputError(f"the manifest lacks column {col}", "re-create it with `cfx index`")
    split = _splits(df, options.split)
    cat = _categories(df, options.category)
    split_names = safe_names(split.unique().to_list())
    cat_names = safe_names(cat.unique().to_list())
    shard_names = _shard_names(df.get_column("shard").unique().to_list())
    names = (
        [("split", o, s) for o, s in sorted(split_names.items())]
        + [("category", o, s) for o, s in sorted(cat_names.items())]
        + [("shard", o, s) for o, s in sorted(shard_names.items())]
    )
    df = df.with_columns(
        split.replace_strict(split_names, return_dtype=pl.String).alias("__split"),
        cat.replace_strict(cat_names, return_dtype=pl.String).alias("__cat"),
        pl.col("shard").replace_strict(shard_names, return_dtype=pl.String).alias("__shard"),
    )
    df = df.with_columns(_stems(df, options.format).alias("__stem"))
    df = _buckets(df, options, sub.est_bytes)
    df = _resolution_as_source(df, sub.schema)
    _check_stems(df.get_column("__stem"))
    return ExportPlan(
        options=options,
        manifest=sub.manifest,
        df=df,
        names=names,
        est_bytes=sub.est_bytes,
        exact=sub.exact,
        shards=sub.shards,
    )


def _resolution_as_source(df: pl.DataFrame, schema: pa.Schema) -> pl.DataFrame:
    """The manifest's ``resolution`` text back in the source's type: a list source's metadata keeps lists
    (``[512, 512]`` as numbers, in the source's order); a string source keeps its strings."""
    if "resolution" not in df.columns or "resolution" not in schema.names:
        return df
    if not is_list_type(schema.field("resolution").type) or df.schema["resolution"] != pl.String:
        return df
    numbers = pl.col("resolution").str.extract_all(r"\d+").list.eval(pl.element().cast(pl.Int64))
    return df.with_columns(numbers.alias("resolution"))


def _check_stems(stems: pl.Series) -> None:
    """Every path component comes from safe_names; this guards the rule itself: no empty, ``.``, ``..``,
    absolute or backslash component can reach the file system."""
    bad = stems.filter(stems.str.contains(r"(^|/)(\.{0,2})(/|$)") | stems.str.contains("\\", literal=True))
    if bad.len():
        raise OutputError(
            f"unsafe output path {bad.head(1).to_list()}",
            "this is a bug in cfx; please report it with CFX_DEBUG=1",
        )


def _shard_names(shards: list[str]) -> dict[str, str]:
    """Shard path -> the safe prefix of its rows' file names: ``data/HFCF_small_3.parquet`` → ``HFCF_small_3``
    (the full path is used when the short forms would clash)."""
    short = {s: re.sub(r"\.parquet$", "", re.sub(r"^data/", "", s)) for s in shards}
    if len(set(short.values())) != len(short):
        short = {s: s for s in shards}
    safe = safe_names(short.values(), dots=False)
    return {s: safe[v] for s, v in short.items()}


def _stems(df: pl.DataFrame, fmt: str) -> pl.Expr:
    """Output path without extension, relative to DIR (webdataset: the tar key, no dots)."""
    key = pl.concat_str(pl.col("__shard"), pl.lit("-"), pl.col("row").cast(pl.String).str.zfill(6))
    label = pl.col("label").cast(pl.Int64)
    if fmt == "webdataset":
        return key
    if fmt == "cnndetection":
        dirs = _LABEL_DIRS["cnndetection"]
        lab = pl.when(label == GENERATED).then(pl.lit(dirs[GENERATED])).otherwise(pl.lit(dirs[REAL]))
        return pl.concat_str(pl.col("__split"), pl.col("__cat"), lab, key, separator="/")
    lab = pl.when(label == GENERATED).then(pl.lit("fake")).otherwise(pl.lit("real"))
    if fmt == "cf":
        return pl.concat_str(pl.col("__split"), pl.col("__cat"), lab, key, separator="/")
    return pl.concat_str(pl.col("__split"), lab, pl.col("__cat"), key, separator="/")  # imagefolder


def _buckets(df: pl.DataFrame, options: ExportOptions, est_bytes: int) -> pl.DataFrame:
    """webdataset --shuffle: ``__bucket`` is the output tar of each row (a seeded permutation cut into
    ~shard-size pieces, per split) and ``__order`` its place inside; -1 elsewhere (tars are cut as they fill)."""
    if options.format != "webdataset" or not options.shuffle or not df.height:
        return df.with_columns(pl.lit(-1, pl.Int64).alias("__bucket"), pl.lit(-1, pl.Int64).alias("__order"))
    rng = np.random.Generator(np.random.PCG64(options.seed))
    df = df.with_columns(pl.Series("__order", rng.permutation(df.height), dtype=pl.Int64))
    per_row = max(est_bytes, 1) / df.height
    rank = (pl.col("__order").rank("ordinal").over("__split") - 1).cast(pl.Int64)
    n = pl.len().over("__split").cast(pl.Int64)
    tars = (n.cast(pl.Float64) * per_row / options.shard_bytes).ceil().cast(pl.Int64)
    tars = pl.min_horizontal(pl.max_horizontal(tars, pl.lit(1)), n)  # no empty tars
    return df.with_columns((rank * tars // n).alias("__bucket"))


# --- workers ------------------------------------------------------------------------------------------
@dataclass
class _Task:
    """One source shard's rows (ascending) and where each goes."""

    index: int
    root: str
    shards: dict[str, Any]  # this shard's fingerprint, for the check in cfx.stream
    shard: str
    rows: np.ndarray
    stems: list[str]
    fmt: str
    tmp: str
    batch_rows: int
    splits: list[str] = field(default_factory=list)  # webdataset only, per row:
    buckets: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    meta: list[str] = field(default_factory=list)  # KEY.json
    declared: list[Any] = field(default_factory=list)  # transformed: each row's resolution, as in the plan
    shard_bytes: int = DEFAULT_SHARD_BYTES
    transform: Pipeline | None = None  # None: bytes copied as they are
    seed: int = 0
    skip_bad: bool = False
    drop_non_images: bool = False  # folder layouts without --keep-non-images
    drop_empty: bool = False  # --drop-bad-images
    parent_pid: int | None = None  # a pool worker stops when the exporting process is gone
    hub_fs: Any = None  # hf:// sources on an engine: the driver's HfFileSystem (its endpoint and token)


@dataclass
class _TaskResult:
    index: int
    exts: list[str]
    bytes: int
    parts: list[tuple[str, int, str]] = field(default_factory=list)  # webdataset: (split, bucket, path)
    facts: list[tuple[str, str, str, int, int, str, bool]] = field(
        default_factory=list
    )  # transformed: per file
    sizes: list[int] = field(default_factory=list)  # transformed: bytes per file
    skipped: list[BadImageError] = field(default_factory=list)  # --skip-bad: images left out
    non_images: list[LeftOut] = field(default_factory=list)  # folder layouts: rows that are not images
    bad_images: list[LeftOut] = field(default_factory=list)  # --drop-bad-images: null or empty image_data

    def left_out(self) -> list[tuple[str, int]]:
        rows = [(e.shard, e.row) for e in self.skipped]
        return rows + [(e.shard, e.row) for e in (*self.non_images, *self.bad_images)]


@dataclass(frozen=True)
class LeftOut:
    """A source row an export did not write, and why."""

    shard: str
    row: int
    reason: str

    @property
    def message(self) -> str:
        return f"{self.shard} row {self.row}: {self.reason}"

    def to_json(self) -> dict[str, object]:
        return {"shard": self.shard, "row": self.row, "reason": self.reason}


_ADDRESS = re.compile(r" (?:object )?at 0x[0-9a-fA-F]+")
_HEADER_PROBE = 64 << 10


def non_image_reason(data: memoryview | bytes) -> str | None:
    """Why these bytes are not an image a trainer's ``PIL.Image.open`` reads (None: they are one): empty
    (null or 0 bytes), no known signature, or a header Pillow cannot read. Only the header is parsed."""
    if not len(data):
        return "no image data (null or 0 bytes)"
    if sniff_format(bytes(data[:16])) is None:
        return "no known image signature"
    import io
    import warnings

    from PIL import Image

    error = None
    # the header is in the first bytes (no copy of a whole image); a long one (big EXIF/ICC) gets all of them
    for part in (data[:_HEADER_PROBE], data) if len(data) > _HEADER_PROBE else (data,):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(part)) as image:
                    image.size  # noqa: B018 - the header is parsed by open
            return None
        except Image.DecompressionBombError:
            return None  # an image, only a large one: the trainer decides
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError… for a bad header
            error = exc
    return f"unreadable image header ({_ADDRESS.sub('', str(error)) or type(error).__name__})"


_progress: Any = None  # the pool's progress queue (set by _init_worker)


def _init_worker(progress: Any) -> None:
    global _progress
    _progress = progress


def _pool_task(task: _Task) -> _TaskResult:
    return _run_task(task, _put_progress if _progress is not None else None)


def _put_progress(rows: int, nbytes: int) -> None:
    _progress.put((rows, nbytes))


def _rows(task: _Task) -> Iterator[tuple[int, memoryview | bytes]]:
    """(position in the task, image bytes) for every row of the task, a small batch at a time."""
    manifest = Manifest(df=pl.DataFrame({"shard": [], "row": []}), root=task.root, shards=task.shards)
    pos = 0
    batches = iter_shard_batches(
        manifest, task.shard, task.rows, (IMAGE_COLUMN,), task.batch_rows, task.hub_fs
    )
    for batch in _read_ahead(batches):
        if task.parent_pid is not None and os.getppid() != task.parent_pid:
            os._exit(1)  # the exporting process was killed: do not keep writing into its temp folder
        for data in _images(batch.column(IMAGE_COLUMN)):
            yield pos, data
            pos += 1
        del batch


def _read_ahead(batches: Iterator[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """Read the next batches on a thread while the current one is written (both release the GIL);
    at most ``depth`` batches wait, so memory stays bounded."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    with contextlib.suppress(queue.Full):
                        q.put(batch, timeout=0.1)
                        break
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    reader = threading.Thread(target=produce, daemon=True)
    reader.start()
    try:
        while (item := q.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()  # unblock a waiting put
        reader.join()


def _images(arr: pa.Array) -> Iterator[memoryview | bytes]:
    """The values of a binary column as zero-copy views of its buffer (a null is empty bytes)."""
    if arr.null_count or not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
        yield from (b or b"" for b in arr.to_pylist())
        return
    width = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    _, offsets, values = arr.buffers()
    ends = np.frombuffer(offsets, dtype=width)[arr.offset : arr.offset + len(arr) + 1].tolist()
    view = memoryview(values) if values is not None else memoryview(b"")
    for start, end in zip(ends[:-1], ends[1:], strict=True):
        yield view[start:end]


def _run_task(task: _Task, progress: Callable[[int, int], None] | None) -> _TaskResult:
    """One shard's rows into files or tar parts; ``progress(rows, bytes written)`` every _PROGRESS_EVERY rows."""
    tmp = Path(task.tmp)
    result = _TaskResult(task.index, [], 0)
    tars = _TarParts(tmp / _PARTS, task.index, task.shard_bytes) if task.fmt == "webdataset" else None
    made: set[str] = set()
    seen = unsaid = 0  # rows read; bytes written since the last progress report
    order = SizeOrder()
    try:
        for pos, data in _rows(task):
            seen += 1
            if progress is not None and seen % _PROGRESS_EVERY == 0:
                progress(_PROGRESS_EVERY, unsaid)
                unsaid = 0
            meta = task.meta[pos] if tars is not None else ""
            if task.drop_empty and not len(data):
                result.bad_images.append(_left_out(task, pos, "null or empty image_data"))
                continue
            if task.drop_non_images and task.transform is None:
                why = non_image_reason(data)
                if why is not None:
                    result.non_images.append(_left_out(task, pos, why))
                    continue
            if task.transform is not None:
                done = _transform(task, pos, data)
                if isinstance(done, Exception):  # BadImageError, --skip-bad
                    result.skipped.append(done)
                    continue
                data = done.data
                declared = task.declared[pos] if task.declared else None
                hw = order.reads_hw(task.shard, declared, done.source_size)
                result.facts.append(
                    (done.applied, done.source_sha256, done.format, done.width, done.height, done.mode, hw)
                )
                result.sizes.append(len(data))
                meta = _described_meta(meta, done, hw) if tars is not None else ""
            ext = extension(sniff_format(bytes(data[:16]))) or UNKNOWN_EXT
            if tars is not None:
                tars.add(
                    task.splits[pos], task.buckets[pos], task.stems[pos], ext, data, meta, task.labels[pos]
                )
            else:
                _write_file(tmp, task.stems[pos], ext, data, made)
            result.exts.append(ext)
            result.bytes += len(data)
            unsaid += len(data)
        if progress is not None and (seen % _PROGRESS_EVERY or unsaid):
            progress(seen % _PROGRESS_EVERY, unsaid)
    finally:
        if tars is not None:
            tars.close()
    result.parts = tars.parts if tars is not None else []
    return result


def _left_out(task: _Task, pos: int, reason: str) -> LeftOut:
    return LeftOut(task.shard, int(task.rows[pos]), reason)


def export_job(task: _Task, progress: Callable[[int, int], None] | None = None) -> _TaskResult:
    """``_run_task`` as an engine job (cfx.engine): safe to run again after a worker died mid-task, as the
    second start first removes what the first one wrote."""
    started = Path(task.tmp) / _STARTED
    started.mkdir(exist_ok=True)
    try:
        os.close(os.open(started / str(task.index), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        _clear_task(task)
    return _run_task(task, progress)


def _clear_task(task: _Task) -> None:
    """Remove the files an earlier attempt of ``task`` wrote (its tar pieces, or its rows' image files)."""
    tmp = Path(task.tmp)
    if task.fmt == "webdataset":
        for pattern in (f"*/{task.index:06d}-*.tar", f"*/b*/{task.index:06d}.tar"):
            for path in (tmp / _PARTS).glob(pattern):
                path.unlink()
        return
    by_parent: dict[str, set[str]] = {}
    for stem in task.stems:
        parent, _, name = stem.rpartition("/")
        by_parent.setdefault(parent, set()).add(name)
    for parent, names in by_parent.items():
        with contextlib.suppress(FileNotFoundError), os.scandir(tmp / parent) as entries:
            for entry in entries:
                if entry.name.rpartition(".")[0] in names:
                    os.unlink(entry.path)


def _transform(task: _Task, pos: int, data: memoryview | bytes) -> Transformed | BadImageError:
    """One image through the task's pipeline, seeded by its source shard and row as in ``cfx subset`` (so
    both give the same bytes); with --skip-bad an image that cannot be transformed gives its error."""
    from cfx.transform import BadImageError

    assert task.transform is not None
    try:
        return task.transform.apply(bytes(data), (task.shard, int(task.rows[pos])), task.seed)
    except BadImageError as exc:
        if not task.skip_bad:
            raise  # the first bad image stops the export (exit 3); the temp folder goes with it
        return exc


def _described_meta(line: str, done: Transformed, hw: bool) -> str:
    """A KEY.json line made from the transformed layout (:func:`_wds_meta`) with the new bytes' facts in."""
    from cfx.transform_stage import renamed, resolution_like

    meta = json.loads(line)
    meta.update(
        format=done.format,
        mode=done.mode,
        width=done.width,
        height=done.height,
        transform=done.applied,
        source_sha256=done.source_sha256,
    )
    if "resolution" in meta:
        meta["resolution"] = resolution_like(meta.get("source_resolution"), done.width, done.height, hw)
    if "image_name" in meta:
        meta["image_name"] = renamed(meta.get("source_image_name"), done.format)
    if "num_bytes" in meta:
        meta["num_bytes"] = len(done.data)
    return json.dumps(meta, ensure_ascii=False, separators=(",", ":"))


def _write_file(tmp: Path, stem: str, ext: str, data: memoryview | bytes, made: set[str]) -> None:
    parent = stem.rpartition("/")[0]
    if parent not in made:
        (tmp / parent).mkdir(parents=True, exist_ok=True)
        made.add(parent)
    with open(tmp / f"{stem}.{ext}", "xb") as f:  # "x": two rows can never share a file
        f.write(data)


class _TarWriter:
    """A streaming tar writer: tarfile's own (PAX) headers, each member's data written in one call
    (tarfile.addfile copies through 16 KB reads, which halves the throughput on ~1 MB images)."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "xb")  # noqa: SIM115 - closed in close()
        self.offset = 0

    def add(self, name: str, data: memoryview | bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        pad = -len(data) % tarfile.BLOCKSIZE
        self.file.write(header)
        self.file.write(data)
        self.file.write(b"\0" * pad)
        self.offset += len(header) + len(data) + pad

    def close(self) -> None:
        end = 2 * tarfile.BLOCKSIZE  # end-of-archive, then padding to a whole record as tarfile does
        end += -(self.offset + end) % tarfile.RECORDSIZE
        self.file.write(b"\0" * end)
        self.file.close()


class _TarParts:
    """A task's tar pieces: per split, cut when the next sample would pass ``shard_bytes``; with --shuffle,
    one piece per (split, output tar), merged across tasks at the end."""

    def __init__(self, folder: Path, task: int, shard_bytes: int) -> None:
        self.folder = folder
        self.task = task
        self.shard_bytes = shard_bytes
        self.open: dict[tuple[str, int], _TarWriter] = {}
        self.count: dict[str, int] = {}
        self.parts: list[tuple[str, int, str]] = []

    def _path(self, split: str, bucket: int) -> Path:
        if bucket >= 0:
            name = f"{split}/b{bucket:06d}/{self.task:06d}.tar"
        else:
            k = self.count.get(split, 0)
            self.count[split] = k + 1
            name = f"{split}/{self.task:06d}-{k:06d}.tar"
        self.parts.append((split, bucket, name))
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add(
        self, split: str, bucket: int, key: str, ext: str, data: memoryview | bytes, meta: str, label: int
    ) -> None:
        slot = (split, bucket)
        tar = self.open.get(slot)
        if tar is not None and bucket < 0 and tar.offset + len(data) + 4096 > self.shard_bytes:
            self._close(slot)
            tar = None
        if tar is None:
            tar = _TarWriter(self._path(split, bucket))
            self.open[slot] = tar
        tar.add(f"{key}.{ext}", data)
        tar.add(f"{key}.json", meta.encode())
        tar.add(f"{key}.cls", str(label).encode())

    def _close(self, slot: tuple[str, int]) -> None:
        self.open.pop(slot).close()

    def close(self) -> None:
        for slot in list(self.open):
            self._close(slot)


def _merge_bucket(folder: str, pieces: list[str], keys: list[str], out: str) -> int:
    """Write one shuffled output tar from its pieces: samples in the order of ``keys``, members as written."""
    members: dict[str, list[tuple[int, tarfile.TarInfo]]] = {}
    sources = [tarfile.open(Path(folder) / p, "r:") for p in pieces]  # noqa: SIM115 - closed below
    try:
        for i, src in enumerate(sources):
            for info in src:
                members.setdefault(info.name.split(".", 1)[0], []).append((i, info))
        tar = _TarWriter(Path(out))
        try:
            for key in keys:
                for i, info in members.pop(key):
                    member = sources[i].extractfile(info)
                    assert member is not None
                    tar.add(info.name, member.read())
        finally:
            tar.close()
    finally:
        for src in sources:
            src.close()
    if members:
        raise OutputError(
            f"{len(members)} samples were not placed in {out}", "this is a bug in cfx; please report it"
        )
    for p in pieces:
        (Path(folder) / p).unlink()  # free the pieces' space before the next tar is merged
    return len(keys)


# --- driver -------------------------------------------------------------------------------------------
@dataclass
class ExportResult:
    out: Path
    plan: ExportPlan
    files: int
    bytes: int
    rows: int = 0  # images written (the plan's rows less those left out)
    unknown: int = 0  # images whose bytes have no known signature (written as .bin)
    skipped: int = 0  # --skip-bad: images that could not be transformed
    warnings: list[str] = field(default_factory=list)
    by_split: dict[str, int] = field(default_factory=dict)  # images written per (safe) split name
    categories: int = 0  # categories written
    left_out: dict[str, list[Any]] = field(default_factory=dict)  # skipped / non_images / bad_images rows

    def to_json(self) -> dict[str, Any]:
        """The plan's facts with the counts of what was written (not what was planned), and every row
        left out with its reason."""
        info = {"out": str(self.out), **self.plan.to_json(), "files": self.files, "bytes": self.bytes}
        info.update(rows=self.rows, by_split=self.by_split, categories=self.categories)
        if self.plan.options.transforming:
            info["skipped"] = self.skipped
        for kind, rows in self.left_out.items():
            info[f"{kind}_rows"] = [r.to_json() for r in rows]
            info.setdefault(kind, len(rows))
        return info


def metadata_columns(df: pl.DataFrame) -> list[str]:
    """Every manifest column an export carries as metadata (not the internal ``__*`` ones)."""
    return [c for c in df.columns if not c.startswith("__")]


def _meta_frame(df: pl.DataFrame) -> pl.DataFrame:
    """The metadata of each row with the label as a name (``label``: real/fake) and as CF's int (``label_id``)."""
    cols = metadata_columns(df)
    label = pl.col("label").cast(pl.Int64)
    name = (
        pl.when(label == GENERATED).then(pl.lit(LABEL_NAMES[GENERATED])).otherwise(pl.lit(LABEL_NAMES[REAL]))
    )
    return df.select(name.alias("label"), label.alias("label_id"), *[c for c in cols if c != "label"])


def _ndjson_lines(df: pl.DataFrame) -> list[str]:
    return df.write_ndjson().splitlines() if df.height else []


def _wds_meta(part: pl.DataFrame, transforming: bool) -> list[str]:
    """KEY.json per row. Transformed: in the layout of the final metadata (``transformed_rows``) with
    placeholders that the worker fills in from the new bytes (``_described_meta``)."""
    if transforming:
        blank = {
            "transform": "",
            "source_sha256": "",
            "_format": "",
            "_width": 0,
            "_height": 0,
            "_mode": "",
            "_hw": False,
        }
        records = part.select("shard", "row").with_columns(
            pl.lit(v, _FACT_COLUMNS[k]).alias(k) for k, v in blank.items()
        )
        part = transformed_rows(part, records)
    return _ndjson_lines(_meta_frame(part))


def _transformed_frame(df: pl.DataFrame, results: list[_TaskResult]) -> pl.DataFrame:
    """The written rows described by their new bytes (names as ``cfx subset``'s manifest: source_*)."""
    facts = [f for r in results for f in r.facts]
    columns: list[tuple[Any, ...]] = list(zip(*facts, strict=True)) if facts else [() for _ in _FACT_COLUMNS]
    records = pl.DataFrame(
        {"shard": df.get_column("shard"), "row": df.get_column("row")}
        | {k: pl.Series(k, v, dtype=t) for (k, t), v in zip(_FACT_COLUMNS.items(), columns, strict=True)}
    )
    df = transformed_rows(df, records)
    if "num_bytes" in df.columns:
        sizes = pl.Series("num_bytes", [n for r in results for n in r.sizes], dtype=df.schema["num_bytes"])
        df = df.with_columns(sizes)
    return df


def _tasks(plan: ExportPlan, tmp: Path, parent_pid: int | None, hub_fs: Any = None) -> Iterator[_Task]:
    """One task per source shard, made as the pool takes them (the metadata of all rows is never held twice)."""
    fmt = plan.options.format
    by_shard = {sp.shard: sp for sp in plan.shards}
    for i, ((shard,), part) in enumerate(plan.df.group_by("shard", maintain_order=True)):
        sp = by_shard[str(shard)]
        per_row = sp.shard_bytes / max(sp.shard_rows, 1)
        wds = fmt == "webdataset"
        info = plan.manifest.shards.get(str(shard))
        yield _Task(
            index=i,
            root=plan.manifest.root,
            shards={str(shard): info} if info is not None else {},
            shard=str(shard),
            rows=part.get_column("row").to_numpy(),
            stems=part.get_column("__stem").to_list(),
            fmt=fmt,
            tmp=str(tmp),
            batch_rows=int(min(_BATCH_ROWS, max(1, _BATCH_BYTES // max(per_row, 1)))),
            splits=part.get_column("__split").to_list() if wds else [],
            buckets=part.get_column("__bucket").to_list() if wds else [],
            labels=part.get_column("label").cast(pl.Int64).to_list() if wds else [],
            meta=_wds_meta(part, plan.options.transforming) if wds else [],
            declared=part.get_column("resolution").to_list()
            if plan.options.transforming and "resolution" in part.columns
            else [],
            shard_bytes=plan.options.shard_bytes,
            transform=plan.options.transform if plan.options.transforming else None,
            seed=plan.options.seed,
            skip_bad=plan.options.skip_bad,
            drop_non_images=plan.options.folder_layout and not plan.options.keep_non_images,
            drop_empty=plan.options.drop_bad_images,
            parent_pid=parent_pid,
            hub_fs=hub_fs,
        )


def _run_all(
    plan: ExportPlan, tmp: Path, reporter: Reporter, engine: ShardEngine | None = None
) -> list[_TaskResult]:
    """Every task, in a process pool of --workers (inline for one worker or one shard), or on ``engine``."""
    bar = RowsAndBytes(reporter, f"Exporting {plan.rows:,} images", plan.rows)
    try:
        if engine is not None:
            return _run_on(engine, plan, tmp, bar.advance)
        if plan.options.workers <= 1 or len(plan.shards) == 1:
            return [_run_task(t, bar.advance) for t in _tasks(plan, tmp, None)]
        workers = planned_readers(min(plan.options.workers, len(plan.shards)), reporter)
        if workers <= 1:
            return [_run_task(t, bar.advance) for t in _tasks(plan, tmp, None)]
        return _run_pool(_tasks(plan, tmp, os.getpid()), workers, bar.advance)
    finally:
        bar.close()


def _run_on(
    engine: ShardEngine, plan: ExportPlan, tmp: Path, advance: Callable[[int, int], None]
) -> list[_TaskResult]:
    """One ``export_job`` per source shard on the cluster; the workers write into ``tmp``, which must be on a
    file system every node sees (the engine refuses otherwise)."""
    hub_fs = None
    if plan.manifest.is_remote:  # workers use this process's Hub endpoint and token, not their own
        from cfx.sources import hub_filesystem

        hub_fs = hub_filesystem()
    results = []
    jobs = ((t.shard, t) for t in _tasks(plan, tmp, None, hub_fs))
    # closed on an error before the build folder goes: the tasks in flight are stopped first
    with contextlib.closing(engine.run_jobs(export_job, jobs, out_dir=str(tmp))) as done:
        for result in done:
            results.append(result)
            advance(len(result.exts) + len(result.skipped), result.bytes)
    shutil.rmtree(tmp / _STARTED, ignore_errors=True)
    return results


def _run_pool(tasks: Iterator[_Task], workers: int, advance: Callable[[int, int], None]) -> list[_TaskResult]:
    """Run the tasks on ``workers`` spawned processes, at most two per worker in flight; progress arrives
    through a queue."""
    ctx = get_context("spawn")
    progress = ctx.Queue()
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            with contextlib.suppress(queue.Empty):
                advance(*progress.get(timeout=0.1))

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    pool = process_pool(workers, initializer=_init_worker, initargs=(progress,))
    try:
        pending: set[Future[_TaskResult]] = set()
        results = []
        for task in tasks:
            pending.add(pool.submit(_pool_task, task))
            while len(pending) >= 2 * workers:
                finished = wait_first(pending)
                pending -= finished
                results += [f.result() for f in finished]  # the first error stops the export
        while pending:
            finished = wait_first(pending)
            pending -= finished
            results += [f.result() for f in finished]
        pool.shutdown()
    except BaseException:
        pool.stop()
        raise
    finally:
        done.set()
        drainer.join()
        progress.close()
    return sorted(results, key=lambda r: r.index)


def write_export(
    manifest: Manifest,
    out: Path,
    options: ExportOptions,
    reporter: Reporter | None = None,
    engine: ShardEngine | None = None,
) -> ExportResult:
    """Export the manifest's rows to ``out`` in ``options.format``; ``out`` appears only when complete. With
    ``engine`` (cfx.engine_ray) each source shard is one task on the cluster, writing into the build folder."""
    reporter = reporter or NullReporter()
    _check_options(options)
    out_abs = check_output(manifest, out, options.overwrite)
    plan = plan_export(manifest, options, reporter)
    parent = out_abs.parent
    with atomic_folder(out_abs, overwrite=options.overwrite, warn=reporter.warn) as tmp:
        need, how = _space_needed(plan)
        # + the index files (a line of about 200 bytes per image) and 1 MB for the file system's own blocks
        _check_space(
            parent, int(need * (2.05 if options.shuffle else 1.05)) + 200 * plan.rows + (1 << 20), how
        )
        try:
            results = _run_all(plan, tmp, reporter, engine)
            df = _written_rows(plan, results)
            files = _write_index(plan, df, tmp, out_abs, results, reporter)
        except OSError as exc:
            raise OutputError(
                f"cannot write the export into {parent}: {exc.strerror or exc}",
                "check free disk space and permissions; nothing was left behind",
            ) from None
    exts = df.get_column("__ext").to_list()
    left_out = {
        kind: [e for r in results for e in getattr(r, kind)]
        for kind in ("skipped", "non_images", "bad_images")
    }
    skipped = left_out["skipped"]
    unknown = exts.count(UNKNOWN_EXT)
    result = ExportResult(
        out_abs,
        plan,
        files,
        sum(r.bytes for r in results),
        len(exts),
        unknown,
        len(skipped),
        by_split=dict(df.group_by("__split").len().sort("__split").iter_rows()),
        categories=df.get_column("__cat").n_unique(),
        left_out={k: v for k, v in left_out.items() if v or (k == "skipped" and options.transforming)},
    )
    messages = [skipped_message(skipped)] if skipped else []
    messages += _left_out_messages(left_out)
    if unknown:
        messages.append(
            f"{unknown:,} images have no known file signature; they were written as .{UNKNOWN_EXT}"
        )
    for msg in messages:
        reporter.warn(msg)
        result.warnings.append(msg)
    return result


def _space_needed(plan: ExportPlan) -> tuple[int, str]:
    """Bytes the export writes, and how that was found: the source bytes when copied; with a transform an
    estimate from it (``cfx.transform.estimate_bytes``: planned sizes × bytes per pixel of the encoder)."""
    if not plan.options.transforming or not plan.rows:
        return plan.est_bytes, ""
    from cfx.transform import estimate_bytes

    assert plan.options.transform is not None
    df = plan.df
    per_row = plan.est_bytes / plan.rows
    src = (
        df.get_column("num_bytes").cast(pl.Float64).fill_null(per_row).to_numpy()
        if "num_bytes" in df.columns
        else np.full(df.height, per_row)
    )

    def side(name: str) -> np.ndarray:
        if name not in df.columns:
            return np.full(df.height, np.nan)
        return df.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy()

    est = estimate_bytes(plan.options.transform, side("width"), side("height"), src)
    return int(est.sum()), f"an estimate from the transform ({plan.options.transform.spec})"


def _left_out_messages(left_out: dict[str, list[Any]]) -> list[str]:
    out = []
    for kind, text, hint in (
        (
            "non_images",
            "left out {n:,} row(s) that are not images (a trainer's Image.open would fail on them)",
            " — --keep-non-images writes them as .bin",
        ),
        ("bad_images", "dropped {n:,} row(s) with null or empty image_data (--drop-bad-images)", ""),
    ):
        rows = left_out.get(kind) or []
        if rows:
            more = f" and {len(rows) - 5:,} more" if len(rows) > 5 else ""
            shown = "; ".join(e.message for e in rows[:5])
            out.append(f"{text.format(n=len(rows))}: {shown}{more}{hint}")
    return out


def _written_rows(plan: ExportPlan, results: list[_TaskResult]) -> pl.DataFrame:
    """The plan's rows that were written (less those left out: --skip-bad, non-images, --drop-bad-images)
    with ``__ext``; transformed, the metadata describes the new bytes."""
    df = plan.df
    gone = [k for r in results for k in r.left_out()]
    if gone:
        bad = pl.DataFrame(
            {"shard": [s for s, _ in gone], "row": [r for _, r in gone]},
            schema={"shard": df.schema["shard"], "row": df.schema["row"]},
        )
        df = df.join(bad, on=["shard", "row"], how="anti", maintain_order="left")
        if not df.height:
            messages = [e.message for r in results for e in r.skipped]
            messages += [e.message for r in results for e in (*r.non_images, *r.bad_images)]
            first = messages[0]
            raise EmptySelectionError(
                f"none of the {len(gone):,} selected images could be written (first: {first})",
                "check the source images, the --transform specs, or pass --keep-non-images",
            )
    exts = [e for r in results for e in r.exts]
    if len(exts) != df.height:
        raise OutputError(
            f"wrote {len(exts):,} images but {df.height:,} were selected",
            "this is a bug in cfx; please report it with CFX_DEBUG=1",
        )
    df = df.with_columns(pl.Series("__ext", exts, dtype=pl.String))
    return _transformed_frame(df, results) if plan.options.transforming else df


def _write_index(
    plan: ExportPlan,
    df: pl.DataFrame,
    tmp: Path,
    out_abs: Path,
    results: list[_TaskResult],
    reporter: Reporter,
) -> int:
    """names.csv plus the format's own index files; returns how many data files the export holds."""
    with open(tmp / NAMES_FILE, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kind", "original", "safe"])
        writer.writerows(plan.names)
    fmt = plan.options.format
    if fmt == "webdataset":
        _write_wds_card(df, tmp, plan.manifest)
        return _finish_tars(plan, df, tmp, results, reporter) + 2
    splits = 0
    for (split,), part in df.group_by("__split", maintain_order=True):
        splits += 1
        if fmt == "imagefolder":
            _write_metadata_jsonl(part, tmp / str(split))
        elif fmt == "cf":
            _write_cf_index(part, tmp / str(split), out_abs)
    return df.height + 1 + (splits if fmt in ("cf", "imagefolder") else 0)


def _write_metadata_jsonl(part: pl.DataFrame, folder: Path) -> None:
    """imagefolder's metadata.jsonl: file_name (relative to the split folder) first, then all metadata."""
    name = pl.concat_str(
        pl.col("__stem").str.splitn("/", 2).struct.field("field_1"), pl.lit("."), pl.col("__ext")
    )
    meta = _meta_frame(part).with_columns(part.select(name.alias("file_name")).get_column("file_name"))
    meta.select("file_name", *[c for c in meta.columns if c != "file_name"]).write_ndjson(
        folder / "metadata.jsonl"
    )


def _write_cf_index(part: pl.DataFrame, folder: Path, out_abs: Path) -> None:
    """The CF trainer's index.csv (ImagePath absolute as it opens them as is, Label 0/1, GeneratorName =
    the folder name, as the trainer's own walk would record it)."""
    path = pl.concat_str(pl.lit(str(out_abs) + "/"), pl.col("__stem"), pl.lit("."), pl.col("__ext"))
    part.select(
        path.alias("ImagePath"),
        pl.col("label").cast(pl.Int64).alias("Label"),
        pl.col("__cat").alias("GeneratorName"),
    ).write_csv(folder / "index.csv")


_HF_DTYPES = {
    pl.String: "string",
    pl.Boolean: "bool",
    pl.Int8: "int8",
    pl.Int16: "int16",
    pl.Int32: "int32",
    pl.Int64: "int64",
    pl.UInt8: "uint8",
    pl.UInt16: "uint16",
    pl.UInt32: "uint32",
    pl.UInt64: "uint64",
    pl.Float32: "float32",
    pl.Float64: "float64",
    pl.Null: "null",
}


def _write_wds_card(df: pl.DataFrame, tmp: Path, source: Manifest) -> None:
    """README.md declaring the features, so ``load_dataset(DIR)`` reads shards that mix .png and .jpg
    members (the webdataset loader infers features from the first 5 samples only: datasets#6880), and the
    evidence measured on the exported rows (cfx.evidence)."""
    from cfx import evidence

    ev = evidence.measure(source.with_df(df), split_column="__split")
    q = json.dumps  # a JSON string is a valid YAML scalar
    lines = ["---", "dataset_info:", "  features:"]
    for ext in sorted(set(df.get_column("__ext").to_list())):
        lines += [f"  - name: {q(ext)}", "    dtype: " + ("binary" if ext == UNKNOWN_EXT else "image")]
    lines += ["  - name: json", "    struct:"]
    for name, dtype in _meta_frame(df.head(0)).schema.items():
        if isinstance(dtype, pl.List):  # a list resolution
            inner = _HF_DTYPES.get(type(dtype.inner), "string")  # type: ignore[arg-type]
            lines += [f"    - name: {q(name)}", f"      list: {inner}"]
            continue
        lines += [f"    - name: {q(name)}", f"      dtype: {_HF_DTYPES.get(type(dtype), 'string')}"]
    lines += ["  - name: cls", "    dtype:", "      class_label:", "        names:"]
    lines += [f"          '{i}': {LABEL_NAMES[i]}" for i in (REAL, GENERATED)]
    lines += ["  - name: __key__", "    dtype: string", "  - name: __url__", "    dtype: string"]
    lines += ["configs:", "- config_name: default", "  data_files:"]
    for split in sorted(set(df.get_column("__split").to_list())):
        lines += [f"  - split: {q(split)}", f"    path: {q(split + '-*.tar')}"]
    lines += ["cfx_evidence: " + q(ev, sort_keys=False)]
    lines += [
        "---",
        "",
        "WebDataset shards written by `cfx export --format webdataset` (see docs/export.md).",
        "",
        evidence.render(ev),
    ]
    (tmp / "README.md").write_text("\n".join(lines), encoding="utf-8")


def _finish_tars(
    plan: ExportPlan, df: pl.DataFrame, tmp: Path, results: list[_TaskResult], reporter: Reporter
) -> int:
    """Name the tar pieces {split}-%06d.tar (in source order), or, with --shuffle, merge each output tar's
    pieces in the shuffled order."""
    parts = tmp / _PARTS
    pieces = [p for r in results for p in r.parts]
    written = 0
    if not plan.options.shuffle:
        count: dict[str, int] = {}
        for split, _, name in pieces:
            n = count.get(split, 0)
            count[split] = n + 1
            os.replace(parts / name, tmp / f"{split}-{n:06d}.tar")
            written += 1
    else:
        slots: dict[tuple[str, int], list[str]] = {}
        for split, bucket, name in pieces:
            slots.setdefault((split, bucket), []).append(name)
        order = df.sort("__order").group_by("__split", "__bucket", maintain_order=True).agg(pl.col("__stem"))
        keys = {(s, b): k for s, b, k in order.iter_rows()}
        jobs = []
        number: dict[str, int] = {}
        for slot, names in sorted(slots.items()):
            n = number.get(slot[0], 0)  # numbered without gaps: --skip-bad may empty a bucket
            number[slot[0]] = n + 1
            jobs.append((str(parts), names, keys[slot], str(tmp / f"{slot[0]}-{n:06d}.tar")))
        written = _merge_all(jobs, plan.options.workers, reporter)
    shutil.rmtree(parts, ignore_errors=True)
    return written


def _merge_all(jobs: list[tuple[str, list[str], list[str], str]], workers: int, reporter: Reporter) -> int:
    """--shuffle: merge every output tar from its pieces, on ``workers`` processes when there are several."""
    bar = reporter.task(f"Shuffling into {len(jobs):,} tar files", total=len(jobs))
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                _merge_bucket(*job)
                bar.advance()
        else:
            with process_pool(min(workers, len(jobs))) as pool:
                for _ in in_order([pool.submit(_merge_bucket, *job) for job in jobs]):
                    bar.advance()
    finally:
        bar.close()
    return len(jobs)


__all__ = [
    "CATEGORIES",
    "FORMATS",
    "ExportOptions",
    "ExportPlan",
    "ExportResult",
    "metadata_columns",
    "plan_export",
    "write_export",
]
