"""Resolve a SOURCE argument: a dataset folder, a shard file or glob, a manifest, '-' or hf://datasets/ORG/REPO.

Shard paths are always kept relative to a dataset root so a manifest stays valid when the whole dataset folder
is moved with it (pass the new root) and so local and Hub copies of the same repo give the same ``shard`` values.
"""

from __future__ import annotations

import fnmatch
import glob as globlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfx.errors import InputError, UsageError
from cfx.manifest import ShardInfo

HF_PREFIX = "hf://"
_HF_RE = re.compile(
    r"^hf://(?P<kind>datasets)/(?P<org>[^/@]+)/(?P<repo>[^/@]+)(?:@(?P<rev>[^/]+))?(?P<path>/.*)?$"
)
# Files under these folder names are dataset metadata (licence tables etc.), not image shards.
_NOT_SHARD_DIRS = {"metadata", ".cfx", "ground_truth"}
_NOT_SHARD_FILES = {"manifest.parquet"}


@dataclass(frozen=True)
class ShardRef:
    """One parquet shard: ``rel`` is relative to the dataset root, ``path`` is what to open."""

    rel: str
    path: str
    info: ShardInfo


@dataclass
class DatasetSource:
    root: str  # absolute local folder, or hf://datasets/ORG/REPO@COMMIT
    shards: list[ShardRef]
    fs: Any = None  # an HfFileSystem for remote sources, None for local files

    @property
    def is_remote(self) -> bool:
        return self.fs is not None


def natural_key(path: str) -> tuple[Any, ...]:
    """Sort HFCF_small_2 before HFCF_small_10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path))


def _is_shard_rel(rel: str) -> bool:
    parts = Path(rel).parts
    return (
        rel.endswith(".parquet")
        and not (set(parts[:-1]) & _NOT_SHARD_DIRS)
        and parts[-1] not in _NOT_SHARD_FILES
    )


def _local_ref(root: Path, path: Path) -> ShardRef:
    st = path.stat()
    rel = path.relative_to(root).as_posix()
    return ShardRef(rel=rel, path=str(path), info=ShardInfo(size=st.st_size, mtime_ns=st.st_mtime_ns))


def _root_for_file(path: Path) -> Path:
    """The dataset root of a shard file: the folder above ``data/`` when the file sits under one."""
    for parent in path.parents:
        if parent.name == "data":
            return parent.parent
    return path.parent


def resolve_local(spec: str) -> DatasetSource:
    path = Path(spec).expanduser()
    if any(ch in spec for ch in "*?["):
        files = sorted(
            (Path(p).resolve() for p in globlib.glob(spec, recursive=True)), key=lambda p: natural_key(str(p))
        )
        files = [p for p in files if p.is_file()]
        if not files:
            raise InputError(
                f"no files match {spec!r}", "check the glob; quote it so the shell does not expand it"
            )
        roots = {_root_for_file(p) for p in files}
        root = roots.pop() if len(roots) == 1 else Path(os.path.commonpath([str(p.parent) for p in files]))
        return DatasetSource(root=str(root), shards=[_local_ref(root, p) for p in files])
    if not path.exists():
        raise InputError(
            f"{spec} does not exist", "check the path, or download shards with `cfx download --out DIR`"
        )
    path = path.resolve()
    if path.is_file():
        root = _root_for_file(path)
        return DatasetSource(root=str(root), shards=[_local_ref(root, path)])
    base = path / "data" if (path / "data").is_dir() else path
    files = [
        p for p in base.rglob("*.parquet") if p.is_file() and _is_shard_rel(p.relative_to(path).as_posix())
    ]
    files.sort(key=lambda p: natural_key(p.relative_to(path).as_posix()))
    if not files:
        raise InputError(
            f"{spec} holds no parquet shards",
            "point at a dataset folder (with data/*.parquet) or download some with `cfx download --out DIR`",
        )
    return DatasetSource(root=str(path), shards=[_local_ref(path, p) for p in files])


@dataclass(frozen=True)
class HubSpec:
    repo_id: str
    revision: str | None
    path: str | None  # a file or glob inside the repo

    @classmethod
    def parse(cls, spec: str) -> HubSpec:
        m = _HF_RE.match(spec)
        if not m:
            raise UsageError(
                f"{spec!r} is not a Hub dataset address",
                "write hf://datasets/ORG/REPO, optionally @REVISION and a path, e.g. "
                "hf://datasets/OwensLab/CommunityForensics-Small@main/data/HFCF_small_0.parquet",
            )
        path = (m["path"] or "").strip("/") or None
        return cls(repo_id=f"{m['org']}/{m['repo']}", revision=m["rev"], path=path)


def resolve_remote(spec: str, token: str | None = None) -> DatasetSource:
    """List the parquet shards of a Hub dataset at one commit; read them through HfFileSystem.

    Listing, retries and error messages are shared with ``cfx download`` (``cfx.download.resolve_repo``);
    HfFileSystem honours ``HF_ENDPOINT`` and ``HF_TOKEN``, unlike polars' native hf:// reader.
    """

    from cfx.download import resolve_repo

    hub = HubSpec.parse(spec)
    commit, files = resolve_repo(hub.repo_id, hub.revision, token=token)
    if hub.path:
        pattern = hub.path
        chosen = [f for f in files if fnmatch.fnmatchcase(f.path, pattern) or f.path == pattern]
        if not chosen:
            raise InputError(
                f"{spec}: no file matches {pattern!r} at revision {commit[:12]}",
                "check the path after the repo name, e.g. data/HFCF_small_0.parquet or 'data/*.parquet'",
            )
    else:
        chosen = [f for f in files if _is_shard_rel(f.path)]
    chosen = [f for f in chosen if f.path.endswith(".parquet")]
    if not chosen:
        raise InputError(
            f"{spec} holds no parquet shards at revision {commit[:12]}", "check the repo and path"
        )
    base = f"datasets/{hub.repo_id}@{commit}"
    refs = [
        ShardRef(rel=f.path, path=f"{base}/{f.path}", info=ShardInfo(size=f.size, etag=f.sha256 or f.blob_id))
        for f in sorted(chosen, key=lambda f: natural_key(f.path))
    ]
    fs = hub_filesystem(token)
    return DatasetSource(root=f"hf://datasets/{hub.repo_id}@{commit}", shards=refs, fs=fs)


def hub_filesystem(token: str | None = None) -> Any:
    """An HfFileSystem that names its endpoint and token explicitly, so a copy pickled to another process
    or a Ray worker on another node talks to the same Hub as this one (fsspec pickles the constructor's
    arguments, and a worker's own HF_ENDPOINT / HF_TOKEN may differ or be unset)."""
    from huggingface_hub import HfFileSystem, constants, get_token

    return HfFileSystem(endpoint=constants.ENDPOINT, token=token or get_token(), block_size=1 << 20)


def is_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a failure of the Hub or of the way to it (connection, timeout,
    HTTP error status such as 429/503/401) rather than bad data."""
    import httpx2

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (httpx2.HTTPError, ConnectionError, TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def resolve(spec: str, token: str | None = None) -> DatasetSource:
    if spec.startswith(HF_PREFIX):
        return resolve_remote(spec, token=token)
    return resolve_local(spec)
