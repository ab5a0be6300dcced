"""`cfx download` against the local Hub: real files, real HTTP, cfx run as a subprocess."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    BIG_REPO,
    N_SHARDS,
    N_SHARDS_V1,
    README_V1,
    REPO,
    HubDataset,
    RunCfx,
    hub_env,
    make_shard,
    shard_path,
)

pytestmark = pytest.mark.hub

ALWAYS = {"README.md", "data/metadata/generators.csv"}
ALL_FILES = ALWAYS | {shard_path(i) for i in range(N_SHARDS)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def downloaded(out: Path) -> set[str]:
    """Files under ``out`` outside .cfx, as repo paths."""
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".cfx" not in p.parts}


def assert_identical(
    hub: HubDataset, out: Path, paths: set[str], revision: str = "main", repo: str = REPO
) -> None:
    for path in paths:
        assert sha256(out / path) == sha256(hub.file(path, revision, repo)), path


def ok_json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def resolve_gets(hub: HubDataset, mark: int) -> list[str]:
    return [e.path for e in hub.hub.entries_since(mark, "/resolve/") if e.method == "GET"]


def test_download_all(local_hub: HubDataset, run_cfx: RunCfx, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = ok_json(run_cfx("download", "--out", str(out), "--json"))
    assert downloaded(out) == ALL_FILES  # .gitattributes is never downloaded
    assert_identical(local_hub, out, ALL_FILES)
    assert summary["commit"] == local_hub.commit
    assert summary["files_downloaded"] == len(ALL_FILES)
    assert summary["files_skipped"] == summary["files_refetched"] == summary["hashed_bytes"] == 0
    assert summary["bytes_downloaded"] == sum((out / p).stat().st_size for p in ALL_FILES)
    # verified by LFS sha256 for shards, by git blob id for plain files; nothing left in partial/
    state = json.loads((out / ".cfx" / "download-state.json").read_text())
    assert state["files"][shard_path(0)]["algorithm"] == "sha256"
    assert state["files"][shard_path(0)]["hash"] == sha256(out / shard_path(0))
    assert state["files"]["README.md"]["algorithm"] == "git-blob-sha1"
    assert {r["revision"] for r in state["files"].values()} == {local_hub.commit}
    assert not [p for p in (out / ".cfx" / "partial").rglob("*") if p.is_file()]


def test_download_shards_then_rerun_skips_without_hashing(
    local_hub: HubDataset, run_cfx: RunCfx, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = run_cfx("download", "--out", str(out), "--shards", "0-1,4")
    assert proc.returncode == 0, proc.stderr
    expected = ALWAYS | {shard_path(i) for i in (0, 1, 4)}
    assert downloaded(out) == expected
    assert_identical(local_hub, out, expected)
    assert "downloaded: 5 files" in proc.stdout
    assert proc.stderr == ""  # no terminal: no bars

    state_before = (out / ".cfx" / "download-state.json").read_bytes()
    mark = local_hub.hub.log_mark()
    summary = ok_json(run_cfx("download", "--out", str(out), "--shards", "0-1,4", "--json"))
    assert summary["files_skipped"] == 5
    assert summary["files_downloaded"] == summary["bytes_downloaded"] == 0
    assert summary["hashed_bytes"] == 0  # skipped on the record (size + mtime_ns + hash), nothing read
    assert resolve_gets(local_hub, mark) == []  # and nothing fetched
    assert (out / ".cfx" / "download-state.json").read_bytes() == state_before

    # widening the selection fetches only what is new
    mark = local_hub.hub.log_mark()
    summary = ok_json(run_cfx("download", "--out", str(out), "--shards", "0-2", "--json"))
    assert (summary["files_downloaded"], summary["files_skipped"]) == (1, 4)
    assert resolve_gets(local_hub, mark) == [f"/datasets/{REPO}/resolve/{local_hub.commit}/{shard_path(2)}"]


def test_include_glob(local_hub: HubDataset, run_cfx: RunCfx, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ok_json(run_cfx("download", "--out", str(out), "--include", "data/HFCF_small_[35].parquet", "--json"))
    assert downloaded(out) == ALWAYS | {shard_path(3), shard_path(5)}
    # with --shards, --include adds to the selection
    ok_json(run_cfx("download", "--out", str(out), "--shards", "0", "--include", "*_2.parquet", "--json"))
    assert downloaded(out) == ALWAYS | {shard_path(i) for i in (0, 2, 3, 5)}


def test_present_file_without_record_is_hashed_not_fetched(
    local_hub: HubDataset, run_cfx: RunCfx, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / shard_path(3)).write_bytes(local_hub.file(shard_path(3)).read_bytes())
    mark = local_hub.hub.log_mark()
    summary = ok_json(run_cfx("download", "--out", str(out), "--shards", "3", "--json"))
    files = {f["path"]: f for f in summary["files"]}
    assert files[shard_path(3)]["action"] == "skipped"
    assert files[shard_path(3)]["hashed_bytes"] == (out / shard_path(3)).stat().st_size
    assert shard_path(3) not in " ".join(resolve_gets(local_hub, mark))


def flip_byte(path: Path, offset: int = 1000, keep_mtime: bool = False) -> None:
    st = path.stat()
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_corrupted_file_is_refetched(local_hub: HubDataset, run_cfx: RunCfx, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ok_json(run_cfx("download", "--out", str(out), "--shards", "0,1", "--json"))
    shard = out / shard_path(0)

    # same size, new mtime: the record no longer vouches for it, so it is hashed, found bad and re-fetched
    flip_byte(shard)
    proc = run_cfx("download", "--out", str(out), "--shards", "0,1", "--json")
    summary = ok_json(proc)
    assert summary["files_refetched"] == 1
    assert f"{shard_path(0)}: local copy does not match the Hub's sha256 — re-fetching it" in proc.stderr
    assert sha256(shard) == sha256(local_hub.file(shard_path(0)))

    # a change that keeps size and mtime slips past the record; --verify re-hashes everything
    flip_byte(shard, keep_mtime=True)
    assert ok_json(run_cfx("download", "--out", str(out), "--shards", "0,1", "--json"))["files_skipped"] == 4
    summary = ok_json(run_cfx("download", "--out", str(out), "--shards", "0,1", "--verify", "--json"))
    assert summary["files_refetched"] == 1
    assert summary["files_skipped"] == 3
    assert summary["hashed_bytes"] >= sum((out / p).stat().st_size for p in (shard_path(0), shard_path(1)))
    assert sha256(shard) == sha256(local_hub.file(shard_path(0)))

    # a file of the wrong size is re-fetched without hashing it
    with (out / shard_path(1)).open("ab") as f:
        f.write(b"extra")
    proc = run_cfx("download", "--out", str(out), "--shards", "0,1", "--json")
    assert ok_json(proc)["files_refetched"] == 1
    assert "the Hub's has" in proc.stderr
    assert_identical(local_hub, out, {shard_path(0), shard_path(1)})


def test_revision_tag_and_commit(local_hub: HubDataset, run_cfx: RunCfx, tmp_path: Path) -> None:
    v1 = {shard_path(i) for i in range(N_SHARDS_V1)} | ALWAYS
    for rev in ("v1.0", local_hub.v1_commit):
        out = tmp_path / rev
        summary = ok_json(run_cfx("download", "--out", str(out), "--revision", rev, "--json"))
        assert summary["commit"] == local_hub.v1_commit
        assert downloaded(out) == v1
        assert (out / "README.md").read_bytes() == README_V1
        assert_identical(local_hub, out, v1, revision=local_hub.v1_commit)


def test_new_commit_updates_changed_files_only(
    local_hub: HubDataset, run_cfx: RunCfx, tmp_path: Path
) -> None:
    hub, repo = local_hub.hub, "cfx-tests/moving"
    files = {"README.md": b"v1\n", shard_path(0): make_shard(0, rows=4), shard_path(1): make_shard(1, rows=4)}
    hub.create_repo(repo, files)
    out = tmp_path / "out"
    ok_json(run_cfx("download", repo, "--out", str(out), "--json"))

    new = hub.commit_files(repo, {shard_path(1): make_shard(11, rows=4)}, message="Replace shard 1")
    plan = ok_json(run_cfx("download", repo, "--out", str(out), "--dry-run", "--json"))
    assert {f["path"]: f["status"] for f in plan["files"]}[shard_path(1)] == "outdated"
    mark = hub.log_mark()
    proc = run_cfx("download", repo, "--out", str(out), "--json")
    summary = ok_json(proc)
    assert summary["commit"] == new
    actions = {f["path"]: f["action"] for f in summary["files"]}
    assert actions == {"README.md": "skipped", shard_path(0): "skipped", shard_path(1): "updated"}
    assert summary["hashed_bytes"] == 0  # the old copy is known to be the old version: no need to read it
    assert f"{shard_path(1)}: changed on the Hub" in proc.stderr
    assert resolve_gets(local_hub, mark) == [f"/datasets/{repo}/resolve/{new}/{shard_path(1)}"]
    assert_identical(local_hub, out, set(files), repo=repo)


def test_dry_run(local_hub: HubDataset, run_cfx: RunCfx, tmp_path: Path) -> None:
    out = tmp_path / "out"
    mark = local_hub.hub.log_mark()
    proc = run_cfx("download", "--out", str(out), "--shards", "0,2", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert resolve_gets(local_hub, mark) == []
    assert not (out / "data").exists()
    lines = proc.stdout.splitlines()
    assert lines[0] == f"Plan: {REPO}@{local_hub.commit[:12]} -> {out}"
    assert [line.split()[0] for line in lines[1:-1]] == [
        "README.md",
        shard_path(0),
        shard_path(2),
        "data/metadata/generators.csv",
    ]
    assert all(line.endswith("fetch") for line in lines[1:-1])
    assert lines[-1].startswith("4 files, ") and "to fetch: 4 files" in lines[-1]
    assert lines[-1].endswith("(dry run: nothing downloaded)")

    ok_json(run_cfx("download", "--out", str(out), "--shards", "0", "--json"))
    plan = ok_json(run_cfx("download", "--out", str(out), "--shards", "0,2", "--dry-run", "--json"))
    status = {f["path"]: f["status"] for f in plan["files"]}
    assert status == {
        "README.md": "verified",
        shard_path(0): "verified",
        shard_path(2): "missing",
        "data/metadata/generators.csv": "verified",
    }
    assert plan["files_to_fetch"] == 1
    assert plan["bytes_to_fetch"] == local_hub.file(shard_path(2)).stat().st_size


# -- errors: one line, documented exit code, no traceback, nothing written ----------------------------


def assert_error(
    proc: subprocess.CompletedProcess[str], code: int, *fragments: str, warnings: int = 0
) -> None:
    """Exit ``code``, nothing on stdout, ``warnings`` warning lines then one ``Error: ...`` line on stderr."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == warnings + 1 and proc.stderr.endswith("\n"), proc.stderr
    assert all(line.startswith("Warning: ") for line in lines[:-1]), proc.stderr
    assert lines[-1].startswith("Error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[-1]


def test_bad_shard_spec(run_cfx: RunCfx, tmp_path: Path) -> None:
    proc = run_cfx("download", "--out", str(tmp_path / "o"), "--shards", "9-3")
    assert proc.stderr == (
        "Error: --shards: '9-3' is not a valid range — write START-END with START <= END, e.g. 0-9,93\n"
    )
    assert_error(proc, 2)
    assert_error(run_cfx("download", "--out", str(tmp_path / "o"), "--shards", "1,x"), 2, "'x'")
    proc = run_cfx("download", "--out", str(tmp_path / "o"), "--shards", "4-7")
    assert_error(proc, 2, "shards 6-7 not in", "this revision has shards 0-5")
    assert not (tmp_path / "o").exists()


def test_unknown_repo_and_revision(run_cfx: RunCfx, tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert_error(
        run_cfx("download", "OwensLab/NoSuchRepo", "--out", str(out)), 4, "'OwensLab/NoSuchRepo' not found"
    )
    proc = run_cfx("download", "--out", str(out), "--revision", "no-such-branch")
    assert_error(proc, 4, "revision 'no-such-branch' not found", "main, v1.0")
    assert_error(run_cfx("download", "not a repo", "--out", str(out)), 2, "not a valid repo id")
    assert not out.exists()


def test_no_network(run_cfx: RunCfx, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    t0 = time.monotonic()
    proc = run_cfx("download", "--out", str(tmp_path / "o"), endpoint=closed)
    assert_error(proc, 4, "cannot reach the Hub", f"HF_ENDPOINT={closed}", "HF_HUB_OFFLINE")
    assert time.monotonic() - t0 < 20
    proc = run_cfx("download", "--out", str(tmp_path / "o"), env={"HF_HUB_OFFLINE": "1"})
    assert_error(proc, 4, "HF_HUB_OFFLINE is set")
    assert not (tmp_path / "o").exists()


def test_out_not_writable(run_cfx: RunCfx, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_error(run_cfx("download", "--out", str(afile), "--shards", "0"), 7, "is not a folder")
    assert_error(
        run_cfx("download", "--out", str(afile / "sub"), "--shards", "0"), 7, "cannot write to --out"
    )
    assert afile.read_text() == "x"


# -- interruption and flaky networks -----------------------------------------------------------------


def start_slow_download(local_hub: HubDataset, out: Path, home: Path) -> subprocess.Popen[str]:
    """Start downloading the big shard from the throttled server; return once its partial file has > 2 MB."""
    part = out / ".cfx" / "partial" / (local_hub.big_path + ".part")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfx", "download", BIG_REPO, "--out", str(out), "--shards", "0"],
        env=hub_env(local_hub.hub.slow_endpoint, home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size > 2_000_000):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no partial file appeared: {proc.communicate()}")
        assert not (out / local_hub.big_path).exists()
        time.sleep(0.02)
    return proc


def test_kill_mid_file_then_resume(local_hub: HubDataset, tmp_path: Path, run_cfx: RunCfx) -> None:
    out = tmp_path / "out"
    path = local_hub.big_path
    final = out / path
    part = out / ".cfx" / "partial" / (path + ".part")
    size = local_hub.file(path, repo=BIG_REPO).stat().st_size
    proc = start_slow_download(local_hub, out, tmp_path / "home")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert not final.exists()  # never under the final name before it is complete and verified
    kept = part.stat().st_size
    assert 0 < kept < size
    # nginx logs the aborted request when it notices the closed connection: wait for that line first
    deadline = time.monotonic() + 20
    big_url = f"/datasets/{BIG_REPO}/resolve/"  # the main repo has a file at the same path
    while not [
        e
        for e in local_hub.hub.entries_since(0, big_url)
        if e.path.endswith(path) and e.method == "GET" and e.range == "-"
    ]:
        assert time.monotonic() < deadline, "nginx never logged the killed download"
        time.sleep(0.05)

    mark = local_hub.hub.log_mark()
    summary = ok_json(run_cfx("download", BIG_REPO, "--out", str(out), "--shards", "0", "--json"))
    result = {f["path"]: f for f in summary["files"]}[path]
    assert result["action"] == "resumed"
    assert result["resumed_from"] == kept
    assert result["bytes_fetched"] == size - kept
    assert result["hashed_bytes"] == kept  # the partial prefix, read back once for the hash state
    gets = [
        e for e in local_hub.hub.entries_since(mark, big_url) if e.path.endswith(path) and e.method == "GET"
    ]
    assert [(e.status, e.range, e.body_bytes_sent) for e in gets] == [(206, f"bytes={kept}-", size - kept)]
    assert sha256(final) == sha256(local_hub.file(path, repo=BIG_REPO))
    assert not part.exists()


def test_ctrl_c_stops_promptly_and_keeps_the_partial(local_hub: HubDataset, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = start_slow_download(local_hub, out, tmp_path / "home")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 130, stderr
    assert (stdout, stderr) == ("", "Interrupted.\n")
    assert not (out / local_hub.big_path).exists()
    assert (out / ".cfx" / "partial" / (local_hub.big_path + ".part")).stat().st_size > 2_000_000
    plan = json.loads((out / ".cfx" / "download-state.json").read_text())
    assert local_hub.big_path in plan["partials"]


class FlakyProxy:
    """A loopback HTTP proxy to the local Hub that misbehaves on command, per request path.

    ``plan[path_suffix]`` is a list of faults used one per GET: "503" (with Retry-After: 0), "429-1" (429 with
    Retry-After: 1), "drop" (send half the body, then close), "corrupt" (flip a byte); "ok" passes through.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.plan: dict[str, list[str]] = {}
        self.seen: list[tuple[str, str, str, float]] = []  # (path, Range header, fault, time)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._forward(head=True)

            def do_GET(self) -> None:
                self._forward(head=False)

            def _forward(self, head: bool) -> None:
                fault = "ok"
                for suffix, faults in proxy.plan.items():
                    if self.path.endswith(suffix) and faults and not head:
                        fault = faults.pop(0)
                proxy.seen.append((self.path, self.headers.get("Range", ""), fault, time.monotonic()))
                if fault in ("503", "429-1"):
                    body = b'{"error":"busy"}'
                    self.send_response(503 if fault == "503" else 429)
                    self.send_header("Retry-After", "0" if fault == "503" else "1")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("range", "authorization")}
                req = urllib.request.Request(proxy.upstream + self.path, headers=headers, method=self.command)
                try:
                    resp = urllib.request.urlopen(req, timeout=30)
                except urllib.error.HTTPError as exc:
                    resp = exc
                with resp:
                    body = resp.read()
                    status = resp.status if hasattr(resp, "status") else resp.code
                    self.send_response(status)
                    for k, v in resp.headers.items():
                        if k.lower() in (
                            "content-type",
                            "content-range",
                            "etag",
                            "x-repo-commit",
                            "x-error-code",
                        ):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if head:
                        return
                    if fault == "drop":
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    if fault == "corrupt":
                        body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
                    self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def gets(self, suffix: str) -> list[tuple[str, str]]:
        return [(rng, fault) for path, rng, fault, _ in self.seen if path.endswith(suffix)]


@pytest.fixture
def flaky(local_hub: HubDataset) -> Iterator[FlakyProxy]:
    with FlakyProxy(local_hub.endpoint) as proxy:
        yield proxy


def test_retries_with_backoff_and_resume_within_a_run(
    local_hub: HubDataset, run_cfx: RunCfx, flaky: FlakyProxy, tmp_path: Path
) -> None:
    s0, s1 = shard_path(0), shard_path(1)
    flaky.plan = {s0: ["503", "drop"], s1: ["429-1"]}
    out = tmp_path / "out"
    summary = ok_json(
        run_cfx("download", "--out", str(out), "--shards", "0,1", "--json", endpoint=flaky.endpoint)
    )
    assert_identical(local_hub, out, {s0, s1})
    assert summary["files_downloaded"] == 4
    # 503 -> retried; dropped connection -> resumed with a Range request for the rest
    half = local_hub.file(s0).stat().st_size // 2
    assert flaky.gets(s0) == [("", "503"), ("", "drop"), (f"bytes={half}-", "ok")]
    # 429 with Retry-After: 1 -> waited at least a second
    times = [t for path, _, _, t in flaky.seen if path.endswith(s1)]
    assert [f for _, f in flaky.gets(s1)] == ["429-1", "ok"]
    assert times[1] - times[0] >= 1.0


def test_hash_mismatch_retries_once_then_fails(
    local_hub: HubDataset, run_cfx: RunCfx, flaky: FlakyProxy, tmp_path: Path
) -> None:
    s0 = shard_path(0)
    out = tmp_path / "out"
    flaky.plan = {s0: ["corrupt"]}
    proc = run_cfx("download", "--out", str(out), "--shards", "0", "--json", endpoint=flaky.endpoint)
    assert ok_json(proc)["files_downloaded"] == 3
    assert f"{s0}: hash mismatch after download — retrying from scratch" in proc.stderr
    assert_identical(local_hub, out, {s0})

    out2 = tmp_path / "out2"
    flaky.plan = {s0: ["corrupt", "corrupt"]}
    proc = run_cfx("download", "--out", str(out2), "--shards", "0", endpoint=flaky.endpoint)
    assert_error(
        proc, 4, f"{s0}: the downloaded bytes do not match the Hub's sha256", "twice", "re-run", warnings=1
    )
    assert not (out2 / s0).exists()
    assert not (out2 / ".cfx" / "partial" / (s0 + ".part")).exists()
    assert (out2 / "README.md").exists()  # the other files completed
