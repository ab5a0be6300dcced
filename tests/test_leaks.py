"""cfx leaks: the cross-set search equals brute force; injected leaks are found; --fail-on-leak exits 8."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfx.leaks import LeakOptions, brute_force_cross, cross_code_pairs, find_leaks
from cfx.manifest import Manifest


def clustered(rng: np.random.Generator, n: int, centres: int, flip: float) -> np.ndarray:
    c = rng.integers(0, 2**63, centres, dtype=np.int64).astype(np.uint64)
    base = c[rng.integers(0, centres, n)]
    bits = rng.random((n, 64)) < flip
    noise = (bits * (np.uint64(1) << np.arange(64, dtype=np.uint64))).sum(axis=1, dtype=np.uint64)
    return base ^ noise


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    na=st.integers(0, 400),
    nb=st.integers(0, 400),
    t=st.integers(0, 12),
    flip=st.sampled_from([0.02, 0.08, 0.5]),
)
def test_cross_pairs_equal_brute_force(seed: int, na: int, nb: int, t: int, flip: float) -> None:
    rng = np.random.default_rng(seed)
    centres = int(rng.integers(1, 60))
    a, b = clustered(rng, na, centres, flip), clustered(rng, nb, centres, flip)
    xa, xb, d = cross_code_pairs(a, b, t)
    got = set(zip(xa.tolist(), xb.tolist(), d.tolist(), strict=True))
    assert len(got) == xa.size  # no pair listed twice
    assert got == brute_force_cross(a, b, t)


def test_cross_pairs_equal_brute_force_on_the_index_path() -> None:
    # above BRUTE_FORCE_MAX distinct codes the multi-index search runs (not the brute-force shortcut)
    rng = np.random.default_rng(0)
    a, b = clustered(rng, 3000, 400, 0.05), clustered(rng, 3000, 400, 0.05)
    xa, xb, d = cross_code_pairs(a, b, 8)
    assert set(zip(xa.tolist(), xb.tolist(), d.tolist(), strict=True)) == brute_force_cross(a, b, 8)


def planted(rng: np.random.Generator, codes: np.ndarray, k: int, max_distance: int) -> np.ndarray:
    """``k`` copies of random ``codes`` with 0..max_distance random bits flipped (one distance each)."""
    src = codes[rng.integers(0, codes.size, k)]
    out = src.copy()
    for i, d in enumerate(rng.integers(0, max_distance + 1, k).tolist()):
        for bit in rng.choice(64, d, replace=False).tolist():
            out[i] ^= np.uint64(1) << np.uint64(bit)
    return out


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    na=st.integers(0, 600),
    nb=st.integers(0, 600),
    t=st.sampled_from([0, 1, 4, 8, 12]),
    dup=st.sampled_from([0.0, 0.3]),
    method=st.sampled_from(["index", "auto"]),
)
def test_cross_search_equals_brute_force_with_planted_pairs(
    seed: int, na: int, nb: int, t: int, dup: float, method: str
) -> None:
    """The A × B multi-index search (forced on small sets) finds exactly brute force's pairs: planted pairs
    at every distance 0..t (and a little beyond), duplicates inside a side, empty sides."""
    from cfx.pairs import cross_code_pairs as cross_distinct_pairs

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64 - 1, na, dtype=np.uint64)
    b = rng.integers(0, 2**64 - 1, nb, dtype=np.uint64)
    if na and nb:
        b[: nb // 2] = planted(rng, a, nb // 2, min(t + 2, 64))
    for side in (a, b):  # duplicates within a side
        if side.size:
            copies = rng.random(side.size) < dup
            side[copies] = side[rng.integers(0, side.size, int(copies.sum()))]
    xa, xb, d = cross_code_pairs(a, b, t)
    got = set(zip(xa.tolist(), xb.tolist(), d.tolist(), strict=True))
    expected = brute_force_cross(a, b, t)
    assert len(got) == xa.size and got == expected
    ua, ub = np.unique(a), np.unique(b)
    p = cross_distinct_pairs(ua, ub, t, method=method)
    direct = set(zip(ua[p.a].tolist(), ub[p.b].tolist(), p.distance.tolist(), strict=True))
    assert len(direct) == len(p) and direct == expected


def test_cross_search_splits_over_workers() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from cfx.pairs import cross_code_pairs as cross_distinct_pairs

    rng = np.random.default_rng(4)
    a = np.unique(rng.integers(0, 2**64 - 1, 5000, dtype=np.uint64))
    b = np.unique(
        np.concatenate([planted(rng, a, 1500, 8), rng.integers(0, 2**64 - 1, 3000, dtype=np.uint64)])
    )
    one = cross_distinct_pairs(a, b, 8, method="index")
    # the pool is injected (threads): the same tasks and merge as the process pool, without its start-up
    two = cross_distinct_pairs(
        a, b, 8, method="index", workers=2, executor_factory=lambda w: ThreadPoolExecutor(w)
    )
    assert len(one) >= 1400
    assert np.array_equal(one.a, two.a) and np.array_equal(one.b, two.b)
    assert np.array_equal(one.distance, two.distance)
    swapped = cross_distinct_pairs(b, a, 8, method="index")  # the other side indexed
    assert np.array_equal(np.sort(one.a), np.sort(swapped.b)) and len(swapped) == len(one)


def frame(n: int, seed: int, prefix: str, label: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "shard": [f"{prefix}/s.parquet"] * n,
            "row": np.arange(n),
            "label": np.full(n, label, np.int8),
            "model_name": [f"{prefix}-gen{i % 3}" for i in range(n)],
            "real_source": [None] * n,
            "prompt": [f"{prefix} prompt {i}" for i in range(n)],
            "sha256": [f"{prefix}{i}" for i in range(n)],
            "phash": rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64),
            "near_uniform": np.zeros(n, bool),
            "hash_error": pl.Series([None] * n, dtype=pl.String),
        }
    )


def inject(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """B row 0: exact copy of A row 1; row 1: a 5-bit near copy of A row 2; row 2: A row 3's prompt."""
    b = b.to_dicts()
    ra = a.to_dicts()
    b[0]["sha256"], b[0]["phash"] = ra[1]["sha256"], ra[1]["phash"]
    b[1]["phash"] = ra[2]["phash"] ^ 0b11111
    b[2]["prompt"] = ra[3]["prompt"].upper() + "!!"
    b[3]["model_name"] = ra[0]["model_name"]
    return pl.DataFrame(b, schema=a.schema)


def test_finds_injected_exact_near_and_prompt_pairs() -> None:
    a, b = frame(200, 1, "A"), frame(150, 2, "B")
    b = inject(a, b)
    pairs, units, s = find_leaks(a, b, LeakOptions(near=True, prompts=True))
    got = {(r["kind"], r["row_a"], r["row_b"], r["distance"]) for r in pairs.to_dicts()}
    assert got == {("exact", 1, 0, 0), ("near", 2, 1, 5), ("prompt", 3, 2, 0)}
    assert s["by_kind"]["exact"] == {"keys": 1, "rows_a": 1, "rows_b": 1}
    assert s["by_kind"]["near"]["pairs_not_exact"] == 1
    assert s["by_kind"]["prompt"]["keys"] == 1
    assert units.get_column("value").to_list() == ["A-gen0"]
    assert s["leaks"] == 3
    _, _, su = find_leaks(a, b, LeakOptions(near=True, prompts=True, units=True))
    assert su["leaks"] == 4
    _, _, clean = find_leaks(a, frame(150, 2, "B"), LeakOptions(near=True, prompts=True))
    assert clean["leaks"] == 0


def test_pairs_per_key_are_capped_but_counts_complete() -> None:
    a, b = frame(100, 1, "A"), frame(100, 2, "B")
    a = a.with_columns(pl.lit("same").alias("sha256"))
    b = b.with_columns(pl.lit("same").alias("sha256"))
    pairs, _, s = find_leaks(a, b, LeakOptions(max_per_key=10))
    assert pairs.height == 100
    assert s["by_kind"]["exact"] == {"keys": 1, "rows_a": 100, "rows_b": 100}


def test_near_threshold_option_is_checked() -> None:
    from cfx.errors import UsageError

    with pytest.raises(UsageError, match="--threshold 33"):
        LeakOptions(threshold=33).check()


# --- the CLI on real shards --------------------------------------------------------------------------------
def test_cli_leaks_fail_on_leak_report_and_gallery(cfx: Any, cf_small: Path, tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    r = cfx("split", str(cf_small), "--out", str(parts), "--prompts", "--json")
    assert r.returncode == 0, r.stderr
    clean = cfx(
        "leaks",
        str(parts / "train.parquet"),
        str(parts / "test.parquet"),
        "--near",
        "--prompts",
        "--fail-on-leak",
    )
    assert clean.returncode == 0, clean.stderr
    assert "no leaks" in clean.out
    # the whole set against its test split: every test row leaks
    report, sheets = tmp_path / "report", tmp_path / "sheets"
    r = cfx(
        "leaks",
        str(cf_small),
        str(parts / "test.parquet"),
        "--near",
        "--report",
        str(report),
        "--gallery",
        str(sheets),
        "--fail-on-leak",
        "--json",
    )
    assert r.returncode == 8, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("Error: ") and "leak(s) between" in r.stderr
    summary = json.loads(r.out)
    test_rows = summary["b_rows"]
    assert summary["by_kind"]["exact"]["rows_b"] == test_rows
    assert sorted(p.name for p in report.iterdir()) == ["pairs.parquet", "summary.json", "units.parquet"]
    assert pl.read_parquet(report / "pairs.parquet").filter(pl.col("kind") == "exact").height >= test_rows
    assert any(p.suffix == ".png" for p in sheets.iterdir())
    assert not list(report.glob(".*.tmp"))


def test_leaks_hashes_both_sides_with_the_cache(cf_small: Path) -> None:
    from cfx.leaks import leaks
    from cfx.load import load_manifest

    m = load_manifest(str(cf_small))
    half = m.with_df(m.df.head(60))
    res = leaks(m, half, LeakOptions(near=True), workers=1)
    assert res.summary["by_kind"]["exact"]["rows_b"] == 60
    assert isinstance(res.a, Manifest) and "phash" in res.a.df.columns


@pytest.mark.hub
def test_cli_leaks_remote_hub_source_against_a_local_shard(local_hub: Any, run_cfx: Any) -> None:
    from tests.conftest import REPO

    shard = local_hub.file("data/HFCF_small_0.parquet")
    rows = pq.ParquetFile(shard).metadata.num_rows
    r = run_cfx(
        "leaks", f"hf://datasets/{REPO}", str(shard), "--near", "--json", "--fail-on-leak", timeout=600
    )
    assert r.returncode == 8, r.stderr
    s = json.loads(r.stdout)
    assert s["a_root"].startswith(f"hf://datasets/{REPO}@")
    assert s["by_kind"]["exact"]["rows_b"] == rows == s["b_rows"]
