"""One entry point for every command: turn a SOURCE argument into a Manifest."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cfx.errors import InputError
from cfx.index import build_manifest, raise_for_bad
from cfx.lineage import note_input
from cfx.manifest import Manifest, is_manifest_file, read_manifest, read_manifest_stream
from cfx.progress import NullReporter, Reporter
from cfx.schema import CORE_COLUMNS
from cfx.sources import resolve

if TYPE_CHECKING:
    from cfx.engine import ShardEngine


def load_manifest(
    spec: str,
    *,
    token: str | None = None,
    skip_bad: bool = False,
    workers: int = 4,
    with_num_bytes: bool = False,
    use_cache: bool = True,
    engine: ShardEngine | None = None,
    reporter: Reporter | None = None,
) -> Manifest:
    """A saved manifest, '-' (a manifest on stdin), or a dataset source indexed on the fly (cached)."""
    reporter = reporter or NullReporter()
    if spec == "-":
        manifest = read_manifest_stream(sys.stdin.buffer)
    elif spec.endswith(".parquet") and Path(spec).is_file() and is_manifest_file(Path(spec)):
        manifest = read_manifest(Path(spec))
    else:
        result = build_manifest(
            resolve(spec, token=token),
            with_num_bytes=with_num_bytes,
            workers=workers,
            use_cache=use_cache,
            engine=engine,
            reporter=reporter,
        )
        raise_for_bad(result, skip_bad, reporter)
        note_input(spec, result.manifest)
        return result.manifest
    missing = [c for c in ("shard", "row") if c not in manifest.df.columns]
    if missing:
        raise InputError(
            f"{spec}: manifest lacks column(s) {', '.join(missing)}", "re-create it with `cfx index`"
        )
    note_input(spec, manifest)
    return manifest


__all__ = ["load_manifest", "CORE_COLUMNS"]
