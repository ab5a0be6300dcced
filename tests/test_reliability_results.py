"""Wrong results and loose messages from the hostile pass (issue 21, items 8-15 and 18-22).

Real shards written by pyarrow (tests/shards.py) with real encoded images, run through the real CLI in a
subprocess (the ``cfx`` fixture). docs/reliability.md's "Results and messages" table lists each case with the
test that protects it; ``test_results_table_names_existing_tests`` keeps the two in step.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from PIL import Image

from cfx.errors import ExitCode
from tests.conftest import ROOT, Run
from tests.shards import png, rows, write_shard

CfxRun = Callable[..., Run]


def jpeg(seed: int, quality: int = 80, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def no_dqt_jpeg(seed: int) -> bytes:
    """A JPEG whose quantisation tables are gone (DQT markers made comments): its quality is unknown."""
    return jpeg(seed).replace(b"\xff\xdb", b"\xff\xfe")


def _write(root: Path, records: list[dict[str, Any]]) -> Path:
    write_shard(root / "data" / "HFCF_small_0.parquet", records)
    return root


def _mixed(n_gen: int, n_real: int) -> list[dict[str, Any]]:
    return rows(n_gen) + rows(n_real, label=0, start=n_gen)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """12 generated rows from 4 generators and 12 real rows: enough groups for a split."""
    recs = _mixed(12, 12)
    for i, r in enumerate(recs[:12]):
        r["model_name"] = f"org/model-{i % 4}"
        r["prompt"] = f"prompt {i}"
    return _write(tmp_path / "ds", recs)


def _json(run: Run) -> Any:
    assert run.returncode == 0, run.stderr
    return json.loads(run.out)


# --- 8. split --column ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("column", ["shard", "row", "label", "sha256", "split", "split_group", "model_name"])
def test_split_column_refuses_reserved_names(cfx: CfxRun, data: Path, tmp_path: Path, column: str) -> None:
    run = cfx("split", str(data), "--column", column, "-o", str(tmp_path / "s.parquet"), "--no-near")
    assert run.returncode == ExitCode.USAGE, run.stderr
    assert f"--column {column}: cfx relies on that column" in run.stderr
    assert not (tmp_path / "s.parquet").exists()


def test_split_column_refuses_an_existing_column_unless_overwrite_column(
    cfx: CfxRun, data: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert cfx("split", str(data), "-o", str(first), "--no-near").returncode == 0
    again = cfx("split", str(first), "-o", str(second), "--no-near")
    assert again.returncode == ExitCode.USAGE and "already has that column" in again.stderr
    assert "--overwrite-column" in again.stderr and not second.exists()
    ok = cfx("split", str(first), "-o", str(second), "--no-near", "--overwrite-column", "--seed", "3")
    assert ok.returncode == 0, ok.stderr
    df = pl.read_parquet(second)
    assert df.columns.count("assigned_split") == 1 and df.get_column("assigned_split").null_count() == 0


# --- 9. split --fractions -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fractions", ["nan,0.5,0.5", "inf,0,0", "-0.2,0.6,0.6", "0.5,0.2,0.2", "1e400,0,0"])
def test_split_fractions_must_be_finite_non_negative_and_sum_to_1(
    cfx: CfxRun, data: Path, fractions: str
) -> None:
    run = cfx("split", str(data), "--fractions", fractions, "--json")
    assert run.returncode == ExitCode.USAGE, run.stderr
    assert "--fractions" in run.stderr and "sum to 1" in run.stderr and run.out == ""


# --- 10. split on 0 rows --------------------------------------------------------------------------------------
def test_split_of_no_rows_is_exit_5(cfx: CfxRun, data: Path, tmp_path: Path) -> None:
    from cfx.load import load_manifest

    empty = tmp_path / "empty.parquet"
    m = load_manifest(str(data))
    m.with_df(m.df.head(0)).write(empty)
    run = cfx("split", str(empty), "-o", str(tmp_path / "s.parquet"), "--out", str(tmp_path / "parts"))
    assert run.returncode == ExitCode.EMPTY, run.stderr
    assert "no rows to split" in run.stderr
    assert not (tmp_path / "s.parquet").exists() and not (tmp_path / "parts").exists()


# --- 11. split --names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("names", "message"),
    [
        ("a/b,c,d", "not a safe file name"),
        ("..,c,d", "not a safe file name"),
        ("nul,c,d", "not a safe file name"),
        ("-x,c,d", "not a safe file name"),
        ("Train,train,test", "given twice (ignoring case)"),
    ],
)
def test_split_names_are_safe_unique_file_names_checked_up_front(
    cfx: CfxRun, data: Path, tmp_path: Path, names: str, message: str
) -> None:
    run = cfx("split", str(data), "--names", names, "--out", str(tmp_path / "parts"))
    assert run.returncode == ExitCode.USAGE, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # nothing written, no temp folder


# --- 12. unknown JPEG facts: left out of matching and of the AUROC, and counted ----------------------------------
@pytest.fixture
def quality_data(tmp_path: Path) -> Path:
    """Generated: 6 JPEG q80 + 3 PNG; real: 6 JPEG q80 + 3 JPEGs whose quality cannot be read."""
    recs = _mixed(9, 9)
    for i, r in enumerate(recs):
        if i < 6 or 9 <= i < 15:
            r["image_data"], r["format"] = jpeg(i), "JPEG"
        elif i >= 15:
            r["image_data"], r["format"] = no_dqt_jpeg(i), "JPEG"
    return _write(tmp_path / "q", recs)


def test_balance_leaves_rows_with_unknown_jpeg_quality_out_and_counts_them(
    cfx: CfxRun, quality_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b.parquet"
    run = cfx("balance", str(quality_data), "--match", "jpeg-quality:5", "-o", str(out), "--json")
    report = _json(run)
    assert report["unknown_match_rows"] == {"jpeg-quality": 3}
    assert any(
        "left out as unknown jpeg-quality" in s["detail"] and sum(s["unknown"].values()) == 3
        for s in report["steps"]
    )
    kept = pl.read_parquet(out)
    # the unreadable JPEGs (rows 15-17) are not matched with the PNGs' "none" bin
    assert set(kept.get_column("row").to_list()).isdisjoint({15, 16, 17})
    assert kept.height == 12 and kept.filter(pl.col("label") == 0).height == 6


def test_audit_scores_jpeg_quality_without_rows_whose_quality_is_unknown(
    cfx: CfxRun, quality_data: Path, tmp_path: Path
) -> None:
    inspected = tmp_path / "i.parquet"
    assert cfx("inspect", str(quality_data), "-o", str(inspected)).returncode == 0
    report = _json(cfx("audit", str(inspected), "--json"))
    q = next(f for f in report["features"] if f["feature"] == "jpeg_quality")
    assert q["rows"] == 15 and q["unknown_rows"] == 3  # not scored as 101 (lossless)
    assert "3 row(s) without a value were left out" in q["note"]


# --- 13. export: rows that are not images --------------------------------------------------------------------
BAD_IMAGES = {
    9: None,  # null
    10: b"",  # zero bytes
    11: b"not an image at all",  # no signature
    12: b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,  # a PNG signature, an unreadable header
}


@pytest.fixture
def non_images(tmp_path: Path) -> Path:
    recs = _mixed(13, 4)
    for row, value in BAD_IMAGES.items():
        recs[row]["image_data"] = value
    return _write(tmp_path / "n", recs)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("fmt", ["cf", "imagefolder", "cnndetection"])
def test_export_leaves_non_images_out_of_folder_layouts(
    cfx: CfxRun, non_images: Path, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / "out"
    report = _json(cfx("export", str(non_images), "--format", fmt, "--out", str(out), "--json"))
    assert report["rows"] == 13 and report["by_split"] == {"train": 13} and report["non_images"] == 4
    assert sorted(r["row"] for r in report["non_images_rows"]) == sorted(BAD_IMAGES)
    assert {r["row"]: r["reason"] for r in report["non_images_rows"]}[11] == "no known image signature"
    images = [p for p in _files(out) if p.suffix in (".png", ".bin")]
    assert len(images) == 13 and not any(p.suffix == ".bin" for p in images)
    for p in images:  # what a trainer does with each file
        with Image.open(p) as im:
            im.load()
    if fmt == "cf":
        with open(out / "train" / "index.csv", newline="") as f:
            assert len(list(csv.DictReader(f))) == 13
    if fmt == "imagefolder":
        assert len((out / "train" / "metadata.jsonl").read_text().splitlines()) == 13
    warned = cfx("export", str(non_images), "--format", fmt, "--out", str(tmp_path / "o2"))
    assert "left out 4 row(s) that are not images" in warned.stderr and "--keep-non-images" in warned.stderr


def test_export_keep_non_images_and_drop_bad_images(cfx: CfxRun, non_images: Path, tmp_path: Path) -> None:
    kept = _json(
        cfx(
            "export",
            str(non_images),
            "--format",
            "cf",
            "--out",
            str(tmp_path / "k"),
            "--keep-non-images",
            "--json",
        )
    )
    assert kept["rows"] == 17 and "non_images" not in kept
    files = [p for p in _files(tmp_path / "k") if p.suffix in (".png", ".bin")]
    assert len(files) == 17 and sum(p.suffix == ".bin" for p in files) == 3  # + the PNG with a bad header
    # --drop-bad-images, as subset has: null and empty rows left out of every format, webdataset too
    wds = _json(
        cfx(
            "export",
            str(non_images),
            "--format",
            "webdataset",
            "--out",
            str(tmp_path / "w"),
            "--drop-bad-images",
            "--json",
        )
    )
    assert wds["rows"] == 15 and sorted(r["row"] for r in wds["bad_images_rows"]) == [9, 10]


# --- 14. export --transform --skip-bad --json: what was written, every row skipped ---------------------------------
def test_export_skip_bad_json_counts_what_was_written_and_lists_every_skipped_row(
    cfx: CfxRun, tmp_path: Path
) -> None:
    recs = rows(20)
    bad = [1, 3, 4, 6, 8, 9, 11, 15]  # more than the five a warning names
    for i in bad:
        recs[i]["image_data"] = b"\x89PNG\r\n\x1a\n" + b"\x01" * 30
    src = _write(tmp_path / "t", recs)
    out = tmp_path / "out"
    report = _json(
        cfx(
            "export",
            str(src),
            "--format",
            "imagefolder",
            "--out",
            str(out),
            "--transform",
            "jpeg:90",
            "--skip-bad",
            "--json",
        )  # fmt: skip
    )
    assert report["rows"] == 12 and report["by_split"] == {"train": 12} and report["skipped"] == 8
    assert sorted(r["row"] for r in report["skipped_rows"]) == bad
    assert all(r["shard"] == "data/HFCF_small_0.parquet" and r["reason"] for r in report["skipped_rows"])
    assert len([p for p in _files(out) if p.suffix == ".jpg"]) == 12


# --- 15. subset --transform --skip-bad: null rows skipped are not "copied as they are" ----------------------------
def test_subset_transform_skip_bad_does_not_say_skipped_null_rows_were_copied(
    cfx: CfxRun, tmp_path: Path
) -> None:
    recs = rows(6)
    recs[1]["image_data"], recs[4]["image_data"] = None, b""
    src = _write(tmp_path / "s", recs)
    run = cfx("subset", str(src), "--out", str(tmp_path / "o"), "--transform", "jpeg:90", "--skip-bad")
    assert run.returncode == 0, run.stderr
    assert "copied as they are" not in run.stderr
    assert "skipped 2 image(s)" in run.stderr
    assert pl.read_parquet(tmp_path / "o" / "manifest.parquet").height == 4


# --- 18. export --transform: free space from an estimate of the transform -------------------------------------
def test_export_transform_free_space_is_estimated_from_the_transform(cfx: CfxRun, tmp_path: Path) -> None:
    from tests.test_outputs import _can_mount, _run_in_private_mount

    if not _can_mount():
        pytest.skip("needs root and unshare for a private tmpfs mount")
    recs = rows(16)
    for i, r in enumerate(recs):
        r["image_data"], r["resolution"] = png(i, size=256), "[256, 256]"  # ~197 KB of noise each: ~3 MB
    src = _write(tmp_path / "big", recs)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # copied, 3 MB of images do not fit a 2 MB disk: refused up front, the need stated
    copy = _run_in_private_mount(mnt, "2m", "", "export", str(src), "--format", "cf", "--out", str(mnt / "c"))
    assert copy.returncode == ExitCode.OUTPUT and "not enough disk space" in copy.stderr, copy.stderr
    # shrunk to 32x32 JPEGs (~30 KB in all): written, where the source bytes said "needs about 4 MB"
    args = ("export", str(src), "--format", "cf", "--out", str(mnt / "t"), "--json")
    small = _run_in_private_mount(
        mnt, "2m", "", *args, "--transform", "resize:max-side=32", "--transform", "jpeg:80"
    )
    assert small.returncode == 0, small.stderr
    assert json.loads(small.stdout)["rows"] == 16
    # an estimate that does not fit says it is one
    big = _run_in_private_mount(mnt, "2m", "", *args, "--transform", "png")
    assert big.returncode == ExitCode.OUTPUT and "an estimate from the transform (png)" in big.stderr


def test_transform_size_estimate_follows_resize_crop_and_encoder() -> None:
    from cfx.transform import Pipeline, estimate_bytes

    w, h, src = np.array([512.0, np.nan]), np.array([256.0, np.nan]), np.array([300_000.0, 1000.0])
    resized = estimate_bytes(Pipeline.parse(["resize:max-side=64", "jpeg:80"]), w, h, src)
    assert 64 * 32 * 0.5 < resized[0] < 64 * 32 * 1.5 + 1000 and resized[1] == 1000  # unknown size: source
    same = estimate_bytes(Pipeline.parse(["blur:1"]), w, h, src)
    assert same[0] == 300_000  # re-encoded like the source
    half = estimate_bytes(Pipeline.parse(["center-crop:256"]), w, h, src)
    assert half[0] == 150_000
    assert estimate_bytes(Pipeline.parse(["png"]), w, h, src)[0] > resized[0] * 10


# --- 19. Windows device names -----------------------------------------------------------------------------------
def test_windows_device_names_are_made_safe(cfx: CfxRun, tmp_path: Path) -> None:
    from cfx.safenames import safe_names

    devices = ["nul", "aux.txt", "CON", "com1", "lpt9.png", "prn", "name."]
    safe = safe_names([*devices, "console", "nullable"])
    assert safe["console"] == "console" and safe["nullable"] == "nullable"  # only the devices change
    for d in devices:
        stem = safe[d].split(".", 1)[0].lower()
        assert stem not in {"nul", "aux", "con", "com1", "lpt9", "prn"} and not safe[d].endswith("."), safe[d]
    recs = rows(4)
    for r, name in zip(recs, ["nul", "aux.txt", "com1", "ok/model"], strict=True):
        r["model_name"] = name
    src = _write(tmp_path / "w", recs)
    out = tmp_path / "out"
    assert cfx("export", str(src), "--format", "cf", "--out", str(out)).returncode == 0
    folders = {p.name for p in (out / "train").iterdir() if p.is_dir()}
    assert folders == {
        safe_names(["nul", "aux.txt", "com1", "ok/model"])[n] for n in ("nul", "aux.txt", "com1", "ok/model")
    }
    assert all(f.startswith("_") for f in folders if not f.startswith("ok"))


# --- 20. export --shuffle / --shard-size with folder formats ----------------------------------------------------
@pytest.mark.parametrize("option", [["--shuffle"], ["--shard-size", "10MB"]])
@pytest.mark.parametrize("fmt", ["cf", "imagefolder", "cnndetection"])
def test_export_webdataset_options_with_folder_formats_are_refused(
    cfx: CfxRun, data: Path, tmp_path: Path, option: list[str], fmt: str
) -> None:
    run = cfx("export", str(data), "--format", fmt, "--out", str(tmp_path / "o"), *option)
    assert run.returncode == ExitCode.USAGE, run.stderr
    assert f"{option[0]} applies to --format webdataset only" in run.stderr
    assert not (tmp_path / "o").exists()


# --- 21. one source of truth for a row's file size ----------------------------------------------------------------
def test_balance_num_bytes_and_audit_read_the_same_file_sizes(cfx: CfxRun, tmp_path: Path) -> None:
    recs = _mixed(8, 8)
    for i, r in enumerate(recs):
        r["image_data"] = png(i, size=16 if i < 8 else 24)  # file size separates the classes
    src = _write(tmp_path / "fs", recs)
    assert cfx("inspect", str(src), "-o", str(tmp_path / "i.parquet")).returncode == 0  # fills the cache
    audit = _json(cfx("audit", str(src), "--json"))
    size = next(f for f in audit["features"] if f["feature"] == "file_size")
    assert size["rows"] == 16 and size["auroc"] == 1.0
    # balance on the same (un-inspected) source reads the same sizes: not "unknown for every row"
    run = cfx("balance", str(src), "--match", "num-bytes:100", "--json")
    assert run.returncode == ExitCode.EMPTY, run.stderr  # sizes known, and no bin holds both classes
    assert "num_bytes is unknown" not in run.stderr and "match num-bytes" in run.stderr
    wide = _json(
        cfx("balance", str(src), "--match", "num-bytes:100000", "-o", str(tmp_path / "b.parquet"), "--json")
    )
    assert wide["result"]["rows"] == 16


# --- 22. empty option values ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["split", "{src}", "--by", ""],
        ["split", "{src}", "--names", " , "],
        ["split", "{src}", "--column", ""],
        ["split", "{src}", "--resolve", ""],
        ["balance", "{src}", "--match", ""],
        ["balance", "{src}", "--match", "jpeg-quality:"],
        ["balance", "{src}", "--stratify", " "],
        ["export", "{src}", "--format", "cf", "--out", "{tmp}/o", "--category", ""],
        ["dedupe", "{src}", "--scope", ""],
    ],
)
def test_empty_option_values_are_refused(cfx: CfxRun, data: Path, tmp_path: Path, args: list[str]) -> None:
    argv = [a.format(src=data, tmp=tmp_path) for a in args]
    run = cfx(*argv)
    assert run.returncode == ExitCode.USAGE, (argv, run.stderr)
    assert re.search(r"was given no value|is empty", run.stderr), run.stderr
    assert not (tmp_path / "o").exists()


# --- docs/reliability.md stays in step with these tests ----------------------------------------------------------
def test_results_table_names_existing_tests() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    section = text.split("## Results and messages", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    named = set(re.findall(r"`(test_\w+)`", table))
    here = {name for name in globals() if name.startswith("test_")}
    assert named - here == set(), "named in docs/reliability.md but not a test here"
    assert here - named == set(), "tests here missing from the table in docs/reliability.md"
