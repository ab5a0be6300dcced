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
    import pyarrow.parquet as pq
    from PIL import Image

    n = 0
    for shard in sorted((root / "data").glob("*.parquet")):
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
    peer = median([_timed(pillow_loop, root) for _ in range(args.reps)])
    rows = [["Pillow loop: open + size/mode/quantization", "1", f"{peer:.2f}", f"{n / peer:,.0f}", "1.00"]]
    for w in (1, 2):
        t = median([time_inspect(root, w)[0] for _ in range(args.reps)])
        rows.append(
            [
                f"cfx inspect (cold cache, --workers {w})",
                str(w),
                f"{t:.2f}",
                f"{n / t:,.0f}",
                f"{peer / t:.2f}",
            ]
        )
    if shutil.which("identify"):
        paths = write_images(root)
        t = median([_timed(identify_loop, paths) for _ in range(args.reps)])
        rows.append(
            [
                "ImageMagick identify -ping -format %Q (files)",
                "1",
                f"{t:.2f}",
                f"{n / t:,.0f}",
                f"{peer / t:.2f}",
            ]
        )
    print(f"### Inspect — {n} images ({args.shards} shards, synth scale {args.scale}), {machine()}\n")
    print(table(["what", "workers", "seconds (median)", "images/s", "speed vs Pillow"], rows))
    if "hash" in only:
        _hash_part(root, args.reps)
    if "joint" in only:
        _joint_part(args.reps)
    shutil.rmtree(root, ignore_errors=True)


def _link_copies(root: Path, shards: int, copies: int) -> None:
    """More shards with the same bytes under new names (separate cache entries: the cache keys by path)."""
    data = root / "data"
    for k in range(1, copies):
        for i in range(shards):
            os.link(data / f"HFCF_small_{i}.parquet", data / f"HFCF_small_{k * shards + i}.parquet")


def _hash_part(root: Path, reps: int) -> None:
    alone = median([(_fresh_cache(), time_hash(root, False))[1] for _ in range(reps)])
    fused = median([(_fresh_cache(), time_hash(root, True))[1] for _ in range(reps)])
    print()
    print(
        table(
            ["pass (1 worker)", "seconds (median)", "ratio"],
            [
                ["hash alone", f"{alone:.2f}", "1.00"],
                ["hash + byte facts (fused)", f"{fused:.2f}", f"{fused / alone:.3f}"],
            ],
        )
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
