"""cfx.synth: realistic CF-shaped test data. Real files, no mocks."""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import imagehash
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from cfx import synth
from cfx.errors import InputError, UsageError
from cfx.schema import SOURCE_SCHEMA

# Importing cfx.cli registers every command module; on a branch without all of them the CLI tests skip.
try:
    importlib.import_module("cfx.cli.synth")
    _CLI_IMPORT_ERROR = ""
except ImportError as exc:
    _CLI_IMPORT_ERROR = str(exc)

GENERATED_ARCHS = {"LatDiff", "GAN", "PixDiff", "Other"}
REAL_SOURCES = {
    "LAION",
    "COCO",
    "FFHQ",
    "CelebA",
    "ImageNet",
    "MetFaces",
    "AFHQ-v2",
    "Forchheim",
    "IMD2020",
    "LandscapesHQ",
    "VISION",
}
LICENCES = {
    "creativeml-openrail-m",
    "openrail++",
    "apache-2.0",
    "mit",
    "cc-by-nc-4.0",
    "deepfloyd-if-license",
}
SCALE = 0.25


@dataclass(frozen=True)
class Decoded:
    format: str | None
    size: tuple[int, int]
    mode: str
    phash: imagehash.ImageHash


def _read(root: Path) -> pl.DataFrame:
    """Every shard's rows, with ``resolution`` (a [w, h] list in the shards) as its text "[w, h]"."""
    frames = []
    for path in sorted((root / "data").glob("*.parquet"), key=lambda p: int(p.stem.rsplit("_", 1)[1])):
        df = pl.read_parquet(path)
        assert df.schema["resolution"] == pl.List(pl.Int64)
        res = pl.col("resolution")
        df = df.with_columns(pl.format("[{}, {}]", res.list.get(0), res.list.get(1)).alias("resolution"))
        frames.append(
            df.with_columns(
                shard=pl.lit(path.relative_to(root).as_posix()), row=pl.int_range(pl.len(), dtype=pl.Int64)
            )
        )
    return pl.concat(frames)


def _decode(data: bytes) -> Decoded:
    image = Image.open(io.BytesIO(data))
    image.load()
    return Decoded(image.format, image.size, image.mode, imagehash.phash(image))


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> synth.SynthInfo:
    return synth.make_dataset(tmp_path_factory.mktemp("demo"), scale=SCALE)


@pytest.fixture(scope="module")
def rows(demo: synth.SynthInfo) -> pl.DataFrame:
    return _read(demo.root)


@pytest.fixture(scope="module")
def decoded(rows: pl.DataFrame) -> dict[tuple[str, int], Decoded]:
    return {(r["shard"], r["row"]): _decode(r["image_data"]) for r in rows.iter_rows(named=True)}


@pytest.fixture(scope="module")
def truth(demo: synth.SynthInfo) -> pl.DataFrame:
    return synth.load_ground_truth(demo.root)


def _position(key: tuple[str, int]) -> tuple[int, int]:
    """(shard number, row) of a ("data/HFCF_small_<n>.parquet", row) key."""
    return int(re.findall(r"\d+", key[0])[-1]), key[1]


def _copies(truth: pl.DataFrame) -> set[tuple[str, int]]:
    return set(zip(truth["shard_b"], truth["row_b"], strict=True))


# --- files and schema -----------------------------------------------------------------------------------


def test_shards_have_source_schema_and_one_row_group(demo: synth.SynthInfo) -> None:
    assert [p.name for p in demo.shards] == [f"HFCF_small_{i}.parquet" for i in range(6)]
    for path in demo.shards:
        pf = pq.ParquetFile(path)
        assert pf.schema_arrow.names == SOURCE_SCHEMA.names
        assert pf.schema_arrow.equals(SOURCE_SCHEMA, check_metadata=False)
        assert pf.metadata.num_row_groups == 1
        assert pf.metadata.num_rows == 60
    assert demo.n_rows == 360 and demo.n_real + demo.n_generated == 360
    assert not list(demo.root.rglob("*.tmp")), "temp files left behind"


def test_layout_mirrors_the_real_shards(rows: pl.DataFrame, demo: synth.SynthInfo) -> None:
    per_shard = rows.group_by("shard").agg(
        gen=(pl.col("label") == 1).sum(),
        real=(pl.col("label") == 0).sum(),
        archs=pl.col("architecture").unique(),
    )
    by = {r["shard"]: r for r in per_shard.iter_rows(named=True)}
    for i in (0, 1, 2):
        assert by[f"data/HFCF_small_{i}.parquet"]["real"] == 0
    for i in (0, 1):
        assert set(by[f"data/HFCF_small_{i}.parquet"]["archs"]) == {"LatDiff"}
    assert {"GAN", "PixDiff", "Other"} <= set(by["data/HFCF_small_2.parquet"]["archs"])
    mixed = rows.filter(pl.col("shard") == "data/HFCF_small_3.parquet")
    n_gen = by["data/HFCF_small_3.parquet"]["gen"]
    assert 1 <= n_gen < 10 and mixed["label"].to_list() == [1] * n_gen + [0] * (60 - n_gen)
    assert set(mixed.filter(pl.col("label") == 1)["architecture"]) == {"GAN"}
    for i in (4, 5):
        assert by[f"data/HFCF_small_{i}.parquet"]["gen"] == 0
    assert abs(demo.n_real - demo.n_generated) <= 0.1 * demo.n_rows
    assert demo.n_real == int((rows["label"] == 0).sum())


def test_files_are_written_as_the_real_shards(demo: synth.SynthInfo) -> None:
    """One row group; resolution a list<int64> with Parquet leaf ``element``; every column (the image column
    too) in pyarrow's default layout: dictionary encoded, snappy."""
    for path in demo.shards:
        pf = pq.ParquetFile(path)
        assert pf.metadata.num_row_groups == 1
        assert pf.schema_arrow.field("resolution").type == pa.list_(pa.int64())
        assert (
            pf.schema.column(pf.schema_arrow.get_field_index("resolution")).path == "resolution.list.element"
        )
        rg = pf.metadata.row_group(0)
        chunks = {c.path_in_schema: c for c in (rg.column(i) for i in range(rg.num_columns))}
        image = chunks["image_data"]
        assert image.has_dictionary_page and "RLE_DICTIONARY" in image.encodings, image
        assert image.compression == "SNAPPY"


def test_string_resolution_is_the_other_form(tmp_path: Path) -> None:
    info = synth.make_dataset(tmp_path, shards=2, rows_per_shard=6, scale=0.1, resolution_type="string")
    for path in info.shards:
        table = pq.read_table(path)
        assert table.schema.field("resolution").type == pa.string()
        for r in table.to_pylist():
            assert r["resolution"] == "[{}, {}]".format(*_decode(r["image_data"]).size)
    with pytest.raises(UsageError, match="resolution type"):
        synth.make_dataset(tmp_path / "x", shards=1, rows_per_shard=1, resolution_type="tuple")


def test_label_semantics(rows: pl.DataFrame) -> None:
    real = rows.filter(pl.col("label") == 0)
    gen = rows.filter(pl.col("label") == 1)
    assert set(rows["label"].unique()) == {0, 1}
    assert set(real["architecture"]) == {"Real"}
    # as in the real set: a real row is named by its source dataset, a generated row's real_source is
    # where its prompt came from
    assert real["model_name"].to_list() == real["real_source"].to_list() and set(real["prompt"]) == {""}
    assert set(real["real_source"]) <= REAL_SOURCES
    assert set(real["subset"]) == {"Real"}
    assert set(gen["architecture"]) == GENERATED_ARCHS
    assert (gen["model_name"] != "").all() and (gen["prompt"].str.len_chars() > 10).all()
    assert not set(gen["model_name"]) & REAL_SOURCES
    assert set(gen["real_source"]) == {"LAION"}
    assert set(gen["subset"]) == {"Systematic", "Manual"}
    assert set(rows["split"]) == {"train"}
    assert 0 < rows["nsfw_flag"].mean() < 0.1


def test_generators_are_many_uneven_and_tied_to_one_architecture(rows: pl.DataFrame) -> None:
    gen = rows.filter(pl.col("label") == 1)
    counts = gen.group_by("model_name").len()
    assert counts.height >= 12
    assert counts["len"].max() >= 5 * counts["len"].min()
    arch_per_model = gen.group_by("model_name").agg(pl.col("architecture").n_unique())
    assert (arch_per_model["architecture"] == 1).all()
    assert {"StyleGAN2", "ProGAN", "BigGAN", "DeepFloyd/IF-I-XL-v1.0"} <= set(gen["model_name"])


def test_columns_describe_the_bytes(rows: pl.DataFrame, decoded: dict[tuple[str, int], Decoded]) -> None:
    for r in rows.iter_rows(named=True):
        d = decoded[(r["shard"], r["row"])]
        assert d.format == r["format"]
        assert r["resolution"] == f"[{d.size[0]}, {d.size[1]}]"
        assert d.mode == r["mode"]
        assert re.fullmatch(r"\d{8}\.(png|jpg)", r["image_name"])
        assert r["image_name"].endswith(".png") == (r["format"] == "PNG")
    assert rows["image_name"].n_unique() == rows.height


def test_size_and_format_shortcuts(rows: pl.DataFrame, truth: pl.DataFrame) -> None:
    real = rows.filter(pl.col("label") == 0)
    gen = rows.filter(pl.col("label") == 1)
    assert (real["format"] == "JPEG").mean() > 0.4
    assert (gen["format"] == "PNG").mean() > 0.9
    side = round(512 * SCALE)
    assert (gen["resolution"] == f"[{side}, {side}]").mean() > 0.7
    # near copies are resized/cropped on purpose; every other FFHQ row is 1024^2 * scale
    copies = _copies(truth)
    ffhq = [r for r in real.iter_rows(named=True) if r["real_source"] == "FFHQ"]
    ffhq = [r for r in ffhq if (r["shard"], r["row"]) not in copies]
    assert len(ffhq) >= 10
    assert {(r["resolution"], r["format"]) for r in ffhq} == {
        (f"[{1024 * SCALE:.0f}, {1024 * SCALE:.0f}]", "PNG")
    }


def test_images_have_texture(rows: pl.DataFrame) -> None:
    for data in rows["image_data"].head(40):
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float64)
        assert pixels.std() > 10  # not flat
        assert np.abs(np.diff(pixels, axis=1)).mean() > 1  # not a smooth gradient either


# --- duplicates -----------------------------------------------------------------------------------------


def test_distinct_images_are_far_apart_in_phash(
    decoded: dict[tuple[str, int], Decoded], truth: pl.DataFrame
) -> None:
    copies = _copies(truth)
    hashes = [d.phash.hash.flatten() for k, d in decoded.items() if k not in copies]
    assert len(hashes) >= 200
    h = np.array(hashes)
    dist = (h[:, None, :] != h[None, :, :]).sum(-1)[np.triu_indices(len(h), 1)]
    assert dist.min() >= 10
    assert np.median(dist) >= 24


def test_ground_truth_pairs(
    demo: synth.SynthInfo, rows: pl.DataFrame, decoded: dict[tuple[str, int], Decoded], truth: pl.DataFrame
) -> None:
    assert demo.ground_truth == demo.root / "ground_truth" / "duplicates.parquet"
    assert truth.columns == [
        "shard_a",
        "row_a",
        "shard_b",
        "row_b",
        "kind",
        "transform",
        "cross_label",
        "cross_shard",
    ]
    assert truth.height == demo.n_pairs
    counts = truth.group_by("transform").len()
    assert set(counts["transform"]) == {"copy", "jpeg", "resize", "crop", "brightness"}
    assert counts["len"].min() >= 3
    exact = truth.filter(pl.col("kind") == "exact")
    assert exact.filter(~pl.col("cross_label") & ~pl.col("cross_shard")).height >= 3
    assert exact.filter(~pl.col("cross_label") & pl.col("cross_shard")).height >= 3
    assert exact.filter(pl.col("cross_label")).height >= 3
    assert truth.filter((pl.col("kind") == "near") & pl.col("cross_label")).height >= 1
    assert set(truth["kind"]) == {"exact", "near"}
    assert (truth.filter(pl.col("kind") == "exact")["transform"] == "copy").all()

    by_key = {(r["shard"], r["row"]): r for r in rows.iter_rows(named=True)}
    seen: set[tuple[str, int]] = set()
    for p in truth.iter_rows(named=True):
        a, b = (p["shard_a"], p["row_a"]), (p["shard_b"], p["row_b"])
        assert not (seen & {a, b}), "each row is in at most one injected pair"
        seen |= {a, b}
        ra, rb = by_key[a], by_key[b]
        assert _position(a) < _position(b), "the original comes first"
        assert p["cross_label"] == (ra["label"] != rb["label"])
        assert p["cross_shard"] == (a[0] != b[0])
        if p["kind"] == "exact":
            assert ra["image_data"] == rb["image_data"]
        else:
            assert ra["image_data"] != rb["image_data"]
            assert decoded[a].phash - decoded[b].phash <= 12
            if p["transform"] == "jpeg":
                assert rb["format"] == "JPEG"
            if p["transform"] in ("resize", "crop"):
                assert decoded[b].size != decoded[a].size
        if not p["cross_label"]:
            provenance = ("architecture", "model_name", "real_source", "prompt")
            assert [ra[c] for c in provenance] == [rb[c] for c in provenance]


def test_only_injected_pairs_are_duplicates(
    rows: pl.DataFrame, decoded: dict[tuple[str, int], Decoded], truth: pl.DataFrame
) -> None:
    pairs = {
        frozenset({(p[0], p[1]), (p[2], p[3])})
        for p in truth.select("shard_a", "row_a", "shard_b", "row_b").iter_rows()
    }
    keys = list(decoded)
    h = np.array([decoded[k].phash.hash.flatten() for k in keys])
    dist = (h[:, None, :] != h[None, :, :]).sum(-1)
    i, j = np.nonzero(np.triu(dist <= 12, 1))
    close = {frozenset({keys[a], keys[b]}) for a, b in zip(i, j, strict=True)}
    assert close == pairs
    digests = rows["image_data"].map_elements(lambda b: hashlib.sha256(b).hexdigest(), return_dtype=pl.String)
    n_exact = truth.filter(pl.col("kind") == "exact").height
    assert digests.n_unique() == rows.height - n_exact


def test_ground_truth_lives_outside_data(demo: synth.SynthInfo) -> None:
    assert not list((demo.root / "data").rglob("*duplicates*"))
    assert sorted(p.name for p in (demo.root / "data").glob("*.parquet")) == sorted(
        p.name for p in demo.shards
    )


# --- licences and card ----------------------------------------------------------------------------------


def test_generator_licence_table(demo: synth.SynthInfo, rows: pl.DataFrame) -> None:
    with open(demo.root / "data" / "metadata" / "generators.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert table and list(table[0]) == ["model_name", "license"]
    licences = {r["model_name"]: r["license"] for r in table}
    assert set(licences.values()) <= LICENCES
    assert "creativeml-openrail-m" in licences.values() and len(set(licences.values())) >= 5
    used = set(rows.filter(pl.col("label") == 1)["model_name"])
    missing = used - set(licences)
    assert 1 <= len(missing) <= len(used) // 4


def test_dataset_card(demo: synth.SynthInfo) -> None:
    card = (demo.root / "README.md").read_text()
    header = card.split("---")[1]
    assert "license: cc-by-nc-sa-4.0" in header
    assert "configs:" in header and "data_files:" in header and "path: data/*.parquet" in header


# --- options, determinism, rewrite ----------------------------------------------------------------------


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    kwargs = {"shards": 4, "rows_per_shard": 24, "scale": 0.2}
    synth.make_dataset(tmp_path / "a", seed=7, **kwargs)
    synth.make_dataset(tmp_path / "b", seed=7, **kwargs)
    synth.make_dataset(tmp_path / "c", seed=8, **kwargs)
    a, b, c = (_digests(tmp_path / x) for x in "abc")
    assert a == b
    assert "ground_truth/duplicates.parquet" in a and "data/metadata/generators.csv" in a
    assert a["data/HFCF_small_0.parquet"] != c["data/HFCF_small_0.parquet"]


def test_scale_sets_pixel_sizes(tmp_path: Path) -> None:
    info = synth.make_dataset(tmp_path, shards=2, rows_per_shard=40, scale=0.5, duplicates=False)
    df = _read(tmp_path)
    gen = df.filter(pl.col("label") == 1)
    assert (gen["resolution"] == "[256, 256]").mean() > 0.7
    assert set(df.filter(pl.col("real_source") == "FFHQ")["resolution"]) <= {"[512, 512]"}
    assert info.ground_truth is None and info.n_pairs == 0


def test_rewrite_removes_stale_shards_and_ground_truth(tmp_path: Path) -> None:
    synth.make_dataset(tmp_path, shards=5, rows_per_shard=20, scale=0.1)
    assert (tmp_path / "ground_truth" / "duplicates.parquet").is_file()
    info = synth.make_dataset(tmp_path, shards=2, rows_per_shard=20, scale=0.1, duplicates=False)
    assert sorted(p.name for p in (tmp_path / "data").glob("*.parquet")) == [p.name for p in info.shards]
    assert not (tmp_path / "ground_truth").exists()
    with pytest.raises(InputError):
        synth.load_ground_truth(tmp_path)


def test_tiny_sets_still_work(tmp_path: Path) -> None:
    info = synth.make_dataset(tmp_path, shards=1, rows_per_shard=6, scale=0.1)
    assert info.n_rows == 6 and info.n_generated >= 1 and info.n_real >= 1
    assert pq.ParquetFile(info.shards[0]).metadata.num_row_groups == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"shards": 0}, {"rows_per_shard": 0}, {"scale": 0.0}, {"scale": 10.0}, {"seed": -1}],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        synth.make_dataset(tmp_path, **kwargs)  # type: ignore[arg-type]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shards=st.integers(1, 5), rows_per_shard=st.integers(4, 40), seed=st.integers(0, 10_000))
def test_layout_and_ground_truth_hold_for_any_size(shards: int, rows_per_shard: int, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        info = synth.make_dataset(root, shards=shards, rows_per_shard=rows_per_shard, seed=seed, scale=0.1)
        df = _read(root)
        assert df.height == info.n_rows == shards * rows_per_shard
        mixed = shards // 2
        for i, path in enumerate(info.shards):
            assert pq.ParquetFile(path).metadata.num_row_groups == 1
            labels = df.filter(pl.col("shard") == f"data/{path.name}")["label"].to_list()
            if i < mixed:
                assert set(labels) == {1}
            elif i == mixed:
                n_gen = sum(labels)
                assert labels == [1] * n_gen + [0] * (rows_per_shard - n_gen) and 1 <= n_gen < rows_per_shard
            else:
                assert set(labels) == {0}
        truth = synth.load_ground_truth(root) if info.ground_truth else pl.DataFrame()
        pairs = (
            {frozenset({(a, b), (c, d)}) for a, b, c, d in truth[:, :4].iter_rows()}
            if truth.height
            else set()
        )
        hashes = {(r["shard"], r["row"]): _decode(r["image_data"]).phash for r in df.iter_rows(named=True)}
        keys = list(hashes)
        close = {
            frozenset({k, m})
            for n, k in enumerate(keys)
            for m in keys[n + 1 :]
            if hashes[k] - hashes[m] <= 12
        }
        assert close == pairs


# --- scale replica --------------------------------------------------------------------------------------


def test_replica_source_shards() -> None:
    assert synth.replica_source_shards(186) == list(range(186))
    assert synth.replica_source_shards(3) == [0, 93, 94]
    assert synth.replica_source_shards(1) == [93]
    twelve = synth.replica_source_shards(12)
    assert twelve[6] == 93 and any(66 <= s < 93 for s in twelve[:6]) and twelve[-1] > 170
    with pytest.raises(UsageError):
        synth.replica_source_shards(187)


def test_scale_replica_three_shards(tmp_path: Path) -> None:
    info = synth.make_scale_replica(tmp_path, shards=3)
    assert (info.n_rows, info.n_generated, info.n_real) == (2993 + 2992 + 2992, 2993 + 160, 2832 + 2992)
    expected = [(2993, 2993, {"LatDiff"}), (2992, 160, {"GAN", "Real"}), (2992, 0, {"Real"})]
    for path, (n, n_gen, archs) in zip(info.shards, expected, strict=True):
        pf = pq.ParquetFile(path)
        assert pf.metadata.num_row_groups == 1 and pf.metadata.num_rows == n
        assert pf.schema_arrow.equals(SOURCE_SCHEMA, check_metadata=False)
        df = pl.read_parquet(path)
        assert int(df["label"].sum()) == n_gen
        assert set(df["architecture"]) == archs
        assert df["label"].to_list() == [1] * n_gen + [0] * (n - n_gen)  # generated rows first
    df = _read(tmp_path)
    assert df["image_name"].n_unique() == df.height
    gen, real = df.filter(pl.col("label") == 1), df.filter(pl.col("label") == 0)
    assert (
        gen["model_name"].n_unique() > 300 and real["model_name"].to_list() == real["real_source"].to_list()
    )
    assert set(real["subset"]) == {"Real"} and set(gen["real_source"]) == {"LAION"}
    assert set(df.filter(pl.col("architecture") == "LatDiff")["subset"]) == {"Systematic"}
    assert set(df.filter(pl.col("architecture") == "GAN")["subset"]) == {"Manual"}
    assert set(real["real_source"]) == REAL_SOURCES
    assert (gen["resolution"] == "[512, 512]").mean() > 0.4
    assert (real.filter(pl.col("real_source") == "FFHQ")["resolution"] == "[1024, 1024]").all()
    for r in df.sample(200, seed=1).iter_rows(named=True):
        d = _decode(r["image_data"])
        assert (d.format, d.mode, d.size) == (r["format"], r["mode"], (16, 16))
    assert synth.make_scale_replica(tmp_path / "again", shards=3).n_rows == info.n_rows
    assert (
        _digests(tmp_path / "again")["data/HFCF_small_1.parquet"]
        == _digests(tmp_path)["data/HFCF_small_1.parquet"]
    )


@pytest.mark.slow
def test_scale_replica_full(tmp_path: Path) -> None:
    info = synth.make_scale_replica(tmp_path)
    assert (info.n_rows, info.n_generated, info.n_real) == (556_541, 278_445, 278_096)
    assert len(info.shards) == 186
    meta = [pq.ParquetFile(p).metadata for p in info.shards]
    assert all(m.num_row_groups == 1 for m in meta)
    assert [m.num_rows for m in meta] == [2993] * 29 + [2992] * 157
    df = (
        pl.scan_parquet([str(p) for p in info.shards], include_file_paths="path").drop("image_data").collect()
    )
    df = df.with_columns(i=pl.col("path").str.extract(r"_(\d+)\.parquet$").cast(pl.Int64))
    per = (
        df.group_by("i")
        .agg(gen=pl.col("label").sum(), archs=pl.col("architecture").unique(), n=pl.len())
        .sort("i")
    )
    assert per.filter(pl.col("i") <= 92)["gen"].to_list() == per.filter(pl.col("i") <= 92)["n"].to_list()
    assert per.filter(pl.col("i") == 93)["gen"].item() == 160
    assert (per.filter(pl.col("i") >= 94)["gen"] == 0).all()
    assert all(set(a) == {"LatDiff"} for a in per.filter(pl.col("i") < 66)["archs"])
    mixed = set().union(*per.filter((pl.col("i") >= 66) & (pl.col("i") <= 92))["archs"].to_list())
    assert mixed == GENERATED_ARCHS
    assert set(per.filter(pl.col("i") == 93)["archs"].item()) == {"GAN", "Real"}
    assert df.filter(pl.col("label") == 1)["model_name"].n_unique() >= 1700


# --- large shard ----------------------------------------------------------------------------------------


def _check_large(path: Path, target: int) -> None:
    pf = pq.ParquetFile(path)
    assert path.stat().st_size >= target
    assert pf.metadata.num_row_groups == 1
    assert pf.schema_arrow.equals(SOURCE_SCHEMA, check_metadata=False)
    first = (
        pf.read_row_group(0, columns=["image_data", "resolution", "format", "mode"]).slice(0, 3).to_pylist()
    )
    for r in first:
        d = _decode(r["image_data"])
        assert (d.format, d.mode, list(d.size)) == (r["format"], r["mode"], r["resolution"])
        assert len(r["image_data"]) > 800_000


def test_large_shard_small_target(tmp_path: Path) -> None:
    path = synth.make_large_shard(tmp_path, target_bytes=30_000_000)
    assert path == tmp_path / "data" / "HFCF_small_0.parquet"
    _check_large(path, 30_000_000)
    assert pq.ParquetFile(path).metadata.num_rows < 40


@pytest.mark.slow
def test_large_shard_full_size_with_bounded_memory(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from cfx.synth import make_large_shard; "
        "make_large_shard(Path(sys.argv[1])); from tests.rss import vmhwm_kb; print(vmhwm_kb())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path.cwd(),
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    peak_kb = int(out.stdout.split()[-1])
    path = tmp_path / "data" / "HFCF_small_0.parquet"
    _check_large(path, 1_100_000_000)
    assert peak_kb * 1024 < path.stat().st_size, "the generator must not hold the whole shard in memory"


# --- CLI ------------------------------------------------------------------------------------------------


def _synth_cli() -> ModuleType:
    if _CLI_IMPORT_ERROR:
        pytest.skip(f"cfx.cli cannot be imported here: {_CLI_IMPORT_ERROR}")
    return importlib.import_module("cfx.cli.synth")


@pytest.fixture
def cli() -> typer.Typer:
    synth_cli = _synth_cli()
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)

    @app.callback()
    def _root() -> None:
        """Test root."""

    synth_cli.register(app)
    return app


def test_cli_writes_a_small_set_and_prints_one_line(cli: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["synth", str(tmp_path), "--shards", "2", "--rows-per-shard", "10", "--scale", "0.1"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Wrote 2 shards to ") and "20 rows" in lines[0]
    assert len(list((tmp_path / "data").glob("*.parquet"))) == 2


def test_cli_refuses_to_overwrite_without_flag(cli: typer.Typer, tmp_path: Path) -> None:
    args = ["synth", str(tmp_path), "--shards", "1", "--rows-per-shard", "4", "--scale", "0.1"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 7
    assert "Error: " in result.stderr and "--overwrite" in result.stderr
    result = CliRunner().invoke(cli, [*args, "--overwrite", "--json", "--no-duplicates"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["mode"] == "small" and summary["n_rows"] == 4 and summary["ground_truth"] is None


def test_cli_scale_and_large_modes(cli: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["synth", str(tmp_path / "r"), "--mode", "scale", "--shards", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_rows"] == 2992
    result = CliRunner().invoke(
        cli, ["synth", str(tmp_path / "l"), "--mode", "large", "--large-bytes", "3MB"]
    )
    assert result.exit_code == 0, result.output
    assert "one row group" in result.stdout
    result = CliRunner().invoke(
        cli, ["synth", str(tmp_path / "s"), "--mode", "scale", "--shards", "1", "--resolution-type", "string"]
    )
    assert result.exit_code == 0, result.output
    assert (
        pq.read_schema(tmp_path / "s" / "data" / "HFCF_small_0.parquet").field("resolution").type
        == pa.string()
    )
    assert (tmp_path / "l" / "data" / "HFCF_small_0.parquet").stat().st_size >= 3_000_000


@pytest.mark.parametrize(
    "extra",
    [
        ["--mode", "scale", "--scale", "0.5"],
        ["--large-bytes", "1GB"],
        ["--mode", "large", "--large-bytes", "lots"],
    ],
)
def test_cli_usage_errors(cli: typer.Typer, tmp_path: Path, extra: list[str]) -> None:
    result = CliRunner().invoke(cli, ["synth", str(tmp_path), *extra])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ")


def test_cli_help_has_an_example(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["synth", "--help"])
    assert result.exit_code == 0
    assert "cfx synth ./cf-demo" in result.stdout and "--overwrite" in result.stdout


def test_parse_size() -> None:
    from cfx.units import parse_size

    assert parse_size("1.1GB") == 1_100_000_000
    assert parse_size("30MB") == 30_000_000
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("1234") == 1234
    with pytest.raises(UsageError):
        parse_size("1.1XB")
