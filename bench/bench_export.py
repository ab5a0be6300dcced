"""Export benchmarks (issue 14: cfx export).

1. Throughput: `cfx export` of every row of a single-row-group shard (default 2.1 GB of ~1 MB PNGs) as
   cnndetection folders and as webdataset tars, vs `cp -r` of the same images already on disk as files and vs
   `tar cf` of them. Every timing ends with `sync` (write-back counted for every tool); runs interleaved.
   Goal: cfx >= 0.5x the throughput of cp.
2. Peak RSS of each export on that shard (one row group: a reader that loads it needs it all). Goal < 1 GB.

    python bench/bench_export.py [--reps 3] [--large-bytes 2100000000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, cfx_cmd, dir_bytes, machine, median, run, table  # noqa: E402


def timed(cmd: Sequence[str]) -> float:
    """Wall seconds of ``cmd`` followed by ``sync``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    os.sync()
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.decode()}")
    os.sync()
    return time.perf_counter() - start


def clear(*paths: Path) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    os.sync()


def fmt_runs(xs: Sequence[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--large-bytes", type=int, default=2_100_000_000)
    ap.add_argument("--dir", type=Path, default=None, help="Scratch folder (default: a temp folder).")
    args = ap.parse_args()
    from cfx.synth import make_large_shard

    work = Path(tempfile.mkdtemp(prefix="bench-export-", dir=args.dir))
    try:
        src = work / "src"
        shard = make_large_shard(src, target_bytes=args.large_bytes)
        manifest = work / "manifest.parquet"
        subprocess.run(
            cfx_cmd("index", str(src), "-o", str(manifest)),
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        cnn, wds, files, cp_out, tar_out = (work / n for n in ("cnn", "wds", "files", "cp", "files.tar"))
        # the same images as plain files on disk, for cp -r and tar
        subprocess.run(
            cfx_cmd("export", str(manifest), "--format", "cnndetection", "--out", str(files)),
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        image_bytes = dir_bytes(files)
        n_files = sum(1 for _ in files.rglob("*.png"))
        times: dict[str, list[float]] = {k: [] for k in ("cnn", "wds", "cp", "tar")}
        for _ in range(args.reps):
            times["cnn"].append(
                timed(cfx_cmd("export", str(manifest), "--format", "cnndetection", "--out", str(cnn)))
            )
            clear(cnn)
            times["cp"].append(timed(["cp", "-r", str(files), str(cp_out)]))
            clear(cp_out)
            times["wds"].append(
                timed(cfx_cmd("export", str(manifest), "--format", "webdataset", "--out", str(wds)))
            )
            clear(wds)
            times["tar"].append(timed(["tar", "cf", str(tar_out), "-C", str(files), "."]))
            clear(tar_out)
        rss = {}
        for name, fmt, out in (("cnn", "cnndetection", cnn), ("wds", "webdataset", wds)):
            _, rss[name] = run(cfx_cmd("export", str(manifest), "--format", fmt, "--out", str(out)))
            clear(out)
        _, rss["wds-shuffle"] = run(
            cfx_cmd(
                "export",
                str(manifest),
                "--format",
                "webdataset",
                "--shuffle",
                "--shard-size",
                "256MB",
                "--out",
                str(wds),
            )
        )
        clear(wds)
        med = {k: median(v) for k, v in times.items()}

        def paired(ours: str, peer: str) -> float:
            """Load on a shared machine drifts: compare each run with the peer run right next to it."""
            return median([p / o for o, p in zip(times[ours], times[peer], strict=True)])

        mbs = {k: image_bytes / 1e6 / v for k, v in med.items()}
        load = os.getloadavg()[0]
        rows = [
            [
                "source",
                f"one single-row-group shard, {shard.stat().st_size / 1e9:.2f} GB, {n_files:,} images ({image_bytes / 1e9:.2f} GB of image bytes)",
                "",
            ],
            [
                "`cp -r` of the images as files (+ sync), median s",
                f"{med['cp']:.2f} ({mbs['cp']:,.0f} MB/s); runs {fmt_runs(times['cp'])}",
                "",
            ],
            [
                "`tar cf` of the images as files (+ sync), median s",
                f"{med['tar']:.2f} ({mbs['tar']:,.0f} MB/s); runs {fmt_runs(times['tar'])}",
                "",
            ],
            [
                "`cfx export --format cnndetection` (CLI, + sync), median s",
                f"{med['cnn']:.2f} ({mbs['cnn']:,.0f} MB/s); runs {fmt_runs(times['cnn'])}",
                "",
            ],
            [
                "`cfx export --format webdataset` (CLI, + sync), median s",
                f"{med['wds']:.2f} ({mbs['wds']:,.0f} MB/s); runs {fmt_runs(times['wds'])}",
                "",
            ],
            ["**throughput ratio cnndetection / cp**", f"**{med['cp'] / med['cnn']:.2f}×**", "goal ≥ 0.5×"],
            [
                "median of the per-repetition ratios cnndetection / cp (paired runs)",
                f"{paired('cnn', 'cp'):.2f}×",
                "",
            ],
            ["throughput ratio webdataset / cp", f"{med['cp'] / med['wds']:.2f}×", ""],
            ["throughput ratio webdataset / tar", f"{med['tar'] / med['wds']:.2f}×", ""],
            [
                "median of the per-repetition ratios webdataset / tar (paired runs)",
                f"{paired('wds', 'tar'):.2f}×",
                "",
            ],
            ["**peak RSS, cnndetection**", f"**{rss['cnn']:.0f} MB**", "goal < 1 GB"],
            ["**peak RSS, webdataset**", f"**{rss['wds']:.0f} MB**", "goal < 1 GB"],
            [
                "peak RSS, webdataset --shuffle --shard-size 256MB",
                f"{rss['wds-shuffle']:.0f} MB",
                "goal < 1 GB",
            ],
        ]
        print(f"{machine()}; load average (1 min) at the end: {load:.1f}; reps {args.reps}\n")
        print(table(["measure", "result", "goal"], rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
