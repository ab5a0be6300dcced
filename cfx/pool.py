"""The one process pool of cfx: workers that die with their parent, and a pool that stops at once on errors.

A plain ``ProcessPoolExecutor`` outlives a ``kill -9`` of its parent: each spawned worker holds both ends of
the task queue's pipe, so it never sees end-of-file and waits forever (and keeps the multiprocessing
resource tracker alive through its inherited pipe). And leaving its ``with`` block on an exception (Ctrl-C,
SIGTERM, a bad shard) waits for every queued task to run first. ``process_pool`` fixes both:

- each worker asks the kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``, Linux); where
  that is not available a watcher thread polls the parent pid and exits when it changes. Once the workers are
  gone the resource tracker sees end-of-file and exits too.
- workers ignore SIGINT from their first instruction on (it is blocked while they start): a Ctrl-C in a
  terminal reaches the whole process group, and only the parent decides (no traceback per worker).
- leaving the ``with`` block on any exception cancels the queued tasks and terminates the workers.
- ``wait_first`` and ``results`` wait on futures in short slices. Importing polars replaces Python's SIGINT
  handler with one that sets ``SA_RESTART`` (pola-rs/polars#21739), so an untimed wait would see a Ctrl-C
  only when the next task finishes (measured: 9 s into a dedupe instead of < 1 s).

The death signal is tied to the thread that started the worker (Linux semantics): create and use the pool
from a thread that outlives it (the main thread, as every cfx command does).
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import ctypes.util
import functools
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_SECONDS = 1.0  # the fallback's delay between a parent's death and its workers' exit
STOP_GRACE_SECONDS = 2.0  # after SIGTERM, how long a worker may take to exit before SIGKILL
SIGNAL_POLL_SECONDS = 0.25  # the longest a wait on futures delays a Ctrl-C


def process_pool(
    workers: int, initializer: Callable[..., object] | None = None, initargs: tuple[object, ...] = ()
) -> StoppablePool:
    """A spawn-context pool of ``workers`` processes whose workers die with this process (see module doc);
    ``initializer(*initargs)`` runs in each worker after that set-up, as ``ProcessPoolExecutor``'s does."""
    _remove_stale_warn_dirs()
    warn_dir = tempfile.mkdtemp(prefix=f"cfx-warnings-{os.getpid()}-")
    pool = StoppablePool(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(), initializer, initargs, warn_dir),
    )
    pool.warn_dir = warn_dir
    return pool


def _remove_stale_warn_dirs() -> None:
    """Remove the warning folders of pools whose process died without cleaning up (SIGKILL)."""
    root = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(root):
            parts = name.split("-")
            if name.startswith("cfx-warnings-") and len(parts) > 3 and parts[2].isdigit():
                try:
                    os.kill(int(parts[2]), 0)
                except ProcessLookupError:
                    shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                except OSError:
                    pass  # alive (another user's): leave it


class StoppablePool(ProcessPoolExecutor):
    """A ``ProcessPoolExecutor`` whose ``with`` block, left on an exception, stops instead of draining."""

    warn_dir: str | None = None  # where workers note their Python warnings (see _note_warning)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            if exc_type is None:
                return super().__exit__(exc_type, exc, tb)
            self.stop()
            return False
        finally:
            self.rewarn()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait:  # the workers are gone: all they noted is in the files
            self.rewarn()

    def rewarn(self) -> None:
        """Raise here, once each, the warnings the workers noted (then the CLI counts them by kind with this
        process's own: one line per kind instead of a raw warning per image from every worker)."""
        folder, self.warn_dir = self.warn_dir, None
        if folder is None:
            return
        for name in sorted(os.listdir(folder)):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                for line in Path(folder, name).read_text(encoding="utf-8").splitlines():
                    category, _, text = line.partition("\t")
                    kind = getattr(builtins, category, None)
                    ok = isinstance(kind, type) and issubclass(kind, Warning)
                    warnings.warn(text, kind if ok else UserWarning, stacklevel=2)
        shutil.rmtree(folder, ignore_errors=True)

    def _spawn_process(self) -> None:
        # Start the worker with SIGINT blocked (the mask is inherited across fork and exec) so that a
        # Ctrl-C during its start-up, before _init_worker ignores SIGINT, stays pending and is then
        # dropped instead of printing a KeyboardInterrupt traceback. Here, blocked means delayed, not lost.
        # (multiprocessing's resource tracker is started the same way.)
        if not hasattr(signal, "pthread_sigmask"):
            return super()._spawn_process()  # type: ignore[misc]
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            super()._spawn_process()  # type: ignore[misc]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def stop(self) -> None:
        """Cancel queued tasks and end the workers now: SIGTERM, then SIGKILL after a grace period."""
        procs = list((self._processes or {}).values())  # shutdown() drops these two
        manager: threading.Thread | None = getattr(self, "_executor_manager_thread", None)
        # The task queue's feeder thread may be blocked writing a large task into the pipe to the workers,
        # which we are about to kill; this process holds the pipe's read end too, so that write never ends.
        # The manager thread joins the feeder on its way out, and the interpreter joins the manager at exit:
        # without this the process hung for good after an error (issue 21, 2 runs in 12). The feeder is a
        # daemon thread, so not joining it is safe.
        call_queue = getattr(self, "_call_queue", None)
        if call_queue is not None:
            call_queue.cancel_join_thread()
        result_writer = getattr(getattr(self, "_result_queue", None), "_writer", None)  # shutdown() drops it
        self.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)
        # A worker killed half-way through sending a large result leaves the manager thread reading the rest
        # of it for ever: this process holds the result pipe's write end too. Closing it (the workers' ends
        # died with them) turns that read into end-of-file, so the manager thread marks the pool broken and
        # ends instead of hanging the interpreter's exit.
        if result_writer is not None:
            with contextlib.suppress(OSError):
                result_writer.close()
        # Let the manager thread finish now: at interpreter exit CPython 3.11 would otherwise race it
        # (``_python_exit`` writes to a wake-up pipe the thread is closing: "Bad file descriptor").
        if manager is not None:
            manager.join(STOP_GRACE_SECONDS)
        self.rewarn()


def _init_worker(
    parent: int,
    initializer: Callable[..., object] | None,
    initargs: tuple[object, ...],
    warn_dir: str | None = None,
) -> None:
    """Runs first in every worker: die with ``parent``, leave SIGINT to it, note Python warnings for it
    (``StoppablePool.rewarn``); then the caller's initializer."""
    if warn_dir is not None:
        path = os.path.join(warn_dir, str(os.getpid()))
        warnings.filterwarnings("always", category=UserWarning)
        warnings.filterwarnings("always", category=RuntimeWarning)
        warnings.showwarning = functools.partial(_note_warning, path)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # blocked since the spawn (StoppablePool._spawn_process)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if not _set_death_signal():
        threading.Thread(target=_watch_parent, args=(parent,), name="cfx-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)
    if initializer is not None:
        initializer(*initargs)


def _note_warning(
    path: str, message: Warning | str, category: type[Warning], *_: object, **__: object
) -> None:
    """A worker's ``warnings.showwarning``: one line (category, first line of the message) appended to
    ``path``, unbuffered, so nothing is lost when the worker is killed."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else ""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"{category.__name__}\t{text}\n".encode())
        finally:
            os.close(fd)


def _set_death_signal() -> bool:
    """Ask the Linux kernel to SIGKILL this process when its parent dies; False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    """The fallback: exit as soon as this process has been re-parented (its parent died)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def wait_first(pending: Iterable[Future[T]]) -> set[Future[T]]:
    """``wait(pending, return_when=FIRST_COMPLETED)`` that lets a signal in every ``SIGNAL_POLL_SECONDS``."""
    futures = list(pending)
    while True:
        done, _ = wait(futures, timeout=SIGNAL_POLL_SECONDS, return_when=FIRST_COMPLETED)
        if done or not futures:
            return done


def results(futures: Iterable[Future[T]]) -> Iterator[T]:
    """The results of ``futures`` in order (``Executor.map``'s), waiting as ``wait_first`` does."""
    for fut in futures:
        wait_first([fut])
        yield fut.result()


def shared_work(
    fn: Callable[..., T], tasks: Sequence[tuple[object, ...]], workers: int
) -> Generator[tuple[int, Future[T]], None, None]:
    """``fn(*task)`` for every task, as ``(index, finished future)`` pairs in the order they finish, with this
    process as one of the ``workers``.

    This process runs tasks from the front of the list at once; a pool of ``workers - 1`` takes them from the
    end once a worker is up (a spawned worker takes 0.5–3 s to import its modules: a task queued to it before
    then could leave this process waiting at the end), each worker with one task queued behind the one it
    runs. The two sides meet in the middle; a job that ends before a worker is up never waits for one.
    ``fn`` must be importable (it runs in workers); a task's exception is in its future."""
    if workers <= 1 or len(tasks) <= 1:
        for i, task in enumerate(tasks):
            yield i, _here(fn, task)
        return
    queue = deque(enumerate(tasks))
    helpers = min(workers - 1, len(tasks) - 1)
    with process_pool(helpers) as pool:
        up = [pool.submit(os.getpid) for _ in range(helpers)]  # done once a worker has started
        pending: dict[Future[T], int] = {}
        while queue or pending:
            while queue and len(pending) < 2 * helpers and any(f.done() and not f.exception() for f in up):
                i, task = queue.pop()
                pending[pool.submit(fn, *task)] = i
            for fut in [f for f in pending if f.done()]:
                yield pending.pop(fut), fut
            if queue:
                i, task = queue.popleft()
                yield i, _here(fn, task)
            elif pending:
                for fut in wait_first(pending):
                    yield pending.pop(fut), fut
        pool.stop()  # nothing is left: do not wait for a worker that is still starting


def shared_map(
    fn: Callable[..., T], tasks: Iterable[tuple[object, ...]], workers: int
) -> Generator[Future[T], None, None]:
    """``fn(*task)`` for every task, as finished futures in the order of ``tasks`` (read lazily), with this
    process as one of the ``workers``: a task goes to the pool of ``workers - 1`` when a worker is up and the
    pool has fewer than two tasks a worker, else it runs here. At most ``4 * workers`` results wait to be
    taken, so memory stays bounded however long ``tasks`` is; a task's exception is in its future."""
    if workers <= 1:
        for task in tasks:
            yield _here(fn, task)
        return
    helpers = workers - 1
    with process_pool(helpers) as pool:
        up = [pool.submit(os.getpid) for _ in range(helpers)]  # done once a worker has started
        ahead: deque[Future[T]] = deque()
        for task in tasks:
            busy = sum(not f.done() for f in ahead)  # only the pool's can be unfinished
            if busy < 2 * helpers and any(f.done() and not f.exception() for f in up):
                ahead.append(pool.submit(fn, *task))
            else:
                ahead.append(_here(fn, task))
            while ahead and (ahead[0].done() or len(ahead) >= 4 * workers):
                wait_first([ahead[0]])
                yield ahead.popleft()
        while ahead:
            wait_first([ahead[0]])
            yield ahead.popleft()
        pool.stop()  # nothing is left: do not wait for a worker that is still starting


def _here(fn: Callable[..., T], task: tuple[object, ...]) -> Future[T]:
    """``fn(*task)`` run in this process, as a finished future (its exception kept, as a pool's would be)."""
    fut: Future[T] = Future()
    try:
        fut.set_result(fn(*task))
    except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
        fut.set_exception(exc)
    return fut
