"""`balance --match` on byte facts: jpeg-quality bins, chroma-subsampling, actual-format (issue 12 §3)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from cfx.audit import audit
from cfx.balance import BalanceOptions, MatchSpec, balance, parse_match
from cfx.errors import InputError, UsageError
from cfx.manifest import Manifest
from tests.test_balance import make_manifest


def with_facts(m: Manifest, seed: int = 0) -> Manifest:
    """Byte facts in the GenImage / CF shape: real JPEG q 85–100 mostly 4:2:0; generated PNG, some JPEG q 60–100."""
    rng = np.random.default_rng(seed)
    n = m.df.height
    real = (m.df.get_column("label") == 0).to_numpy()
    jpeg = np.where(real, rng.random(n) < 0.85, rng.random(n) < 0.35)
    quality = np.where(real, rng.integers(85, 101, n), rng.integers(60, 101, n))
    sub = np.where(rng.random(n) < 0.8, "4:2:0", "4:4:4")
    df = m.df.with_columns(
        actual_format=pl.Series(np.where(jpeg, "JPEG", "PNG")),
        jpeg_quality=pl.Series(np.where(jpeg, quality, 0)).cast(pl.Int16),
        chroma_subsampling=pl.Series(np.where(jpeg, sub, "")),
    ).with_columns(
        pl.when(pl.col("actual_format") == "JPEG").then(pl.col(c)).alias(c)
        for c in ("jpeg_quality", "chroma_subsampling")
    )
    return m.with_df(df)


def _bins(df: pl.DataFrame) -> pl.DataFrame:
    q = pl.when(pl.col("jpeg_quality").is_not_null()).then((pl.col("jpeg_quality") - 1) // 5)
    return df.group_by(q.alias("q"), "chroma_subsampling", "actual_format").agg(
        (pl.col("label") == 0).sum().alias("real"), (pl.col("label") == 1).sum().alias("gen")
    )


def test_parse_byte_fact_matches() -> None:
    cols = ["jpeg_quality", "actual_format", "chroma_subsampling"]
    assert parse_match("jpeg-quality:5", cols) == MatchSpec("jpeg-quality", 5.0)
    assert parse_match("quality:5", cols) == MatchSpec("jpeg-quality", 5.0)
    assert parse_match("jpeg_quality", cols) == MatchSpec("jpeg-quality", None)
    assert parse_match("subsampling", cols) == MatchSpec("chroma-subsampling", None)
    assert parse_match("actual_format", cols) == MatchSpec("actual-format", None)
    for spec in ("chroma-subsampling:2", "actual-format:1"):
        with pytest.raises(UsageError, match="categorical"):
            parse_match(spec, cols)


def test_quality_bins_of_five() -> None:
    df = pl.DataFrame(
        {"actual_format": ["JPEG"] * 5 + ["PNG", None], "jpeg_quality": [1, 5, 6, 96, 100, None, None]}
    )
    got = df.select(MatchSpec("jpeg-quality", 5.0).expr(df.columns)).to_series().to_list()
    assert got == ["0", "0", "1", "19", "19", "none", None]  # 1-5, 6-10, …, 96-100; PNG alone; not inspected


def test_match_on_byte_facts_equalises_every_bin() -> None:
    m = with_facts(make_manifest(n_gen=1500, n_real=1500, seed=5))
    before = {f.feature: f.auroc for f in audit(m).features}
    assert before["jpeg_quality"] > 0.6 and before["actual_format"] > 0.6  # flagged
    specs = [parse_match(s, m.df.columns) for s in ("jpeg-quality:5", "chroma-subsampling", "actual-format")]
    res = balance(m, BalanceOptions(match=specs))
    per_bin = _bins(res.manifest.df)
    assert (per_bin.get_column("real") == per_bin.get_column("gen")).all()
    assert [s.name for s in res.steps][1:4] == [
        "match jpeg-quality:5",
        "match chroma-subsampling",
        "match actual-format",
    ]
    after = {f.feature: f.auroc for f in audit(res.manifest).features}
    assert after["actual_format"] == pytest.approx(0.5) and after["chroma_subsampling"] == pytest.approx(0.5)
    assert after["jpeg_quality"] < 0.56  # equal counts per 5-wide bin; within a bin quality may differ


def test_missing_byte_facts_name_inspect() -> None:
    m = make_manifest()
    with pytest.raises(InputError, match="cfx inspect"):
        balance(m, BalanceOptions(match=[MatchSpec("jpeg-quality", 5.0)]))


def test_cli_inspects_on_the_fly(cfx: Callable[..., Any], cf_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.parquet"
    run = cfx(
        "balance",
        str(cf_small),
        "--match",
        "jpeg-quality:5",
        "--match",
        "actual-format",
        "--json",
        "-o",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.out)["match"] == ["jpeg-quality:5", "actual-format"]
    df = pl.read_parquet(out)
    per_bin = df.group_by(((pl.col("jpeg_quality") - 1) // 5).alias("q"), "actual_format").agg(
        (pl.col("label") == 0).sum().alias("real"), (pl.col("label") == 1).sum().alias("gen")
    )
    assert df.height > 0 and (per_bin.get_column("real") == per_bin.get_column("gen")).all()
