"""The fused hash + byte-facts pass vs hashing alone, in instructions (issue 12: goal <= 1.1x hashing alone).

Wall and CPU seconds of a ~1 s pass move by 10-20% on this shared 2-core machine (docs/benchmarks.md
"Inspect"); valgrind's callgrind counts the instructions a process executes, which do not depend on the
machine's load. Four runs of the same script under callgrind, at once: ``base`` (imports and loading the
manifest only), ``alone`` (+ the hashing pass, `hash_shard(with_facts=False)` on every shard), ``fused``
(`with_facts=True`) and ``pixels`` (+ the pixel facts, issue 22: goal <= 1.3x hashing alone). The pass's instructions are a run's minus base's; the ratio is fused / alone.
Instructions are not time (a cache miss costs more than an add): bench_inspect.py times both passes
in-process, interleaved, in CPU seconds (bench_inspect.py --only hash).

    python bench/bench_fused_instructions.py [--shards 2] [--rows 100] [--scale 0.5]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, machine, table  # noqa: E402

PASS = """
import sys
from cfx.hashing import hash_shard
from cfx.load import load_manifest
from cfx.stream import rows_by_shard
import cfx.bytefacts  # imported by every run, so that base holds its import

mode, root = sys.argv[1], sys.argv[2]
m = load_manifest(root)
if mode != "base":
    for part in rows_by_shard(m):
        hash_shard(
            m.root, part.shard, m.shards[part.shard], part.rows,
            with_facts=mode in ("fused", "pixels"), with_pixels=mode == "pixels",
        )
"""


def instructions(tmp: Path, root: Path) -> dict[str, int]:
    """Instructions of the three runs, started at once (each single-threaded under valgrind)."""
    script = tmp / "pass.py"
    script.write_text(PASS)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0", "CFX_CACHE_DIR": str(tmp / "cache")}
    # idle BLAS/OpenMP threads spin, and spinning is counted: one thread each, so that counts repeat
    env.update({k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    procs = {
        mode: subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp / mode}.out",
             sys.executable, str(script), mode, str(root)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for mode in ("base", "alone", "fused", "pixels")
    }  # fmt: skip
    counts = {}
    for mode, proc in procs.items():
        err = proc.communicate()[1]
        found = re.search(r"I\s+refs:\s+([\d,]+)", err)
        if proc.returncode != 0 or not found:
            raise SystemExit(f"callgrind run {mode} failed ({proc.returncode}):\n{err[-2000:]}")
        counts[mode] = int(found.group(1).replace(",", ""))
    return counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--scale", type=float, default=0.5, help="synth image scale (1.0: mostly 512² PNG)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    from cfx.synth import make_dataset

    tmp = Path(tempfile.mkdtemp(prefix="cfx-bench-fused-"))
    try:
        make_dataset(tmp / "ds", shards=args.shards, rows_per_shard=args.rows, seed=0, scale=args.scale)
        c = instructions(tmp, tmp / "ds")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    alone, fused, pixels = (c[k] - c["base"] for k in ("alone", "fused", "pixels"))
    n = args.shards * args.rows
    print(
        f"{machine()}; {n} images from cfx.synth.make_dataset(shards={args.shards}, rows={args.rows}, scale={args.scale})\n"
    )
    rows = [
        ["base (imports, load the manifest)", f"{c['base']:,}", "", ""],
        ["hash alone", f"{c['alone']:,}", f"{alone:,} ({alone / n:,.0f} an image)", "1.000"],
        ["hash + byte facts (fused)", f"{c['fused']:,}", f"{fused:,} ({fused / n:,.0f} an image)",
         f"{fused / alone:.3f}"],
        ["hash + byte facts + pixel facts (fused, issue 22)", f"{c['pixels']:,}",
         f"{pixels:,} ({pixels / n:,.0f} an image)", f"{pixels / alone:.3f}"],
    ]  # fmt: skip
    print(table(["run", "instructions", "the pass's instructions", "ratio"], rows))


if __name__ == "__main__":
    main()
