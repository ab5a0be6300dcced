"""Index benchmarks (issue: foundation).

1. Local index of a CF-shaped set: `cfx index` (cold cache) vs `datasets.load_dataset("parquet", data_files=...)`
   on the same shards — time and extra disk.
2. Peak RSS of `cfx index` on a >= 1 GB single-row-group shard (metadata only, and with --num-bytes).
3. Remote index through the local Hub: bytes the server sent / shard bytes.

    python bench/bench_index.py [--reps 3] [--large-bytes 1100000000] [--skip-remote]
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

from bench._common import cfx_cmd, dir_bytes, machine, median, run, table  # noqa: E402


def bench_local(work: Path, reps: int) -> list[list[object]]:
    from cfx.synth import make_dataset

    ds = work / "ds"
    make_dataset(ds, shards=8, rows_per_shard=150, seed=1)
    files = sorted(str(p) for p in (ds / "data").glob("*.parquet"))
    size = sum(os.path.getsize(f) for f in files)
    cfx_t, ds_t, ds_disk = [], [], []
    for i in range(reps):
        cache = work / f"cfx-cache-{i}"
        t, _ = run(
            cfx_cmd("index", str(ds), "-o", str(work / f"m{i}.parquet")), env={"CFX_CACHE_DIR": str(cache)}
        )
        cfx_t.append(t)
        hf_cache = work / f"hf-cache-{i}"
        code = (
            "import datasets,sys; datasets.disable_progress_bars(); "
            f"d=datasets.load_dataset('parquet', data_files={files!r}, split='train', cache_dir={str(hf_cache)!r}); "
            "print(len(d))"
        )
        t, _ = run(
            [sys.executable, "-c", code], env={"HF_DATASETS_OFFLINE": "1", "HF_HOME": str(work / "hf-home")}
        )
        ds_t.append(t)
        ds_disk.append(dir_bytes(hf_cache))
        shutil.rmtree(hf_cache, ignore_errors=True)
    warm, _ = run(cfx_cmd("stats", str(ds), "--json"), env={"CFX_CACHE_DIR": str(work / "cfx-cache-0")})
    return [
        ["shards / rows / bytes", f"8 / 1,200 / {size / 1e6:,.0f} MB", ""],
        ["`cfx index` (cold cache), median s", f"{median(cfx_t):.2f}", ""],
        ["`datasets.load_dataset`, median s", f"{median(ds_t):.2f}", ""],
        ["speed ratio (datasets / cfx)", f"**{median(ds_t) / median(cfx_t):.1f}×**", "goal ≥ 50×"],
        [
            "extra disk: cfx (manifest only) / datasets cache",
            f"{dir_bytes(work / 'm0.parquet') / 1e6:.2f} MB / {median(ds_disk) / 1e6:,.0f} MB",
            "goal 0 extra image bytes",
        ],
        ["`cfx stats` with a warm cache, s (incl. interpreter start)", f"{warm:.2f}", ""],
    ]


def bench_large(work: Path, target: int) -> list[list[object]]:
    from cfx.synth import make_large_shard

    root = work / "large"
    path = make_large_shard(root, target_bytes=target)
    size = path.stat().st_size
    rows = []
    for label, extra in (("metadata only", []), ("--num-bytes", ["--num-bytes"])):
        t, rss = run(cfx_cmd("index", str(root), "-o", str(work / "large.parquet"), "--no-cache", *extra))
        rows.append(
            [
                f"`cfx index` {label} on a {size / 1e9:.2f} GB single-row-group shard",
                f"{rss:,.0f} MB peak RSS, {t:.1f} s",
                "goal < 1 GB",
            ]
        )
    return rows


def bench_remote(work: Path) -> list[list[object]]:
    from tests.conftest import hub_env, make_shard
    from tests.hubserver import LocalHub

    repo = "OwensLab/CommunityForensics-Small"
    shards = {
        f"data/HFCF_small_{i}.parquet": make_shard(i, rows=400, min_kb=150, max_kb=250) for i in range(3)
    }
    total = sum(len(b) for b in shards.values())
    with LocalHub(work / "hub") as hub:
        hub.create_repo(repo, {"README.md": b"# bench\n", **shards})
        hub.start()
        mark = hub.log_mark()
        env = hub_env(hub.endpoint, work / "hf-home-remote", CFX_CACHE_DIR=str(work / "remote-cache"))
        t, _ = run(cfx_cmd("index", f"hf://datasets/{repo}", "-o", str(work / "remote.parquet")), env=env)
        sent = sum(e.body_bytes_sent for e in hub.entries_since(mark, "/resolve/") if e.method == "GET")
    return [
        [
            f"remote `cfx index hf://…` (3 shards of {total / 3e6:,.0f} MB): bytes fetched / shard bytes",
            f"{sent:,} / {total:,} = **{sent / total:.2%}** ({t:.1f} s)",
            "goal ≤ 2%",
        ]
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--large-bytes", type=int, default=1_100_000_000)
    ap.add_argument("--skip-remote", action="store_true")
    ap.add_argument("--skip-large", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cfx-bench-index-") as tmp:
        work = Path(tmp)
        rows = bench_local(work, args.reps)
        if not args.skip_large:
            rows += bench_large(work, args.large_bytes)
        if not args.skip_remote:
            rows += bench_remote(work)
    print(f"Machine: {machine()}. Command: python bench/bench_index.py --reps {args.reps}\n")
    print(table(["measure", "result", "goal"], rows))


if __name__ == "__main__":
    main()
