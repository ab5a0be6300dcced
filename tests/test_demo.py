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
from cfx.transform import Pipeline


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
    assert len(titles) == 15, proc.stdout
    for word in (
        "Build",
        "Index",
        "Describe",
        "Slice",
        "duplicates",
        "Licences",
        "Audit",
        "Balance",
        "Inspect",
        "Grommelt",
        "Subset",
        "leak-free",
        "Report the training set",
    ):
        assert word in proc.stdout
    assert "Done in" in proc.stdout


def test_demo_ends_with_a_report_of_its_training_set(demo_run: tuple[Path, Any]) -> None:
    import polars as pl

    from cfx.manifest import read_manifest

    out, _ = demo_run
    data = json.loads((out / "report" / "report.json").read_text())
    train = read_manifest(out / "splits" / "train.parquet").df
    assert data["composition"]["overall"]["rows"] == train.height
    assert data["composition"]["overall"]["real"] == train.filter(pl.col("label") == 0).height
    assert "missing" not in data["duplicates"] and data["audit"]["features"]
    assert data["splits"]["leak_free"] and data["against"]["leaks"] == 0  # the split is leak-free
    assert (out / "report" / "index.html").stat().st_size > 10_000
    assert len(list((out / "report" / "thumbs").glob("*.jpg"))) == data["browse"]["thumbnails"] > 0


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


def _printed_commands(stdout: str) -> list[list[str]]:
    import shlex

    lines = [line.strip()[2:] for line in stdout.splitlines() if line.strip().startswith("$ cfx ")]
    return [shlex.split(part) for line in lines for part in line.split(" && ")]


def test_printed_commands_parse(demo_run: tuple[Path, Any]) -> None:
    """Every printed shell command is a valid cfx command line: the CLI's own parser accepts it."""
    import typer

    from cfx.cli import app

    _, proc = demo_run
    commands = _printed_commands(proc.stdout)
    assert len(commands) >= 14
    group = typer.main.get_command(app)
    for argv in commands:
        assert argv[0] == "cfx", argv
        parent = group.make_context("cfx", argv[1:2], resilient_parsing=True)
        command = group.get_command(parent, argv[1])
        assert command is not None, argv
        command.make_context(argv[1], argv[2:], parent=parent)  # raises on an unknown or bad option
        specs = [argv[i + 1] for i, a in enumerate(argv) if a == "--transform"]
        assert Pipeline.parse(specs).is_empty == (not specs)  # transform specs are checked at run time
    audit = group.get_command(group.make_context("cfx", ["audit"], resilient_parsing=True), "audit")
    with pytest.raises(typer.exceptions.TyperException):  # the check bites
        audit.make_context("audit", ["x.parquet", "--no-such-option"])


def _number(summary: str, name: str) -> tuple[float, ...]:
    import re

    found = re.search(rf"\b{name} ([0-9.]+)(?: → ([0-9.]+))?", summary)
    assert found, (name, summary)
    return tuple(float(g) for g in found.groups() if g is not None)


def _scores(report: dict[str, Any]) -> dict[str, float]:
    return {f["feature"]: f["auroc"] for f in report["features"]} | {"joint": report["joint"]["auroc"]}


def test_byte_fact_audit_before_and_after_the_fix(demo_run: tuple[Path, Any]) -> None:
    """The inspect step flags the container shortcut (real JPEG, generated PNG); after the jpeg:96 fix the
    format and quality canaries sit at 0.5 and the joint canary drops; the printed numbers are the audits'."""
    import polars as pl

    out, proc = demo_run
    inspected = read_manifest(out / "inspected.parquet").df
    real = inspected.filter(pl.col("label") == 0)
    generated = inspected.filter(pl.col("label") == 1)
    assert (real.get_column("actual_format") == "JPEG").mean() > 0.5  # type: ignore[operator]
    assert (generated.get_column("actual_format") == "PNG").mean() > 0.9  # type: ignore[operator]
    before = _scores(json.loads((out / "audit-bytes.json").read_text()))
    after = _scores(json.loads((out / "audit-fixed.json").read_text()))
    assert before["format"] >= 0.8 and before["jpeg_quality"] >= 0.8 and before["joint"] >= 0.9
    for name in ("format", "jpeg_quality", "actual_format"):
        assert abs(after[name] - 0.5) <= 0.05, (name, after[name])
    assert after["joint"] < before["joint"] - 0.1
    fixed = read_manifest(out / "fixed-inspected.parquet").df
    assert fixed.height == inspected.height
    assert fixed.get_column("jpeg_quality").unique().to_list() == [96]
    assert set(fixed.get_column("actual_format").unique()) == {"JPEG"}
    # the step reports print these very numbers, rounded
    lines = proc.stdout.splitlines()
    inspect_line = lines[lines.index(next(t for t in lines if "is it fake, or just JPEG" in t)) + 2]
    fix_line = lines[lines.index(next(t for t in lines if "Grommelt" in t)) + 2]
    for name in ("format", "jpeg_quality"):
        assert _number(inspect_line, name) == (round(before[name], 2),)
        assert _number(fix_line, name) == (round(before[name], 2), round(after[name], 2))
    assert _number(inspect_line, "joint canary") == (round(before["joint"], 2),)
    assert _number(fix_line, "joint") == (round(before["joint"], 2), round(after["joint"], 2))


def test_fix_commands_reproduce_the_audit(demo_run: tuple[Path, Any], cfx: Callable[..., Any]) -> None:
    """Running the fix step's printed inspect and audit commands gives the demo's audit."""
    out, proc = demo_run
    line = next(
        t for t in proc.stdout.splitlines() if t.strip().startswith("$ cfx subset") and "jpeg:96" in t
    )
    chain = _printed_commands(line)
    assert [c[1] for c in chain] == ["subset", "inspect", "audit"]
    inspect_cmd, audit_cmd = chain[1], chain[2]
    target = out / "rerun-inspected.parquet"
    inspect_cmd[inspect_cmd.index("-o") + 1] = str(target)
    assert cfx(*inspect_cmd[1:]).returncode == 0
    audit_cmd[2] = str(target)
    r = cfx(*audit_cmd[1:])
    assert r.returncode == 0, r.stderr
    assert _scores(json.loads(r.stdout)) == _scores(json.loads((out / "audit-fixed.json").read_text()))


def test_demo_fixed_set_pixel_facts_match_worst_to_one_half(demo_run: tuple[Path, Any]) -> None:
    """Issue 22's "done means" on the demo's set: after the Grommelt fix (resize, crop, JPEG 96) a pixel feature
    still separates the labels; `balance --match WORST:10` brings it to 0.5 ± 0.05 and lowers the joint canary."""
    from cfx.audit import PIXEL_FEATURES
    from cfx.balance import BalanceOptions, balance, parse_match
    from cfx.inspect import inspect_manifest

    out, _ = demo_run
    fixed = inspect_manifest(
        read_manifest(out / "fixed" / "manifest.parquet"), workers=1, use_cache=False, with_pixels=True
    ).manifest
    numeric = [f.name for f in PIXEL_FEATURES if f.kind == "numeric"]
    res = audit(fixed, joint=True)
    scores = {f.feature: f.auroc for f in res.features}
    worst = max(numeric, key=lambda k: scores[k])
    assert scores[worst] > 0.6 and worst in {f.feature for f in res.flagged}  # the pictures still tell
    matched = audit(
        balance(fixed, BalanceOptions(match=[parse_match(f"{worst}:10", fixed.df.columns)])).manifest,
        joint=True,
    )
    after = {f.feature: f.auroc for f in matched.features}
    assert abs(after[worst] - 0.5) <= 0.05
    assert res.joint is not None and res.joint.auroc is not None
    assert matched.joint is not None and matched.joint.auroc is not None
    print(
        f"demo: {worst} {scores[worst]:.3f} → {after[worst]:.3f}; joint {res.joint.auroc:.3f} → {matched.joint.auroc:.3f}"
    )
    assert matched.joint.auroc < res.joint.auroc
