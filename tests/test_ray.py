"""--engine ray: manifests, hash and byte-fact caches and dedupe results identical to the local engine (so an
inspect after a Ray dedupe reads no image); bad input.

One real Ray cluster (`ray start --head`, 2 CPUs; tests/conftest.py ``ray_cluster``) serves the session; this
process and the CLI subprocesses join it (RAY_ADDRESS), which is the "existing cluster" path.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from cfx.engine_ray import KILL_ONCE_ENV, RayEngine
from cfx.errors import UsageError
from cfx.hashing import HashResult, hash_manifest
from cfx.index import IndexResult, build_manifest
from cfx.inspect import cached_facts, inspect_manifest
from cfx.manifest import read_manifest
from cfx.sources import resolve
from tests.conftest import REPO, HubDataset, RunCfx

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(ray_dataset: Path) -> Path:
    return ray_dataset


def _cache(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / name
    monkeypatch.setenv("CFX_CACHE_DIR", str(folder))
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}


def _index_both(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[IndexResult, IndexResult, Path, Path]:
    local_cache = _cache(tmp_path, "local", monkeypatch)
    local = build_manifest(resolve(str(source)), workers=2)
    ray_cache = _cache(tmp_path, "ray", monkeypatch)
    on_ray = build_manifest(resolve(str(source)), engine=RayEngine())
    return local, on_ray, local_cache, ray_cache


def test_index_identical(
    ray_address: str, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local, on_ray, local_cache, ray_cache = _index_both(dataset, tmp_path, monkeypatch)
    assert on_ray.manifest.df.height == 80
    assert on_ray.manifest.df.equals(local.manifest.df)
    assert on_ray.manifest.df.schema == local.manifest.df.schema
    assert on_ray.manifest.shards == local.manifest.shards
    assert on_ray.manifest.root == local.manifest.root
    assert (on_ray.cached, local.cached) == (0, 0)
    local_files, ray_files = _files(local_cache), _files(ray_cache)
    assert len(ray_files) == 4 and ray_files == local_files  # the same cache entries, byte for byte
    again = build_manifest(resolve(str(dataset)), engine=RayEngine())
    assert again.cached == 4 and again.manifest.df.equals(local.manifest.df)


def test_index_bad_shard_named_the_same(
    ray_address: str, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "ds"
    shutil.copytree(dataset / "data", src / "data", ignore=shutil.ignore_patterns("metadata"))
    shard = src / "data" / "HFCF_small_2.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # truncated download
    local, on_ray, _, _ = _index_both(src, tmp_path, monkeypatch)
    assert [str(e) for e in on_ray.bad] == [str(e) for e in local.bad]
    assert len(on_ray.bad) == 1 and on_ray.bad[0].shard == "data/HFCF_small_2.parquet"
    assert on_ray.manifest.df.equals(local.manifest.df) and on_ray.manifest.df.height == 60


def _hash_both(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[HashResult, HashResult, Path, Path]:
    manifest = build_manifest(resolve(str(dataset))).manifest
    local_cache = _cache(tmp_path, "local", monkeypatch)
    local = hash_manifest(manifest, workers=2)
    ray_cache = _cache(tmp_path, "ray", monkeypatch)
    on_ray = hash_manifest(manifest, engine=RayEngine())
    return local, on_ray, local_cache, ray_cache


def test_hashes_and_caches_identical(
    ray_address: str, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local, on_ray, local_cache, ray_cache = _hash_both(dataset, tmp_path, monkeypatch)
    assert on_ray.manifest.df.equals(local.manifest.df)
    assert on_ray.manifest.df.get_column("phash").null_count() < 80  # hashes were computed
    assert (on_ray.decoded, on_ray.hashed_rows, on_ray.cached_rows) == (80, 80, 0)
    assert (on_ray.decoded, on_ray.hashed_rows) == (local.decoded, local.hashed_rows)
    local_files, ray_files = _files(local_cache), _files(ray_cache)
    assert sorted({k.split("/")[0] for k in ray_files}) == ["facts", "hashes", "pixels"]
    assert len(ray_files) == 12 and ray_files == local_files  # the fused facts too, byte for byte
    again = hash_manifest(
        on_ray.manifest.with_df(local.manifest.df.select("shard", "row")), engine=RayEngine()
    )
    assert (again.decoded, again.cached_rows) == (0, 80)  # served from the caches the driver wrote


def test_worker_death_is_retried(
    ray_address: str, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_ONCE_ENV, str(marker))
    local, on_ray, local_cache, ray_cache = _hash_both(dataset, tmp_path, monkeypatch)
    assert marker.exists()  # one task's worker really died (os._exit) ...
    assert on_ray.manifest.df.equals(local.manifest.df)  # ... and its retry gave the same result
    assert len(_files(ray_cache)) == 12 and _files(ray_cache) == _files(local_cache)


def test_inspect_after_ray_hashing_reads_no_image(
    ray_address: str, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = build_manifest(resolve(str(dataset))).manifest
    _cache(tmp_path, "fresh", monkeypatch)
    fresh = inspect_manifest(manifest, workers=1, use_cache=False)
    assert fresh.read_rows == 80
    _cache(tmp_path, "ray", monkeypatch)
    hash_manifest(manifest, engine=RayEngine())
    after = inspect_manifest(manifest, workers=1)
    assert (after.read_rows, after.cached_rows) == (0, 80)  # every fact came from the Ray hashing pass
    assert after.manifest.df.equals(fresh.manifest.df)
    pixels = inspect_manifest(manifest, workers=1, with_pixels=True)  # pixel facts too
    assert pixels.decoded == 0 and pixels.manifest.df.get_column("luma_mean").null_count() < 80


def test_ray_hashing_leaves_every_fact_in_the_cache(
    ray_address: str, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = build_manifest(resolve(str(dataset))).manifest
    cache = _cache(tmp_path, "ray", monkeypatch)
    assert cached_facts(manifest) is None
    hash_manifest(manifest, engine=RayEngine())
    assert len([k for k in _files(cache) if k.startswith("facts/")]) == 4
    assert cached_facts(manifest) is not None  # what `stats --by jpeg_quality` uses to read no image


def test_ray_hashing_without_cache_writes_none(
    ray_address: str, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = build_manifest(resolve(str(dataset))).manifest
    cache = _cache(tmp_path, "ray", monkeypatch)
    on_ray = hash_manifest(manifest, engine=RayEngine(), use_cache=False)
    assert on_ray.hashed_rows == 80 and _files(cache) == {}


def _run(
    args: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    full.pop("CFX_DEBUG", None)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, env=full, cwd=cwd, timeout=timeout, check=False
    )


def test_cli_dedupe_on_ray_matches_local(ray_address: str, dataset: Path, tmp_path: Path) -> None:
    out: dict[str, Any] = {}
    for engine in ("local", "ray"):
        rep = tmp_path / f"rep-{engine}"
        proc = _run(
            ["-m", "cfx", "dedupe", str(dataset), "--engine", engine, "-o", f"{engine}.parquet"]
            + ["--report", str(rep), "--json"],
            env={"CFX_CACHE_DIR": str(tmp_path / f"cache-{engine}"), "RAY_ADDRESS": ray_address},
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        summary = json.loads(proc.stdout)
        summary.pop("timings", None)
        out[engine] = (
            read_manifest(tmp_path / f"{engine}.parquet").df,
            pq.read_table(rep / "pairs.parquet"),
            pq.read_table(rep / "groups.parquet"),
            summary,
        )
    (kl, pl_, gl, sl), (kr, pr, gr, sr) = out["local"], out["ray"]
    assert kr.equals(kl) and 0 < kr.height < 80  # some duplicates were removed
    assert pr.equals(pl_) and gr.equals(gl) and pr.num_rows > 0
    assert sr == sl


def test_cli_inspect_after_ray_dedupe_reads_no_image(ray_address: str, dataset: Path, tmp_path: Path) -> None:
    env = {"CFX_CACHE_DIR": str(tmp_path / "cache"), "RAY_ADDRESS": ray_address}
    proc = _run(
        ["-m", "cfx", "dedupe", str(dataset), "--engine", "ray", "-o", "kept.parquet"], env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr.decode()
    summaries = []
    for extra in ([], ["--no-cache"]):
        proc = _run(["-m", "cfx", "inspect", str(dataset), "--json", *extra], env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr.decode()
        summaries.append(json.loads(proc.stdout))
    cached, fresh = summaries
    assert (cached.pop("read_now"), cached.pop("from_cache")) == (0, 80)
    assert (fresh.pop("read_now"), fresh.pop("from_cache")) == (80, 0)
    assert cached == fresh


def test_ray_address_without_ray_engine_is_a_usage_error(dataset: Path, cfx: Callable[..., Any]) -> None:
    run = cfx("index", str(dataset), "--ray-address", "127.0.0.1:6379")
    assert run.returncode == 2 and "--ray-address needs --engine ray" in run.stderr


def test_unknown_engine(dataset: Path, cfx: Callable[..., Any]) -> None:
    run = cfx("index", str(dataset), "--engine", "spark")
    assert run.returncode == 2 and "--engine 'spark': unknown" in run.stderr


def test_unreachable_cluster_fails_fast(dataset: Path, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _run(
        ["-m", "cfx", "index", str(dataset), "--engine", "ray", "--ray-address", f"127.0.0.1:{port}"],
        env={},
        cwd=tmp_path,
        timeout=60,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in err and "ray start --head" in err
    assert not proc.stdout


BLOCK_RAY = """
import sys
class _NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray' (blocked by the test)")
        return None
sys.meta_path.insert(0, _NoRay())
from cfx.cli import main
sys.argv = ["cfx", *sys.argv[1:]]
main()
"""


def test_ray_not_installed_names_the_extra(dataset: Path, tmp_path: Path) -> None:
    proc = _run(["-c", BLOCK_RAY, "dedupe", str(dataset), "--engine", "ray"], env={}, cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "--engine ray needs Ray" in err and "pip install 'cfx[ray]'" in err
    assert "Traceback" not in err
    # the local engine does not need Ray at all
    proc = _run(["-c", BLOCK_RAY, "index", str(dataset), "-o", "m.parquet"], env={}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()


def test_open_engine_rejects_address_for_local() -> None:
    from cfx.engine_ray import open_engine

    with pytest.raises(UsageError), open_engine("local", "10.0.0.1:6379"):
        pass


@pytest.mark.hub
def test_hub_source_on_ray_matches_local(
    ray_address: str, local_hub: HubDataset, run_cfx: RunCfx, tmp_path: Path
) -> None:
    """hf:// shards read by Ray workers that do not share the driver's Hub settings (as on a real cluster):
    this module's Ray was started by pytest, whose environment has no HF_ENDPOINT for the local Hub."""
    assert "HF_ENDPOINT" not in os.environ
    source = f"hf://datasets/{REPO}"
    out: dict[str, Any] = {}
    for engine in ("local", "ray"):
        env = {"CFX_CACHE_DIR": str(tmp_path / f"cache-{engine}"), "RAY_ADDRESS": ray_address}
        r = run_cfx("index", source, "--engine", engine, "-o", f"m-{engine}.parquet", env=env)
        assert r.returncode == 0, r.stderr
        r = run_cfx(
            "dedupe", f"m-{engine}.parquet", "--engine", engine, "-o", f"kept-{engine}.parquet", env=env
        )
        assert r.returncode == 0, r.stderr
        out[engine] = (
            read_manifest(tmp_path / f"m-{engine}.parquet").df,
            read_manifest(tmp_path / f"kept-{engine}.parquet").df,
        )
    assert out["ray"][0].equals(out["local"][0]) and out["ray"][0].height > 0
    assert out["ray"][1].equals(out["local"][1])


@pytest.mark.hub
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_hub_unreachable_while_hashing_is_a_network_error(
    engine: str, ray_address: str, local_hub: HubDataset, run_cfx: RunCfx, tmp_path: Path
) -> None:
    env = {"CFX_CACHE_DIR": str(tmp_path / "cache"), "RAY_ADDRESS": ray_address}
    r = run_cfx("index", f"hf://datasets/{REPO}", "-o", "m.parquet", env=env)
    assert r.returncode == 0, r.stderr
    dead = "http://127.0.0.1:9"  # the Hub goes away after indexing
    r = run_cfx("dedupe", "m.parquet", "--engine", engine, "-o", "kept.parquet", env=env, endpoint=dead)
    assert r.returncode == 4, r.stderr
    assert "internal error" not in r.stderr and "127.0.0.1:9" in r.stderr, r.stderr
    assert not (tmp_path / "kept.parquet").exists()
