"""Peak RSS of a fresh process, measured inside it (VmHWM).

Not wait4's / RUSAGE_CHILDREN's ru_maxrss from the test process: at exec the kernel records the forking
process's own high-water mark (pytest's, often GBs after many tests) as the child's starting maximum.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CFX = """
import atexit, sys
def report():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(out, "w").write(line.split()[1])
atexit.register(report)
out = sys.argv[1]
sys.argv = ["cfx", *sys.argv[2:]]
from cfx.cli import main
main()
"""


def vmhwm_kb() -> int:
    """This process's peak RSS in KB (call at the end of a measured child)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def cfx_peak_rss_mb(args: list[str], cwd: Path) -> float:
    """Run `cfx ARGS` in a fresh interpreter (cwd ``cwd``); return its peak RSS in MB."""
    report = cwd / f".hwm-{os.getpid()}.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _CFX, str(report), "--quiet", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    try:
        return int(report.read_text()) / 1024
    finally:
        report.unlink()
