"""Ray benchmarks (issue 6): the local engine vs Ray Data on a local Ray, same machine, same data.

1. CLI end to end, cold caches: `cfx index --no-cache` and `cfx dedupe --no-cache` with --engine local / ray
   (the Ray runs include starting and stopping a local Ray, as a user on one machine pays it).
2. Hashing only, in one process with Ray already up (warm): hash_manifest local (workers=N) vs RayEngine,
   plus the single-process per-image cost (workers=1) used for the 2.7M-image projection.

    python bench/bench_ray.py [--reps 3] [--shards 8] [--rows 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import cfx_cmd, machine, median, run, table  # noqa: E402

FULL_CF_IMAGES = 2_700_000


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--rows", type=int, default=50)
    args = ap.parse_args()
    cores = os.cpu_count() or 1

    from cfx.synth import make_dataset

    work = Path(tempfile.mkdtemp(prefix="cfxr", dir="/tmp"))
    try:
        ds = work / "ds"
        make_dataset(ds, shards=args.shards, rows_per_shard=args.rows, seed=0, scale=1.0)
        n = args.shards * args.rows
        data_mb = sum(p.stat().st_size for p in (ds / "data").glob("*.parquet")) / 1e6
        env = {"CFX_CACHE_DIR": str(work / "cache"), "RAY_ADDRESS": ""}
        run(cfx_cmd("index", str(ds), "-o", str(work / "m.parquet")), env=env)  # the manifest dedupe reads

        # 1. CLI end to end.
        cli_rows = []
        for what, cmd in (
            ("index", ["index", str(ds), "--no-cache", "-o", str(work / "out.parquet")]),
            ("dedupe", ["dedupe", str(work / "m.parquet"), "--no-cache", "-o", str(work / "k.parquet")]),
        ):
            times: dict[str, float] = {}
            for engine in ("local", "ray"):
                walls = [run(cfx_cmd(*cmd, "--engine", engine), env=env)[0] for _ in range(args.reps)]
                times[engine] = median(walls)
            cli_rows.append(
                [
                    f"`cfx {what}` ({n} images)",
                    f"{times['local']:.2f}",
                    f"{times['ray']:.2f}",
                    f"{times['ray'] / times['local']:.2f}×",
                ]
            )

        # 2. Hashing only, Ray warm.
        import ray

        from cfx.engine_ray import RayEngine
        from cfx.hashing import hash_manifest
        from cfx.manifest import read_manifest

        os.environ["CFX_CACHE_DIR"] = str(work / "cache2")
        manifest = read_manifest(work / "m.parquet")
        single = median(
            [_timed(lambda: hash_manifest(manifest, workers=1, use_cache=False)) for _ in range(args.reps)]
        )
        local = median(
            [
                _timed(lambda: hash_manifest(manifest, workers=cores, use_cache=False))
                for _ in range(args.reps)
            ]
        )
        tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")
        t0 = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, _temp_dir=tmp, log_to_driver=False)
        ray_start = time.perf_counter() - t0
        engine = RayEngine()
        hash_manifest(manifest, engine=engine, use_cache=False)  # warm the workers
        on_ray = median(
            [
                _timed(lambda: hash_manifest(manifest, engine=engine, use_cache=False))
                for _ in range(args.reps)
            ]
        )
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

        per_image = single / n
        hash_rows = [
            ["hash, 1 process (per-image cost)", f"{single:.2f}", f"{per_image * 1000:.1f} ms/image"],
            [
                f"hash, local engine ({cores} processes)",
                f"{local:.2f}",
                f"{single / local:.2f}× vs 1 process",
            ],
            [
                f"hash, Ray Data warm ({cores} CPUs)",
                f"{on_ray:.2f}",
                f"{on_ray / local:.2f}× the local engine",
            ],
            ["starting a local Ray (`ray.init`)", f"{ray_start:.2f}", "paid once per command"],
        ]
        proj_rows = []
        for n_cores in (2, 16, 64, 256):
            hours = FULL_CF_IMAGES * per_image / n_cores / 3600
            proj_rows.append([n_cores, f"{hours:.2f} h" if hours >= 1 else f"{hours * 60:.0f} min"])

        print(
            f"# {machine()}; {n} CF-shaped images in {args.shards} shards ({data_mb:.0f} MB), medians of {args.reps}"
        )
        print(
            f"# command: python bench/bench_ray.py --reps {args.reps} --shards {args.shards} --rows {args.rows}\n"
        )
        print(table(["command (cold cache)", "local engine s", "Ray-local s", "Ray / local"], cli_rows))
        print()
        print(table(["hashing only", "seconds", "note"], hash_rows))
        print(f"\n(load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})\n")
        print(
            f"Projected hashing time for {FULL_CF_IMAGES:,} images at {per_image * 1000:.1f} ms/image/core:"
        )
        print(table(["cores", "hours"], proj_rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
