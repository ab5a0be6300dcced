"""cfx subset: filters, the writer (schema, bytes, row groups, shards, order), card, atomicity, bad input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cfx.card import read_front_matter
from cfx.errors import BadShardError, EmptySelectionError, InputError, OutputError, UsageError
from cfx.load import load_manifest
from cfx.manifest import Manifest, read_manifest
from cfx.progress import NullReporter, NullTask
from cfx.schema import SOURCE_SCHEMA
from cfx.select import Selection, apply_selection
from cfx.subset import plan_subset, write_subset
from cfx.units import parse_size
from tests.rss import cfx_peak_rss_mb
from tests.shards import png, write_shard


@dataclass
class _Res:
    returncode: int
    out: str
    stderr: str


def cli(*args: str) -> _Res:
    """`cfx ARGS` in-process (fast; exit code, stdout and stderr as the user sees them)."""
    from typer.testing import CliRunner

    from cfx.cli import app

    r = CliRunner().invoke(app, list(args), prog_name="cfx")
    return _Res(r.exit_code, r.stdout, r.stderr)


ROOT = Path(__file__).resolve().parents[1]
GENERATORS = {
    "stabilityai/stable-diffusion-2": "LatDiff",
    "stabilityai/sdxl-turbo": "LatDiff",
    "runwayml/stable-diffusion-v1-5": "LatDiff",
    "openai/dall-e-3": "Other",
    "gan/stylegan2": "GAN",
    "gan/biggan": "GAN",
    "google/imagen": "PixDiff",
}
LICENSES = {
    "stabilityai/stable-diffusion-2": "openrail++",
    "stabilityai/sdxl-turbo": "other",
    "runwayml/stable-diffusion-v1-5": "creativeml-openrail-m",
    "openai/dall-e-3": "proprietary",
    "gan/stylegan2": "nvidia-source-code-license-nc",
    "gan/biggan": "mit",
    "google/imagen": "proprietary",
}


def _jpeg(seed: int, size: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _record(i: int, label: int, gen: str = "", source: str = "") -> dict[str, Any]:
    data = png(i, 24) if label or source == "FFHQ" else _jpeg(i, 20 + i % 7)
    size = Image.open(io.BytesIO(data)).size
    is_png = data.startswith(b"\x89PNG")
    return dict(
        image_name=f"{i:08d}.{'png' if is_png else 'jpg'}",
        format="PNG" if is_png else "JPEG",
        resolution=f"[{size[0]}, {size[1]}]",
        mode="RGB",
        image_data=data,
        model_name=gen,
        nsfw_flag=i % 7 == 3,
        prompt=f"prompt {i}" if label else "",
        real_source=source,
        subset="systematic",
        split="train",
        label=label,
        architecture=GENERATORS[gen] if label else "Real",
    )


def make_mixed(root: Path) -> Path:
    """4 single-row-group shards: generated only, generated only, real + GAN, real only; a source card."""
    gens = list(GENERATORS)
    i = 0
    for shard in range(4):
        recs = []
        for k in range(30):
            if shard < 2 or (shard == 2 and k >= 20):
                gen = gens[(k * 3 + shard) % 5] if shard < 2 else gens[4 + k % 3]
                recs.append(_record(i, 1, gen))
            else:
                recs.append(_record(i, 0, source=["COCO", "FFHQ", "CelebA"][k % 3]))
            i += 1
        write_shard(root / "data" / f"HFCF_small_{shard}.parquet", recs)
    (root / "README.md").write_text("---\nlicense: cc-by-nc-sa-4.0\npretty_name: mixed\n---\n# mixed\n")
    return root


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mixed(tmp_path_factory.mktemp("mixed"))


@pytest.fixture
def manifest(mixed: Path) -> Manifest:
    return load_manifest(str(mixed))


def _source_hashes(root: Path) -> dict[tuple[str, int], str]:
    out = {}
    for p in sorted((root / "data").glob("*.parquet")):
        for row, data in enumerate(pq.read_table(p, columns=["image_data"]).column(0).to_pylist()):
            out[(f"data/{p.name}", row)] = hashlib.sha256(data).hexdigest()
    return out


def _output_rows(out: Path) -> list[tuple[str, int, str]]:
    """(source_shard, source_row, sha256 of the written bytes) in output order, via DIR/manifest.parquet."""
    m = read_manifest(out / "manifest.parquet")
    got = []
    for shard, row, src_shard, src_row in m.df.select(
        "shard", "row", "source_shard", "source_row"
    ).iter_rows():
        got.append((shard, row, src_shard, src_row))
    tables = {s: pq.read_table(out / s, columns=["image_data"]) for s in m.df.get_column("shard").unique()}
    return [
        (src_shard, src_row, hashlib.sha256(tables[shard].column(0)[row].as_py()).hexdigest())
        for shard, row, src_shard, src_row in got
    ]


# --- the writer ------------------------------------------------------------------------------------
def test_subset_round_trips_bytes_and_schema(mixed: Path, manifest: Manifest, tmp_path: Path) -> None:
    out = tmp_path / "all"
    result = write_subset(manifest, out)
    assert result.rows == len(manifest) == 120
    files = sorted((out / "data").glob("*.parquet"))
    assert [f.name for f in files] == ["train-00000-of-00001.parquet"]
    src_schema = pq.read_schema(mixed / "data" / "HFCF_small_0.parquet")
    pf = pq.ParquetFile(files[0])
    assert pf.schema_arrow.equals(src_schema, check_metadata=False)
    assert pf.schema_arrow.names == SOURCE_SCHEMA.names
    assert [f.type for f in pf.schema_arrow] == [f.type for f in src_schema]
    # row groups of <= 100 rows, page index written
    md = pf.metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [100, 20]
    assert all(md.row_group(0).column(c).has_offset_index for c in range(md.num_columns))
    # bytes identical, in source order
    src = _source_hashes(mixed)
    got = _output_rows(out)
    assert [(s, r) for s, r, _ in got] == sorted(src, key=lambda k: (int(k[0].split("_")[-1][:-8]), k[1]))
    assert all(src[(s, r)] == h for s, r, h in got)
    # metadata columns equal the source rows'
    source_table = pa.concat_tables(
        pq.read_table(mixed / "data" / f"HFCF_small_{i}.parquet") for i in range(4)
    ).drop_columns(["image_data"])
    assert pq.read_table(files[0]).drop_columns(["image_data"]).equals(source_table)


def test_with_provenance_columns(manifest: Manifest, tmp_path: Path) -> None:
    sel = apply_selection(manifest, Selection(generators=["gan/*"], labels=["generated"])).manifest
    write_subset(sel, tmp_path / "p", with_provenance=True)
    table = pq.read_table(tmp_path / "p" / "data")
    assert table.schema.names == [*SOURCE_SCHEMA.names, "source_shard", "source_row"]
    pairs = set(
        zip(table.column("source_shard").to_pylist(), table.column("source_row").to_pylist(), strict=True)
    )
    assert pairs == set(sel.df.select("shard", "row").rows())
    card = (tmp_path / "p" / "README.md").read_text()
    assert "(plus `source_shard` and `source_row`: where each row was copied from)" in card
    assert read_front_matter(card)["dataset_info"]["features"][-2:] == [
        {"name": "source_shard", "dtype": "string"},
        {"name": "source_row", "dtype": "int64"},
    ]


def test_shard_rollover_and_row_groups(manifest: Manifest, tmp_path: Path) -> None:
    out = tmp_path / "roll"
    result = write_subset(manifest, out, row_group_rows=7, max_shard_bytes=60_000)
    names = [f.name for f in result.files]
    n = len(names)
    assert n > 2
    assert names == [f"data/train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    for f in result.files:
        path = out / f.name
        md = pq.ParquetFile(path).metadata
        sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        assert all(s <= 7 for s in sizes) and sum(sizes) == f.rows
        # a file passes the target only when its first row group alone is bigger
        assert path.stat().st_size <= 60_000 or md.num_row_groups == 1
        assert f.bytes == path.stat().st_size
    assert sum(f.rows for f in result.files) == 120
    assert _output_rows(out) == _output_rows_via_write(manifest, tmp_path / "one")


def _output_rows_via_write(manifest: Manifest, out: Path) -> list[tuple[str, int, str]]:
    write_subset(manifest, out)
    return _output_rows(out)


def test_order_shuffle_is_seeded_permutation(manifest: Manifest, tmp_path: Path) -> None:
    base = _output_rows_via_write(manifest, tmp_path / "src")
    a = write_subset(manifest, tmp_path / "a", order="shuffle", seed=5, row_group_rows=10)
    b = write_subset(manifest, tmp_path / "b", order="shuffle", seed=5, row_group_rows=10)
    c = write_subset(manifest, tmp_path / "c", order="shuffle", seed=6, row_group_rows=10)
    ra, rb, rc = (_output_rows(r.out) for r in (a, b, c))
    assert ra == rb
    assert ra != rc and ra != base
    assert sorted(ra) == sorted(base) == sorted(rc)
    # the written order is the manifest's order, which is the plan's permutation
    assert [(s, r) for s, r, _ in ra] == plan_subset(manifest, order="shuffle", seed=5).manifest.df.select(
        "shard", "row"
    ).rows()
    assert not list((tmp_path / "a").rglob("*.arrow"))  # the spill is gone


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    picks=st.sets(st.integers(0, 119), min_size=1, max_size=40),
    shuffle=st.booleans(),
    seed=st.integers(0, 99),
)
def test_subset_round_trips_random_selections(
    mixed: Path, tmp_path_factory: pytest.TempPathFactory, picks: set[int], shuffle: bool, seed: int
) -> None:
    m = load_manifest(str(mixed))
    sel = m.with_df(m.df[sorted(picks)])
    out = tmp_path_factory.mktemp("prop") / "out"
    write_subset(sel, out, order="shuffle" if shuffle else "source", seed=seed, row_group_rows=9)
    src = _source_hashes(mixed)
    got = _output_rows(out)
    assert sorted((s, r) for s, r, _ in got) == sorted(sel.df.select("shard", "row").rows())
    assert all(src[(s, r)] == h for s, r, h in got)


def test_duplicates_written_once(manifest: Manifest, tmp_path: Path) -> None:
    doubled = manifest.with_df(pl.concat([manifest.df.head(5), manifest.df.head(5)]))
    result = write_subset(doubled, tmp_path / "d")
    assert result.rows == 5 and result.plan.duplicates == 5


# --- selection -------------------------------------------------------------------------------------
def test_selection_per_side_semantics(manifest: Manifest) -> None:
    df = manifest.df
    real = df.filter(pl.col("label") == 0).height
    r = apply_selection(manifest, Selection(generators=["stabilityai/*"]))
    got = r.manifest.df
    assert got.filter(pl.col("label") == 0).height == real  # reals untouched
    gens = set(got.filter(pl.col("label") == 1).get_column("model_name"))
    assert gens == {"stabilityai/stable-diffusion-2", "stabilityai/sdxl-turbo"}
    assert r.matched_generators == sorted(gens)
    only = apply_selection(manifest, Selection(generators=["stabilityai/*"], labels=["generated"])).manifest
    assert set(only.df.get_column("label")) == {1}
    coco = apply_selection(manifest, Selection(real_sources=["coco"], labels=["real"])).manifest.df
    assert set(coco.get_column("real_source")) == {"COCO"}
    gan = apply_selection(manifest, Selection(architectures=["GAN"], labels=["generated"])).manifest.df
    assert set(gan.get_column("architecture")) == {"GAN"}
    nsfw = apply_selection(manifest, Selection(exclude_nsfw=True)).manifest.df
    assert not nsfw.get_column("nsfw_flag").any() and nsfw.height == df.height - df["nsfw_flag"].sum()


def test_generators_from_file_and_unknown_names(manifest: Manifest, tmp_path: Path) -> None:
    f = tmp_path / "gens.txt"
    f.write_text("# my list\ngan/biggan\n\nopenai/dall-e-3  # comment\n")
    got = apply_selection(manifest, Selection(generators=[f"@{f}"], labels=["generated"])).manifest.df
    assert set(got.get_column("model_name")) == {"gan/biggan", "openai/dall-e-3"}
    with pytest.raises(UsageError) as err:
        apply_selection(manifest, Selection(generators=["stabilityai/stable-diffusion-3"]))
    assert "not a known generator" in err.value.message
    assert "closest known: stabilityai/stable-diffusion-2" in err.value.hint
    assert "--allow-missing" in err.value.hint
    with pytest.raises(UsageError):
        apply_selection(manifest, Selection(generators=["midjourney/*"]))
    r = apply_selection(
        manifest, Selection(generators=["gan/biggan", "nope/x"], labels=["generated"], allow_missing=True)
    )
    assert r.missing_generators == ["nope/x"] and r.manifest.df.height > 0
    with pytest.raises(UsageError, match="no such file"):
        apply_selection(manifest, Selection(generators=[f"@{tmp_path / 'missing.txt'}"]))


def test_max_per_generator_is_seeded(manifest: Manifest) -> None:
    sel = Selection(max_per_generator=2, seed=4)
    a = apply_selection(manifest, sel).manifest.df
    b = apply_selection(manifest, sel).manifest.df
    c = apply_selection(manifest, Selection(max_per_generator=2, seed=5)).manifest.df
    assert a.equals(b) and not a.equals(c)
    counts = a.filter(pl.col("label") == 1).group_by("model_name").len()
    assert counts.get_column("len").max() == 2 and counts.height == len(GENERATORS)
    assert a.filter(pl.col("label") == 0).height == manifest.df.filter(pl.col("label") == 0).height


def test_empty_selection_names_the_filter(manifest: Manifest) -> None:
    gen = manifest.df.filter(pl.col("label") == 1)
    gan = gen.filter(pl.col("architecture") == "GAN").height
    assert 0 < gan < gen.height
    with pytest.raises(EmptySelectionError) as err:
        apply_selection(
            manifest, Selection(labels=["generated"], architectures=["GAN"], where="width > 9999")
        )
    msg = err.value.message
    assert msg.startswith(
        "the selection is empty (--where width > 9999 left no rows): 120 rows in the source"
    )
    assert f"--labels generated: 120 → {gen.height}" in msg
    assert f"--architectures GAN: {gen.height} → {gan}" in msg
    assert f"--where width > 9999: {gan} → 0" in msg


def test_license_filters(manifest: Manifest, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        apply_selection(manifest, Selection(commercial_only=True))
    assert "cfx licenses SOURCE -o manifest.parquet" in err.value.hint
    # as `cfx licenses` annotates: normalised ids, "unknown" where no table knows the row
    lic = pl.col("model_name").replace_strict(LICENSES, default="unknown", return_dtype=pl.String)
    m = manifest.with_df(manifest.df.with_columns(lic.alias("license")))
    keep = apply_selection(m, Selection(licenses=["*openrail*"])).manifest.df
    assert set(keep.get_column("license")) == {"openrail++", "creativeml-openrail-m"}
    drop = apply_selection(m, Selection(exclude_licenses=["*-nc", "proprietary"])).manifest.df
    assert not set(drop.get_column("license")) & {"nvidia-source-code-license-nc", "proprietary"}
    assert drop.filter(pl.col("label") == 0).height == 50  # "unknown" does not match those exclusions
    r = apply_selection(m, Selection(commercial_only=True))
    com = r.manifest.df
    assert set(com.get_column("license")) == {"openrail++", "creativeml-openrail-m", "mit"}  # not unknown
    assert r.steps[-1].name == "--commercial-only" and r.steps[-1].after == com.height
    # the card inherits the source card's licence and the selected generators' licences
    out = write_subset(
        apply_selection(m, Selection(generators=["gan/*"], labels=["generated"])).manifest, tmp_path / "l"
    )
    meta = read_front_matter((out.out / "README.md").read_text())
    assert meta["license"] == ["cc-by-nc-sa-4.0", "mit", "nvidia-source-code-license-nc"]
    assert "license" in read_manifest(out.out / "manifest.parquet").df.columns


# --- card, manifest, compatibility ------------------------------------------------------------------
def test_card_and_manifest(mixed: Path, manifest: Manifest, tmp_path: Path) -> None:
    sel = apply_selection(manifest, Selection(generators=["gan/*"], real_sources=["FFHQ"])).manifest
    out = tmp_path / "card"
    write_subset(sel, out, command="cfx subset mixed --out card --generators 'gan/*'", selection="gens")
    text = (out / "README.md").read_text()
    meta = read_front_matter(text)
    assert meta["license"] == "cc-by-nc-sa-4.0"
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}
    ]
    assert [f["name"] for f in meta["dataset_info"]["features"]] == SOURCE_SCHEMA.names
    assert meta["dataset_info"]["features"][4] == {"name": "image_data", "dtype": "binary"}
    written = pq.read_metadata(out / "data" / "train-00000-of-00001.parquet")
    data_bytes = sum(written.row_group(i).total_byte_size for i in range(written.num_row_groups))
    assert meta["dataset_info"]["splits"] == [
        {"name": "train", "num_bytes": data_bytes, "num_examples": sel.df.height}
    ]
    assert meta["dataset_info"]["dataset_size"] == data_bytes
    assert "cfx subset mixed --out card --generators 'gan/*'" in text
    assert f"local folder `{mixed}`" in text and "cfx 0.1.0" in text
    n_ffhq = sel.df.filter(pl.col("real_source") == "FFHQ").height
    assert f"| FFHQ | {n_ffhq:,} | {n_ffhq:,} | 0 |" in text
    assert "| gan/stylegan2 |" in text and "| openai/dall-e-3" not in text
    # the Hub's own card parser agrees
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "cc-by-nc-sa-4.0"
    # manifest.parquet points at the new shards; a folder index ignores it
    m = read_manifest(out / "manifest.parquet")
    assert m.root == str(out.resolve())
    assert set(m.shards) == {"data/train-00000-of-00001.parquet"}
    assert m.df.get_column("num_bytes").null_count() == 0
    again = load_manifest(str(out))
    assert again.df.height == m.df.height and set(again.shards) == set(m.shards)
    assert again.df.select("image_name", "model_name").equals(m.df.select("image_name", "model_name"))
    # chaining: a subset of the subset, from its manifest
    sub2 = write_subset(
        apply_selection(m, Selection(labels=["real"])).manifest, tmp_path / "chain", with_provenance=True
    )
    assert sub2.rows == n_ffhq
    assert set(pq.read_table(sub2.out / "data").column("source_shard").to_pylist()) == set(m.shards)


def test_datasets_and_pyarrow_loop_read_the_output(
    manifest: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "hf-out"
    write_subset(manifest, out, max_shard_bytes=150_000)
    import datasets

    ds = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    assert ds.num_rows == len(manifest)
    assert list(ds.features) == SOURCE_SCHEMA.names
    assert ds.features["image_data"] == datasets.Value("binary")
    assert ds.features["label"] == datasets.Value("int64")
    # the card's configs work too: load the folder itself
    ds2 = datasets.load_dataset(str(out), split="train")
    assert ds2.num_rows == len(manifest) and list(ds2.features) == SOURCE_SCHEMA.names
    # the source card's loop: ParquetFile, row groups, PIL
    n = 0
    for path in sorted((out / "data").glob("*.parquet")):
        pf = pq.ParquetFile(path)
        for i in range(pf.num_row_groups):
            for row in pf.read_row_group(i).to_pylist():
                img = Image.open(io.BytesIO(row["image_data"]))
                img.load()
                assert row["format"] == img.format and f"[{img.size[0]}, {img.size[1]}]" == row["resolution"]
                n += 1
    assert n == len(manifest)


# --- CLI, atomicity, bad input ---------------------------------------------------------------------
def test_cli_subset_and_dry_run(cfx, mixed: Path, manifest: Manifest, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cli"
    gan = manifest.df.filter(pl.col("model_name").str.starts_with("gan/"))
    want = dict(gan.group_by("model_name").len().iter_rows())
    r = cfx(
        "subset",
        str(mixed),
        "--out",
        str(out),
        "--generators",
        "gan/*",
        "--labels",
        "generated",
        "--dry-run",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.out)
    assert plan["rows"] == gan.height and plan["by_label"] == {"generated": gan.height}
    assert plan["by_generator"] == want
    shards = sorted(set(gan.get_column("shard")))
    assert [s["shard"] for s in plan["source_shards"]] == shards
    assert [s["rows"] for s in plan["source_shards"]] == [
        gan.filter(pl.col("shard") == s).height for s in shards
    ]
    assert not out.exists() and not list(tmp_path.glob("cli*"))
    r = cli("subset", str(mixed), "--out", str(out), "-g", "gan/*", "--labels", "generated", "--dry-run")
    assert f"Would write {gan.height} rows" in r.out and shards[0] in r.out and not out.exists()
    r = cfx("subset", str(mixed), "--out", str(out), "-g", "gan/*", "--labels", "generated", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.out)["rows"] == gan.height
    card = (out / "README.md").read_text()
    assert f"cfx subset {mixed} --out {out} -g 'gan/*' --labels generated --json" in card
    # exists -> exit 7; --overwrite replaces it
    r = cli("subset", str(mixed), "--out", str(out), "--labels", "real")
    assert r.returncode == 7 and "already exists" in r.stderr and "--overwrite" in r.stderr
    r = cli("subset", str(mixed), "--out", str(out), "--labels", "real", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert pq.read_table(out / "data", columns=["label"]).column(0).to_pylist() == [0] * 50
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("cli")] == ["cli"]


def test_cli_pipeline_from_slice(cfx, mixed: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sliced = cfx("slice", str(mixed), "--shards", "3", "--rows", "[:5]")
    r = cfx("subset", "-", "--out", str(tmp_path / "piped"), input=sliced.stdout)
    assert r.returncode == 0, r.stderr
    m = read_manifest(tmp_path / "piped" / "manifest.parquet")
    assert m.df.select("source_shard", "source_row").rows() == [
        ("data/HFCF_small_3.parquet", i) for i in range(5)
    ]
    assert any(h.startswith("slice ") for h in m.history)


def test_cli_errors(mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "e"
    r = cli("subset", str(mixed), "--out", str(out), "--generators", "stabilityai/sdxl")
    assert r.returncode == 2 and "closest known: stabilityai/sdxl-turbo" in r.stderr
    r = cli("subset", str(mixed), "--out", str(out), "--generators", "nope", "--allow-missing")
    assert r.returncode == 0 and "Warning: --generators 'nope' matches no generator" in r.stderr
    shutil.rmtree(out)
    r = cli(
        "subset",
        str(mixed),
        "--out",
        str(out),
        "--labels",
        "generated",
        "--real-sources",
        "COCO",
        "--where",
        "width > 5000",
    )
    assert r.returncode == 5 and "the selection is empty (--where width > 5000 left no rows)" in r.stderr
    assert not out.exists()
    r = cli("subset", str(mixed), "--out", str(out), "--where", "width >> 3")
    assert r.returncode == 2 and "--where" in r.stderr and not out.exists()
    r = cli("subset", str(mixed), "--out", str(mixed / "inside"))
    assert r.returncode == 2 and "inside the input folder" in r.stderr and not (mixed / "inside").exists()
    r = cli("subset", str(mixed), "--out", str(mixed.parent), "--overwrite")
    assert r.returncode == 2 and "contains the input" in r.stderr
    r = cli("subset", str(mixed), "--out", str(out), "--max-shard-size", "lots")
    assert r.returncode == 2 and "--max-shard-size 'lots' is not a size" in r.stderr
    assert not list(tmp_path.glob("e*"))


def test_parse_size() -> None:
    assert parse_size("500MB") == 500_000_000
    assert parse_size("1.5 GB") == 1_500_000_000
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("123") == 123
    assert parse_size("64k") == 64_000
    for bad in ("1.1XB", "", "-5MB", "0"):
        with pytest.raises(UsageError):
            parse_size(bad, "--max-shard-size")


def test_human_bytes() -> None:
    from cfx.units import human_bytes

    assert [human_bytes(n) for n in (None, 999, 1000, 1_234_567, 2_500_000_000_000_000)] == [
        "unknown",
        "999 B",
        "1.0 KB",
        "1.2 MB",
        "2,500.0 TB",
    ]


def _copy(mixed: Path, dst: Path) -> Path:
    shutil.copytree(mixed, dst)
    return dst


def test_moved_and_changed_shards(mixed: Path, tmp_path: Path) -> None:
    src = _copy(mixed, tmp_path / "src")
    m = load_manifest(str(src))
    m.write(tmp_path / "m.parquet")
    moved = tmp_path / "moved"
    src.rename(moved)
    with pytest.raises(InputError) as err:
        write_subset(read_manifest(tmp_path / "m.parquet"), tmp_path / "o1")
    assert "shard data/HFCF_small_0.parquet is missing" in err.value.message
    moved.rename(src)
    shard = src / "data" / "HFCF_small_1.parquet"
    table = pq.read_table(shard)
    pq.write_table(table.slice(0, 20), shard)
    with pytest.raises(InputError) as err:
        write_subset(read_manifest(tmp_path / "m.parquet"), tmp_path / "o2")
    assert "shard data/HFCF_small_1.parquet changed since the manifest was made" in err.value.message
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    assert not list(tmp_path.glob("o*.tmp-*"))


class _TruncateOnFirstRowGroup(NullReporter):
    """A Reporter that cuts the source shard in half once the first row group is written."""

    def __init__(self, shard: Path) -> None:
        super().__init__()
        self.shard = shard
        self.done = False

    def task(self, description: str, total: int | None = None, unit: str = "") -> Any:
        outer = self

        class _Task(NullTask):
            def advance(self, n: int = 1) -> None:
                if not outer.done:
                    os.truncate(outer.shard, outer.shard.stat().st_size // 2)
                    outer.done = True

        return _Task()


def test_shard_truncated_mid_copy(tmp_path: Path) -> None:
    """The shard is cut while cfx is reading it (e.g. a re-download started): named, nothing left behind."""
    big = _large(tmp_path / "big", 60_000_000)  # more than the reader runs ahead
    m = load_manifest(str(big))
    reporter = _TruncateOnFirstRowGroup(big / "data" / "HFCF_small_0.parquet")
    with pytest.raises(BadShardError) as err:
        write_subset(m, tmp_path / "out", row_group_rows=5, reporter=reporter)
    assert reporter.done
    assert err.value.shard == "data/HFCF_small_0.parquet" and "truncated" in err.value.hint
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


def test_output_errors(manifest: Manifest, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError) as err:
        write_subset(manifest, blocker / "sub" / "out")  # a regular file in the path: ENOTDIR
    assert "cannot create" in err.value.message
    with pytest.raises(OutputError, match="exists and is not a folder"):
        write_subset(manifest, blocker)


def test_disk_space_preflight(manifest: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage

    def small_disk(path: Any) -> Any:
        u = real(path)
        return type(u)(u.total, u.total - 1000, 1000)

    monkeypatch.setattr(shutil, "disk_usage", small_disk)
    with pytest.raises(OutputError) as err:
        write_subset(manifest, tmp_path / "out")
    assert "not enough disk space" in err.value.message and not (tmp_path / "out").exists()


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.argv = ["cfx", *sys.argv[2:]]
from cfx.cli import main
main()
"""


def test_write_failure_mid_copy_is_clean(mixed: Path, tmp_path: Path) -> None:
    """A real failing write (RLIMIT_FSIZE: the OS refuses bytes past 40 kB, like a full disk) -> exit 7, no DIR."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _LIMITED, "40000", "subset", str(mixed), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 7, proc.stderr
    assert "cannot write the subset" in proc.stderr and "File too large" in proc.stderr
    assert not out.exists() and not list(tmp_path.glob("out.tmp-*"))


def test_permission_denied(mixed: Path, tmp_path: Path) -> None:
    """A read-only parent folder: a real EACCES. Root ignores file modes, so cfx then runs without the
    capabilities that let it (setpriv drops CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    cmd = [sys.executable, "-m", "cfx", "subset", str(mixed), "--out", str(locked / "out")]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file modes cannot be enforced")
        drop = "-dac_override,-dac_read_search"
        cmd = [setpriv, "--inh-caps", drop, "--bounding-set", drop, *cmd]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120
        )
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 7, proc.stderr
    assert "Error: cannot write into" in proc.stderr and "Permission denied" in proc.stderr
    assert list(locked.iterdir()) == []


def _large(root: Path, target: int) -> Path:
    """A CF-shaped dataset of one single-row-group shard of ``target`` bytes (~1 MB PNGs)."""
    from cfx.synth import make_large_shard

    make_large_shard(root, target_bytes=target)
    return root


def test_kill_9_leaves_no_partial_dir(tmp_path: Path) -> None:
    big = _large(tmp_path / "big", 80_000_000)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfx", "subset", str(big), "--out", str(out), "--row-group-size", "10"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    tmp = None
    while time.monotonic() < deadline:  # wait until it is writing shard data
        tmps = list(tmp_path.glob("out.tmp-*"))
        if tmps and any(p.stat().st_size > 2_000_000 for p in tmps[0].glob("data/*.parquet")):
            tmp = tmps[0]
            break
        time.sleep(0.01)
    assert tmp is not None, "the writer never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert tmp.exists()  # what a kill leaves: the temp folder beside DIR, never DIR itself
    # the next run removes the dead writer's leftovers and succeeds
    r = subprocess.run(
        [sys.executable, "-m", "cfx", "subset", str(big), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert not tmp.exists() and "left by an interrupted earlier run" in r.stderr
    assert (
        pq.read_metadata(out / "data" / "train-00000-of-00001.parquet").num_rows
        == pq.read_metadata(big / "data" / "HFCF_small_0.parquet").num_rows
    )


def test_memory_does_not_grow_with_the_row_group(tmp_path: Path) -> None:
    """Peak RSS copying a 300 MB single-row-group shard is about that of a 60 MB one, in both orders."""
    small = _large(tmp_path / "small", 60_000_000)
    big = _large(tmp_path / "big", 300_000_000)
    grow = (big / "data" / "HFCF_small_0.parquet").stat().st_size - (
        small / "data" / "HFCF_small_0.parquet"
    ).stat().st_size
    assert grow > 230_000_000
    for order in ("source", "shuffle"):
        peaks = []
        for src in (small, big):
            out = tmp_path / f"out-{src.name}-{order}"
            peaks.append(cfx_peak_rss_mb(["subset", str(src), "--out", str(out), "--order", order], tmp_path))
            assert pq.read_metadata(next((out / "data").glob("*.parquet"))).num_rows > 0
        # reading the row group whole would add its 240 MB; streaming adds allocator noise only
        assert peaks[1] - peaks[0] < 0.6 * grow / 2**20, f"{order}: {peaks[0]:.0f} → {peaks[1]:.0f} MB"
        assert peaks[1] < 600, f"{order}: {peaks[1]:.0f} MB"


@pytest.mark.slow
@pytest.mark.parametrize("order", ["source", "shuffle"])
def test_memory_bounded_on_a_1gb_row_group(tmp_path: Path, order: str) -> None:
    big = _large(tmp_path / "big", 1_100_000_000)
    assert (big / "data" / "HFCF_small_0.parquet").stat().st_size >= 1_000_000_000
    out = tmp_path / "out"
    args = ["subset", str(big), "--out", str(out), "--where", "row % 3 = 0", "--order", order]
    rss = cfx_peak_rss_mb(args, tmp_path)
    assert rss < 1000, f"peak RSS {rss:.0f} MB"
    src = pq.ParquetFile(big / "data" / "HFCF_small_0.parquet")
    want = {}
    for i, batch in enumerate(src.iter_batches(batch_size=16, columns=["image_data"])):
        for j, data in enumerate(batch.column(0).to_pylist()):
            if (i * 16 + j) % 3 == 0:
                want[i * 16 + j] = hashlib.sha256(data).hexdigest()
    got = _output_rows(out)
    assert {r: h for _, r, h in got} == want


def test_demo_steps(mixed: Path, tmp_path: Path) -> None:
    from cfx.demo import STEPS, DemoContext

    ctx = DemoContext(out=tmp_path, reporter=NullReporter())
    m = load_manifest(str(mixed))
    ctx.state["manifest"] = m
    ctx.state["manifest_path"] = tmp_path / "manifest.parquet"
    by_name = {s.__name__: s for s in STEPS}
    step = by_name["_slice"](ctx)
    sample = read_manifest(tmp_path / "sample.parquet")
    assert len(sample) == round(0.2 * len(m)) and "cfx slice" in step.command
    step = by_name["_subset"](ctx)
    out = read_manifest(tmp_path / "subset" / "manifest.parquet")
    reals = (
        m.df.filter(pl.col("label") == 0)
        .group_by("real_source")
        .len()
        .sort(["len", "real_source"], descending=[True, False])
    )
    top_source = reals.get_column("real_source")[0]
    orgs = (
        m.df.filter(pl.col("label") == 1)
        .with_columns(pl.col("model_name").str.split("/").list.first().alias("org"))
        .group_by("org")
        .len()
        .sort(["len", "org"], descending=[True, False])
    )
    top_org = orgs.get_column("org")[0]
    got_real = out.df.filter(pl.col("label") == 0)
    assert set(got_real.get_column("real_source")) == {top_source}
    assert got_real.height == reals.get_column("len")[0]
    gens = out.df.filter(pl.col("label") == 1)
    assert gens.get_column("model_name").str.starts_with(f"{top_org}/").all()
    assert gens.group_by("model_name").len().get_column("len").max() <= 20
    assert step.command in (tmp_path / "subset" / "README.md").read_text()


def test_synth_dataset_round_trip(cf_small: Path, tmp_path: Path) -> None:
    """On the synth CF replica: a generator subset keeps bytes and schema, and the card takes its licence."""
    m = load_manifest(str(cf_small))
    top = m.df.filter(pl.col("label") == 1).get_column("model_name").mode().sort()[0]
    sel = apply_selection(m, Selection(generators=[top], labels=["generated"])).manifest
    result = write_subset(sel, tmp_path / "one")
    assert result.rows == m.df.filter(pl.col("model_name") == top).height
    src = _source_hashes(cf_small)
    got = _output_rows(result.out)
    assert all(src[(s, r)] == h for s, r, h in got) and len(got) == result.rows
    schema = pq.read_schema(result.out / result.files[0].name)
    assert schema.equals(pq.read_schema(cf_small / "data" / "HFCF_small_0.parquet"), check_metadata=False)
    assert read_front_matter((result.out / "README.md").read_text())["license"] == "cc-by-nc-sa-4.0"


@pytest.mark.hub
def test_subset_from_the_hub(local_hub: Any, run_cfx: Any, tmp_path: Path) -> None:
    """hf:// source: only touched shards are streamed, bytes match the Hub's files, the card names repo@commit."""
    from tests.conftest import REPO

    out = tmp_path / "hub-real"
    r = run_cfx("subset", f"hf://datasets/{REPO}", "--out", str(out), "--labels", "real")
    assert r.returncode == 0, r.stderr
    m = read_manifest(out / "manifest.parquet")
    shards = sorted(set(m.df.get_column("source_shard")))
    assert shards == ["data/HFCF_small_4.parquet", "data/HFCF_small_5.parquet"]  # the real-only shards
    for shard in shards:
        want = [
            hashlib.sha256(b).hexdigest()
            for b in pq.read_table(local_hub.file(shard)).column("image_data").to_pylist()
        ]
        got = {r: h for s, r, h in _output_rows(out) if s == shard}
        assert got == dict(enumerate(want))
    card = (out / "README.md").read_text()
    assert read_front_matter(card)["license"] == "cc-by-nc-sa-4.0"
    assert (
        f"Hub dataset [`{REPO}`](https://huggingface.co/datasets/{REPO}) at revision `{local_hub.commit}`"
        in card
    )


def test_cli_licence_options_annotate_first(cf_small: Path, tmp_path: Path) -> None:
    """Licence options on a bare dataset: rows are annotated from data/metadata (as `cfx licenses` does)."""
    from cfx.licenses import is_commercial

    out = tmp_path / "open"
    r = cli("subset", str(cf_small), "--out", str(out), "--commercial-only", "--json")
    assert r.returncode == 0, r.stderr
    m = read_manifest(out / "manifest.parquet")
    lic = m.df.get_column("license")
    assert lic.null_count() == 0 and all(is_commercial(v) for v in lic.unique())
    meta = read_front_matter((out / "README.md").read_text())
    assert meta["license"][0] == "cc-by-nc-sa-4.0" and set(meta["license"][1:]) == set(lic.unique())
    assert json.loads(r.out)["rows"] == m.df.height < load_manifest(str(cf_small)).df.height


def test_no_cdc_writes_the_same_rows(mixed: Path, tmp_path: Path) -> None:
    from cfx.subset import _ShardWriter, supports_cdc

    schema = pq.read_schema(next((mixed / "data").glob("*.parquet")))
    on = _ShardWriter(tmp_path, schema, {}, 10**9)
    off = _ShardWriter(tmp_path, schema, {}, 10**9, cdc=False)
    assert on.kwargs.get("use_content_defined_chunking") is (True if supports_cdc() else None)
    assert "use_content_defined_chunking" not in off.kwargs
    m = load_manifest(str(mixed))
    a = write_subset(m, tmp_path / "a")
    b = write_subset(m, tmp_path / "b", cdc=False)
    ta = pq.ParquetFile(tmp_path / "a" / a.files[0].name).read()
    tb = pq.ParquetFile(tmp_path / "b" / b.files[0].name).read()
    assert a.rows == b.rows and ta.equals(tb)


def test_writer_settings_follow_the_images(tmp_path: Path) -> None:
    """Uncompressed images get large CDC chunks and ~1 MiB pages; the rows are those of pyarrow's defaults."""
    from cfx.subset import CDC_UNCOMPRESSED, _ShardWriter, supports_cdc

    src = _large(tmp_path / "src", 30_000_000)
    schema = pq.read_schema(src / "data" / "HFCF_small_0.parquet")
    raw = _ShardWriter(tmp_path, schema, {"image_data": "none"}, 10**9, row_bytes=1_000_000)
    packed = _ShardWriter(tmp_path, schema, {"image_data": "snappy"}, 10**9, row_bytes=20_000)
    assert raw.kwargs["write_batch_size"] == 1 and packed.kwargs["write_batch_size"] == 52
    assert _ShardWriter(tmp_path, schema, {}, 10**9).kwargs["write_batch_size"] == 1024
    if supports_cdc():
        assert raw.kwargs["use_content_defined_chunking"] == CDC_UNCOMPRESSED
        assert packed.kwargs["use_content_defined_chunking"] is True
    m = load_manifest(str(src))
    new = write_subset(m, tmp_path / "new", row_group_rows=7)
    # the same rows written with pyarrow's page and CDC defaults (the writer before the tuning)
    old_init = _ShardWriter.__init__

    def defaults(self: Any, *args: Any, **kwargs: Any) -> None:
        old_init(self, *args, **kwargs)
        self.kwargs.pop("write_batch_size")
        if "use_content_defined_chunking" in self.kwargs:
            self.kwargs["use_content_defined_chunking"] = True

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_ShardWriter, "__init__", defaults)
        old = write_subset(m, tmp_path / "old", row_group_rows=7)
    want = list(_source_hashes(src).items())
    assert [(s, r, h) for s, r, h in _output_rows(tmp_path / "new")] == [(s, r, h) for (s, r), h in want]
    a = pq.ParquetFile(tmp_path / "new" / new.files[0].name)
    b = pq.ParquetFile(tmp_path / "old" / old.files[0].name)
    assert a.schema_arrow == b.schema_arrow == schema and a.read().equals(b.read())
    assert [a.metadata.row_group(i).num_rows for i in range(a.num_row_groups)][:2] == [7, 7]
