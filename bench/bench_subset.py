"""Subset benchmarks (issue: slice and subset).

1. Writer throughput: `cfx subset` of every row of a >= 1 GB single-row-group shard vs `cp` of the same file on
   the same disk (both timed up to `sync`, so page-cache write-back is counted for both). Goal >= 0.5x.
2. Peak RSS of that `cfx subset`, in source and shuffled order. Goal < 1 GB.
3. `cfx subset --generators X --labels generated` vs the `datasets` route (load_dataset -> filter ->
   to_parquet) on the same shards: time and extra disk.

    python bench/bench_subset.py [--reps 3] [--large-bytes 1100000000]

Test data comes from cfx.synth (make_large_shard, make_dataset) when it is installed; otherwise from a local
stand-in written the same way (incompressible ~1 MB images, image column uncompressed, one row group).
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

import pyarrow.parquet as pq  # noqa: E402

from bench._common import ROOT, cfx_cmd, dir_bytes, machine, median, run, table  # noqa: E402


def timed(cmd: Sequence[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of ``cmd`` followed by ``sync`` (its writes reach the disk)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    os.sync()
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.decode()}")
    os.sync()
    return time.perf_counter() - start


def cfx(*args: str) -> list[str]:
    return [sys.executable, "-m", "cfx", "--quiet", *args]


# --- test data ------------------------------------------------------------------------------------------
def large_shard(root: Path, target: int) -> tuple[Path, str]:
    try:
        from cfx.synth import make_large_shard

        return make_large_shard(root, target_bytes=target), "cfx.synth.make_large_shard"
    except ImportError:
        pass
    code = f"""
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
from pathlib import Path
from cfx.schema import SOURCE_SCHEMA
rng = np.random.default_rng(0)
pool = [rng.bytes(int(s)) for s in rng.integers(700_000, 1_300_000, 30)]
n, total = 0, 0
while total < {target}:
    total += len(pool[n % 30]); n += 1
img = pa.chunked_array([pa.array(pool, pa.binary())] * (n // 30) + [pa.array(pool[: n % 30], pa.binary())])
label = rng.integers(0, 2, n)
cols = dict(image_name=[f"{{i:08d}}.png" for i in range(n)], format=["PNG"] * n, resolution=[[1024, 1024]] * n,
            mode=["RGB"] * n, image_data=img, model_name=np.where(label == 1, "stabilityai/sd-2", "").tolist(),
            nsfw_flag=[False] * n, prompt=["p"] * n, real_source=np.where(label == 1, "", "LAION").tolist(),
            subset=["s"] * n, split=["train"] * n, label=label.tolist(),
            architecture=np.where(label == 1, "LatDiff", "Real").tolist())
path = Path({str(root)!r}) / "data" / "HFCF_small_0.parquet"
path.parent.mkdir(parents=True, exist_ok=True)
pq.write_table(pa.table(cols, schema=SOURCE_SCHEMA), path, row_group_size=n,
               compression={{c: "none" if c == "image_data" else "snappy" for c in SOURCE_SCHEMA.names}},
               use_dictionary=[c for c in SOURCE_SCHEMA.names if c != "image_data"])
"""
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return root / "data" / "HFCF_small_0.parquet", "local stand-in (cfx.synth not installed)"


def multi_shards(root: Path) -> tuple[str, str]:
    """A CF-shaped multi-shard set; returns (the generator X to select, what made the data)."""
    try:
        from cfx.synth import make_dataset

        make_dataset(root, shards=8, rows_per_shard=150, seed=1)
        made = "cfx.synth.make_dataset(shards=8, rows_per_shard=150)"
    except ImportError:
        code = f"""
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
from pathlib import Path
from cfx.schema import SOURCE_SCHEMA
rng = np.random.default_rng(1)
gens = [f"org{{g}}/model-{{g}}" for g in range(12)]
weights = np.arange(12, 0, -1) / np.arange(12, 0, -1).sum()
for s in range(8):
    n = 150
    label = (rng.random(n) < (0.9 if s < 4 else 0.1)).astype(int)
    model = np.where(label == 1, np.array(gens)[rng.choice(12, n, p=weights)], "")
    imgs = [rng.bytes(int(k)) for k in rng.integers(200_000, 900_000, n)]
    cols = dict(image_name=[f"{{i:08d}}.png" for i in range(n)], format=["PNG"] * n,
                resolution=[[512, 512]] * n, mode=["RGB"] * n, image_data=imgs, model_name=model.tolist(),
                nsfw_flag=[False] * n, prompt=["p"] * n, real_source=np.where(label == 1, "", "COCO").tolist(),
                subset=["s"] * n, split=["train"] * n, label=label.tolist(),
                architecture=np.where(label == 1, "LatDiff", "Real").tolist())
    path = Path({str(root)!r}) / "data" / f"HFCF_small_{{s}}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols, schema=SOURCE_SCHEMA), path, row_group_size=n)
"""
        subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        made = "local stand-in: 8 shards x 150 rows, 12 generators (cfx.synth not installed)"
    import polars as pl

    from cfx.load import load_manifest

    os.environ.setdefault("CFX_CACHE_DIR", str(root.parent / "probe-cache"))
    df = load_manifest(str(root)).df.filter(pl.col("label") == 1)
    counts = df.group_by("model_name").len().sort(["len", "model_name"], descending=[True, False])
    # the generator closest to 10% of the generated rows: a typical "one generator" subset
    target = 0.1 * df.height
    x = min(counts.iter_rows(), key=lambda r: (abs(r[1] - target), r[0]))[0]
    return str(x), made


# --- benchmarks ---------------------------------------------------------------------------------------------
_WRITER = """
import os, sys, time
from pathlib import Path
from cfx.load import load_manifest
from cfx.subset import write_subset
m = load_manifest(sys.argv[1])
os.sync()
t = time.perf_counter()
write_subset(m, Path(sys.argv[2]), cdc=sys.argv[3] == "cdc")
os.sync()
print(time.perf_counter() - t)
"""


_RAW = """
import os, sys, time
size = int(sys.argv[2])
buf = os.urandom(1 << 20)
os.sync()
t = time.perf_counter()
with open(sys.argv[1], "wb") as f:
    for _ in range(size >> 20):
        f.write(buf)
os.sync()
print(time.perf_counter() - t)
"""


def raw_write_seconds(dst: Path, size: int) -> float:
    """The floor for any user-space writer: plain 1 MB write() calls of ``size`` bytes (+ sync)."""
    proc = subprocess.run([sys.executable, "-c", _RAW, str(dst), str(size)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    dst.unlink()
    return float(proc.stdout.strip().splitlines()[-1])


def writer_seconds(root: Path, out: Path, env: dict[str, str], cdc: bool = True) -> float:
    """write_subset() + sync in a fresh interpreter, timed without its start-up and imports."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    mode = "cdc" if cdc else "no-cdc"
    proc = subprocess.run(
        [sys.executable, "-c", _WRITER, str(root), str(out), mode],
        env=full_env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return float(proc.stdout.strip().splitlines()[-1])


def bench_throughput(work: Path, reps: int, target: int) -> tuple[list[list[object]], str]:
    root = work / "large"
    path, made = large_shard(root, target)
    size = path.stat().st_size
    cache = {"CFX_CACHE_DIR": str(work / "cache-large")}
    timed(cfx("index", str(root), "-o", str(work / "large-m.parquet")), env=cache)  # warm the index cache
    cp_t, raw_t, lib_t, nocdc_t, cli_t = [], [], [], [], []
    for i in range(reps):  # interleaved, so load changes on a shared machine hit all of them alike
        dst = work / f"cp-{i}.parquet"
        cp_t.append(timed(["cp", str(path), str(dst)]))
        dst.unlink()
        raw_t.append(raw_write_seconds(work / f"raw-{i}.bin", size))
        out = work / f"lib-{i}"
        # alternate which writer runs first: the second one pays for deleting the first one's 1 GB output
        for cdc in (True, False) if i % 2 == 0 else (False, True):
            (lib_t if cdc else nocdc_t).append(writer_seconds(root, out, cache, cdc=cdc))
            shutil.rmtree(out)
        out = work / f"cli-{i}"
        cli_t.append(timed(cfx("subset", str(root), "--out", str(out)), env=cache))
        shutil.rmtree(out)
    peaks = {}
    for order in ("source", "shuffle"):
        out = work / f"rss-{order}"
        _, peaks[order] = run(cfx_cmd("subset", str(root), "--out", str(out), "--order", order), env=cache)
        shutil.rmtree(out)

    def rate(seconds: list[float]) -> str:
        return f"{median(seconds):.2f} ({size / median(seconds) / 1e6:,.0f} MB/s); runs {', '.join(f'{x:.2f}' for x in seconds)}"

    rows = [
        [f"source: one single-row-group shard, {size / 1e9:.2f} GB", made, ""],
        ["`cp` of the shard (+ sync), median s", rate(cp_t), ""],
        ["plain `write()` of as many bytes from Python (+ sync), median s", rate(raw_t), ""],
        ["cfx writer: `write_subset()` of every row (+ sync), median s", rate(lib_t), ""],
        ["**writer throughput ratio cfx / cp**", f"**{median(cp_t) / median(lib_t):.2f}×**", "goal ≥ 0.5×"],
        ["writer throughput ratio cfx / plain write()", f"{median(raw_t) / median(lib_t):.2f}×", ""],
        ["cfx writer with `--no-cdc` (+ sync), median s", rate(nocdc_t), ""],
        [
            "**writer throughput ratio cfx `--no-cdc` / cp**",
            f"**{median(cp_t) / median(nocdc_t):.2f}×**",
            "goal ≥ 0.5×",
        ],
        ["`cfx subset` CLI incl. interpreter start + index load (+ sync), median s", rate(cli_t), ""],
        ["CLI ratio cfx / cp", f"{median(cp_t) / median(cli_t):.2f}×", ""],
        ["peak RSS, `--order source`", f"**{peaks['source']:,.0f} MB**", "goal < 1 GB"],
        ["peak RSS, `--order shuffle`", f"**{peaks['shuffle']:,.0f} MB**", "goal < 1 GB"],
    ]
    return rows, made


def bench_vs_datasets(work: Path, reps: int) -> list[list[object]]:
    ds = work / "multi"
    x, made = multi_shards(ds)
    files = sorted(str(p) for p in (ds / "data").glob("*.parquet"))
    size = sum(os.path.getsize(f) for f in files)
    cfx_t, cfx_disk, ds_t, ds_disk, rows_out = [], [], [], [], set()
    for i in range(reps):
        cache = work / f"cfx-cache-{i}"  # cold index cache every time
        out = work / f"cfx-out-{i}"
        cfx_t.append(
            timed(
                cfx("subset", str(ds), "--out", str(out), "--generators", x, "--labels", "generated"),
                env={"CFX_CACHE_DIR": str(cache)},
            )
        )
        cfx_disk.append(dir_bytes(out) + dir_bytes(cache))
        rows_out.add(sum(pq.read_metadata(p).num_rows for p in (out / "data").glob("*.parquet")))
        shutil.rmtree(out)
        shutil.rmtree(cache)
        hf_cache = work / f"hf-cache-{i}"
        dst = work / f"ds-out-{i}.parquet"
        code = (
            "import datasets; datasets.disable_progress_bars(); "
            f"d = datasets.load_dataset('parquet', data_files={files!r}, split='train', cache_dir={str(hf_cache)!r}); "
            f"d = d.filter(lambda m: [v == {x!r} for v in m], input_columns='model_name', batched=True); "
            f"d.to_parquet({str(dst)!r})"
        )
        ds_t.append(
            timed(
                [sys.executable, "-c", code],
                env={"HF_DATASETS_OFFLINE": "1", "HF_HOME": str(work / "hf-home")},
            )
        )
        ds_disk.append(dir_bytes(hf_cache) + dst.stat().st_size)
        rows_out.add(pq.read_metadata(dst).num_rows)
        shutil.rmtree(hf_cache)
        dst.unlink()
    if len(rows_out) != 1:
        raise SystemExit(f"cfx and datasets disagree on the row count: {rows_out}")
    return [
        [f"source: {len(files)} shards, {size / 1e6:,.0f} MB", made, ""],
        [f"selection: `--generators {x} --labels generated`", f"{rows_out.pop():,} rows", ""],
        ["`cfx subset` (cold index cache), median s", f"{median(cfx_t):.2f}", ""],
        ["`datasets` load_dataset → filter → to_parquet, median s", f"{median(ds_t):.2f}", ""],
        ["time ratio datasets / cfx", f"**{median(ds_t) / median(cfx_t):.1f}×**", ""],
        [
            "extra disk: cfx (subset + index cache) / datasets (Arrow cache + parquet)",
            f"{median(cfx_disk) / 1e6:,.1f} MB / {median(ds_disk) / 1e6:,.1f} MB = "
            f"**{median(ds_disk) / median(cfx_disk):.1f}×** less with cfx",
            "",
        ],
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--large-bytes", type=int, default=1_100_000_000)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    args = ap.parse_args()
    base = args.work or Path(tempfile.mkdtemp(prefix="cfx-bench-subset-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        rows, _ = bench_throughput(base, args.reps, args.large_bytes)
        rows += bench_vs_datasets(base, args.reps)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"Machine: {machine()}. Command: python bench/bench_subset.py --reps {args.reps}\n")
    print(table(["measure", "result", "goal"], rows))


if __name__ == "__main__":
    main()
