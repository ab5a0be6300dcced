"""Pixel facts benchmarks (issue 22): their cost in the fused hashing pass, and `inspect --pixels` vs a plain loop.

1. The dedupe hashing pass (`cfx.hashing.hash_shard`, one worker, cold cache) in three forms, interleaved:
   hashing alone; hashing + byte facts (the fused pass before pixel facts); hashing + byte facts + pixel facts
   (the fused pass now). CPU seconds of this process, medians, and the median of the paired ratios (each run
   against the "alone" run next to it). Goal: pixel facts fused <= 1.3x hashing alone.
2. `cfx inspect --pixels` (cold cache, one worker: this process) vs the peer: a plain numpy/Pillow loop over
   the same shards computing the same statistics with the same definitions, crop and colour grid
   (Pillow decode + convert, numpy/scipy maths; ``peer_facts``). Images/s, median of --reps, interleaved.
   cfx also computes sha256 + pHash and the byte facts in that pass (it fills the dedupe caches).

Images: `cfx.synth.make_dataset(scale=1.0)`, CF-shaped: mostly 512x512 PNG, some 256/1024 PNG, real JPEGs.

    python bench/bench_pixels.py [--reps 5] [--shards 4] [--rows 50]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, median, table  # noqa: E402
from cfx.pixelfacts import CROP  # noqa: E402  (the same crop side as cfx: the same statistics)


def _fresh_cache() -> None:
    os.environ["CFX_CACHE_DIR"] = tempfile.mkdtemp(prefix="cfx-bench-cache-")


def time_hash(root: Path, mode: str) -> float:
    """CPU seconds of the hashing pass over every shard: mode alone | bytes | pixels."""
    from cfx.hashing import hash_shard
    from cfx.load import load_manifest
    from cfx.stream import rows_by_shard

    m = load_manifest(str(root))
    cpu = time.process_time()
    for part in rows_by_shard(m):
        hash_shard(
            m.root,
            part.shard,
            m.shards[part.shard],
            part.rows,
            with_facts=mode != "alone",
            with_pixels=mode == "pixels",
        )
    return time.process_time() - cpu


def time_inspect_pixels(root: Path) -> tuple[float, int]:
    from cfx.inspect import inspect_manifest
    from cfx.load import load_manifest

    m = load_manifest(str(root))
    t = time.perf_counter()
    res = inspect_manifest(m, workers=1, with_pixels=True, use_cache=False)
    return time.perf_counter() - t, res.manifest.df.height


def peer_facts(data: bytes) -> dict[str, Any]:
    """The plain loop's statistics of one image: cfx.pixelfacts' definitions written as a user would,
    with Pillow and numpy/scipy (same crop, same colour grid, same formulas)."""
    import numpy as np
    import scipy.fft
    import scipy.ndimage
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    rgb = np.asarray(img.convert("RGB"))
    grey = np.asarray(img.convert("L"))
    h, w = grey.shape
    hist = np.bincount(grey.ravel(), minlength=256) / grey.size
    levels = np.arange(256)
    mean = hist @ levels
    std = np.sqrt(hist @ (levels - mean) ** 2)
    nz = hist[hist > 0]
    entropy = -(nz * np.log2(nz)).sum()
    step = max(1, int(np.sqrt(h * w / (1 << 14))))
    c = rgb[::step, ::step].astype(np.float32)
    hi, lo = c.max(axis=2), c.min(axis=2)
    sat = np.divide(hi - lo, hi, out=np.zeros_like(hi), where=hi > 0).mean()
    rg, yb = c[..., 0] - c[..., 1], 0.5 * (c[..., 0] + c[..., 1]) - c[..., 2]
    colourful = np.sqrt(rg.var() + yb.var()) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    ch, cw = min(h, CROP), min(w, CROP)
    y0, x0 = (h - ch) // 2 // 8 * 8, (w - cw) // 2 // 8 * 8
    y = grey[y0 : y0 + ch, x0 : x0 + cw].astype(np.float32)
    sharp = scipy.ndimage.laplace(y)[1:-1, 1:-1].var()
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    noise = np.sqrt(np.pi / 2) / 6 * np.abs(scipy.ndimage.convolve(y, kernel)[1:-1, 1:-1]).mean()
    win = (y - y.mean()) * np.outer(np.hanning(ch + 2)[1:-1], np.hanning(cw + 2)[1:-1])
    power = np.abs(np.fft.fftshift(scipy.fft.fft2(win))) ** 2
    fy, fx = np.meshgrid(
        np.fft.fftshift(np.fft.fftfreq(ch)), np.fft.fftshift(np.fft.fftfreq(cw)), indexing="ij"
    )
    hf = power[fx**2 + fy**2 > 0.0625].sum() / power.sum()
    dx, dy = np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0))
    bx, by = np.arange(cw - 1) % 8 == 7, np.arange(ch - 1) % 8 == 7
    across = np.concatenate([dx[:, bx].ravel(), dy[by].ravel()]).mean()
    inside = np.concatenate([dx[:, ~bx].ravel(), dy[~by].ravel()]).mean()
    grid = next(g for g in (64, 32, 16, 8, 1) if w % g == 0 and h % g == 0)
    tables = getattr(img, "quantization", None)
    qid = hashlib.sha1(repr(sorted(tables.items())).encode()).hexdigest()[:12] if tables else None
    software = img.getexif().get(0x0131)
    return dict(
        luma_mean=mean, luma_std=std, entropy=entropy, saturation_mean=sat, colorfulness=colourful,
        sharpness=sharp, noise_sigma=noise, hf_energy=hf, blockiness=across / inside,
        dims_multiple_of=grid, qtable_id=qid, exif_software=software,
    )  # fmt: skip


def peer_loop(root: Path) -> int:
    import pyarrow.parquet as pq

    n = 0
    for shard in sorted((root / "data").glob("*.parquet")):
        pf = pq.ParquetFile(shard, pre_buffer=False, buffer_size=1 << 20)
        for batch in pf.iter_batches(batch_size=16, columns=["image_data"], use_threads=False):
            for data in batch.column(0).to_pylist():
                peer_facts(data)
                n += 1
    return n


def agreement(root: Path) -> float:
    """Largest relative difference between cfx's facts and the peer's on the first 20 images (a check that
    the two sides compute the same thing)."""
    import numpy as np
    import pyarrow.parquet as pq

    from cfx.hashing import hash_images

    shard = sorted((root / "data").glob("*.parquet"))[0]
    images = pq.read_table(shard, columns=["image_data"]).column(0).to_pylist()[:20]
    ours = hash_images(images, with_pixels=True).pixels or []
    worst = 0.0
    for data, f in zip(images, ours, strict=True):
        p = peer_facts(data)
        for key in ("luma_mean", "luma_std", "entropy", "saturation_mean", "colorfulness", "sharpness",
                    "noise_sigma", "hf_energy", "blockiness"):  # fmt: skip
            a, b = float(f[key]), float(p[key])
            worst = max(worst, abs(a - b) / max(abs(b), 1e-9))
        assert f["dims_multiple_of"] == p["dims_multiple_of"]
    return float(np.float64(worst))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--only", choices=["hash", "inspect"], default=None)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from cfx.synth import make_dataset

    root = Path(tempfile.mkdtemp(prefix="cfx-bench-pixels-"))
    make_dataset(root, shards=args.shards, rows_per_shard=args.rows, seed=0, scale=1.0)
    n = args.shards * args.rows
    print(f"### Pixel facts — {n} images ({args.shards} shards, synth scale 1.0), {machine()}\n")
    if args.only in (None, "hash"):
        _hash_part(root, args.reps)
    if args.only in (None, "inspect"):
        _inspect_part(root, args.reps, n)


def _hash_part(root: Path, reps: int) -> None:
    modes = {"alone": "hash alone", "bytes": "hash + byte facts", "pixels": "hash + byte facts + pixel facts"}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(reps):  # interleaved: a change of load falls on every side
        for mode in modes:
            _fresh_cache()
            cpu[mode].append(time_hash(root, mode))
    rows = []
    for mode, name in modes.items():
        paired = [x / a for a, x in zip(cpu["alone"], cpu[mode], strict=True)]
        runs = ", ".join(f"{x:.2f}" for x in cpu[mode])
        rows.append([name, f"{median(cpu[mode]):.2f} ({runs})", f"{median(paired):.3f}"])
    print(table(["pass (1 worker, cold cache)", "CPU s, median (runs)", "vs alone (median of pairs)"], rows))
    print()


def _inspect_part(root: Path, reps: int, n: int) -> None:
    print(f"agreement cfx vs peer (first 20 images): largest relative difference {agreement(root):.2e}\n")
    times: dict[str, list[float]] = {"peer": [], "cfx": []}
    cpu: dict[str, list[float]] = {"peer": [], "cfx": []}  # both run in this process (cfx: below
    for _ in range(reps):  # cfx.inspect.POOL_MIN_IMAGES no worker is started)
        t, c = time.perf_counter(), time.process_time()
        assert peer_loop(root) == n
        times["peer"].append(time.perf_counter() - t)
        cpu["peer"].append(time.process_time() - c)
        _fresh_cache()
        c = time.process_time()
        wall, rows = time_inspect_pixels(root)
        cpu["cfx"].append(time.process_time() - c)
        assert rows == n
        times["cfx"].append(wall)
    peer = median(times["peer"])
    peer_cpu = median(cpu["peer"])
    rows = []
    for key, name in (
        ("peer", "numpy/Pillow loop, same statistics"),
        ("cfx", "`cfx inspect --pixels` (+ hashes, byte facts)"),
    ):
        s = median(times[key])
        runs = ", ".join(f"{x:.2f}" for x in times[key])
        c = median(cpu[key])
        rows.append(
            [name, "1", f"{s:.2f} ({runs})", f"{n / s:,.0f}", f"{peer / s:.2f}", f"{c:.2f}", f"{n / c:,.0f}",
             f"{peer_cpu / c:.2f}"]
        )  # fmt: skip
    heads = ["what", "processes", "wall s, median (runs)", "images/s", "vs peer"]
    print(table([*heads, "CPU s, median", "images per CPU-s", "vs peer (CPU)"], rows))


if __name__ == "__main__":
    main()
