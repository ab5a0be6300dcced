"""What the per-shard passes need from a distributed engine (cfx.engine_ray.RayEngine is the one there is).

``cfx.index``, ``cfx.hashing``, ``cfx.inspect``, ``cfx.subset`` (with ``cfx.subset_parts``) and ``cfx.export``
hold the pure per-shard functions and run them locally or, given an engine, on a cluster. They know the engine
only through this protocol, so the engine depends on them and never the other way round (no import of
``cfx.engine_ray`` outside the CLI and the engine itself).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from cfx.errors import BadShardError
    from cfx.manifest import ShardInfo
    from cfx.sources import ShardRef


class HashedShard(NamedTuple):
    """One shard's result of ``ShardEngine.hash_shards``: its hash table or its error, and the byte facts read
    from the same bytes (``with_facts``) for the caller to store in its facts cache."""

    shard: str
    rows: np.ndarray  # the rows asked for
    table: pa.Table | None  # None when ``error``
    facts: pa.Table | None  # None unless ``with_facts`` (and no error)
    decoded: int
    error: BadShardError | None
    pixels: pa.Table | None = None  # pixel facts of the same decode (``with_pixels`` in the options)


class ShardEngine(Protocol):
    def scan_shards(
        self, shards: list[tuple[int, ShardRef]], fs: Any, with_num_bytes: bool
    ) -> Iterator[tuple[int, Any, list[str], BadShardError | None]]:
        """``cfx.index.scan_shard`` of each shard: (key, frame or None, warnings, error)."""
        ...

    def hash_shards(
        self,
        root: str,
        todo: list[tuple[str, ShardInfo | None, np.ndarray]],
        options: dict[str, Any],
        with_facts: bool,
    ) -> Iterator[HashedShard]:
        """``cfx.hashing.shard_hashes_and_facts`` of the given rows of each shard. Writes no cache: workers
        may not share the caller's cache folder."""
        ...

    def run_jobs(
        self, fn: Callable[..., Any], jobs: Iterable[tuple[str, Any]], out_dir: str | None = None
    ) -> Generator[Any, None, None]:
        """``fn(job, None)`` of each ``(name, job)`` on the cluster (``fn`` importable, safe to run twice: a
        dead worker's job runs again), results in job order; a CfxError it raises is raised here. ``out_dir``
        is a folder the jobs write into: refused (OutputError) on a worker that cannot see it."""
        ...

    def write_subset_parts(self, *args: Any) -> None:
        """``cfx.subset_parts.write_on(self, *args)``: a subset's rows read (and transformed) on the cluster into
        part files, written here in order (cfx.subset calls it so that it never imports cfx.subset_parts,
        which builds on it)."""
        ...
