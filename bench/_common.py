"""Helpers shared by the bench scripts: timed subprocess runs with peak RSS, medians, tables."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


_WRAPPER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)


def run(
    cmd: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float]:
    """Run a command; return (wall seconds, its peak RSS in MB).

    The command is started from a small wrapper interpreter: ru_maxrss of a forked child would otherwise
    include the pages of this (possibly large) benchmark process copied at fork time.
    """
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *cmd], env=full_env, cwd=cwd, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return wall, int(proc.stdout.strip().splitlines()[-1]) / 1024


def cfx_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cfx", "--quiet", *args]


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if Path(path).exists() else 0


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
