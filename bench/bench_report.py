"""Benchmark `cfx report` on the 556,541-row scale replica with cached byte facts and hashes.

Data: ``cfx.synth.make_scale_replica(root, seed=0)`` (the real shard layout, row counts and metadata
distributions; tiny images), indexed with ``cfx index``; ``cfx inspect --hashes`` fills the byte-fact and hash
caches once (not timed). Timed: ``cfx report M --out R --sample 2000`` in a fresh process (wall, peak RSS),
``--reps`` times, and the page size (index.html + assets + thumbnails). No peer tool writes this page, so the
table also gives ``cfx audit --json`` and ``cfx dedupe`` on the same manifest: the two commands whose numbers the
report shows, as a yardstick for what the page adds.

    python bench/bench_report.py --reps 3 --work /tmp/cfx-bench-report
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, cfx_cmd, dir_bytes, machine, median, run, table  # noqa: E402

_WRAPPER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "u = resource.getrusage(resource.RUSAGE_CHILDREN); print(u.ru_maxrss, u.ru_utime + u.ru_stime); sys.exit(rc)"
)


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall s, peak RSS MB, CPU s) of a command: CPU time says what the wall time would be on an idle machine
    for a mostly single-threaded command, when the shared machine is loaded."""
    import os
    import subprocess
    import time

    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *cmd],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    rss, cpu = proc.stdout.strip().splitlines()[-1].split()
    return wall, int(rss) / 1024, float(cpu)


def prepare(work: Path, env: dict[str, str]) -> Path:
    replica, manifest = work / "replica", work / "M.parquet"
    if not (replica / "README.md").exists():
        make = f"from cfx.synth import make_scale_replica; make_scale_replica({str(replica)!r}, seed=0)"
        run([sys.executable, "-c", make], env)
    if not manifest.exists():
        run(cfx_cmd("index", str(replica), "-o", str(manifest)), env)
        run(cfx_cmd("inspect", str(manifest), "--hashes", "-o", str(work / "inspected.parquet")), env)
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/cfx-bench-report"))
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    env = {"CFX_CACHE_DIR": str(work / "cache")}
    manifest = prepare(work, env)
    out = work / "report"
    runs: dict[str, list[tuple[float, float, float]]] = {"report": [], "audit": [], "dedupe": []}
    size = 0
    for _ in range(args.reps):  # interleaved: each rep runs the three commands in turn
        shutil.rmtree(out, ignore_errors=True)
        runs["report"].append(
            timed(cfx_cmd("report", str(manifest), "--out", str(out), "--sample", str(args.sample)), env)
        )
        size = dir_bytes(out)
        runs["audit"].append(timed(cfx_cmd("audit", str(manifest), "--json"), env))
        runs["dedupe"].append(timed(cfx_cmd("dedupe", str(manifest), "-o", "/dev/null"), env))
    rows = []
    for name, cmd in (
        ("report", f"cfx report M --out R --sample {args.sample}"),
        ("audit", "cfx audit M --json"),
        ("dedupe", "cfx dedupe M -o /dev/null"),
    ):
        walls = [w for w, _, _ in runs[name]]
        cpus = [c for _, _, c in runs[name]]
        rss = max(r for _, r, _ in runs[name])
        rows.append(
            (
                cmd,
                f"{median(walls):.1f}",
                f"{min(walls):.1f}–{max(walls):.1f}",
                f"{median(cpus):.1f}",
                f"{rss:.0f}",
            )
        )
        print(name, runs[name], flush=True)  # the raw runs, should the table fail
    headers = (
        "command (556,541 rows, cached facts and hashes)",
        "median wall s",
        "range",
        "median CPU s",
        "peak RSS MB",
    )
    print(table(headers, rows))
    html = (out / "index.html").stat().st_size
    thumbs = dir_bytes(out / "thumbs")
    print(
        f"\npage: index.html {html / 1e6:.2f} MB, thumbnails {thumbs / 1e6:.2f} MB "
        f"({len(list((out / 'thumbs').glob('*.jpg')))} files), whole folder {size / 1e6:.2f} MB; {machine()}"
    )


if __name__ == "__main__":
    main()
