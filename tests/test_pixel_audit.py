"""Pixel facts in the audit (single features, joint canary, fixes), the quality-issues table, `balance --match`
on pixel facts (quantile bins, dims-grid), `--drop-quality-issues` and `audit --fail-above` (exit 9).

The manifests here carry pixel-fact columns drawn per label (the column contract of `cfx inspect --pixels`):
a legitimate input to audit and balance, with known answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from cfx.audit import audit, auroc
from cfx.balance import BalanceOptions, MatchSpec, balance, parse_match
from cfx.errors import InputError, UsageError
from cfx.manifest import Manifest
from cfx.quality import KIND_NAMES, drop_quality_issues, parse_kinds, quality_issues
from tests.test_balance import make_manifest

FLOATS = ("luma_mean", "luma_std", "saturation_mean", "colorfulness", "entropy", "sharpness", "noise_sigma")


def grid_of(w: np.ndarray, h: np.ndarray) -> np.ndarray:
    out = np.ones(len(w), dtype=np.int64)
    for g in (8, 16, 32, 64):
        out[(w % g == 0) & (h % g == 0)] = g
    return out


def with_pixels(m: Manifest, seed: int = 0, errors: float = 0.03) -> Manifest:
    """Pixel facts per label: real photos noisier (camera noise) and sharper; generated smoother, more often
    blurry; the rest drawn alike. ``errors`` of the rows could not be decoded (pixel_error, facts null)."""
    rng = np.random.default_rng(seed)
    n = m.df.height
    gen = (m.df.get_column("label") == 1).to_numpy()
    w, h = m.df.get_column("width").to_numpy(), m.df.get_column("height").to_numpy()
    jpeg = (m.df.get_column("format") == "JPEG").to_numpy()
    facts: dict[str, Any] = {
        "luma_mean": rng.uniform(20, 235, n),
        "luma_std": rng.uniform(1, 80, n),
        "saturation_mean": np.where(rng.random(n) < 0.05, 0.0, rng.uniform(0.05, 0.8, n)),
        "colorfulness": rng.uniform(0, 120, n),
        "entropy": rng.uniform(2, 8, n),
        "sharpness": np.where(gen, rng.lognormal(5.0, 1.0, n), rng.lognormal(6.0, 1.0, n)),
        "noise_sigma": np.where(gen, rng.lognormal(0.0, 0.5, n), rng.lognormal(0.8, 0.5, n)),
        "hf_energy": rng.uniform(0, 0.3, n),
        "blockiness": rng.uniform(0, 2, n),
        "dims_multiple_of": grid_of(w, h),
        "qtable_id": np.where(jpeg, np.where(rng.random(n) < 0.5, "9a3f01c2", "77e0b1d4"), None),
        "exif_software": np.where(~gen & (rng.random(n) < 0.2), "Adobe Photoshop", None),
    }
    bad = rng.random(n) < errors
    df = m.df.with_columns(
        *(
            pl.Series(k, v.tolist(), dtype=pl.String) if v.dtype == object else pl.Series(k, v)
            for k, v in facts.items()
        ),
        pixel_error=pl.Series(np.where(bad, "cannot decode: truncated", None).tolist(), dtype=pl.String),
    )
    decoded = pl.col("pixel_error").is_null()
    numeric = [*FLOATS, "hf_energy", "blockiness", "dims_multiple_of", "qtable_id", "exif_software"]
    return m.with_df(df.with_columns(pl.when(decoded).then(pl.col(c)).alias(c) for c in numeric))


@pytest.fixture(scope="module")
def pixels() -> Manifest:
    return with_pixels(make_manifest(1200, 1000, seed=3, generators=12))


# --- audit -------------------------------------------------------------------------------------------
def test_pixel_features_scored_with_unknowns_left_out_and_counted(pixels: Manifest) -> None:
    res = audit(pixels)
    by = {f.feature: f for f in res.features}
    df = pixels.df
    known = df.filter(pl.col("pixel_error").is_null())
    # independent AUROC of noise_sigma on the decoded rows only
    expect = auroc(known["noise_sigma"].to_numpy(), known["label"].to_numpy())
    noise = by["noise_sigma"]
    assert noise.raw_auc == pytest.approx(expect) and noise.rows == known.height
    assert f"{df.height - known.height:,} row(s) without a value were left out" in noise.note
    assert noise.flagged and noise.direction == "higher → real" and "--match noise:10" in noise.fix
    assert by["sharpness"].flagged and "--match sharpness:10" in by["sharpness"].fix
    assert not by["luma_mean"].flagged and by["luma_mean"].fix == ""
    # categorical pixel facts: per-category rates; a decoded PNG has no qtable -> "none"
    assert by["dims_multiple_of"].kind == by["qtable_id"].kind == by["exif_software"].kind == "categorical"
    qcats = {c["value"] for c in by["qtable_id"].categories}
    assert qcats == {"9a3f01c2", "77e0b1d4", "none"} and by["qtable_id"].rows == known.height
    assert by["exif_software"].flagged and "--strip-metadata" in by["exif_software"].fix


def test_joint_canary_uses_pixel_facts() -> None:
    pixels = with_pixels(make_manifest(300, 250, seed=3, generators=12))
    res = audit(pixels, joint=True)
    assert res.joint is not None and res.joint.auroc is not None
    assert {"noise_sigma", "sharpness", "qtable_id", "dims_multiple_of"} <= set(res.joint.features)
    # metadata-only audit of the same rows: the pixel facts add what the sizes do not say
    plain = audit(pixels.with_df(pixels.df.drop("luma_mean")), joint=True)
    assert plain.joint is not None and plain.joint.auroc is not None
    assert "noise_sigma" not in plain.joint.features
    assert res.joint.auroc > plain.joint.auroc


def test_no_pixel_facts_no_pixel_features() -> None:
    res = audit(make_manifest(60, 50))
    assert not {f.feature for f in res.features} & {"noise_sigma", "qtable_id"}
    assert res.quality is not None
    assert {s["kind"] for s in res.quality.skipped} == set(KIND_NAMES) - {"odd-aspect"}
    assert "cfx inspect SOURCE --pixels" in res.quality.skipped[0]["reason"]


# --- quality issues ----------------------------------------------------------------------------------
def _manual_counts(df: pl.DataFrame, hit: pl.Expr) -> tuple[int, int]:
    d = df.filter(pl.col("pixel_error").is_null())
    return (
        int(d.filter(hit & (pl.col("label") == 0)).height),
        int(d.filter(hit & (pl.col("label") == 1)).height),
    )


def test_quality_issue_counts_per_label_match_a_direct_count(pixels: Manifest) -> None:
    report = quality_issues(pixels.df)
    by = {i.kind: i for i in report.issues}
    df = pixels.df
    assert set(by) == set(KIND_NAMES)
    checks = {
        "dark": pl.col("luma_mean") + 2 * pl.col("luma_std") < 82,
        "blurry": pl.col("sharpness") < 100,
        "low-information": pl.col("entropy") < 3,
        "near-uniform": pl.col("luma_std") < 3,
        "grayscale": pl.col("saturation_mean") < 0.01,
    }
    for kind, expr in checks.items():
        assert (by[kind].real, by[kind].generated) == _manual_counts(df, expr), kind
    bad = df.filter(pl.col("pixel_error").is_not_null())
    assert by["blurry"].real_unknown == int((bad["label"] == 0).sum())
    assert by["blurry"].generated_unknown == int((bad["label"] == 1).sum())
    # the size-only kind knows every row: odd aspect = CelebA 178x218? no (0.82); none here
    assert by["odd-aspect"].real_unknown == 0 and by["odd-aspect"].real == 0
    # blurry hits generated (smoother) images far more often: a shortcut, named; the rest drawn alike
    assert by["blurry"].shortcut and by["blurry"].more_in == "generated"
    assert by["blurry"].generated_rate > 2 * by["blurry"].real_rate
    assert not by["low-information"].shortcut and not by["grayscale"].shortcut
    assert report.to_json()["shortcuts"] == [i.kind for i in report.issues if i.shortcut]


def test_quality_issue_at_equal_rates_is_not_a_shortcut() -> None:
    # 10% dark in both labels, 1,000 rows each
    n = 2000
    lab = np.repeat([0, 1], n // 2)
    dark = np.tile(np.arange(n // 2) < 100, 2)
    df = pl.DataFrame(
        {
            "label": lab,
            "luma_mean": np.where(dark, 20.0, 120.0),
            "luma_std": np.full(n, 10.0),
            "pixel_error": [None] * n,
        },
        schema_overrides={"pixel_error": pl.String},
    )
    d = {i.kind: i for i in quality_issues(df).issues}["dark"]
    assert (d.real, d.generated, d.real_rate) == (100, 100, 0.1) and not d.shortcut and d.auroc == 0.5


def test_drop_quality_issues_counts_and_keeps_unknown(pixels: Manifest) -> None:
    kept, report = drop_quality_issues(pixels, ["blurry", "dark"])
    df = pixels.df
    hit = (pl.col("sharpness") < 100) | (pl.col("luma_mean") + 2 * pl.col("luma_std") < 82)
    real, gen = _manual_counts(df, hit)
    assert report.removed == {"real": real, "generated": gen}
    assert kept.df.height == df.height - real - gen
    assert (
        kept.df.filter(pl.col("pixel_error").is_not_null()).height
        == report.unknown["real"] + report.unknown["generated"]
    )
    assert quality_issues(kept.df).issues[2].generated == 0  # blurry gone
    assert kept.history[-1] == "drop quality issues blurry,dark"


def test_parse_kinds() -> None:
    assert parse_kinds(["blurry,dark", "light"]) == ["dark", "overexposed", "blurry"]
    with pytest.raises(UsageError, match="unknown kind 'fuzzy'"):
        parse_kinds(["dark,fuzzy"])
    with pytest.raises(UsageError, match="no kind"):
        parse_kinds([" , "])
    with pytest.raises(InputError, match="cfx inspect SOURCE --pixels"):
        drop_quality_issues(make_manifest(20, 20), ["blurry"])


# --- balance -----------------------------------------------------------------------------------------
def test_parse_pixel_matches() -> None:
    cols = ["noise_sigma", "sharpness", "luma_mean", "subset"]
    assert parse_match("noise:8", cols) == MatchSpec("noise", quantiles=8)
    assert parse_match("noise", cols) == MatchSpec("noise", quantiles=10)
    assert parse_match("noise_sigma:4", cols) == MatchSpec("noise", quantiles=4)
    assert parse_match("luma_mean:5", cols) == MatchSpec("luma_mean", quantiles=5)
    assert parse_match("dims-grid", cols) == MatchSpec("dims-grid")
    assert parse_match("min-side:64", cols) == MatchSpec("min-side", 64.0)  # named features keep bin widths
    for bad, msg in (
        ("noise:2.5", "whole number"),
        ("noise:0", "1 to 10000"),
        ("dims-grid:8", "categorical"),
    ):
        with pytest.raises(UsageError, match=msg):
            parse_match(bad, cols)


def test_quantile_bins_have_equal_counts_over_both_labels() -> None:
    df = pl.DataFrame({"x": [float(i) for i in range(100)] + [None, float("nan")]})
    bins = df.select(MatchSpec("x", quantiles=4).expr(df.columns)).to_series()
    counts = dict(bins.value_counts().iter_rows())
    assert counts == {"0": 25, "1": 25, "2": 25, "3": 25, None: 2}  # NaN and null: unknown


def test_dims_grid_exact() -> None:
    df = pl.DataFrame({"width": [512, 640, 96, 100, 768, 0], "height": [512, 480, 64, 30, 1024, 5]})
    got = df.select(MatchSpec("dims-grid").expr(df.columns)).to_series().to_list()
    assert got == ["64", "32", "32", "1", "64", None]  # 640x480: 480 = 15 x 32; 0 px: unknown
    # the pixel fact wins where known (decoded size), the metadata fills in where it is not
    df = df.with_columns(dims_multiple_of=pl.Series([8, None, None, None, None, None], dtype=pl.Int64))
    got = df.select(MatchSpec("dims-grid").expr(df.columns)).to_series().to_list()
    assert got == ["8", "32", "32", "1", "64", None]


def test_match_noise_brings_its_auroc_to_one_half_and_counts_unknown(pixels: Manifest) -> None:
    before = {f.feature: f.auroc for f in audit(pixels).features}
    assert before["noise_sigma"] > 0.75
    res = balance(pixels, BalanceOptions(match=[parse_match("noise:10", pixels.df.columns)]))
    step = next(s for s in res.steps if s.name == "match noise:10")
    bad = pixels.df.filter(pl.col("pixel_error").is_not_null())
    assert step.unknown == {
        "real": int((bad["label"] == 0).sum()),
        "generated": int((bad["label"] == 1).sum()),
    }
    assert "left out as unknown noise" in step.detail
    after = {f.feature: f.auroc for f in audit(res.manifest).features}
    assert abs(after["noise_sigma"] - 0.5) <= 0.05, after["noise_sigma"]


def test_match_dims_grid_balances_each_grid(pixels: Manifest) -> None:
    res = balance(pixels, BalanceOptions(match=[parse_match("dims-grid", pixels.df.columns)]))
    out = res.manifest.df
    grid = grid_of(out["width"].to_numpy(), out["height"].to_numpy())  # undecoded rows: from the metadata
    lab = out["label"].to_numpy()
    for g in np.unique(grid):
        assert (lab[grid == g] == 0).sum() == (lab[grid == g] == 1).sum(), g
    # generated sizes are all multiples of 64, the real 640x480 / 178x218 are not: a shortcut, then none
    assert {f.feature: f for f in audit(pixels).features}["dims_multiple_of"].flagged
    assert {f.feature: f.auroc for f in audit(res.manifest).features}["dims_multiple_of"] == 0.5


def test_match_non_numeric_column_with_quantiles_is_a_usage_error(pixels: Manifest) -> None:
    with pytest.raises(UsageError, match="not numeric"):
        balance(pixels, BalanceOptions(match=[parse_match("qtable_id:4", pixels.df.columns)]))


def test_match_pixel_fact_without_pixel_facts_says_inspect_pixels() -> None:
    m = make_manifest(30, 30)
    with pytest.raises(InputError, match="cfx inspect SOURCE --pixels"):
        balance(m, BalanceOptions(match=[MatchSpec("noise", quantiles=10)]))
    with pytest.raises(InputError, match="cfx inspect SOURCE --pixels"):
        parse_match("blockiness:10", m.df.columns)


# --- CLI ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pixel_manifest(tmp_path_factory: pytest.TempPathFactory, cf_small: Path) -> Path:
    """cf_small's manifest with pixel facts drawn per label (blurry: generated) — a real dataset to write."""
    from cfx.load import load_manifest

    m = load_manifest(str(cf_small))
    path = tmp_path_factory.mktemp("pixel-manifest") / "pixels.parquet"
    with_pixels(m, seed=1).write(path)
    return path


def test_cli_fail_above_exits_9_naming_the_canary_and_prints_the_report(
    cfx: Callable[..., Any], pixel_manifest: Path
) -> None:
    run = cfx("audit", str(pixel_manifest), "--json", "--fail-above", "0.7")
    assert run.returncode == 9, run.stderr
    report = json.loads(run.out)  # the report is still printed
    above = [f for f in report["features"] if f["auroc"] > 0.7]
    assert above and run.stderr.startswith("Error: ")
    for f in above:  # every canary above the limit is named, the joint one too when it is above
        assert f"{f['feature']} ({f['auroc']:.3f})" in run.stderr
    assert ("joint (" in run.stderr) == (report["joint"]["auroc"] > 0.7)
    assert "quality" in report and report["quality"]["issues"]
    # nothing above 1.0: exit 0; the text report has the pixel features and the quality table
    ok = cfx("audit", str(pixel_manifest), "--no-joint", "--fail-above", "1.0")
    assert ok.returncode == 0, ok.stderr
    assert "quality issues" in ok.out and "noise_sigma" in ok.out
    bad = cfx("audit", str(pixel_manifest), "--fail-above", "0.4")
    assert bad.returncode == 2 and "out of range" in bad.stderr


def test_cli_subset_drop_quality_issues(
    cfx: Callable[..., Any], pixel_manifest: Path, tmp_path: Path
) -> None:
    out = tmp_path / "clean"
    run = cfx("subset", str(pixel_manifest), "--out", str(out), "--drop-quality-issues", "blurry", "--json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.out)
    df = pl.read_parquet(pixel_manifest)
    hit = df.filter(pl.col("pixel_error").is_null() & (pl.col("sharpness") < 100))
    dropped = info["quality_dropped"]
    assert dropped["removed"] == {
        "real": int((hit["label"] == 0).sum()),
        "generated": int((hit["label"] == 1).sum()),
    }
    assert info["rows"] == df.height - hit.height
    written = pl.read_parquet(out / "manifest.parquet")
    assert written.height == info["rows"]
    assert "dropped quality issues" in run.stderr
    assert "drop_quality_issues=blurry" in (out / "README.md").read_text()  # the card says what was left out


def test_cli_drop_quality_issues_errors(cfx: Callable[..., Any], cf_small: Path, tmp_path: Path) -> None:
    run = cfx("subset", str(cf_small), "--out", str(tmp_path / "a"), "--drop-quality-issues", "dark,fuzzy")
    assert run.returncode == 2 and "unknown kind 'fuzzy'" in run.stderr
    run = cfx(
        "export",
        str(cf_small),
        "--format",
        "cnndetection",
        "--out",
        str(tmp_path / "b"),
        "--drop-quality-issues",
        "blurry",
    )
    assert run.returncode == 3 and "cfx inspect SOURCE --pixels" in run.stderr, run.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --- end to end: real images, `inspect --pixels`, the GenImage-style fix and what it leaves -------------
def _genimage_noisy(root: Path, n: int = 160, seed: int = 5) -> Path:
    """GenImage-style (reals JPEG q96, fakes PNG), and camera-like: the reals carry more sensor noise
    (σ 1.5–8) than the smooth generated pictures (σ 0.5–5). Same sizes and content process on both sides;
    5 generators and 5 real sources for the joint canary's folds."""
    import io

    from PIL import Image

    from tests.shards import rows, write_shard

    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        label = i % 2
        base = rng.integers(30, 225, (4, 4, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(base).resize((32, 32), Image.Resampling.BICUBIC), dtype=np.float64)
        sigma = rng.uniform(0.5, 5.0) if label else rng.uniform(1.5, 8.0)
        pic = Image.fromarray(np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        pic.save(buf, "PNG") if label else pic.save(buf, "JPEG", quality=96)
        records.append(
            {
                **rows(1, label=label, start=i)[0],  # 32x32 in the metadata, as the pictures are
                "image_name": f"{i:05d}.{'png' if label else 'jpg'}",
                "format": "PNG" if label else "JPEG",
                "image_data": buf.getvalue(),
                "model_name": f"org/gen-{i % 5}" if label else "",
                "real_source": "" if label else f"source-{i % 5}",
            }
        )
    return write_shard(root / "data" / "HFCF_small_0.parquet", records).parents[1]


def _inspected(source: Path) -> Manifest:
    from cfx.inspect import inspect_manifest
    from cfx.load import load_manifest

    return inspect_manifest(load_manifest(str(source)), workers=1, use_cache=False, with_pixels=True).manifest


def _scores(m: Manifest) -> tuple[dict[str, float], float]:
    res = audit(m, joint=True)
    assert res.joint is not None and res.joint.auroc is not None
    return {f.feature: f.auroc for f in res.features}, res.joint.auroc


def test_genimage_style_jpeg96_leaves_pixel_shortcuts_and_matching_the_worst_removes_it(
    tmp_path: Path,
) -> None:
    from cfx.audit import PIXEL_FEATURES
    from cfx.load import load_manifest
    from cfx.subset import write_subset
    from cfx.transform import Pipeline

    source = _genimage_noisy(tmp_path / "genimage")
    before, joint_before = _scores(_inspected(source))
    write_subset(load_manifest(str(source)), tmp_path / "fixed", transform=Pipeline.parse(["jpeg:96"]))
    fixed = _inspected(tmp_path / "fixed")
    after, joint_after = _scores(fixed)
    numeric = {f.name for f in PIXEL_FEATURES if f.kind == "numeric"}
    worst = max(numeric, key=lambda k: after[k])
    spec = parse_match(f"{worst}:10", fixed.df.columns)
    matched, joint_matched = _scores(balance(fixed, BalanceOptions(match=[spec])).manifest)
    print(  # the numbers of docs/audit.md
        f"before: format {before['format']:.3f} jpeg_quality {before['jpeg_quality']:.3f} joint {joint_before:.3f}"
        f"\nafter jpeg:96: joint {joint_after:.3f}; pixel features: "
        + ", ".join(f"{k} {after[k]:.3f}" for k in sorted(numeric, key=lambda k: -after[k]))
        + f"\nmatched {worst}:10: {worst} {matched[worst]:.3f}, joint {joint_matched:.3f}"
    )
    assert before["format"] > 0.95 and abs(after["format"] - 0.5) <= 0.02  # the container shortcut is gone
    assert after[worst] > 0.7  # … the noise the pictures hold is not
    assert worst in {"noise_sigma", "sharpness", "hf_energy", "blockiness"}
    assert abs(matched[worst] - 0.5) <= 0.05
    assert joint_matched < joint_after


def test_cli_pixel_facts_from_the_inspect_cache(cfx: Callable[..., Any], tmp_path: Path) -> None:
    """`cfx inspect --pixels` fills the cache; audit, balance and subset on the folder then use it."""
    source = _genimage_noisy(tmp_path / "src", n=40)
    run = cfx("inspect", str(source), "--pixels", "-o", str(tmp_path / "px.parquet"))
    assert run.returncode == 0, run.stderr
    report = json.loads(cfx("audit", str(source), "--json", "--no-joint").out)
    scored = {f["feature"]: f for f in report["features"]}
    assert scored["noise_sigma"]["rows"] == 40 and scored["sharpness"]["rows"] == 40
    bal = cfx("balance", str(source), "--match", "noise:4", "--json")
    assert bal.returncode == 0, bal.stderr
    assert [s["step"] for s in json.loads(bal.out)["steps"]][:2] == ["input", "match noise:4"]
    out = tmp_path / "clean"
    drop = cfx(
        "subset", str(source), "--out", str(out), "--drop-quality-issues", "near-uniform,blurry", "--json"
    )
    assert drop.returncode == 0, drop.stderr
    info = json.loads(drop.out)
    px = pl.read_parquet(tmp_path / "px.parquet")
    hit = px.filter((pl.col("sharpness") < 100) | (pl.col("luma_std") < 3))
    assert 0 < hit.height < 40 and info["rows"] == 40 - hit.height
    assert sum(info["quality_dropped"]["removed"].values()) == hit.height


@pytest.mark.parametrize(
    ("real", "generated", "shortcut"),
    [
        (876, 542, True),  # 88 % vs 54 %: AUROC 0.67 > 0.6, though not twice as often
        (10, 40, True),  # 1 % vs 4 %: rare, but four times as often (z 4.3)
        (100, 130, False),  # 10 % vs 13 %: neither large nor lopsided
        (2, 6, False),  # three times as often, but 8 rows: chance (z 1.4)
    ],
)
def test_quality_shortcut_rule(real: int, generated: int, shortcut: bool) -> None:
    from cfx.quality import IssueCount

    issue = IssueCount("blurry", "", real, generated, 1000, 1000, 0, 0)
    assert issue.shortcut is shortcut, (issue.auroc, issue.z)
