"""Shared fixtures: an isolated cfx cache, a CLI runner in a subprocess, CF-shaped datasets, a local Hub.

The local Hub (tests/hubserver.py) serves a small CommunityForensics-like dataset repo. Hub tests run cfx in
subprocesses: huggingface_hub reads HF_ENDPOINT when it is imported, so the endpoint is set in the child's
environment (with a private HF_HOME), never in this process.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cfx.schema import SOURCE_SCHEMA
from tests.hubserver import HubUnavailable, LocalHub, missing_programs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFX_CACHE_DIR", str(tmp_path_factory.mktemp("cfx-cache")))


@dataclass
class Run:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode()


@pytest.fixture
def cfx(tmp_path: Path) -> Callable[..., Run]:
    """Run `python -m cfx ARGS` in a subprocess (real pipes, real exit codes)."""

    def run(
        *args: str, input: bytes | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Run:
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        full_env.pop("CFX_DEBUG", None)
        proc = subprocess.run(
            [sys.executable, "-m", "cfx", *args],
            input=input,
            capture_output=True,
            env=full_env,
            cwd=cwd or tmp_path,
            timeout=600,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr.decode())

    return run


@pytest.fixture(scope="session")
def cf_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CF-shaped dataset (6 shards, scaled-down images), shared read-only by the session."""
    from cfx.synth import make_dataset

    root = tmp_path_factory.mktemp("cf-small")
    make_dataset(root, shards=6, rows_per_shard=40, seed=0, scale=0.25)
    return root


REPO = "OwensLab/CommunityForensics-Small"
BIG_REPO = "cfx-tests/big-shard"
N_SHARDS_V1 = 5  # shards in the first commit (tag v1.0)
N_SHARDS = 6  # shards at main

README_V1 = b"---\nlicense: cc-by-nc-sa-4.0\n---\n# CommunityForensics-Small (test copy)\n"
README = README_V1 + b"\nSecond commit: one more shard.\n"
GENERATORS_CSV = (
    b"model_name,license\n"
    b"stabilityai/stable-diffusion-2,creativeml-openrail-m\n"
    b"runwayml/stable-diffusion-v1-5,creativeml-openrail-m\n"
    b"lllyasviel/sd-controlnet-canny,openrail\n"
)


def make_shard(shard: int, rows: int = 16, min_kb: int = 50, max_kb: int = 200) -> bytes:
    """A parquet shard with the real column layout, one row group, incompressible image bytes."""
    rng = random.Random(shard)
    generated = shard < 4
    data = {
        "image_name": [f"{shard:03d}{i:05d}.png" for i in range(rows)],
        "format": ["PNG" if generated else "JPEG"] * rows,
        "resolution": [[512, 512] if generated else [1024, 1024]] * rows,
        "mode": ["RGB"] * rows,
        "image_data": [rng.randbytes(rng.randint(min_kb, max_kb) * 1024) for _ in range(rows)],
        "model_name": ["stabilityai/stable-diffusion-2" if generated else "FFHQ"] * rows,
        "nsfw_flag": [False] * rows,
        "prompt": [f"a photo of thing {i}" if generated else "" for i in range(rows)],
        "real_source": ["LAION" if generated else "FFHQ"] * rows,
        "subset": ["Systematic" if generated else "Real"] * rows,
        "split": ["train"] * rows,
        "label": [1 if generated else 0] * rows,
        "architecture": ["LatDiff" if generated else "Real"] * rows,
    }
    table = pa.Table.from_pydict(data, schema=SOURCE_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=rows, compression="none")
    return buf.getvalue()


def shard_path(i: int) -> str:
    return f"data/HFCF_small_{i}.parquet"


@dataclass
class HubDataset:
    hub: LocalHub
    repo: str
    v1_commit: str  # tag v1.0: shards 0-4, README_V1
    commit: str  # main: shards 0-5, README
    big_repo: str
    big_path: str

    @property
    def endpoint(self) -> str:
        return self.hub.endpoint

    def file(self, path: str, revision: str = "main", repo: str = REPO) -> Path:
        return self.hub.local_file(repo, path, revision)


def _hub_or_skip() -> None:
    missing = missing_programs()
    if missing:
        msg = f"local Hub unavailable: missing {', '.join(missing)}"
        if os.environ.get("CFX_REQUIRE_HUB") == "1":
            pytest.fail(msg + " (CFX_REQUIRE_HUB=1 makes this an error)", pytrace=False)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubDataset]:
    """A running local Hub with the CF-like repo (two commits, tag v1.0) and a repo holding one ~64 MB shard."""
    _hub_or_skip()
    hub = LocalHub(tmp_path_factory.mktemp("hub"))
    try:
        v1 = hub.create_repo(
            REPO,
            {
                "README.md": README_V1,
                "data/metadata/generators.csv": GENERATORS_CSV,
                **{shard_path(i): make_shard(i) for i in range(N_SHARDS_V1)},
            },
        )
        hub.tag(REPO, "v1.0")
        main = hub.commit_files(
            REPO, {"README.md": README, shard_path(5): make_shard(5)}, message="Add shard 5"
        )
        big = "data/HFCF_small_0.parquet"
        hub.create_repo(
            BIG_REPO, {"README.md": b"big\n", big: make_shard(1000, rows=320, min_kb=200, max_kb=200)}
        )
        hub.start()
    except HubUnavailable as exc:
        hub.close()
        if os.environ.get("CFX_REQUIRE_HUB") == "1":
            pytest.fail(f"local Hub did not start: {exc}", pytrace=False)
        pytest.skip(f"local Hub did not start: {exc}")
    try:
        yield HubDataset(hub, REPO, v1, main, BIG_REPO, big)
    finally:
        hub.close()


def hub_env(endpoint: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment for a child process talking to ``endpoint``: no inherited HF_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != "TRANSFORMERS_OFFLINE"}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(ROOT),
        CFX_HTTP_BACKOFF="0.05",
        NO_COLOR="1",
    )
    env.update(extra)
    return env


RunCfx = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cfx(local_hub: HubDataset, tmp_path: Path) -> RunCfx:
    """Run ``python -m cfx ARGS`` against the local Hub; ``endpoint=`` and ``env=`` override."""
    home = tmp_path / "hf-home"

    def run(*args: str, endpoint: str | None = None, env: dict[str, str] | None = None, timeout: float = 120):
        return subprocess.run(
            [sys.executable, "-m", "cfx", *args],
            env=hub_env(endpoint or local_hub.endpoint, home, **(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
        )

    return run


@pytest.fixture(scope="session")
def ray_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CF-shaped set the Ray tests run on (4 shards × 20 rows), made once for tests/test_ray.py and
    tests/test_ray_write.py. Read-only: a test that changes a shard copies the set first."""
    from cfx.synth import make_dataset

    root = tmp_path_factory.mktemp("ray-ds")
    make_dataset(root, shards=4, rows_per_shard=20, scale=0.25)
    return root


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A real Ray cluster for the whole session: `ray start --head --block` with 2 worker CPUs, in its own
    process group (stopped by signalling that group: `ray stop` would stop every Ray on the machine). Its
    workers import this checkout (PYTHONPATH) and have no HF_* settings, as on a cluster node."""
    import secrets
    import signal
    import socket
    import tempfile
    import time

    tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's unix socket paths are length-limited
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # this cluster's own token (Ray's default, ~/.ray/auth_token, is shared by every Ray of this user and
    # replaced when another one starts); this process and its children get it through the environment
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "RAY_", "CFX_"))}
    env.update(auth, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    ray_bin = str(Path(sys.executable).with_name("ray"))
    args = [ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", f"--temp-dir={tmp}"]
    args += ["--object-store-memory=200000000", "--include-dashboard=false", "--disable-usage-stats"]
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    try:
        deadline = time.monotonic() + 90
        while True:  # the GCS port answers once the head is up
            assert proc.poll() is None, "ray start --head exited"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, "ray start --head did not come up in 90 s"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group: gcs, raylet, workers
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_address(ray_cluster: str) -> Iterator[str]:
    """This process joined to the session's Ray cluster (``ray_cluster``), for one test module."""
    import ray  # part of the test extra: Ray tests run, never skip

    ray.init(address=ray_cluster, log_to_driver=False)
    try:
        yield ray_cluster
    finally:
        ray.shutdown()  # disconnects; the cluster stays up for the next module
