"""The real Hub layout end to end: ``resolution`` keeps its source's type (list or string) and order ([w, h] or
[h, w]) through every output, and whatever counts generators counts generated rows only (real rows carry their
dataset's name in ``model_name``)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import datasets
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cfx.manifest import read_manifest
from cfx.schema import source_schema
from tests.shards import write_shard

# (width, height, label, model_name, architecture): a non-square row first (it tells the order), then a
# square one (it cannot), then another non-square one
_ROWS = (
    (40, 24, 1, "stabilityai/stable-diffusion-2", "LatDiff"),
    (24, 24, 1, "runwayml/stable-diffusion-v1-5", "LatDiff"),
    (30, 50, 0, "COCO", "Real"),
)


def _png(width: int, height: int, seed: int) -> bytes:
    rng = __import__("numpy").random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype="uint8")).save(buf, "PNG")
    return buf.getvalue()


def _declared(width: int, height: int, kind: str, order: str) -> Any:
    pair = [height, width] if order == "hw" else [width, height]
    return pair if kind == "list" else "[{}, {}]".format(*pair)


def _source(root: Path, kind: str, order: str) -> Path:
    records = [
        dict(
            image_name=f"{i:08d}.png",
            format="PNG",
            resolution=_declared(w, h, kind, order),
            mode="RGB",
            image_data=_png(w, h, i),
            model_name=model,
            nsfw_flag=False,
            prompt="a photo" if label else "",
            real_source="LAION" if label else model,
            subset="Systematic" if label else "Real",
            split="train",
            label=label,
            architecture=arch,
        )
        for i, (w, h, label, model, arch) in enumerate(_ROWS)
    ]
    write_shard(root / "data" / "HFCF_small_0.parquet", records, source_schema(kind))
    return root


def _decoded(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def _check_rows(table: pa.Table, kind: str, order: str) -> None:
    """Every row's resolution: the source's type, its order, the new bytes' size."""
    want_type = pa.list_(pa.int64()) if kind == "list" else pa.string()
    assert table.schema.field("resolution").type == want_type
    for r in table.to_pylist():
        assert r["resolution"] == _declared(*_decoded(r["image_data"]), kind, order), r["resolution"]


def _data_table(out: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((out / "data").glob("*.parquet")))


@pytest.mark.parametrize("kind", ["list", "string"])
@pytest.mark.parametrize("order", ["wh", "hw"])
def test_subset_transform_keeps_type_and_order(cfx: Any, tmp_path: Path, kind: str, order: str) -> None:
    src = _source(tmp_path / "src", kind, order)
    before = (src / "data" / "HFCF_small_0.parquet").read_bytes()
    r = cfx(
        "subset",
        str(src),
        "--out",
        str(tmp_path / "o"),
        "--transform",
        "resize:0.5",
        "--transform",
        "jpeg:96",
    )
    assert r.returncode == 0, r.stderr
    table = _data_table(tmp_path / "o")
    _check_rows(table, kind, order)
    assert [_decoded(d) for d in table.column("image_data").to_pylist()] == [(20, 12), (12, 12), (15, 25)]
    # the subset's manifest: resolution as text in the same order; width/height the new size
    m = read_manifest(tmp_path / "o" / "manifest.parquet").df
    assert m["resolution"].to_list() == [
        "[{}, {}]".format(*_declared(w, h, "list", order)) for w, h in ((20, 12), (12, 12), (15, 25))
    ]
    assert m["width"].to_list() == [20, 12, 15] and m["height"].to_list() == [12, 12, 25]
    assert (src / "data" / "HFCF_small_0.parquet").read_bytes() == before


def test_square_rows_take_their_shards_order(cfx: Any, tmp_path: Path) -> None:
    """A square source cropped to a non-square size cannot tell its order: it follows its shard's."""
    src = _source(tmp_path / "src", "list", "hw")
    r = cfx("subset", str(src), "--out", str(tmp_path / "o"), "--transform", "center-crop:16x8")
    assert r.returncode == 0, r.stderr
    table = _data_table(tmp_path / "o")
    _check_rows(table, "list", "hw")
    assert table.column("resolution").to_pylist() == [[8, 16]] * 3


def test_list_resolution_through_strip_split_column_and_load_dataset(cfx: Any, tmp_path: Path) -> None:
    src = _source(tmp_path / "src", "list", "hw")
    r = cfx("subset", str(src), "--out", str(tmp_path / "s"), "--strip-metadata")
    assert r.returncode == 0, r.stderr
    table = _data_table(tmp_path / "s")
    _check_rows(table, "list", "hw")
    assert table.column("resolution").to_pylist() == [[24, 40], [24, 24], [50, 30]]  # unchanged
    out = tmp_path / "split"
    r = cfx(
        "subset", str(src), "--out", str(out), "--split-column", "architecture", "--transform", "resize:0.5"
    )
    assert r.returncode == 0, r.stderr
    _check_rows(_data_table(out), "list", "hw")
    ds = datasets.load_dataset("parquet", data_dir=str(out), cache_dir=str(tmp_path / "hf"))
    assert set(ds) == {"LatDiff", "Real"}
    card = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf2"))  # the card declares the features
    assert card["Real"].features["resolution"] == datasets.List(datasets.Value("int64"))
    assert ds["LatDiff"].features["resolution"] == datasets.List(datasets.Value("int64"))
    assert ds["LatDiff"]["resolution"] == [[12, 20], [12, 12]] and ds["Real"]["resolution"] == [[25, 15]]


def test_export_metadata_keeps_list_and_order(cfx: Any, tmp_path: Path) -> None:
    src = _source(tmp_path / "src", "list", "hw")
    r = cfx("export", str(src), "--format", "imagefolder", "--out", str(tmp_path / "f"))
    assert r.returncode == 0, r.stderr
    meta = [
        json.loads(x)
        for p in sorted((tmp_path / "f").rglob("metadata.jsonl"))
        for x in p.read_text().split("\n")
        if x
    ]
    assert sorted(m["resolution"] for m in meta) == sorted([[24, 40], [24, 24], [50, 30]])
    out = tmp_path / "w"
    r = cfx("export", str(src), "--format", "webdataset", "--out", str(out), "--transform", "resize:0.5")
    assert r.returncode == 0, r.stderr
    got = []
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as t:
            members = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}  # type: ignore[union-attr]
        for name, data in members.items():
            if name.endswith(".json"):
                key = name[: -len(".json")]
                image = next(v for k, v in members.items() if k.startswith(key + ".") and k != name)
                w, h = _decoded(image)
                got.append(json.loads(data)["resolution"])
                assert json.loads(data)["resolution"] == [h, w]
    assert sorted(got) == sorted([[12, 20], [12, 12], [25, 15]])
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"), split="train")
    assert sorted(x["resolution"] for x in ds["json"]) == sorted(got)


def test_generator_counts_leave_real_rows_out(cfx: Any, cf_small: Path, tmp_path: Path) -> None:
    """Real rows are named by their dataset (FFHQ, COCO, ...) as in the real set: no command counts them as
    generators."""
    r = cfx("index", str(cf_small), "-o", str(tmp_path / "m.parquet"))
    assert r.returncode == 0, r.stderr
    df = read_manifest(tmp_path / "m.parquet").df
    gens = set(df.filter(pl.col("label") == 1)["model_name"])
    datasets_ = set(df.filter(pl.col("label") == 0)["model_name"])
    assert datasets_ and not gens & datasets_
    stats = json.loads(cfx("stats", str(tmp_path / "m.parquet"), "--json").out)
    assert stats["totals"]["generators"] == len(gens)
    by_model = {v["value"] for v in stats["breakdowns"]["model_name"]["values"]}
    assert by_model and not by_model & datasets_
    lic = json.loads(cfx("licenses", str(tmp_path / "m.parquet"), "--json").out)
    assert sum(x["generators"] for x in lic["licenses"]) == len(gens)
    assert not {x["model_name"] for x in lic.get("missing_generators", [])} & datasets_
    bal = json.loads(
        cfx("balance", str(tmp_path / "m.parquet"), "--json", "-o", str(tmp_path / "b.parquet")).out
    )
    assert bal["steps"][0]["generators"] == len(gens)
    kept = read_manifest(tmp_path / "b.parquet").df.filter(pl.col("label") == 1)
    assert bal["result"]["generators"] == kept["model_name"].n_unique()
    sp = json.loads(
        cfx(
            "split",
            str(tmp_path / "m.parquet"),
            "--by",
            "generator",
            "--json",
            "-o",
            str(tmp_path / "s.parquet"),
        ).out
    )
    assert all(not g["key"].startswith("generator=") or g["key"][10:] in gens for g in sp["largest_groups"])
    assert sum(s["generated"] for s in sp["splits"]) == df.filter(pl.col("label") == 1).height


def test_null_list_resolution_gets_the_new_size_as_a_list(cfx: Any, tmp_path: Path) -> None:
    from tests.shards import rows

    recs = rows(3)
    recs[1]["resolution"] = None
    write_shard(tmp_path / "src" / "data" / "s.parquet", recs)
    r = cfx("subset", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--transform", "resize:0.5")
    assert r.returncode == 0, r.stderr
    assert _data_table(tmp_path / "o").column("resolution").to_pylist() == [[16, 16]] * 3
    m = read_manifest(tmp_path / "o" / "manifest.parquet").df
    assert m["resolution"].to_list() == ["[16, 16]"] * 3 and m["source_resolution"][1] is None
