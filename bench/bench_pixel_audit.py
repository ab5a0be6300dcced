"""`cfx audit` with pixel facts on the 556,541-row replica, beside scikit-learn, and the demo's numbers.

replica: bench_inspect.joint_rows (the metadata of the scale replica) plus the pixel-fact columns of
``cfx inspect --pixels`` **drawn per label** — the replica's images are tiny, so their measured facts would say
nothing about real photos: reals noisier and sharper (camera noise) than generated pictures, both drawn
log-normal and overlapping; brightness, colour, entropy drawn alike; dims grid from the sizes; JPEG rows with one
of a few quantisation-table ids; some reals with an EXIF Software tag; 0.5 % undecodable (``pixel_error``).
Interleaved, --reps times, medians (wall and CPU seconds of this process):

- ``audit(joint=False)`` metadata only, and with the pixel facts (single features + quality issues);
- the peer: ``sklearn.metrics.roc_auc_score`` on every numeric feature column the audit scores (the same
  rows, unknown left out as the audit does) — the single-feature numbers without the table around them;
- ``audit(joint=True)`` metadata only and with the pixel facts (the goal: < 60 s).

demo (``--demo DIR`` after ``cfx demo DIR``): inspect --pixels the demo's licensed set and its "fixed" set
(resize, centre crop, JPEG 96), audit both, then ``balance --match WORST:10`` on the worst numeric pixel
feature and audit again: the numbers of docs/audit.md.

    python bench/bench_pixel_audit.py [--reps 3] [--only replica,demo] [--demo /tmp/cfx-demo]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, median, table  # noqa: E402
from bench.bench_inspect import joint_rows  # noqa: E402


def _clock(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def with_drawn_pixels(m: Any, seed: int = 1) -> Any:
    """The replica's manifest with pixel-fact columns drawn per label (see module doc)."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    df = m.df
    n = df.height
    gen = (df.get_column("label") == 1).to_numpy()
    w, h = df.get_column("width").to_numpy(), df.get_column("height").to_numpy()
    jpeg = (df.get_column("format") == "JPEG").to_numpy()
    grid = np.ones(n, dtype=np.int16)
    for g in (8, 16, 32, 64):
        grid[(w % g == 0) & (h % g == 0)] = g
    tables = np.array(["3f9a0c11b2d4", "77e0b1d40a9c", "c0ffee123456", "a1b2c3d4e5f6"])
    cols: dict[str, Any] = {
        "luma_mean": rng.uniform(20, 235, n),
        "luma_std": rng.uniform(2, 80, n),
        "saturation_mean": np.where(rng.random(n) < 0.03, 0.0, rng.uniform(0.05, 0.8, n)),
        "colorfulness": rng.uniform(0, 120, n),
        "entropy": rng.uniform(3, 8, n),
        "sharpness": np.where(gen, rng.lognormal(5.0, 1.0, n), rng.lognormal(5.8, 1.0, n)),
        "noise_sigma": np.where(gen, rng.lognormal(0.0, 0.5, n), rng.lognormal(0.6, 0.5, n)),
        "hf_energy": np.where(gen, rng.beta(2, 20, n), rng.beta(3, 20, n)),
        "blockiness": np.where(jpeg, rng.normal(1.3, 0.1, n), rng.normal(1.0, 0.05, n)),
    }
    bad = rng.random(n) < 0.005
    out = df.with_columns(
        *(pl.Series(k, np.where(bad, np.nan, v)).cast(pl.Float32).fill_nan(None) for k, v in cols.items()),
        pl.Series("dims_multiple_of", grid),
        pl.Series("qtable_id", np.where(jpeg, tables[rng.integers(0, 4, n)], "")).replace("", None),
        pl.Series("exif_software", np.where(~gen & (rng.random(n) < 0.1), "Adobe Photoshop", "")).replace(
            "", None
        ),
        pl.Series("pixel_error", np.where(bad, "cannot decode", "")).replace("", None),
    )
    decoded = pl.col("pixel_error").is_null()
    return m.with_df(
        out.with_columns(
            pl.when(decoded).then(pl.col(c)).alias(c)
            for c in ("dims_multiple_of", "qtable_id", "exif_software")
        )
    )


def sklearn_singles(m: Any) -> int:
    """The peer: roc_auc_score of every numeric feature the audit scores, unknown rows left out."""
    import polars as pl
    from sklearn.metrics import roc_auc_score

    from cfx.audit import BYTE_FEATURES, FEATURES, PIXEL_FEATURES

    df = m.df
    done = 0
    for feat in (*FEATURES, *BYTE_FEATURES, *PIXEL_FEATURES):
        if feat.kind != "numeric" or any(c not in df.columns for c in feat.needs):
            continue
        f = (
            df.select(feat.expr().cast(pl.Float64).alias("x"), "label")
            .drop_nulls()
            .filter(pl.col("x").is_finite())
        )
        y = f.get_column("label").to_numpy()
        if 0 < y.sum() < len(y):
            roc_auc_score(y, f.get_column("x").to_numpy())
            done += 1
    return done


def replica(reps: int) -> None:
    from cfx.audit import audit

    plain = joint_rows()
    pixels = with_drawn_pixels(plain)
    print(f"### Audit with pixel facts — {plain.df.height:,} rows, {machine()}\n")
    print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    variants: dict[str, Callable[[], Any]] = {
        "audit, single features (metadata)": lambda: audit(plain, joint=False),
        "audit, single features + quality issues (with pixel facts)": lambda: audit(pixels, joint=False),
        "peer: sklearn roc_auc_score per numeric feature (with pixel facts)": lambda: sklearn_singles(pixels),
        "audit + joint canary (metadata)": lambda: audit(plain, joint=True),
        "audit + joint canary (with pixel facts)": lambda: audit(pixels, joint=True),
    }
    runs: dict[str, list[tuple[float, float, Any]]] = {k: [] for k in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            runs[name].append(_clock(fn))
    rows = []
    for name, rs in runs.items():
        res = rs[-1][2]
        walls, cpus = [r[0] for r in rs], [r[1] for r in rs]
        if isinstance(res, int):
            what = f"{res} AUROCs"
        else:
            worst = res.features[0]
            what = f"{len(res.features)} features; worst {worst.feature} {worst.auroc:.3f}"
            if res.joint is not None and res.joint.auroc is not None:
                what += f"; joint {res.joint.auroc:.3f}"
            if res.quality is not None and res.quality.shortcuts:
                what += f"; quality shortcuts: {', '.join(i.kind for i in res.quality.shortcuts)}"
        rows.append(
            [name, f"{median(walls):.1f} ({min(walls):.1f}–{max(walls):.1f})", f"{median(cpus):.1f}", what]
        )
    print(table(["run", "wall s median (range)", "CPU s median", "result"], rows))
    print(f"\nload average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


def demo(path: Path) -> None:
    from cfx.audit import PIXEL_FEATURES, audit
    from cfx.balance import BalanceOptions, balance, parse_match
    from cfx.inspect import inspect_manifest
    from cfx.manifest import read_manifest

    numeric = [f.name for f in PIXEL_FEATURES if f.kind == "numeric"]

    def show(name: str, m: Any) -> dict[str, float]:
        r = audit(m, joint=True)
        s = {f.feature: f.auroc for f in r.features}
        joint = r.joint.auroc if r.joint is not None and r.joint.auroc is not None else float("nan")
        print(
            f"- {name}: {r.rows} rows, joint {joint:.3f}; flagged: {', '.join(f.feature for f in r.flagged)}"
        )
        print(
            "  pixel features: " + ", ".join(f"{k} {s[k]:.3f}" for k in sorted(numeric, key=lambda k: -s[k]))
        )
        if r.quality is not None:
            hit = [
                f"{i.kind} {i.real}/{i.generated}{' SHORTCUT' if i.shortcut else ''}"
                for i in r.quality.issues
            ]
            print("  quality issues (real/generated): " + ", ".join(hit))
        return s

    def pixels(manifest_path: Path) -> Any:
        m = read_manifest(
            manifest_path
        )  # no cache: facts measured by this code, whatever an older run stored
        return inspect_manifest(m, workers=2, use_cache=False, with_pixels=True).manifest

    print(f"### The demo's set ({path}) with pixel facts\n")
    show("before the fix (licensed.parquet)", pixels(path / "licensed.parquet"))
    fixed = pixels(path / "fixed" / "manifest.parquet")
    after = show("after resize:min-side=256, center-crop:256, jpeg:96", fixed)
    worst = max(numeric, key=lambda k: after[k])
    res = balance(fixed, BalanceOptions(match=[parse_match(f"{worst}:10", fixed.df.columns)]))
    show(f"then balance --match {worst}:10 ({res.final.short()})", res.manifest)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="replica", help="comma-separated: replica, demo")
    ap.add_argument("--demo", type=Path, default=Path("/tmp/cfx-demo"), help="a folder written by `cfx demo`")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if "replica" in only:
        replica(args.reps)
    if "demo" in only:
        demo(args.demo)


if __name__ == "__main__":
    main()
