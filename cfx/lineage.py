"""How a manifest was made: one lineage entry per cfx command that wrote it (command line, version, inputs).

Every manifest a command writes carries its source's entries plus one of its own, so any manifest can say how
it was made (``cfx report`` shows them; a subset's card lists them). An entry holds no time and no machine
detail, and the options that change only how the work runs (``--engine``, ``--ray-address``, ``--workers``,
``--quiet``) are left out of its command line: the same inputs and options give byte-identical outputs on
either engine.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cfx import __version__

if TYPE_CHECKING:
    from cfx.manifest import Manifest

# Options that say how a command runs, not what it computes: (option, takes a value).
RUN_OPTIONS: dict[str, bool] = {
    "--engine": True,
    "--ray-address": True,
    "--workers": True,
    "-w": True,
    "--quiet": False,
    "-q": False,
}
# A manifest file up to this size is fingerprinted by its SHA-256 (a 556k-row manifest is ~50 MB).
_HASH_LIMIT = 1 << 30


def reproducible_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` without the options that change only how the work runs (see RUN_OPTIONS)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name, eq, _ = arg.partition("=")
        if name in RUN_OPTIONS:
            skip = RUN_OPTIONS[name] and not eq
            continue
        out.append(arg)
    return out


def command_text(argv: Sequence[str]) -> str:
    """The command line as the user would type it, run options left out: ``cfx subset m.parquet --out x``."""
    return shlex.join(["cfx", *reproducible_argv(argv)])


def _file_digest(path: Path) -> str | None:
    try:
        if path.stat().st_size > _HASH_LIMIT:
            return None
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def shards_digest(manifest: Manifest) -> str:
    """SHA-256 of the manifest's shard fingerprints (path, size, mtime or etag): which bytes it points at."""
    data = json.dumps({k: v.to_json() for k, v in sorted(manifest.shards.items())}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()


def input_fingerprint(spec: str, manifest: Manifest) -> dict[str, Any]:
    """What a command read: its SOURCE as given, the dataset root and shard digest, and the manifest file's
    SHA-256 when SOURCE is a saved manifest."""
    out: dict[str, Any] = {
        "source": spec,
        "root": manifest.root,
        "rows": len(manifest),
        "shards": len(manifest.shards),
        "shards_sha256": shards_digest(manifest),
    }
    path = Path(spec)
    if spec != "-" and path.is_file():
        digest = _file_digest(path)
        if digest is not None:
            out["sha256"] = digest
    return out


def entry(command: str, inputs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One lineage entry: the command line (run options left out), the cfx version and the inputs read."""
    return {"command": command, "cfx_version": __version__, "inputs": list(inputs)}


def describe(item: Any) -> str:
    """One line for an entry of a manifest's history or lineage (a string stays as it is)."""
    if isinstance(item, dict):
        return str(item.get("command") or json.dumps(item, sort_keys=True))
    return str(item)


# --- the inputs the running command has read (the CLI records one entry per written manifest) ------------
_inputs: list[dict[str, Any]] = []


def note_input(spec: str, manifest: Manifest) -> None:
    """Remember that this command read ``spec`` (called by cfx.load for every SOURCE it loads)."""
    fp = input_fingerprint(spec, manifest)
    if fp not in _inputs:
        _inputs.append(fp)


def noted_inputs() -> list[dict[str, Any]]:
    return list(_inputs)


def reset() -> None:
    """Forget the inputs of an earlier command (the CLI calls this when a command starts)."""
    _inputs.clear()
