"""Ray benchmarks for the writers (issue 23): `cfx subset --transform jpeg:96` and `cfx export --format webdataset`
with --engine ray on a running 2-CPU Ray cluster and on a 1-CPU one vs the local engine with --workers 2, medians;
the two clusters run side by side and the three runs of a command are interleaved (local, ray 2, ray 1, local,
...), so a drift in the machine's load hits them alike. Then the same work in this process with the cluster
joined once, and the per-shard task times (each task run in this process, one at a time) from which the time on
N CPUs is projected.

    python bench/bench_ray_write.py [--reps 3] [--shards 8] [--rows 100] [--scale 1.0]

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()

    from cfx.synth import make_dataset

    work = Path(tempfile.mkdtemp(prefix="cfxrw", dir="/tmp"))
    try:
        ds = work / "ds"
        make_dataset(ds, shards=args.shards, rows_per_shard=args.rows, seed=0, scale=args.scale)
        n = args.shards * args.rows
        data_mb = sum(p.stat().st_size for p in (ds / "data").glob("*.parquet")) / 1e6
        out = work / "out"
        commands = {
            "subset --transform jpeg:96": ["subset", str(ds), "--out", str(out), "--transform", "jpeg:96"],
            "export --format webdataset": ["export", str(ds), "--out", str(out), "--format", "webdataset"],
        }
        base = {"CFX_CACHE_DIR": str(work / "cache")}

        def timed(cmd: list[str], env: dict[str, str]) -> float:
            wall = run(cfx_cmd(*cmd), env={**base, **env})[0]
            shutil.rmtree(out, ignore_errors=True)
            print(
                f"{wall:7.2f} s  cfx {' '.join(cmd[:1] + cmd[3:])}  {env.get('RAY_ADDRESS', '')}",
                file=sys.stderr,
            )
            return wall

        from cfx.engine_ray import RayEngine
        from cfx.export import ExportOptions, write_export
        from cfx.index import build_manifest
        from cfx.sources import resolve
        from cfx.subset import write_subset
        from cfx.transform import Pipeline

        os.environ["CFX_CACHE_DIR"] = str(work / "cache")
        manifest = build_manifest(resolve(str(ds))).manifest
        writers = {
            "subset --transform jpeg:96": lambda eng, w: write_subset(
                manifest, out, transform=Pipeline.parse(["jpeg:96"]), workers=w, engine=eng
            ),
            "export --format webdataset": lambda eng, w: write_export(
                manifest, out, ExportOptions("webdataset", workers=w), engine=eng
            ),
        }

        def lib(name: str, eng: Any) -> float:
            t = time.perf_counter()
            writers[name](eng, 2)
            wall = time.perf_counter() - t
            shutil.rmtree(out, ignore_errors=True)
            return wall

        walls: dict[tuple[str, str], list[float]] = {}
        with ray_cluster(2) as ray_env, ray_cluster(1) as ray1_env:
            for cmd in commands.values():  # warm-up: imports, page cache, the clusters' first workers
                timed([*cmd, "--engine", "ray"], ray_env)
                timed([*cmd, "--engine", "ray"], ray1_env)
            for _ in range(args.reps):  # interleaved: the machine's load drifts alike for all three
                for name, cmd in commands.items():
                    walls.setdefault((name, "local"), []).append(timed([*cmd, "--workers", "2"], {}))
                    walls.setdefault((name, "ray2"), []).append(timed([*cmd, "--engine", "ray"], ray_env))
                    walls.setdefault((name, "ray1"), []).append(timed([*cmd, "--engine", "ray"], ray1_env))
            # the same work in this process, the cluster joined once (what a CLI run pays on top: its
            # start-up and its connection to the cluster)
            os.environ.update(
                {k: v for k, v in ray_env.items() if k != "RAY_ADDRESS"}
            )  # before ray reads them
            import ray

            ray.init(address=ray_env["RAY_ADDRESS"], log_to_driver=False)
            engine = RayEngine()
            for name in writers:
                lib(name, engine)  # warm-up
            for _ in range(args.reps):
                for name in writers:
                    walls.setdefault((name, "lib-local"), []).append(lib(name, None))
                    walls.setdefault((name, "lib-ray2"), []).append(lib(name, engine))
            ray.shutdown()
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())

        rows = []
        for name in commands:
            local, ray2, ray1 = (median(walls[(name, k)]) for k in ("local", "ray2", "ray1"))
            rows.append(
                [
                    f"`cfx {name}`",
                    f"{local:.2f} ({n / local:.0f}/s)",
                    f"{ray2:.2f} ({n / ray2:.0f}/s)",
                    f"{local / ray2:.2f}×",
                    f"{ray1:.2f}",
                    f"{ray1 / ray2:.2f}×",
                ]
            )

        warm_rows = []
        for name in commands:
            local, ray2 = (median(walls[(name, k)]) for k in ("lib-local", "lib-ray2"))
            warm_rows.append(
                [
                    f"`{name}`",
                    f"{local:.2f} ({n / local:.0f}/s)",
                    f"{ray2:.2f} ({n / ray2:.0f}/s)",
                    f"{local / ray2:.2f}×",
                ]
            )

        # per-shard task times and the driver's serial share, in this process (one job at a time)
        split_rows = []
        for name, write in writers.items():
            eng = TimingEngine()
            t = time.perf_counter()
            write(eng, 1)
            total = time.perf_counter() - t
            shutil.rmtree(out, ignore_errors=True)
            tasks = sum(eng.times)
            driver = total - tasks
            proj = []
            for cpus in (2, 16, 64, 256):
                proj.append(f"{max(driver, tasks / cpus) * 2_700_000 / n / 3600:.2f} h")
            split_rows.append(
                [
                    f"`cfx {name}`",
                    f"{median(eng.times):.2f} ({min(eng.times):.2f}–{max(eng.times):.2f})",
                    f"{tasks / n * 1000:.1f}",
                    f"{driver / n * 1000:.2f}",
                    *proj,
                ]
            )

        print(
            f"# {machine()}; {n} CF-shaped images in {args.shards} shards ({data_mb:.0f} MB), medians of {args.reps}"
        )
        print(
            f"# command: python bench/bench_ray_write.py --reps {args.reps} --shards {args.shards} "
            f"--rows {args.rows} --scale {args.scale}; load average after the runs: {load}\n"
        )
        print(
            table(
                [
                    "command",
                    "local --workers 2: s (images/s)",
                    "Ray, 2 CPUs: s (images/s)",
                    "Ray throughput / local",
                    "Ray, 1 CPU: s",
                    "speed-up 1 → 2 CPUs",
                ],
                rows,
            )
        )
        print()
        print(
            table(
                [
                    "in one process, cluster joined once",
                    "local --workers 2: s",
                    "Ray, 2 CPUs: s",
                    "Ray / local throughput",
                ],
                warm_rows,
            )
        )
        print()
        print(
            table(
                [
                    "command",
                    "task s per shard: median (min–max)",
                    "tasks ms/image",
                    "driver ms/image (serial)",
                    "2.7M images, 2 CPUs",
                    "16",
                    "64",
                    "256",
                ],
                split_rows,
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
