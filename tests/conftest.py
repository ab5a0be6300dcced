"""Shared fixtures: an isolated cfx cache, a CLI runner in a subprocess, CF-shaped datasets."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

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
