"""Ray benchmarks for the writers (issue 23): `cfx subset --transform jpeg:96` and `cfx export --format webdataset`
with --engine ray on a running 2-CPU Ray cluster and on a 1-CPU one vs the local engine with --workers 2, medians;
the two clusters run side by side and the three runs of a command are interleaved (local, ray 2, ray 1, local,
...), so a drift in the machine's load hits them alike. Then the same work in this process with the cluster
joined once, and the per-shard task times (each task run in this process, one at a time) from which the time on
N CPUs is projected.

``--rows`` may list several sizes (rows per shard, e.g. ``60,600``): the CLI runs are made at each, and from the
smallest and the largest the marginal throughput of each engine (extra images / extra seconds) and its fixed cost
per run (the intercept: start-up, joining the cluster, the new job's worker processes) are derived, so the
engine's per-image overhead is told apart from its once-per-command cost. The in-process runs and the task times
use the smallest size.

    python bench/bench_ray_write.py [--reps 3] [--shards 8] [--rows 60,600] [--scale 1.0]

The clusters are started here (`ray start --head --block`, own process group, own auth token) and stopped by
signalling that group; the CLI runs join them through RAY_ADDRESS, as on a real cluster (no Ray start-up in the
times, but each run's connection to the cluster is).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, cfx_cmd, machine, median, run, table  # noqa: E402


@contextlib.contextmanager
def ray_cluster(cpus: int) -> Iterator[dict[str, str]]:
    """A `ray start --head` cluster with ``cpus`` CPUs; yields the environment a client needs to join it."""
    tmp = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "CFX_"))}
    env.update(auth, PYTHONPATH=str(ROOT))
    ray_bin = str(Path(sys.executable).with_name("ray"))
    args = [
        ray_bin,
        "start",
        "--head",
        "--block",
        f"--port={port}",
        f"--num-cpus={cpus}",
        f"--temp-dir={tmp}",
    ]
    args += ["--object-store-memory=500000000", "--include-dashboard=false", "--disable-usage-stats"]
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit("ray start --head exited")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.2)
        yield {**auth, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


class TimingEngine:
    """An engine that runs each job in this process, one at a time, timing it (the per-shard task times)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def run_jobs(self, fn: Callable[..., Any], jobs: Iterable[tuple[str, Any]], out_dir: str | None = None):  # type: ignore[no-untyped-def]
        for _, job in jobs:
            t = time.perf_counter()
            result = fn(job, None)
            self.times.append(time.perf_counter() - t)
            yield result

    def write_subset_parts(self, *args: Any) -> None:
        from cfx.subset_parts import write_on

        write_on(self, *args)


COMMANDS = ("subset --transform jpeg:96", "export --format webdataset")
ENGINES = {"local": "local --workers 2", "ray2": "Ray, 2 CPUs", "ray1": "Ray, 1 CPU"}


def _cli_args(name: str, ds: Path, out: Path) -> list[str]:
    extra = ["--transform", "jpeg:96"] if name.startswith("subset") else ["--format", "webdataset"]
    return [name.split()[0], str(ds), "--out", str(out), *extra]


def cli_walls(
    ds: Path, out: Path, base: dict[str, str], envs: dict[str, dict[str, str]], reps: int
) -> dict[tuple[str, str], list[float]]:
    """Wall seconds of each command with each engine, interleaved, after one warm-up run on each cluster."""

    def timed(cmd: list[str], env: dict[str, str]) -> float:
        wall = run(cfx_cmd(*cmd), env={**base, **env})[0]
        shutil.rmtree(out, ignore_errors=True)
        print(
            f"{wall:7.2f} s  cfx {' '.join(cmd[:1] + cmd[3:])}  {env.get('RAY_ADDRESS', '')}", file=sys.stderr
        )
        return wall

    engine_args = {"local": ["--workers", "2"], "ray2": ["--engine", "ray"], "ray1": ["--engine", "ray"]}
    for name in COMMANDS:  # warm-up: imports, page cache, the clusters' first workers
        for key in ("ray2", "ray1"):
            timed([*_cli_args(name, ds, out), *engine_args[key]], envs[key])
    walls: dict[tuple[str, str], list[float]] = {}
    for _ in range(reps):  # interleaved: the machine's load drifts alike for all three
        for name in COMMANDS:
            for key in ENGINES:
                cmd = [*_cli_args(name, ds, out), *engine_args[key]]
                walls.setdefault((name, key), []).append(timed(cmd, envs[key]))
    return walls


def end_to_end_rows(walls: dict[tuple[str, str], list[float]], n: int) -> list[list[str]]:
    rows = []
    for name in COMMANDS:
        local, ray2, ray1 = (median(walls[(name, k)]) for k in ENGINES)
        rows.append(
            [
                f"`cfx {name}`",
                f"{local:.2f} ({n / local:.0f}/s)",
                f"{ray2:.2f} ({n / ray2:.0f}/s)",
                f"**{local / ray2:.2f}×**",
                f"{ray1:.2f}",
                f"{ray1 / ray2:.2f}×",
            ]
        )
    return rows


def marginal_rows(by_size: dict[int, dict[tuple[str, str], list[float]]]) -> list[list[str]]:
    """Per command and engine: images/s between the smallest and largest size, and the fixed seconds a run
    costs on top (the line through the two medians, at 0 images)."""
    (n1, w1), (n2, w2) = min(by_size.items()), max(by_size.items())
    rows = []
    for name in COMMANDS:
        rate, fixed = {}, {}
        for key in ("local", "ray2"):
            t1, t2 = median(w1[(name, key)]), median(w2[(name, key)])
            rate[key] = (n2 - n1) / (t2 - t1)
            fixed[key] = t1 - n1 / rate[key]
        rows.append(
            [
                f"`cfx {name}`",
                f"{rate['local']:.0f}/s, {fixed['local']:.2f} s",
                f"{rate['ray2']:.0f}/s, {fixed['ray2']:.2f} s",
                f"**{rate['ray2'] / rate['local']:.2f}×**",
                f"{fixed['ray2'] - fixed['local']:+.2f} s",
            ]
        )
    return rows


def in_process_rows(manifest: Any, out: Path, ray_env: dict[str, str], reps: int, n: int) -> list[list[str]]:
    """The same work in this process with the cluster joined once (what a CLI run pays on top: its start-up
    and its connection to the cluster)."""
    from cfx.engine_ray import RayEngine

    os.environ.update({k: v for k, v in ray_env.items() if k != "RAY_ADDRESS"})  # before ray reads them
    import ray

    ray.init(address=ray_env["RAY_ADDRESS"], log_to_driver=False)
    engine = RayEngine()
    walls: dict[tuple[str, str], list[float]] = {}
    for name in COMMANDS:
        _lib(name, manifest, out, engine)  # warm-up
    for _ in range(reps):
        for name in COMMANDS:
            walls.setdefault((name, "local"), []).append(_lib(name, manifest, out, None))
            walls.setdefault((name, "ray2"), []).append(_lib(name, manifest, out, engine))
    ray.shutdown()
    rows = []
    for name in COMMANDS:
        local, ray2 = (median(walls[(name, k)]) for k in ("local", "ray2"))
        rows.append(
            [
                f"`{name}`",
                f"{local:.2f} ({n / local:.0f}/s)",
                f"{ray2:.2f} ({n / ray2:.0f}/s)",
                f"{local / ray2:.2f}×",
            ]
        )
    return rows


def _lib(name: str, manifest: Any, out: Path, engine: Any, workers: int = 2) -> float:
    from cfx.export import ExportOptions, write_export
    from cfx.subset import write_subset
    from cfx.transform import Pipeline

    t = time.perf_counter()
    if name.startswith("subset"):
        write_subset(manifest, out, transform=Pipeline.parse(["jpeg:96"]), workers=workers, engine=engine)
    else:
        write_export(manifest, out, ExportOptions("webdataset", workers=workers), engine=engine)
    wall = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    return wall


def task_time_rows(manifest: Any, out: Path, n: int) -> list[list[str]]:
    """Per-shard task times and the driver's serial share, in this process (one job at a time), and the
    projection to the full CommunityForensics on N CPUs."""
    rows = []
    for name in COMMANDS:
        eng = TimingEngine()
        total = _lib(name, manifest, out, eng, workers=1)
        tasks = sum(eng.times)
        driver = total - tasks
        proj = [f"{max(driver, tasks / cpus) * 2_700_000 / n / 3600:.2f} h" for cpus in (2, 16, 64, 256)]
        rows.append(
            [
                f"`cfx {name}`",
                f"{median(eng.times):.2f} ({min(eng.times):.2f}–{max(eng.times):.2f})",
                f"{tasks / n * 1000:.1f}",
                f"{driver / n * 1000:.2f}",
                *proj,
            ]
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--rows", default="60,600", help="rows per shard; several sizes separated by commas")
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    sizes = sorted(int(r) for r in args.rows.split(","))

    from cfx.index import build_manifest
    from cfx.sources import resolve
    from cfx.synth import make_dataset

    work = Path(tempfile.mkdtemp(prefix="cfxrw", dir="/tmp"))
    out, base = work / "out", {"CFX_CACHE_DIR": str(work / "cache")}
    os.environ["CFX_CACHE_DIR"] = str(work / "cache")
    try:
        by_size, data_mb = {}, {}
        with ray_cluster(2) as ray_env, ray_cluster(1) as ray1_env:
            envs = {"local": {}, "ray2": ray_env, "ray1": ray1_env}
            for rows in sizes:
                ds = work / f"ds{rows}"
                make_dataset(ds, shards=args.shards, rows_per_shard=rows, seed=0, scale=args.scale)
                n = args.shards * rows
                data_mb[n] = sum(p.stat().st_size for p in (ds / "data").glob("*.parquet")) / 1e6
                by_size[n] = cli_walls(ds, out, base, envs, args.reps)
                if rows != sizes[0]:
                    shutil.rmtree(ds)
            n = args.shards * sizes[0]
            manifest = build_manifest(resolve(str(work / f"ds{sizes[0]}"))).manifest
            in_process = in_process_rows(manifest, out, ray_env, args.reps, n)
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        tasks = task_time_rows(manifest, out, n)
        print(
            f"# {machine()}; {args.shards} shards, medians of {args.reps}; load average after the runs: {load}"
        )
        print(
            f"# command: python bench/bench_ray_write.py --reps {args.reps} --shards {args.shards} "
            f"--rows {args.rows} --scale {args.scale}\n"
        )
        e2e = [
            "command",
            *(f"{v}: s (images/s)" for v in list(ENGINES.values())[:2]),
            "Ray throughput / local",
        ]
        for size, walls in sorted(by_size.items()):
            print(f"{size} CF-shaped images ({data_mb[size]:.0f} MB):\n")
            print(table([*e2e, "Ray, 1 CPU: s", "speed-up 1 → 2 CPUs"], end_to_end_rows(walls, size)) + "\n")
        if len(by_size) > 1:
            heads = [
                "command",
                "local --workers 2: rate, fixed",
                "Ray, 2 CPUs: rate, fixed",
                "Ray rate / local",
            ]
            print(table([*heads, "Ray's extra fixed cost"], marginal_rows(by_size)) + "\n")
        heads = [
            "in one process, cluster joined once",
            "local --workers 2: s",
            "Ray, 2 CPUs: s",
            "Ray / local",
        ]
        print(table(heads, in_process) + "\n")
        heads = [
            "command",
            "task s per shard: median (min–max)",
            "tasks ms/image",
            "driver ms/image (serial)",
        ]
        print(table([*heads, "2.7M images, 2 CPUs", "16", "64", "256"], tasks))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
