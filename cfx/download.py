"""Download a Hub dataset's files into a folder: selected by shard, verified by hash, resumable across runs.

Every file is checked against the hash the Hub lists for it at the resolved commit: the LFS sha256 for LFS files,
the git blob id (sha1 of ``b"blob <size>\\0" + bytes``) otherwise. Hashing happens while the bytes stream in.
What was verified is recorded in ``OUT/.cfx/download-state.json``; a later run skips a file whose size, mtime_ns
and expected hash match its record, without reading it again. Downloads go to ``OUT/.cfx/partial/<path>.part``
and are moved into place only once verified; an interrupted run continues from the partial file with a
``Range`` request.

HTTP goes through huggingface_hub (``hf_hub_url``, ``build_hf_headers``, ``get_session``), so ``HF_ENDPOINT``,
``HF_TOKEN`` and the saved login apply. Transient failures (429, 5xx, connection errors) are retried with
exponential backoff and jitter, honouring ``Retry-After``; ``CFX_HTTP_TRIES`` and ``CFX_HTTP_BACKOFF`` (seconds)
tune the policy.
"""

from __future__ import annotations

import contextlib
import email.utils
import fnmatch
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar

import httpx2
from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers, get_session

from cfx.defaults import DEFAULT_REPO
from cfx.defaults import DOWNLOAD_WORKERS as DEFAULT_WORKERS
from cfx.errors import CfxError, EmptySelectionError, NetworkError, OutputError, UsageError
from cfx.progress import NullReporter, Reporter, Task
from cfx.shardspec import ShardSet, format_shard_spec, parse_shard_set, shard_number

REPO_TYPE = "dataset"
STATE_DIR = ".cfx"
STATE_FILE = "download-state.json"
PARTIAL_DIR = "partial"
PARTIAL_SUFFIX = ".part"

_REPORT_EVERY = 4 << 20  # progress, cancellation and size checks every this many bytes received
_DISK_CHUNK = 8 << 20  # bytes per read when hashing a local file
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_TIMEOUT = httpx2.Timeout(60.0, connect=15.0)
_ALWAYS = ("README.md", "data/metadata/*")  # selected whatever --shards / --include say
_NEVER = (".gitattributes",)

Algorithm = Literal["sha256", "git-blob-sha1"]
FileStatus = Literal["verified", "outdated", "present", "stale", "partial", "missing"]
FileAction = Literal["downloaded", "resumed", "skipped", "updated", "refetched"]
T = TypeVar("T")


# -- what the Hub has -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """A file at the resolved commit, with the hash the Hub vouches for."""

    path: str
    size: int
    blob_id: str  # git blob sha1 (of the LFS pointer, for LFS files)
    sha256: str | None = None  # LFS content hash

    @property
    def algorithm(self) -> Algorithm:
        return "sha256" if self.sha256 is not None else "git-blob-sha1"

    @property
    def expected_hash(self) -> str:
        return self.sha256 if self.sha256 is not None else self.blob_id

    def hasher(self) -> Any:
        if self.sha256 is not None:
            return hashlib.sha256()
        h = hashlib.sha1(usedforsecurity=False)
        h.update(b"blob %d\0" % self.size)
        return h


def _is_sha256(value: str | None) -> bool:
    return value is not None and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: exponential backoff with full jitter, ``Retry-After`` honoured (up to a cap)."""

    tries: int = 5
    base: float = 0.5
    cap: float = 8.0
    max_retry_after: float = 120.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        try:
            tries = int(os.environ.get("CFX_HTTP_TRIES", cls.tries))
            base = float(os.environ.get("CFX_HTTP_BACKOFF", cls.base))
        except ValueError as exc:
            raise UsageError(
                f"CFX_HTTP_TRIES / CFX_HTTP_BACKOFF: {exc}", "use an integer and a number of seconds"
            ) from None
        return cls(tries=max(1, tries), base=max(0.0, base))

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return random.uniform(0, min(self.cap, self.base * 2 ** (failures - 1)))


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _endpoint_hint() -> str:
    endpoint = os.environ.get("HF_ENDPOINT")
    where = f"HF_ENDPOINT={endpoint}" if endpoint else f"HF_ENDPOINT is unset (so {constants.ENDPOINT})"
    return f"check the network and HF_ENDPOINT ({where}); downloading needs HF_HUB_OFFLINE unset"


def _offline_error() -> NetworkError:
    return NetworkError(
        "HF_HUB_OFFLINE is set: cfx download needs to reach the Hub",
        "unset HF_HUB_OFFLINE (or set it to 0) to download; files already downloaded are usable as they are",
    )


def _transport_error(exc: Exception) -> NetworkError:
    reason = str(exc) or type(exc).__name__
    return NetworkError(f"cannot reach the Hub at {constants.ENDPOINT}: {reason}", _endpoint_hint())


def _call_api(func: Callable[[], T], policy: RetryPolicy) -> T:
    """Run a huggingface_hub API call, retrying transient failures."""
    failures = 0
    while True:
        try:
            return func()
        except OfflineModeIsEnabled:
            raise _offline_error() from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status not in _RETRY_STATUSES:
                raise
            failures += 1
            if failures >= policy.tries:
                raise NetworkError(
                    f"the Hub answered HTTP {status} {_tries(failures)}", _endpoint_hint()
                ) from None
            retry_after = (
                _parse_retry_after(exc.response.headers.get("retry-after")) if exc.response else None
            )
            time.sleep(policy.delay(failures, retry_after))
        except httpx2.TransportError as exc:
            failures += 1
            if failures >= policy.tries:
                raise _transport_error(exc) from None
            time.sleep(policy.delay(failures))


def _files(n: int) -> str:
    return "1 file" if n == 1 else f"{n} files"


def _tries(n: int) -> str:
    return f"({n} tries)" if n != 1 else "(1 try)"


def resolve_repo(
    repo_id: str, revision: str | None = None, *, token: str | None = None, policy: RetryPolicy | None = None
) -> tuple[str, list[RemoteFile]]:
    """The commit sha ``revision`` points at (default branch if None) and every file at that commit."""
    policy = policy or RetryPolicy.from_env()
    if constants.is_offline_mode():
        raise _offline_error()
    api = HfApi(token=token)
    try:
        info = _call_api(lambda: api.dataset_info(repo_id, revision=revision), policy)
    except HFValidationError as exc:
        raise UsageError(
            f"'{repo_id}' is not a valid repo id: {exc}", "write ORG/NAME, e.g. " + DEFAULT_REPO
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise _not_found(api, repo_id, revision, policy) from None
    except GatedRepoError:
        raise NetworkError(
            f"dataset repo '{repo_id}' is gated",
            "accept its terms on the Hub, then pass --token or set HF_TOKEN",
        ) from None
    except HfHubHTTPError as exc:
        raise NetworkError(
            f"the Hub refused to describe '{repo_id}': {_first_line(exc)}", _endpoint_hint()
        ) from None
    commit = info.sha
    if not commit:
        raise NetworkError(
            f"the Hub gave no commit for {repo_id}@{revision or 'default branch'}", _endpoint_hint()
        )
    try:
        entries = _call_api(
            lambda: list(api.list_repo_tree(repo_id, recursive=True, revision=commit, repo_type=REPO_TYPE)),
            policy,
        )
    except HfHubHTTPError as exc:
        raise NetworkError(
            f"cannot list the files of {repo_id}@{commit[:12]}: {_first_line(exc)}", _endpoint_hint()
        ) from None
    files = [
        RemoteFile(
            path=e.path,
            size=int(e.size),
            blob_id=e.blob_id,
            sha256=e.lfs.sha256 if e.lfs is not None and _is_sha256(e.lfs.sha256) else None,
        )
        for e in entries
        if isinstance(e, RepoFile)
    ]
    return commit, sorted(files, key=lambda f: _sort_key(f.path))


def _not_found(api: HfApi, repo_id: str, revision: str | None, policy: RetryPolicy) -> NetworkError:
    """Tell an unknown revision from an unknown repo: the repo's refs answer only if the repo exists."""
    if revision is not None:
        try:
            refs = _call_api(lambda: api.list_repo_refs(repo_id, repo_type=REPO_TYPE), policy)
        except (HfHubHTTPError, NetworkError):
            refs = None
        if refs is not None:
            names = [b.name for b in refs.branches] + [t.name for t in refs.tags]
            known = ", ".join(names[:10]) or "none listed"
            return NetworkError(
                f"revision '{revision}' not found in dataset repo '{repo_id}'",
                f"use a branch, tag or full commit sha (branches and tags: {known})",
            )
    return NetworkError(
        f"dataset repo '{repo_id}' not found on {constants.ENDPOINT}",
        "check the ORG/NAME spelling; for a private or gated repo pass --token or set HF_TOKEN",
    )


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _sort_key(path: str) -> tuple[str, int, str]:
    p = PurePosixPath(path)
    n = shard_number(path)
    return (str(p.parent), -1 if n is None else n, p.name)


# -- which files ------------------------------------------------------------------------------------


def is_shard(path: str) -> bool:
    """A shard is a ``data/*.parquet`` file whose name ends in its number."""
    p = PurePosixPath(path)
    return str(p.parent) == "data" and p.suffix == ".parquet" and shard_number(path) is not None


def select_files(
    files: Sequence[RemoteFile],
    shards: Sequence[int] | ShardSet | None = None,
    include: Sequence[str] = (),
    *,
    where: str = "",
    reporter: Reporter | None = None,
) -> list[RemoteFile]:
    """The files to download.

    Neither ``shards`` nor ``include``: every file. Otherwise the given shards plus the files matching any
    ``include`` glob (fnmatch on repo paths). ``README.md`` and ``data/metadata/*`` are always selected,
    ``.gitattributes`` never.
    """
    reporter = reporter or NullReporter()
    candidates = [f for f in files if f.path not in _NEVER]
    if shards is None and not include:
        return candidates
    chosen: set[str] = set()
    if shards is not None:
        wanted = shards if isinstance(shards, ShardSet) else ShardSet.of(shards)
        by_number = {shard_number(f.path): f.path for f in candidates if is_shard(f.path)}
        missing = wanted.without(by_number)  # ranges, never expanded (`--shards 0-99999999999`)
        if missing.ranges:
            valid = format_shard_spec(n for n in by_number if n is not None)
            hint = (
                f"this revision has shards {valid}" if valid else "this revision has no data/*.parquet shards"
            )
            raise UsageError(
                f"--shards: {'shard' if len(missing) == 1 else 'shards'} {missing} "
                f"not in {where or 'the repo'}",
                hint,
            )
        chosen.update(by_number[n] for n in wanted.intersect(by_number))
    for pattern in include:
        matched = {f.path for f in candidates if fnmatch.fnmatch(f.path, pattern)}
        if not matched:
            reporter.warn(f"--include '{pattern}' matches no file in {where or 'the repo'}")
        chosen |= matched
    chosen.update(f.path for f in candidates if any(fnmatch.fnmatch(f.path, p) for p in _ALWAYS))
    return [f for f in candidates if f.path in chosen]


# -- local state --------------------------------------------------------------------------------------


class DownloadState:
    """``OUT/.cfx/download-state.json``: what was verified (path -> size, mtime_ns, hash, algorithm, revision)
    and which hash each partial download is for. Saved atomically after every change."""

    VERSION = 1

    def __init__(self, out: Path) -> None:
        self.path = out / STATE_DIR / STATE_FILE
        self.files: dict[str, dict[str, Any]] = {}
        self.partials: dict[str, str] = {}
        self._lock = threading.Lock()
        self.unreadable = False
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict) and data.get("version") == self.VERSION:
                self.files = dict(data.get("files", {}))
                self.partials = dict(data.get("partials", {}))
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            self.unreadable = True  # files get re-hashed; nothing is lost but time

    def recorded_hash(self, path: str, local: Path) -> str | None:
        """The hash ``local`` was verified to have, if it has not changed since (same size and mtime_ns)."""
        rec = self.files.get(path)
        if rec is None:
            return None
        try:
            st = local.stat()
        except OSError:
            return None
        if rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
            return str(rec.get("hash"))
        return None

    def is_verified(self, remote: RemoteFile, local: Path) -> bool:
        """True if ``local`` was verified against ``remote``'s hash and has not changed since (no hashing)."""
        return (
            self.recorded_hash(remote.path, local) == remote.expected_hash
            and local.stat().st_size == remote.size
        )

    def record(self, remote: RemoteFile, local: Path, revision: str) -> None:
        st = local.stat()
        with self._lock:
            self.files[remote.path] = {
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "hash": remote.expected_hash,
                "algorithm": remote.algorithm,
                "revision": revision,
            }
            self.partials.pop(remote.path, None)
            self._save()

    def forget(self, path: str) -> None:
        with self._lock:
            if self.files.pop(path, None) is not None:
                self._save()

    def partial_hash(self, path: str) -> str | None:
        return self.partials.get(path)

    def start_partial(self, remote: RemoteFile) -> None:
        with self._lock:
            if self.partials.get(remote.path) != remote.expected_hash:
                self.partials[remote.path] = remote.expected_hash
                self._save()

    def _save(self) -> None:
        data = {"version": self.VERSION, "files": self.files, "partials": self.partials}
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _output_error(self.path, exc) from None


def _output_error(path: Path, exc: OSError) -> OutputError:
    reason = exc.strerror or str(exc)
    return OutputError(f"cannot write {path}: {reason}", "free some space or choose another --out")


# -- the plan -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedFile:
    remote: RemoteFile
    # verified: recorded, unchanged; outdated: recorded for another version of the file;
    # present: not recorded (or changed), will be hashed; stale: present with the wrong size
    status: FileStatus
    partial_bytes: int = 0

    @property
    def bytes_to_fetch(self) -> int:
        """Bytes the file needs from the network, as far as the plan can tell without hashing
        (a present, unverified file may still turn out bad and be re-fetched)."""
        if self.status in ("verified", "present"):
            return 0
        return self.remote.size - self.partial_bytes


@dataclass
class DownloadPlan:
    repo_id: str
    revision: str | None  # as asked (None: default branch)
    commit: str
    endpoint: str
    out: Path
    files: list[PlannedFile]

    @property
    def total_bytes(self) -> int:
        return sum(p.remote.size for p in self.files)

    @property
    def bytes_to_fetch(self) -> int:
        return sum(p.bytes_to_fetch for p in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "endpoint": self.endpoint,
            "out": str(self.out),
            "files": [
                {
                    "path": p.remote.path,
                    "size": p.remote.size,
                    "status": p.status,
                    "partial_bytes": p.partial_bytes,
                    "bytes_to_fetch": p.bytes_to_fetch,
                    "algorithm": p.remote.algorithm,
                    "hash": p.remote.expected_hash,
                }
                for p in self.files
            ],
            "total_files": len(self.files),
            "total_bytes": self.total_bytes,
            "files_to_fetch": sum(1 for p in self.files if p.bytes_to_fetch > 0),
            "bytes_to_fetch": self.bytes_to_fetch,
        }


def _local_path(out: Path, repo_path: str) -> Path:
    p = PurePosixPath(repo_path)
    if p.is_absolute() or ".." in p.parts or not p.parts or p.parts[0] == STATE_DIR:
        raise NetworkError(
            f"the Hub listed an unsafe file path: {repo_path!r}", "this is not a file cfx can place"
        )
    return out.joinpath(*p.parts)


def _partial_path(out: Path, repo_path: str) -> Path:
    return out.joinpath(
        STATE_DIR,
        PARTIAL_DIR,
        *PurePosixPath(repo_path).parts[:-1],
        PurePosixPath(repo_path).name + PARTIAL_SUFFIX,
    )


def _classify(out: Path, state: DownloadState, remote: RemoteFile) -> PlannedFile:
    local = _local_path(out, remote.path)
    if local.is_dir():
        raise OutputError(
            f"{local} is a folder, where the file {remote.path} should go",
            "move it away or choose another --out",
        )
    if local.is_file():
        recorded = state.recorded_hash(remote.path, local)
        if recorded == remote.expected_hash and local.stat().st_size == remote.size:
            return PlannedFile(remote, "verified")
        if recorded is not None:
            return PlannedFile(remote, "outdated")  # a verified copy of another version of the file
        if local.stat().st_size != remote.size:
            return PlannedFile(remote, "stale")
        return PlannedFile(remote, "present")
    part = _partial_path(out, remote.path)
    if part.is_file() and state.partial_hash(remote.path) == remote.expected_hash:
        size = part.stat().st_size
        if 0 < size <= remote.size:
            return PlannedFile(remote, "partial", size)
    return PlannedFile(remote, "missing")


def _check_out(out: Path) -> None:
    """Fail early, before any download, if ``out`` cannot hold files."""
    if out.exists() and not out.is_dir():
        raise OutputError(
            f"--out {out} exists and is not a folder", "choose a folder (it is created if missing)"
        )
    try:
        (out / STATE_DIR / PARTIAL_DIR).mkdir(parents=True, exist_ok=True)
        probe = out / STATE_DIR / f"write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"cannot write to --out {out}: {exc.strerror or exc}", "choose a folder you can write to"
        ) from None


def plan_download(
    out: Path | str,
    repo_id: str = DEFAULT_REPO,
    *,
    revision: str | None = None,
    shards: str | Sequence[int] | ShardSet | None = None,
    include: Sequence[str] = (),
    token: str | None = None,
    reporter: Reporter | None = None,
    policy: RetryPolicy | None = None,
) -> DownloadPlan:
    """Resolve the revision, list and select files, and see what is already here. Reads nothing big, writes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(
            f"--out {out} exists and is not a folder", "choose a folder (it is created if missing)"
        )
    if isinstance(shards, str):
        shards = parse_shard_set(shards)
    commit, files = resolve_repo(repo_id, revision, token=token, policy=policy)
    where = f"{repo_id}@{revision or commit[:12]}"
    selected = select_files(files, shards, include, where=where, reporter=reporter)
    if not selected:
        raise EmptySelectionError(f"nothing to download from {where}", "check --shards / --include")
    state = DownloadState(out)
    planned = [_classify(out, state, f) for f in selected]
    return DownloadPlan(repo_id, revision, commit, constants.ENDPOINT, out, planned)


# -- the download -------------------------------------------------------------------------------------


@dataclass
class FileResult:
    path: str
    size: int
    action: FileAction
    bytes_fetched: int = 0
    hashed_bytes: int = 0  # bytes read back from disk to hash (a verified skip reads none)
    resumed_from: int = 0
    reason: str = ""  # why a file was re-fetched


@dataclass
class DownloadResult:
    repo_id: str
    revision: str | None
    commit: str
    out: Path
    seconds: float
    files: list[FileResult] = field(default_factory=list)

    def count(self, action: FileAction) -> int:
        return sum(1 for f in self.files if f.action == action)

    @property
    def bytes_fetched(self) -> int:
        return sum(f.bytes_fetched for f in self.files)

    @property
    def hashed_bytes(self) -> int:
        return sum(f.hashed_bytes for f in self.files)

    @property
    def mb_per_s(self) -> float:
        return self.bytes_fetched / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "out": str(self.out),
            "files_downloaded": self.count("downloaded") + self.count("resumed"),
            "files_resumed": self.count("resumed"),
            "files_skipped": self.count("skipped"),
            "files_updated": self.count("updated"),
            "files_refetched": self.count("refetched"),
            "bytes_downloaded": self.bytes_fetched,
            "hashed_bytes": self.hashed_bytes,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.mb_per_s, 2),
            "files": [asdict(f) for f in self.files],
        }


class _Cancelled(Exception):
    pass


class _Downloader:
    def __init__(
        self,
        plan: DownloadPlan,
        *,
        token: str | None,
        reporter: Reporter,
        policy: RetryPolicy,
        verify: bool,
    ) -> None:
        self.plan = plan
        self.out = plan.out
        self.token = token
        self.reporter = reporter
        self.policy = policy
        self.verify = verify
        self.state = DownloadState(plan.out)
        self.cancel = threading.Event()
        self.total: Task | None = None
        self._total_bytes = plan.bytes_to_fetch
        self._total_lock = threading.Lock()

    def _grow_total(self, n: int) -> None:
        with self._total_lock:
            self._total_bytes += n
            if self.total is not None:
                self.total.update(total=self._total_bytes)

    # one file, start to finish: check the local copy, fetch what is missing, say what was done
    def run_file(self, planned: PlannedFile) -> FileResult:
        remote = planned.remote
        if planned.status == "verified" and not self.verify:
            return FileResult(remote.path, remote.size, "skipped")
        local = _local_path(self.out, remote.path)
        kept, reason = self._check_local(planned, local)
        if kept is not None:
            return kept
        hashed = remote.size if planned.status in ("verified", "present") else 0
        self._announce(planned, reason)
        if not reason and planned.status == "outdated":
            reason = _outdated_reason(remote, self.plan.commit)
        fetched, hashed_part, resumed_from = self._fetch(remote, local)
        action = _action(planned.status, reason, resumed_from)
        return FileResult(
            remote.path, remote.size, action, fetched, hashed + hashed_part, resumed_from, reason
        )

    def _check_local(self, planned: PlannedFile, local: Path) -> tuple[FileResult | None, str]:
        """(a result when the local copy is good, else None; why it must be fetched again, or "")."""
        remote = planned.remote
        if planned.status in ("verified", "present"):
            h = remote.hasher()
            _hash_into(h, local, self.cancel)
            if h.hexdigest() == remote.expected_hash:
                self.state.record(remote, local, self.plan.commit)
                return FileResult(remote.path, remote.size, "skipped", hashed_bytes=remote.size), ""
            return None, f"local copy does not match the Hub's {remote.algorithm}"
        if planned.status == "stale":
            return None, f"local copy has {local.stat().st_size} bytes, the Hub's has {remote.size}"
        return None, ""

    def _announce(self, planned: PlannedFile, reason: str) -> None:
        """Say why a file that is here is fetched again (and count its bytes), or that it changed on the Hub."""
        remote = planned.remote
        if reason:
            self.state.forget(remote.path)
            self.reporter.warn(f"{remote.path}: {reason} — re-fetching it")
            self._grow_total(remote.size)
        elif planned.status == "outdated":
            why = _outdated_reason(remote, self.plan.commit)
            self.reporter.info(f"{remote.path}: {why} — fetching the new version")

    def _fetch(self, remote: RemoteFile, local: Path) -> tuple[int, int, int]:
        """Download ``remote`` via its partial file, verify, move into place. Returns (fetched, hashed, resumed_from)."""
        part = _partial_path(self.out, remote.path)
        if self.state.partial_hash(remote.path) != remote.expected_hash:
            part.unlink(missing_ok=True)  # a leftover of another version of the file
        self.state.start_partial(remote)
        fetched = hashed = resumed_from = 0
        for attempt in (1, 2):
            t = self._transfer(remote, part)
            fetched += t.fetched
            hashed += t.hashed
            resumed_from = resumed_from or t.resumed_from
            digest = str(t.hasher.hexdigest())
            if digest == remote.expected_hash:
                break
            part.unlink(missing_ok=True)
            if attempt == 2:
                raise NetworkError(
                    f"{remote.path}: the downloaded bytes do not match the Hub's {remote.algorithm} "
                    f"(expected {remote.expected_hash[:16]}…, got {digest[:16]}…), twice",
                    "the file may be changing on the Hub (pin --revision) or something corrupts the transfer; "
                    "re-run to try again",
                )
            self.reporter.warn(f"{remote.path}: hash mismatch after download — retrying from scratch")
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, local)
        except OSError as exc:
            raise _output_error(local, exc) from None
        self.state.record(remote, local, self.plan.commit)
        return fetched, hashed, resumed_from

    def _transfer(self, remote: RemoteFile, part: Path) -> _Transfer:
        """Bring ``part`` to ``remote.size`` bytes, continuing what is there, hashing as the bytes arrive."""
        t = self._open_partial(remote, part)
        t.task = self.reporter.task(PurePosixPath(remote.path).name, total=remote.size, unit="bytes")
        t.task.update(completed=t.offset)
        try:
            self._get_with_retries(t)
        finally:
            t.task.close()
        return t

    def _open_partial(self, remote: RemoteFile, part: Path) -> _Transfer:
        """The transfer continuing ``part``: its bytes hashed back once when they fit, else an empty file."""
        t = _Transfer(remote, part, hasher=remote.hasher())
        try:
            part.parent.mkdir(parents=True, exist_ok=True)
            existing = part.stat().st_size if part.is_file() else 0
            if 0 < existing <= remote.size:
                _hash_into(
                    t.hasher, part, self.cancel, existing
                )  # the prefix's hash state: read it back once
                t.offset = t.hashed = existing
            else:
                part.write_bytes(b"")
        except OSError as exc:
            raise _output_error(part, exc) from None
        return t

    def _get_with_retries(self, t: _Transfer) -> None:
        """GETs until ``t`` holds the whole file; a try that brought bytes resets the count of failures."""
        remote = t.remote
        url = hf_hub_url(self.plan.repo_id, remote.path, repo_type=REPO_TYPE, revision=self.plan.commit)
        headers = build_hf_headers(token=self.token)
        headers["Accept-Encoding"] = "identity"  # bytes as stored: what the hash and Range offsets refer to
        failures = 0
        while t.offset < remote.size:
            before = t.fetched
            try:
                self._get(url, headers, t)
            except _Retryable as exc:
                failures = 0 if t.fetched > before else failures + 1
                if failures >= self.policy.tries:
                    raise NetworkError(
                        f"{remote.path}: {exc} {_tries(failures)}",
                        _endpoint_hint() + "; re-run to resume from the partial file",
                    ) from None
                time.sleep(self.policy.delay(max(failures, 1), exc.retry_after))

    def _advance(self, t: _Transfer, n: int) -> None:
        if n:
            t.task.advance(n)
            if self.total is not None:
                self.total.advance(n)

    def _get(self, url: str, headers: dict[str, str], t: _Transfer) -> None:
        """One GET from ``t.offset`` to the end (or until the connection drops), appending to the partial file."""
        req_headers = dict(headers)
        if t.offset:
            req_headers["Range"] = f"bytes={t.offset}-"
        try:
            with get_session().stream("GET", url, headers=req_headers, timeout=_TIMEOUT) as resp:
                _check_answer(resp, url, t)
                self._append_body(resp, t)
        except (httpx2.TransportError, httpx2.StreamError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        except OfflineModeIsEnabled:
            raise _offline_error() from None
        except OSError as exc:
            raise _output_error(t.part, exc) from None
        if t.offset < t.remote.size:
            raise _Retryable(f"connection closed after {t.offset} of {t.remote.size} bytes")

    def _append_body(self, resp: Any, t: _Transfer) -> None:
        """Write and hash each piece of the answer as it arrives (no copying into bigger buffers), from
        ``t.offset``; progress is reported every ``_REPORT_EVERY`` bytes, where a cancel is seen too."""
        with t.part.open("r+b") as f:
            f.seek(t.offset)
            f.truncate()
            unreported = 0
            try:
                for chunk in resp.iter_bytes():
                    f.write(chunk)
                    t.hasher.update(chunk)
                    t.offset += len(chunk)
                    unreported += len(chunk)
                    if unreported >= _REPORT_EVERY:
                        t.fetched += unreported
                        self._advance(t, unreported)
                        unreported = 0
                        if self.cancel.is_set():
                            raise _Cancelled
                        if t.offset > t.remote.size:
                            break  # more than the Hub listed: the hash check rejects it
            finally:
                t.fetched += unreported
                self._advance(t, unreported)


def _hash_into(h: Any, path: Path, cancel: threading.Event, limit: int | None = None) -> None:
    """Feed ``path`` (its first ``limit`` bytes) to the hasher ``h``, stopping when ``cancel`` is set."""
    left = limit
    with path.open("rb") as f:
        while left is None or left > 0:
            if cancel.is_set():
                raise _Cancelled
            block = f.read(_DISK_CHUNK if left is None else min(_DISK_CHUNK, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)


def _check_answer(resp: Any, url: str, t: _Transfer) -> None:
    """Retry on a passing failure, stop on a lasting one, and start over when a resumed GET got the whole
    file (the server ignored Range) or a Range that does not fit."""
    status = resp.status_code
    if status in _RETRY_STATUSES:
        raise _Retryable(f"HTTP {status}", _parse_retry_after(resp.headers.get("retry-after")))
    if status == 416 and t.offset:
        t.restart()  # the partial does not fit the file: start over
        raise _Retryable("HTTP 416 for a resumed download", 0)
    if status >= 400:
        raise NetworkError(
            f"{t.remote.path}: the Hub answered HTTP {status} for {url}",
            "the file may have been removed, or need a token (--token / HF_TOKEN)",
        )
    if t.offset:
        if status == 206 and _range_start(resp.headers.get("content-range")) == t.offset:
            t.resumed_from = t.resumed_from or t.offset
        else:
            t.restart()  # the server ignored Range: take the whole file


def _outdated_reason(remote: RemoteFile, commit: str) -> str:
    return f"changed on the Hub (now {remote.expected_hash[:12]} at {commit[:12]})"


def _action(status: str, reason: str, resumed_from: int) -> FileAction:
    """What was done to a file that was fetched."""
    if status == "outdated":
        return "updated"
    if reason:
        return "refetched"
    return "resumed" if resumed_from else "downloaded"


@dataclass
class _Transfer:
    """One file's download in progress: the partial file's length and the hash of its bytes so far."""

    remote: RemoteFile
    part: Path
    hasher: Any
    offset: int = 0
    fetched: int = 0
    hashed: int = 0
    resumed_from: int = 0
    task: Task = field(default_factory=lambda: NullReporter().task(""))

    def restart(self) -> None:
        self.part.write_bytes(b"")
        self.offset = 0
        self.hasher = self.remote.hasher()
        self.task.update(completed=0)


def _range_start(content_range: str | None) -> int | None:
    # "bytes 100-199/3000000"
    if not content_range or not content_range.startswith("bytes "):
        return None
    try:
        return int(content_range[6:].split("-", 1)[0])
    except ValueError:
        return None


def run_plan(
    plan: DownloadPlan,
    *,
    workers: int = DEFAULT_WORKERS,
    verify: bool = False,
    token: str | None = None,
    reporter: Reporter | None = None,
    policy: RetryPolicy | None = None,
) -> DownloadResult:
    """Carry out ``plan``: fetch what is missing, check what is unverified (all with ``verify``), skip the rest."""
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
    reporter = reporter or NullReporter()
    _check_out(plan.out)
    d = _Downloader(
        plan, token=token, reporter=reporter, policy=policy or RetryPolicy.from_env(), verify=verify
    )
    if d.state.unreadable:
        reporter.warn(f"{d.state.path} is unreadable: every present file will be hashed again")
    start = time.monotonic()
    d.total = reporter.task("total", total=plan.bytes_to_fetch, unit="bytes")
    results: dict[str, FileResult] = {}
    errors: list[tuple[str, CfxError]] = []
    # biggest first: the slowest files start early and small ones fill the gaps
    order = sorted(plan.files, key=lambda p: -p.bytes_to_fetch)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cfx-download")
    futures: dict[Future[FileResult], PlannedFile] = {pool.submit(d.run_file, p): p for p in order}
    try:
        pending = set(futures)
        while pending:
            # a timeout, so the main thread wakes up to run Python's SIGINT handler: a signal delivered to a
            # worker blocked in recv() would otherwise leave Ctrl-C unnoticed until the downloads end
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_EXCEPTION)
            for fut in done:
                path = futures[fut].remote.path
                exc = fut.exception()
                if exc is None:
                    results[path] = fut.result()
                elif isinstance(exc, OutputError):
                    raise exc  # the disk is the problem: every other file would fail too
                elif isinstance(exc, CfxError):
                    errors.append((path, exc))
                elif not isinstance(exc, _Cancelled):
                    raise exc
    except BaseException:
        d.cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        d.total.close()
    pool.shutdown(wait=True)
    if errors:
        _, first = errors[0]
        others = f" (and {len(errors) - 1} more files)" if len(errors) > 1 else ""
        kept = f"{_files(len(results))} complete and kept"
        raise type(first)(f"{first.message}{others}", f"{first.hint} ({kept})" if first.hint else kept)
    seconds = time.monotonic() - start
    ordered = [results[p.remote.path] for p in plan.files]
    return DownloadResult(plan.repo_id, plan.revision, plan.commit, plan.out, seconds, ordered)


def download(
    out: Path | str,
    repo_id: str = DEFAULT_REPO,
    *,
    revision: str | None = None,
    shards: str | Sequence[int] | ShardSet | None = None,
    include: Sequence[str] = (),
    workers: int = DEFAULT_WORKERS,
    verify: bool = False,
    token: str | None = None,
    reporter: Reporter | None = None,
    policy: RetryPolicy | None = None,
) -> DownloadResult:
    """Download the selected files of ``repo_id`` at ``revision`` into ``out``, verified; see the module doc."""
    plan = plan_download(
        out,
        repo_id,
        revision=revision,
        shards=shards,
        include=include,
        token=token,
        reporter=reporter,
        policy=policy,
    )
    return run_plan(plan, workers=workers, verify=verify, token=token, reporter=reporter, policy=policy)


def iter_plan_lines(plan: DownloadPlan) -> Iterator[tuple[str, int, str]]:
    """(path, size, what will happen) for each planned file, for display."""
    words = {
        "verified": "verified, skip",
        "outdated": "changed on the Hub, fetch the new version",
        "present": "present, will be hashed",
        "stale": "present with the wrong size, re-fetch",
        "partial": "partial, resume",
        "missing": "fetch",
    }
    for p in plan.files:
        what = words[p.status]
        if p.status == "partial":
            what = f"partial ({p.partial_bytes} bytes), resume"
        yield p.remote.path, p.remote.size, what
