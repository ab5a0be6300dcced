"""Transform benchmark (issue 12 §4): `cfx subset --transform resize:max-side=512 --transform jpeg:96` vs the
plain Pillow loop a user would write over the same rows (pyarrow batches → Image.open → Lanczos resize →
JPEG 96 → a parquet file with the source schema). Goal: >= 0.9x the loop per core, near-linear in workers.

    python bench/bench_transform.py [--reps 3] [--shards 4] [--rows 100] [--workers 2]

Data: cfx.synth.make_dataset (generated PNG 512², real FFHQ PNG 1024², COCO/ImageNet JPEGs, ...), indexed
once to manifest.parquet so both sides start from the same rows. Runs are interleaved; medians of --reps.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl  # noqa: E402

from bench._common import ROOT, cfx_cmd, machine, median, run, table  # noqa: E402

PEER_NAME = "Pillow loop (1 process)"
PEER2_NAME = "Pillow loop (2 processes, every other shard each)"
SPECS = ["--transform", "resize:max-side=512", "--transform", "jpeg:96"]

PEER = r"""
import io, sys
import pyarrow as pa, pyarrow.parquet as pq
from pathlib import Path
from PIL import Image

src, out = Path(sys.argv[1]), Path(sys.argv[2])
part, parts = map(int, (sys.argv[3] if len(sys.argv) > 3 else "0/1").split("/"))  # every parts-th shard
out.mkdir(parents=True, exist_ok=True)
for n, path in list(enumerate(sorted((src / "data").glob("*.parquet"))))[part::parts]:
    pf = pq.ParquetFile(path)
    with pq.ParquetWriter(out / f"part-{n}.parquet", pf.schema_arrow) as writer:
        for batch in pf.iter_batches(batch_size=16):
            rows = batch.to_pylist()
            for row in rows:
                im = Image.open(io.BytesIO(row["image_data"]))
                im = im.convert("RGB")
                if max(im.size) > 512:
                    s = 512 / max(im.size)
                    im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=96)
                row.update(image_data=buf.getvalue(), format="JPEG", mode="RGB",
                           resolution=[im.width, im.height] if isinstance(row["resolution"], list)
                           else f"[{im.width}, {im.height}]")
            writer.write_table(pa.Table.from_pylist(rows, schema=pf.schema_arrow))
"""


def timed(cmd: list[str] | list[list[str]]) -> tuple[float, float]:
    """(wall s, CPU s) of ``cmd`` (or of several commands run at once) and its worker processes: CPU shows
    the work done whatever the machine's load, wall what a user waits for."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmds = cmd if isinstance(cmd[0], list) else [cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    procs = [
        subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for c in cmds
    ]
    errors = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - start
    for c, p, err in zip(cmds, procs, errors, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"command failed ({p.returncode}): {' '.join(c)}\n{err}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from cfx.synth import make_dataset

    with tempfile.TemporaryDirectory(prefix="bench-transform-") as tmp_name:
        tmp = Path(tmp_name)
        make_dataset(tmp / "src", shards=args.shards, rows_per_shard=args.rows, seed=0, duplicates=False)
        manifest = tmp / "manifest.parquet"
        run(cfx_cmd("index", str(tmp / "src"), "-o", str(manifest)))
        n = pl.read_parquet(manifest).height
        peer_py = tmp / "peer.py"
        peer_py.write_text(PEER)
        src = str(tmp / "src")
        sides = {
            PEER_NAME: lambda out: [sys.executable, str(peer_py), src, str(out)],
            PEER2_NAME: lambda out: [[sys.executable, str(peer_py), src, str(out), f"{k}/2"] for k in (0, 1)],
            "cfx -w 1": lambda out: cfx_cmd("subset", str(manifest), "--out", str(out), *SPECS, "-w", "1"),
            f"cfx -w {args.workers}": lambda out: cfx_cmd(
                "subset", str(manifest), "--out", str(out), *SPECS, "-w", str(args.workers)
            ),
        }
        times: dict[str, list[float]] = {k: [] for k in sides}
        cpus: dict[str, list[float]] = {k: [] for k in sides}
        rss: dict[str, float] = {}
        for name, cmd in sides.items():  # peak RSS once, through the shared wrapper
            if name == PEER2_NAME:
                continue
            rss[name] = run(cmd(tmp / "out"))[1]
            shutil.rmtree(tmp / "out")
        load0 = os.getloadavg()[0]
        for _ in range(args.reps):
            for name, cmd in sides.items():
                wall, cpu = timed(cmd(tmp / "out"))
                times[name].append(wall)
                cpus[name].append(cpu)
                shutil.rmtree(tmp / "out")
        load1 = os.getloadavg()[0]
        report(args, n, times, cpus, rss, (load0, load1))


def report(
    args: argparse.Namespace,
    n: int,
    times: dict[str, list[float]],
    cpus: dict[str, list[float]],
    rss: dict[str, float],
    load: tuple[float, float],
) -> None:
    peer, peer_cpu = median(times[PEER_NAME]), median(cpus[PEER_NAME])
    rows = []
    for name in times:
        t, c = median(times[name]), median(cpus[name])
        runs = ", ".join(f"{x:.2f}" for x in times[name])
        rows.append(
            [name, f"{t:.2f} ({runs})", f"{n / t:.1f}", f"{peer / t:.2f}×", f"{c:.2f}", f"{peer_cpu / c:.2f}×",
             f"{rss[name]:.0f}" if name in rss else "–"]
        )  # fmt: skip
    print(
        f"{machine()}; {n} rows from cfx.synth.make_dataset(shards={args.shards}, rows_per_shard={args.rows})"
    )
    print(f"load average (1 min) {load[0]:.1f} → {load[1]:.1f}")
    headers = ["run", "median wall s (runs)", "images/s", "wall vs loop", "median CPU s", "CPU vs loop"]
    print(table([*headers, "peak RSS MB"], rows))
    w1, wn = median(times["cfx -w 1"]), median(times[f"cfx -w {args.workers}"])
    print(f"\nwall scaling cfx -w {args.workers} / -w 1: {w1 / wn:.2f}×")
    print(
        f"wall scaling of the Pillow loop, 2 processes / 1 (the machine's): {peer / median(times[PEER2_NAME]):.2f}×"
    )


if __name__ == "__main__":
    main()
