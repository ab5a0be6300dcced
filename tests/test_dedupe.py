"""Dedupe: grouping without chaining, survivors, scopes, label conflicts, idempotence, quality, CLI."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cfx.dedupe import DEFAULT_THRESHOLD, DedupeOptions, decide, dedupe, scope_ids
from cfx.load import load_manifest
from cfx.manifest import read_manifest, read_manifest_stream


def frame(
    codes: list[int],
    *,
    labels: list[int] | None = None,
    shas: list[str | None] | None = None,
    models: list[str] | None = None,
    sizes: list[int] | None = None,
    shards: list[str] | None = None,
    uniform: list[bool] | None = None,
    errors: list[str | None] | None = None,
) -> pl.DataFrame:
    """A hashed manifest frame built by hand (no images): what ``decide`` works on."""
    n = len(codes)
    labels = labels or [1] * n
    errors = errors or [None] * n
    return pl.DataFrame(
        {
            "shard": shards or ["data/HFCF_small_0.parquet"] * n,
            "row": list(range(n)),
            "label": labels,
            "model_name": models or [("gen-a" if lab == 1 else "") for lab in labels],
            "real_source": [("" if lab == 1 else "COCO") for lab in labels],
            "width": [512] * n,
            "height": [512] * n,
            "num_bytes": sizes or [1000] * n,
            "sha256": shas or [f"sha{i}" for i in range(n)],
            "phash": [None if e else c for c, e in zip(codes, errors, strict=True)],
            "near_uniform": [None if e else u for u, e in zip(uniform or [False] * n, errors, strict=True)],
            "hash_error": errors,
        },
        schema_overrides={"label": pl.Int8, "phash": pl.UInt64, "row": pl.Int64},
    )


def bits(*positions: int) -> int:
    return sum(1 << p for p in positions)


def removed_rows(df: pl.DataFrame, options: DedupeOptions) -> list[int]:
    d = decide(df, options)
    return df.get_column("row").filter(pl.Series(d.removed)).to_list()


def test_chain_is_not_one_group() -> None:
    a = 0
    b = bits(0, 1, 2, 3, 4, 5)  # 6 from A
    c = b ^ bits(10, 11, 12, 13, 14, 15)  # 6 from B, 12 from A
    df = frame([a, b, c])
    d = decide(df, DedupeOptions(threshold=8))
    g = d.grouping
    assert g.group.tolist() == [0, 0, -1]  # A leads and takes B; C stays alone
    assert d.removed.tolist() == [False, True, False]
    # the pair B~C is still reported, just not used to chain C into A's group
    pairs = set(zip(g.pairs["a"].tolist(), g.pairs["b"].tolist(), strict=True))
    assert pairs == {(0, 1), (1, 2)}
    # when B is the survivor, A and C both join it: everyone is within t of the survivor
    df_b_first = frame([a, b, c], sizes=[10, 30, 20])
    d = decide(df_b_first, DedupeOptions(threshold=8, keep="largest"))
    assert d.grouping.leader.tolist() == [1, 1, 1]
    assert d.removed.tolist() == [True, False, True]


@pytest.mark.parametrize(
    ("keep", "survivor"),
    [("first", 0), ("largest", 2), ("smallest", 1), ("prefer-real", 3), ("prefer-generated", 0)],
)
def test_keep_policies(keep: str, survivor: int) -> None:
    df = frame(
        [7, 7, 7, 7],
        shas=["same"] * 4,
        labels=[1, 1, 1, 0],
        sizes=[500, 100, 900, 500],
    )
    d = decide(df, DedupeOptions(keep=keep, conflicts="keep"))
    assert d.grouping.leader.tolist() == [survivor] * 4


def test_tie_break_is_shard_then_row_in_natural_order() -> None:
    shards = ["data/HFCF_small_10.parquet", "data/HFCF_small_2.parquet", "data/HFCF_small_2.parquet"]
    df = frame([5, 5, 5], shards=shards, shas=["x", "x", "x"]).with_columns(pl.Series("row", [0, 9, 4]))
    d = decide(df, DedupeOptions(keep="largest"))
    assert d.grouping.leader.tolist() == [2, 2, 2]  # HFCF_small_2 row 4


def test_scopes_and_label_conflicts() -> None:
    # rows 0/1: the same picture as generated and real; rows 2/3: same generated picture, two models
    far = bits(*range(20, 40))
    codes = [bits(1, 2), bits(1, 2, 3), far, far]
    kw: dict[str, Any] = dict(labels=[1, 0, 1, 1], models=["m1", "", "m1", "m2"])
    df = frame(codes, **kw)
    assert scope_ids(df, "within-generator").tolist()[2] != scope_ids(df, "within-generator").tolist()[3]
    assert removed_rows(df, DedupeOptions(conflicts="drop")) == [0, 1, 3]
    assert removed_rows(df, DedupeOptions(conflicts="report")) == [3]
    assert removed_rows(df, DedupeOptions(conflicts="keep")) == [1, 3]
    assert removed_rows(df, DedupeOptions(conflicts="keep", keep="prefer-real")) == [0, 3]
    assert removed_rows(df, DedupeOptions(scope="within-label", conflicts="keep")) == [3]
    assert removed_rows(df, DedupeOptions(scope="within-generator", conflicts="keep")) == []
    # conflicts are reported whatever the scope
    for scope in ("all", "within-label", "within-generator"):
        d = decide(df, DedupeOptions(scope=scope, conflicts="keep"))
        assert d.grouping.conflict_rows.tolist() == [True, True, False, False]
        assert d.grouping.pairs["cross_label"].sum() == 1
    # within-label + drop: the conflicting rows go even though they are in no group
    assert removed_rows(df, DedupeOptions(scope="within-label", conflicts="drop")) == [0, 1, 3]


def test_near_uniform_and_undecodable_rows() -> None:
    # rows 0,1: flat images with equal pHash but different bytes -> not matched; rows 2,3: identical
    # undecodable files -> exact duplicates; rows 4,5: flat but byte-identical -> exact duplicates
    df = frame(
        [1 << 63, 1 << 63, 0, 0, 1 << 63, 1 << 63],
        shas=["f1", "f2", "bad", "bad", "f3", "f3"],
        uniform=[True, True, False, False, True, True],
        errors=[None, None, "UnidentifiedImageError", "UnidentifiedImageError", None, None],
    )
    assert removed_rows(df, DedupeOptions()) == [3, 5]
    d = decide(df, DedupeOptions())
    assert d.eligible.tolist() == [False] * 6


def test_exact_only_and_near_only() -> None:
    df = frame([0, 0, bits(3)], shas=["x", "x", "y"])
    assert removed_rows(df, DedupeOptions(near=False)) == [1]
    assert removed_rows(df, DedupeOptions(exact=False)) == [1, 2]
    d = decide(df, DedupeOptions(exact=False))
    assert d.grouping.exact.tolist() == [True, True, False]  # identical bytes are still called exact
    assert d.grouping.pairs["exact"].tolist() == [True, False, False]  # pairs (0,1), (0,2), (1,2)


@st.composite
def hashed_frames(draw: st.DrawFn) -> tuple[pl.DataFrame, DedupeOptions]:
    n = draw(st.integers(1, 40))
    centres = draw(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=5))
    codes, shas = [], []
    for i in range(n):
        c = draw(st.sampled_from(centres))
        flips = draw(st.lists(st.integers(0, 63), max_size=10, unique=True))
        code = c ^ bits(*flips)
        if codes and draw(st.booleans()) and draw(st.booleans()):
            j = draw(st.integers(0, len(codes) - 1))  # a byte-identical copy of an earlier row
            code, sha = codes[j], shas[j]
        else:
            sha = f"s{i}"
        codes.append(code)
        shas.append(sha)
    labels = draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n))
    models = draw(st.lists(st.sampled_from(["m1", "m2"]), min_size=n, max_size=n))
    sizes = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    shards = draw(st.lists(st.sampled_from(["data/a_1.parquet", "data/a_2.parquet"]), min_size=n, max_size=n))
    uniform = draw(
        st.lists(st.booleans(), min_size=n, max_size=n).map(
            lambda u: [x and (i % 5 == 0) for i, x in enumerate(u)]
        )
    )
    df = frame(codes, labels=labels, shas=shas, models=models, sizes=sizes, shards=shards, uniform=uniform)
    # byte-identical rows share everything derived from the bytes
    df = df.with_columns(
        pl.col("phash").first().over("sha256"), pl.col("near_uniform").first().over("sha256")
    )
    options = DedupeOptions(
        exact=draw(st.booleans()) or True,
        near=draw(st.booleans()),
        threshold=draw(st.integers(0, 12)),
        keep=draw(st.sampled_from(["first", "largest", "smallest", "prefer-real", "prefer-generated"])),
        scope=draw(st.sampled_from(["all", "within-label", "within-generator"])),
        conflicts=draw(st.sampled_from(["drop", "keep", "report"])),
    )
    return df, options


def _dup(df: pl.DataFrame, i: int, j: int, options: DedupeOptions) -> bool:
    r, s = df.row(i, named=True), df.row(j, named=True)
    if options.exact and r["sha256"] == s["sha256"]:
        return True
    ok = all(x["hash_error"] is None and not x["near_uniform"] for x in (r, s))
    return bool(options.near and ok and (r["phash"] ^ s["phash"]).bit_count() <= options.threshold)


@settings(max_examples=200, deadline=None)
@given(hashed_frames())
def test_dedupe_is_idempotent_and_groups_are_tight(case: tuple[pl.DataFrame, DedupeOptions]) -> None:
    df, options = case
    d = decide(df, options)
    g = d.grouping
    scope = scope_ids(df, options.scope)
    for pos in np.flatnonzero(g.group >= 0).tolist():
        lead = int(g.leader[pos])
        assert scope[pos] == scope[lead]
        assert pos == lead or _dup(df, pos, lead, options)  # member within t of its survivor
    kept = df.filter(pl.Series(~d.removed))
    again = decide(kept, options)
    assert not again.removed.any()  # dedupe twice == dedupe once
    if options.conflicts != "report":
        kscope = scope_ids(df, options.scope)[~d.removed]
        for i in range(kept.height):
            for j in range(i + 1, kept.height):
                if kscope[i] == kscope[j]:
                    assert not _dup(kept, i, j, options)


# --- end to end on the CF-shaped synthetic set ----------------------------------------------------
def _truth_clusters(gt: pl.DataFrame) -> dict[tuple[str, int], int]:
    """Ground-truth pairs closed transitively: row -> cluster id."""
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def find(x: tuple[str, int]) -> tuple[str, int]:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for r in gt.iter_rows(named=True):
        a, b = find((r["shard_a"], r["row_a"])), find((r["shard_b"], r["row_b"]))
        parent[a] = b
    roots = {x: find(x) for x in list(parent)}
    ids = {r: i for i, r in enumerate(sorted(set(roots.values())))}
    return {x: ids[r] for x, r in roots.items()}


def quality(root: Path, pairs: pl.DataFrame) -> dict[str, float]:
    from cfx.synth import load_ground_truth

    gt = load_ground_truth(root)
    cluster = _truth_clusters(gt)
    found = {(r["shard_a"], r["row_a"], r["shard_b"], r["row_b"]) for r in pairs.iter_rows(named=True)}
    found |= {(c, d, a, b) for a, b, c, d in found}
    hit = [(r["shard_a"], r["row_a"], r["shard_b"], r["row_b"]) in found for r in gt.iter_rows(named=True)]
    gt = gt.with_columns(pl.Series("found", hit))
    true_pairs = [
        cluster.get((r["shard_a"], r["row_a"]), -1) == cluster.get((r["shard_b"], r["row_b"]), -2)
        for r in pairs.iter_rows(named=True)
    ]
    near = gt.filter(pl.col("kind") == "near")
    return {
        "near_recall": near.get_column("found").mean() or 0.0,
        "exact_recall": gt.filter(pl.col("kind") == "exact").get_column("found").mean() or 0.0,
        "cross_label_recall": gt.filter(pl.col("cross_label")).get_column("found").mean() or 0.0,
        "precision": float(np.mean(true_pairs)) if true_pairs else 1.0,
        "n_near": near.height,
    }


def test_quality_on_ground_truth(cf_small: Path) -> None:
    result = dedupe(load_manifest(str(cf_small)), DedupeOptions(conflicts="report"), workers=1)
    q = quality(cf_small, result.pairs)
    assert q["n_near"] >= 10
    assert q["exact_recall"] == 1.0
    assert q["cross_label_recall"] == 1.0
    assert q["near_recall"] >= 0.95
    assert q["precision"] >= 0.99
    s = result.summary
    assert s["conflicts"]["pairs"] >= 1 and s["conflicts"]["removed"] == 0  # --conflicts report
    spared = result.groups.filter(~pl.col("survivor") & (pl.col("action") == "keep")).height
    assert spared >= 1 and s["removed"] + spared == s["exact_duplicates"] + s["near_duplicates"]
    # every conflict pair in the truth is reported as one
    from cfx.synth import load_ground_truth

    n_cross = load_ground_truth(cf_small).get_column("cross_label").sum()
    assert result.pairs.get_column("cross_label").sum() == n_cross


def test_cli_end_to_end_and_idempotent(cf_small: Path, cfx: Callable[..., Any], tmp_path: Path) -> None:
    kept = tmp_path / "kept.parquet"
    rep = tmp_path / "report"
    r = cfx("dedupe", str(cf_small), "-o", str(kept), "--report", str(rep), "--json", "--dhash")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.out)
    assert summary["rows"] == 240 and summary["removed"] > 0
    assert summary["kept"] == summary["rows"] - summary["removed"]
    m = read_manifest(kept)
    assert len(m) == summary["kept"]
    for col in ("sha256", "phash", "dhash", "near_uniform", "hash_error"):
        assert col in m.df.columns
    assert m.df.get_column("phash").dtype == pl.UInt64
    assert m.df.get_column("num_bytes").null_count() == 0
    assert m.history[-1].startswith("dedupe threshold=")
    pairs = pl.read_parquet(rep / "pairs.parquet")
    groups = pl.read_parquet(rep / "groups.parquet")
    assert json.loads((rep / "summary.json").read_text()) == summary
    assert set(pairs.columns) >= {"shard_a", "row_a", "shard_b", "row_b", "distance", "kind"}
    assert (
        groups.group_by("group_id").agg(pl.col("survivor").sum()).get_column("survivor").to_list()
        == [1] * groups.get_column("group_id").n_unique()
    )
    # removed rows are exactly those the groups table says
    gone = groups.filter(pl.col("action") == "remove").height
    assert gone == summary["removed"]
    # idempotent: dedupe of the deduplicated manifest removes nothing and decodes nothing
    r2 = cfx("dedupe", str(kept), "-o", str(tmp_path / "kept2.parquet"), "--json")
    assert r2.returncode == 0, r2.stderr
    again = json.loads(r2.out)
    assert again["removed"] == 0 and again["hashing"]["decoded"] == 0


def test_cli_pipe_summary_on_stderr(cf_small: Path, cfx: Callable[..., Any]) -> None:
    r = cfx("dedupe", str(cf_small), "--threshold", "6")
    assert r.returncode == 0, r.stderr
    assert "cfx dedupe" in r.stderr and "removed" in r.stderr  # the human summary, on stderr
    m = read_manifest_stream(io.BytesIO(r.stdout))
    stats = cfx("stats", "-", "--json", input=r.stdout)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.out)["totals"]["rows"] == len(m) < 240
    quiet = cfx("--quiet", "dedupe", str(cf_small), "--threshold", "6")
    assert quiet.returncode == 0 and quiet.stderr == ""  # --quiet: no summary, no progress
    assert read_manifest_stream(io.BytesIO(quiet.stdout)).df.equals(m.df)


def test_cli_usage_errors(cf_small: Path, cfx: Callable[..., Any]) -> None:
    for args, needle in (
        (["--threshold", "70"], "--threshold 70"),
        (["--keep", "newest"], "--keep 'newest'"),
        (["--scope", "everywhere"], "--scope"),
        (["--conflicts", "ignore"], "--conflicts"),
    ):
        r = cfx("dedupe", str(cf_small), *args, "--json")
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr


def test_gallery_sheets(cf_small: Path, tmp_path: Path) -> None:
    from cfx.gallery import write_gallery

    result = dedupe(load_manifest(str(cf_small)), workers=1)
    paths = write_gallery(result.hashed, result.groups, tmp_path / "sheets", threshold=DEFAULT_THRESHOLD)
    assert 1 <= len(paths) <= 12
    for p in paths:
        img = Image.open(p)
        assert img.format == "PNG" and img.width >= 200 and img.height >= 250
    assert not list((tmp_path / "sheets").glob(".*tmp"))  # written atomically, no leftovers


def test_demo_step(cf_small: Path, tmp_path: Path) -> None:
    from cfx.demo import DemoContext, _dedupe
    from cfx.progress import NullReporter

    manifest = load_manifest(str(cf_small))
    ctx = DemoContext(out=tmp_path, reporter=NullReporter())
    ctx.state.update(manifest=manifest, manifest_path=tmp_path / "manifest.parquet")
    step = _dedupe(ctx)
    assert "contact sheet: " in step.summary
    sheet = Path(step.summary.rsplit("contact sheet: ", 1)[1])
    assert sheet.is_file() and Image.open(sheet).format == "PNG"
    assert (tmp_path / "dedupe" / "summary.json").is_file()
    assert len(read_manifest(tmp_path / "kept.parquet")) < len(manifest)


@pytest.mark.slow
def test_decide_at_full_dataset_scale() -> None:
    """556,541 hashed rows (2% near copies, 1% exact copies): search + grouping well within minutes."""
    import time

    n = 556_541
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
    src, dst = rng.integers(0, n, n // 50), rng.integers(0, n, n // 50)
    codes[dst] = codes[src] ^ (np.uint64(1) << rng.integers(0, 64, dst.size).astype(np.uint64))
    sha = np.array([f"{i:x}" for i in range(n)], dtype=object)
    a, b = rng.integers(0, n, n // 100), rng.integers(0, n, n // 100)
    sha[b], codes[b] = sha[a], codes[a]
    label = (np.arange(n) < n // 2).astype(np.int8)
    df = pl.DataFrame(
        {
            "shard": [f"data/HFCF_small_{i // 2993}.parquet" for i in range(n)],
            "row": np.arange(n) % 2993,
            "label": label,
            "model_name": np.where(label == 1, "m", ""),
            "real_source": np.where(label == 0, "COCO", ""),
            "width": np.full(n, 512, np.int32),
            "height": np.full(n, 512, np.int32),
            "num_bytes": rng.integers(1000, 9000, n),
            "sha256": sha.tolist(),
            "phash": codes,
            "near_uniform": np.zeros(n, bool),
            "hash_error": pl.Series([None] * n, dtype=pl.String),
        }
    )
    start = time.perf_counter()
    d = decide(df, DedupeOptions(), workers=2)
    elapsed = time.perf_counter() - start
    assert elapsed < 120, f"{elapsed:.0f} s"
    assert 15_000 < int(d.removed.sum()) < 30_000
    kept = df.filter(pl.Series(~d.removed))
    assert not decide(kept, DedupeOptions(), workers=2).removed.any()
