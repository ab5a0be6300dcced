"""A real Hugging Face Hub on loopback for tests: olah (Hub API over local git repos) behind nginx.

olah serves the repo API (revision, tree, paths-info), HEAD and full GETs from non-bare git repos;
it cannot answer Range requests (it sends the whole file with 200). nginx sits in front: a request to
``/datasets/<org>/<repo>/resolve/<rev>/<path>`` that carries a ``Range`` header is served by nginx itself
(206) from a per-commit snapshot folder, everything else is proxied to olah. A second nginx server, on
``slow_endpoint``, does the same with a throttled rate so a test can interrupt a download midway.

``files_from_nginx=True`` makes nginx answer every resolve GET/HEAD from disk (like the Hub's CDN), with the
Hub's ETag / X-Repo-Commit headers from generated maps; olah then serves only the API (used by the benchmark).

olah 0.5.4 as seen here (local mirror, offline):
- revision/tree/resolve accept a branch, a tag or a full commit sha; ``GET /api/datasets/<repo>`` without a
  revision answers 401, so nginx rewrites it to ``.../revision/main`` (HfFileSystem and ``repo_info()`` need it).
- unknown repo and unknown revision both answer 401 ``{"error":"Repository not found"}``; ``/refs`` answers
  only for existing repos (404 otherwise), which tells the two apart.
- HEAD: ``etag`` unquoted, the LFS sha256 (olah reads and hashes the whole object on every HEAD) or the git
  blob id; ``x-repo-commit`` set; no ``x-linked-etag`` / ``x-linked-size``. GET of a missing file: 500.
- tree listing: 307 to a trailing-slash URL; LFS entries carry ``lfs: {oid, size, pointerSize}``.
- GET bodies are streamed in 4 KB chunks (tens of MB/s), chunked: nginx's ``$body_bytes_sent`` counts the framing.
- metadata-cache-ttl is set to 0 so commits made while it runs are seen at once.

See /work/shared/reference/local-hub.md. Used by tests/conftest.py and bench/bench_download.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_REPO = "OwensLab/CommunityForensics-Small"

# What a file in a commit can be given as: its bytes, or a local file to copy.
FileContent = bytes | Path


class HubUnavailable(RuntimeError):
    """A program the local Hub needs is missing or did not start."""


@dataclass(frozen=True)
class LogEntry:
    status: int
    body_bytes_sent: int
    method: str
    path: str
    range: str  # the request's Range header, "-" if none


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _find_program(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    for candidate in (shutil.which(name), f"/usr/sbin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def missing_programs() -> list[str]:
    """Names of the programs the local Hub needs that are not installed (empty: it can run)."""
    missing = [p for p in ("olah-cli", "nginx", "git") if _find_program(p) is None]
    git = _find_program("git")
    if git is not None and subprocess.run([git, "lfs", "version"], capture_output=True).returncode != 0:
        missing.append("git-lfs")
    return missing


_GIT_ENV = {
    "GIT_AUTHOR_NAME": "cfx tests",
    "GIT_AUTHOR_EMAIL": "tests@cfx.invalid",
    "GIT_COMMITTER_NAME": "cfx tests",
    "GIT_COMMITTER_EMAIL": "tests@cfx.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


class LocalHub:
    """olah + nginx serving git repos under a temporary folder. Use as a context manager.

    >>> with LocalHub() as hub:
    ...     sha = hub.create_repo("org/name", {"README.md": b"hi", "data/x.parquet": Path("x.parquet")})
    ...     env = {"HF_ENDPOINT": hub.endpoint}
    """

    def __init__(
        self, root: Path | None = None, *, throttle: str = "4m", files_from_nginx: bool = False
    ) -> None:
        """``files_from_nginx``: nginx answers every resolve GET/HEAD itself (like the Hub's CDN), with the
        Hub's ``ETag`` and ``X-Repo-Commit`` headers; olah then only serves the API. Default: only Range
        requests bypass olah."""
        self._own_root = root is None
        self.files_from_nginx = files_from_nginx
        # resolve URL -> (etag, commit), for nginx to answer HEAD/GET like the Hub
        self._heads: dict[str, tuple[str, str]] = {}
        self._etags: dict[tuple[str, str, str], dict[str, str]] = {}
        self.root = Path(tempfile.mkdtemp(prefix="cfx-hub-")) if root is None else Path(root)
        self.mirrors = self.root / "mirrors"
        self.snapshots = self.root / "snapshots"
        self.throttle = throttle
        self.olah_port = _free_port()
        self.port = _free_port()
        self.slow_port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.slow_endpoint = f"http://127.0.0.1:{self.slow_port}"
        self.access_log = self.root / "nginx" / "access.log"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._git = _find_program("git") or "git"

    # -- repos ------------------------------------------------------------------------------------

    def repo_dir(self, repo_id: str, repo_type: str = "dataset") -> Path:
        return self.mirrors / f"{repo_type}s" / repo_id

    def _run_git(self, repo: Path, *args: str) -> str:
        proc = subprocess.run(
            [self._git, *args],
            cwd=repo,
            env={**os.environ, **_GIT_ENV},
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def create_repo(
        self,
        repo_id: str,
        files: Mapping[str, FileContent],
        *,
        repo_type: str = "dataset",
        lfs_patterns: tuple[str, ...] = ("*.parquet",),
    ) -> str:
        """Create a git repo (branch ``main``) with git-lfs for ``lfs_patterns``, commit ``files``; return the sha."""
        repo = self.repo_dir(repo_id, repo_type)
        if repo.exists():
            raise FileExistsError(repo)
        repo.mkdir(parents=True)
        self._run_git(repo, "init", "-q", "-b", "main")
        self._run_git(repo, "lfs", "install", "--local")
        for pattern in lfs_patterns:
            self._run_git(repo, "lfs", "track", pattern)
        return self.commit_files(repo_id, files, message="Initial commit", repo_type=repo_type)

    def commit_files(
        self,
        repo_id: str,
        files: Mapping[str, FileContent],
        *,
        delete: tuple[str, ...] = (),
        message: str = "Update files",
        repo_type: str = "dataset",
        branch: str = "main",
    ) -> str:
        """Add or replace ``files`` (repo path -> bytes or local file), delete ``delete``; commit; return the sha."""
        repo = self.repo_dir(repo_id, repo_type)
        for rel, content in files.items():
            dest = repo / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            # unlink first: older snapshots hard-link the previous version
            dest.unlink(missing_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, dest)
            else:
                dest.write_bytes(content)
        for rel in delete:
            (repo / rel).unlink()
        self._run_git(repo, "add", "-A")
        self._run_git(repo, "commit", "-q", "--allow-empty", "-m", message)
        sha = self._run_git(repo, "rev-parse", "HEAD")
        self._snapshot(repo_id, repo_type, sha, branch)
        return sha

    def tag(self, repo_id: str, name: str, *, repo_type: str = "dataset") -> None:
        repo = self.repo_dir(repo_id, repo_type)
        self._run_git(repo, "tag", name)
        self._link_rev(repo_id, repo_type, name, self._run_git(repo, "rev-parse", "HEAD"))

    def _snapshot(self, repo_id: str, repo_type: str, sha: str, branch: str) -> None:
        """Hard-link the working tree into snapshots/<type>s/<repo>/<sha>/ so nginx serves any revision."""
        repo = self.repo_dir(repo_id, repo_type)
        snap = self.snapshots / f"{repo_type}s" / repo_id / sha
        for rel in self._run_git(repo, "ls-files", "-z").split("\0"):
            if not rel:
                continue
            dest = snap / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(repo / rel, dest)
            except OSError:
                shutil.copyfile(repo / rel, dest)
        # etags as the Hub gives them: LFS sha256 for LFS files, git blob id otherwise
        lfs = {}
        for line in self._run_git(repo, "lfs", "ls-files", "--long").splitlines():
            oid, _, rel = line.split(" ", 2)
            lfs[rel] = oid
        etags = {}
        for line in self._run_git(repo, "ls-tree", "-r", sha).splitlines():
            meta, rel = line.split("\t", 1)
            etags[rel] = lfs.get(rel, meta.split()[2])
        self._etags[(repo_type, repo_id, sha)] = etags
        self._link_rev(repo_id, repo_type, sha, sha)
        self._link_rev(repo_id, repo_type, branch, sha)

    def _link_rev(self, repo_id: str, repo_type: str, rev: str, sha: str) -> None:
        if rev != sha:
            link = self.snapshots / f"{repo_type}s" / repo_id / rev
            tmp = link.with_name(link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(sha)
            os.replace(tmp, link)
        for rel, etag in self._etags[(repo_type, repo_id, sha)].items():
            self._heads[f"/_snapshots/{repo_type}s/{repo_id}/{rev}/{rel}"] = (etag, sha)
        self._reload()

    def _write_heads_map(self) -> None:
        base = self.root / "nginx"
        base.mkdir(parents=True, exist_ok=True)
        with (base / "etags.map").open("w") as etags, (base / "commits.map").open("w") as commits:
            for uri, (etag, sha) in sorted(self._heads.items()):
                etags.write(f'"{uri}" "\\"{etag}\\"";\n')
                commits.write(f'"{uri}" "{sha}";\n')

    def _reload(self) -> None:
        """Rewrite nginx's header maps; if nginx runs, make it reload them (new commits and tags)."""
        self._write_heads_map()
        proc = self._procs.get("nginx")
        if proc is None or proc.poll() is not None:
            return
        pid_file = self.root / "nginx" / "nginx.pid"
        old_workers = self._nginx_workers()
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        # reloaded once the old workers are gone (they finish their requests first)
        while time.monotonic() < deadline and pid_file.exists() and old_workers & self._nginx_workers():
            time.sleep(0.05)

    def _nginx_workers(self) -> set[int]:
        proc = self._procs.get("nginx")
        if proc is None:
            return set()
        try:
            out = subprocess.run(
                ["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True
            )
        except OSError:
            return set()
        return {int(x) for x in out.stdout.split()}

    def local_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "dataset") -> Path:
        """Where the hub keeps ``path`` at ``revision`` (to compare downloads with)."""
        return self.snapshots / f"{repo_type}s" / repo_id / revision / path

    # -- servers ----------------------------------------------------------------------------------

    def _write_olah_config(self) -> Path:
        repos = self.root / "olah-repos"
        repos.mkdir(parents=True, exist_ok=True)
        self.mirrors.mkdir(parents=True, exist_ok=True)
        netloc = f"127.0.0.1:{self.olah_port}"
        config = self.root / "olah.toml"
        config.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.olah_port}\n"
            'mirror-scheme = "http"\n'
            f'mirror-netloc = "{netloc}"\n'
            f'mirror-lfs-netloc = "{netloc}"\n'
            f'repos-path = "{repos}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            "metadata-cache-ttl = 0\n"
            "\n[accessibility]\n"
            "offline = true\n"
        )
        return config

    def _write_nginx_config(self) -> Path:
        base = self.root / "nginx"
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (base / "temp" / sub).mkdir(parents=True, exist_ok=True)
        self.snapshots.mkdir(parents=True, exist_ok=True)
        user = "user root;\n" if os.geteuid() == 0 else ""

        every = "rewrite ^ /_snapshots/$rtype/$org/$name/$rev/$fpath last;" if self.files_from_nginx else ""

        def server(port: int, extra: str) -> str:
            return f"""
    server {{
        listen 127.0.0.1:{port};
        {extra}
        # Range requests on resolve URLs: nginx answers 206 from the snapshot of that revision.
        location ~ ^/(?<rtype>datasets|models|spaces)/(?<org>[^/]+)/(?<name>[^/]+)/resolve/(?<rev>[^/]+)/(?<fpath>.+)$ {{
            if ($http_range) {{
                rewrite ^ /_snapshots/$rtype/$org/$name/$rev/$fpath last;
            }}
            {every}
            proxy_pass http://olah;
        }}
        # olah has no repo-info route without a revision: answer it with the default branch's.
        location ~ ^/api/(?<itype>datasets|models|spaces)/(?<iorg>[^/]+)/(?<iname>[^/]+)$ {{
            rewrite ^ /api/$itype/$iorg/$iname/revision/main break;
            proxy_pass http://olah;
        }}
        location /_snapshots/ {{
            internal;
            alias {self.snapshots}/;
            etag off;
            add_header ETag $hub_etag always;
            add_header X-Repo-Commit $hub_commit always;
            add_header X-Served-By nginx-snapshot always;
        }}
        location / {{
            proxy_pass http://olah;
        }}
    }}
"""

        config = base / "nginx.conf"
        config.write_text(
            f"""{user}daemon off;
worker_processes 2;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format cfx '$status $body_bytes_sent $request "$http_range"';
    access_log {self.access_log} cfx;
    client_body_temp_path {base}/temp/client_body;
    proxy_temp_path {base}/temp/proxy;
    fastcgi_temp_path {base}/temp/fastcgi;
    uwsgi_temp_path {base}/temp/uwsgi;
    scgi_temp_path {base}/temp/scgi;
    sendfile on;
    default_type application/octet-stream;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_buffering off;
    proxy_read_timeout 300s;
    keepalive_timeout 60s;
    map_hash_bucket_size 512;
    map_hash_max_size 65536;
    map $uri $hub_etag {{ include {base}/etags.map; }}
    map $uri $hub_commit {{ include {base}/commits.map; }}
    upstream olah {{
        server 127.0.0.1:{self.olah_port};
        keepalive 16;
    }}
{server(self.port, "")}
{server(self.slow_port, f"limit_rate {self.throttle}; proxy_buffering on;  # limit_rate needs buffering")}
}}
"""
        )
        return config

    def start(self) -> LocalHub:
        missing = missing_programs()
        if missing:
            raise HubUnavailable(f"local Hub needs {', '.join(missing)} (not found)")
        olah_config = self._write_olah_config()
        nginx_config = self._write_nginx_config()
        self._write_heads_map()
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        olah_cli = _find_program("olah-cli")
        nginx = _find_program("nginx")
        assert olah_cli is not None and nginx is not None
        self._procs["olah"] = subprocess.Popen(
            [olah_cli, "-c", str(olah_config)],
            cwd=self.root,
            stdout=open(logs / "olah.out", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "0"},
            start_new_session=True,
        )
        self._procs["nginx"] = subprocess.Popen(
            [nginx, "-p", str(self.root / "nginx"), "-c", str(nginx_config)],
            cwd=self.root,
            stdout=open(logs / "nginx.out", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        # Any repo works for the probe; olah answers 4xx for unknown ones once it is up.
        url = f"{self.endpoint}/api/datasets/{DEFAULT_REPO}/revision/main"
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    out = (self.root / "logs" / f"{name}.out").read_text(errors="replace")[-2000:]
                    raise HubUnavailable(f"{name} exited with code {proc.returncode}: {out}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    resp.read()
                    return
            except urllib.error.HTTPError as exc:
                if exc.code not in (502, 503, 504):
                    return  # olah answered (e.g. 404: no such repo yet)
                last = f"HTTP {exc.code}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise HubUnavailable(f"local Hub did not answer {url} within {timeout:.0f}s ({last})")

    def stop(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                # nginx: SIGQUIT is a graceful stop, SIGTERM a fast one; olah: SIGTERM
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()

    def close(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- access log -------------------------------------------------------------------------------

    _LOG_LINE = re.compile(r'^(\d{3}) (\d+) (\S+) (\S+) \S+ "(.*)"$')

    def log_entries(self, path_substring: str = "") -> list[LogEntry]:
        """Requests nginx answered (both servers), oldest first, whose path contains ``path_substring``."""
        if not self.access_log.exists():
            return []
        entries = []
        for line in self.access_log.read_text(errors="replace").splitlines():
            m = self._LOG_LINE.match(line)
            if m and path_substring in m.group(4):
                entries.append(LogEntry(int(m.group(1)), int(m.group(2)), m.group(3), m.group(4), m.group(5)))
        return entries

    def bytes_sent(self, path_substring: str = "") -> int:
        """Body bytes nginx sent for requests whose path contains ``path_substring``."""
        return sum(e.body_bytes_sent for e in self.log_entries(path_substring))

    def log_mark(self) -> int:
        """How many log lines there are now; pass to ``entries_since`` to see only later requests."""
        return len(self.log_entries())

    def entries_since(self, mark: int, path_substring: str = "") -> list[LogEntry]:
        return [e for e in self.log_entries()[mark:] if path_substring in e.path]
