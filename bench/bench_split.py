"""Split and leaks benchmarks (issue 13).

    python bench/bench_split.py [--reps 3] [--only split,resolve,folds,leaks] [--work DIR]

Data: the 556,541-row scale replica of CommunityForensics-Small (``cfx.synth.make_scale_replica``, indexed with
``cfx index``), given synthetic hash columns so no image is decoded (``cfx split`` and ``cfx leaks`` reuse hash
columns a manifest already has, as after ``cfx dedupe``): random 64-bit pHashes, 1 % of rows exact copies and
1 % near copies (1-8 bits) of another row — 99 % of them within the same generator or real source, 1 % across
— and prompts reused within a generator (``<generator> #k``, k < 40) plus 300 prompts shared across generators.

1. split — ``cfx split M --prompts -o out.parquet`` as a process (wall, peak RSS), and in-process timings.
   resolve — ``--resolve merge`` (the default: links merge groups) beside ``--resolve drop`` (units first, the
   fewest rows whose link crosses splits dropped), interleaved: shares, generated share per split, rows
   dropped per split and label, leak proof, time.
2. folds — ``split(…, folds=5)`` in-process vs sklearn ``StratifiedGroupKFold(5)`` handed cfx's groups
   (``split_group``) and label × architecture strata: time, worst fold share and worst generated share.
3. leaks — ``cfx leaks A B --near -t 8`` with A = M and B = a second 556,541-row set (independent codes plus
   1,000 injected near copies and 1,000 exact copies of A's rows), and a numpy brute force timed on
   1,000-4,000 rows of A against all of B, extrapolated linearly to all of A.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import cfx_cmd, machine, median, run, table  # noqa: E402

NEAR_SHARE = EXACT_SHARE = 0.01
CROSS_SHARE = 0.01
SHARED_PROMPTS = 300  # generated rows sharing a prompt with one other generator's row (150 pairs)


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """(wall s, CPU s of the command and its children, peak RSS MB): CPU shows the work on a loaded machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, rss = run(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), rss


def inprocess(fn: Callable[[], Any], reps: int) -> tuple[float, float, Any]:
    """Median (wall s, CPU s) of ``fn()`` over ``reps`` calls, and the last result. CPU includes the
    children ``fn`` started and waited for (a process pool's workers are joined when it closes)."""
    walls, cpus, out = [], [], None
    for _ in range(reps):
        w0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0 + _children_cpu() - k0)
    return median(walls), median(cpus), out


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load() -> str:
    return "Load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def med(runs: list[tuple[float, float, float]], i: int, fmt: str = ".2f") -> str:
    return format(median([r[i] for r in runs]), fmt)


def _replica_manifest(work: Path) -> Path:
    manifest = work / "manifest.parquet"
    if manifest.exists():
        return manifest
    make = f"from cfx.synth import make_scale_replica; make_scale_replica({str(work / 'replica')!r}, seed=0)"
    run([sys.executable, "-c", make])
    run(
        cfx_cmd("index", str(work / "replica"), "-o", str(manifest)),
        env={"CFX_CACHE_DIR": str(work / "cache")},
    )
    return manifest


def _partner(rng: np.random.Generator, unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k (copy, original) row pairs: mostly inside one unit, CROSS_SHARE across units."""
    n = unit.size
    copies = rng.choice(n, k, replace=False)
    order = np.argsort(unit, kind="stable")
    first = np.searchsorted(unit[order], unit[copies], side="left")
    last = np.searchsorted(unit[order], unit[copies], side="right")
    same = order[first + (rng.random(k) * (last - first)).astype(np.int64)]
    cross = rng.integers(0, n, k)
    return copies, np.where(rng.random(k) < CROSS_SHARE, cross, same)


def hashed(manifest: Path, out: Path, seed: int) -> Path:
    from cfx.manifest import read_manifest

    m = read_manifest(manifest)
    df = m.df
    n = df.height
    rng = np.random.default_rng(seed)
    unit = (
        df.select(pl.when(pl.col("label") == 1).then(pl.col("model_name")).otherwise(pl.col("real_source")))
        .to_series()
        .rank("dense")
        .to_numpy()
    )
    codes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) | (
        rng.integers(0, 2, n).astype(np.uint64) << np.uint64(63)
    )
    sha = np.arange(n, dtype=np.int64)
    copies, orig = _partner(rng, unit, int(n * EXACT_SHARE))
    sha[copies], codes[copies] = sha[orig], codes[orig]
    copies, orig = _partner(rng, unit, int(n * NEAR_SHARE))
    for c, o in zip(copies.tolist(), orig.tolist(), strict=True):
        flips = rng.choice(64, int(rng.integers(1, 9)), replace=False)
        codes[c] = codes[o] ^ np.uint64(sum(1 << int(b) for b in flips))
    model = df.get_column("model_name").to_list()
    label = df.get_column("label").to_numpy()
    k = rng.integers(0, 40, n)
    shared = (rng.random(n) < SHARED_PROMPTS / max(int((label == 1).sum()), 1)) & (label == 1)
    pair_of = (np.cumsum(shared) - 1) // 2
    prompt = [
        (f"shared prompt {pair_of[i]}" if shared[i] else f"{model[i]} #{k[i]}") if label[i] == 1 else ""
        for i in range(n)
    ]
    df = df.with_columns(
        pl.Series("sha256", [f"{x:016x}" for x in sha.tolist()]),
        pl.Series("phash", codes),
        pl.Series("prompt", prompt),
        pl.lit(False).alias("near_uniform"),
        pl.lit(None, pl.String).alias("hash_error"),
    )
    if "dhash" in df.columns:
        df = df.drop("dhash")
    m.with_df(df).write(out)
    return out


def bench_split(m: Path, work: Path, reps: int) -> str:
    from cfx.manifest import read_manifest
    from cfx.split import SplitOptions, split

    out = work / "split.parquet"
    runs = [timed(cfx_cmd("split", str(m), "--prompts", "-o", str(out))) for _ in range(reps)]
    wall, cpu, res = inprocess(lambda: split(read_manifest(m), SplitOptions(prompts=True), workers=2), reps)
    s = res.summary
    rows = [
        [
            "`cfx split M --prompts -o out.parquet` (process: start, load, split, write)",
            med(runs, 0),
            med(runs, 1),
            med(runs, 2, ".0f"),
        ],
        [
            "`split(M, prompts=True)` in-process (load, group, assign, proof)",
            f"{wall:.2f}",
            f"{cpu:.2f}",
            "-",
        ],
    ]
    shares = ", ".join(
        f"{p['split']} {p['fraction']:.3f} (generated {p['generated_share']:.3f})" for p in s["splits"]
    )
    return (
        table(["what", "wall s", "CPU s", "peak RSS MB"], rows)
        + f"\n\n{load()}. Last run: {s['rows']:,} rows, {s['groups']:,} groups, {s['merged_groups']:,} merged "
        f"({s['rows_in_merged_groups']:,} rows, {s['moved_rows']:,} moved; largest group {s['largest_group_rows']:,} "
        f"rows), {s['near_code_pairs']:,} near code pairs; timings {s['timings']}; shares {shares}; "
        f"leak proof {s['leak_proof']}.\n" + _units_only(m)
    )


def bench_resolve(m: Path, work: Path, reps: int) -> str:
    """--resolve merge vs drop on the same manifest, interleaved (process and in-process runs alternate)."""
    from cfx.manifest import read_manifest
    from cfx.split import SplitOptions, split

    modes = ("merge", "drop")
    procs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in modes}
    walls: dict[str, list[float]] = {k: [] for k in modes}
    cpus: dict[str, list[float]] = {k: [] for k in modes}
    last: dict[str, Any] = {}
    for _ in range(reps):
        for mode in modes:
            cmd = cfx_cmd(
                "split", str(m), "--prompts", "--resolve", mode, "-o", str(work / f"{mode}.parquet")
            )
            procs[mode].append(timed(cmd))
            wall, cpu, res = inprocess(
                lambda mode=mode: split(
                    read_manifest(m), SplitOptions(prompts=True, resolve=mode), workers=2
                ),
                1,
            )
            walls[mode].append(wall)
            cpus[mode].append(cpu)
            last[mode] = res.summary
    rows = []
    for mode in modes:
        s = last[mode]
        shares = " / ".join(f"{p['fraction']:.3f}" for p in s["splits"])
        gen = " / ".join(f"{p['generated_share']:.3f}" for p in s["splits"])
        d = s.get("dropped")
        dropped = (
            f"{d['rows']:,} ("
            + "; ".join(f"{k} {v['generated']:,} gen + {v['real']:,} real" for k, v in d["by_split"].items())
            + ")"
            if d
            else "0"
        )
        rows.append(
            [
                f"`cfx split M --prompts --resolve {mode}`",
                f"{s['rows']:,}",
                shares,
                gen,
                dropped,
                f"{s['largest_group_rows']:,}",
                "0" if not any(s["leak_proof"].values()) else str(s["leak_proof"]),
                f"{median([r[0] for r in procs[mode]]):.2f} / {median([r[1] for r in procs[mode]]):.2f}",
                f"{median(walls[mode]):.2f} / {median(cpus[mode]):.2f}",
            ]
        )
    head = [
        "mode",
        "rows kept",
        "shares train / val / test (asked 0.8 / 0.1 / 0.1)",
        "generated share per split",
        "rows dropped (per split and label)",
        "largest group",
        "leaks",
        "process wall / CPU s",
        "in-process wall / CPU s",
    ]
    d = last["drop"]["dropped"]
    why = ", ".join(f"{k} {v:,}" for k, v in d["by_reason"].items())
    share = last["drop"]["generated_share"]
    return table(head, rows) + (
        f"\n\n{load()}. Drop reasons: {why}. Whole set generated share {share['overall']:.4f}; drop gaps "
        f"{share['gap']} (within ±{share['tolerance']}: {share['within_tolerance']}).\n"
    )


def _units_only(m: Path) -> str:
    """The rule's precision when only units group rows (no duplicate or prompt merges)."""
    from cfx.manifest import read_manifest
    from cfx.split import SplitOptions, split

    s = split(read_manifest(m), SplitOptions(exact=False, near=False), workers=2).summary
    shares = ", ".join(
        f"{p['split']} {p['fraction']:.3f} (generated {p['generated_share']:.3f})" for p in s["splits"]
    )
    return f"\nGroups by generator only (`--no-exact --no-near`, no prompts): {s['groups']:,} groups; shares {shares}.\n"


def _fold_quality(folds: np.ndarray, label: np.ndarray, k: int) -> tuple[float, float]:
    n = folds.size
    share = max(abs((folds == f).sum() / n - 1 / k) for f in range(k))
    overall = label.mean()
    gen = max(abs(label[folds == f].mean() - overall) for f in range(k))
    return share, gen


def bench_folds(m: Path, reps: int) -> str:
    from sklearn.model_selection import StratifiedGroupKFold

    from cfx.manifest import read_manifest
    from cfx.split import SplitOptions, split

    k = 5
    wall, cpu, res = inprocess(
        lambda: split(read_manifest(m), SplitOptions(prompts=True, folds=k), workers=2), reps
    )
    df = res.manifest.df
    label = df.get_column("label").to_numpy().astype(np.int64)
    cfx_folds = df.get_column("assigned_split").str.slice(4).cast(pl.Int64).to_numpy()
    groups = df.get_column("split_group").rank("dense").to_numpy()
    strata = (
        (df.get_column("label").cast(pl.String) + ":" + df.get_column("architecture"))
        .rank("dense")
        .to_numpy()
    )

    def sklearn_folds() -> np.ndarray:
        sk = np.zeros(df.height, np.int64)
        for f, (_, test) in enumerate(
            StratifiedGroupKFold(n_splits=k).split(np.zeros(df.height), strata, groups)
        ):
            sk[test] = f
        return sk

    sk_wall, sk_cpu, sk = inprocess(sklearn_folds, reps)
    a, b = _fold_quality(cfx_folds, label, k), _fold_quality(sk, label, k)
    rows = [
        [
            f"cfx `split(M, folds={k}, prompts=True)`: find groups, assign, prove",
            f"{wall:.2f}",
            f"{cpu:.2f}",
            f"{a[0]:.4f}",
            f"{a[1]:.4f}",
        ],
        [
            f"sklearn `StratifiedGroupKFold({k})` handed cfx's groups (assign only)",
            f"{sk_wall:.2f}",
            f"{sk_cpu:.2f}",
            f"{b[0]:.4f}",
            f"{b[1]:.4f}",
        ],
    ]
    head = ["what", "wall s", "CPU s", "worst abs(fold share - 1/K)", "worst abs(generated share - overall)"]
    return table(head, rows) + (
        f"\n\n{load()}. CPU ratio sklearn / cfx: {sk_cpu / cpu:.2f}x. sklearn cannot find the groups (units, "
        "duplicates, prompts) and its greedy assignment depends on every group, so adding data moves groups; "
        "cfx's hash rule keeps them (tests/test_split.py::test_stable_under_append).\n"
    )


def bench_leaks(m: Path, work: Path, reps: int) -> str:
    from cfx.leaks import cross_code_pairs
    from cfx.manifest import read_manifest
    from cfx.pairs import popcount

    a = read_manifest(m)
    rng = np.random.default_rng(99)
    n = a.df.height
    codes_b = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    ca = a.df.get_column("phash").to_numpy().astype(np.uint64)
    pick = rng.choice(n, 2000, replace=False)
    codes_b[:1000] = ca[pick[:1000]] ^ np.uint64(0b1011)  # near copies, 3 bits
    sha_b = [f"b{i}" for i in range(n)]
    sha_a = a.df.get_column("sha256").to_list()
    for i, j in enumerate(pick[1000:].tolist()):
        codes_b[1000 + i] = ca[j]
        sha_b[1000 + i] = sha_a[j]
    b_path = work / "b.parquet"
    a.with_df(a.df.with_columns(pl.Series("phash", codes_b), pl.Series("sha256", sha_b))).write(b_path)
    runs = [timed(cfx_cmd("leaks", str(m), str(b_path), "--near", "-t", "8", "--json")) for _ in range(reps)]
    s_wall, s_cpu, found = inprocess(lambda: cross_code_pairs(ca, codes_b, 8, workers=2), reps)
    ub = np.unique(codes_b)
    per_row = []
    for size in (1000, 2000, 4000):
        t0 = time.process_time()
        ua = np.unique(ca[:size])
        for s in range(0, ua.size, 256):
            np.nonzero(popcount(ua[s : s + 256, None] ^ ub[None, :]) <= 8)
        per_row.append((time.process_time() - t0) / size)
    full = median(per_row) * np.unique(ca).size
    rows = [
        [
            "`cfx leaks A B --near -t 8 --json` (process: start, load, exact + near + units)",
            med(runs, 0),
            med(runs, 1),
            med(runs, 2, ".0f"),
        ],
        [
            "`cross_code_pairs(A, B, 8, workers=2)` (the near search alone)",
            f"{s_wall:.2f}",
            f"{s_cpu:.2f}",
            "-",
        ],
        ["numpy brute force A × B, extrapolated from 1k/2k/4k rows of A", "-", f"{full:.0f}", "-"],
    ]
    return table(["what", "wall s", "CPU s", "peak RSS MB"], rows) + (
        f"\n\n{load()}. {found[0].size:,} cross code pairs (1,000 near and 1,000 exact copies injected, plus "
        f"pairs by chance; sha256 of the sorted (a, b, distance) triples {_digest(found)}). Brute force: {median(per_row) * 1e3:.2f} ms CPU per row of A against 556,541 codes; "
        f"CPU ratio brute force / cfx search {full / s_cpu:.0f}x.\n"
    )


def _digest(found: tuple[np.ndarray, np.ndarray, np.ndarray]) -> str:
    """A short fingerprint of a set of cross pairs, whatever their order: equal sets, equal digests."""
    a, b, d = (np.asarray(x).astype(np.uint64) for x in found)
    order = np.lexsort((d, b, a))
    triples = np.stack([a[order], b[order], d[order]], axis=1)
    return hashlib.sha256(np.ascontiguousarray(triples).tobytes()).hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="split,resolve,folds,leaks")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="cfx-bench-split-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        m = work / "hashed.parquet"
        if not m.exists():
            hashed(_replica_manifest(work), m, seed=0)
        print(
            f"Scale replica with synthetic hashes: 556,541 rows; {machine()}; median of {args.reps} runs.\n"
        )
        if "split" in only:
            print(bench_split(m, work, args.reps))
        if "resolve" in only:
            print(bench_resolve(m, work, args.reps))
        if "folds" in only:
            print(bench_folds(m, args.reps))
        if "leaks" in only:
            print(bench_leaks(m, work, args.reps))


if __name__ == "__main__":
    main()
