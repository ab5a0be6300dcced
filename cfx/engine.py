"""What the per-shard passes need from a distributed engine (cfx.engine_ray.RayEngine is the one there is).

``cfx.index`` and ``cfx.hashing`` hold the pure per-shard functions and run them locally or, given an engine,
on a cluster. They know the engine only through this protocol, so the engine depends on them and never the
other way round (no import of ``cfx.engine_ray`` outside the CLI and the engine itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from cfx.errors import BadShardError
    from cfx.manifest import ShardInfo
    from cfx.sources import ShardRef


class ShardEngine(Protocol):
    def scan_shards(
        self, shards: list[tuple[int, ShardRef]], fs: Any, with_num_bytes: bool
    ) -> Iterator[tuple[int, Any, list[str], BadShardError | None]]:
        """``cfx.index.scan_shard`` of each shard: (key, frame or None, warnings, error)."""
        ...

    def hash_shards(
        self, root: str, todo: list[tuple[str, ShardInfo | None, np.ndarray]], options: dict[str, Any]
    ) -> Iterator[tuple[str, np.ndarray, pa.Table | None, int, BadShardError | None]]:
        """``cfx.hashing.hash_shard`` of the given rows of each shard: (shard, rows, table, decoded, error)."""
        ...
