"""Balance and audit benchmarks (issue: balance real/generated pairs by generator and licence).

On the 556,541-row scale replica of CommunityForensics-Small (`cfx.synth.make_scale_replica`, real shard
layout and metadata, tiny images), from a saved manifest:

- `cfx balance --pair --match min-side:64 --match format` (and exact `--match resolution`, and with licence
  filtering), `cfx audit`, `cfx licenses`: wall time (incl. interpreter start) and peak RSS, median of --reps.
- For scale: a naive polars script that only samples equal real/generated counts (no generator spread,
  no matching, no pairs), i.e. the one-off script users write today.

    python bench/bench_balance.py [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, cfx_cmd, machine, median, run, table  # noqa: E402

NAIVE = """
import polars as pl, sys
df = pl.read_parquet(sys.argv[1])
n = min(df.filter(pl.col("label") == 0).height, df.filter(pl.col("label") == 1).height)
out = pl.concat([df.filter(pl.col("label") == k).sample(n, seed=0) for k in (0, 1)])
out.write_parquet(sys.argv[2])
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cfx-bench-balance-") as tmp:
        work = Path(tmp)
        env = {"CFX_CACHE_DIR": str(work / "cache")}
        # In subprocesses: a child's peak RSS counts the parent's pages at fork time, so this process stays small.
        make = (
            f"from cfx.synth import make_scale_replica; make_scale_replica({str(work / 'replica')!r}, seed=0)"
        )
        run([sys.executable, "-c", make])
        manifest = work / "manifest.parquet"
        run(cfx_cmd("index", str(work / "replica"), "-o", str(manifest)), env=env)
        out = work / "out.parquet"
        cases = [
            (
                "`cfx balance M --pair --match min-side:64 --match format -o out.parquet`",
                cfx_cmd(
                    "balance",
                    str(manifest),
                    "--pair",
                    "--match",
                    "min-side:64",
                    "--match",
                    "format",
                    "-o",
                    str(out),
                ),
            ),
            (
                "`cfx balance M --pair --match resolution --match format -o out.parquet`",
                cfx_cmd(
                    "balance",
                    str(manifest),
                    "--pair",
                    "--match",
                    "resolution",
                    "--match",
                    "format",
                    "-o",
                    str(out),
                ),
            ),
            (
                "`cfx balance M --per-generator 200 --min-per-generator 20 --stratify architecture --match min-side:64 -o out.parquet`",
                cfx_cmd(
                    "balance",
                    str(manifest),
                    "--per-generator",
                    "200",
                    "--min-per-generator",
                    "20",
                    "--stratify",
                    "architecture",
                    "--match",
                    "min-side:64",
                    "-o",
                    str(out),
                ),
            ),
            (
                "`cfx balance DATASET --exclude-licenses '*-nc-*' --pair --match min-side:64 --match format -o out.parquet`",
                cfx_cmd(
                    "balance",
                    str(work / "replica"),
                    "--exclude-licenses",
                    "*-nc-*",
                    "--pair",
                    "--match",
                    "min-side:64",
                    "--match",
                    "format",
                    "-o",
                    str(out),
                ),
            ),
            ("`cfx audit M --json`", cfx_cmd("audit", str(manifest), "--json")),
            (
                "`cfx licenses DATASET -o out.parquet`",
                cfx_cmd("licenses", str(work / "replica"), "-o", str(out)),
            ),
            ("`cfx --version` (interpreter start and imports only)", cfx_cmd("--version")),
            (
                "naive polars: equal counts per class (no spread/matching/pairs)",
                [sys.executable, "-c", NAIVE, str(manifest), str(work / "naive.parquet")],
            ),
        ]
        # the index cache is warm for the DATASET cases (`cfx index` above filled it)
        rows = []
        for label, cmd in cases:
            times, rss = [], []
            for _ in range(args.reps):
                t, r = run(cmd, env=env)
                times.append(t)
                rss.append(r)
            rows.append([label, f"{median(times):.2f}", f"{max(rss):,.0f}"])
        # what the matched selections keep
        keep = []
        for spec in (["min-side:64", "format"], ["min-side", "format"], ["resolution", "format"]):
            args_m = [x for s in spec for x in ("--match", s)]
            proc = subprocess.run(
                cfx_cmd("balance", str(manifest), "--pair", *args_m, "--json"),
                capture_output=True,
                env={**__import__("os").environ, "PYTHONPATH": str(ROOT), **env},
                check=True,
            )
            rep = json.loads(proc.stdout)["result"]
            keep.append(
                [" ".join(f"--match {s}" for s in spec), f"{rep['rows']:,}", f"{rep['generators']:,}"]
            )
    print(
        f"Scale replica: 556,541 rows; {machine()}; median of {args.reps} runs (incl. interpreter start).\n"
    )
    print(table(["command (M = saved manifest of the replica)", "wall s", "peak RSS MB"], rows))
    print()
    print(table(["matching (with --pair)", "rows kept", "generators kept"], keep))
    print("\nCommand: python bench/bench_balance.py --reps", args.reps)


if __name__ == "__main__":
    main()
