"""The output layer (cfx/outputs.py; issue 11 items 1, 2, 3, 4, 5, 8, 16): outputs never clobber inputs, special
files are written through, folders appear whole, one writer at a time, every OSError is exit 7, plain modes.

Real files, FIFOs, devices, processes and signals. /dev/null is only ever written *through* (its node is
checked before and after); /dev/stdout is never used (it is a symlink into /proc, replaced by a regular file
if anything goes wrong). Read-only and full file systems are real tmpfs mounts inside a private mount
namespace (`unshare -m`, root only; skipped otherwise); permission errors as root drop the capabilities that
ignore file modes (setpriv).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfx.errors import OutputError, UsageError
from cfx.outputs import (
    WRITER_TAG,
    atomic_folder,
    clean_stale,
    lock_path,
    output_lock,
    refuse_outputs_on_inputs,
    write_atomic,
)
from tests.conftest import ROOT, Run

RunCfx = Callable[..., Run]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CF-shaped dataset with duplicates; tests that may write copy it first or check its hashes."""
    from cfx.synth import make_dataset

    root = tmp_path_factory.mktemp("small") / "ds"
    make_dataset(root, shards=2, rows_per_shard=20, seed=0, scale=0.25)
    return root


@pytest.fixture
def ds(small: Path, tmp_path: Path) -> Path:
    """A private copy of ``small`` (a failing refusal must not damage the shared one)."""
    return Path(shutil.copytree(small, tmp_path / "ds"))


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _tmp_leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]


# --- 1. an output never is, or writes into, an input -----------------------------------------------------
def test_licenses_output_onto_source_shard_is_refused(ds: Path, cfx: RunCfx) -> None:
    before = _hashes(ds)
    shard = ds / "data" / "HFCF_small_0.parquet"
    r = cfx("licenses", str(ds), "-o", str(shard))
    assert r.returncode == 2, r.stderr
    assert f"-o {shard} is the input" in r.stderr and str(shard) in r.stderr.split("is the input")[1]
    assert "Traceback" not in r.stderr and _hashes(ds) == before


def test_stats_plot_onto_source_shard_is_refused(ds: Path, cfx: RunCfx) -> None:
    before = _hashes(ds)
    r = cfx("stats", str(ds), "--plot", str(ds / "data" / "HFCF_small_1.parquet"))
    assert r.returncode == 2 and "--plot" in r.stderr and "is the input" in r.stderr, r.stderr
    assert _hashes(ds) == before


def test_dedupe_report_onto_source_folder_is_refused_even_with_overwrite(ds: Path, cfx: RunCfx) -> None:
    before = _hashes(ds)
    for extra in ([], ["--overwrite"]):
        r = cfx("dedupe", str(ds), "--report", str(ds / "data"), *extra)
        assert r.returncode == 2 and "--report" in r.stderr and "contains the input" in r.stderr, r.stderr
        r = cfx("dedupe", str(ds), "--gallery", str(ds), *extra)
        assert r.returncode == 2 and f"--gallery {ds} is the input {ds}" in r.stderr, r.stderr
    assert _hashes(ds) == before and not _tmp_leftovers(ds.parent)


def _hostile_runs(ds: Path, manifest: Path) -> list[list[str]]:
    """Every command with an output, aimed at what it reads (shard, folder, manifest, link), with --overwrite
    where the command has it."""
    shard = str(ds / "data" / "HFCF_small_0.parquet")
    table = str(ds / "data" / "metadata" / "generators.csv")
    runs = []
    for src in (str(ds), str(manifest)):
        runs += [
            ["index", str(ds), "-o", shard],
            ["slice", src, "--head", "1", "-o", shard],
            ["slice", src, "--format", "csv", "-o", shard],
            ["licenses", src, "-o", table],
            ["licenses", src, "--license-table", table, "-o", table],
            ["balance", src, "-o", shard],
            ["stats", src, "--plot", shard],
            ["dedupe", src, "-o", shard, "--report", str(ds / "data"), "--overwrite"],
            ["dedupe", src, "--gallery", str(ds / "data" / "metadata"), "--overwrite"],
            ["subset", src, "--out", str(ds), "--overwrite"],
            ["subset", src, "--out", str(ds / "data"), "--overwrite"],
            ["inspect", src, "-o", shard],
            ["export", src, "--format", "imagefolder", "--out", str(ds / "data"), "--overwrite"],
            ["split", src, "-o", shard],
            ["split", src, "--out", str(ds / "data"), "--overwrite"],
            ["leaks", src, src, "--report", str(ds / "data"), "--overwrite"],
            ["leaks", str(manifest), src, "--gallery", str(ds), "--overwrite"],
        ]
    runs += [  # the manifest itself is an input when it is SOURCE
        ["slice", str(manifest), "--format", "csv", "-o", str(manifest)],
        ["stats", str(manifest), "--plot", str(manifest)],
        ["balance", str(manifest), "-o", str(manifest)],
        ["subset", str(manifest), "--out", str(manifest), "--overwrite"],
    ]
    return runs


@pytest.mark.slow
def test_no_command_changes_a_byte_of_its_inputs(ds: Path, tmp_path: Path, cfx: RunCfx) -> None:
    manifest = tmp_path / "m.parquet"
    assert cfx("index", str(ds), "-o", str(manifest)).returncode == 0
    (tmp_path / "link").symlink_to(ds)

    def digest() -> dict[str, str]:
        return {**_hashes(ds), "manifest": hashlib.sha256(manifest.read_bytes()).hexdigest()}

    before = digest()
    via_link = _hostile_runs(tmp_path / "link", manifest)[:17:3]  # the same folder under another name
    for args in _hostile_runs(ds, manifest) + via_link:
        r = cfx(*args)
        assert r.returncode == 2 and "the input" in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert digest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "link", "m.parquet"]


# The property behind every refusal above: whatever a command is given, its inputs keep every byte.
_COMMANDS = {
    "index": [],
    "stats": ["--by", "format"],
    "slice": ["--head", "3"],
    "licenses": [],
    "balance": [],
    "audit": ["--no-joint"],
    "inspect": [],
    "dedupe": [],
    "split": [],
    "subset": ["--transform", "jpeg:50"],
    "export": ["--format", "cnndetection"],
    "leaks": [],
}
_OUTPUT_OPTIONS = {
    "index": ["-o"],
    "stats": ["--plot"],
    "slice": ["-o"],
    "licenses": ["-o"],
    "balance": ["-o"],
    "audit": [],
    "inspect": ["-o"],
    "dedupe": ["-o", "--report", "--gallery"],
    "split": ["-o", "--out"],
    "subset": ["--out"],
    "export": ["--out"],
    "leaks": ["--report", "--gallery"],
}
_HOSTILE_VALUES = [
    ["--where", "label = 'x' OR"],
    ["--generators", ""],
    ["--workers", "0"],
    ["--seed", "-1"],
    ["--skip-bad"],
    ["--overwrite"],
    ["--license-table", "{shard}"],
    ["--threshold", "999"],
]


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_no_command_changes_a_byte_of_its_inputs(
    small: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Hypothesis draws a command, an output aimed at one of its inputs (or at a fresh path) and hostile
    options; after the run every input file (shards, metadata, the manifest) has the sha256 it had."""
    work = tmp_path_factory.mktemp("prop")
    ds = Path(shutil.copytree(small, work / "ds"))
    manifest = work / "m.parquet"
    r = subprocess.run([sys.executable, "-m", "cfx", "index", str(ds), "-o", str(manifest)], env=_env())
    assert r.returncode == 0
    shard = ds / "data" / "HFCF_small_0.parquet"
    targets = [shard, ds, ds / "data", ds / "data" / "metadata", manifest, ds / "data" / "new.parquet"]
    targets.append(work / "fresh")
    command = data.draw(st.sampled_from(sorted(_COMMANDS)))
    source = data.draw(st.sampled_from([str(ds), str(manifest)]))
    args = [command, source] + ([source] if command == "leaks" else []) + _COMMANDS[command]
    for option in data.draw(st.lists(st.sampled_from(_OUTPUT_OPTIONS[command] or ["--json"]), unique=True)):
        args += [option] if option == "--json" else [option, str(data.draw(st.sampled_from(targets)))]
    for extra in data.draw(st.lists(st.sampled_from(_HOSTILE_VALUES), max_size=2)):
        args += [v.format(shard=shard) for v in extra]

    def inputs() -> dict[str, str]:
        """sha256 of every input: the dataset's files (with a folder source, also: no new file in it) and
        the manifest when it is the source."""
        files = _hashes(ds)
        if source == str(manifest):
            files = {k: v for k, v in files.items() if k in before} if before else files
            files["manifest"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
        return files

    before: dict[str, str] = {}

    before = inputs()
    r = subprocess.run([sys.executable, "-m", "cfx", *args], env=_env(), capture_output=True, timeout=300)
    stderr = r.stderr.decode(errors="replace")
    assert "Traceback" not in stderr, (args, stderr)
    assert r.returncode in (0, 2, 3, 5, 6, 7), (args, r.returncode, stderr)
    assert inputs() == before, (args, stderr)


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CFX_DEBUG", None)
    return env


def test_output_file_inside_source_folder_is_refused(ds: Path, cfx: RunCfx) -> None:
    """A new file in the dataset folder would be read as a shard by the next `cfx index`."""
    r = cfx("index", str(ds), "-o", str(ds / "data" / "manifest-copy.parquet"))
    assert r.returncode == 2 and "is inside the input folder" in r.stderr, r.stderr
    assert not (ds / "data" / "manifest-copy.parquet").exists()


def test_manifest_input_and_its_shards_are_protected(ds: Path, tmp_path: Path, cfx: RunCfx) -> None:
    manifest = tmp_path / "m.parquet"
    assert cfx("index", str(ds), "-o", str(manifest)).returncode == 0
    before = {**_hashes(ds), "m": hashlib.sha256(manifest.read_bytes()).hexdigest()}
    r = cfx("slice", str(manifest), "--head", "3", "-o", str(manifest))
    assert r.returncode == 2 and f"-o {manifest} is the input {manifest}" in r.stderr, r.stderr
    shard = ds / "data" / "HFCF_small_1.parquet"
    r = cfx("balance", str(manifest), "-o", str(shard))
    assert r.returncode == 2 and "is the input" in r.stderr, r.stderr
    r = cfx("subset", str(manifest), "--out", str(ds / "data"), "--overwrite")
    assert r.returncode == 2 and "--out" in r.stderr, r.stderr
    r = cfx(
        "licenses", str(manifest), "--license-table", str(tmp_path / "t.csv"), "-o", str(tmp_path / "t.csv")
    )
    assert r.returncode == 2 and "is the input" in r.stderr, r.stderr
    assert {**_hashes(ds), "m": hashlib.sha256(manifest.read_bytes()).hexdigest()} == before


def test_output_through_symlink_or_hard_link_to_input_is_refused(
    ds: Path, tmp_path: Path, cfx: RunCfx
) -> None:
    shard = ds / "data" / "HFCF_small_0.parquet"
    before = _hashes(ds)
    (tmp_path / "soft.parquet").symlink_to(shard)
    os.link(shard, tmp_path / "hard.parquet")  # same inode, another name
    for name in ("soft.parquet", "hard.parquet"):
        r = cfx("slice", str(ds), "--head", "2", "-o", str(tmp_path / name))
        assert r.returncode == 2 and f"is the input {shard}" in r.stderr, (name, r.stderr)
    assert _hashes(ds) == before and (tmp_path / "soft.parquet").is_symlink()


def test_manifest_on_stdin_protects_its_shards(ds: Path, cfx: RunCfx) -> None:
    piped = cfx("index", str(ds)).stdout
    shard = ds / "data" / "HFCF_small_0.parquet"
    before = _hashes(ds)
    r = cfx("dedupe", "-", "-o", str(shard), input=piped)
    assert r.returncode == 2 and "is the input" in r.stderr, r.stderr
    assert _hashes(ds) == before


def test_download_out_may_hold_its_inputs_but_no_output_is_one(tmp_path: Path, cfx: RunCfx) -> None:
    """--out is where a re-run resumes (it holds the files it reads): only an output that *is* an input is
    refused. These are refused before the Hub is contacted (HF_ENDPOINT points nowhere)."""
    table = tmp_path / "cf" / "gens.csv"
    table.parent.mkdir()
    table.write_text("model_name,license\nx,mit\n")
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}
    r = cfx("download", "--out", str(table), "--license-table", str(table), "--dry-run", env=env)
    assert r.returncode == 2 and f"--out {table} is the input {table}" in r.stderr, r.stderr
    r = cfx("download", "--out", str(tmp_path / "o"), "--license-table", str(table), "--subset-out",
            str(table.parent), "--dry-run", env=env)  # fmt: skip
    assert r.returncode == 2 and "--subset-out" in r.stderr and "contains the input" in r.stderr, r.stderr
    r = cfx("download", "--out", str(table.parent), "--license-table", str(table), "--dry-run", env=env)
    assert r.returncode != 2 or "the input" not in r.stderr  # allowed: fails later, at the (absent) Hub
    assert table.read_text() == "model_name,license\nx,mit\n"


def test_outputs_of_one_command_may_not_coincide(ds: Path, tmp_path: Path, cfx: RunCfx) -> None:
    r = cfx("dedupe", str(ds), "--report", str(tmp_path / "r"), "--gallery", str(tmp_path / "r"))
    assert r.returncode == 2 and "--report and --gallery are the same path" in r.stderr, r.stderr


def test_refusal_compares_resolved_paths(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "data")
    with pytest.raises(UsageError, match="is inside the input folder"):
        refuse_outputs_on_inputs({"-o": tmp_path / "alias" / "x.parquet"}, [tmp_path / "data"])
    refuse_outputs_on_inputs({"-o": tmp_path / "datax.parquet", "--plot": None}, [tmp_path / "data"])


# --- 2. special files and symlinks ------------------------------------------------------------------------
def test_output_to_dev_null_keeps_the_device(small: Path, cfx: RunCfx) -> None:
    before = os.stat("/dev/null")
    runs = (
        ["index", str(small), "-o", "/dev/null"],
        ["slice", str(small), "--format", "csv", "-o", "/dev/null"],
        ["stats", str(small), "--plot", "/dev/null"],
    )
    for args in runs:
        r = cfx(*args)
        assert r.returncode == 0, (args, r.stderr)
        after = os.stat("/dev/null")
        assert stat.S_ISCHR(after.st_mode) and (after.st_rdev, after.st_ino) == (
            before.st_rdev,
            before.st_ino,
        )


def _fifo_reader(fifo: Path) -> tuple[threading.Thread, list[bytes]]:
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as fh:
            got.append(fh.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, got


def test_manifest_output_to_fifo_is_streamed(small: Path, tmp_path: Path, cfx: RunCfx) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    thread, got = _fifo_reader(fifo)
    r = cfx("index", str(small), "-o", str(fifo))
    thread.join(30)
    assert r.returncode == 0, r.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still the FIFO, not a regular file
    (tmp_path / "got.parquet").write_bytes(got[0])
    assert pq.read_metadata(tmp_path / "got.parquet").num_rows == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["got.parquet", "pipe"]


def test_text_output_to_fifo_is_streamed(small: Path, tmp_path: Path, cfx: RunCfx) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    thread, got = _fifo_reader(fifo)
    r = cfx("slice", str(small), "--format", "jsonl", "--columns", "shard,row", "-o", str(fifo))
    thread.join(30)
    assert r.returncode == 0 and got[0].count(b"\n") == 40 and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_write_atomic_through_symlink_replaces_the_target_not_the_link(tmp_path: Path) -> None:
    target = tmp_path / "real" / "m.txt"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_atomic(link, lambda p: Path(p).write_text("new"))
    assert link.is_symlink() and os.readlink(link) == str(target) and target.read_text() == "new"
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "real" / "later.txt")
    write_atomic(dangling, lambda p: Path(p).write_text("made"))
    assert dangling.is_symlink() and (tmp_path / "real" / "later.txt").read_text() == "made"
    assert not _tmp_leftovers(tmp_path)


def test_output_onto_a_folder_is_refused(small: Path, tmp_path: Path, cfx: RunCfx) -> None:
    (tmp_path / "adir").mkdir()
    r = cfx("index", str(small), "-o", str(tmp_path / "adir"))
    assert r.returncode == 7 and "is a folder" in r.stderr, r.stderr
    assert list((tmp_path / "adir").iterdir()) == []


def test_output_onto_a_socket_is_refused(tmp_path: Path) -> None:
    import socket

    sock = socket.socket(socket.AF_UNIX)
    path = tmp_path / "s.sock"
    sock.bind(str(path))
    try:
        with pytest.raises(OutputError, match="is a socket"):
            write_atomic(path, lambda p: Path(p).write_text("x"))
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        sock.close()


# --- 16. modes: what a plain open() gives -----------------------------------------------------------------
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_output_mode_follows_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "x.json", lambda p: Path(p).write_text("{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "x.json").st_mode) == mode


def test_replaced_output_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("old")
    path.chmod(0o640)
    write_atomic(path, lambda p: Path(p).write_text("new"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == "new"


def _cfx_with_umask(umask: int, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cfx", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=lambda: os.umask(umask),
        timeout=300,
    )


def test_cli_outputs_get_plain_modes(small: Path, tmp_path: Path) -> None:
    """Manifest, plot, report files and the subset's manifest.parquet: 0666 & ~umask, not mkstemp's 0600."""
    r = _cfx_with_umask(0o022, "index", str(small), "-o", "m.parquet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cfx_with_umask(0o022, "stats", "m.parquet", "--plot", "p.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cfx_with_umask(0o022, "subset", "m.parquet", "--out", "sub", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cfx_with_umask(0o027, "dedupe", "m.parquet", "--report", "rep", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    modes = {
        p: stat.S_IMODE((tmp_path / p).stat().st_mode) for p in ("m.parquet", "p.png", "sub/manifest.parquet")
    }
    assert modes == {"m.parquet": 0o644, "p.png": 0o644, "sub/manifest.parquet": 0o644}
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "rep").iterdir()} == {0o640}


# --- 8. every OSError on output: exit 7, the path named, no temp file -------------------------------------
def test_name_too_long_is_exit_7(small: Path, tmp_path: Path, cfx: RunCfx) -> None:
    long = tmp_path / ("m" * 300 + ".parquet")
    r = cfx("index", str(small), "-o", str(long))
    assert r.returncode == 7 and "File name too long" in r.stderr and "m" * 300 in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not list(tmp_path.iterdir())


def test_write_into_a_full_device_is_exit_7(small: Path, cfx: RunCfx) -> None:
    """/dev/full: every write fails with ENOSPC (a real one). Written through; the device stays."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    r = cfx("index", str(small), "-o", "/dev/full")
    assert r.returncode == 7 and "cannot write /dev/full: No space left on device" in r.stderr, r.stderr
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_path_through_a_file_is_exit_7(small: Path, tmp_path: Path, cfx: RunCfx) -> None:
    (tmp_path / "f").write_text("x")
    r = cfx("index", str(small), "-o", str(tmp_path / "f" / "m.parquet"))
    assert r.returncode == 7 and str(tmp_path / "f" / "m.parquet") in r.stderr, r.stderr


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


_IN_MOUNT = """
set -e
mount -t tmpfs -o size={size} tmpfs "$1"
{prepare}
shift
"$@"
"""


def _run_in_private_mount(mnt: Path, size: str, prepare: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run cfx with a tiny tmpfs at ``mnt`` in a private mount namespace (it vanishes with the process)."""
    script = _IN_MOUNT.format(size=size, prepare=prepare)
    return subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(mnt),
            sys.executable,
            "-m",
            "cfx",
            *args,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


@pytest.mark.skipif(not _can_mount(), reason="needs root and unshare for a private tmpfs mount")
def test_read_only_file_system_is_exit_7(small: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "ro"
    mnt.mkdir()
    prepare = 'mount -o remount,ro "$1"'
    r = _run_in_private_mount(mnt, "1m", prepare, "index", str(small), "-o", str(mnt / "m.parquet"))
    assert r.returncode == 7 and "Read-only file system" in r.stderr and str(mnt / "m.parquet") in r.stderr, (
        r.stderr
    )
    r = _run_in_private_mount(mnt, "1m", prepare, "subset", str(small), "--out", str(mnt / "sub"))
    assert r.returncode == 7 and "Read-only file system" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.skipif(not _can_mount(), reason="needs root and unshare for a private tmpfs mount")
def test_disk_full_during_report_leaves_no_partial_folder(small: Path, tmp_path: Path) -> None:
    """A one-page (4 kB) file system: the report's files do not fit. Nothing of it stays (listed inside the namespace)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    script_args = ("dedupe", str(small), "--report", str(mnt / "rep"), "--json")
    r = _run_in_private_mount(mnt, "4k", "", *script_args)
    assert r.returncode == 7 and "No space left on device" in r.stderr and "Traceback" not in r.stderr, (
        r.stderr
    )
    check = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f'mount -t tmpfs -o size=4k tmpfs "{mnt}" && cd "{mnt}" && '
         f'{sys.executable} -m cfx dedupe {small} --report rep --json >/dev/null 2>&1; ls -A "{mnt}"'],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300,
    )  # fmt: skip
    assert check.stdout.split() == [], check.stdout  # no rep/, no rep.tmp-*, no rep.lock


def test_permission_denied_is_exit_7_naming_the_path(small: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    cmd = [sys.executable, "-m", "cfx", "index", str(small), "-o", str(locked / "m.parquet")]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file modes cannot be enforced")
        drop = "-dac_override,-dac_read_search"
        cmd = ["setpriv", "--inh-caps", drop, "--bounding-set", drop, *cmd]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        locked.chmod(0o755)
    assert r.returncode == 7 and "Permission denied" in r.stderr and str(locked / "m.parquet") in r.stderr
    assert list(locked.iterdir()) == []


def test_failed_writer_leaves_no_temp_file(tmp_path: Path) -> None:
    def fails(p: str) -> None:
        Path(p).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match=r"cannot write .*x\.json: No space left on device"):
        write_atomic(tmp_path / "x.json", fails)
    assert list(tmp_path.iterdir()) == []


# --- 3, 4. folders appear complete or not at all; stale builds are cleaned and named ----------------------
def test_failed_folder_build_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    with pytest.raises(OutputError, match="File name too long"), atomic_folder(out) as tmp:
        write_atomic(tmp / "pairs.parquet", lambda p: Path(p).write_bytes(b"1"))
        write_atomic(tmp / "groups.parquet", lambda p: Path(p).write_bytes(b"2"))
        write_atomic(tmp / ("s" * 300), lambda p: Path(p).write_bytes(b"3"))  # a real ENAMETOOLONG
    assert list(tmp_path.iterdir()) == []


def test_dedupe_report_is_replaced_as_a_whole(small: Path, tmp_path: Path, cfx: RunCfx) -> None:
    rep = tmp_path / "rep"
    r = cfx("dedupe", str(small), "--report", str(rep), "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in rep.iterdir()) == ["groups.parquet", "pairs.parquet", "summary.json"]
    (rep / "stale.txt").write_text("from an earlier run")
    r = cfx("dedupe", str(small), "--report", str(rep), "--json")
    assert r.returncode == 7 and "already exists" in r.stderr and "--overwrite" in r.stderr, r.stderr
    assert (rep / "stale.txt").exists()
    r = cfx("dedupe", str(small), "--report", str(rep), "--json", "--overwrite")
    assert r.returncode == 0 and not (rep / "stale.txt").exists(), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # no rep.tmp-*, rep.old-*, rep.lock


def test_gallery_stale_sheets_vanish(small: Path, tmp_path: Path, cfx: RunCfx) -> None:
    sheets = tmp_path / "sheets"
    sheets.mkdir()
    (sheets / "group-999999.png").write_bytes(b"an old sheet")
    r = cfx("dedupe", str(small), "--gallery", str(sheets), "--json")
    assert r.returncode == 7 and "already exists" in r.stderr, r.stderr
    r = cfx("dedupe", str(small), "--gallery", str(sheets), "--json", "--overwrite")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in sheets.iterdir())
    assert names and "group-999999.png" not in names and all(n.startswith("group-") for n in names)


def test_report_with_gallery_inside_it(small: Path, tmp_path: Path, cfx: RunCfx) -> None:
    """The README's `--report dedupe/ --gallery dedupe/sheets`, twice (the second with --overwrite)."""
    for extra in ([], ["--overwrite"]):
        r = cfx("dedupe", str(small), "--report", "dd", "--gallery", "dd/sheets", "--json", *extra)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "dd" / "summary.json").exists() and list(
            (tmp_path / "dd" / "sheets").glob("*.png")
        )


def test_stale_build_of_a_dead_run_is_removed_and_named(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    stale = tmp_path / f"out.tmp-{pid}-00ff00ff"
    (stale / "data").mkdir(parents=True)
    live = tmp_path / f"out.tmp-{os.getpid()}-11aa11aa"  # a live writer: kept
    live.mkdir()
    other = tmp_path / "outer.tmp-1-22bb22bb"  # another output's build: not ours
    other.mkdir()
    warnings: list[str] = []
    assert clean_stale(tmp_path / "out", warnings.append) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    assert warnings == [f"removed {stale}, left by an interrupted earlier run (pid {pid})"]


def _large(root: Path, target: int) -> Path:
    from cfx.synth import make_large_shard

    make_large_shard(root, target_bytes=target)
    return root


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _large(tmp_path_factory.mktemp("big") / "ds", 60_000_000)


def _wait_for_build(folder: Path, name: str, min_bytes: int, timeout: float = 60) -> Path | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tmp in folder.glob(f"{name}.tmp-*"):
            if any(p.stat().st_size > min_bytes for p in tmp.glob("data/*.parquet")):
                return tmp
        time.sleep(0.01)
    return None


@pytest.mark.slow
def test_killed_subset_leaves_a_build_the_next_run_removes_and_names(big: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "cfx", "subset", str(big), "--out", str(out), "--row-group-size", "5"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = _wait_for_build(tmp_path, "out", 2_000_000)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert tmp is not None, "the writer never started"
    assert not out.exists() and tmp.exists()  # a kill leaves the build beside OUT, never a partial OUT
    r = subprocess.run(cmd[:7], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"Warning: removed {tmp}, left by an interrupted earlier run (pid {proc.pid})" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.slow
def test_terminated_subset_removes_its_own_build_and_exits_143(big: Path, tmp_path: Path) -> None:
    """SIGTERM is caught (cfx.cli._errors.run): the build is removed on the way out, nothing is left."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "cfx", "subset", str(big), "--out", str(out), "--row-group-size", "5"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tmp = _wait_for_build(tmp_path, "out", 2_000_000)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert tmp is not None, "the writer never started"
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no OUT, no OUT.tmp-*, no OUT.lock


# --- 5. one writer per output -----------------------------------------------------------------------------
@pytest.mark.slow
def test_two_concurrent_subsets_one_wins_one_exits_7(big: Path, tmp_path: Path) -> None:
    """The first is stopped (SIGSTOP) mid-write so the second surely runs while it holds the output."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "cfx", "subset", str(big), "--out", str(out), "--row-group-size", "5"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for_build(tmp_path, "out", 1_000_000) is not None, "the first writer never started"
        first.send_signal(signal.SIGSTOP)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    _, first_err = first.communicate(timeout=300)
    assert (first.returncode, second.returncode) == (0, 7), (first_err, second.stderr)
    assert f"{out} is being written by another cfx process (pid {first.pid})" in second.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the lock file is gone too
    assert pq.read_metadata(out / "manifest.parquet").num_rows > 0


def test_output_lock_is_exclusive_and_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from cfx.outputs import output_lock\n"
         "with output_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(30)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(
                OutputError, match=rf"is being written by another cfx process \(pid {holder.pid}\)"
            ),
            output_lock(out),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with output_lock(out):  # the dead holder's lock is free again (the kernel dropped it)
        assert lock_path(out).exists()
    assert not lock_path(out).exists()


def test_build_tag_names_the_writer(tmp_path: Path) -> None:
    with atomic_folder(tmp_path / "o") as tmp:
        assert (tmp / WRITER_TAG).exists() and tmp.name.startswith(f"o.tmp-{os.getpid()}-")
        (tmp / "a").write_text("1")
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a"]


def test_reliability_table_names_every_output_test() -> None:
    """docs/reliability.md "Outputs" and this file stay in step: each case has a test, each test a case."""
    import re

    text = (ROOT / "docs" / "reliability.md").read_text()
    section = text.split("## Outputs", 1)[1].split("\n## ", 1)[0]
    in_table = set(re.findall(r"`(test_\w+)`", section))
    here = {n for n in globals() if n.startswith("test_")} - {
        "test_reliability_table_names_every_output_test"
    }
    assert in_table - here == set(), "named in docs/reliability.md but not a test here"
    assert here - in_table == set(), "tests here missing from the table in docs/reliability.md"


@pytest.fixture(autouse=True)
def _dev_null_intact() -> Iterator[None]:
    """Belt and braces: no test here may turn /dev/null (or /dev/full) into anything but a device."""
    yield
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    if os.path.exists("/dev/full"):
        assert stat.S_ISCHR(os.lstat("/dev/full").st_mode)
