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


def run(
    cmd: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in MB of the process tree's largest member)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd), env=full_env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    return wall, usage.ru_maxrss / 1024


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
