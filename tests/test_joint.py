"""The joint canary and the byte-fact features of cfx audit: combinations single features miss, ~0.5 on noise,
fixes named for flagged features."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from cfx.audit import audit
from cfx.manifest import Manifest


def _manifest(n: int, seed: int, xor: bool) -> Manifest:
    """format × size: each alone says nothing, together (xor) they give the label away (5 % noise)."""
    rng = np.random.default_rng(seed)
    png = rng.random(n) < 0.5
    big = rng.random(n) < 0.5
    label = (png ^ big) if xor else rng.random(n) < 0.5
    label = label ^ (rng.random(n) < 0.05)
    side = np.where(big, 512, 256)
    df = pl.DataFrame(
        {
            "shard": ["s"] * n,
            "row": np.arange(n),
            "label": label.astype(np.int8),
            "format": np.where(png, "PNG", "JPEG"),
            "mode": ["RGB"] * n,
            "width": side,
            "height": side,
            "model_name": [f"gen{i}" for i in rng.integers(0, 12, n)],
            "real_source": [f"src{i}" for i in rng.integers(0, 8, n)],
        }
    )
    return Manifest(df=df, root="/nowhere")


def test_joint_finds_a_combination_single_features_miss() -> None:
    res = audit(_manifest(4000, 0, xor=True), joint=True, seed=0)
    singles = {f.feature: f.auroc for f in res.features}
    assert singles["format"] < 0.55 and singles["width"] < 0.55
    assert res.joint is not None and res.joint.auroc is not None
    assert res.joint.auroc > 0.9 and res.joint.flagged
    top2 = set(list(res.joint.importances)[:2])
    assert "format" in top2  # and one of the size features
    assert res.joint.folds == 5


def test_joint_on_noise_is_half() -> None:
    res = audit(_manifest(4000, 1, xor=False), joint=True, seed=0)
    assert res.joint is not None and res.joint.auroc is not None
    assert abs(res.joint.auroc - 0.5) < 0.05 and not res.joint.flagged


def test_joint_is_seeded() -> None:
    m = _manifest(1500, 2, xor=True)
    a = audit(m, joint=True, seed=3).joint
    b = audit(m, joint=True, seed=3).joint
    assert a is not None and b is not None and a.to_json() == b.to_json()


def test_joint_needs_enough_rows() -> None:
    res = audit(_manifest(6, 0, xor=True), joint=True)
    assert res.joint is not None and res.joint.auroc is None and "folds" in res.joint.note


def test_byte_facts_are_audited_with_fixes() -> None:
    """GenImage-style: real JPEG q96 with EXIF, generated PNG: quality and format flagged with their fix."""
    m = _manifest(400, 4, xor=False)
    gen = m.df.get_column("label") == 1
    df = m.df.with_columns(
        actual_format=pl.when(gen).then(pl.lit("PNG")).otherwise(pl.lit("JPEG")),
        jpeg_quality=pl.when(gen).then(None).otherwise(pl.lit(96)).cast(pl.Int16),
        chroma_subsampling=pl.when(gen).then(None).otherwise(pl.lit("4:2:0")),
        progressive=pl.when(gen).then(None).otherwise(pl.lit(False)),
        bit_depth=pl.lit(8, pl.Int16),
        has_exif=~gen,
        has_gps=pl.lit(False),
        has_icc=pl.lit(False),
        has_c2pa=pl.lit(False),
        text_chunks=pl.when(gen).then(pl.lit(["parameters"])).otherwise(pl.lit([], pl.List(pl.String))),
    )
    res = audit(m.with_df(df), joint=True)
    by = {f.feature: f for f in res.features}
    assert by["jpeg_quality"].auroc == 1.0 and "jpeg-quality:5" in by["jpeg_quality"].fix
    assert by["actual_format"].flagged and "--match actual-format" in by["actual_format"].fix
    assert by["has_text_chunks"].auroc == 1.0 and "--strip-metadata" in by["has_text_chunks"].fix
    assert not by["has_gps"].flagged and by["has_gps"].fix == ""
    assert "jpeg_quality" not in {s["feature"] for s in res.skipped}
    assert res.joint is not None and res.joint.auroc is not None and res.joint.auroc > 0.95


@pytest.mark.parametrize("flag", ["--joint", "--no-joint"])
def test_cli_joint_flag(cfx: Callable[..., Any], cf_small: Path, flag: str) -> None:
    run = cfx("audit", str(cf_small), "--json", flag)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.out)
    assert ("joint" in report) == (flag == "--joint")
    if flag == "--joint":
        assert 0.0 <= report["joint"]["auroc"] <= 1.0 and report["joint"]["folds"] == 5


def test_cli_audit_uses_cached_facts(cfx: Callable[..., Any], cf_small: Path) -> None:
    assert cfx("inspect", str(cf_small), "--json").returncode == 0
    run = cfx("audit", str(cf_small), "--no-joint")
    assert run.returncode == 0, run.stderr
    assert "jpeg_quality" in run.out and "jpeg_quality: skipped" not in run.out
    assert "fix format: `cfx balance --match format`" in run.out


def test_importance_sample_keeps_the_auroc_and_is_seeded() -> None:
    """Importances on a capped sample of each test fold: the AUROC still uses every test row, same seed same
    importances, and the top feature survives the cap."""
    from cfx.audit import BYTE_FEATURES, FEATURES
    from cfx.joint import joint_canary

    m = _manifest(3000, 5, xor=True)
    scored = {f.feature for f in audit(m, joint=False).features}
    used = [f for f in (*FEATURES, *BYTE_FEATURES) if f.name in scored]
    whole = joint_canary(m.df, used, seed=1, importance_rows=None)
    capped = joint_canary(m.df, used, seed=1, importance_rows=200)
    again = joint_canary(m.df, used, seed=1, importance_rows=200)
    other = joint_canary(m.df, used, seed=2, importance_rows=200)
    assert capped.auroc == whole.auroc and capped.folds == whole.folds == 5
    assert capped.to_json() == again.to_json()
    assert capped.importances != whole.importances and other.importances != capped.importances
    assert "format" in list(capped.importances)[:2] and "format" in list(whole.importances)[:2]


def test_importance_rows_are_a_stratified_capped_sample() -> None:
    from cfx.joint import _importance_rows

    y = np.zeros(1000, dtype=bool)
    y[:30] = True
    rows = _importance_rows(y, 100, np.random.default_rng(0))
    assert len(rows) == 100 and y[rows].sum() == 3 and len(set(rows)) == 100
    assert list(rows) == list(_importance_rows(y, 100, np.random.default_rng(0)))
    y[1:] = False  # one generated row: still in the sample
    assert y[_importance_rows(y, 100, np.random.default_rng(0))].sum() == 1
    assert list(_importance_rows(y, None, np.random.default_rng(0))) == list(range(1000))


def test_classifier_runs_on_one_thread_in_a_fresh_process() -> None:
    """threadpoolctl limits only loaded OpenMP runtimes: the first fit of a fresh `cfx audit` must be limited too."""
    import subprocess
    import sys

    code = """
import numpy as np, polars as pl
from threadpoolctl import threadpool_info
import cfx.joint as joint
from cfx.audit import FEATURES
seen = []
fit = joint.fit
def spy(*args):
    seen.append([i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"])
    return fit(*args)
joint.fit = spy
rng = np.random.default_rng(0)
n = 400
df = pl.DataFrame({"label": (rng.random(n) < 0.5).astype(np.int8), "width": rng.integers(1, 9, n),
                   "model_name": [f"g{i}" for i in rng.integers(0, 9, n)],
                   "real_source": [f"s{i}" for i in rng.integers(0, 9, n)]})
joint.joint_canary(df, [f for f in FEATURES if f.name == "width"])
print(seen)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seen = json.loads(out)
    assert len(seen) == 5 and all(threads == [1] for threads in seen)
