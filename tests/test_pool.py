"""cfx.pool.shared_work / shared_map: this process works from the start and a pool of ``workers - 1`` joins
when it is up.

Real spawned workers; tasks report the pid that ran them.
"""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from cfx.pool import shared_map, shared_work


def _pid_after(seconds: float, value: int) -> tuple[int, int]:
    time.sleep(seconds)
    return os.getpid(), value


def _fails_on(value: int, bad: int) -> int:
    if value == bad:
        raise ValueError(f"task {value}")
    return value


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_task_runs_once_and_each_index_names_its_task(workers: int) -> None:
    tasks = [(0.0, v) for v in range(7)]
    seen = {i: fut.result() for i, fut in shared_work(_pid_after, tasks, workers)}
    assert sorted(seen) == list(range(7))
    assert all(value == i for i, (_, value) in seen.items())


def test_this_process_starts_at_once_and_a_worker_takes_the_far_end() -> None:
    # 100 tasks of 50 ms: ~5 s of work, far longer than a worker's start (0.5-3 s)
    tasks = [(0.05, v) for v in range(100)]
    ran = [fut.result() for _, fut in shared_work(_pid_after, tasks, 2)]
    here = [v for pid, v in ran if pid == os.getpid()]
    there = [v for pid, v in ran if pid != os.getpid()]
    assert 0 in here, "this process did not start the work"
    assert there, "no worker took part"
    assert max(here) < min(there), "the two sides do not meet in the middle"
    assert 99 in there


def test_a_task_exception_is_in_its_future_wherever_it_ran() -> None:
    tasks = [(v, 0) for v in range(30)] + [(v, 29) for v in range(30)]
    outcomes: dict[int, object] = {}
    for i, fut in shared_work(_fails_on, tasks, 2):
        outcomes[i] = fut.exception() or fut.result()
    assert isinstance(outcomes[0], ValueError) and "task 0" in str(outcomes[0])  # this process, first
    assert isinstance(outcomes[59], ValueError) and "task 29" in str(outcomes[59])
    assert sum(isinstance(o, ValueError) for o in outcomes.values()) == 2


def test_a_caller_that_stops_early_leaves_no_worker_behind() -> None:
    tasks = [(0.05, v) for v in range(200)]
    with pytest.raises(RuntimeError):
        for n, _ in enumerate(shared_work(_pid_after, tasks, 3)):
            if n == 40:  # by now the workers are up and busy
                raise RuntimeError("caller gave up")
    deadline = time.monotonic() + 5
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children()


# --- shared_map: the ordered, streaming form (cfx subset --transform) ----------------------------------
def test_shared_map_keeps_the_order_and_a_worker_takes_part() -> None:
    tasks = ((0.05, v) for v in range(100))  # a generator: read lazily, ~5 s of work
    ran = [fut.result() for fut in shared_map(_pid_after, tasks, 2)]
    assert [v for _, v in ran] == list(range(100))
    pids = {pid for pid, _ in ran}
    assert os.getpid() in pids, "this process did no work"
    assert len(pids) == 2, "no worker took part"


def test_shared_map_reads_its_tasks_only_a_bounded_way_ahead() -> None:
    read: list[int] = []

    def tasks():  # type: ignore[no-untyped-def]
        for v in range(60):
            read.append(v)
            yield (0.02, v)

    workers = 3
    for n, fut in enumerate(shared_map(_pid_after, tasks(), workers)):
        assert fut.result()[1] == n
        assert len(read) - n <= 4 * workers, "results pile up"


def test_shared_map_exception_in_its_future_and_a_stop_leaves_no_worker() -> None:
    outcomes = [f.exception() or f.result() for f in shared_map(_fails_on, ((v, 3) for v in range(8)), 2)]
    assert [str(o) if isinstance(o, ValueError) else o for o in outcomes] == [0, 1, 2, "task 3", 4, 5, 6, 7]
    with pytest.raises(RuntimeError):
        for n, _ in enumerate(shared_map(_pid_after, ((0.05, v) for v in range(200)), 3)):
            if n == 40:
                raise RuntimeError("caller gave up")
    deadline = time.monotonic() + 5
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children()
