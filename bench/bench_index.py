"""Index benchmarks (issue: foundation).

1. Local index of a CF-shaped set: `cfx index` (cold cache) vs `datasets.load_dataset("parquet", data_files=...)`
   on the same shards — time and extra disk.
2. Peak RSS of `cfx index` on a >= 1 GB single-row-group shard (metadata only, and with --num-bytes).
3. Remote index through the local Hub: bytes the server sent / shard bytes.

    python bench/bench_index.py [--reps 3] [--large-bytes 1100000000] [--skip-remote]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, cfx_cmd, dir_bytes, machine, median, run, table  # noqa: E402

_CFX_SNIPPET = """
import sys, time
from cfx.index import build_manifest
from cfx.sources import resolve_local
t = time.perf_counter()
m = build_manifest(resolve_local(sys.argv[1]), use_cache=False).manifest
print(time.perf_counter() - t, m.df.height)
"""
_DATASETS_SNIPPET = """
import sys, time, json
import datasets
datasets.disable_progress_bars()
files = json.loads(sys.argv[1])
t = time.perf_counter()
d = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=sys.argv[2])
print(time.perf_counter() - t, len(d))
"""


def _timed(code: str, *args: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds the operation took inside the process, wall seconds including interpreter start)."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.split()[0]), time.perf_counter() - start


def bench_local(work: Path, reps: int, shards: int, rows: int) -> list[list[object]]:
    from cfx.synth import make_dataset

    ds = work / "ds"
    info = make_dataset(ds, shards=shards, rows_per_shard=rows, seed=1)
    files = sorted(str(p) for p in (ds / "data").glob("*.parquet"))
    size = sum(os.path.getsize(f) for f in files)
    cfx_op, cfx_wall, ds_op, ds_wall, ds_disk = [], [], [], [], []
    for i in range(reps):
        op, wall = _timed(_CFX_SNIPPET, str(ds))
        cfx_op.append(op)
        cfx_wall.append(wall)
        hf_cache = work / f"hf-cache-{i}"
        env = {"HF_DATASETS_OFFLINE": "1", "HF_HOME": str(work / "hf-home")}
        op, wall = _timed(_DATASETS_SNIPPET, json.dumps(files), str(hf_cache), env=env)
        ds_op.append(op)
        ds_wall.append(wall)
        ds_disk.append(dir_bytes(hf_cache))
        shutil.rmtree(hf_cache, ignore_errors=True)
    cache = work / "cfx-cache"
    run(cfx_cmd("index", str(ds), "-o", str(work / "m.parquet")), env={"CFX_CACHE_DIR": str(cache)})
    warm, _ = run(cfx_cmd("stats", str(ds), "--json"), env={"CFX_CACHE_DIR": str(cache)})
    return [
        ["data", f"{shards} shards, {info.n_rows:,} rows, {size / 1e6:,.0f} MB", ""],
        [
            "index time: cfx / datasets.load_dataset (median s, in-process)",
            f"{median(cfx_op):.3f} / {median(ds_op):.2f}",
            "",
        ],
        [
            "**speed ratio, in-process** (datasets / cfx)",
            f"**{median(ds_op) / median(cfx_op):.0f}×**",
            "goal ≥ 50×",
        ],
        [
            "wall incl. interpreter start: cfx / datasets (median s)",
            f"{median(cfx_wall):.2f} / {median(ds_wall):.2f} = {median(ds_wall) / median(cfx_wall):.1f}×",
            "",
        ],
        [
            "extra disk: cfx manifest / datasets Arrow cache",
            f"{dir_bytes(work / 'm.parquet') / 1e6:.2f} MB / {median(ds_disk) / 1e6:,.0f} MB",
            "0 extra image bytes",
        ],
        ["`cfx stats` on a warm index cache, wall s", f"{warm:.2f}", ""],
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
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--skip-remote", action="store_true")
    ap.add_argument("--skip-large", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cfx-bench-index-") as tmp:
        work = Path(tmp)
        rows = bench_local(work, args.reps, args.shards, args.rows)
        if not args.skip_large:
            rows += bench_large(work, args.large_bytes)
        if not args.skip_remote:
            rows += bench_remote(work)
    print(
        f"Machine: {machine()}. Command: python bench/bench_index.py --reps {args.reps} --shards {args.shards} --rows {args.rows}\n"
    )
    print(table(["measure", "result", "goal"], rows))


if __name__ == "__main__":
    main()
