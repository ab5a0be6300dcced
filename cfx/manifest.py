"""The manifest: one row per image (metadata + a ``shard``/``row`` pointer), never image bytes.

A manifest travels as parquet (``-o file.parquet``) or as an Arrow IPC stream (pipes). Either way it carries
``cfx`` schema metadata: the dataset root the ``shard`` paths are relative to and a fingerprint per shard,
so later commands can find the bytes again and notice when a shard moved or changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from cfx import __version__
from cfx.errors import InputError
from cfx.outputs import (  # ensure_folder, write_atomic re-exported: the output layer lives in cfx.outputs
    ensure_folder,
    metadata_folders,
    write_atomic,
)

META_KEY = b"cfx"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShardInfo:
    """How to recognise a shard again: size always; mtime for local files, etag for Hub files."""

    size: int
    mtime_ns: int | None = None
    etag: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (("size", self.size), ("mtime_ns", self.mtime_ns), ("etag", self.etag))
            if v is not None
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ShardInfo:
        return cls(size=int(d["size"]), mtime_ns=d.get("mtime_ns"), etag=d.get("etag"))


@dataclass
class Manifest:
    """``df`` has the columns of ``cfx.schema.MANIFEST_SCHEMA`` (plus any added later).

    ``root`` is an absolute local folder or ``hf://datasets/ORG/REPO@COMMIT``; ``shards`` maps each
    shard path (relative to root) to its fingerprint. ``history`` lists the library steps that made it;
    ``lineage`` the cfx commands that wrote it, with their inputs (cfx.lineage).
    """

    df: pl.DataFrame
    root: str
    shards: dict[str, ShardInfo] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    lineage: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return self.df.height

    def with_df(self, df: pl.DataFrame, step: str | None = None) -> Manifest:
        """A new manifest over the same shards; ``shards`` keeps only the ones still referenced."""
        used = set(df.get_column("shard").unique().to_list()) if df.height else set()
        shards = {k: v for k, v in self.shards.items() if k in used}
        history = [*self.history, step] if step else list(self.history)
        return Manifest(df=df, root=self.root, shards=shards, history=history, lineage=list(self.lineage))

    def with_lineage(self, entry: dict[str, Any]) -> Manifest:
        """The same manifest with one more lineage entry (cfx.lineage.entry)."""
        lineage = [*self.lineage, entry]
        return Manifest(df=self.df, root=self.root, shards=self.shards, history=self.history, lineage=lineage)

    def shard_path(self, shard: str) -> str:
        """Where the shard's bytes are: a local path or an hf:// URL."""
        if self.root.startswith("hf://"):
            return f"{self.root}/{shard}"
        return str(Path(self.root) / shard)

    @property
    def is_remote(self) -> bool:
        return self.root.startswith("hf://")

    # --- serialisation -------------------------------------------------------------------------
    def _meta(self) -> bytes:
        return json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "cfx_version": __version__,
                "root": self.root,
                "shards": {k: v.to_json() for k, v in sorted(self.shards.items())},
                "history": self.history,
                "lineage": self.lineage,
            }
        ).encode()

    def to_arrow(self) -> pa.Table:
        table = self.df.to_arrow()
        meta = dict(table.schema.metadata or {})
        meta[META_KEY] = self._meta()
        return table.replace_schema_metadata(meta)

    def write(self, path: Path) -> None:
        """Write as parquet, atomically (temp file + rename)."""
        write_atomic(path, lambda tmp: pq.write_table(self.to_arrow(), tmp, compression="zstd"))

    def write_ipc(self, stream: IO[bytes]) -> None:
        table = self.to_arrow()
        with ipc.new_stream(stream, table.schema) as writer:
            writer.write_table(table)


def _from_arrow(table: pa.Table, origin: str) -> Manifest:
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise InputError(
            f"{origin} is not a cfx manifest (no cfx metadata)",
            "make one with `cfx index SOURCE -o manifest.parquet`, or pass the dataset folder instead",
        )
    meta = json.loads(raw)
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(f"{origin} was written by a newer cfx ({meta.get('cfx_version')})", "upgrade cfx")
    df = pl.from_arrow(table.replace_schema_metadata(None))
    assert isinstance(df, pl.DataFrame)
    return Manifest(
        df=df,
        root=meta["root"],
        shards={k: ShardInfo.from_json(v) for k, v in meta.get("shards", {}).items()},
        history=list(meta.get("history", [])),
        lineage=[e for e in meta.get("lineage", []) if isinstance(e, dict)],
    )


def is_manifest_file(path: Path) -> bool:
    """True when ``path`` is a parquet file carrying cfx manifest metadata (reads the footer only)."""
    try:
        schema = pq.read_schema(path)
    except Exception:
        return False
    return META_KEY in (schema.metadata or {})


def read_manifest(path: Path) -> Manifest:
    try:
        table = pq.ParquetFile(path).read()  # not pq.read_table: pyarrow.dataset costs ~0.4 s to import
    except FileNotFoundError:
        raise InputError(f"{path} does not exist", "check the path") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(
            f"{path} is not a readable parquet file ({exc})", "pass a manifest written by cfx"
        ) from None
    return _from_arrow(table, str(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def read_manifest_stream(stream: IO[bytes], origin: str = "stdin") -> Manifest:
    try:
        data = stream.read()
    except OSError as exc:
        raise InputError(f"cannot read {origin}: {exc}", "pipe a manifest from another cfx command") from None
    if not data:
        raise InputError(
            f"{origin} is empty: no manifest was piped in",
            "pipe one from another cfx command, e.g. `cfx slice data/ --head 100 | cfx stats -`",
        )
    buf = pa.BufferReader(data)
    if data[:4] == b"PAR1":
        try:
            return _from_arrow(pq.ParquetFile(buf).read(), origin)
        except (pa.ArrowInvalid, OSError) as exc:  # ArrowIOError is an OSError: a truncated file
            raise InputError(
                f"{origin} is not a readable parquet manifest ({_first_line(exc)})",
                "it is truncated or garbled; pipe a whole cfx manifest",
            ) from None
    try:
        table = ipc.open_stream(buf).read_all()
    except (pa.ArrowInvalid, OSError) as exc:  # garbage, or a stream cut short (`head -c`)
        raise InputError(
            f"{origin} is not a cfx manifest (Arrow IPC stream): it is truncated or garbled "
            f"({_first_line(exc)})",
            "pipe the whole output of a cfx command, e.g. `cfx slice data/ --head 100 | cfx stats -`",
        ) from None
    return _from_arrow(table, origin)


__all__ = [
    "FORMAT_VERSION",
    "META_KEY",
    "Manifest",
    "ShardInfo",
    "ensure_folder",
    "is_manifest_file",
    "read_manifest",
    "read_manifest_stream",
    "source_inputs",
    "write_atomic",
]


# --- what a command reads (cfx.outputs refuses outputs onto these) -------------------------------------
def source_inputs(spec: str | None, manifest: Manifest | None = None) -> list[Path]:
    """The local paths a command reads for SOURCE ``spec``: the path itself (a manifest file, a shard, a
    dataset folder, each file of a glob) and every shard file the manifest points at. Remote: none."""
    found: list[Path] = []
    if spec and spec != "-" and not spec.startswith("hf://"):
        if any(ch in spec for ch in "*?["):
            import glob as globlib

            found.extend(Path(p) for p in globlib.glob(spec, recursive=True))
        else:
            found.append(Path(spec).expanduser())
    if manifest is not None and not manifest.is_remote:
        shards = manifest.shards.keys() or _df_shards(manifest)
        found.extend(Path(manifest.root) / s for s in shards)
        # the licence tables `cfx licenses` and the selecting commands read from the dataset itself
        found.extend(p for p in metadata_folders(Path(manifest.root)) if p.is_dir())
    return found


def _df_shards(manifest: Manifest) -> list[str]:
    if "shard" not in manifest.df.columns or not manifest.df.height:
        return []
    return [str(s) for s in manifest.df.get_column("shard").unique().to_list()]
