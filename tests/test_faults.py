"""Faults from the hostile pass of issue 21 (items 1-7, 16, 17): hangs, full disks, interrupts, messages.

Real processes throughout: the CLI in a subprocess, real signals, a real small tmpfs in a private mount
namespace for a full disk (root; skipped elsewhere unless CFX_REQUIRE_TOOLS is set). docs/reliability.md
("Faults") lists each case; ``test_reliability_table_names_every_fault_test`` keeps the two in step.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cfx.bytefacts import facts
from cfx.errors import io_error
from cfx.schema import SOURCE_SCHEMA
from cfx.transform import BadImageError, Pipeline
from tests.conftest import ROOT
from tests.shards import rows, write_shard

PY = sys.executable


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop("CFX_DEBUG", None)
    return env


def _cfx(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "cfx", *args], capture_output=True, text=True, env=_env(**env), timeout=timeout
    )


def _png(seed: int, side: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shards of 6 rows of 32x32 PNG: generated, then real."""
    root = tmp_path_factory.mktemp("faults-small")
    for i in range(2):
        write_shard(root / "data" / f"HFCF_small_{i}.parquet", rows(6, label=1 - i, start=i * 6))
    return root


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def _need_mount() -> None:
    if not _can_mount():
        if os.environ.get("CFX_REQUIRE_TOOLS"):
            pytest.fail("a private tmpfs mount is needed (root and unshare)")
        pytest.skip("needs root and unshare for a private tmpfs mount")


def _in_tmpfs(mnt: Path, size: str, command: str) -> subprocess.CompletedProcess[str]:
    """``command`` (sh) with a tmpfs of ``size`` at ``mnt`` in a private mount namespace; it vanishes with
    the namespace, so ``command`` lists what is left itself."""
    script = f'mount -t tmpfs -o size={size} tmpfs "{mnt}" && {command}'
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )


# --- 1. the pool never hangs on an error ------------------------------------------------------------------
_FEEDER_BLOCKED = """
import os, sys, time
from cfx.pool import process_pool

def slow(_):
    time.sleep(30)

if __name__ == "__main__":
    try:
        with process_pool(1) as pool:
            pool.submit(slow, b"")
            for _ in range(3):  # 8 MB each: the queue's feeder blocks writing into the pipe of the busy worker
                pool.submit(slow, b"x" * (8 << 20))
            time.sleep(3)  # the worker is up and busy, the feeder blocked
            raise ValueError("a bad image")
    except ValueError:
        print("raised", flush=True)
"""


def test_pool_left_on_an_error_with_a_blocked_feeder_exits_at_once(tmp_path: Path) -> None:
    """Before: the interpreter's exit joined the manager thread, which joined the blocked feeder: for ever."""
    script = tmp_path / "feeder.py"
    script.write_text(_FEEDER_BLOCKED)
    t0 = time.monotonic()
    r = subprocess.run([PY, str(script)], capture_output=True, text=True, env=_env(), timeout=25)
    assert r.returncode == 0 and r.stdout.strip() == "raised", r.stderr
    assert time.monotonic() - t0 < 20


@pytest.fixture(scope="module")
def big_with_a_bad_row(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One shard of 24 uncompressed 300x300 PNGs (~270 KB, larger than a pipe), row 14 truncated."""
    root = tmp_path_factory.mktemp("faults-big")
    recs = rows(24)
    for i, r in enumerate(recs):
        r["image_data"] = _png(i, 300)
        r["resolution"] = "[300, 300]"
    recs[14]["image_data"] = recs[14]["image_data"][:4000]
    write_shard(root / "data" / "HFCF_small_0.parquet", recs)
    return root


@pytest.mark.slow
def test_error_in_a_transform_pool_exits_at_once_every_time(big_with_a_bad_row: Path, tmp_path: Path) -> None:
    """12 runs (the hang was 2 in 12): each exits 3 naming the row, within the timeout, no traceback, nothing
    left."""
    for i in range(12):
        out = tmp_path / f"o{i}"
        args = ("subset", str(big_with_a_bad_row), "--out", str(out), "--strip-metadata", "--workers", "2")
        r = _cfx(*args, timeout=90)
        assert r.returncode == 3 and "row 14" in r.stderr, (i, r.stderr)
        assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- 2. transforms are bounded before they allocate -------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("resize:min-side=100000", "10,000,000,000 pixels"),
        ("resize:min-side=30000", "900,000,000 pixels"),
        ("resize:max-side=99999999999999999999", "above 1,048,576 pixels"),
        ("center-crop:20000", "400,000,000 pixels"),
        ("center-crop:5x99999999999999", "above 1,048,576 pixels"),
    ],
)
def test_absurd_transform_size_is_refused_before_any_image_is_read(small: Path, spec: str, says: str) -> None:
    t0 = time.monotonic()
    r = _cfx("subset", str(small), "--out", "never", "--transform", spec)
    assert r.returncode == 2 and says in r.stderr and spec in r.stderr, r.stderr
    assert time.monotonic() - t0 < 30


def test_planned_size_above_the_pixel_limit_names_the_transform() -> None:
    """resize:min-side=9000 is fine for a square image (81 M pixels) but makes a 96x64 one 13500x9000: the
    planned size is refused before anything is allocated, naming the step, not the (small) source."""
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (10, 20, 30)).save(buf, "PNG")
    pipeline = Pipeline.parse(["resize:min-side=9000"])
    t0 = time.monotonic()
    with pytest.raises(BadImageError) as info:
        pipeline.apply(buf.getvalue(), ("data/s.parquet", 3))
    assert time.monotonic() - t0 < 2  # before: seconds of Lanczos on 121 M pixels
    msg = info.value.message
    assert "resize:min-side=9000" in msg and "96x64" in msg and "13500x9000" in msg, msg
    square = Pipeline.parse(["resize:min-side=90"])  # the check lets through what fits
    assert square.apply(buf.getvalue(), ("data/s.parquet", 3)).height == 90


# --- 3. --folds in range --------------------------------------------------------------------------------------
@pytest.mark.parametrize("folds", ["99999999999999999999", "100000", "1", "0", "-3"])
def test_folds_out_of_range_is_exit_2_with_the_range(small: Path, folds: str) -> None:
    t0 = time.monotonic()
    r = _cfx("split", str(small), "--folds", folds, "-o", "never.parquet", timeout=60)
    assert r.returncode == 2 and "2 to 1000" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 30


def test_more_folds_than_groups_is_exit_2_naming_the_groups(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    generators = ["a/one", "b/two", "c/three"]
    recs = rows(9)
    for i, r in enumerate(recs):
        r["model_name"] = generators[i % 3]
    write_shard(root / "data" / "HFCF_small_0.parquet", recs)
    r = _cfx("split", str(root), "--folds", "4", "--by", "generator", "-o", str(tmp_path / "s.parquet"))
    assert r.returncode == 2 and "only 3 group(s)" in r.stderr and "--folds 3" in r.stderr, r.stderr
    assert not (tmp_path / "s.parquet").exists()
    r = _cfx("split", str(root), "--folds", "3", "--by", "generator", "-o", str(tmp_path / "s.parquet"))
    assert r.returncode == 0, r.stderr


# --- 4. a full disk while subset writes -------------------------------------------------------------------
_FULL_WRITE = """
import os, sys
import pyarrow as pa, pyarrow.parquet as pq
from cfx.outputs import KeptErrorFile

table = pa.table({"image_data": [os.urandom(200_000) for _ in range(40)]})  # 8 MB that do not compress
file = KeptErrorFile(sys.argv[1])
writer = pq.ParquetWriter(pa.PythonFile(file, mode="w"), table.schema, use_content_defined_chunking=True)
writer.write_table(table)
try:
    writer.close()
    file.close()
    file.check()
except OSError as exc:
    print("errno", exc.errno)
"""


def test_cdc_parquet_writer_on_a_full_disk_raises_instead_of_aborting(tmp_path: Path) -> None:
    """pyarrow with content-defined chunking aborts in C++ on a failed write (exit 134); through KeptErrorFile
    the error comes back as an OSError (ENOSPC = 28) once the writer returns."""
    _need_mount()
    mnt = tmp_path / "full"
    mnt.mkdir()
    script = tmp_path / "w.py"
    script.write_text(_FULL_WRITE)
    r = _in_tmpfs(mnt, "1m", f'{PY} {script} "{mnt}/x.parquet"')
    assert r.returncode == 0 and r.stdout.split() == ["errno", "28"], (r.returncode, r.stdout, r.stderr)


@pytest.fixture(scope="module")
def noise(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One shard of 12 noise PNGs of 100x100 (~30 KB each)."""
    root = tmp_path_factory.mktemp("faults-noise")
    recs = rows(12)
    for i, r in enumerate(recs):
        r["image_data"] = _png(i, 100)
        r["resolution"] = "[100, 100]"
    write_shard(root / "data" / "HFCF_small_0.parquet", recs)
    return root


@pytest.mark.parametrize("cdc", ["--cdc", "--no-cdc"])
def test_disk_full_during_subset_is_exit_7_and_leaves_nothing(noise: Path, tmp_path: Path, cdc: str) -> None:
    """resize:12 makes the images 144 times larger (~30 MB) than the estimate from the source: the disk
    (17 MB) fills while writing. Before: with CDC, `Check failed … No space left on device`, exit 134, OUT.tmp-* and OUT.lock left."""
    _need_mount()
    mnt = tmp_path / "full"
    mnt.mkdir()
    cmd = (
        f'cd "{mnt}" && {PY} -m cfx subset {noise} --out sub {cdc} --transform resize:12 --transform png '
        f'--row-group-size 2; echo "rc=$?"; ls -A "{mnt}"'
    )
    r = _in_tmpfs(mnt, "17m", cmd)
    words = r.stdout.split()
    assert words == ["rc=7"], (r.stdout, r.stderr)  # nothing left: no sub, no sub.tmp-*, no sub.lock
    assert "No space left on device" in r.stderr and "Traceback" not in r.stderr, r.stderr


# --- 5. polars' own I/O errors are output errors ----------------------------------------------------------------
def test_polars_disk_full_in_report_is_exit_7_naming_the_path(small: Path, tmp_path: Path) -> None:
    """12 kB: the report folder is made, then polars fails writing a parquet file in it (ComputeError … os error
    28). Before: "internal error: ComputeError", exit 1."""
    _need_mount()
    mnt = tmp_path / "full"
    mnt.mkdir()
    cmd = f'{PY} -m cfx dedupe {small} --report "{mnt}/rep" --json >/dev/null; echo "rc=$?"; ls -A "{mnt}"'
    r = _in_tmpfs(mnt, "12k", cmd)
    assert r.stdout.split() == ["rc=7"], (r.stdout, r.stderr)
    assert "No space left on device" in r.stderr and f"{mnt}/rep" in r.stderr, r.stderr
    assert "internal error" not in r.stderr


def test_polars_and_pyarrow_io_errors_read_back_their_errno() -> None:
    """The texts polars 1.x / pyarrow give for a full disk (seen on a real tmpfs above)."""
    from polars.exceptions import ComputeError

    text = "parquet: File out of specification: underlying IO error: No space left on device (os error 28)"
    assert io_error(ComputeError(text)).errno == 28  # type: ignore[union-attr]
    assert io_error(ValueError(text)) is None  # only what polars or pyarrow raise is read
    assert io_error(OSError("Error writing bytes. Detail: [errno 28] No space left")).errno == 28  # type: ignore[union-attr]


# --- 6. --skip-bad skips a shard whose image page is corrupt ---------------------------------------------------------
def _shard_with_a_corrupt_last_page(path: Path, start: int) -> None:
    """40 rows, one image per data page (pyarrow cuts pages every write_batch_size values), the last page's
    compressed bytes overwritten: the footer is valid, rows 0-38 read, row 39 does not."""
    table = pa.Table.from_pylist(rows(40, start=start), schema=SOURCE_SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        table,
        path,
        row_group_size=6,
        write_batch_size=1,
        data_page_size=1,
        use_dictionary=False,
        compression="gzip",
    )
    col = next(
        c
        for c in (pq.ParquetFile(path).metadata.row_group(0).column(i) for i in range(len(SOURCE_SCHEMA)))
        if c.path_in_schema == "image_data"
    )
    end = col.data_page_offset + col.total_compressed_size
    data = bytearray(path.read_bytes())
    data[end - 1500 : end - 1400] = b"\xff" * 100
    path.write_bytes(bytes(data))


def test_skip_bad_skips_a_shard_with_a_corrupt_page_and_withdraws_its_rows(tmp_path: Path) -> None:
    """Shard 1's last image page is corrupt. Without --skip-bad: exit 3 naming it. With it: the write starts
    over without the shard, so none of its rows stays whenever the reader meets the bad page (pyarrow 26
    meets it at the shard's first batch; a page-level reader would after rows 0-38), the shard is counted
    and named, exit 0."""
    root = tmp_path / "ds"
    write_shard(root / "data" / "HFCF_small_0.parquet", rows(6, start=0))
    _shard_with_a_corrupt_last_page(root / "data" / "HFCF_small_1.parquet", start=6)
    write_shard(root / "data" / "HFCF_small_2.parquet", rows(6, label=0, start=46))
    r = _cfx("subset", str(root), "--out", str(tmp_path / "o"), "--row-group-size", "2")
    assert r.returncode == 3 and "HFCF_small_1.parquet" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
    r = _cfx("subset", str(root), "--out", str(tmp_path / "o"), "--row-group-size", "2", "--skip-bad")
    assert r.returncode == 0, r.stderr
    assert "skipped 1 shard(s)" in r.stderr and "HFCF_small_1.parquet" in r.stderr, r.stderr
    written = pq.read_table(tmp_path / "o" / "data")
    names = sorted(written.column("image_name").to_pylist())
    assert names == sorted([f"{i:08d}.png" for i in (*range(6), *range(46, 52))]), names
    manifest = pq.read_table(tmp_path / "o" / "manifest.parquet")
    assert manifest.num_rows == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "o"]


# --- 7. an interrupt is exit 130 whatever it interrupts ---------------------------------------------------------
_SIGINT_ON_IMPORT = """
import os, signal, sys, importlib.abc

TARGET = os.environ["CFX_TEST_SIGINT_ON_IMPORT"]
HOW = os.environ.get("CFX_TEST_SIGINT_AS", "plain")


class _SigintOnImport(importlib.abc.MetaPathFinder):
    fired = False

    def find_spec(self, name, path, target=None):
        if name != TARGET or _SigintOnImport.fired:
            return None
        _SigintOnImport.fired = True
        if HOW == "plain":  # the KeyboardInterrupt rises through the import as it is
            os.kill(os.getpid(), signal.SIGINT)
        elif HOW == "chained":  # as pybind11 does in a module's init: ImportError raised from it
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt as ki:
                raise ImportError("initialization failed") from ki
        else:  # a library that swallows it and fails otherwise, with no chain
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                pass
            raise ImportError("initialization failed")
        return None


sys.meta_path.insert(0, _SigintOnImport())
"""


@pytest.mark.parametrize(
    ("target", "how"),
    [
        ("sklearn.ensemble", "plain"),
        ("sklearn.utils._sorting", "plain"),  # imported while a Cython module of sklearn initialises
        ("scipy.optimize._highspy._core", "chained"),  # a pybind11 module
        ("sklearn.tree._partitioner", "unchained"),
    ],
)
def test_sigint_while_audit_imports_sklearn_is_exit_130(
    small: Path, tmp_path: Path, target: str, how: str
) -> None:
    """A real SIGINT, sent by the process to itself the moment the import system looks for ``target`` (a
    sitecustomize on PYTHONPATH). Before: once `internal error: ImportError: initialization failed`, exit 1."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SIGINT_ON_IMPORT)
    env = _env(CFX_TEST_SIGINT_ON_IMPORT=target, CFX_TEST_SIGINT_AS=how)
    env["PYTHONPATH"] = f"{hook}{os.pathsep}{ROOT}"
    r = subprocess.run(
        [PY, "-m", "cfx", "audit", str(small)], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "Interrupted." and "internal error" not in r.stderr, r.stderr


# --- 16. library warnings are counted, not printed raw ------------------------------------------------------------
def _bad_exif_jpeg(seed: int) -> bytes:
    """A JPEG whose EXIF block says 5 entries and holds a part of one: Pillow warns `Corrupt EXIF data`."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (seed, 0, 0)).save(buf, "JPEG")
    data = buf.getvalue()
    app1 = b"Exif\x00\x00" + b"II*\x00\x08\x00\x00\x00" + b"\x05\x00" + b"\x0f\x01\x02\x00\xff\xff\x00\x00"
    return data[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + data[2:]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_library_warnings_become_one_counted_warning_per_kind(tmp_path: Path, workers: str) -> None:
    """Before: two raw `PIL/TiffImagePlugin.py:982: UserWarning: Corrupt EXIF data` lines per image, from
    whichever process decoded it. Now one `Warning:` line for the kind with its count, also from workers."""
    root = tmp_path / "ds"
    recs = rows(5)
    for i, r in enumerate(recs[:3]):
        r.update(image_data=_bad_exif_jpeg(i), format="JPEG", image_name=f"{i}.jpg", resolution="[16, 16]")
    write_shard(root / "data" / "HFCF_small_0.parquet", recs)
    r = _cfx(
        "subset", str(root), "--out", str(tmp_path / "o"), "--transform", "jpeg:90", "--workers", workers
    )
    assert r.returncode == 0, r.stderr
    assert "TiffImagePlugin" not in r.stderr and "warnings.warn" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "Corrupt EXIF data" in ln]
    assert len(lines) == 1 and lines[0].startswith("Warning: UserWarning: Corrupt EXIF data"), r.stderr
    times = re.search(r"\((\d+) times\)$", lines[0])
    assert times and int(times.group(1)) % 3 == 0, lines  # the same count per image for the 3 images


# --- 17. error texts are deterministic ------------------------------------------------------------------------
def test_inspect_error_text_holds_no_memory_address() -> None:
    """Pillow names the BytesIO it could not identify (`<_io.BytesIO object at 0x7f…>`): the same bytes must
    give the same text in every process."""
    garbage = b"this is not an image at all" * 10
    texts = {
        subprocess.run(
            [PY, "-c", f"from cfx.bytefacts import facts; print(facts({garbage!r})['inspect_error'])"],
            capture_output=True,
            text=True,
            env=_env(),
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(texts) == 1, texts
    text = texts.pop()
    assert text and not re.search(r"0x[0-9a-f]{6,}", text), text
    assert facts(garbage)["inspect_error"] == text


# --- docs/reliability.md stays in step -------------------------------------------------------------------------
def test_reliability_table_names_every_fault_test() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    section = text.split("## Faults", 1)[1].split("\n## ", 1)[0]
    in_table = set(re.findall(r"`(test_\w+)`", section))
    here = {n for n in globals() if n.startswith("test_")} - {"test_reliability_table_names_every_fault_test"}
    assert in_table == here, f"only in the table: {in_table - here}; only here: {here - in_table}"
