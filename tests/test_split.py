"""cfx split: property tests on manifests with known groups, stability, folds, hold-outs, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfx.manifest import Manifest, read_manifest
from cfx.pairs import brute_force_pairs
from cfx.split import (
    GROUP_COLUMN,
    SPLIT_COLUMN,
    SplitOptions,
    family_of,
    leak_proof,
    normalise_prompts,
    read_family_table,
    split,
    unit_keys,
)

ARCHS = ("LatDiff", "GAN", "PixDiff", "Other")
SOURCES = ("COCO", "FFHQ", "LAION", "ImageNet")


def manifest(
    seed: int,
    *,
    generators: int = 30,
    gen_rows: int = 600,
    real_rows: int = 600,
    dup_pairs: int = 20,
    near_pairs: int = 20,
    prompt_pool: int = 400,
    shard_prefix: str = "data/s",
    model_prefix: str = "org",
) -> pl.DataFrame:
    """A hashed manifest with known groups: generators, sha256 copies, near pHash copies (<= 8 bits) and
    prompts shared by chance (a pool of ``prompt_pool`` prompts, some differing only in case/punctuation)."""
    rng = np.random.default_rng(seed)
    n = gen_rows + real_rows
    label = np.r_[np.ones(gen_rows, np.int8), np.zeros(real_rows, np.int8)]
    gens = [f"{model_prefix}{i % 5}/model-{i}" for i in range(generators)]
    gen_of = rng.integers(0, generators, gen_rows)
    codes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    sha = np.array([f"{model_prefix}-{seed}-{i}" for i in range(n)], dtype=object)
    for _ in range(dup_pairs):
        i, j = rng.integers(0, n, 2)
        sha[j], codes[j] = sha[i], codes[i]
    for _ in range(near_pairs):
        i, j = rng.integers(0, n, 2)
        flips = rng.choice(64, int(rng.integers(1, 9)), replace=False)
        codes[j] = codes[i] ^ np.uint64(sum(1 << int(b) for b in flips))
    prompts = [
        (f"A Photo of cat #{k}!" if k % 2 else f"a photo of  cat {k}")
        for k in rng.integers(0, prompt_pool, gen_rows)
    ]
    return pl.DataFrame(
        {
            "shard": [f"{shard_prefix}{i // 100}.parquet" for i in range(n)],
            "row": np.arange(n) % 100,
            "label": label,
            "model_name": [gens[g] for g in gen_of] + [""] * real_rows,
            "architecture": [ARCHS[g % 4] for g in gen_of] + ["Real"] * real_rows,
            "real_source": [None] * gen_rows + [SOURCES[k] for k in rng.integers(0, 4, real_rows)],
            "prompt": prompts + [None] * real_rows,
            "sha256": sha.tolist(),
            "phash": codes,
            "near_uniform": np.zeros(n, bool),
            "hash_error": pl.Series([None] * n, dtype=pl.String),
        }
    )


def run(df: pl.DataFrame, **kw: Any) -> pl.DataFrame:
    return split(Manifest(df, "/nowhere"), SplitOptions(**kw), workers=1).manifest.df


def spans(df: pl.DataFrame, key: pl.Series) -> int:
    """Values of ``key`` seen in more than one split (computed here, independently of cfx.split)."""
    t = pl.DataFrame({"k": key, "s": df.get_column(SPLIT_COLUMN)}).drop_nulls()
    return t.group_by("k").agg(pl.col("s").n_unique()).filter(pl.col("s") > 1).height


def near_cross(df: pl.DataFrame, t: int = 8) -> int:
    codes = df.get_column("phash").to_numpy().astype(np.uint64)
    p = brute_force_pairs(codes, t)
    s = np.array(df.get_column(SPLIT_COLUMN).to_list())
    return int((s[p.a] != s[p.b]).sum())


# --- properties -------------------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    generators=st.integers(3, 40),
    prompts=st.booleans(),
    folds=st.sampled_from([None, 3, 5]),
)
def test_no_unit_duplicate_or_prompt_in_two_splits(
    seed: int, generators: int, prompts: bool, folds: int | None
) -> None:
    df = manifest(seed, generators=generators, gen_rows=300, real_rows=300)
    out = run(df, prompts=prompts, folds=folds)
    names = {f"fold{i}" for i in range(folds)} if folds else {"train", "val", "test"}
    assert out.height == df.height  # every row exactly once
    assert out.select("shard", "row").is_unique().all()
    assert set(out.get_column(SPLIT_COLUMN).unique().to_list()) <= names
    assert out.get_column(SPLIT_COLUMN).null_count() == 0
    gen = out.filter(pl.col("label") == 1)
    assert spans(gen, gen.get_column("model_name")) == 0
    assert spans(out, out.get_column("sha256")) == 0
    assert spans(out, out.get_column(GROUP_COLUMN)) == 0
    assert near_cross(out) == 0
    if prompts:
        assert spans(out, normalise_prompts(out.get_column("prompt"))) == 0


def test_leak_proof_catches_a_corrupted_split() -> None:
    df = run(manifest(1), prompts=True)
    opts = SplitOptions(prompts=True)
    units = unit_keys(df, opts)
    assert not any(leak_proof(df, SPLIT_COLUMN, opts, units).values())
    # move one row of a duplicate pair / of a generator to another split: the proof must see it
    dup = df.filter(pl.col("sha256").is_duplicated() & pl.col("phash").is_duplicated()).row(0, named=True)
    other = "val" if dup[SPLIT_COLUMN] != "val" else "train"
    bad = df.with_columns(
        pl.when((pl.col("shard") == dup["shard"]) & (pl.col("row") == dup["row"]))
        .then(pl.lit(other))
        .otherwise(pl.col(SPLIT_COLUMN))
        .alias(SPLIT_COLUMN)
    )
    proof = leak_proof(bad, SPLIT_COLUMN, opts, units)
    assert proof["exact"] >= 1 and proof["near"] >= 1


def test_fractions_within_binomial_tolerance_when_groups_allow() -> None:
    # real images are their own units: 4,000 small groups, so the fractions must come out close
    df = manifest(3, gen_rows=1, real_rows=4000, dup_pairs=0, near_pairs=0)
    out = run(df, fractions=(0.7, 0.2, 0.1))
    n = out.height
    sizes = out.group_by(GROUP_COLUMN).len().get_column("len").to_numpy()
    for name, f in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        got = out.filter(pl.col(SPLIT_COLUMN) == name).height / n
        tol = 4 * math.sqrt(f * (1 - f) * float((sizes.astype(float) ** 2).sum())) / n  # stated: 4 sigma
        assert abs(got - f) <= tol, (name, got, f, tol)


def test_deterministic_and_order_independent() -> None:
    df = manifest(5)
    a = run(df, prompts=True, seed=3)
    b = run(df.sample(fraction=1.0, shuffle=True, seed=1), prompts=True, seed=3)
    key = ["shard", "row"]
    assert a.sort(key).get_column(SPLIT_COLUMN).to_list() == b.sort(key).get_column(SPLIT_COLUMN).to_list()
    c = run(df, prompts=True, seed=4)
    assert a.get_column(SPLIT_COLUMN).to_list() != c.get_column(SPLIT_COLUMN).to_list()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), dup=st.integers(0, 30))
def test_stable_under_append(seed: int, dup: int) -> None:
    old = manifest(seed, generators=25)
    new = manifest(
        seed + 1, generators=35, dup_pairs=0, near_pairs=0, shard_prefix="data/new", prompt_pool=10**6
    )
    # some new rows copy old pictures: they merge groups (and may move them)
    rng = np.random.default_rng(seed)
    take = rng.choice(old.height, dup, replace=False)
    sha, codes = new.get_column("sha256").to_list(), new.get_column("phash").to_numpy().copy()
    for k, i in enumerate(take.tolist()):
        sha[k], codes[k] = old.get_column("sha256")[i], old.get_column("phash")[i]
    new = new.with_columns(pl.Series("sha256", sha), pl.Series("phash", codes))
    a = run(old)
    b = run(pl.concat([old, new]))
    j = a.join(b, on=["shard", "row"], suffix="_new")
    same_group = j.filter(pl.col(GROUP_COLUMN) == pl.col(f"{GROUP_COLUMN}_new"))
    assert (same_group.get_column(SPLIT_COLUMN) == same_group.get_column(f"{SPLIT_COLUMN}_new")).all()
    moved = j.filter(pl.col(SPLIT_COLUMN) != pl.col(f"{SPLIT_COLUMN}_new"))
    # a row moved only because its group was merged into a group with a smaller key
    assert (moved.get_column(f"{GROUP_COLUMN}_new") < moved.get_column(GROUP_COLUMN)).all()
    if dup == 0:
        assert moved.height == 0


def test_merged_groups_and_moved_rows_are_reported() -> None:
    df = manifest(7, prompt_pool=50)
    res = split(Manifest(df, "/x"), SplitOptions(prompts=True), workers=1)
    s = res.summary
    assert s["merged_groups"] > 0 and s["rows_in_merged_groups"] >= s["merged_groups"] * 2
    assert 0 < s["moved_rows"] <= s["rows_in_merged_groups"]
    assert s["leak_free"] is True
    assert sum(p["rows"] for p in s["splits"]) == df.height


def test_folds_partition_like_stratified_group_kfold() -> None:
    df = manifest(11, generators=40, gen_rows=800, real_rows=800)
    out = run(df, folds=5)
    folds = out.get_column(SPLIT_COLUMN)
    assert set(folds.unique().to_list()) == {f"fold{i}" for i in range(5)}  # every fold used
    assert spans(out, out.get_column(GROUP_COLUMN)) == 0  # no group in two folds
    gen = out.filter(pl.col("label") == 1)
    assert spans(gen, gen.get_column("model_name")) == 0
    # each fold keeps both classes
    for f in range(5):
        part = out.filter(pl.col(SPLIT_COLUMN) == f"fold{f}")
        assert part.filter(pl.col("label") == 0).height > 0


def test_holdouts_forced_to_test() -> None:
    df = manifest(13)
    out = run(df, test_generators=("org1/*",), test_architectures=("GAN",), test_real_sources=("FFHQ",))
    held = out.filter(
        (
            (pl.col("label") == 1)
            & (pl.col("model_name").str.starts_with("org1/") | (pl.col("architecture") == "GAN"))
        )
        | ((pl.col("label") == 0) & (pl.col("real_source") == "FFHQ"))
    )
    assert held.height > 0
    assert held.get_column(SPLIT_COLUMN).unique().to_list() == ["test"]


def test_real_source_and_family_units() -> None:
    df = manifest(17)
    out = run(df, by=("family", "real-source"))
    real = out.filter(pl.col("label") == 0)
    assert spans(real, real.get_column("real_source")) == 0
    gen = out.filter(pl.col("label") == 1)
    orgs = gen.get_column("model_name").str.split("/").list.first()
    assert spans(gen, orgs) == 0  # no table row matches "orgN/…": the organisation is the family


def test_family_table(tmp_path: Path) -> None:
    table = read_family_table()
    assert family_of("stabilityai/stable-diffusion-xl-base-1.0", table) == "stable-diffusion-xl"
    assert family_of("runwayml/stable-diffusion-v1-5", table) == "stable-diffusion"
    assert family_of("StyleGAN2-ffhq", table) == "stylegan"
    assert family_of("someone/new-model", table) == "someone"
    extra = tmp_path / "fam.csv"
    extra.write_text("pattern,family\nsomeone/*,my-base\n")
    assert family_of("someone/new-model", read_family_table(extra)) == "my-base"


def test_normalised_prompts() -> None:
    s = normalise_prompts(pl.Series(["A  Photo, of a CAT!", "a photo of a cat", "  ", None]))
    assert s.to_list() == ["a photo of a cat", "a photo of a cat", None, None]


def test_bad_options() -> None:
    from cfx.errors import InputError, UsageError

    df = manifest(0, gen_rows=10, real_rows=10)
    for kw in (
        {"fractions": (0.5, 0.2)},
        {"fractions": (0.5, 0.2, 0.2)},
        {"folds": 1},
        {"folds": 3, "test_architectures": ("GAN",)},
        {"threshold": 40},
        {"test_generators": ("nope/*",)},
    ):
        with pytest.raises(UsageError):
            run(df, **kw)
    with pytest.raises(InputError, match="no column 'colour'"):
        run(df, by=("colour",))


# --- the CLI on real shards --------------------------------------------------------------------------------
def test_cli_split_writes_manifest_parts_and_proof(cfx: Any, cf_small: Path, tmp_path: Path) -> None:
    out, parts = tmp_path / "split.parquet", tmp_path / "parts"
    r = cfx("split", str(cf_small), "-o", str(out), "--out", str(parts), "--prompts", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.out)
    assert summary["leak_free"] is True and summary["rows"] == 240
    m = read_manifest(out)
    assert m.df.get_column(SPLIT_COLUMN).null_count() == 0
    assert sorted(p.name for p in parts.iterdir()) == ["test.parquet", "train.parquet", "val.parquet"]
    assert sum(read_manifest(p).df.height for p in parts.iterdir()) == 240
    # the duplicates the synthetic set injects are in one split each
    gt = pl.read_parquet(cf_small / "ground_truth" / "duplicates.parquet")
    j = gt.join(
        m.df.select("shard", "row", SPLIT_COLUMN), left_on=["shard_a", "row_a"], right_on=["shard", "row"]
    ).join(
        m.df.select("shard", "row", SPLIT_COLUMN),
        left_on=["shard_b", "row_b"],
        right_on=["shard", "row"],
        suffix="_b",
    )
    assert j.height > 0 and (j.get_column(SPLIT_COLUMN) == j.get_column(f"{SPLIT_COLUMN}_b")).all()


def test_cli_split_errors(cfx: Any, cf_small: Path) -> None:
    r = cfx("split", str(cf_small), "--fractions", "0.5,x", "--json")
    assert r.returncode == 2 and "Error: --fractions" in r.stderr and "Traceback" not in r.stderr
    r = cfx("split", str(cf_small), "--by", "colour", "--json")
    assert r.returncode == 3 and "no column 'colour'" in r.stderr


# --- writing the splits as a Hub dataset ---------------------------------------------------------------------
def test_subset_split_column_loads_as_a_datasetdict(cfx: Any, cf_small: Path, tmp_path: Path) -> None:
    import datasets
    import pyarrow.parquet as pq

    split_manifest, out = tmp_path / "split.parquet", tmp_path / "hub"
    r = cfx(
        "split",
        str(cf_small),
        "-o",
        str(split_manifest),
        "--names",
        "train,val,test",
        "--fractions",
        "0.6,0.2,0.2",
    )
    assert r.returncode == 0, r.stderr
    r = cfx("subset", str(split_manifest), "--out", str(out), "--split-column", SPLIT_COLUMN)
    assert r.returncode == 0, r.stderr
    want = read_manifest(split_manifest).df.group_by(SPLIT_COLUMN).len()
    want_counts = dict(want.iter_rows())
    files = sorted(p.name for p in (out / "data").iterdir())
    assert files == [f"{n}-00000-of-00001.parquet" for n in sorted(want_counts)]
    cache = tmp_path / "hf-cache"
    ds = datasets.load_dataset("parquet", data_dir=str(out), cache_dir=str(cache))
    assert {k: v.num_rows for k, v in ds.items()} == want_counts
    card = datasets.load_dataset(str(out), cache_dir=str(cache))  # reads the card's configs
    assert {k: v.num_rows for k, v in card.items()} == want_counts
    assert list(card) == ["train", "val", "test"]
    # the new manifest points at the right rows: same image names and generators, per split
    new = read_manifest(out / "manifest.parquet").df
    src = read_manifest(split_manifest).df
    j = new.join(src, left_on=["source_shard", "source_row"], right_on=["shard", "row"], suffix="_src")
    assert j.height == src.height
    assert (j.get_column(SPLIT_COLUMN) == j.get_column(f"{SPLIT_COLUMN}_src")).all()
    for shard, part in new.group_by("shard"):
        table = pq.read_table(out / str(shard[0]), columns=["image_name"])
        names = table.column("image_name").to_pylist()
        assert [names[i] for i in part.get_column("row").to_list()] == part.get_column("image_name").to_list()
        assert part.get_column(SPLIT_COLUMN).unique().to_list() == [Path(str(shard[0])).name.split("-")[0]]


def test_subset_split_column_errors(cfx: Any, cf_small: Path, tmp_path: Path) -> None:
    r = cfx("subset", str(cf_small), "--out", str(tmp_path / "x"), "--split-column", "nope")
    assert r.returncode == 3 and "no such column" in r.stderr and not (tmp_path / "x").exists()
    r = cfx("subset", str(cf_small), "--out", str(tmp_path / "x"), "--split-column", "architecture")
    assert r.returncode == 0, r.stderr  # any column with Hub-valid names works (LatDiff, GAN, Real, …)
    r = cfx("subset", str(cf_small), "--out", str(tmp_path / "y"), "--split-column", "model_name")
    assert r.returncode == 3 and "not a valid Hub split name" in r.stderr and not (tmp_path / "y").exists()


def test_balance_rebalances_each_split_and_stays_leak_free() -> None:
    df = manifest(2, generators=30, gen_rows=900, real_rows=600)
    res = split(Manifest(df, "/x"), SplitOptions(balance=True), workers=1)
    out = res.manifest.df
    for name, part in out.group_by(SPLIT_COLUMN):
        counts = dict(part.group_by("label").len().iter_rows())
        assert counts.get(0) == counts.get(1), (name, counts)
    assert out.height < df.height and res.summary["rows"] == out.height
    gen = out.filter(pl.col("label") == 1)
    assert spans(gen, gen.get_column("model_name")) == 0 and spans(out, out.get_column("sha256")) == 0
    assert {p["split"]: p["generated_share"] for p in res.summary["splits"]} == {
        "train": 0.5,
        "val": 0.5,
        "test": 0.5,
    }


# --- rows dropped on the way keep the others in their split --------------------------------------------------
@pytest.mark.parametrize("order", ["source", "shuffle"])
def test_split_column_rows_stay_in_their_split_when_rows_are_dropped(tmp_path: Path, order: str) -> None:
    """--drop-bad-images and a --skip-bad transform remove rows while the subset streams; the split of every
    other row must not shift (each row carries its split from read to write)."""
    import pyarrow.parquet as pq

    from cfx.load import load_manifest
    from cfx.subset import write_subset
    from cfx.transform import Pipeline
    from tests.shards import rows, write_shard

    records = rows(24) + rows(12, label=0, start=24)
    for i in (1, 7, 8, 30):
        records[i]["image_data"] = None  # bad rows: dropped by drop_bad_images
    for i in (3, 15, 26):
        records[i]["image_data"] = b"not an image"  # cannot be transformed: left out by skip_bad
    write_shard(tmp_path / "ds" / "data" / "HFCF_small_0.parquet", records[:20])
    write_shard(tmp_path / "ds" / "data" / "HFCF_small_1.parquet", records[20:])
    m = load_manifest(str(tmp_path / "ds"))
    names = ["train", "val", "test"]
    assigned = [names[(i * 7) % 3] for i in range(m.df.height)]
    m = m.with_df(m.df.with_columns(pl.Series(SPLIT_COLUMN, assigned)))
    want = dict(zip(m.df.get_column("image_name").to_list(), assigned, strict=True))
    out = tmp_path / "out"
    result = write_subset(
        m,
        out,
        order=order,
        seed=3,
        split_column=SPLIT_COLUMN,
        drop_bad_images=True,
        transform=Pipeline.parse(["jpeg:90"]),
        skip_bad=True,
        workers=2,
    )
    gone = {f"{i:08d}.png" for i in (1, 7, 8, 30, 3, 15, 26)}
    seen = {}
    for f in result.files:
        split_name = Path(f.name).name.split("-")[0]
        for name in pq.read_table(out / f.name, columns=["image_name"]).column("image_name").to_pylist():
            seen[name.replace(".jpg", ".png")] = split_name
    assert set(seen) == set(want) - gone
    assert seen == {k: v for k, v in want.items() if k not in gone}
    new = read_manifest(out / "manifest.parquet").df
    assert new.height == len(seen)
    assert dict(zip(new.get_column("source_image_name"), new.get_column(SPLIT_COLUMN), strict=True)) == {
        k: v for k, v in want.items() if k not in gone
    }


def test_shares_far_from_the_asked_ones_are_warned_about_with_the_largest_group() -> None:
    from cfx.cli.split import share_warnings

    few = split(
        Manifest(manifest(5, generators=3, real_rows=0, dup_pairs=0), "/x"), SplitOptions(), workers=1
    )
    warnings = share_warnings(few.summary)
    assert len(warnings) == 1 and "split shares are off what was asked" in warnings[0]
    assert "the largest group" in warnings[0] and "groups are never cut" in warnings[0]
    many = split(Manifest(manifest(5, generators=600, gen_rows=6000, real_rows=6000), "/x"), SplitOptions())
    assert all(
        abs(s["fraction"] - few_asked) <= 0.05
        for s, few_asked in zip(
            many.summary["splits"], many.summary["requested_fractions"].values(), strict=True
        )
    ) == (share_warnings(many.summary) == [])


# --- --resolve drop: units first, then the fewest rows whose links cross splits are dropped ---------------------
def chained(seed: int, generators: int = 120, per_gen: int = 40, real_rows: int = 4800) -> pl.DataFrame:
    """Generators chained end to end by shared prompts (generator i shares one prompt with i + 1), so with
    ``--resolve merge`` every generated row is one group; plus near and exact copies across real rows."""
    df = manifest(seed, generators=generators, gen_rows=generators * per_gen, real_rows=real_rows)
    gens = [f"org{i % 5}/model-{i}" for i in range(generators)]
    model = [gens[i // per_gen] for i in range(generators * per_gen)] + [""] * real_rows
    prompt = [
        f"link {i // per_gen}"
        if i % per_gen == 0
        else f"link {i // per_gen + 1}"
        if i % per_gen == 1
        else None
        for i in range(generators * per_gen)
    ] + [None] * real_rows
    return df.with_columns(pl.Series("model_name", model), pl.Series("prompt", prompt, pl.String))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), generators=st.integers(3, 40), folds=st.sampled_from([None, 4]))
def test_resolve_drop_keeps_the_leak_proof(seed: int, generators: int, folds: int | None) -> None:
    df = manifest(seed, generators=generators, gen_rows=400, real_rows=400, dup_pairs=40, near_pairs=40)
    result = split(Manifest(df, "/x"), SplitOptions(prompts=True, folds=folds, resolve="drop"), workers=1)
    out, s = result.manifest.df, result.summary
    # independent of cfx.split: no generator, bytes, prompt or near pair in two splits among the kept rows
    gen = out.filter(pl.col("label") == 1)
    assert spans(gen, gen.get_column("model_name")) == 0
    assert spans(out, out.get_column("sha256")) == 0
    assert spans(out, normalise_prompts(out.get_column("prompt"))) == 0
    assert near_cross(out) == 0
    assert s["leak_free"] and not any(s["leak_proof"].values())
    # what was dropped is reported, per split and label, and adds up
    dropped = s["dropped"]
    assert out.height + dropped["rows"] == df.height
    assert sum(d["generated"] + d["real"] for d in dropped["by_split"].values()) == dropped["rows"]
    assert sum(dropped["by_reason"].values()) == dropped["rows"]
    assert out.join(df.select("shard", "row"), on=["shard", "row"], how="anti").height == 0


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000))
def test_resolve_drop_cuts_a_prompt_chain_and_keeps_shares(seed: int) -> None:
    df = chained(seed)
    merged = split(Manifest(df, "/x"), SplitOptions(prompts=True), workers=1).summary
    assert merged["largest_group_rows"] >= 120 * 40  # the chain: every generated row in one group
    assert max(p["generated_share"] or 0 for p in merged["splits"]) > 0.9  # ... so one split is all generated
    s = split(Manifest(df, "/x"), SplitOptions(prompts=True, resolve="drop"), workers=1).summary
    assert s["leak_free"]
    overall = s["generated_share"]["overall"]
    for p in s["splits"]:  # each split's generated share within 0.05 of the whole set's, and reported so
        assert abs(p["generated_share"] - overall) <= 0.05 + 1e-9, (p, overall)
        assert abs(p["fraction"] - s["requested_fractions"][p["split"]]) <= 0.05
    assert s["generated_share"]["within_tolerance"] is True
    assert s["dropped"]["rows"] <= 0.05 * df.height  # the chain is cut by a few rows, not whole generators


def test_resolve_drop_breaks_ties_against_the_largest_split() -> None:
    from cfx.splitdrop import Drop, drop_by_value

    split_idx = np.array([0, 1, 0, 2, 1, 1])
    ids = np.array([0, 0, 1, 1, 2, 2])  # value 0: 1 train + 1 val (tie), 1: train/test tie, 2: val only
    drop = Drop(np.ones(6, bool), np.zeros(6, np.int8))
    drop_by_value(ids, split_idx, drop, np.array([0.8, 0.1, 0.1]), "prompt")
    assert drop.keep.tolist() == [False, True, False, True, True, True]


def test_resolve_drop_brings_a_lopsided_split_within_the_share_tolerance() -> None:
    from cfx.splitdrop import Drop, drop_for_share

    split_idx = np.array([0] * 100 + [1] * 100)
    generated = np.array([True] * 50 + [False] * 50 + [True] * 80 + [False] * 20)
    drop = Drop(np.ones(200, bool), np.zeros(200, np.int8))
    drop_for_share(generated, split_idx, drop, 2, 0.05, lambda rows: rows.astype(float))
    kept, overall = drop.keep, generated.mean()  # 0.65: split 0 holds too few generated, split 1 too many
    for s, too_many in ((0, ~generated), (1, generated)):
        here = split_idx == s
        assert abs(generated[kept & here].mean() - overall) <= 0.05
        assert not (~kept & here & ~too_many).any()  # only the over-represented label loses rows
        assert 0 < (~kept & here).sum() < 60  # no more than it takes
    assert (drop.reason[~kept] == 4).all()  # "share"
