"""Reliability of the input side (issue 11): hostile shards, stdin, option values, pipes and exit codes.

Every test runs real parquet shards written by pyarrow (tests/shards.py) through the real CLI in a
subprocess (the ``cfx`` fixture: real pipes, real exit codes, real signals). docs/reliability.md lists each
case with the test that protects it; ``test_reliability_table_names_existing_tests`` keeps the two in step.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

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


_EXIT_CASES: dict[int, Callable[[Path, Path], list[str]]] = {
    0: _case_ok,
    2: _case_usage,
    3: _case_input,
    4: _case_network,
    5: _case_empty,
    6: _case_partial,
    7: _case_output,
    130: lambda data, tmp: [],  # test_sigint_exits_130
    141: lambda data, tmp: [],  # test_broken_pipe_is_quiet_141
}


@pytest.mark.parametrize("code", [c for c in _EXIT_CASES if c not in (130, 141)])
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
