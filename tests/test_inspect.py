"""cfx inspect on real shards: facts joined to the manifest, consistency checks, the per-shard cache, the fused
hash + inspect pass (the second command reads no image bytes), resolution order detection used by index."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from PIL import Image

from cfx.bytefacts import FACT_COLUMNS
from cfx.errors import PartialError
from cfx.hashing import hash_manifest
from cfx.index import cache_dir
from cfx.inspect import CONSISTENCY_COLUMNS, inspect_manifest, summarize
from cfx.load import load_manifest
from cfx.manifest import Manifest
from tests.conftest import Run
from tests.shards import rows, write_shard

SHARD0 = "data/HFCF_small_0.parquet"
SHARD1 = "data/HFCF_small_1.parquet"


def _jpeg(seed: int, size: tuple[int, int], quality: int, mode: str = "RGB") -> bytes:
    w, h = size
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _real(i: int, data: bytes | None, resolution: str, **extra: Any) -> dict[str, Any]:
    rec = rows(1, label=0, start=i)[0]
    rec.update({"image_data": data, "resolution": resolution, "format": "JPEG", "image_name": f"{i:08d}.jpg"})
    rec.update(extra)
    return rec


def _dataset(tmp_path: Path) -> Path:
    """Shard 0: generated PNGs (32×32, right). Shard 1: real COCO JPEGs 40×24 whose resolution is written
    [h, w], one declared PNG, one declared L, one without bytes."""
    root = tmp_path / "ds"
    write_shard(root / SHARD0, rows(4))
    reals = [_real(10 + i, _jpeg(i, (40, 24), 90 + i), "[24, 40]") for i in range(4)]
    reals.append(_real(20, _jpeg(20, (40, 24), 75), "[24, 40]", format="PNG"))
    reals.append(_real(21, _jpeg(21, (40, 24), 75), "[24, 40]", mode="L"))
    reals.append(_real(22, None, "[24, 40]"))
    write_shard(root / SHARD1, reals)
    return root


def test_facts_and_consistency(tmp_path: Path) -> None:
    m = load_manifest(str(_dataset(tmp_path)))
    result = inspect_manifest(m, workers=1)
    df = result.manifest.df
    assert df.select("shard", "row").equals(m.df.select("shard", "row"))
    assert all(c in df.columns for c in (*FACT_COLUMNS, *CONSISTENCY_COLUMNS))
    real = df.filter(pl.col("shard") == SHARD1)
    assert real.get_column("jpeg_quality").to_list() == [90, 91, 92, 93, 75, 75, None]
    assert real.get_column("actual_format").to_list()[:6] == ["JPEG"] * 6
    assert real.get_column("format_mismatch").to_list() == [False] * 4 + [True, False, None]
    assert real.get_column("mode_mismatch").to_list() == [False] * 5 + [True, None]
    # COCO writes [h, w]: said once, and its rows are not size mismatches
    assert result.transposed == {"COCO": "hw"}
    assert real.get_column("size_mismatch").to_list() == [False] * 6 + [None]
    assert real.get_column("inspect_error").to_list()[6] == "no image data"
    gen = df.filter(pl.col("shard") == SHARD0)
    assert gen.get_column("actual_format").to_list() == ["PNG"] * 4
    assert gen.get_column("size_mismatch").to_list() == [False] * 4
    s = summarize(result)
    assert s["actual_format"] == {"JPEG": 6, "PNG": 4, "(none)": 1}
    assert s["jpeg_quality"]["real"] == {75: 2, 90: 1, 91: 1, 92: 1, 93: 1}
    assert s["mismatches"] == {"format": 1, "size": 0, "mode": 1}
    assert s["resolution_order"] == {"COCO": "[h, w]"}
    assert (s["inspect_errors"], s["read_now"], s["from_cache"]) == (1, 11, 0)


def test_index_uses_the_detected_order(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    before = load_manifest(str(root)).df.filter(pl.col("shard") == SHARD1)
    assert before.select("width", "height").row(0) == (24, 40)  # as written
    inspect_manifest(load_manifest(str(root)), workers=1)
    saved = json.loads((cache_dir() / "resolution_order.json").read_text())
    assert saved == {str(root): {"COCO": "hw"}}
    after = load_manifest(str(root)).df
    assert after.filter(pl.col("shard") == SHARD1).select("width", "height").row(0) == (40, 24)
    assert after.filter(pl.col("shard") == SHARD0).select("width", "height").row(0) == (32, 32)
    again = inspect_manifest(load_manifest(str(root)), workers=1)  # detection reads `resolution` as written
    assert again.transposed == {"COCO": "hw"}


def _scramble(root: Path) -> None:
    """Overwrite every shard with garbage of the same size and mtime: the fingerprint (and so the caches)
    still match, but any read of image bytes now fails."""
    for p in (root / "data").glob("*.parquet"):
        st = p.stat()
        p.write_bytes(b"\0" * st.st_size)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def _saved_manifest(root: Path) -> Manifest:
    return load_manifest(str(root))


def test_inspect_after_dedupe_hashing_reads_no_bytes(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    m = _saved_manifest(root)
    hashed = hash_manifest(m, workers=1)
    assert hashed.decoded == 10
    _scramble(root)
    result = inspect_manifest(m, workers=1)
    assert (result.read_rows, result.cached_rows) == (0, 11)
    assert result.manifest.df.get_column("jpeg_quality").drop_nulls().len() == 6


def test_dedupe_after_inspect_hashes_reads_no_bytes(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    m = _saved_manifest(root)
    first = inspect_manifest(m, workers=1, with_hashes=True)
    assert first.read_rows == 0 and first.cached_rows == 11  # facts came with the hashing pass
    assert "phash" in first.manifest.df.columns
    _scramble(root)
    again = hash_manifest(m, workers=1)
    assert (again.decoded, again.cached_rows) == (0, 11)


def test_rerun_reads_nothing_and_cache_can_be_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _dataset(tmp_path)
    m = _saved_manifest(root)
    monkeypatch.setattr("cfx.inspect.POOL_MIN_IMAGES", 0)  # cfx.pool.shared_work however few the images
    first = inspect_manifest(m, workers=2)
    second = inspect_manifest(m, workers=1)
    assert (second.read_rows, second.cached_rows) == (0, 11)
    assert second.manifest.df.equals(first.manifest.df)
    assert inspect_manifest(m, workers=1, use_cache=False).read_rows == 11
    part = m.with_df(m.df.filter(pl.col("row") < 2))
    assert inspect_manifest(part, workers=1).cached_rows == 4


def test_reuses_fact_columns(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    done = inspect_manifest(_saved_manifest(root), workers=1).manifest
    again = inspect_manifest(done, workers=1, use_cache=False)
    assert again.read_rows == 0 and again.manifest.df.equals(done.df)


def test_unreadable_shard(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    m = _saved_manifest(root)
    _scramble(root)
    with pytest.raises(PartialError, match="cannot inspect"):
        inspect_manifest(m, workers=1)
    skipped = inspect_manifest(m, workers=1, skip_bad=True).manifest.df
    assert skipped.get_column("inspect_error").str.starts_with("unreadable shard").all()
    with pytest.MonkeyPatch.context() as mp:  # the same through cfx.pool.shared_work
        mp.setattr("cfx.inspect.POOL_MIN_IMAGES", 0)
        assert inspect_manifest(m, workers=2, skip_bad=True).manifest.df.equals(skipped)


# --- CLI ------------------------------------------------------------------------------------------------
def test_cli_json_and_output(tmp_path: Path, cfx: Callable[..., Run]) -> None:
    root = _dataset(tmp_path)
    run = cfx("inspect", str(root), "-o", str(tmp_path / "i.parquet"), "--json")
    assert run.returncode == 0, run.stderr
    s = json.loads(run.out)
    assert s["rows"] == 11 and s["mismatches"]["format"] == 1
    assert s["jpeg_quality"]["real"]["75"] == 2
    df = pl.read_parquet(tmp_path / "i.parquet")
    assert df.get_column("jpeg_quality").drop_nulls().len() == 6
    stats = cfx("stats", str(tmp_path / "i.parquet"), "--by", "jpeg_quality", "--json")
    assert stats.returncode == 0, stats.stderr
    values = {v["value"]: v["rows"] for v in json.loads(stats.out)["breakdowns"]["jpeg_quality"]["values"]}
    assert values["75"] == 2


def test_cli_selection_and_text(tmp_path: Path, cfx: Callable[..., Run]) -> None:
    root = _dataset(tmp_path)
    run = cfx("inspect", str(root), "--labels", "real", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.out)["rows"] == 7
    text = cfx("inspect", str(root), "--json", "--workers", "1")
    assert text.returncode == 0
    plain = cfx("inspect", str(root), "-o", str(tmp_path / "x.parquet"))
    assert "COCO: resolution is written [h, w]" in plain.out
    assert "JPEG quality by label" in plain.out


def test_cli_bad_source(tmp_path: Path, cfx: Callable[..., Run]) -> None:
    run = cfx("inspect", str(tmp_path / "missing"))
    assert run.returncode == 3 and run.stderr.startswith("Error:") and "Traceback" not in run.stderr


def test_stats_by_byte_fact_inspects_on_the_fly(tmp_path: Path, cfx: Callable[..., Run]) -> None:
    root = _dataset(tmp_path)
    plot = tmp_path / "q.png"
    run = cfx(
        "stats",
        str(root),
        "--by",
        "chroma_subsampling",
        "--by",
        "actual_format",
        "--json",
        "--plot",
        str(plot),
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.out)
    formats = {v["value"]: v["rows"] for v in out["breakdowns"]["actual_format"]["values"]}
    assert formats == {"JPEG": 6, "PNG": 4, "(null)": 1}
    assert out["jpeg_quality"]["real"] == {"75": 2, "90": 1, "91": 1, "92": 1, "93": 1}
    assert Image.open(plot).format == "PNG"


def test_stats_byte_fact_list_matches_inspect() -> None:
    from cfx.cli.stats import BYTE_FACTS

    assert set(BYTE_FACTS) == (set(FACT_COLUMNS) - {"text_chunks"}) | set(CONSISTENCY_COLUMNS)
