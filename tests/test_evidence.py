"""Evidence that travels: the card's cfx_evidence (measured on the written rows), lineage, clean loading."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from cfx.audit import audit
from cfx.card import read_front_matter
from cfx.lineage import command_text, reproducible_argv
from cfx.manifest import read_manifest
from cfx.schema import GENERATED, REAL


@pytest.fixture(scope="module")
def curated(cf_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """index → dedupe → split → subset --split-column --joint-canary, each through the real CLI."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    work = tmp_path_factory.mktemp("evidence")
    env = {**os.environ, "PYTHONPATH": str(root)}

    def run(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "cfx", "-q", *args], capture_output=True, env=env, cwd=work, timeout=600
        )
        assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout.decode()

    run("index", str(cf_small), "-o", "m.parquet", "--workers", "1")
    dedupe = json.loads(run("dedupe", "m.parquet", "-o", "kept.parquet", "--json", "--workers", "1"))
    run("split", "kept.parquet", "-o", "split.parquet")
    run(
        "subset",
        "split.parquet",
        "--out",
        "sub",
        "--split-column",
        "assigned_split",
        "--joint-canary",
        "-w",
        "1",
    )
    (work / "dedupe.json").write_text(json.dumps(dedupe))
    return {"work": work, "sub": work / "sub"}


def _card(folder: Path) -> dict:
    return read_front_matter((folder / "README.md").read_text(encoding="utf-8"))


def _written(folder: Path) -> pl.DataFrame:
    """The rows as written, read back from the data files (not from cfx's manifest)."""
    frames = []
    for path in sorted((folder / "data").glob("*.parquet")):
        split = path.name.split("-")[0]
        t = pq.read_table(path, columns=["label", "model_name", "real_source"])
        frames.append(pl.from_arrow(t).with_columns(pl.lit(split).alias("split")))
    return pl.concat(frames)


def test_card_evidence_counts_are_those_of_the_written_rows(curated: dict[str, Path]) -> None:
    ev = _card(curated["sub"])["cfx_evidence"]
    df = _written(curated["sub"])
    assert ev["rows"] == df.height
    assert ev["real"] == df.filter(pl.col("label") == REAL).height
    assert ev["generated"] == df.filter(pl.col("label") == GENERATED).height
    assert ev["generators"] == df.filter(pl.col("label") == GENERATED).get_column("model_name").n_unique()
    assert ev["real_sources"] == df.filter(pl.col("label") == REAL).get_column("real_source").n_unique()
    for name, part in df.group_by("split"):
        counts = ev["splits"][name[0]]
        assert counts["rows"] == part.height
        assert counts["generated"] == part.filter(pl.col("label") == GENERATED).height


def test_card_evidence_audit_equals_the_audit_of_the_written_manifest(curated: dict[str, Path]) -> None:
    ev = _card(curated["sub"])["cfx_evidence"]["audit"]
    result = audit(read_manifest(curated["sub"] / "manifest.parquet"))
    assert ev["measured"] is True
    assert ev["worst_feature"] == result.features[0].feature
    assert ev["worst_auroc"] == pytest.approx(result.features[0].auroc, abs=1e-4)
    assert ev["flagged"] == [f.feature for f in result.flagged]
    assert 0.5 <= ev["joint_auroc"] <= 1.0  # --joint-canary


def test_card_evidence_duplicates_and_leak_proof(curated: dict[str, Path]) -> None:
    ev = _card(curated["sub"])["cfx_evidence"]
    dedupe = json.loads((curated["work"] / "dedupe.json").read_text())
    assert ev["duplicates"]["dedupe_removed"] == dedupe["removed"] > 0
    assert ev["duplicates"]["dedupe_threshold"] == dedupe["options"]["threshold"]
    assert ev["duplicates"]["exact_left"] == 0
    # cfx split's proof holds on what was written: no image, group or near copy in two splits
    assert ev["leak_proof"] == {"exact": 0, "prompt": 0, "group": 0, "near": 0}


def test_card_evidence_names_the_lineage(curated: dict[str, Path]) -> None:
    ev = _card(curated["sub"])["cfx_evidence"]
    commands = [c.split()[1] for c in ev["lineage"]]
    assert commands == ["index", "dedupe", "split", "subset"]
    assert not any("--workers" in c or " -w " in c for c in ev["lineage"])  # run options left out
    readme = (curated["sub"] / "README.md").read_text(encoding="utf-8")
    assert "## Evidence" in readme and "cfx split split.parquet" not in readme  # the real command lines
    assert "cfx split kept.parquet -o split.parquet" in readme


def test_lineage_records_inputs_with_their_fingerprints(curated: dict[str, Path]) -> None:
    m = read_manifest(curated["sub"] / "manifest.parquet")
    dedupe_entry = m.lineage[1]
    (inp,) = dedupe_entry["inputs"]
    assert inp["source"] == "m.parquet"
    assert inp["rows"] == read_manifest(curated["work"] / "m.parquet").df.height
    import hashlib

    # the input manifest as it was then: m.parquet is not rewritten by later commands
    assert inp["sha256"] == hashlib.sha256((curated["work"] / "m.parquet").read_bytes()).hexdigest()
    index_input = m.lineage[0]["inputs"][0]
    shards = sorted(p for p in Path(index_input["root"]).rglob("*.parquet") if "ground_truth" not in p.parts)
    assert index_input["shards"] == len(shards) and "sha256" not in index_input  # a folder: shard digest only


def test_written_subset_loads_without_warnings(
    curated: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    from datasets import load_dataset

    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(str(curated["sub"]), cache_dir=str(curated["work"] / "hf-cache"))
    assert {k: v.num_rows for k, v in ds.items()} == {
        k: v["rows"] for k, v in _card(curated["sub"])["cfx_evidence"]["splits"].items()
    }
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [str(w.message) for w in caught if "datasets" in w.filename] == []


def test_evidence_without_joint_canary_or_one_label(cf_small: Path, cfx, tmp_path: Path) -> None:
    r = cfx("subset", str(cf_small), "--out", str(tmp_path / "gen"), "--labels", "generated", "-w", "1")
    assert r.returncode == 0, r.stderr
    ev = _card(tmp_path / "gen")["cfx_evidence"]
    assert ev["real"] == 0 and ev["audit"] == {
        "measured": False,
        "reason": "the written rows hold one label only",
    }
    assert "joint_auroc" not in ev["audit"] and "splits" not in ev and "leak_proof" not in ev
    assert ev["duplicates"] == {}  # never hashed, never deduplicated: nothing claimed
    assert "not checked (run `cfx dedupe` before writing)" in (tmp_path / "gen" / "README.md").read_text()


def test_lineage_leaves_out_options_that_change_only_how_it_runs() -> None:
    argv = [
        "dedupe",
        "m.parquet",
        "--engine",
        "ray",
        "--workers=3",
        "-w",
        "2",
        "--ray-address",
        "h:1",
        "-q",
        "-o",
        "x",
    ]
    assert reproducible_argv(argv) == ["dedupe", "m.parquet", "-o", "x"]
    assert command_text(["subset", "a b.parquet", "--out", "o"]) == "cfx subset 'a b.parquet' --out o"


def test_lineage_travels_through_pipes(cf_small: Path, cfx, tmp_path: Path) -> None:
    sliced = cfx("slice", str(cf_small), "--head", "20")
    assert sliced.returncode == 0, sliced.stderr
    r = cfx("licenses", "-", "-o", str(tmp_path / "l.parquet"), input=sliced.stdout)
    assert r.returncode == 0, r.stderr
    m = read_manifest(tmp_path / "l.parquet")
    assert [e["command"].split()[1] for e in m.lineage] == ["slice", "licenses"]
    assert m.lineage[1]["inputs"][0]["source"] == "-" and "sha256" not in m.lineage[1]["inputs"][0]
    assert m.lineage[0]["inputs"][0]["root"] == str(cf_small)
