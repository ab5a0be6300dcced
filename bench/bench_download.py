"""Benchmark: `cfx download` vs `hf download` (huggingface_hub CLI), same shards, same local Hub, one run.

Starts tests/hubserver.LocalHub (olah + nginx on loopback) with a CF-like repo of a few hundred MB, then times
each tool downloading the same files into a fresh folder with a fresh HF_HOME, alternating which goes first,
and prints a markdown table of medians and the ratio (cfx speed / hf speed). Both tools are timed as whole
processes (start-up included), each starting after os.sync() so one run's page-cache writeback does not slow
the next; outputs are checked byte for byte after each run, outside the timing.

Two server setups: file GETs answered by olah (a Python server that streams 4 KB chunks: the bottleneck,
both clients wait on it) and by nginx from disk (like the Hub's CDN: measures the clients). In the nginx setup
nginx also answers the HEAD requests hf sends per file (olah hashes the whole file on each HEAD).

    python bench/bench_download.py [--shards 6] [--shard-mb 50] [--reps 3] [--workers 4] [--server both]
        [--workdir /dev/shm]   # tmpfs: keeps disk writeback noise out of the timings
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import GENERATORS_CSV, README, make_shard, shard_path  # noqa: E402
from tests.hubserver import LocalHub  # noqa: E402

REPO = "OwensLab/CommunityForensics-Small"
BIN = Path(sys.executable).parent


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def env_for(hub: LocalHub, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        PYTHONPATH=str(ROOT),
    )
    return env


def commands(out: Path, shards: list[int], workers: int) -> dict[str, list[str]]:
    spec = ",".join(map(str, shards))
    includes = [shard_path(i) for i in shards] + ["README.md", "data/metadata/*"]
    return {
        "cfx": [str(BIN / "python"), "-m", "cfx", "-q", "download", REPO, "--out", str(out), "--shards", spec]
        + ["--workers", str(workers)],
        "hf": [str(BIN / "hf"), "download", REPO, "--repo-type", "dataset", "--local-dir", str(out)]
        + [arg for inc in includes for arg in ("--include", inc)]
        + ["--max-workers", str(workers), "--quiet"],
    }


def run_mode(args: argparse.Namespace, work: Path, files_from_nginx: bool) -> dict[str, object]:
    """Time both tools against one hub; returns medians and the commands."""
    hub = LocalHub(work / f"hub-{int(files_from_nginx)}", files_from_nginx=files_from_nginx)
    try:
        rows = max(1, args.shard_mb * 1024 // 200)
        files: dict[str, bytes | Path] = {"README.md": README, "data/metadata/generators.csv": GENERATORS_CSV}
        for i in range(args.shards):
            files[shard_path(i)] = make_shard(i, rows=rows, min_kb=200, max_kb=200)
        hub.create_repo(REPO, files)
        del files
        hub.start()
        shards = list(range(args.shards))
        expected = {p: sha256(hub.local_file(REPO, p)) for p in [shard_path(i) for i in shards]}
        total = (
            sum(hub.local_file(REPO, p).stat().st_size for p in expected) + len(README) + len(GENERATORS_CSV)
        )
        times: dict[str, list[float]] = {"cfx": [], "hf": []}
        shown: dict[str, list[str]] = {}
        for rep in range(args.reps):
            for tool in ["cfx", "hf"] if rep % 2 == 0 else ["hf", "cfx"]:
                out, home = work / f"{tool}-{rep}", work / f"home-{tool}-{rep}"
                cmd = commands(out, shards, args.workers)[tool]
                shown.setdefault(tool, cmd)
                os.sync()  # no dirty pages left from the previous run to slow this one down
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, env=env_for(hub, home), capture_output=True, text=True)
                elapsed = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise SystemExit(f"{tool} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
                for path, digest in expected.items():
                    assert sha256(out / path) == digest, f"{tool}: {path} differs"
                times[tool].append(elapsed)
                shutil.rmtree(out)
                shutil.rmtree(home, ignore_errors=True)
    finally:
        hub.close()
    return {"times": times, "total": total, "commands": shown}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=6, help="number of shards to download")
    ap.add_argument("--shard-mb", type=int, default=50, help="approximate size of each shard in MB")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4, help="parallel downloads, for both tools")
    ap.add_argument(
        "--server",
        choices=["olah", "nginx", "both"],
        default="both",
        help="who serves file GETs: olah (Python, the brief's setup) or nginx (static, CDN-like); API is olah",
    )
    ap.add_argument("--workdir", help="where the hub and the downloads live (default: the temp folder)")
    args = ap.parse_args()

    modes = {"olah": [False], "nginx": [True], "both": [False, True]}[args.server]
    work = Path(tempfile.mkdtemp(prefix="cfx-bench-", dir=args.workdir))
    results = {}
    try:
        for files_from_nginx in modes:
            results["nginx" if files_from_nginx else "olah"] = run_mode(args, work, files_from_nginx)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    total = next(iter(results.values()))["total"]
    assert isinstance(total, int)
    print(
        f"{args.shards} shards, {total / 1e6:.0f} MB in all, {args.workers} workers each, {args.reps} reps, "
    )
    print(f"local Hub on loopback (API: olah), {os.cpu_count()} CPUs\n")
    print("| files served by | tool | runs (s) | median (s) | median MB/s | cfx/hf speed |")
    print("|---|---|---|---|---|---|")
    shown: dict[str, list[str]] = {}
    for server, res in results.items():
        times = res["times"]
        assert isinstance(times, dict)
        med = {tool: statistics.median(ts) for tool, ts in times.items()}
        for tool in ("cfx", "hf"):
            runs = ", ".join(f"{t:.2f}" for t in times[tool])
            ratio = f"**{med['hf'] / med['cfx']:.2f}**" if tool == "cfx" else ""
            print(
                f"| {server} | {tool} | {runs} | {med[tool]:.2f} | {total / 1e6 / med[tool]:.1f} | {ratio} |"
            )
        shown = res["commands"]  # type: ignore[assignment]
    print("\ncommands (OUT a fresh folder per run; env HF_ENDPOINT=<local hub>, fresh HF_HOME):")
    for tool in ("cfx", "hf"):
        print("    " + " ".join(shown[tool]).replace(str(work), "$WORK"))
    print("\nbench: python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]))


if __name__ == "__main__":
    main()
