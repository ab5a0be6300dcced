"""cfx balance: counts, generator/source spread, caps and floors, matching, pairing, determinism, bad input."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.ipc as ipc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cfx.balance import (
    PAIR_COLUMN,
    BalanceOptions,
    MatchSpec,
    balance,
    parse_match,
    parse_ratio,
    row_hashes,
)
from cfx.errors import EmptySelectionError, InputError, UsageError
from cfx.licenses import annotate_licenses
from cfx.manifest import Manifest, read_manifest

COLUMNS = (
    "shard",
    "row",
    "format",
    "width",
    "height",
    "mode",
    "model_name",
    "real_source",
    "label",
    "architecture",
)


def make_manifest(
    n_gen: int = 600, n_real: int = 500, seed: int = 0, generators: int = 14, root: str = "/nowhere"
) -> Manifest:
    """CF-shaped metadata: generated mostly PNG 512², uneven generators; real FFHQ PNG 1024², JPEGs of
    assorted sizes from COCO/LAION, CelebA 178x218 JPEG."""
    rng = np.random.default_rng(seed)
    weights = np.array([2.0 ** (-i / 2) for i in range(generators)])
    weights /= weights.sum()
    archs = ["LatDiff"] * (generators - 4) + ["GAN", "GAN", "PixDiff", "Other"]
    rows: list[dict[str, Any]] = []
    for i in range(n_gen):
        g = int(rng.choice(generators, p=weights))
        side = int(rng.choice([512, 512, 512, 768, 1024, 256]))
        rows.append(
            dict(
                shard=f"data/HFCF_small_{i // 100}.parquet",
                row=i % 100,
                format="PNG" if rng.random() < 0.9 else "JPEG",
                width=side,
                height=side,
                mode="RGB",
                model_name=f"org/gen-{g}",
                real_source="",
                label=1,
                architecture=archs[g],
            )
        )
    sources = ["FFHQ", "COCO", "LAION", "CelebA"]
    for j in range(n_real):
        s = sources[int(rng.choice(4, p=[0.3, 0.4, 0.2, 0.1]))]
        if s == "FFHQ":
            w = h = 1024
            fmt = "PNG"
        elif s == "CelebA":
            w, h, fmt = 178, 218, "JPEG"
        else:
            w, h = int(rng.choice([512, 640, 768])), int(rng.choice([512, 480, 768]))
            fmt = "JPEG" if rng.random() < 0.85 else "PNG"
        rows.append(
            dict(
                shard=f"data/HFCF_small_{50 + j // 100}.parquet",
                row=j % 100,
                format=fmt,
                width=w,
                height=h,
                mode="RGB",
                model_name="",
                real_source=s,
                label=0,
                architecture="Real",
            )
        )
    df = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.col("label").cast(pl.Int8), pl.col("width").cast(pl.Int32), pl.col("height").cast(pl.Int32)
    )
    return Manifest(df=df, root=root)


def opts(m: Manifest, *match: str, **kw: Any) -> BalanceOptions:
    return BalanceOptions(match=[parse_match(s, m.df.columns) for s in match], **kw)


def keys(m: Manifest, extra: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    return sorted(m.df.select("shard", "row", *extra).iter_rows())


def bin_counts(df: pl.DataFrame, exprs: list[pl.Expr]) -> pl.DataFrame:
    return df.group_by([e for e in exprs]).agg(
        (pl.col("label") == 0).sum().alias("real"), (pl.col("label") == 1).sum().alias("gen")
    )


# --- option parsing ----------------------------------------------------------------------------------
def test_parse_ratio() -> None:
    assert parse_ratio("1:1") == (1, 1)
    assert parse_ratio(" 2 : 1 ") == (2, 1)
    assert parse_ratio("4:2") == (2, 1)
    for bad in ("1", "1:0", "0:1", "a:b", "1:1:1", "-1:1", "1.5:1", ""):
        with pytest.raises(UsageError) as err:
            parse_ratio(bad)
        assert "--ratio" in err.value.message and err.value.hint


def test_parse_match() -> None:
    cols = list(COLUMNS)
    assert parse_match("min-side", cols) == MatchSpec("min-side", None)
    assert parse_match("min-side:64", cols) == MatchSpec("min-side", 64.0)
    assert parse_match("min_side:64", cols).label == "min-side:64"
    assert parse_match("aspect", cols) == MatchSpec("aspect", 0.05)
    assert parse_match("format", cols) == MatchSpec("format", None)
    assert parse_match("architecture", cols) == MatchSpec("architecture", None)  # any column
    for bad, msg in (
        ("colour", "unknown feature"),
        ("min-side:x", "not a number"),
        ("min-side:0", "positive"),
        ("format:2", "categorical"),
        ("num-bytes", "no num_bytes column"),
    ):
        with pytest.raises(UsageError, match=msg):
            parse_match(bad, cols)


# --- counts and spread --------------------------------------------------------------------------------
def test_equal_counts_as_large_as_possible() -> None:
    m = make_manifest()
    res = balance(m)
    df = res.manifest.df
    n_real = int((df.get_column("label") == 0).sum())
    assert n_real == int((df.get_column("label") == 1).sum()) == 500  # all 500 reals, 500 of 600 generated
    assert df.select("shard", "row").is_duplicated().sum() == 0
    assert set(keys(res.manifest)) <= set(keys(m))
    assert set(df.columns) == set(m.df.columns)  # columns kept, no helper columns leak
    assert res.steps[0].name == "input" and res.steps[-1].name == "balance"
    # water-filling over generators: a generator is cut only if it is above the level, and all cut
    # generators end at the same level (±1)
    avail = dict(m.df.filter(pl.col("label") == 1).group_by("model_name").len().iter_rows())
    got = res.per_generator
    assert set(got) == set(avail)
    cut = [g for g in got if got[g] < avail[g]]
    assert cut and max(got[g] for g in cut) - min(got[g] for g in cut) <= 1
    assert all(got[g] == avail[g] for g in got if g not in cut)
    assert all(avail[g] > min(got[g] for g in cut) for g in cut)


def test_real_side_spread_over_sources() -> None:
    m = make_manifest(n_gen=200, n_real=500)
    res = balance(m)
    avail = dict(m.df.filter(pl.col("label") == 0).group_by("real_source").len().iter_rows())
    got = res.per_source
    assert sum(got.values()) == 200
    level = max(got.values())
    for s, n in got.items():
        assert n == avail[s] or n >= level - 1  # small sources whole, big ones at the same level
    assert max(got.values()) - min(v for s, v in got.items() if v < avail[s] or True) <= max(avail.values())
    # COCO is the biggest source (40%) yet does not dominate: no source has more than 1 above the level
    assert got["COCO"] <= min(n for s, n in got.items() if n < avail[s]) + 1


def test_ratio() -> None:
    m = make_manifest()
    res = balance(m, BalanceOptions(ratio=(2, 1)))
    assert (res.final.real, res.final.generated) == (500, 250)
    res = balance(m, BalanceOptions(ratio=(1, 3)))
    assert (res.final.real, res.final.generated) == (200, 600)


def test_per_generator_cap_and_floor() -> None:
    m = make_manifest()
    res = balance(m, BalanceOptions(per_generator=40))
    assert max(res.per_generator.values()) <= 40
    assert res.final.real == res.final.generated
    sizes = dict(m.df.filter(pl.col("label") == 1).group_by("model_name").len().iter_rows())
    res = balance(m, BalanceOptions(min_per_generator=10))
    assert min(res.per_generator.values()) >= 10
    assert set(res.per_generator) == {g for g, n in sizes.items() if n >= 10}
    floor_step = next(s for s in res.steps if s.name.startswith("min-per-generator"))
    assert floor_step.generators == len(res.per_generator)
    # a floor the budget cannot fill for everyone: generators are dropped until each kept one has M rows
    small = make_manifest(n_gen=600, n_real=60)
    res = balance(small, BalanceOptions(min_per_generator=25))
    assert res.final.generated == 60 and min(res.per_generator.values()) >= 25
    assert res.floor_dropped
    with pytest.raises(UsageError, match="below --min-per-generator"):
        balance(m, BalanceOptions(per_generator=5, min_per_generator=10))
    with pytest.raises(UsageError, match="at least 1"):
        balance(m, BalanceOptions(per_generator=0))


def test_stratify_architecture() -> None:
    m = make_manifest(n_gen=2000, n_real=120, generators=14)
    plain = balance(m)
    strat = balance(m, BalanceOptions(stratify="architecture"))
    arch = strat.manifest.df.filter(pl.col("label") == 1).group_by("architecture").len()
    counts = dict(arch.iter_rows())
    avail = dict(m.df.filter(pl.col("label") == 1).group_by("architecture").len().iter_rows())
    level = max(counts.values())
    for a, n in counts.items():
        assert n == avail[a] or n >= level - 1
    plain_lat = int(
        plain.manifest.df.filter((pl.col("label") == 1) & (pl.col("architecture") == "LatDiff")).height
    )
    assert counts["LatDiff"] < plain_lat  # LatDiff no longer swamps the small architectures
    assert strat.per_stratum == dict(sorted(counts.items()))


# --- matching and pairing ----------------------------------------------------------------------------
def test_match_makes_binned_features_uninformative() -> None:
    m = make_manifest()
    res = balance(m, opts(m, "min-side:64", "format"))
    df = res.manifest.df
    per_bin = bin_counts(
        df, [(pl.min_horizontal("width", "height") // 64).alias("b"), pl.col("format").str.to_uppercase()]
    )
    assert (per_bin.get_column("real") == per_bin.get_column("gen")).all()
    names = [s.name for s in res.steps]
    assert names == ["input", "match min-side:64", "match format", "balance"]
    # each matching step can only shrink the candidate set
    rows = [s.rows for s in res.steps]
    assert rows == sorted(rows, reverse=True)
    assert res.bins == per_bin.height


def test_exact_resolution_keeps_fewer_than_min_side() -> None:
    m = make_manifest(n_gen=3000, n_real=3000, seed=3)
    loose = balance(m, opts(m, "min-side:64"))
    exact = balance(m, opts(m, "resolution"))
    assert exact.final.rows < loose.final.rows
    df = exact.manifest.df
    per_bin = bin_counts(df, [pl.col("width"), pl.col("height")])
    assert (per_bin.get_column("real") == per_bin.get_column("gen")).all()


def test_ratio_holds_in_every_bin() -> None:
    m = make_manifest(n_gen=1500, n_real=1500)
    res = balance(m, opts(m, "format", ratio=(2, 1)))
    per_bin = bin_counts(res.manifest.df, [pl.col("format")])
    assert (per_bin.get_column("real") == 2 * per_bin.get_column("gen")).all()


def test_pairs_link_one_real_to_one_generated_in_the_same_bin() -> None:
    m = make_manifest()
    res = balance(m, opts(m, "min-side:64", "format", pair=True))
    df = res.manifest.df
    assert df.get_column(PAIR_COLUMN).null_count() == 0
    pairs = df.group_by(PAIR_COLUMN).agg(
        pl.col("label").sort().alias("labels"),
        (pl.min_horizontal("width", "height") // 64).n_unique().alias("bins"),
        pl.col("format").n_unique().alias("formats"),
    )
    assert pairs.height == res.final.generated == res.final.real
    assert all(lab == [0, 1] for lab in pairs.get_column("labels").to_list())
    assert (pairs.get_column("bins") == 1).all() and (pairs.get_column("formats") == 1).all()
    assert sorted(pairs.get_column(PAIR_COLUMN).to_list()) == list(range(pairs.height))
    with pytest.raises(UsageError, match="needs --ratio 1:1"):
        balance(m, BalanceOptions(pair=True, ratio=(2, 1)))


def test_rebalancing_a_paired_manifest_drops_stale_pairs() -> None:
    m = make_manifest()
    paired = balance(m, opts(m, "format", pair=True)).manifest
    again = balance(paired, BalanceOptions(per_generator=5))
    assert PAIR_COLUMN not in again.manifest.df.columns


# --- determinism -------------------------------------------------------------------------------------
def _splitmix_py(x: int) -> int:
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_row_hash_is_a_fixed_function_of_seed_shard_row() -> None:
    shards = pl.Series(
        ["data/HFCF_small_0.parquet", "data/HFCF_small_7.parquet", "data/HFCF_small_0.parquet"]
    )
    rows = pl.Series([0, 5, 2992])
    got = row_hashes(shards, rows, seed=42).to_list()
    for s, r, h in zip(shards.to_list(), rows.to_list(), got, strict=True):
        sh = (
            int.from_bytes(hashlib.blake2b(f"42\x00shard\x00{s}".encode(), digest_size=8).digest(), "little")
            >> 1
        )
        assert h == _splitmix_py(sh ^ _splitmix_py(r)) >> 1  # an independent pure-Python reimplementation
    assert got[0] != row_hashes(shards, rows, seed=43).to_list()[0]


def test_same_result_for_shuffled_input_and_repeated_runs() -> None:
    m = make_manifest()
    o = opts(m, "min-side:64", "format", pair=True, per_generator=60, min_per_generator=3, seed=7)
    a = balance(m, o)
    shuffled = m.with_df(m.df.sample(fraction=1.0, shuffle=True, seed=123))
    b = balance(shuffled, o)
    c = balance(m, o)
    cols = ("shard", "row", PAIR_COLUMN)
    assert a.manifest.df.select(cols).equals(b.manifest.df.select(cols))
    assert a.manifest.df.equals(c.manifest.df)
    d = balance(m, opts(m, "min-side:64", "format", pair=True, per_generator=60, min_per_generator=3, seed=8))
    assert keys(d.manifest) != keys(a.manifest)
    # output order: shards in natural order, rows ascending
    out = a.manifest.df
    shard_no = out.get_column("shard").str.extract(r"_(\d+)\.parquet").cast(pl.Int64)
    assert out.with_columns(shard_no.alias("n")).select("n", "row").rows() == sorted(
        out.with_columns(shard_no.alias("n")).select("n", "row").rows()
    )


# --- licences before balancing -----------------------------------------------------------------------
def _licensed(tmp_path: Path) -> Manifest:
    meta = tmp_path / "data" / "metadata"
    meta.mkdir(parents=True)
    rows = [f"org/gen-{i},{'cc-by-nc-4.0' if i % 3 == 0 else 'creativeml-openrail-m'}" for i in range(13)]
    (meta / "generators.csv").write_text("model_name,license\n" + "\n".join(rows) + "\n")
    return annotate_licenses(make_manifest(root=str(tmp_path)))


def test_licence_constraints_apply_first(tmp_path: Path) -> None:
    m = _licensed(tmp_path)
    res = balance(m, BalanceOptions(exclude_licenses=["*-nc-*", "unknown"]))
    assert res.steps[1].name == "licences"
    lic = res.manifest.df.get_column("license").unique().to_list()
    assert not any("-nc-" in x or x == "unknown" for x in lic)
    assert res.final.real == res.final.generated > 0
    # COCO reals are flickr-per-image: commercial use unknown
    res = balance(m, BalanceOptions(licenses=["creativeml-*", "flickr-*"]))
    assert set(res.manifest.df.get_column("license").unique().to_list()) == {
        "creativeml-openrail-m",
        "flickr-per-image",
    }


def test_commercial_only_empties_the_real_side(tmp_path: Path) -> None:
    m = _licensed(tmp_path)
    with pytest.raises(EmptySelectionError) as err:
        balance(m, BalanceOptions(commercial_only=True))
    msg = err.value.message
    assert "'licences' (--commercial-only) left no real rows" in msg
    assert "input: 1,100 rows (500 real, 600 generated, 14 generators)" in msg
    assert "licences: " in msg and "(0 real," in msg
    steps = err.value.steps  # type: ignore[attr-defined]
    assert [s["step"] for s in steps] == ["input", "licences"]


def test_empty_after_matching_names_the_step() -> None:
    m = make_manifest()
    # no real image is 178 px wide among generated ones: exact width+height kills every bin but a few;
    # 'mode' is constant so it does not; matching on 'architecture' separates the classes completely
    with pytest.raises(EmptySelectionError) as err:
        balance(m, opts(m, "format", "architecture"))
    assert (
        "'match architecture' (rows in bins of format × architecture" in err.value.message
        and "match format:" in err.value.message
    )
    assert "coarser --match bin" in err.value.hint


def test_one_class_input() -> None:
    m = make_manifest()
    only_gen = m.with_df(m.df.filter(pl.col("label") == 1))
    with pytest.raises(EmptySelectionError, match="left no real rows"):
        balance(only_gen)


def test_missing_columns() -> None:
    m = make_manifest()
    with pytest.raises(InputError, match="lacks column"):
        balance(m.with_df(m.df.drop("width")), opts(m, "min-side"))
    with pytest.raises(InputError, match="lacks column"):
        balance(m, BalanceOptions(stratify="nope"))
    with_bytes = m.with_df(m.df.with_columns(pl.lit(None, dtype=pl.Int64).alias("num_bytes")))
    with pytest.raises(UsageError, match="num_bytes is unknown for every row"):
        balance(with_bytes, opts(with_bytes, "num-bytes:1000"))


# --- properties --------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_gen=st.integers(1, 120),
    n_real=st.integers(1, 120),
    seed=st.integers(0, 5),
    ratio=st.sampled_from([(1, 1), (2, 1), (1, 2)]),
    cap=st.one_of(st.none(), st.integers(1, 30)),
    floor=st.one_of(st.none(), st.integers(1, 6)),
    match=st.sampled_from([(), ("format",), ("min-side:256", "format"), ("resolution",)]),
)
def test_balance_properties(
    n_gen: int,
    n_real: int,
    seed: int,
    ratio: tuple[int, int],
    cap: int | None,
    floor: int | None,
    match: tuple[str, ...],
) -> None:
    if cap and floor and cap < floor:
        cap = floor
    m = make_manifest(n_gen=n_gen, n_real=n_real, seed=seed)
    o = opts(m, *match, ratio=ratio, per_generator=cap, min_per_generator=floor, pair=ratio == (1, 1))
    try:
        res = balance(m, o)
    except EmptySelectionError:
        event("empty selection")
        return
    event("balanced")
    df = res.manifest.df
    r, g = ratio
    real = int((df.get_column("label") == 0).sum())
    gen = int((df.get_column("label") == 1).sum())
    assert real * g == gen * r and real > 0
    assert df.select("shard", "row").is_duplicated().sum() == 0
    assert set(keys(res.manifest)) <= set(keys(m))
    per_gen = dict(df.filter(pl.col("label") == 1).group_by("model_name").len().iter_rows())
    if cap:
        assert max(per_gen.values()) <= cap
    if floor:
        assert min(per_gen.values()) >= floor
    if match:
        exprs = [s.expr(df.columns).alias(f"m{i}") for i, s in enumerate(o.match)]
        per_bin = bin_counts(df, exprs)
        assert (per_bin.get_column("real") * g == per_bin.get_column("gen") * r).all()
    if not cap and not floor and ratio == (1, 1):
        # as large as the bins allow: min(real, generated) summed over the bins of the input
        exprs = [s.expr(m.df.columns).alias(f"m{i}") for i, s in enumerate(o.match)] or [pl.lit(0).alias("m")]
        per_bin = bin_counts(
            m.df.with_columns(exprs).drop_nulls([e.meta.output_name() for e in exprs]), exprs
        )
        best = int(per_bin.select(pl.min_horizontal("real", "gen")).sum().item())
        assert real == best
    # balancing a balanced set again keeps it (idempotent when nothing more can be dropped)
    if not cap and not floor:
        again = balance(res.manifest, BalanceOptions(ratio=ratio, match=o.match, seed=seed))
        assert keys(again.manifest) == keys(res.manifest)


# --- CLI ---------------------------------------------------------------------------------------------
@pytest.fixture
def manifest_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.parquet"
    make_manifest().write(path)
    return path


def test_cli_balance_writes_and_reports(cfx: Callable[..., Any], manifest_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.parquet"
    run = cfx(
        "balance", str(manifest_file), "--match", "min-side:64", "--match", "format", "--pair", "-o", str(out)
    )
    assert run.returncode == 0, run.stderr
    assert run.out == ""
    assert "match min-side:64" in run.stderr and "pairs" in run.stderr and "Wrote manifest" in run.stderr
    b = read_manifest(out)
    assert PAIR_COLUMN in b.df.columns
    assert b.history[-1].startswith("balance --ratio 1:1 --seed 0")
    run = cfx("balance", str(manifest_file), "--match", "format", "--json")
    report = json.loads(run.out)
    assert [s["step"] for s in report["steps"]] == ["input", "match format", "balance"]
    assert report["result"]["real"] == report["result"]["generated"]


def test_cli_balance_pipes(cfx: Callable[..., Any], manifest_file: Path) -> None:
    run = cfx("balance", str(manifest_file), "--ratio", "2:1")
    assert run.returncode == 0, run.stderr
    table = ipc.open_stream(io.BytesIO(run.stdout)).read_all()
    labels = table.column("label").to_pylist()
    assert labels.count(0) == 2 * labels.count(1)
    stats = cfx("stats", "-", "--json", input=run.stdout)
    assert json.loads(stats.out)["totals"]["rows"] == table.num_rows


def test_cli_balance_errors(cfx: Callable[..., Any], manifest_file: Path) -> None:
    run = cfx("balance", str(manifest_file), "--ratio", "1-1", "--json")
    assert run.returncode == 2 and run.stderr.startswith("Error: --ratio '1-1' is not REAL:GENERATED")
    run = cfx("balance", str(manifest_file), "--match", "colour", "--json")
    assert run.returncode == 2 and "unknown feature 'colour'" in run.stderr
    run = cfx("balance", str(manifest_file), "--match", "format", "--match", "architecture", "--json")
    assert run.returncode == 5 and "left no" in run.stderr and "Counts per step" in run.stderr
    assert "Traceback" not in run.stderr
    run = cfx("balance", str(manifest_file), "--licenses", "mit", "--json")
    # the manifest root does not exist, so no generator licence is known: every generated row is dropped
    assert run.returncode == 5 and "'licences' (--licenses mit) left no rows" in run.stderr


def test_cli_balance_on_dataset_with_licences(
    cfx: Callable[..., Any], cf_small: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b.parquet"
    run = cfx(
        "balance", str(cf_small), "--exclude-licenses", "*-nc-*,unknown", "--match", "format", "-o", str(out)
    )
    assert run.returncode == 0, run.stderr
    df = read_manifest(out).df
    assert "license" in df.columns
    assert not df.get_column("license").is_in(["unknown"]).any()
    assert not df.get_column("license").str.contains("-nc-").any()
