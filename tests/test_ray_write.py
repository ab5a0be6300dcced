"""--engine ray for the passes that read image bytes: inspect, subset and export write the same bytes as the local
engine (file by file), a Ray worker killed mid-write is retried or fails the command cleanly, a shard changed
after planning is named, and hf:// sources are read by workers with the driver's Hub settings.

The session's real Ray cluster (`ray start --head`, 2 CPUs; tests/conftest.py ``ray_cluster``) runs the tasks;
this process joins it for the library calls, CLI subprocesses through RAY_ADDRESS.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import cfx.subset
from cfx.engine_ray import PAUSE_ENV, RayEngine
from cfx.errors import InputError, OutputError
from cfx.export import ExportOptions, write_export
from cfx.index import build_manifest
from cfx.inspect import inspect_manifest
from cfx.manifest import Manifest, read_manifest
from cfx.progress import NullReporter, NullTask
from cfx.schema import IMAGE_COLUMN
from cfx.sources import resolve
from cfx.subset import write_subset
from cfx.transform import Pipeline
from tests.conftest import REPO, RunCfx

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(ray_dataset: Path) -> Path:
    return ray_dataset


@pytest.fixture(scope="module")
def manifest(dataset: Path) -> Manifest:
    return build_manifest(resolve(str(dataset))).manifest


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name → bytes)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _both(tmp_path: Path, write: Callable[[Path, RayEngine | None], Any]) -> tuple[dict, dict]:
    """``write`` into the same ``out`` path with the local engine, then on Ray: both trees."""
    out = tmp_path / "out"
    write(out, None)
    shutil.move(out, tmp_path / "local")
    write(out, RayEngine())
    local, on_ray = _tree(tmp_path / "local"), _tree(out)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no build folder left
    return local, on_ray


def _same(local: dict[str, bytes], on_ray: dict[str, bytes]) -> None:
    """The same files with the same bytes; a subset's manifest.parquet records its files' modification times
    (which differ between any two runs), so it is compared as a manifest: rows, sizes, root and history."""
    assert sorted(on_ray) == sorted(local)
    manifests = [name for name in local if name.endswith("manifest.parquet")]
    assert [name for name in local if on_ray[name] != local[name] and name not in manifests] == []
    for name in manifests:
        a, b = (read_manifest(io.BytesIO(tree[name])) for tree in (local, on_ray))
        assert b.df.equals(a.df) and b.df.height > 0
        assert (b.root, b.history) == (a.root, a.history)
        assert {k: v.size for k, v in b.shards.items()} == {k: v.size for k, v in a.shards.items()}


def test_inspect_identical(ray_address: str, manifest: Manifest, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CFX_CACHE_DIR", str(tmp_path / "local"))
    local = inspect_manifest(manifest, workers=2)
    monkeypatch.setenv("CFX_CACHE_DIR", str(tmp_path / "ray"))
    on_ray = inspect_manifest(manifest, engine=RayEngine())
    assert (on_ray.read_rows, on_ray.cached_rows) == (80, 0)
    assert on_ray.manifest.df.equals(local.manifest.df)
    assert on_ray.manifest.df.get_column("actual_format").null_count() == 0
    local_cache, ray_cache = _tree(tmp_path / "local"), _tree(tmp_path / "ray")
    assert len([k for k in ray_cache if k.startswith("facts/")]) == 4
    _same(local_cache, ray_cache)  # the driver wrote the same facts caches
    again = inspect_manifest(manifest, engine=RayEngine())
    assert (again.read_rows, again.cached_rows) == (0, 80)


def test_inspect_pixels_identical(ray_address: str, manifest: Manifest, tmp_path: Path, monkeypatch) -> None:
    """inspect --pixels on Ray: the fused decode pass per shard on the cluster, the same columns and caches."""
    monkeypatch.setenv("CFX_CACHE_DIR", str(tmp_path / "local"))
    local = inspect_manifest(manifest, workers=2, with_pixels=True)
    monkeypatch.setenv("CFX_CACHE_DIR", str(tmp_path / "ray"))
    on_ray = inspect_manifest(manifest, engine=RayEngine(), with_pixels=True)
    assert on_ray.decoded == local.decoded == 80
    assert "pixel_error" in on_ray.manifest.df.columns
    assert on_ray.manifest.df.equals(local.manifest.df)
    _same(_tree(tmp_path / "local"), _tree(tmp_path / "ray"))


SUBSETS = {
    "copy": {},
    "transform-shuffle": {
        "transform": Pipeline.parse(["jpeg:80"], strip_metadata=True),
        "order": "shuffle",
        "seed": 3,
        "row_group_rows": 7,
    },
    "splits-provenance": {
        "split_column": "assigned_split",
        "with_provenance": True,
        "max_shard_bytes": 60_000,
    },
    "shuffle-splits-transform": {
        "transform": Pipeline.parse(["resize:max-side=40", "jpeg:70"]),
        "order": "shuffle",
        "split_column": "assigned_split",
        "row_group_rows": 5,
    },
}


@pytest.mark.parametrize("case", sorted(SUBSETS))
def test_subset_identical(ray_address: str, manifest: Manifest, tmp_path: Path, case: str) -> None:
    split = pl.Series("assigned_split", ["train", "validation", "test"] * 30)[: manifest.df.height]
    selected = manifest.with_df(manifest.df.with_columns(split))

    def write(out: Path, engine: RayEngine | None) -> None:
        write_subset(selected, out, workers=2, command="cfx subset", engine=engine, **SUBSETS[case])

    local, on_ray = _both(tmp_path, write)
    assert "README.md" in local and "manifest.parquet" in local
    assert len([k for k in local if k.endswith(".parquet")]) >= 2
    _same(local, on_ray)


EXPORTS = {
    "cnndetection-transform": {"format": "cnndetection", "transform": Pipeline.parse(["jpeg:75"])},
    "cf": {"format": "cf"},
    "imagefolder-strip": {"format": "imagefolder", "transform": Pipeline.parse([], strip_metadata=True)},
    "webdataset": {"format": "webdataset", "shard_bytes": 150_000},
    "webdataset-shuffle-transform": {
        "format": "webdataset",
        "shuffle": True,
        "seed": 5,
        "shard_bytes": 100_000,
        "transform": Pipeline.parse(["jpeg:90"]),
    },
}


@pytest.mark.parametrize("case", sorted(EXPORTS))
def test_export_identical(ray_address: str, manifest: Manifest, tmp_path: Path, case: str) -> None:
    def write(out: Path, engine: RayEngine | None) -> None:
        write_export(manifest, out, ExportOptions(workers=2, **EXPORTS[case]), engine=engine)

    local, on_ray = _both(tmp_path, write)
    assert len(local) > 3
    _same(local, on_ray)


class _Counts(NullReporter):
    """A cfx.progress.Reporter that sums what each task is advanced by (keyed by its unit and description)."""

    def __init__(self) -> None:
        super().__init__()
        self.done: dict[str, int] = {}

    def task(self, description: str, total: int | None = None, unit: str = "") -> Any:
        key = f"{unit}:{description}"
        self.done[key] = 0
        counts = self

        class _Task(NullTask):
            def advance(self, n: int = 1) -> None:
                counts.done[key] += n

        return _Task()

    def rows_and_bytes(self) -> tuple[int, int]:
        rows = [v for k, v in self.done.items() if not k.startswith("bytes:")]
        nbytes = [v for k, v in self.done.items() if k.startswith("bytes:")]
        assert len(rows) == len(nbytes) == 1, self.done
        return rows[0], nbytes[0]


def test_progress_counts_rows_and_bytes_on_both_engines(
    ray_address: str, manifest: Manifest, tmp_path: Path, monkeypatch
) -> None:
    """The driver's progress: rows and image bytes across the cluster, the same totals as the local engine and
    the bytes actually written (subset: the image column; export: the image files) or read (inspect, hashing)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def subset(out: Path, engine: RayEngine | None, counts: _Counts) -> int:
        write_subset(
            manifest, out, workers=2, engine=engine, reporter=counts, transform=Pipeline.parse(["jpeg:80"])
        )
        tables = [
            pq.read_table(f, columns=[IMAGE_COLUMN])
            for f in sorted(out.rglob("*.parquet"))
            if f.name != "manifest.parquet"
        ]
        return sum(int(pc.sum(pc.binary_length(t.column(IMAGE_COLUMN))).as_py()) for t in tables)

    def export(out: Path, engine: RayEngine | None, counts: _Counts) -> int:
        write_export(manifest, out, ExportOptions("imagefolder", workers=2), engine=engine, reporter=counts)
        return sum(
            f.stat().st_size for f in out.rglob("*") if f.is_file() and f.suffix in {".png", ".jpg", ".webp"}
        )

    def inspect(out: Path, engine: RayEngine | None, counts: _Counts) -> int:
        monkeypatch.setenv("CFX_CACHE_DIR", str(out))
        m = inspect_manifest(manifest, workers=2, engine=engine, reporter=counts).manifest
        return int(m.df.get_column("num_bytes").sum())

    def hashing(out: Path, engine: RayEngine | None, counts: _Counts) -> int:  # dedupe's pass
        from cfx.hashing import hash_manifest

        monkeypatch.setenv("CFX_CACHE_DIR", str(out))
        m = hash_manifest(manifest, workers=2, engine=engine, reporter=counts).manifest
        return int(m.df.get_column("num_bytes").sum())

    for name, run in {"subset": subset, "export": export, "inspect": inspect, "hash": hashing}.items():
        totals = []
        for engine in (None, RayEngine()):
            counts, out = _Counts(), tmp_path / f"{name}-{len(totals)}"
            written = run(out, engine, counts)
            rows, nbytes = counts.rows_and_bytes()
            assert (rows, nbytes) == (manifest.df.height, written), name
            totals.append((rows, nbytes))
        assert totals[0] == totals[1] and totals[0][1] > 0, name


def test_cli_progress_on_a_terminal_shows_rows_and_bytes(
    ray_address: str, dataset: Path, tmp_path: Path
) -> None:
    """On a terminal the driver draws the cluster's progress: images done of the total and the image bytes
    written (as sizes, not a raw count)."""
    import pty

    master, slave = pty.openpty()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RAY_ADDRESS": ray_address,
        "COLUMNS": "160",
        "TERM": "xterm",
    }
    env["CFX_CACHE_DIR"] = str(tmp_path / "cache")
    args = [
        "export",
        str(dataset),
        "--out",
        str(tmp_path / "out"),
        "--format",
        "webdataset",
        "--engine",
        "ray",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfx", *args], stdout=subprocess.DEVNULL, stderr=slave, env=env
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=180) == 0, seen.decode(errors="replace")
    os.close(master)
    text = seen.decode(errors="replace")
    assert "Exporting 80 images" in text and "80/80" in text
    written = sum(f.stat().st_size for f in (tmp_path / "out").rglob("*.tar"))
    assert "Exporting 80 images: image bytes" in text
    assert re.search(r"image bytes.*\b\d+(\.\d)? (kB|MB)\b", text), text[-2000:]
    assert written > 0


def _run(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    full.pop("CFX_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "cfx", *args],
        capture_output=True,
        env=full,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["subset", "--transform", "jpeg:85", "--order", "shuffle"],
        ["export", "--format", "webdataset", "--transform", "jpeg:85"],
        ["inspect", "-o", "{out}/m.parquet"],
    ],
    ids=["subset", "export", "inspect"],
)
def test_cli_identical(ray_address: str, dataset: Path, tmp_path: Path, command: list[str]) -> None:
    """The CLI on Ray writes the same files, card and manifest included (the command line they record leaves
    the engine options out)."""
    name, *rest = command
    out = tmp_path / "out"
    trees = []
    for engine in ([], ["--engine", "ray"]):
        if name == "inspect":
            out.mkdir()
            args = [name, str(dataset), *[a.format(out=out) for a in rest], *engine]
        else:
            args = [name, str(dataset), "--out", str(out), *rest, "--seed", "1", *engine]
        env = {"RAY_ADDRESS": ray_address, "CFX_CACHE_DIR": str(tmp_path / f"cache{len(trees)}")}
        proc = _run(args, env, tmp_path)
        assert proc.returncode == 0, proc.stderr.decode()
        trees.append(_tree(out))
        shutil.rmtree(out)
    _same(*trees)


class _Killer:
    """Kill (SIGKILL) the Ray workers that report, through the PAUSE_ENV hook, that they are writing: the first
    one only (``once``), or every one."""

    def __init__(self, folder: Path, once: bool) -> None:
        self.folder, self.once = folder, once
        self.killed: list[int] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seen: set[str] = set()
        while not self._done.is_set():
            for pidfile in self.folder.glob("*.pid"):
                if pidfile.name in seen:
                    continue
                seen.add(pidfile.name)
                if self.once and self.killed:
                    continue
                os.kill(int(pidfile.stem), signal.SIGKILL)  # a real kill of the worker process
                self.killed.append(int(pidfile.stem))
                if self.once:
                    (self.folder / "stop").touch()
            time.sleep(0.02)

    def __enter__(self) -> _Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


@pytest.mark.parametrize("command", ["subset", "export"])
def test_worker_killed_mid_write_is_retried(
    ray_address: str, manifest: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """The killed task's part or files are rewritten by its retry: the same bytes as the local engine."""
    pipeline = Pipeline.parse(["jpeg:80"])

    def write(out: Path, engine: RayEngine | None) -> None:
        if command == "subset":
            write_subset(manifest, out, transform=pipeline, command="cfx subset", engine=engine)
        else:
            write_export(manifest, out, ExportOptions("cnndetection", transform=pipeline), engine=engine)

    pauses = tmp_path / "pauses"
    pauses.mkdir()
    monkeypatch.setenv(PAUSE_ENV, str(pauses))
    (pauses / "stop").touch()  # the local run: no hook (it is read by the Ray engine only anyway)
    write(tmp_path / "out", None)
    shutil.move(tmp_path / "out", tmp_path / "local")
    (pauses / "stop").unlink()
    with _Killer(pauses, once=True) as killer:
        write(tmp_path / "out", RayEngine())
    assert len(killer.killed) == 1
    _same(_tree(tmp_path / "local"), _tree(tmp_path / "out"))


def test_worker_killed_every_time_fails_cleanly(ray_address: str, dataset: Path, tmp_path: Path) -> None:
    """Retries used up (a task's worker killed 4 times mid-write): exit 4 naming the shard, no output and no
    build folder left (the other tasks were cancelled and waited for before it was removed)."""
    pauses = tmp_path / "pauses"
    pauses.mkdir()
    out = tmp_path / "out"
    args = ["export", str(dataset), "--out", str(out), "--engine", "ray", "--format", "cf"]
    args += ["--where", "shard IN ('data/HFCF_small_0.parquet', 'data/HFCF_small_3.parquet')"]
    with _Killer(pauses, once=False) as killer:
        proc = _run(args, {"RAY_ADDRESS": ray_address, PAUSE_ENV: str(pauses)}, tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    assert "a Ray worker died 4 times running data/HFCF_small_" in err and "Traceback" not in err
    assert len(killer.killed) >= 4
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith("out")] == []


def test_shard_changed_after_planning_is_named(
    ray_address: str, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    shutil.copytree(dataset / "data", src / "data")
    manifest = build_manifest(resolve(str(src))).manifest
    real_plan = cfx.subset.plan_subset
    shard = src / "data" / "HFCF_small_2.parquet"

    def plan_then_change(*args: Any, **kwargs: Any) -> Any:
        plan = real_plan(*args, **kwargs)
        shard.write_bytes(shard.read_bytes() + b"\0")  # re-downloaded meanwhile: another size
        return plan

    monkeypatch.setattr(cfx.subset, "plan_subset", plan_then_change)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="HFCF_small_2.parquet"):
        write_subset(manifest, out, engine=RayEngine())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("out")] == []


def test_build_folder_not_visible_to_a_worker(ray_address: str, tmp_path: Path) -> None:
    """--out off the shared file system: the worker refuses before writing (here: a folder with no tag)."""
    from cfx.subset_parts import write_part

    with pytest.raises(OutputError, match="cannot see the output's build folder"):
        list(RayEngine().run_jobs(write_part, [("x", None)], out_dir=str(tmp_path)))


@pytest.mark.hub
@pytest.mark.parametrize(
    "command",
    # the local Hub's shards hold random bytes, not images: folder layouts leave non-images out by default
    [["subset", "--order", "shuffle"], ["export", "--format", "imagefolder", "--keep-non-images"]],
    ids=["subset", "export"],
)
def test_hub_source_on_ray_matches_local(
    ray_address: str, run_cfx: RunCfx, tmp_path: Path, command: list[str]
) -> None:
    """hf:// shards read by Ray workers that have no Hub settings of their own: the driver's travel."""
    assert "HF_ENDPOINT" not in os.environ
    name, *rest = command
    trees = []
    for engine in ("local", "ray"):
        env = {"CFX_CACHE_DIR": str(tmp_path / f"cache-{engine}"), "RAY_ADDRESS": ray_address}
        r = run_cfx(name, f"hf://datasets/{REPO}", "--out", "out", *rest, "--engine", engine, env=env)
        assert r.returncode == 0, r.stderr
        trees.append(_tree(tmp_path / "out"))
        shutil.rmtree(tmp_path / "out")
    assert len(trees[0]) >= 3
    _same(*trees)
