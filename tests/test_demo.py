"""`cfx demo`, the embedded default job: every step runs and leaves real, checkable outputs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from cfx.audit import audit
from cfx.balance import PAIR_COLUMN
from cfx.manifest import read_manifest


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    import os
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("demo") / "out"
    root = Path(__file__).resolve().parents[1]
    # a subprocess: the demo renders images, which would otherwise grow this test process
    proc = subprocess.run(
        [sys.executable, "-m", "cfx", "demo", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=600,
    )
    return out, proc


def test_every_step_runs(demo_run: tuple[Path, Any]) -> None:
    out, proc = demo_run
    assert proc.returncode == 0, proc.stderr
    titles = [line for line in proc.stdout.splitlines() if line[:3].rstrip(". ").isdigit()]
    assert len(titles) == 12, proc.stdout
    for word in (
        "Build",
        "Index",
        "Describe",
        "Slice",
        "duplicates",
        "Licences",
        "Audit",
        "Balance",
        "Subset",
        "leak-free",
    ):
        assert word in proc.stdout
    assert "Done in" in proc.stdout


def test_outputs_are_real(demo_run: tuple[Path, Any]) -> None:
    out, _ = demo_run
    manifest = read_manifest(out / "manifest.parquet")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["totals"]["rows"] == len(manifest) == 360
    assert (out / "stats.png").read_bytes()[:4] == b"\x89PNG"
    # dedupe removed the injected duplicates the generator recorded
    kept = read_manifest(out / "kept.parquet")
    summary = json.loads((out / "dedupe" / "summary.json").read_text())
    assert len(kept) == len(manifest) - summary["removed"] and summary["removed"] > 0
    assert list((out / "dedupe" / "gallery").glob("*.png"))
    # the raw set carries the shortcuts, the balanced one does not
    raw = json.loads((out / "audit-raw.json").read_text())
    assert "format" in raw["flagged"]
    balanced = read_manifest(out / "balanced.parquet")
    assert {"license", PAIR_COLUMN} <= set(balanced.df.columns)
    assert audit(balanced).flagged == []
    assert json.loads((out / "audit-balanced.json").read_text())["flagged"] == []
    # the training set holds exactly the balanced rows, bytes identical to the source shards
    train = sorted((out / "train-set" / "data").glob("*.parquet"))
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in train) == len(balanced)
    assert (out / "train-set" / "README.md").read_text().startswith("---")
    source = {}
    for shard, rows in balanced.df.group_by("shard").agg("row").iter_rows():
        images = pq.ParquetFile(out / "dataset" / shard).read(columns=["image_data"]).column(0)
        for r in rows:
            source[hashlib.sha256(images[r].as_py()).hexdigest()] = True
    written = [
        hashlib.sha256(b.as_py()).hexdigest()
        for p in train
        for b in pq.ParquetFile(p).read(columns=["image_data"]).column(0)
    ]
    assert len(written) == len(balanced) and set(written) <= set(source)


def test_held_out_split_and_its_leak_proof(demo_run: tuple[Path, Any]) -> None:
    import polars as pl

    out, _ = demo_run
    kept = read_manifest(out / "kept.parquet")
    parts = {p.stem: read_manifest(p).df for p in (out / "splits").glob("*.parquet")}
    assert sorted(parts) == ["test", "train", "val"]
    assert sum(df.height for df in parts.values()) == len(kept)
    gan = lambda df: df.filter((pl.col("label") == 1) & (pl.col("architecture") == "GAN")).height  # noqa: E731
    assert gan(parts["test"]) == gan(kept.df) > 0 and gan(parts["train"]) == gan(parts["val"]) == 0
    train_gens = set(parts["train"].filter(pl.col("label") == 1).get_column("model_name").to_list())
    test_gens = set(parts["test"].filter(pl.col("label") == 1).get_column("model_name").to_list())
    assert train_gens and not train_gens & test_gens
    leaks = json.loads((out / "splits" / "leaks" / "summary.json").read_text())
    assert leaks["leaks"] == 0 and leaks["by_kind"]["generator"]["values"] == 0


def test_rerun_needs_overwrite(demo_run: tuple[Path, Any], cfx: Callable[..., Any]) -> None:
    out, _ = demo_run
    before = sorted(p.name for p in out.iterdir())
    r = cfx("demo", str(out))
    assert r.returncode == 7
    assert "exists and is not empty" in r.stderr and "--overwrite" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == before
