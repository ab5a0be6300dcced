"""`cfx inspect`: add the byte facts (cfx.bytefacts) of every image to a manifest, and check them against the
declared ``format``, ``resolution`` and ``mode`` columns.

Pipeline: per shard, load the cached facts (``<cache>/facts``, keyed by shard fingerprint) → stream the bytes
of the rows no cache holds, in a process pool, one shard per task → join → consistency columns. The hashing
pass of ``cfx dedupe`` fills the same cache as it reads the bytes (cfx.hashing ``with_facts``), and
``inspect --hashes`` runs that fused pass, so dedupe and inspect on the same shards read each image once.

``inspect --pixels`` (``with_pixels``) adds the pixel facts (cfx.pixelfacts): it runs that fused pass, whose
decode gives pHash and pixel facts together, on the rows whose pixel facts no cache holds (after a dedupe
or an earlier ``--pixels``: none), and joins the PIXEL_COLUMNS.

Consistency columns (null when either side is unknown):

- ``format_mismatch``: the declared ``format`` (JPG = JPEG) is not the file signature's ``actual_format``;
- ``mode_mismatch``: the declared ``mode`` is not the header's mode (I, I;16 and I;16B count as one);
- ``size_mismatch``: the header size is not the declared ``resolution``. The order inside ``resolution``
  is not documented for the real dataset, so it is detected per source (``real_source`` for real rows,
  ``model_name`` for generated): a source whose non-square rows are at least 95 % ``[h, w]`` (and more of
  them transposed than not) is reported once as using ``[h, w]``, its rows are compared transposed, and the
  order is saved in ``<cache>/resolution_order.json`` (``{dataset root: {source: "hw"}}``), which
  ``cfx index`` reads to set width and height right from then on (cfx.index ``apply_resolution_order``).
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from cfx import bytefacts, pixelfacts
from cfx.errors import BadShardError, PartialError
from cfx.index import load_resolution_orders, save_resolution_orders, source_expr
from cfx.manifest import Manifest, ShardInfo
from cfx.pool import shared_work
from cfx.progress import NullReporter, Reporter, RowsAndBytes
from cfx.schema import GENERATED, IMAGE_COLUMN, REAL
from cfx.stats import quality_histogram
from cfx.stream import ROW_COLUMN, iter_shard_batches, planned_readers, rows_by_shard

if TYPE_CHECKING:
    from cfx.engine import ShardEngine

CONSISTENCY_COLUMNS = ("format_mismatch", "size_mismatch", "mode_mismatch")
TRANSPOSED_SHARE = 0.95  # share of a source's non-square rows that must read [h, w] to call it transposed
_FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF", "JPEG2000": "JPEG2000"}
_MODE_ALIASES = {"I;16": "I", "I;16B": "I", "I;16L": "I"}


@dataclass
class InspectResult:
    manifest: Manifest  # the input rows with the fact and consistency columns
    read_rows: int = 0  # images whose bytes were read by this call
    cached_rows: int = 0  # images whose facts came from the cache
    decoded: int = 0  # images decoded by this call (hashes, pixel facts)
    shards: int = 0
    transposed: dict[str, str] = field(default_factory=dict)  # source -> "hw" (resolution is [h, w])
    bad: list[BadShardError] = field(default_factory=list)


# Below this many images (about a second of header parsing on one core) a job is over before a spawned
# worker is up (0.5–3 s), so no worker is started; above it this process parses from the start and a worker
# joins when it is up (cfx.pool.shared_work; docs/benchmarks.md "Inspect").
POOL_MIN_IMAGES = 10_000


def inspect_shard(
    root: str,
    shard: str,
    info: ShardInfo | None,
    rows: np.ndarray,
    batch_rows: int = 16,
    hub_fs: Any = None,
    use_cache: bool = True,
) -> pa.Table:
    """Byte facts of the given rows of one shard (runs in a worker process), merged into its cache."""
    m = Manifest(df=pl.DataFrame(), root=root, shards={shard: info} if info is not None else {})
    read: list[np.ndarray] = []
    found: list[dict[str, Any]] = []
    for batch in iter_shard_batches(m, shard, rows, (IMAGE_COLUMN,), batch_rows, hub_fs):
        read.append(batch.column(ROW_COLUMN).to_numpy())
        found.extend(map(bytefacts.facts, bytefacts.binary_views(batch.column(IMAGE_COLUMN))))
    # one table per shard: Arrow arrays built per 16-row batch cost more than the facts in them
    table = bytefacts.table_of(np.concatenate(read) if read else np.zeros(0, np.int64), found)
    if use_cache:
        bytefacts.store_cached(root, shard, info, table)
    return table


def inspect_job(job: tuple[Any, ...], progress: Any = None) -> tuple[pa.Table | None, BadShardError | None]:
    """``inspect_shard(*job[:4], **job[4])`` as an engine job (cfx.engine): a bad shard is a result, so the
    caller decides (``--skip-bad``) as it does for the local pool."""
    try:
        return inspect_shard(*job[:4], **job[4]), None
    except BadShardError as exc:
        return None, exc


def has_facts(df: pl.DataFrame) -> bool:
    """Every fact column is present (e.g. the output of an earlier inspect)."""
    return all(c in df.columns for c in (*bytefacts.FACT_COLUMNS, *CONSISTENCY_COLUMNS))


def inspect_manifest(
    manifest: Manifest,
    *,
    workers: int = 2,
    use_cache: bool = True,
    with_hashes: bool = False,
    with_pixels: bool = False,
    skip_bad: bool = False,
    reuse_columns: bool = True,
    reporter: Reporter | None = None,
    engine: ShardEngine | None = None,
) -> InspectResult:
    """Add byte facts and consistency columns (and with ``with_pixels`` the pixel facts) to every row of
    ``manifest`` (see the module doc). With ``engine`` (cfx.engine_ray) each shard is one task on the cluster
    running the same ``inspect_shard`` (or, for hashes and pixel facts, the same fused pass); the driver
    writes the caches, as for hashing."""
    reporter = reporter or NullReporter()
    decoded = 0
    if with_hashes or with_pixels:  # the fused pass: hashes and facts from one read of the bytes
        manifest, decoded = _fused_pass(
            manifest, workers, use_cache, with_hashes, with_pixels, skip_bad, reuse_columns, reporter, engine
        )
    if reuse_columns and manifest.df.height and has_facts(manifest.df):
        return InspectResult(manifest=manifest, cached_rows=manifest.df.height, decoded=decoded)
    tables, todo, cached = _cached_tables(manifest, use_cache)
    result = InspectResult(
        manifest=manifest, cached_rows=cached, shards=len(tables) + len(todo), decoded=decoded
    )
    _run(manifest, todo, tables, result, workers, {"use_cache": use_cache}, skip_bad, reporter, engine)
    df = _join(manifest.df, tables)
    df, result.transposed = consistency(df, load_resolution_orders(manifest.root))
    if use_cache:
        save_resolution_orders(manifest.root, result.transposed, _sources(df))
    result.manifest = manifest.with_df(df)
    return result


def _fused_pass(
    manifest: Manifest,
    workers: int,
    use_cache: bool,
    with_hashes: bool,
    with_pixels: bool,
    skip_bad: bool,
    reuse_columns: bool,
    reporter: Reporter,
    engine: ShardEngine | None = None,
) -> tuple[Manifest, int]:
    """cfx.hashing's pass over the rows no cache holds: the manifest with hash columns (only when asked
    for or already there) and pixel facts (``with_pixels``), and the number of images decoded."""
    from cfx.hashing import HASH_COLUMNS, hash_manifest

    hashed = hash_manifest(
        manifest,
        workers=workers,
        use_cache=use_cache,
        skip_bad=skip_bad,
        reuse_columns=reuse_columns,
        with_pixels=with_pixels,
        reporter=reporter,
        engine=engine,
    )
    df = hashed.manifest.df
    if not with_hashes:  # computed on the way (and cached for dedupe), not asked for
        df = df.drop([c for c in HASH_COLUMNS if c in df.columns and c not in manifest.df.columns])
    return hashed.manifest.with_df(df), hashed.decoded


def cached_facts(manifest: Manifest) -> Manifest | None:
    """The manifest with its byte facts when the cache holds them for every row (reads no image), else None."""
    if has_facts(manifest.df):
        return manifest
    tables, todo, _ = _cached_tables(manifest, True)
    if todo or not tables:
        return None
    df, _ = consistency(_join(manifest.df, tables), load_resolution_orders(manifest.root))
    return manifest.with_df(df)


def with_file_sizes(manifest: Manifest) -> Manifest:
    """One source of truth for a row's file size (``num_bytes``), read by ``audit`` and ``balance --match
    num-bytes`` alike: the byte facts (an inspected manifest, or the inspect cache when it covers every row;
    they replace the column), else the manifest's own ``num_bytes`` (``cfx index --num-bytes``)."""
    return cached_facts(manifest) or manifest


def cached_pixels(manifest: Manifest) -> Manifest | None:
    """The manifest with its pixel facts when the cache holds them for every row (decodes no image), else
    None (then ``inspect_manifest(..., with_pixels=True)`` decodes what is missing)."""
    if all(c in manifest.df.columns for c in pixelfacts.PIXEL_COLUMNS):
        return manifest
    tables: dict[str, pa.Table] = {}
    for part in rows_by_shard(manifest):
        hit = pixelfacts.load_cached(manifest.root, part.shard, manifest.shards.get(part.shard))
        if hit is None or np.setdiff1d(part.rows, hit.column("row").to_numpy()).size:
            return None
        tables[part.shard] = hit
    return manifest.with_df(pixelfacts.join(manifest.df, tables)) if tables else None


def _cached_tables(
    manifest: Manifest, use_cache: bool
) -> tuple[dict[str, pa.Table], list[tuple[str, np.ndarray]], int]:
    tables: dict[str, pa.Table] = {}
    todo: list[tuple[str, np.ndarray]] = []
    cached = 0
    for part in rows_by_shard(manifest):
        hit = (
            bytefacts.load_cached(manifest.root, part.shard, manifest.shards.get(part.shard))
            if use_cache
            else None
        )
        missing = part.rows
        if hit is not None:
            missing = np.setdiff1d(part.rows, hit.column("row").to_numpy(), assume_unique=True)
            cached += part.rows.size - missing.size
            tables[part.shard] = hit
        if missing.size:
            todo.append((part.shard, missing))
    return tables, todo, cached


def _run(
    manifest: Manifest,
    todo: list[tuple[str, np.ndarray]],
    tables: dict[str, pa.Table],
    result: InspectResult,
    workers: int,
    options: dict[str, Any],
    skip_bad: bool,
    reporter: Reporter,
    engine: ShardEngine | None = None,
) -> None:
    """Read the rows in ``todo`` (a process pool of ``workers``, or ``engine``; one shard per task) into
    ``tables``. ``options``: keyword arguments of ``inspect_shard``."""
    task = RowsAndBytes(reporter, "Inspecting images", int(sum(r.size for _, r in todo)), unit="images")

    def finish(shard: str, table: pa.Table) -> None:
        tables[shard] = bytefacts.merge_tables(tables.get(shard), table)
        result.read_rows += table.num_rows
        sizes = table.column("num_bytes") if "num_bytes" in table.column_names else pa.nulls(0, pa.int64())
        task.advance(table.num_rows, int(pc.sum(sizes).as_py() or 0))

    def failed(shard: str, rows: np.ndarray, exc: BadShardError) -> None:
        if not skip_bad:
            raise PartialError(
                f"cannot inspect {shard}: {exc}", "fix or re-download the shard, or add --skip-bad"
            )
        reporter.warn(f"{exc} (its {rows.size:,} rows get an inspect_error)")
        result.bad.append(exc)
        error = pa.array([f"unreadable shard: {exc.message}"] * rows.size, pa.string())
        empty = {
            n: pa.nulls(rows.size, t)
            for n, t in zip(bytefacts.FACT_COLUMNS, bytefacts.FACTS_SCHEMA.types[1:], strict=True)
        }
        tables[shard] = pa.table(
            {"row": pa.array(rows, pa.int64()), **empty, "inspect_error": error},
            schema=bytefacts.FACTS_SCHEMA,
        )

    args = [(manifest.root, s, manifest.shards.get(s), r) for s, r in todo]
    if engine is not None:
        _run_on(engine, manifest, args, options, finish, failed)
        task.close()
        return
    workers = workers if sum(r.size for _, r in todo) >= POOL_MIN_IMAGES else 1
    workers = planned_readers(min(workers, len(args)), reporter) if args else 1
    with closing(shared_work(partial(inspect_shard, **options), args, workers)) as done:
        for i, fut in done:  # closed on an error: the pool stops
            shard, rows = todo[i]
            try:
                finish(shard, fut.result())
            except BadShardError as exc:
                failed(shard, rows, exc)
    task.close()


def _run_on(
    engine: ShardEngine,
    manifest: Manifest,
    args: list[tuple[str, str, ShardInfo | None, np.ndarray]],
    options: dict[str, Any],
    finish: Any,
    failed: Any,
) -> None:
    """The shards on ``engine``: workers write no cache (they may not share this machine's), the driver does."""
    use_cache = options.get("use_cache", True)
    remote = {**options, "use_cache": False}
    if manifest.is_remote:  # workers use this process's Hub endpoint and token, not their own
        from cfx.sources import hub_filesystem

        remote["hub_fs"] = hub_filesystem()
    jobs = [(shard, (*a, remote)) for a in args for shard in (a[1],)]
    with closing(engine.run_jobs(inspect_job, jobs)) as done:  # closed on an error: the tasks stop
        for (root, shard, info, rows), (table, err) in zip(args, done, strict=True):
            if err is not None:
                failed(shard, rows, err)
                continue
            if use_cache:
                bytefacts.store_cached(root, shard, info, table)
            finish(shard, table)


def _join(df: pl.DataFrame, tables: dict[str, pa.Table]) -> pl.DataFrame:
    frames = []
    for shard, table in tables.items():
        f = pl.from_arrow(table.cast(bytefacts.FACTS_SCHEMA))
        assert isinstance(f, pl.DataFrame)
        frames.append(f.with_columns(pl.lit(shard, pl.String).alias("shard")))
    empty = pl.from_arrow(bytefacts.FACTS_SCHEMA.empty_table())
    assert isinstance(empty, pl.DataFrame)
    facts = pl.concat(frames) if frames else empty.with_columns(pl.lit(None, pl.String).alias("shard"))
    base = df.drop([c for c in (*bytefacts.FACT_COLUMNS, *CONSISTENCY_COLUMNS) if c in df.columns])
    return base.join(facts, on=["shard", "row"], how="left", maintain_order="left")


def _declared_size(df: pl.DataFrame) -> tuple[pl.Expr, pl.Expr]:
    """(first, second) number of the declared ``resolution`` as written (else width, height)."""
    if "resolution" in df.columns:
        parts = pl.col("resolution").cast(pl.String).str.extract_groups(r"(\d+)\D+(\d+)")
        return parts.struct.field("1").cast(pl.Int64, strict=False), parts.struct.field("2").cast(
            pl.Int64, strict=False
        )
    w = pl.col("width").cast(pl.Int64) if "width" in df.columns else pl.lit(None, pl.Int64)
    h = pl.col("height").cast(pl.Int64) if "height" in df.columns else pl.lit(None, pl.Int64)
    return w, h


def _sources(df: pl.DataFrame) -> list[str]:
    return df.select(source_expr(df.columns).unique()).to_series().drop_nulls().to_list()


def consistency(
    df: pl.DataFrame, known_orders: dict[str, str] | None = None
) -> tuple[pl.DataFrame, dict[str, str]]:
    """Add the CONSISTENCY_COLUMNS; returns the frame and the sources whose ``resolution`` reads [h, w]."""
    d1, d2 = _declared_size(df)
    hw_, hh_ = pl.col("header_width").cast(pl.Int64), pl.col("header_height").cast(pl.Int64)
    frame = df.with_columns(
        source_expr(df.columns).alias("__src"),
        (d1.is_not_null() & d2.is_not_null() & hw_.is_not_null() & hh_.is_not_null()).alias("__known"),
        ((hw_ == d1) & (hh_ == d2)).alias("__same"),
        ((hw_ == d2) & (hh_ == d1)).alias("__swap"),
    )
    transposed = _transposed_sources(frame)
    swap = pl.col("__src").is_in(list(transposed))
    fmt = _declared_format(df)
    mode = _declared_mode(df)
    frame = frame.with_columns(
        pl.when(pl.col("__known"))
        .then(~pl.when(swap).then(pl.col("__swap")).otherwise(pl.col("__same")))
        .alias("size_mismatch"),
        pl.when(fmt.is_not_null() & pl.col("actual_format").is_not_null())
        .then(fmt != pl.col("actual_format"))
        .alias("format_mismatch"),
        pl.when(mode.is_not_null() & pl.col("header_mode").is_not_null())
        .then(mode != pl.col("header_mode").replace(_MODE_ALIASES))
        .alias("mode_mismatch"),
    )
    return frame.drop("__src", "__known", "__same", "__swap"), transposed


def _transposed_sources(frame: pl.DataFrame) -> dict[str, str]:
    nonsq = pl.col("__known") & (pl.col("header_width") != pl.col("header_height"))
    per = frame.group_by("__src").agg(
        nonsq.sum().alias("n"),
        (nonsq & pl.col("__swap")).sum().alias("swap"),
        (nonsq & pl.col("__same")).sum().alias("same"),
    )
    hit = per.filter(
        (pl.col("n") > 0)
        & (pl.col("swap") >= TRANSPOSED_SHARE * pl.col("n"))
        & (pl.col("swap") > pl.col("same"))
    )
    return {str(s): "hw" for s in hit.get_column("__src").to_list() if s is not None}


def _declared_format(df: pl.DataFrame) -> pl.Expr:
    if "format" not in df.columns:
        return pl.lit(None, pl.String)
    return pl.col("format").cast(pl.String).str.to_uppercase().replace(_FORMAT_ALIASES)


def _declared_mode(df: pl.DataFrame) -> pl.Expr:
    if "mode" not in df.columns:
        return pl.lit(None, pl.String)
    return pl.col("mode").cast(pl.String).replace(_MODE_ALIASES)


# --- summary ---------------------------------------------------------------------------------------
def _counts(df: pl.DataFrame, column: str) -> dict[str, int]:
    vc = df.get_column(column).cast(pl.String).fill_null("(none)").value_counts(sort=True)
    return {str(v): int(n) for v, n in vc.iter_rows()}


def summarize(result: InspectResult) -> dict[str, Any]:
    """The `inspect --json` summary: formats, quality per label, mismatches, metadata, errors."""
    df = result.manifest.df
    keys = df.get_column("text_chunks").explode().drop_nulls()
    return {
        "rows": df.height,
        "read_now": result.read_rows,
        "from_cache": result.cached_rows,
        "inspect_errors": int(df.get_column("inspect_error").is_not_null().sum()),
        "actual_format": _counts(df, "actual_format"),
        "jpeg_quality": quality_histogram(df),
        "jpeg_quality_exact": _counts(df.filter(pl.col("jpeg_quality").is_not_null()), "jpeg_quality_exact"),
        "chroma_subsampling": _counts(
            df.filter(pl.col("chroma_subsampling").is_not_null()), "chroma_subsampling"
        ),
        "progressive": int(df.get_column("progressive").fill_null(False).sum()),
        "mismatches": {
            c.removesuffix("_mismatch"): int(df.get_column(c).fill_null(False).sum())
            for c in CONSISTENCY_COLUMNS
        },
        "resolution_order": {s: "[h, w]" for s in sorted(result.transposed)},
        **{
            c: int(df.get_column(c).fill_null(False).sum())
            for c in ("has_exif", "has_gps", "has_icc", "has_c2pa")
        },
        "text_chunks": {str(k): int(n) for k, n in keys.value_counts(sort=True).iter_rows()},
        "bad_shards": [e.shard for e in result.bad],
        **({"pixels": pixel_summary(df, result.decoded)} if "pixel_error" in df.columns else {}),
    }


def pixel_summary(df: pl.DataFrame, decoded: int) -> dict[str, Any]:
    """The pixel facts part of the summary: medians per label, dims grids, encoders, errors."""
    medians: dict[str, dict[str, float | None]] = {}
    for name, value in (("real", REAL), ("generated", GENERATED)):
        part = df.filter(pl.col("label") == value) if "label" in df.columns else df.clear()
        row = part.select(pl.col(c).median() for c in pixelfacts.FLOAT_COLUMNS).row(0)
        medians[name] = {
            c: None if v is None else round(float(v), 4)
            for c, v in zip(pixelfacts.FLOAT_COLUMNS, row, strict=True)
        }
    return {
        "decoded_now": decoded,
        "pixel_errors": int(df.get_column("pixel_error").is_not_null().sum()),
        "median": medians,
        "dims_multiple_of": _counts(df, "dims_multiple_of"),
        "qtable_id": _counts(df.filter(pl.col("qtable_id").is_not_null()), "qtable_id"),
        "exif_software": _counts(df.filter(pl.col("exif_software").is_not_null()), "exif_software"),
    }
