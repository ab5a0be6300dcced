"""Issue 11 item 15: no process outlives `cfx dedupe` — kill -9, SIGTERM (exit 143) and Ctrl-C (exit 130).

Real processes and real signals: `python -m cfx dedupe` hashes a dataset with 3 workers (this process and a
pool of 2: cfx.pool.shared_work); once the pool's workers exist the test signals the parent and checks that every child (workers and the multiprocessing
resource tracker) is gone within a few seconds. stderr goes to a file, not a pipe: orphans would hold a pipe
open and hang the test instead of failing it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cfx.pool import PARENT_POLL_SECONDS, process_pool

psutil = pytest.importorskip("psutil")  # part of the test extra

ROOT = Path(__file__).resolve().parents[1]
SHARDS = 16  # with 2 workers, hashing them takes several seconds
GONE_WITHIN = 5.0  # seconds for every child to be gone after the parent
QUICK = 3.0  # seconds from SIGTERM/SIGINT to exit (an untimed wait took ~9 s: cfx.pool.wait_first)


@pytest.fixture(scope="session")
def busy_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset whose hashing keeps 2 workers busy for seconds: 2 synth shards, copied to 16."""
    from cfx.synth import make_dataset

    root = tmp_path_factory.mktemp("busy")
    make_dataset(root, shards=2, rows_per_shard=24, seed=1, duplicates=False)
    data = root / "data"
    for i in range(2, SHARDS):
        shutil.copyfile(data / f"HFCF_small_{i % 2}.parquet", data / f"HFCF_small_{i}.parquet")
    return root


@contextmanager
def running_dedupe(
    dataset: Path, tmp_path: Path, settle: float = 0.3
) -> Iterator[tuple[subprocess.Popen[bytes], list]]:
    """`cfx dedupe` in its own session, yielded ``settle`` s after both pool workers exist, with its children."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CFX_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("CFX_DEBUG", None)
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cfx", "dedupe", str(dataset), "--no-cache", "-w", "3", "--json"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=tmp_path,
            env=env,
            start_new_session=True,  # its own process group, as a shell job has
        )
    try:
        children = _wait_for_workers(proc, settle)
        assert proc.poll() is None, "dedupe finished before the signal: make busy_dataset bigger"
        yield proc, children
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def _wait_for_workers(proc: subprocess.Popen[bytes], settle: float, timeout: float = 120.0) -> list:
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dedupe exited early with {proc.returncode}"
        children = parent.children(recursive=True)
        if sum(_is_worker(c) for c in children) >= 2:
            time.sleep(settle)
            return parent.children(recursive=True)
        time.sleep(0.05)
    raise AssertionError("the pool's workers never appeared")


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _is_worker(p: psutil.Process) -> bool:
    return "spawn_main" in _cmdline(p)


def _alive(procs: list) -> list:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _assert_all_gone(procs: list) -> None:
    deadline = time.monotonic() + GONE_WITHIN
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _alive(procs)
    for p in left:  # never leave them behind for the next test
        p.kill()
    assert not left, "orphans: " + "; ".join(f"{p.pid} {_cmdline(p)[-80:]}" for p in left)


def test_sigkill_of_dedupe_takes_its_workers_and_resource_tracker_with_it(
    busy_dataset: Path, tmp_path: Path
) -> None:
    with running_dedupe(busy_dataset, tmp_path) as (proc, children):
        assert any("resource_tracker" in _cmdline(c) for c in children), "no resource tracker to check"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        _assert_all_gone(children)


def test_sigterm_stops_dedupe_with_143_no_orphan_no_traceback(busy_dataset: Path, tmp_path: Path) -> None:
    with running_dedupe(busy_dataset, tmp_path) as (proc, children):
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)  # `kill PID`: the parent only
        assert proc.wait(30) == 143
        assert time.monotonic() - sent < QUICK
        _assert_all_gone(children)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "Terminated." in stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


@pytest.mark.parametrize("settle", [0.0, 0.3], ids=["workers-starting", "workers-busy"])
def test_ctrl_c_stops_dedupe_with_130_no_orphan_no_traceback(
    busy_dataset: Path, tmp_path: Path, settle: float
) -> None:
    with running_dedupe(busy_dataset, tmp_path, settle) as (proc, children):
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group, workers too
        assert proc.wait(30) == 130
        assert time.monotonic() - sent < QUICK
        _assert_all_gone(children)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "Interrupted." in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr


def test_pool_left_on_an_exception_stops_without_running_the_queue() -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError), process_pool(2) as pool:
        futures = [pool.submit(time.sleep, 2) for _ in range(20)]  # 20 s of queued work on 2 workers
        workers = list(pool._processes.values())
        raise RuntimeError("stop")
    assert time.monotonic() - started < 10
    assert all(f.cancelled() or f.done() for f in futures)
    assert not any(w.is_alive() for w in workers)


WATCHER = """
import os
from cfx.pool import _watch_parent
pid = os.fork()
if pid == 0:  # the "worker": watches its parent, this middle process, which exits right away
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # let go of the test's pipe
    _watch_parent(os.getppid())
    os._exit(0)
print(pid, flush=True)
"""


def test_parent_watcher_fallback_exits_when_its_parent_dies() -> None:
    """Where prctl is unavailable (not Linux) workers poll their parent pid: that path, for real."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", WATCHER], capture_output=True, text=True, env=env, timeout=60)
    assert GONE_WITHIN > 2 * PARENT_POLL_SECONDS
    try:
        watcher = psutil.Process(int(out.stdout))
    except psutil.NoSuchProcess:
        return  # already gone: its parent died before its first look
    _assert_all_gone([watcher])  # without the watcher it would wait forever


def _pid_and_flag(flag: str) -> tuple[int, str]:
    return os.getpid(), os.environ.get("CFX_TEST_INIT", "") + flag


def _set_flag(value: str) -> None:
    os.environ["CFX_TEST_INIT"] = value


def test_pool_runs_the_callers_initializer_in_every_worker_after_its_own() -> None:
    """export hands its progress queue to its workers this way: the pool's set-up and the caller's both run."""
    with process_pool(2, initializer=_set_flag, initargs=("ready-",)) as pool:
        answers = [f.result() for f in [pool.submit(_pid_and_flag, "x") for _ in range(4)]]
    assert {flag for _, flag in answers} == {"ready-x"}
    assert all(pid != os.getpid() for pid, _ in answers)


def test_reliability_table_names_every_process_test() -> None:
    """docs/reliability.md "Processes and signals" and this file stay in step."""
    import re

    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    section = text.split("## Processes and signals", 1)[1].split("\n## ", 1)[0]
    in_table = set(re.findall(r"`(test_\w+)`", section))
    here = {n for n in globals() if n.startswith("test_")} - {
        "test_reliability_table_names_every_process_test"
    }
    assert in_table == here, f"only in the table: {in_table - here}; only here: {here - in_table}"
