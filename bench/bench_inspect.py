"""Inspect benchmarks (issue 12): byte facts vs a plain Pillow loop, the fused hash + inspect pass, the joint canary.

1. `cfx inspect` (cold cache, 1 and 2 workers) vs a plain Pillow loop over the same shards that opens each image
   (header only, as `Image.open` does) and reads `size`, `mode` and `quantization` — images/s, median of --reps.
   A second peer, when installed: ImageMagick `identify -ping -format %Q` in one process over the images written
   out as files (the writing not timed).
2. The dedupe hashing pass with the facts fused in (`with_facts=True`) vs hashing alone, one worker.
3. The joint canary (`cfx audit --joint`) on 556,541 synthetic rows (CF-shaped sizes and formats).

    python bench/bench_inspect.py [--reps 3] [--shards 4] [--rows 100] [--scale 0.5]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, median, table  # noqa: E402


def _fresh_cache() -> None:
    os.environ["CFX_CACHE_DIR"] = tempfile.mkdtemp(prefix="cfx-bench-cache-")


def pillow_loop(root: Path) -> int:
    """The peer: stream every shard's image_data and read what Pillow's lazy open gives."""
    return pillow_files(sorted((root / "data").glob("*.parquet")))


def pillow_loop_2(root: Path) -> int:
    """The peer on two processes, as a user splits it (`xargs -P 2`): each takes every other shard. Spawned,
    like cfx's workers, and timed from before they start."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    shards = sorted((root / "data").glob("*.parquet"))
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        return sum(pool.map(pillow_files, [shards[0::2], shards[1::2]]))


def pillow_files(shards: list[Path]) -> int:
    import pyarrow.parquet as pq
    from PIL import Image

    n = 0
    for shard in shards:
        pf = pq.ParquetFile(shard, pre_buffer=False, buffer_size=1 << 20)
        for batch in pf.iter_batches(batch_size=16, columns=["image_data"], use_threads=False):
            for data in batch.column(0).to_pylist():
                img = Image.open(io.BytesIO(data))
                _ = img.size, img.mode, getattr(img, "quantization", None)
                n += 1
    return n


def write_images(root: Path) -> list[Path]:
    """Every image as a file of its own, for identify (which reads files, not parquet)."""
    import pyarrow.parquet as pq

    out = root / "files"
    out.mkdir(exist_ok=True)
    paths = []
    for shard in sorted((root / "data").glob("*.parquet")):
        for data in pq.read_table(shard, columns=["image_data"]).column(0).to_pylist():
            paths.append(out / f"{len(paths)}.img")
            paths[-1].write_bytes(data)
    return paths


def identify_loop(paths: list[Path]) -> None:
    """The second peer: one ``identify -ping -format %Q`` process over ``paths``."""
    import subprocess

    subprocess.run(
        ["identify", "-ping", "-format", "%Q\n", *map(str, paths)], check=True, capture_output=True
    )


def time_inspect(root: Path, workers: int) -> tuple[float, int]:
    from cfx.inspect import inspect_manifest
    from cfx.load import load_manifest

    m = load_manifest(str(root))
    t = time.perf_counter()
    res = inspect_manifest(m, workers=workers, use_cache=False)
    return time.perf_counter() - t, res.read_rows


def time_hash(root: Path, with_facts: bool) -> float:
    from cfx.hashing import hash_shard
    from cfx.load import load_manifest
    from cfx.stream import rows_by_shard

    m = load_manifest(str(root))
    t = time.perf_counter()
    for part in rows_by_shard(m):
        hash_shard(m.root, part.shard, m.shards[part.shard], part.rows, with_facts=with_facts)
    return time.perf_counter() - t


def joint_rows(n: int = 556_541, seed: int = 0):  # type: ignore[no-untyped-def]
    import numpy as np
    import polars as pl

    from cfx.manifest import Manifest

    rng = np.random.default_rng(seed)
    label = rng.random(n) < 0.5
    side = np.where(label, rng.choice([256, 512, 768, 1024], n), rng.choice([178, 480, 512, 640, 1024], n))
    jpeg = np.where(label, rng.random(n) < 0.05, rng.random(n) < 0.8)
    df = pl.DataFrame(
        {
            "shard": ["s"] * n,
            "row": np.arange(n),
            "label": label.astype(np.int8),
            "width": side,
            "height": np.where(rng.random(n) < 0.7, side, side * 3 // 4),
            "format": np.where(jpeg, "JPEG", "PNG"),
            "mode": np.where(rng.random(n) < 0.98, "RGB", "L"),
            "num_bytes": rng.integers(20_000, 2_000_000, n),
            "model_name": [f"gen{i}" for i in rng.integers(0, 1700, n)],
            "real_source": [f"src{i}" for i in rng.integers(0, 11, n)],
        }
    )
    return Manifest(df=df, root="/bench")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--only", default="inspect,hash,joint", help="comma-separated parts to run")
    ap.add_argument(
        "--copies", type=int, default=1, help="hard-link every shard this many times (a large set, quickly)"
    )
    args = ap.parse_args()
    only = set(args.only.split(","))
    from cfx.synth import make_dataset

    _fresh_cache()
    root = Path(tempfile.mkdtemp(prefix="cfx-bench-inspect-"))
    make_dataset(root, shards=args.shards, rows_per_shard=args.rows, seed=0, scale=args.scale)
    _link_copies(root, args.shards, args.copies)
    n = args.shards * args.rows * args.copies
    if "inspect" in only:
        _inspect_part(root, n, args)
    if "hash" in only:
        _hash_part(root, args.reps)
    if "joint" in only:
        _joint_part(args.reps)
    shutil.rmtree(root, ignore_errors=True)


def _inspect_part(root: Path, n: int, args: argparse.Namespace) -> None:
    sides = {
        ("Pillow loop: open + size/mode/quantization", 1): lambda: _timed(pillow_loop, root),
        ("Pillow loop, 2 processes (every other shard each)", 2): lambda: _timed(pillow_loop_2, root),
        ("cfx inspect (cold cache)", 1): lambda: time_inspect(root, 1)[0],
        ("cfx inspect (cold cache)", 2): lambda: time_inspect(root, 2)[0],
    }
    if shutil.which("identify") and n <= 10_000:  # a second peer, on the images as files (one argv)
        paths = write_images(root)
        sides[("ImageMagick identify -ping -format %Q (files)", 1)] = lambda: _timed(identify_loop, paths)
    times: dict[tuple[str, int], list[float]] = {k: [] for k in sides}
    for _ in range(args.reps):  # interleaved, so that a change of load falls on every side
        for key, fn in sides.items():
            times[key].append(fn())
    t = {k: median(v) for k, v in times.items()}
    peer = t[("Pillow loop: open + size/mode/quantization", 1)]
    rows = [
        [name, str(w), f"{s:.2f} ({', '.join(f'{x:.2f}' for x in times[(name, w)])})", f"{n / s:,.0f}",
         f"{peer / s:.2f}"]
        for (name, w), s in t.items()
    ]  # fmt: skip
    print(f"### Inspect — {n} images ({args.shards} shards, synth scale {args.scale}), {machine()}\n")
    print(table(["what", "processes", "seconds, median (runs)", "images/s", "speed vs Pillow loop"], rows))
    peer2 = t[("Pillow loop, 2 processes (every other shard each)", 2)]
    cfx1, cfx2 = t[("cfx inspect (cold cache)", 1)], t[("cfx inspect (cold cache)", 2)]
    print(f"\nscaling 2 vs 1: cfx {cfx1 / cfx2:.2f}×, Pillow loop {peer / peer2:.2f}× (the machine's)")


def _link_copies(root: Path, shards: int, copies: int) -> None:
    """More shards with the same bytes under new names (separate cache entries: the cache keys by path)."""
    data = root / "data"
    for k in range(1, copies):
        for i in range(shards):
            os.link(data / f"HFCF_small_{i}.parquet", data / f"HFCF_small_{k * shards + i}.parquet")


def _hash_part(root: Path, reps: int) -> None:
    """Alone and fused interleaved, each on a fresh cache; wall and CPU seconds of this process (one worker:
    no pool), and the median of the paired ratios (each fused run against the alone run next to it)."""
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(reps):
        for with_facts in (False, True):
            _fresh_cache()
            cpu = time.process_time()
            wall = time_hash(root, with_facts)
            runs[with_facts].append((wall, time.process_time() - cpu))
    rows = []
    for name, with_facts in (("hash alone", False), ("hash + byte facts (fused)", True)):
        wall, cpu = (median([r[i] for r in runs[with_facts]]) for i in (0, 1))
        paired = [f[1] / a[1] for a, f in zip(runs[False], runs[True], strict=True)]
        rows.append([name, f"{wall:.2f}", f"{cpu:.2f}", f"{median(paired):.3f}" if with_facts else "1.000"])
    print()
    print(
        table(["pass (1 worker)", "wall s (median)", "CPU s (median)", "CPU ratio (median of pairs)"], rows)
    )


def _joint_part(reps: int) -> None:
    from cfx.audit import audit

    m = joint_rows()
    times, result = [], None
    for _ in range(reps):
        t = time.perf_counter()
        result = audit(m, joint=True)
        times.append(time.perf_counter() - t)
    assert result is not None and result.joint is not None
    print()
    print(
        table(
            ["joint canary", "rows", "rows fitted", "seconds (median)", "joint AUROC"],
            [
                [
                    "cfx audit --joint (incl. single features)",
                    f"{m.df.height:,}",
                    f"{result.joint.rows:,}",
                    f"{median(times):.1f}",
                    f"{result.joint.auroc:.3f}",
                ]
            ],
        )
    )


def _timed(fn, *args):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
