"""`cfx report`: the page in a real headless chromium (no network), report.json against independent counts,
and hostile input (missing facts, --out onto an input, HTML in names, no rows, a sample larger than the set)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from cfx.manifest import read_manifest
from tests.browser import Browser, find_chromium
from tests.conftest import Run

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


@pytest.fixture
def chromium() -> None:
    """Skip without chromium, unless CFX_REQUIRE_TOOLS=1 (scripts/test.sh installs it) makes that a failure."""
    if find_chromium() is None:
        msg = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CFX_REQUIRE_TOOLS") == "1":
            pytest.fail(msg + " (CFX_REQUIRE_TOOLS=1 makes this an error)", pytrace=False)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def prepared(cf_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """split.parquet: the small set with byte facts, hashes, a generator named with HTML/JS, assigned_split;
    test.parquet: its test split (the --against set); plain.parquet: an index with nothing measured."""
    from cfx.inspect import inspect_manifest
    from cfx.load import load_manifest
    from cfx.split import SplitOptions, split

    folder = tmp_path_factory.mktemp("report-in")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CFX_CACHE_DIR", str(folder / "cache"))
        plain = load_manifest(str(cf_small), use_cache=False)
        plain.write(folder / "plain.parquet")
        m = inspect_manifest(plain, with_hashes=True, use_cache=False).manifest
        gen = m.df.filter(pl.col("label") == 1).get_column("model_name").value_counts(sort=True)
        victim = gen.get_column("model_name")[1]
        m = m.with_df(m.df.with_columns(pl.col("model_name").replace(victim, HOSTILE)))
        result = split(m, SplitOptions(prompts=True, test_architectures=("GAN",), seed=0), use_cache=False)
    result.manifest.write(folder / "split.parquet")
    result.parts["test"].write(folder / "test.parquet")
    return {
        "split": folder / "split.parquet",
        "test": folder / "test.parquet",
        "plain": folder / "plain.parquet",
    }


@pytest.fixture(scope="module")
def full_report(prepared: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path_factory.mktemp("report-out") / "report"
    env = {"PYTHONPATH": str(ROOT), "CFX_CACHE_DIR": str(out.parent / "cache"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "cfx", "report", str(prepared["split"]), "--out", str(out),
         "--against", str(prepared["test"]), "--sample", "90", "--seed", "3"],
        capture_output=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    return out


def _data(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def _same(text: str, value: Any) -> bool:
    if value is None:
        return text == "—"
    if isinstance(value, bool):
        return text == ("yes" if value else "no")
    if isinstance(value, (int, float)):
        return math.isclose(float(text.replace(",", "")), float(value), abs_tol=0.0005)
    return text == str(value)


SECTIONS = ("composition", "audit", "duplicates", "splits", "browse", "provenance")


def test_page_in_a_real_browser(
    chromium: None, full_report: Path, prepared: dict[str, Path], tmp_path: Path
) -> None:
    data = _data(full_report)
    with Browser(width=1280, height=1000) as b:
        b.open((full_report / "index.html").as_uri())
        for section in SECTIONS:
            assert b.eval(f"!!document.getElementById('{section}')"), section
            assert b.eval(
                f"document.querySelector('#{section} .missing') === null || '{section}' === 'composition'"
            )
        # every number on the page is the one in report.json
        numbers = b.eval(
            "Array.from(document.querySelectorAll('[data-k]')).map(e => [e.dataset.k, e.textContent])"
        )
        assert len(numbers) > 80
        for path, text in numbers:
            assert _same(text, _lookup(data, path)), (path, text, _lookup(data, path))
        # the hostile generator name is shown as text and never runs
        assert b.eval("window.__pwned === undefined")
        assert b.eval(f"document.body.textContent.includes({json.dumps(HOSTILE)})")
        # filter: the visible count follows the data
        total = data["browse"]["sampled"]
        assert b.eval("document.getElementById('visible-count').textContent") == str(total)
        real = next(v["rows"] for v in data["browse"]["filters"]["label"] if v["value"] == "real")
        assert 0 < real < total
        b.eval("const s = document.querySelector('select[data-filter=label]'); s.value = 'real';"
               "s.dispatchEvent(new Event('change'))")  # fmt: skip
        assert b.eval("document.getElementById('visible-count').textContent") == str(real)
        assert b.eval("document.querySelectorAll('#grid .card:not([hidden])').length") == real
        gan = next(v for v in data["browse"]["filters"]["architecture"] if v["value"] == "GAN")
        b.eval("const a = document.querySelector('select[data-filter=architecture]'); a.value = 'GAN';"
               "a.dispatchEvent(new Event('change'))")  # fmt: skip
        assert b.eval("document.getElementById('visible-count').textContent") == "0"  # GAN rows are generated
        b.eval("for (const s of document.querySelectorAll('#filters select')) {s.value = '';"
               "s.dispatchEvent(new Event('change'))}")  # fmt: skip
        assert b.eval("document.getElementById('visible-count').textContent") == str(total)
        assert gan["rows"] > 0
        # click a thumbnail: the detail shows that row's metadata (checked against the manifest)
        assert b.eval("document.getElementById('detail').hidden")
        b.eval("document.querySelectorAll('#grid .card')[5].click()")
        assert not b.eval("document.getElementById('detail').hidden")
        fields = b.eval(
            "Object.fromEntries(Array.from(document.querySelectorAll('#detail-fields td'))"
            ".map(td => [td.dataset.field, td.textContent]))"
        )
        df = read_manifest(prepared["split"]).df
        row = df.filter((pl.col("shard") == fields["shard"]) & (pl.col("row") == int(fields["row"]))).row(
            0, named=True
        )
        for key in ("model_name", "format", "architecture", "assigned_split", "actual_format"):
            assert fields[key] == str(row[key]), key
        assert b.eval(
            "document.getElementById('detail-img').complete && document.getElementById('detail-img').naturalWidth > 0"
        )
        shot = tmp_path / "report.png"
        b.screenshot(shot)
        assert shot.stat().st_size > 10_000
        assert b.errors() == []
        assert {u.split(":", 1)[0] for u in b.requested_urls()} <= {"file", "data"}


def test_report_json_matches_independent_counts(full_report: Path, prepared: dict[str, Path]) -> None:
    from cfx.audit import audit
    from cfx.dedupe import dedupe
    from cfx.leaks import LeakOptions, leaks

    data = _data(full_report)
    m = read_manifest(prepared["split"])
    df = m.df
    comp = data["composition"]["overall"]
    gen = df.filter(pl.col("label") == 1)
    assert comp["rows"] == df.height
    assert comp["real"] == df.filter(pl.col("label") == 0).height
    assert comp["generated"] == gen.height
    assert comp["generators"] == gen.get_column("model_name").n_unique()
    top = gen.group_by("model_name").len().sort(["len", "model_name"], descending=[True, False])
    assert [(g["value"], g["rows"]) for g in comp["top_generators"]] == top.head(20).rows()
    assert {f["value"]: f["rows"] for f in comp["formats"]} == dict(df.group_by("format").len().rows())
    for part in data["composition"]["splits"]:
        assert part["rows"] == df.filter(pl.col("assigned_split") == part["split"]).height
    jq = comp["jpeg_quality"]
    assert sum(jq["real"]) + sum(jq["generated"]) == df.filter(pl.col("jpeg_quality").is_not_null()).height
    # AUROCs: the audit module's, on the same rows
    expected = audit(m, joint=True, seed=3).to_json()
    assert {f["feature"]: f["auroc"] for f in data["audit"]["features"]} == {
        f["feature"]: f["auroc"] for f in expected["features"]
    }
    assert data["audit"]["joint"]["auroc"] == expected["joint"]["auroc"]
    assert any(f["feature"] == "jpeg_quality" for f in data["audit"]["features"])
    # duplicates: cfx.dedupe's summary
    s = dedupe(m, workers=1).summary
    d = data["duplicates"]
    assert (d["exact"], d["near"], d["cross_label_pairs"]) == (
        s["exact_duplicates"], s["near_duplicates"], s["conflicts"]["pairs"]
    )  # fmt: skip
    assert d["exact"] + d["near"] > 0 and d["shown_groups"]
    # splits and the cross-set check
    assert data["splits"]["leak_free"] is True
    assert [p["rows"] for p in data["splits"]["splits"]] == [
        df.filter(pl.col("assigned_split") == p["split"]).height for p in data["splits"]["splits"]
    ]
    b = read_manifest(prepared["test"])
    check = leaks(m, b, LeakOptions(near=True, prompts=True), workers=1).summary
    assert data["against"]["leaks"] == check["leaks"] > 0
    assert (
        data["against"]["exact_keys"]
        == check["by_kind"]["exact"]["keys"]
        == b.df.get_column("sha256").n_unique()
    )
    shown_b = {(p["shard_b"], p["row_b"]) for p in data["against"]["shown_pairs"]}
    assert len(list((full_report / "thumbs").glob("b*.jpg"))) == len(shown_b) > 0
    # browse: stratified — every generator and real source before any twice
    assert data["browse"]["sampled"] == 90
    gens = {v["value"]: v["rows"] for v in data["browse"]["filters"]["generator"]}
    assert len(gens) == data["browse"]["strata"] and max(gens.values()) - min(gens.values()) <= 3


def test_missing_facts_say_which_command_adds_them(
    cfx: Callable[..., Run], prepared: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "r"
    run = cfx("report", str(prepared["plain"]), "--out", str(out), "--sample", "10", "--no-joint")
    assert run.returncode == 0, run.stderr
    data = _data(out)
    assert "cfx dedupe" in data["duplicates"]["missing"]
    assert "cfx split" in data["splits"]["missing"]
    assert data["composition"]["overall"]["jpeg_quality"] is None
    assert data["against"] is None and "joint" not in data["audit"]
    html = (out / "index.html").read_text()
    for hint in ("cfx dedupe SOURCE", "cfx split SOURCE", "cfx inspect SOURCE", "--against"):
        assert hint in html
    # a dedupe report folder fills the section: its numbers, its groups as thumbnails
    dd = tmp_path / "dd"
    run = cfx("dedupe", str(prepared["plain"]), "-o", str(tmp_path / "kept.parquet"), "--report", str(dd))
    assert run.returncode == 0, run.stderr
    run = cfx("report", str(tmp_path / "kept.parquet"), "--dedupe", str(dd), "--out", str(tmp_path / "r2"),
              "--sample", "10", "--no-joint")  # fmt: skip
    assert run.returncode == 0, run.stderr
    d, summary = _data(tmp_path / "r2")["duplicates"], json.loads((dd / "summary.json").read_text())
    assert (d["exact"], d["near"], d["removed_by_default"]) == (
        summary["exact_duplicates"], summary["near_duplicates"], summary["removed"]
    ) and summary["removed"] > 0  # fmt: skip
    assert str(dd) in d["origin"] and d["shown_groups"]
    assert len(list((tmp_path / "r2" / "thumbs").glob("a*.jpg"))) > 10  # the sample and the groups' members
    run = cfx("report", str(tmp_path / "kept.parquet"), "--dedupe", str(out), "--out", str(tmp_path / "r3"))
    assert (
        run.returncode == 3 and "not a readable `cfx dedupe --report` folder" in run.stderr
    )  # a report, not dedupe's
    assert not (tmp_path / "r3").exists()


def test_out_onto_an_input_is_refused(
    cfx: Callable[..., Run], cf_small: Path, prepared: dict[str, Path], tmp_path: Path
) -> None:
    before = sorted((p.name, p.stat().st_size) for p in (cf_small / "data").iterdir())
    for out in (cf_small / "data", cf_small, prepared["plain"]):  # holds the shards / is the manifest
        run = cfx("report", str(prepared["plain"]), "--out", str(out), "--overwrite")
        assert run.returncode == 2, run.stderr
        assert run.stderr.startswith(f"Error: --out {out}") and "Traceback" not in run.stderr
    assert sorted((p.name, p.stat().st_size) for p in (cf_small / "data").iterdir()) == before
    taken = tmp_path / "taken"
    (taken / "keep.txt").parent.mkdir()
    (taken / "keep.txt").write_text("mine")
    run = cfx("report", str(prepared["plain"]), "--out", str(taken))
    assert run.returncode == 7 and "--overwrite" in run.stderr and (taken / "keep.txt").read_text() == "mine"
    assert read_manifest(prepared["plain"]).df.height == 240


def test_no_rows_is_a_clear_error(cfx: Callable[..., Run], prepared: dict[str, Path], tmp_path: Path) -> None:
    m = read_manifest(prepared["plain"])
    m.with_df(m.df.head(0)).write(tmp_path / "empty.parquet")
    run = cfx("report", str(tmp_path / "empty.parquet"), "--out", str(tmp_path / "r"))
    assert run.returncode == 5
    assert run.stderr.startswith("Error: SOURCE has no rows") and "Traceback" not in run.stderr
    assert not (tmp_path / "r").exists()


def test_sample_larger_than_the_set_shows_every_row(
    cfx: Callable[..., Run], prepared: dict[str, Path], tmp_path: Path
) -> None:
    m = read_manifest(prepared["plain"])
    small = m.with_df(m.df.head(25), step="slice --head 25")
    lineage = {"command": "cfx slice plain.parquet --head 25", "cfx_version": "0.1.0", "inputs": {"a": 1}}
    small.history.append(lineage)  # type: ignore[arg-type]  # richer lineage entries: shown as their fields
    small.write(tmp_path / "small.parquet")
    out = tmp_path / "r"
    run = cfx("report", str(tmp_path / "small.parquet"), "--out", str(out), "--sample", "5000", "--no-joint")
    assert run.returncode == 0, run.stderr
    data = _data(out)
    assert data["browse"]["sampled"] == 25 and "every row is shown" in data["browse"]["note"]
    assert len(list((out / "thumbs").glob("a*.jpg"))) == 25
    history = data["provenance"]["history"]
    assert history[-2]["fields"] == [{"field": "step", "value": "slice --head 25"}]
    assert [f["field"] for f in history[-1]["fields"]] == ["command", "cfx_version", "inputs"]
    html = (out / "index.html").read_text()
    assert "cfx slice plain.parquet --head 25" in html and "<b>cfx_version</b>" in html
