"""cfx slice: the --rows parser (against `datasets`), shards, where, seeded samples, outputs and bad input."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.ipc as ipc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfx.errors import EmptySelectionError, UsageError
from cfx.load import load_manifest
from cfx.manifest import Manifest, read_manifest
from cfx.shardspec import parse_shard_spec, shard_number
from cfx.slice import (
    SliceSpec,
    parse_rows_spec,
    parse_sample,
    random_keys,
    row_positions,
    sample_rows,
    slice_manifest,
)
from tests.shards import rows, write_shard


@dataclass
class _Res:
    returncode: int
    out: str
    stderr: str


def cli(*args: str) -> _Res:
    """`cfx ARGS` in-process (fast; exit code, stdout and stderr as the user sees them)."""
    from typer.testing import CliRunner

    from cfx.cli import app

    r = CliRunner().invoke(app, list(args), prog_name="cfx")
    return _Res(r.exit_code, r.stdout, r.stderr)


# --- --rows against the reference: datasets.ReadInstruction --------------------------------------------
def _reference(spec: str, n: int) -> list[int]:
    from datasets import ReadInstruction

    parts = [p if p.startswith("train") else "train" + p for p in spec.split("+")]
    instr = ReadInstruction.from_spec("+".join(parts))
    out: list[int] = []
    for a in instr.to_absolute({"train": n}):
        out.extend(range(a.from_, a.to))
    return list(dict.fromkeys(out))  # cfx keeps a row named twice once


@st.composite
def _part(draw: st.DrawFn, pct: bool) -> str:
    bound = st.integers(-100, 100) if pct else st.integers(-300, 300)
    unit = "%" if pct else ""
    a = draw(st.one_of(st.none(), bound))
    b = draw(st.one_of(st.none(), bound))
    return "[" + ("" if a is None else f"{a}{unit}") + ":" + ("" if b is None else f"{b}{unit}") + "]"


@st.composite
def _spec(draw: st.DrawFn) -> str:
    k = draw(st.integers(1, 3))
    return "+".join(draw(_part(draw(st.booleans()))) for _ in range(k))


@settings(max_examples=300, deadline=None)
@given(spec=_spec(), n=st.integers(0, 2000))
def test_rows_spec_agrees_with_datasets(spec: str, n: int) -> None:
    assert row_positions(spec, n).tolist() == _reference(spec, n)


@settings(max_examples=100, deadline=None)
@given(a=st.integers(0, 100), b=st.integers(0, 100), n=st.integers(100, 5000))
def test_pct1_dropremainder_agrees_with_datasets(a: int, b: int, n: int) -> None:
    spec = f"[{a}%:{b}%](pct1_dropremainder)"
    assert row_positions(spec, n).tolist() == _reference(spec, n)


def test_rows_examples() -> None:
    assert row_positions("[:10%]", 50).tolist() == list(range(5))
    assert row_positions("[100:200]", 150).tolist() == list(range(100, 150))
    assert row_positions("[-5%:]", 100).tolist() == list(range(95, 100))
    assert row_positions("[:10%]+[-10%:]", 20).tolist() == [0, 1, 18, 19]
    assert row_positions("train[2:4]", 10).tolist() == [2, 3]
    assert row_positions("[:2] + [:3]", 10).tolist() == [0, 1, 2]  # overlap kept once


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "[1:x]",
        "[:10%",
        "10%",
        "[1:2]+",
        "[5%:10]",
        "[:150%]",
        "[1:2](closest)",
        "[:5%](bogus)",
        "test[:5]",
    ],
)
def test_malformed_rows(spec: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_rows_spec(spec)
    assert "--rows" in err.value.message and err.value.hint


# --- samples ----------------------------------------------------------------------------------------
def _manifest(n: int, groups: int = 3) -> Manifest:
    df = pl.DataFrame(
        {
            "shard": [f"data/HFCF_small_{i % 4}.parquet" for i in range(n)],
            "row": list(range(n)),
            "label": [i % 2 for i in range(n)],
            "model_name": [f"gen/{i % groups}" if i % 2 else "" for i in range(n)],
            "width": [256 + 256 * (i % 3) for i in range(n)],
        },
        schema_overrides={"label": pl.Int8},
    )
    return Manifest(df=df, root="/nowhere")


def test_random_keys_are_a_fixed_stream() -> None:
    # Golden values: PCG64 + Generator.random are specified bit for bit, so every machine and numpy
    # version must give exactly these (if not, seeded samples would differ across machines).
    assert random_keys(3, 0).tolist() == [0.6369616873214543, 0.2697867137638703, 0.04097352393619469]


def test_sample_golden() -> None:
    m = _manifest(40)
    got = sample_rows(m.df, 5, seed=7).get_column("row").to_list()
    keys = random_keys(40, 7)
    assert got == sorted(np.argsort(keys)[:5].tolist())
    assert got == sample_rows(m.df, 5, seed=7).get_column("row").to_list()
    assert got != sample_rows(m.df, 5, seed=8).get_column("row").to_list()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 400), groups=st.integers(1, 7), k=st.integers(1, 400), seed=st.integers(0, 2**32))
def test_stratified_sample_is_proportional(n: int, groups: int, k: int, seed: int) -> None:
    df = _manifest(n, groups).df
    out = sample_rows(df, k, seed, stratify="model_name")
    assert out.height == min(k, n)
    assert out.get_column("row").is_unique().all()
    assert out.get_column("row").is_sorted()  # input order kept
    sizes = df.group_by("model_name").len()
    got = dict(out.group_by("model_name").len().iter_rows())
    for name, size in sizes.iter_rows():
        share = size * min(k, n) / n
        assert abs(got.get(name, 0) - share) < 1 + 1e-9
    assert out.equals(sample_rows(df, k, seed, stratify="model_name"))


def test_sample_fraction_and_parse() -> None:
    assert parse_sample("500") == 500
    assert parse_sample("0.25") == 0.25
    assert parse_sample("10%") == 0.1
    for bad in ("x", "0", "1.5", "-3", "0%"):
        with pytest.raises(UsageError):
            parse_sample(bad)
    assert sample_rows(_manifest(40).df, 0.25, seed=1).height == 10


def test_shard_spec_is_the_shared_one() -> None:
    assert parse_shard_spec("0-3,7") == [0, 1, 2, 3, 7]
    assert shard_number("data/HFCF_small_12.parquet") == 12


def test_slice_steps_in_order() -> None:
    m = _manifest(100)
    result = slice_manifest(
        m, SliceSpec(shards="0-1", rows="[:50%]", where="width >= 512", sample=10, seed=3, head=4)
    )
    df = result.manifest.df
    assert [s.name.split()[0] for s in result.steps] == [
        "--shards",
        "--rows",
        "--where",
        "--sample",
        "--head",
    ]
    in_shards = [i for i in range(100) if i % 4 in (0, 1)]
    first_half = in_shards[:25]
    wide = [i for i in first_half if 256 + 256 * (i % 3) >= 512]
    assert [s.after for s in result.steps] == [50, 25, len(wide), 10, 4]
    assert set(df.get_column("row")) <= set(wide)
    assert df.height == 4
    assert set(df.get_column("shard")) <= {"data/HFCF_small_0.parquet", "data/HFCF_small_1.parquet"}
    assert (df.get_column("width") >= 512).all()
    assert result.manifest.history[-1].startswith("slice ")


def test_slice_keeps_extra_columns_and_empty_names_the_step() -> None:
    m = _manifest(20)
    m = m.with_df(m.df.with_columns(pl.lit("cc-by-4.0").alias("license")))
    assert "license" in slice_manifest(m, SliceSpec(head=3)).manifest.df.columns
    with pytest.raises(EmptySelectionError) as err:
        slice_manifest(m, SliceSpec(rows="[:10]", where="width > 10000"))
    assert "--where width > 10000 left no rows" in err.value.message
    assert "--rows [:10]: 20 → 10" in err.value.message


def test_where_errors() -> None:
    m = _manifest(10)
    for bad in ("width >>> 3", "nope = 1", "width"):
        with pytest.raises(UsageError) as err:
            slice_manifest(m, SliceSpec(where=bad))
        assert "--where" in err.value.message


# --- CLI ------------------------------------------------------------------------------------------
@pytest.fixture
def small(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for i in range(3):
        write_shard(
            root / "data" / f"HFCF_small_{i}.parquet", rows(10, label=1 if i < 2 else 0, start=i * 10)
        )
    return root


def test_cli_slice_outputs(cfx, small: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "s.parquet"
    r = cfx("slice", str(small), "--rows", "[:10%]+[-10%:]", "-o", str(out))
    assert r.returncode == 0, r.stderr
    m = read_manifest(out)
    assert m.df.select("shard", "row").rows() == [
        ("data/HFCF_small_0.parquet", 0),
        ("data/HFCF_small_0.parquet", 1),
        ("data/HFCF_small_0.parquet", 2),
        ("data/HFCF_small_2.parquet", 7),
        ("data/HFCF_small_2.parquet", 8),
        ("data/HFCF_small_2.parquet", 9),
    ]
    assert "--rows [:10%]+[-10%:]: 30 → 6 rows" in r.stderr
    # Arrow IPC on a pipe, readable by the next command
    r = cfx("slice", str(small), "--shards", "1", "--head", "4")
    assert r.returncode == 0, r.stderr
    table = ipc.open_stream(io.BytesIO(r.stdout)).read_all()
    assert table.column("row").to_pylist() == [0, 1, 2, 3]
    assert set(table.column("shard").to_pylist()) == {"data/HFCF_small_1.parquet"}
    r2 = cfx("stats", "-", "--json", input=r.stdout)
    assert json.loads(r2.out)["totals"]["rows"] == 4
    # text formats for jq / awk
    r = cfx("slice", str(small), "--where", "label = 0", "--format", "jsonl", "--columns", "shard,row,label")
    lines = [json.loads(x) for x in r.out.splitlines()]
    assert len(lines) == 10 and lines[0] == {"shard": "data/HFCF_small_2.parquet", "row": 0, "label": 0}
    r = cfx("slice", str(small), "--head", "2", "--format", "csv", "--columns", "row,image_name")
    assert r.out.splitlines() == ["row,image_name", "0,00000000.png", "1,00000001.png"]


def test_cli_same_seed_same_rows(cfx, small: Path) -> None:  # type: ignore[no-untyped-def]
    args = ("slice", str(small), "--sample", "7", "--seed", "11", "--format", "csv", "--columns", "shard,row")
    a, b = cfx(*args), cfx(*args)
    assert a.returncode == 0 and a.out == b.out and len(a.out.splitlines()) == 8
    assert cfx(*args[:-4], "--seed", "12", "--format", "csv").out != a.out
    # and in-process gives the same rows as the CLI (no hidden state)
    m = load_manifest(str(small))
    rows_ = slice_manifest(m, SliceSpec(sample=7, seed=11)).manifest.df.select("shard", "row").rows()
    assert ["shard,row", *[f"{s},{r}" for s, r in rows_]] == a.out.splitlines()


def test_cli_bad_input(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    r = cli("slice", str(small), "--rows", "[1:x]", "-o", str(out))
    assert r.returncode == 2 and "Error: --rows '[1:x]'" in r.stderr and not out.exists()
    r = cli("slice", str(small), "--where", "label = = 1", "-o", str(out))
    assert r.returncode == 2 and "Error: --where" in r.stderr and not out.exists()
    r = cli("slice", str(small), "--where", "architecture = 'GAN'", "-o", str(out))
    assert r.returncode == 5 and "the selection is empty" in r.stderr and not out.exists()
    r = cli("slice", str(small), "--format", "csv", "--columns", "nope")
    assert r.returncode == 2 and "--columns: no such column(s) nope" in r.stderr
    r = cli("slice", str(small), "--stratify", "label")
    assert r.returncode == 2 and "--stratify needs --sample" in r.stderr
