"""Reliability of the input side (issue 11): hostile shards, stdin, option values, pipes and exit codes.

Every test runs real parquet shards written by pyarrow (tests/shards.py) through the real CLI in a
subprocess (the ``cfx`` fixture: real pipes, real exit codes, real signals). docs/reliability.md lists each
case with the test that protects it; ``test_reliability_table_names_existing_tests`` keeps the two in step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from cfx.errors import ExitCode
from tests.conftest import ROOT, Run
from tests.shards import rows, write_shard

CfxRun = Callable[..., Run]


def _dataset(root: Path, n_shards: int = 2, n_rows: int = 6) -> Path:
    for i in range(n_shards):
        write_shard(root / "data" / f"HFCF_small_{i}.parquet", rows(n_rows, start=i * n_rows))
    return root


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return _dataset(tmp_path / "ds")


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CFX_DEBUG", None)
    return env


# --- "Also": the README table of exit codes is the single source ------------------------------------
def _readme_exit_codes() -> dict[int, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Errors and exit codes", 1)[1].split("\n## ", 1)[0]
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \| (.+) \|$", section, re.M)}


def test_readme_exit_code_table_matches_exit_code_enum() -> None:
    table = _readme_exit_codes()
    assert table, "no exit-code table found in README.md"
    assert sorted(table) == sorted(int(c) for c in ExitCode)


def test_every_exit_code_has_a_cli_case() -> None:
    # Keeps test_cli_exit_code (below) in step with the table: a new code needs a case.
    assert set(_readme_exit_codes()) - {1} == set(_EXIT_CASES)


def _case_ok(data: Path, tmp: Path) -> list[str]:
    return ["slice", str(data), "--head", "1", "--format", "jsonl"]


def _case_usage(data: Path, tmp: Path) -> list[str]:
    return ["slice", str(data), "--head", "-1"]


def _case_input(data: Path, tmp: Path) -> list[str]:
    return ["stats", str(tmp / "no-such-folder")]


def _case_network(data: Path, tmp: Path) -> list[str]:
    return ["stats", "hf://datasets/cfx-tests/nothing-here"]


def _case_empty(data: Path, tmp: Path) -> list[str]:
    return ["subset", str(data), "--out", str(tmp / "out"), "--where", "row < 0"]


def _case_partial(data: Path, tmp: Path) -> list[str]:
    (data / "data" / "HFCF_small_9.parquet").write_bytes(b"PAR1 truncated")
    return ["stats", str(data)]


def _case_output(data: Path, tmp: Path) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "keep.txt").write_text("x")
    return ["subset", str(data), "--out", str(tmp / "out")]


def _case_shortcut(data: Path, tmp: Path) -> list[str]:
    # both labels, the format column alone separates them (AUROC 1 > 0.9)
    mixed = [{**r, "format": "JPEG"} for r in rows(6, label=0)] + rows(6, label=1, start=6)
    write_shard(tmp / "mixed" / "data" / "HFCF_small_0.parquet", mixed)
    return ["audit", str(tmp / "mixed"), "--no-joint", "--fail-above", "0.9"]


_EXIT_CASES: dict[int, Callable[[Path, Path], list[str]]] = {
    0: _case_ok,
    2: _case_usage,
    3: _case_input,
    4: _case_network,
    5: _case_empty,
    6: _case_partial,
    7: _case_output,
    8: lambda data, tmp: ["leaks", str(data), str(data), "--fail-on-leak"],  # a set leaks into itself
    9: _case_shortcut,
    130: lambda data, tmp: [],  # test_sigint_exits_130
    141: lambda data, tmp: [],  # test_broken_pipe_is_quiet_141
    143: lambda data, tmp: [],  # tests/test_process_signals.py::test_sigterm_stops_dedupe_with_143_no_orphan_no_traceback
}


@pytest.mark.parametrize("code", [c for c in _EXIT_CASES if c not in (130, 141, 143)])
def test_cli_exit_code(code: int, cfx: CfxRun, data: Path, tmp_path: Path) -> None:
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    run = cfx(*_EXIT_CASES[code](data, tmp_path), env=env)
    assert run.returncode == code, run.stderr
    assert "Traceback" not in run.stderr
    if code:
        assert run.stderr.startswith("Error: ") or "\nError: " in run.stderr, run.stderr


def test_internal_error_exits_1_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from cfx.cli._errors import handle_errors

    @handle_errors
    def broken() -> None:
        raise RuntimeError("boom")

    with pytest.raises(typer.Exit) as exc:
        broken()
    assert exc.value.exit_code == ExitCode.FAILURE
    assert "this is a bug in cfx" in capsys.readouterr().err


def test_sigint_exits_130(data: Path) -> None:
    # `cfx stats -` waits on an open, empty stdin: a real SIGINT interrupts it.
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfx", "stats", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert b"Traceback" not in err


# --- item 9: broken pipe --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "head"),
    [(["slice", "{data}", "--format", "jsonl"], ["head", "-1"]), (["slice", "{data}"], ["head", "-c", "1"])],
    ids=["jsonl|head-1", "arrow|head-c1"],
)
def test_broken_pipe_is_quiet_141(args: list[str], head: list[str], tmp_path: Path) -> None:
    data = _dataset(tmp_path / "big", n_shards=2, n_rows=400)  # far more than a pipe buffer holds
    argv = [a.replace("{data}", str(data)) for a in args]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfx", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env()
    )
    assert proc.stdout is not None
    reader = subprocess.run(head, stdin=proc.stdout, capture_output=True, timeout=120)
    proc.stdout.close()  # only `head` held the read end: now that it exited, the pipe is broken
    _, err = proc.communicate(timeout=120)
    assert reader.returncode == 0 and reader.stdout
    assert proc.returncode == ExitCode.BROKEN_PIPE, err
    assert err.decode().strip() == ""


def test_broken_pipe_in_rich_output_is_quiet_141(data: Path) -> None:
    # A reader that is gone before cfx prints its table (rich would exit 1 on its own).
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.run(
        [sys.executable, "-m", "cfx", "stats", str(data), "--by", "model_name"],
        stdout=write_end,
        stderr=subprocess.PIPE,
        env=_env(),
        timeout=120,
    )
    os.close(write_end)
    assert proc.returncode == ExitCode.BROKEN_PIPE, proc.stderr
    assert proc.stderr.decode().strip() == ""


# --- item 11: huge --shards ranges are intersected, never expanded ---------------------------------------
def test_huge_shard_range_is_intersected_not_expanded(cfx: CfxRun, data: Path) -> None:
    start = time.monotonic()
    run = cfx("slice", str(data), "--shards", "1-99999999999", "--format", "jsonl", "--columns", "shard")
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - start < 30
    assert set(run.out.split()) == {'{"shard":"data/HFCF_small_1.parquet"}'}
    assert "Warning" not in run.stderr  # the open end past the last shard is not "missing"


def test_shard_set_never_materialises_a_range() -> None:
    from cfx.shardspec import ShardSet, parse_shard_set

    wanted = parse_shard_set("3,0-99999999999,7")
    assert wanted.ranges == ((0, 99999999999),) and len(wanted) == 10**11
    assert wanted.intersect([5, None, 10**12, 42]) == [5, 42]
    assert str(wanted.without([0, 5]).up_to(9)) == "1-4,6-9"
    assert ShardSet.of([4, 2, 3, 9]).ranges == ((2, 4), (9, 9))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0-99999999999999999999999", "beyond any shard number"),
        (",".join(map(str, range(20_000))), "too many"),
    ],
    ids=["beyond-int64", "too-many-items"],
)
def test_absurd_shard_spec_is_refused(cfx: CfxRun, data: Path, spec: str, message: str) -> None:
    run = cfx("slice", str(data), "--shards", spec, "--format", "jsonl")
    assert run.returncode == ExitCode.USAGE
    assert message in run.stderr and "Traceback" not in run.stderr


# --- item 12: numeric options are range-checked at the option layer ---------------------------------------
@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (["slice", "{data}", "--head", "99999999999999999999"], "allowed 0 to 9223372036854775807"),
        (["slice", "{data}", "--sample", "3", "--seed", "-1"], "allowed 0 to 9223372036854775807"),
        (["subset", "{data}", "--out", "x", "--seed", "99999999999999999999"], "allowed 0 to"),
        (["subset", "{data}", "--out", "x", "--max-per-generator", "0"], "allowed 1 to"),
        (["subset", "{data}", "--out", "x", "--row-group-size", "0"], "allowed 1 to 2147483647"),
        (["stats", "{data}", "--workers", "100000"], "allowed 1 to 1024"),
        (["stats", "{data}", "--top", "0"], "allowed 1 to"),
        (["balance", "{data}", "--per-generator", "-5"], "allowed 1 to"),
        (["balance", "{data}", "--min-per-generator", "99999999999999999999"], "allowed 1 to"),
        (["audit", "{data}", "--threshold", "nan"], "allowed 0.5 to 1.0"),
        (["synth", "{data}-new", "--shards", "99999999999"], "allowed 1 to 100000"),
    ],
    ids=lambda v: " ".join(v[:3]) if isinstance(v, list) else None,
)
def test_numeric_option_out_of_range_exits_2_with_range(
    cfx: CfxRun, data: Path, args: list[str], allowed: str
) -> None:
    run = cfx(*[a.replace("{data}", str(data)) for a in args])
    assert run.returncode == ExitCode.USAGE, run.stderr
    assert allowed in run.stderr and "Traceback" not in run.stderr


def test_numeric_options_accept_their_bounds(cfx: CfxRun, data: Path) -> None:
    top = str(2**63 - 1)
    run = cfx("slice", str(data), "--sample", "3", "--seed", top, "--head", top, "--format", "jsonl")
    assert run.returncode == 0, run.stderr
    assert len(run.out.splitlines()) == 3


# --- item 6: null / empty image_data is a bad row, never a crash -----------------------------------------
def _null_image_dataset(root: Path) -> Path:
    records = rows(8)
    records[1]["image_data"] = None
    records[5]["image_data"] = b""
    write_shard(root / "data" / "HFCF_small_0.parquet", records)
    return root


def _subset_rows(out: Path) -> dict[str, bytes | None]:
    import pyarrow.parquet as pq

    got: dict[str, bytes | None] = {}
    for f in sorted((out / "data").glob("*.parquet")):
        t = pq.read_table(f)
        got.update(zip(t.column("image_name").to_pylist(), t.column("image_data").to_pylist(), strict=True))
    return got


def test_subset_keeps_null_image_rows_as_they_are(cfx: CfxRun, tmp_path: Path) -> None:
    data = _null_image_dataset(tmp_path / "ds")
    run = cfx("subset", str(data), "--out", str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr
    assert "2 row(s) have null or empty image_data" in run.stderr and "row 1" in run.stderr
    got = _subset_rows(tmp_path / "out")
    assert len(got) == 8 and got["00000001.png"] is None and got["00000005.png"] == b""
    import polars as pl

    manifest = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert manifest.get_column("num_bytes").to_list()[1] is None


@pytest.mark.parametrize("order", ["source", "shuffle"])
def test_subset_drop_bad_images_leaves_them_out(cfx: CfxRun, tmp_path: Path, order: str) -> None:
    data = _null_image_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    run = cfx(
        "subset", str(data), "--out", str(out), "--drop-bad-images", "--order", order, "--with-provenance"
    )
    assert run.returncode == 0, run.stderr
    assert "dropped 2 row(s)" in run.stderr
    got = _subset_rows(out)
    expected = {r["image_name"]: r["image_data"] for r in rows(8)}
    assert got == {k: v for k, v in expected.items() if k not in ("00000001.png", "00000005.png")}
    import polars as pl

    manifest = pl.read_parquet(out / "manifest.parquet")
    assert sorted(manifest.get_column("source_row").to_list()) == [0, 2, 3, 4, 6, 7]
    assert manifest.get_column("num_bytes").null_count() == 0


def test_subset_drop_bad_images_of_only_bad_rows_is_empty(cfx: CfxRun, tmp_path: Path) -> None:
    data = _null_image_dataset(tmp_path / "ds")
    run = cfx("subset", str(data), "--out", str(tmp_path / "out"), "--drop-bad-images", "--where", "row = 1")
    assert run.returncode == ExitCode.EMPTY, run.stderr
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no DIR.tmp-* left


def test_dedupe_records_null_images_as_hash_errors(cfx: CfxRun, tmp_path: Path) -> None:
    import polars as pl

    data = _null_image_dataset(tmp_path / "ds")
    run = cfx("dedupe", str(data), "-o", str(tmp_path / "kept.parquet"))
    assert run.returncode == 0, run.stderr
    df = pl.read_parquet(tmp_path / "kept.parquet").sort("row")
    errors = dict(zip(df.get_column("row").to_list(), df.get_column("hash_error").to_list(), strict=True))
    assert errors[1] == "no image data" and errors[5] == "empty image data (0 bytes)"
    assert df.filter(pl.col("row").is_in([1, 5])).get_column("sha256").null_count() == 2
    assert sum(e is not None for e in errors.values()) == 2


def test_hash_images_null_and_empty_never_raise() -> None:
    from cfx.hashing import hash_images

    h = hash_images([None, b"", rows(1)[0]["image_data"]])
    assert list(h.ok) == [False, False, True]
    assert h.error[:2] == ["no image data", "empty image data (0 bytes)"]
    assert h.sha256[:2] == [None, None]  # two empty images are not "exact duplicates"


def test_gallery_thumbnails_of_null_images_say_so(tmp_path: Path) -> None:
    from cfx.gallery import _fetch
    from cfx.load import load_manifest

    data = _null_image_dataset(tmp_path / "ds")
    manifest = load_manifest(str(data))
    shard = manifest.df.get_column("shard")[0]
    thumbs = _fetch(manifest, [(shard, 0), (shard, 1), (shard, 5)], 64)
    assert thumbs[(shard, 1)] == "no image data" and thumbs[(shard, 5)] == "empty image data"
    assert not isinstance(thumbs[(shard, 0)], str)


# --- item 7: schema drift at one mapping layer (cfx.schema.conform_metadata) -------------------------------
def _drifted_shard(path: Path, column: str, field_type: pa.DataType, values: list[Any]) -> Path:
    from cfx.schema import SOURCE_SCHEMA

    records = rows(len(values))
    for r, v in zip(records, values, strict=True):
        r[column] = v
    schema = SOURCE_SCHEMA.set(SOURCE_SCHEMA.get_field_index(column), pa.field(column, field_type))
    return write_shard(path, records, schema)


def _jsonl(run: Run) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.out.splitlines()]


def test_list_resolution_maps_to_width_height(cfx: CfxRun, tmp_path: Path) -> None:
    _drifted_shard(tmp_path / "ds" / "a_0.parquet", "resolution", pa.list_(pa.int64()), [[512, 256], None])
    run = cfx("slice", str(tmp_path / "ds"), "--format", "jsonl", "--columns", "resolution,width,height")
    assert run.returncode == 0, run.stderr
    assert _jsonl(run) == [
        {"resolution": "[512, 256]", "width": 512, "height": 256},
        {"resolution": None, "width": None, "height": None},
    ]


def test_nsfw_flag_strings_map_to_bool(cfx: CfxRun, tmp_path: Path) -> None:
    values = ["True", "false", "1", "0", " YES ", None]
    _drifted_shard(tmp_path / "ds" / "a_0.parquet", "nsfw_flag", pa.string(), values)
    run = cfx("slice", str(tmp_path / "ds"), "--format", "jsonl", "--columns", "nsfw_flag")
    assert run.returncode == 0, run.stderr
    assert [r["nsfw_flag"] for r in _jsonl(run)] == [True, False, True, False, True, None]


@pytest.mark.parametrize(
    ("column", "field_type", "values", "message"),
    [
        ("nsfw_flag", pa.string(), ["True", "maybe"], "row 1: nsfw_flag 'maybe' is not a yes/no value"),
        ("resolution", pa.list_(pa.int64()), [[512, 512], [1, 2, 3]], "row 1: resolution [1, 2, 3]"),
        ("resolution", pa.float64(), [512.0, 1.0], "column 'resolution' has type double"),
        ("label", pa.float64(), [1.0, 0.5], "label column has type Float64"),
    ],
    ids=["nsfw-word", "resolution-triple", "resolution-float", "label-float"],
)
def test_drift_without_one_meaning_is_a_bad_shard_skip_bad_skips(
    cfx: CfxRun, data: Path, column: str, field_type: pa.DataType, values: list[Any], message: str
) -> None:
    _drifted_shard(data / "data" / "HFCF_small_7.parquet", column, field_type, values)
    run = cfx("stats", str(data), "--json")
    assert run.returncode == ExitCode.PARTIAL, run.stderr
    assert "HFCF_small_7.parquet" in run.stderr and message in run.stderr and "Traceback" not in run.stderr
    skipped = cfx("stats", str(data), "--json", "--skip-bad")
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.out)["totals"]["rows"] == 12  # the two good shards
    assert "HFCF_small_7.parquet" in skipped.stderr and "skipped 1 bad shard(s)" in skipped.stderr


def test_duplicated_column_is_a_bad_shard(cfx: CfxRun, data: Path) -> None:
    import pyarrow.parquet as pq

    good = pa.Table.from_pylist(rows(2))
    twice = good.append_column("label", pa.array([0, 1], pa.int64()))
    pq.write_table(twice, data / "data" / "HFCF_small_8.parquet")
    run = cfx("stats", str(data))
    assert run.returncode == ExitCode.PARTIAL
    assert "HFCF_small_8.parquet: column 'label' appears more than once" in run.stderr
    assert cfx("stats", str(data), "--skip-bad").returncode == 0


# --- item 14: zero / negative sizes are invalid metadata ---------------------------------------------------
def test_negative_or_zero_resolution_gives_null_size_and_a_counted_warning(
    cfx: CfxRun, tmp_path: Path
) -> None:
    records = rows(4, label=1) + rows(4, label=0, start=4)
    records[0]["resolution"] = "[-5, 10]"
    records[5]["resolution"] = "[0, 0]"
    records[6]["resolution"] = "unknown"
    write_shard(tmp_path / "ds" / "data" / "HFCF_small_0.parquet", records)
    run = cfx("slice", str(tmp_path / "ds"), "--format", "jsonl", "--columns", "width,height")
    assert run.returncode == 0, run.stderr
    sizes = [(r["width"], r["height"]) for r in _jsonl(run)]
    assert [i for i, s in enumerate(sizes) if s == (None, None)] == [0, 5, 6]
    assert sizes[1] == (32, 32)
    assert "3 row(s) with an unusable resolution" in run.stderr and "'[-5, 10]'" in run.stderr
    audit = cfx("audit", str(tmp_path / "ds"), "--json")
    assert audit.returncode == 0, audit.stderr
    assert json.loads(audit.out)["unusable_sizes"] == 3
    assert "3 row(s) have unusable sizes" in cfx("audit", str(tmp_path / "ds")).out


# --- item 10: garbage or truncated Arrow IPC on stdin ---------------------------------------------------------
def test_truncated_or_garbage_stdin_is_not_a_manifest_exit_3(cfx: CfxRun, tmp_path: Path) -> None:
    data = _dataset(tmp_path / "ds", n_shards=2, n_rows=200)
    whole = subprocess.run(
        [sys.executable, "-m", "cfx", "slice", str(data)], capture_output=True, env=_env(), timeout=120
    ).stdout
    assert len(whole) > 20_000
    for cut in (b"\xff" * 64, whole[:8], whole[:1000], whole[: len(whole) // 2], whole[:-1]):
        run = cfx("stats", "-", input=cut)
        assert run.returncode == ExitCode.INPUT, (len(cut), run.stderr)
        assert "stdin is not a cfx manifest (Arrow IPC stream)" in run.stderr
        assert "Traceback" not in run.stderr and "internal error" not in run.stderr
    assert cfx("stats", "-", input=whole).returncode == 0


def test_truncated_parquet_on_stdin_exit_3(cfx: CfxRun, tmp_path: Path) -> None:
    data = _dataset(tmp_path / "ds")
    manifest = tmp_path / "m.parquet"
    assert cfx("slice", str(data), "-o", str(manifest)).returncode == 0
    run = cfx("stats", "-", input=manifest.read_bytes()[:-100])
    assert run.returncode == ExitCode.INPUT and "not a readable parquet manifest" in run.stderr


# --- item 13: --license-table is recognised by content ---------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("shard.parquet", "shard", "binary column(s) image_data (a dataset shard?)"),
        ("shard.csv", "shard", "binary column(s) image_data (a dataset shard?)"),
        ("table.csv", "random", "is binary data, not a table"),
        ("table.json", "png", "is a PNG image, not a table"),
        ("table.tsv", "arrow", "is an Arrow IPC file"),
    ],
    ids=["shard", "shard-named-csv", "random-bytes", "png-named-json", "arrow-named-tsv"],
)
def test_binary_license_table_is_refused_naming_the_formats(
    cfx: CfxRun, data: Path, tmp_path: Path, name: str, content: str, message: str
) -> None:
    shard = data / "data" / "HFCF_small_0.parquet"
    table = tmp_path / name
    if content == "shard":
        table.write_bytes(shard.read_bytes())
    elif content == "random":
        table.write_bytes(bytes(range(256)) * 40)
    elif content == "png":
        table.write_bytes(rows(1)[0]["image_data"])
    else:
        table.write_bytes(cfx("slice", str(data)).stdout)
    for command in (
        ["licenses", str(data)],
        ["subset", str(data), "--out", str(tmp_path / "o"), "--licenses", "*"],
    ):
        run = cfx(*command, "--license-table", str(table))
        assert run.returncode == ExitCode.INPUT, run.stderr
        assert message in run.stderr and "CSV, TSV, JSON, JSONL (UTF-8 text) or parquet" in run.stderr
        assert "Traceback" not in run.stderr and "internal error" not in run.stderr
    assert shard.read_bytes()[:4] == b"PAR1"


def test_license_table_parquet_named_csv_is_read_as_parquet(cfx: CfxRun, data: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    table = tmp_path / "licences.csv"
    pq.write_table(pa.table({"model_name": ["stabilityai/stable-diffusion-2"], "license": ["mit"]}), table)
    run = cfx("licenses", str(data), "--license-table", str(table), "--json")
    assert run.returncode == 0, run.stderr
    assert "mit" in run.out


# --- "Also": one selection for every selecting command; empty filter values ---------------------------------
@pytest.mark.parametrize("command", ["subset", "download", "slice", "balance", "inspect", "export", "stats"])
def test_every_selecting_command_has_the_same_selection_options(command: str) -> None:
    """A command with any selection option is a selecting command and has all of them."""
    from typer.testing import CliRunner

    from cfx.cli import app
    from cfx.cli._options import SELECTING_COMMANDS, SELECTION_OPTIONS

    help_text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    if command not in SELECTING_COMMANDS:
        assert "--generators" not in help_text, f"{command} selects rows: add it to SELECTING_COMMANDS"
        return
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    shown = set(re.findall(r"(--[a-z][a-z-]+)", result.output))
    assert set(SELECTION_OPTIONS) <= shown, set(SELECTION_OPTIONS) - shown


def test_slice_filters_by_licence(cfx: CfxRun, tmp_path: Path) -> None:
    data = tmp_path / "ds"
    write_shard(data / "data" / "HFCF_small_0.parquet", rows(3) + rows(2, label=0, start=3))
    table = tmp_path / "licences.csv"
    table.write_text("model_name,license\nstabilityai/stable-diffusion-2,cc-by-nc-4.0\n")
    base = [
        "slice",
        str(data),
        "--license-table",
        str(table),
        "--format",
        "jsonl",
        "--columns",
        "row,license",
    ]
    kept = cfx(*base, "--exclude-licenses", "*-nc-*")
    assert kept.returncode == 0, kept.stderr
    assert [r["row"] for r in _jsonl(kept)] == [3, 4]  # the real rows (COCO) stay
    only_nc = cfx(*base, "--licenses", "cc-by-nc-4.0")
    assert [r["row"] for r in _jsonl(only_nc)] == [0, 1, 2]
    commercial = cfx(*base, "--commercial-only", "--labels", "generated")
    assert commercial.returncode == ExitCode.EMPTY and "--commercial-only" in commercial.stderr


@pytest.mark.parametrize(
    "option", ["--generators", "--architectures", "--labels", "--real-sources", "--licenses", "--where"]
)
@pytest.mark.parametrize("command", ["slice", "subset"])
def test_empty_filter_value_is_a_usage_error(
    cfx: CfxRun, data: Path, tmp_path: Path, command: str, option: str
) -> None:
    out = ["--format", "jsonl"] if command == "slice" else ["--out", str(tmp_path / "o")]
    run = cfx(command, str(data), *out, option, " , " if option != "--where" else " ")
    assert run.returncode == ExitCode.USAGE, run.stderr
    assert option in run.stderr and "leave" in run.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_label_is_a_bad_shard_exit_6_as_the_table_says(cfx: CfxRun, data: Path) -> None:
    records = rows(3)
    records[2]["label"] = 7
    write_shard(data / "data" / "HFCF_small_5.parquet", records)
    run = cfx("stats", str(data))
    assert run.returncode == ExitCode.PARTIAL
    assert "HFCF_small_5.parquet: row 2: unknown label 7" in run.stderr
    assert "unknown label" in _readme_exit_codes()[int(ExitCode.PARTIAL)]
    assert cfx("stats", str(data), "--skip-bad").returncode == 0


# --- no hostile input changes a byte of an input file --------------------------------------------------------
def test_hostile_inputs_leave_every_input_file_unchanged(cfx: CfxRun, tmp_path: Path) -> None:
    import hashlib

    data = _null_image_dataset(tmp_path / "ds")
    _drifted_shard(data / "data" / "HFCF_small_1.parquet", "nsfw_flag", pa.string(), ["True", "maybe"])
    (data / "data" / "HFCF_small_2.parquet").write_bytes(b"PAR1 cut short")
    table = tmp_path / "licences.csv"
    table.write_bytes((data / "data" / "HFCF_small_0.parquet").read_bytes())

    def digests() -> dict[str, str]:
        files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    before = digests()
    for args in (
        ["subset", str(data), "--out", str(tmp_path / "o1"), "--skip-bad", "--drop-bad-images"],
        [
            "subset",
            str(data),
            "--out",
            str(tmp_path / "o2"),
            "--license-table",
            str(table),
            "--licenses",
            "*",
        ],
        ["slice", str(data), "--shards", "0-99999999999", "--skip-bad", "--format", "jsonl"],
        ["slice", str(data), "--head", "99999999999999999999"],
        ["dedupe", str(data), "--skip-bad"],
        ["audit", str(data), "--skip-bad"],
    ):
        run = cfx(*args)
        assert "Traceback" not in run.stderr and "internal error" not in run.stderr, (args, run.stderr)
    after = {k: v for k, v in digests().items() if k in before}
    assert after == before


# --- docs/reliability.md stays in step with these tests ----------------------------------------------------------
def test_reliability_table_names_existing_tests() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    section = text.split("## Inputs and exit codes", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(test_\w+)`", section))
    here = {name for name in globals() if name.startswith("test_")}
    assert named, "no test named in docs/reliability.md"
    assert named <= here, f"named in docs/reliability.md but not a test: {sorted(named - here)}"
    untabled = here - named - {"test_reliability_table_names_existing_tests"}
    assert not untabled, f"tests without a row in docs/reliability.md: {sorted(untabled)}"
