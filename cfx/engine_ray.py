"""Index and hash on Ray Data, inspect and write on Ray tasks (``--engine ray``): the only module that imports
ray, and only when used.

``run_jobs`` (inspect, subset, export) runs any importable per-shard function as one Ray task per shard and
returns the results in shard order, a bounded window in flight: a writer needs its parts in order (docs/scale.md
"Writing on a cluster"). The rest of this docstring is about index and hashing (Ray Data, results keyed by shard).

Each shard is one Ray Data row (``ray.data.from_items``, one block per shard) mapped by a task that runs the
very functions the local engine runs (``cfx.index.scan_shard``, ``cfx.hashing.shard_hashes_and_facts`` →
``hash_shard_batches``), so results are identical by construction. Workers read the shard bytes themselves
(local paths must be visible to every node, e.g. a shared file system; ``hf://`` shards are read through
HfFileSystem on each worker); only small result tables travel back: the hashes and, for the fused pass, the
byte facts of the same bytes. The driver writes the per-shard caches (index, hashes, facts), so caches live
where the command runs, exactly as with the local engine.

A worker that dies mid-task (OOM, lost node) is a system failure: Ray retries the task (``MAX_RETRIES``).
Test hook: when ``CFX_TEST_RAY_KILL_ONCE`` names a file that does not exist yet, the first task to start
creates it and kills its worker (``os._exit``), so tests can prove the retry gives the same result.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
import time
import warnings
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from cfx.engine import HashedShard
from cfx.errors import BadShardError, CfxError, NetworkError, OutputError, UsageError
from cfx.manifest import ShardInfo
from cfx.sources import ShardRef

ENGINES = ("local", "ray")
MAX_RETRIES = 3  # retries of a task whose worker died (Ray's system-failure retries)
LOCAL_OBJECT_STORE = 512 * 1024**2  # bytes; results are small tables (a shard's index is ~1 MB)
CONNECT_TIMEOUT = 5.0  # seconds to reach the head node before giving up
KILL_ONCE_ENV = "CFX_TEST_RAY_KILL_ONCE"
PAUSE_ENV = "CFX_TEST_RAY_PAUSE_DIR"  # test hook: a job task records its pid there and waits to be killed
TASKS_PER_CPU = 2  # run_jobs: tasks in flight per cluster CPU (one running, one queued behind it)
CANCEL_WAIT = 30.0  # seconds to wait for cancelled tasks to stop before the temp folder is removed
_TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def _import_ray(data: bool = False) -> Any:
    """ray (and with ``data`` ray.data: ~3 s more to import, needed by index and hashing only)."""
    try:
        import ray

        if data:
            import ray.data
    except ImportError:
        raise UsageError("--engine ray needs Ray, which is not installed", "pip install 'cfx[ray]'") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail fast on an unreachable head node (ray.init itself retries for minutes)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # let Ray interpret it
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise NetworkError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc})",
            "start it (`ray start --head`) or fix --ray-address / RAY_ADDRESS; leave both unset for a local Ray",
        ) from None


class RayEngine:
    """A connection to a Ray cluster (``address``, else ``RAY_ADDRESS``, else a local Ray), made on first use."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self._started = False

    def connect(self) -> Any:
        ray = _import_ray()
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            try:
                if address and address != "local":
                    _check_reachable(address)
                    ray.init(address=address, **quiet)
                else:
                    # cfx's own single-machine Ray: the notice that it uses token authentication (Ray's
                    # default) is not something a user of this command can act on
                    logging.getLogger(_TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
                    ray.init(
                        address="local",
                        num_cpus=self.num_cpus,
                        include_dashboard=False,
                        object_store_memory=LOCAL_OBJECT_STORE,
                        **quiet,
                    )
            except CfxError:
                raise
            except (ConnectionError, TimeoutError, RuntimeError) as exc:
                raise NetworkError(
                    f"cannot start or join Ray at {address or 'a local Ray'}: {str(exc).splitlines()[0][:200]}",
                    "check the address and that the cluster runs the same Ray and Python versions",
                ) from None
            self._started = True
        return ray

    def close(self) -> None:
        if self._started:
            _import_ray().shutdown()
            self._started = False

    def _map(self, items: list[dict[str, Any]], fn: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        ray = _import_ray(data=True)
        self.connect()
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # cfx reports progress itself, on stderr
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        kwargs["kill_once"] = os.environ.get(KILL_ONCE_ENV) or None
        with warnings.catch_warnings():
            # Ray >= 2.60 deprecates passing task options as **ray_remote_args but has no named
            # max_retries yet; Ray Data's own default retries a dead worker's task forever.
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ray.data.from_items(items, override_num_blocks=max(1, len(items))).map(
                fn, fn_kwargs=kwargs, num_cpus=1, max_retries=MAX_RETRIES
            )
        yield from ds.iter_rows()

    def run_jobs(
        self, fn: Callable[..., Any], jobs: Iterable[tuple[str, Any]], out_dir: str | None = None
    ) -> Generator[Any, None, None]:
        """``fn(job, None)`` for each ``(name, job)`` as one Ray task, results in job order (at most TASKS_PER_CPU
        per cluster CPU in flight, so what waits on the driver stays bounded). A task whose worker dies is
        retried (MAX_RETRIES; ``fn`` must be safe to run again); a CfxError it raises is raised here as it is;
        retries used up end in a NetworkError naming the job. ``out_dir``: a folder every task must see (the
        output's build folder, tagged by cfx.outputs.atomic_folder), checked before ``fn`` runs. On any error
        the tasks still in flight are cancelled and waited for, so none writes after this returns."""
        ray = self.connect()
        remote = ray.remote(_job_task).options(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)
        hooks = (os.environ.get(KILL_ONCE_ENV) or None, os.environ.get(PAUSE_ENV) or None)
        window = max(2, TASKS_PER_CPU * int(ray.cluster_resources().get("CPU", 1)))
        pending: deque[tuple[str, Any]] = deque()
        try:
            for name, job in jobs:
                pending.append((name, remote.remote(fn, job, out_dir, *hooks)))
                while len(pending) >= window:
                    yield _result(ray, *pending.popleft())
            while pending:
                yield _result(ray, *pending.popleft())
        finally:
            _cancel(ray, [ref for _, ref in pending])

    def write_subset_parts(self, *args: Any) -> None:
        """``cfx.subset_parts.write_on`` on this engine (see cfx.engine.ShardEngine.write_subset_parts)."""
        from cfx.subset_parts import write_on

        write_on(self, *args)

    def scan_shards(
        self, shards: list[tuple[int, ShardRef]], fs: Any, with_num_bytes: bool
    ) -> Iterator[tuple[int, Any, list[str], BadShardError | None]]:
        """``cfx.index.scan_shard`` of each shard on the cluster: (key, frame or None, warnings, error)."""
        if not shards:
            return
        items = [
            {"key": key, "rel": ref.rel, "path": ref.path, "info": json.dumps(ref.info.to_json())}
            for key, ref in shards
        ]
        for row in self._map(items, _scan_task, fs=fs, with_num_bytes=with_num_bytes):
            df, warn, err = pickle.loads(row["result"])
            if err is not None and not isinstance(err, BadShardError):
                raise err
            yield int(row["key"]), df, warn, err

    def hash_shards(
        self,
        root: str,
        todo: list[tuple[str, ShardInfo | None, np.ndarray]],
        options: dict[str, Any],
        with_facts: bool,
    ) -> Iterator[HashedShard]:
        """``cfx.hashing.shard_hashes_and_facts`` of the given rows of each shard on the cluster."""
        if not todo:
            return
        items = [
            {
                "shard": shard,
                "info": json.dumps(info.to_json()) if info is not None else "",
                "rows": np.asarray(rows, np.int64).tobytes(),
            }
            for shard, info, rows in todo
        ]
        rows_of = {shard: rows for shard, _, rows in todo}
        options = {**options, "with_facts": with_facts}
        if root.startswith("hf://"):  # workers use this process's Hub endpoint and token, not their own
            from cfx.sources import hub_filesystem

            options["hub_fs"] = hub_filesystem()
        for row in self._map(items, _hash_task, root=root, options=options):
            table, facts, decoded, err, pixels = pickle.loads(row["result"])
            if err is not None and not isinstance(err, BadShardError):
                raise err
            yield HashedShard(row["shard"], rows_of[row["shard"]], table, facts, decoded, err, pixels)


@contextmanager
def open_engine(name: str, address: str | None = None) -> Iterator[RayEngine | None]:
    """``None`` for the local engine, else a RayEngine shut down on exit (if it started a local Ray)."""
    if name not in ENGINES:
        raise UsageError(f"--engine {name!r}: unknown", f"pick one of: {', '.join(ENGINES)}")
    if name == "local":
        if address:
            raise UsageError("--ray-address needs --engine ray", "add --engine ray, or drop --ray-address")
        yield None
        return
    engine = RayEngine(address)
    engine.connect()  # fail before any work when Ray is missing or the cluster unreachable
    try:
        yield engine
    finally:
        engine.close()


def _result(ray: Any, name: str, ref: Any) -> Any:
    """The result of one run_jobs task: its value, its CfxError raised, a dead worker as a NetworkError."""
    try:
        ok, value = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # not a CfxError: a bug, shown as one
        cause = exc.as_instanceof_cause()
        raise cause from None
    except ray.exceptions.RayError as exc:  # the worker or its node died, MAX_RETRIES + 1 times
        raise NetworkError(
            f"a Ray worker died {MAX_RETRIES + 1} times running {name} ({type(exc).__name__}); nothing was "
            "written",
            "check the nodes' memory and logs (`ray logs`), then run the command again",
        ) from None
    if not ok:
        raise value
    return value


def _cancel(ray: Any, refs: list[Any]) -> None:
    """Stop tasks still in flight and wait until they have (they may be writing into a folder about to go)."""
    if not refs:
        return
    for ref in refs:
        ray.cancel(ref, force=True)
    deadline = time.monotonic() + CANCEL_WAIT
    left = list(refs)
    while left and time.monotonic() < deadline:
        _, left = ray.wait(left, num_returns=len(left), timeout=max(0.1, deadline - time.monotonic()))


# --- worker side (runs inside Ray tasks) -----------------------------------------------------------------
def _maybe_die(kill_once: str | None) -> None:
    if not kill_once:
        return
    try:
        fd = os.open(kill_once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(1)  # the first attempt of one task dies like an OOM-killed worker


def _scan_task(
    row: dict[str, Any], *, fs: Any, with_num_bytes: bool, kill_once: str | None
) -> dict[str, Any]:
    from cfx.index import scan_shard

    _maybe_die(kill_once)
    ref = ShardRef(rel=row["rel"], path=row["path"], info=ShardInfo.from_json(json.loads(row["info"])))
    try:
        df, warn = scan_shard(ref, fs, with_num_bytes=with_num_bytes)
        out: tuple[Any, ...] = (df, warn, None)
    except CfxError as exc:
        out = (None, [], exc)
    return {"key": row["key"], "result": pickle.dumps(out)}


def _hash_task(
    row: dict[str, Any], *, root: str, options: dict[str, Any], kill_once: str | None
) -> dict[str, Any]:
    from cfx.hashing import shard_hashes_and_facts

    _maybe_die(kill_once)
    info = ShardInfo.from_json(json.loads(row["info"])) if row["info"] else None
    rows = np.frombuffer(row["rows"], np.int64)
    try:
        table, decoded, facts, pixels = shard_hashes_and_facts(root, row["shard"], info, rows, **options)
        out: tuple[Any, ...] = (table, facts, decoded, None, pixels)
    except CfxError as exc:
        out = (None, None, 0, exc, None)
    return {"shard": row["shard"], "result": pickle.dumps(out)}


def _pause_hook(pause_dir: str | None) -> Callable[..., None] | None:
    """Test hook passed to a job as its ``progress``: at the job's first progress report (rows already
    written), record this worker's pid in ``pause_dir`` and wait a second for the test to kill it; a ``stop``
    file there turns the hook off."""
    if not pause_dir:
        return None
    state = {"paused": False}

    def progress(*_counts: int) -> None:
        if state["paused"] or os.path.exists(os.path.join(pause_dir, "stop")):
            return
        state["paused"] = True
        with open(os.path.join(pause_dir, f"{os.getpid()}.pid"), "w") as f:
            f.write(str(os.getpid()))
        time.sleep(1.0)

    return progress


def _job_task(
    fn: Callable[..., Any], job: Any, out_dir: str | None, kill_once: str | None, pause_dir: str | None
) -> tuple[bool, Any]:
    """(True, fn(job, progress)) or (False, the CfxError it raised); refuses an ``out_dir`` this node cannot
    see. ``progress`` is None (the driver counts a job's rows when it ends) but for the test hook."""
    from cfx.outputs import WRITER_TAG

    _maybe_die(kill_once)
    try:
        if out_dir is not None and not os.path.exists(os.path.join(out_dir, WRITER_TAG)):
            raise OutputError(
                f"the Ray worker on {socket.gethostname()} cannot see the output's build folder {out_dir}",
                "write --out on a file system mounted at the same path on every node (docs/scale.md)",
            )
        return True, fn(job, _pause_hook(pause_dir))
    except CfxError as exc:
        return False, exc
