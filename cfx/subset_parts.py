"""``cfx subset`` on an engine (cfx.engine_ray): one part file per source shard, written by the workers into the
output's build folder, then written into the parquet files by this process, in order.

A parquet output's row groups and files span source shards (cut at ``--row-group-size`` rows and
``--max-shard-size`` bytes of the whole stream), so they cannot be cut per shard without changing the files.
Each task (``write_part``) runs the local engine's stream for its shard — ``cfx.subset._shard_batches`` (read in
small batches, the null/empty-image check) and, with a transform, a one-process ``TransformStage`` — and saves
the record batches it yields, as they are, in an Arrow IPC file (one batch per row for a shuffle, as the local
spill). ``write_on`` feeds the parts' batches, in source order, to the same row-group and file writer as the
local engine, so the files are the same bytes. Only the workers read and transform; this process copies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

from cfx.errors import OutputError
from cfx.manifest import Manifest, ShardInfo
from cfx.subset import (
    ShardPlan,
    SubsetPlan,
    _BadImages,
    _shard_batches,
    _shard_rows,
    _SplitRowGroups,
    _transform_stage,
)
from cfx.transform_stage import shuffle_order

if TYPE_CHECKING:
    from cfx.engine import ShardEngine
    from cfx.transform import Pipeline
    from cfx.transform_stage import TransformStage

_PARTS_DIR = ".parts"


@dataclass
class PartJob:
    """One source shard's selected rows for ``write_part``: read, checked, transformed, spilled to ``path``."""

    root: str
    shards: dict[str, ShardInfo]  # this shard's fingerprint, for the check in cfx.stream
    plan: ShardPlan
    rows: np.ndarray
    splits: np.ndarray | None
    source_schema: pa.Schema
    schema: pa.Schema  # the stream's: output schema (+ SPLIT_INDEX)
    provenance: bool
    drop_bad_images: bool
    transform: Pipeline | None
    seed: int
    skip_bad: bool
    path: str
    one_row_batches: bool  # shuffle: one record batch per row, as the local spill
    hub_fs: Any = None


@dataclass
class Part:
    """What ``write_part`` wrote (``rows`` rows in ``path``) and found on the way."""

    path: str
    rows: int
    bad_images: _BadImages
    stage: TransformStage | None


def write_part(job: PartJob, progress: Any = None) -> Part:
    """The rows of one source shard, as the local engine's stream has them (``_shard_batches`` and, with a
    transform, a one-process TransformStage), into an Arrow IPC file: the batches as they come, or one per
    row for a shuffle. Positions it records start at 0 (the caller shifts them). Safe to run again."""
    source = Manifest(df=pl.DataFrame(), root=job.root, shards=job.shards)
    bad = _BadImages(drop=job.drop_bad_images)
    stage = _transform_stage(job.transform, job.seed, 1, job.skip_bad)
    keyed = _shard_batches(
        source,
        job.plan,
        job.rows,
        job.splits,
        job.source_schema,
        job.schema,
        job.provenance,
        bad,
        0,
        job.hub_fs,
    )
    written = 0
    with pa.OSFile(job.path, "wb") as sink, ipc.new_file(sink, job.schema) as writer:
        for kb in stage.run(keyed) if stage is not None else keyed:
            if job.one_row_batches:
                for i in range(kb.batch.num_rows):
                    writer.write_batch(kb.batch.slice(i, 1))
            else:
                writer.write_batch(kb.batch)
            written += kb.batch.num_rows
            if progress is not None:
                progress(kb.batch.num_rows)
    return Part(job.path, written, bad, stage)


def _part_jobs(
    plan: SubsetPlan,
    source: Manifest,
    schema: pa.Schema,
    provenance: bool,
    bad_images: _BadImages,
    stage: TransformStage | None,
    tmp: Path,
) -> Iterator[tuple[str, PartJob]]:
    hub_fs = None
    if source.is_remote:  # workers use this process's Hub endpoint and token, not their own
        from cfx.sources import hub_filesystem

        hub_fs = hub_filesystem()
    (tmp / _PARTS_DIR).mkdir()
    for i, sp in enumerate(plan.shards):
        rows, splits = _shard_rows(plan, sp.shard)
        info = source.shards.get(sp.shard)
        yield (
            sp.shard,
            PartJob(
                root=source.root,
                shards={sp.shard: info} if info is not None else {},
                plan=sp,
                rows=rows,
                splits=splits,
                source_schema=plan.schema,
                schema=schema,
                provenance=provenance,
                drop_bad_images=bad_images.drop,
                transform=stage.pipeline if stage is not None else None,
                seed=stage.seed if stage is not None else 0,
                skip_bad=stage.skip_bad if stage is not None else False,
                path=str(tmp / _PARTS_DIR / f"{i:06d}.arrow"),
                one_row_batches=plan.order == "shuffle",
                hub_fs=hub_fs,
            ),
        )


def write_on(
    engine: ShardEngine,
    plan: SubsetPlan,
    source: Manifest,
    schema: pa.Schema,
    provenance: bool,
    groups: _SplitRowGroups,
    tmp: Path,
    bad_images: _BadImages,
    stage: TransformStage | None,
) -> None:
    """The rows to write, read (and transformed) on ``engine``, one ``write_part`` per source shard into the
    build folder (it must be on a file system every node sees; the engine refuses otherwise), then written here
    in order: the row groups and files cut where the local engine cuts them, so the bytes are the same."""
    parts: list[Part] = []
    position = 0
    jobs = _part_jobs(plan, source, schema, provenance, bad_images, stage, tmp)
    # closed on an error before the build folder goes: the tasks in flight are stopped first
    with contextlib.closing(engine.run_jobs(write_part, jobs, out_dir=str(tmp))) as done:
        for sp, part in zip(plan.shards, done, strict=True):
            bad_images.merge(part.bad_images, position)
            position += sp.rows
            if stage is not None and part.stage is not None:
                stage.merge(part.stage)
            if plan.order == "shuffle":
                parts.append(part)
            else:
                _write_part_rows(part, groups)
    if plan.order == "shuffle":
        _write_parts_shuffled(plan, parts, groups, bad_images, stage)
    shutil.rmtree(tmp / _PARTS_DIR, ignore_errors=True)


def _write_part_rows(part: Part, groups: _SplitRowGroups) -> None:
    """A part's record batches, as they were saved, into the row groups; then the part goes."""
    with pa.OSFile(part.path, "rb") as src:
        reader = ipc.open_file(src)
        for i in range(reader.num_record_batches):
            groups.add(reader.get_batch(i))
    os.unlink(part.path)


def _write_parts_shuffled(
    plan: SubsetPlan,
    parts: list[Part],
    groups: _SplitRowGroups,
    bad_images: _BadImages,
    stage: TransformStage | None,
) -> None:
    """The parts' rows (one record batch per row) in the shuffled order, as ``_write_shuffled`` writes its
    spill; at most ``_OPEN_PARTS`` part files open at once."""
    assert plan.source_index is not None
    dropped = bad_images.dropped_positions()
    order = shuffle_order(plan.source_index, dropped, plan.rows)
    if stage is not None:
        order = shuffle_order(order, stage.skipped_positions, plan.rows - len(dropped))
    ends = np.cumsum([p.rows for p in parts])
    if (int(ends[-1]) if len(ends) else 0) != len(order):
        raise OutputError(
            f"the parts hold {int(ends[-1]) if len(ends) else 0:,} rows, not {len(order):,}",
            "this is a bug in cfx; please report it with CFX_DEBUG=1",
        )
    with _PartReaders([p.path for p in parts]) as readers:
        for i in order.tolist():
            k = int(np.searchsorted(ends, i, side="right"))
            groups.add(readers.get(k).get_batch(i - (int(ends[k - 1]) if k else 0)))


_OPEN_PARTS = 64


class _PartReaders(contextlib.AbstractContextManager["_PartReaders"]):
    """Arrow IPC readers of part files, opened on demand, the least recently used closed past _OPEN_PARTS."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.open: dict[int, tuple[pa.NativeFile, ipc.RecordBatchFileReader]] = {}

    def get(self, k: int) -> ipc.RecordBatchFileReader:
        if k in self.open:
            self.open[k] = self.open.pop(k)  # most recently used last
            return self.open[k][1]
        if len(self.open) >= _OPEN_PARTS:
            oldest = next(iter(self.open))
            self.open.pop(oldest)[0].close()
        src = pa.OSFile(self.paths[k], "rb")
        self.open[k] = (src, ipc.open_file(src))
        return self.open[k][1]

    def __exit__(self, *exc: object) -> None:
        for src, _ in self.open.values():
            src.close()
        self.open.clear()
