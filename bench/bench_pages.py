"""The page-level image reader (cfx.pages) vs the pyarrow reader it replaces, side by side in one run.

1. On a real-layout shard (one row group, pyarrow's defaults: a ≥ 1 GB dictionary page holding the first
   1,024 images): peak RSS of the whole process tree (sampled every 20 ms) and wall time of
   `cfx dedupe --workers 1/2`, `cfx subset` of 50 rows, and pyarrow `iter_batches(batch_size=16)` alone;
   the old reader is today's main branch (`git archive`d into /tmp), the new one this checkout. Interleaved, medians.
2. Reads through the local Hub (nginx's access log counts the bytes sent):
   a 1% selection of an Eval-like layout (125-row files, 5 row groups of 25 rows): bytes fetched / bytes of the
   row groups holding the selected rows; and a 50-row selection of a real-layout shard: bytes fetched vs its size.

    PYTHONPATH=. python bench/bench_pages.py --images 1100 --reps 2

Data lives in a temporary folder under /tmp and is deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, machine, median, table  # noqa: E402

PYARROW_ALONE = """
import sys, pyarrow.parquet as pq
pf = pq.ParquetFile(sys.argv[1], pre_buffer=False, buffer_size=1 << 20)
for batch in pf.iter_batches(batch_size=16, columns=["image_data"], use_threads=False):
    pass
"""


def tree_peak(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB of the process and all its descendants, sampled every 20 ms)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        with contextlib.suppress(psutil.Error):  # a process may end while it is being measured
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        peak = max(peak, total)
        time.sleep(0.02)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    return wall, peak / 2**20


def old_checkout(tmp: Path) -> Path:
    """Today's main branch (the pyarrow reader), exported without touching any work tree."""
    out = tmp / "cfx-main"
    out.mkdir()
    archive = subprocess.run(
        ["git", "-C", os.environ.get("CFX_BENCH_GIT", str(ROOT)), "archive", "main"],  # the repo holding main
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def memory_part(tmp: Path, images: int, reps: int) -> str:
    from tests.bigpage import write_big_page_shard

    ds = tmp / "ds"
    shard = write_big_page_shard(ds, images)
    import pyarrow.parquet as pq

    from cfx import pages

    with open(shard, "rb") as f:
        layout = pages.read_layout(pages.Source(f), pq.ParquetFile(shard), "image_data")
    old = old_checkout(tmp)
    py = sys.executable
    envs = {
        "old": {**os.environ, "PYTHONPATH": str(old), "PYTHONDONTWRITEBYTECODE": "1"},
        "new": {**os.environ, "PYTHONPATH": str(ROOT)},
    }
    manifest = tmp / "m.parquet"
    subprocess.run(
        [py, "-m", "cfx", "--quiet", "index", str(ds), "-o", str(manifest)], env=envs["new"], check=True
    )
    step = max(1, images // 50)
    commands = {
        "cfx dedupe --workers 1": [
            "dedupe",
            str(manifest),
            "--workers",
            "1",
            "--no-cache",
            "-o",
            "k.parquet",
        ],
        "cfx dedupe --workers 2": [
            "dedupe",
            str(manifest),
            "--workers",
            "2",
            "--no-cache",
            "-o",
            "k.parquet",
        ],
        "cfx subset (50 rows)": ["subset", str(manifest), "--out", "sub", "--where", f"row % {step} = 0"],
    }
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(reps):
        for name, args in commands.items():
            for side in ("old", "new"):
                work = tmp / f"w-{side}"
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir()
                env = {**envs[side], "CFX_CACHE_DIR": str(work / "cache")}
                results.setdefault((name, side), []).append(
                    tree_peak([py, "-m", "cfx", "--quiet", *args], env, work)
                )
        results.setdefault(("pyarrow iter_batches(16) alone", "-"), []).append(
            tree_peak([py, "-c", PYARROW_ALONE, str(shard)], envs["new"], tmp)
        )
    rows = []
    for name in [*commands, "pyarrow iter_batches(16) alone"]:
        sides = ("old", "new") if name in commands else ("-",)
        cells = [name]
        for side in sides:
            runs = results[(name, side)]
            cells += [f"{median([r for _, r in runs]):,.0f}", f"{median([t for t, _ in runs]):.1f}"]
        if name in commands:
            t_old = median([t for t, _ in results[(name, "old")]])
            t_new = median([t for t, _ in results[(name, "new")]])
            cells.append(f"{t_old / t_new:.2f}×")
        else:
            cells += ["", "", ""]
        rows.append(cells)
    head = (
        f"Shard: {shard.stat().st_size / 1e9:.2f} GB, {layout.rows:,} rows in {layout.row_groups} row group, "
        f"{layout.pages} pages of the image column (codec {layout.codec}), largest page "
        f"{layout.largest_page / 1e9:.2f} GB ({layout.largest_page_rows:,} images); {reps} reps, medians.\n\n"
    )
    return head + table(
        [
            "run",
            "old reader: peak RSS MB (tree)",
            "old: wall s",
            "new reader: peak RSS MB (tree)",
            "new: wall s",
            "speed new/old",
        ],
        rows,
    )


def hub_part(tmp: Path, images: int) -> str:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.bigpage import write_big_page_shard
    from tests.hubserver import LocalHub

    # Eval-like: 4 files of 125 rows in 5 row groups of 25, ~100 KB images
    rng = np.random.default_rng(0)
    eval_files = {}
    for f in range(4):
        n = 125
        table_ = pa.table(
            {
                "image_name": [f"{f}-{i}.png" for i in range(n)],
                "image_data": pa.array([rng.bytes(100_000) for _ in range(n)], pa.binary()),
                "model_name": ["gen"] * n,
                "label": pa.array(np.ones(n, np.int64)),
            }
        )
        path = tmp / f"eval-{f}.parquet"
        pq.write_table(table_, path, row_group_size=25)
        eval_files[f"data/CompEval-{f:05d}-of-00004.parquet"] = path
    big = write_big_page_shard(tmp / "bigds", images)
    hub = LocalHub(tmp / "hub")
    try:
        hub.create_repo("bench/eval-like", {"README.md": b"eval\n", **eval_files})
        hub.create_repo("bench/real-layout", {"README.md": b"big\n", "data/HFCF_small_0.parquet": big})
        hub.start()
        old = tmp / "cfx-main"
        envs = {"old": str(old), "new": str(ROOT)}
        rows_out = []
        # 1% of 500 rows: 5 rows, each in another row group
        name = "data/CompEval-{:05d}-of-00004.parquet".format
        picks = (
            f"(shard = '{name(0)}' AND row IN (3, 60)) OR (shard = '{name(1)}' AND row = 110)"
            f" OR (shard = '{name(3)}' AND row IN (40, 90))"
        )
        holding = 0
        for rel, path in eval_files.items():
            meta = pq.ParquetFile(path).metadata
            want = {"00000": [3, 60], "00001": [110], "00003": [40, 90]}.get(rel.split("-")[1], [])
            for rg in {r // 25 for r in want}:
                g = meta.row_group(rg)
                holding += sum(g.column(c).total_compressed_size for c in range(g.num_columns))
        for side in ("old", "new"):
            fetched = _fetched(hub, tmp, envs[side], "hf://datasets/bench/eval-like", picks, "CompEval")
            rows_out.append(
                [
                    f"Eval-like 1% (5 of 500 rows), {side} reader",
                    f"{fetched:,}",
                    f"{holding:,}",
                    f"{fetched / holding:.2f}×",
                ]
            )
        size = big.stat().st_size
        step = max(1, images // 50)
        for side in ("old", "new"):
            fetched = _fetched(
                hub, tmp, envs[side], "hf://datasets/bench/real-layout", f"row % {step} = 0", "HFCF"
            )
            rows_out.append(
                [
                    f"real layout, 50 rows spread over the shard, {side} reader",
                    f"{fetched:,}",
                    f"{size:,} (shard)",
                    f"{fetched / size:.2f}×",
                ]
            )
            fetched = _fetched(
                hub, tmp, envs[side], "hf://datasets/bench/real-layout", f"row >= {images - 50}", "HFCF"
            )
            rows_out.append(
                [
                    f"real layout, its last 50 rows, {side} reader",
                    f"{fetched:,}",
                    f"{size:,} (shard)",
                    f"{fetched / size:.2f}×",
                ]
            )
    finally:
        hub.close()
    return table(
        ["selection (cfx subset over hf://)", "bytes fetched (nginx)", "reference bytes", "ratio"], rows_out
    )


def _fetched(hub: object, tmp: Path, pythonpath: str, source: str, where: str, path_part: str) -> int:
    from tests.conftest import hub_env

    out = tmp / "sub-out"
    shutil.rmtree(out, ignore_errors=True)
    mark = hub.log_mark()  # type: ignore[attr-defined]
    env = hub_env(hub.endpoint, tmp / "hf-home")  # type: ignore[attr-defined]
    env.update(PYTHONPATH=pythonpath, PYTHONDONTWRITEBYTECODE="1", CFX_CACHE_DIR=str(tmp / "cache-hub"))
    shutil.rmtree(tmp / "cache-hub", ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-m", "cfx", "--quiet", "subset", source, "--out", str(out), "--where", where],
        env=env,
        cwd=tmp,  # not the checkout: `python -m` would import cfx from the current folder
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    kept = sum(1 for _ in (out / "data").glob("*.parquet"))
    assert kept, f"nothing selected by {where}"
    sent = [e for e in hub.entries_since(mark, path_part) if e.method == "GET"]  # type: ignore[attr-defined]
    return sum(e.body_bytes_sent for e in sent)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1100)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-hub", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cfx-bench-pages-", dir="/tmp"))
    try:
        out = [f"Machine: {machine()}, shared with other jobs (noisy).", ""]
        if not args.skip_memory:
            out += [memory_part(tmp, args.images, args.reps), ""]
        elif not (tmp / "cfx-main").exists():
            old_checkout(tmp)
        if not args.skip_hub:
            out += [hub_part(tmp, args.images)]
        print("\n".join(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
