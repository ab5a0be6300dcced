"""cfx export: every layout read back with the real readers (os.walk, datasets, webdataset), hostile names,
extensions from the bytes, atomicity, --dry-run, refusing an existing DIR, --transform (as cfx subset)."""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from cfx.export import ExportOptions, plan_export, write_export
from cfx.formats import extension, sniff_format
from cfx.load import load_manifest
from cfx.manifest import Manifest
from cfx.safenames import RESERVED, is_safe_component, is_windows_device, safe_names
from tests.shards import png, rows, write_shard

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = [
    "stabilityai/stable-diffusion-2",
    "../../../etc/passwd",
    "evil\nname",
    "生成器/モデル",
    "x" * 300,
    "CaseModel",
    "casemodel",
    ".hidden",
    "names.csv",
    "a\\b",
    "",
]


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (seed * 20 % 256, 0, 0)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shard whose generator names are hostile, with a wrong ``format`` column on two rows."""
    root = tmp_path_factory.mktemp("hostile")
    recs = rows(len(HOSTILE), label=1) + rows(3, label=0, start=len(HOSTILE))
    for rec, name in zip(recs, HOSTILE, strict=False):
        rec["model_name"] = name
    recs[0]["format"] = "JPEG"  # PNG bytes, the column says JPEG
    recs[1]["image_data"] = _jpeg(1)  # JPEG bytes, the column says PNG
    recs[-1]["real_source"] = "../COCO"
    write_shard(root / "data" / "HFCF_small_0.parquet", recs)
    return root


def source_bytes(root: Path, manifest: Manifest) -> dict[tuple[str, int], bytes]:
    out = {}
    for shard in manifest.df.get_column("shard").unique().to_list():
        col = pq.read_table(root / shard, columns=["image_data"]).column(0).to_pylist()
        out.update({(shard, i): b for i, b in enumerate(col)})
    return out


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def names_csv(out: Path) -> dict[tuple[str, str], str]:
    """(kind, safe) -> original, read back from names.csv."""
    with open(out / "names.csv", newline="", encoding="utf-8") as f:
        return {(r["kind"], r["safe"]): r["original"] for r in csv.DictReader(f)}


def key_to_row(out: Path, key: str) -> tuple[str, int]:
    """A file stem / tar key back to its (shard, row) through names.csv."""
    prefix, row = key.rsplit("-", 1)
    return names_csv(out)[("shard", prefix)], int(row)


def walk(out: Path) -> list[Path]:
    files = []
    for folder, _, names in os.walk(out):
        files += [Path(folder) / n for n in names]
    return files


def expected_category(row: dict[str, Any], pairs: dict[Any, str] | None = None) -> str:
    if row["label"] == 1:
        return row["model_name"] or ""
    if pairs is not None and row.get("pair_id") in pairs:
        return pairs[row["pair_id"]]
    return row["real_source"] or ""


def check_folder_layout(out: Path, root: Path, manifest: Manifest, fmt: str) -> dict[tuple[str, int], Path]:
    """os.walk the export: exactly the manifest's rows, sha256-identical bytes, label folders, categories."""
    names = names_csv(out)
    data = source_bytes(root, manifest)
    label_dirs = {
        "cnndetection": ("0_real", "1_fake"),
        "cf": ("real", "fake"),
        "imagefolder": ("real", "fake"),
    }[fmt]
    index = {"names.csv", "index.csv", "metadata.jsonl"}
    found: dict[tuple[str, int], Path] = {}
    for path in walk(out):
        if path.name in index:
            continue
        rel = path.relative_to(out).parts
        assert len(rel) == 4, rel
        if fmt == "imagefolder":
            split, lab, cat, name = rel
        else:
            split, cat, lab, name = rel
        key, ext = name.split(".")
        shard, row = key_to_row(out, key)
        assert (shard, row) not in found
        found[(shard, row)] = path
        meta = manifest.df.filter((pl.col("shard") == shard) & (pl.col("row") == row)).row(0, named=True)
        assert lab == label_dirs[meta["label"]]
        assert names[("category", cat)] == expected_category(meta)
        assert names[("split", split)] == "train"
        body = path.read_bytes()
        assert sha(body) == sha(data[(shard, row)])
        assert ext == extension(sniff_format(body))
    assert set(found) == set(manifest.df.select("shard", "row").iter_rows())
    return found


def export(manifest: Manifest, out: Path, fmt: str, **kw: Any) -> Any:
    return write_export(manifest, out, ExportOptions(fmt, workers=kw.pop("workers", 1), **kw))


# --- folder layouts -----------------------------------------------------------------------------------
def test_cnndetection_cli_round_trip(cfx: Callable[..., Any], cf_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "cnn"
    where = "shard != 'data/HFCF_small_5.parquet' AND row % 3 != 1"
    r = cfx(
        "export", str(cf_small), "--format", "cnndetection", "--out", str(out), "--where", where, "-w", "2"
    )
    assert r.returncode == 0, r.stderr
    manifest = load_manifest(str(cf_small))
    keep = (pl.col("shard") != "data/HFCF_small_5.parquet") & (pl.col("row") % 3 != 1)
    selected = manifest.with_df(manifest.df.filter(keep))
    assert 0 < len(selected) < len(manifest)
    check_folder_layout(out, cf_small, selected, "cnndetection")
    assert not list(tmp_path.glob("cnn.tmp-*"))


def test_cf_trainer_layout_and_index(cf_small: Path, tmp_path: Path) -> None:
    manifest = load_manifest(str(cf_small))
    out = tmp_path / "cf"
    export(manifest, out, "cf", workers=2)
    found = check_folder_layout(out, cf_small, manifest, "cf")
    index = pl.read_csv(out / "train" / "index.csv")
    assert index.columns == ["ImagePath", "Label", "GeneratorName"]
    assert index.height == len(manifest)
    allowed = {".jpg", ".jpeg", ".png", ".bmp", ".tiff", ".webp", ".gif"}  # what the trainer's walk keeps
    by_path = {str(p): k for k, p in found.items()}
    for path, label, gen in index.iter_rows():
        assert os.path.isabs(path) and Path(path).is_file()
        assert Path(path).suffix in allowed
        assert Path(path).parent.name == ("fake" if label else "real")  # the trainer's real:0, fake:1
        assert Path(path).parent.parent.name == gen
        shard, row = by_path[path]
        assert manifest.df.filter((pl.col("shard") == shard) & (pl.col("row") == row))["label"][0] == label


def test_pair_id_puts_reals_with_their_generator(
    cfx: Callable[..., Any], cf_small: Path, tmp_path: Path
) -> None:
    bal = tmp_path / "balanced.parquet"
    r = cfx("balance", str(cf_small), "--pair", "-o", str(bal))
    assert r.returncode == 0, r.stderr
    manifest = load_manifest(str(bal))
    assert "pair_id" in manifest.df.columns
    out = tmp_path / "cnn"
    export(manifest, out, "cnndetection")
    names = names_csv(out)
    gen_of = {
        p: g for p, g, lab in manifest.df.select("pair_id", "model_name", "label").iter_rows() if lab == 1
    }
    reals = 0
    for path in walk(out):
        if path.name == "names.csv":
            continue
        _, cat, lab, name = path.relative_to(out).parts
        shard, row = key_to_row(out, name.split(".")[0])
        meta = manifest.df.filter((pl.col("shard") == shard) & (pl.col("row") == row)).row(0, named=True)
        assert names[("category", cat)] == expected_category(meta, gen_of)
        if lab == "0_real" and meta["pair_id"] in gen_of:
            reals += 1
            assert names[("category", cat)] == gen_of[meta["pair_id"]]
    assert reals > 0


def test_category_architecture_family_and_column(cf_small: Path, tmp_path: Path) -> None:
    manifest = load_manifest(str(cf_small))
    for category, column in (("architecture", "architecture"), ("subset", "subset")):
        plan = plan_export(manifest, ExportOptions("cnndetection", category=category))
        names = {s: o for k, o, s in plan.names if k == "category"}
        for row in plan.df.iter_rows(named=True):
            want = row[column] if category == "subset" or row["label"] == 1 else row["real_source"]
            assert names[row["__cat"]] == want
    plan = plan_export(manifest, ExportOptions("cnndetection", category="family"))
    fams = {o for k, o, _ in plan.names if k == "category"}
    assert "stable-diffusion" in fams and "StyleGAN" in fams
    from cfx.errors import UsageError

    with pytest.raises(UsageError, match="--category nope"):
        plan_export(manifest, ExportOptions("cnndetection", category="nope"))


def test_assigned_split_is_used(cf_small: Path, tmp_path: Path) -> None:
    manifest = load_manifest(str(cf_small))
    df = manifest.df.with_columns(
        pl.when(pl.col("row") % 4 == 0)
        .then(pl.lit("test"))
        .otherwise(pl.lit("train"))
        .alias("assigned_split")
    )
    out = tmp_path / "cnn"
    export(manifest.with_df(df), out, "cnndetection", split="ignored")
    for path in walk(out):
        if path.name != "names.csv":
            shard, row = key_to_row(out, path.stem)
            assert path.relative_to(out).parts[0] == ("test" if row % 4 == 0 else "train")
    out2 = tmp_path / "cnn2"
    export(manifest, out2, "cnndetection", split="val")
    assert sorted(p.name for p in out2.iterdir()) == ["names.csv", "val"]


def test_imagefolder_loads_with_datasets(
    cf_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    manifest = load_manifest(str(cf_small))
    out = tmp_path / "hf"
    export(manifest, out, "imagefolder", workers=2)
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    ds = ds.cast_column("image", datasets.Image(decode=False))
    assert len(ds) == len(manifest)
    data = source_bytes(cf_small, manifest)
    meta_cols = [c for c in manifest.df.columns if c != "label"]
    seen = set()
    for ex in ds:
        key = (ex["shard"], ex["row"])
        seen.add(key)
        body = ex["image"]["bytes"] or Path(ex["image"]["path"]).read_bytes()
        assert sha(body) == sha(data[key])
        src = manifest.df.filter((pl.col("shard") == key[0]) & (pl.col("row") == key[1])).row(0, named=True)
        assert ex["label"] == ("fake" if src["label"] == 1 else "real")
        assert ex["label_id"] == src["label"]
        for c in meta_cols:  # resolution: the source's list (the manifest holds its text)
            want = json.loads(src[c]) if c == "resolution" else src[c]
            assert ex[c] == want, c
    assert seen == set(manifest.df.select("shard", "row").iter_rows())
    encoded = datasets.load_dataset("imagefolder", data_dir=str(out), split="train").class_encode_column(
        "label"
    )
    assert set(encoded.features["label"].names) == {"real", "fake"}


# --- webdataset ---------------------------------------------------------------------------------------
def read_wds(out: Path) -> list[dict[str, Any]]:
    import webdataset as wds

    urls = sorted(glob.glob(str(out / "*.tar")))
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


def check_wds(out: Path, root: Path, manifest: Manifest) -> list[tuple[str, int]]:
    data = source_bytes(root, manifest)
    order = []
    for s in read_wds(out):
        imgs = [k for k in s if k in ("png", "jpg", "webp", "gif", "bmp", "tiff")]
        assert len(imgs) == 1
        meta = json.loads(s["json"])
        key = (meta["shard"], meta["row"])
        assert key_to_row(out, s["__key__"]) == key
        assert sha(s[imgs[0]]) == sha(data[key])
        assert imgs[0] == extension(sniff_format(s[imgs[0]]))
        assert int(s["cls"]) == meta["label_id"]
        src = manifest.df.filter((pl.col("shard") == key[0]) & (pl.col("row") == key[1])).row(0, named=True)
        assert meta["label_id"] == src["label"] and meta["model_name"] == src["model_name"]
        order.append(key)
    assert sorted(order) == sorted(manifest.df.select("shard", "row").iter_rows())
    return order


def test_webdataset_round_trip_and_shard_size(
    cfx: Callable[..., Any], cf_small: Path, tmp_path: Path
) -> None:
    out = tmp_path / "wds"
    r = cfx("export", str(cf_small), "--format", "webdataset", "--out", str(out), "--shard-size", "300KB")
    assert r.returncode == 0, r.stderr
    manifest = load_manifest(str(cf_small))
    order = check_wds(out, cf_small, manifest)
    assert order == list(manifest.df.select("shard", "row").iter_rows())  # source order without --shuffle
    tars = sorted(out.glob("*.tar"))
    assert [t.name for t in tars] == [f"train-{i:06d}.tar" for i in range(len(tars))]
    biggest_image = max(len(b) for b in source_bytes(cf_small, manifest).values())
    assert len(tars) > 3 and all(t.stat().st_size <= 300_000 + biggest_image + 8192 for t in tars)


def test_webdataset_shuffle_is_seeded(cf_small: Path, tmp_path: Path) -> None:
    manifest = load_manifest(str(cf_small))
    orders = []
    for i, seed in enumerate((1, 1, 2)):
        out = tmp_path / f"wds{i}"
        export(manifest, out, "webdataset", shuffle=True, seed=seed, shard_bytes=400_000, workers=2)
        orders.append(check_wds(out, cf_small, manifest))
        assert len(list(out.glob("train-*.tar"))) > 2
        assert not (out / ".parts").exists()
    source = list(manifest.df.select("shard", "row").iter_rows())
    assert orders[0] == orders[1] != orders[2]
    assert orders[0] != source


def test_webdataset_loads_with_datasets(
    cf_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    manifest = load_manifest(str(cf_small))
    data = source_bytes(cf_small, manifest)
    # one image format: the plain webdataset loader infers the features itself
    png_only = manifest.with_df(manifest.df.filter(pl.col("label") == 1))
    out = tmp_path / "gen"
    export(png_only, out, "webdataset", shard_bytes=300_000)
    exts = {
        p.suffix
        for t in out.glob("*.tar")
        for p in [Path(n) for n in __import__("tarfile").open(t).getnames()]
    }
    ds = datasets.load_dataset("webdataset", data_dir=str(out), split="train")
    img = next(e for e in exts if e not in (".json", ".cls"))[1:]
    ds = ds.cast_column(img, datasets.Image(decode=False))
    assert len(ds) == len(png_only)
    for ex in ds:
        key = (ex["json"]["shard"], ex["json"]["row"])
        if ex[img] is not None:
            assert sha(ex[img]["bytes"]) == sha(data[key])
    # mixed .png/.jpg members: load_dataset(DIR) reads the features from the README.md cfx writes
    out = tmp_path / "mixed"
    export(manifest, out, "webdataset", shuffle=True, seed=3, shard_bytes=300_000)
    ds = datasets.load_dataset(str(out), split="train")
    assert ds.features["cls"].names == ["real", "fake"]
    ds = ds.cast_column("png", datasets.Image(decode=False)).cast_column("jpg", datasets.Image(decode=False))
    assert len(ds) == len(manifest)
    both = {"png": 0, "jpg": 0}
    for ex in ds:
        key = (ex["json"]["shard"], ex["json"]["row"])
        (ext,) = [e for e in ("png", "jpg") if ex[e] is not None]
        both[ext] += 1
        assert sha(ex[ext]["bytes"]) == sha(data[key])
        assert ex["cls"] == ex["json"]["label_id"]
    assert both["png"] and both["jpg"]


# --- names --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["cnndetection", "cf", "imagefolder", "webdataset"])
def test_hostile_names_stay_inside_and_round_trip(hostile: Path, tmp_path: Path, fmt: str) -> None:
    manifest = load_manifest(str(hostile))
    out = tmp_path / "out"
    export(manifest, out, fmt, category="generator")
    real_out = out.resolve()
    names = names_csv(out)
    for path in walk(out):
        assert real_out in path.resolve().parents
        for part in path.relative_to(out).parts:
            assert is_safe_component(part) and not part.startswith((".", "-")) and len(part) < 100
            assert "\n" not in part and part.isascii()
    cats = [s for (k, s) in names if k == "category"]
    assert len({c.lower() for c in cats}) == len(cats) == len(set(HOSTILE) | {"COCO", "../COCO"})
    assert {names[("category", c)] for c in cats} == set(HOSTILE) | {"COCO", "../COCO"}
    assert names[("category", "stabilityai__stable-diffusion-2-" + _h("stabilityai/stable-diffusion-2"))]
    if fmt != "webdataset":
        files = [p for p in walk(out) if p.suffix in (".png", ".jpg")]
        assert len(files) == len(manifest)
        for p in files:
            cat = p.relative_to(out).parts[2 if fmt == "imagefolder" else 1]
            shard, row = key_to_row(out, p.stem)
            meta = manifest.df.filter(pl.col("row") == row).row(0, named=True)
            assert names[("category", cat)] == expected_category(meta)
    else:
        check_wds(out, hostile, manifest)


def _h(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:8]


def test_extension_follows_the_bytes_not_the_format_column(hostile: Path, tmp_path: Path) -> None:
    manifest = load_manifest(str(hostile))
    out = tmp_path / "cnn"
    export(manifest, out, "cnndetection")
    by_row = {key_to_row(out, p.stem)[1]: p.suffix for p in walk(out) if p.name != "names.csv"}
    assert by_row[0] == ".png"  # format column says JPEG
    assert by_row[1] == ".jpg"  # format column says PNG


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=120), min_size=1, max_size=30))
@example(["COM0"])
@example(["lpt9.tar", "LPT9.TAR", "aux"])
def test_safe_names_property(values: list[str]) -> None:
    m = safe_names(values)
    assert set(m) == set(values)
    safe = list(m.values())
    assert len({s.lower() for s in safe}) == len(safe)  # collision-free, even case-insensitively
    for original, s in m.items():
        assert is_safe_component(s) and s.isascii() and not s.startswith((".", "-")) and len(s) <= 73
        assert s not in (".", "..")
        plain = original.isascii() and original.replace("-", "").replace("_", "").replace(".", "").isalnum()
        assert not is_windows_device(s)  # COM0, nul.txt, … open a device on Windows: always renamed
        kept = len(original) <= 64 and original.lower() not in RESERVED and not is_windows_device(original)
        if plain and original[0] not in ".-" and kept:
            clash = [v for v in values if v != original and v.lower() == original.lower()]
            assert (s == original) != bool(clash)  # safe names are kept unless they clash by case
    assert safe_names(list(reversed(values))) == m  # independent of order


# --- dry run, refusals, atomicity --------------------------------------------------------
def test_dry_run_writes_nothing(cfx: Callable[..., Any], cf_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = cfx("export", str(cf_small), "--format", "cf", "--out", str(out), "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.out)
    n = len(load_manifest(str(cf_small)))
    assert info["dry_run"] and info["rows"] == n and info["files"] == n + 2 and info["est_bytes"] > 0
    assert list(tmp_path.iterdir()) == [] or all(p.name.startswith(".hwm") for p in tmp_path.iterdir())
    r = cfx("export", str(cf_small), "--format", "webdataset", "--out", str(out), "--dry-run")
    assert r.returncode == 0 and "Would write" in r.out and not out.exists()


def test_existing_dir_refused_without_overwrite(
    cfx: Callable[..., Any], cf_small: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = cfx("export", str(cf_small), "--format", "cnndetection", "--out", str(out), "--labels", "real")
    assert r.returncode == 7 and "already exists" in r.stderr and "--overwrite" in r.stderr
    assert (out / "keep.txt").read_text() == "mine"
    r = cfx(
        "export",
        str(cf_small),
        "--format",
        "cnndetection",
        "--out",
        str(out),
        "--labels",
        "real",
        "--overwrite",
    )
    assert r.returncode == 0, r.stderr
    assert not (out / "keep.txt").exists() and (out / "names.csv").is_file()


def test_cli_usage_errors(cfx: Callable[..., Any], cf_small: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    r = cfx("export", str(cf_small), "--format", "cnndetection", "--out", out, "--category", "nope")
    assert r.returncode == 2 and "Error: --category nope" in r.stderr and "Traceback" not in r.stderr
    r = cfx("export", str(cf_small), "--format", "webdataset", "--out", out, "--shard-size", "big")
    assert r.returncode == 2 and "--shard-size" in r.stderr
    r = cfx("export", str(cf_small), "--format", "zip", "--out", out)
    assert r.returncode == 2
    r = cfx("export", str(cf_small), "--format", "cf", "--out", out, "--where", "label = 7")
    assert r.returncode == 5
    assert not Path(out).exists()


def test_kill_9_leaves_no_dir_and_rerun_cleans(tmp_path: Path) -> None:
    from cfx.synth import make_large_shard

    big = tmp_path / "big"
    make_large_shard(big, target_bytes=60_000_000)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "cfx", "export", str(big), "--format", "cnndetection", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    tmp = None
    while time.monotonic() < deadline:  # wait until it is writing images
        tmps = list(tmp_path.glob("out.tmp-*"))
        if tmps and sum(1 for _ in tmps[0].rglob("*.png")) > 5:
            tmp = tmps[0]
            break
        time.sleep(0.01)
    assert tmp is not None, "the export never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and tmp.exists()
    assert tmp.name.startswith(f"out.tmp-{proc.pid}-")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not tmp.exists() and f"removed {tmp}, left by an interrupted earlier run" in r.stderr
    rows_ = pq.read_metadata(big / "data" / "HFCF_small_0.parquet").num_rows
    assert sum(1 for p in walk(out) if p.suffix == ".png") == rows_


def test_library_hostile_shard_bytes(hostile: Path) -> None:
    """The test data really is hostile (guards the fixture itself)."""
    t = pq.read_table(hostile / "data" / "HFCF_small_0.parquet")
    assert set(t.column("model_name").to_pylist()) >= set(HOSTILE) - {""}
    assert (
        t.column("format")[0].as_py() == "JPEG" and sniff_format(t.column("image_data")[0].as_py()) == "PNG"
    )
    assert png(0)[:4] == b"\x89PNG"


@pytest.mark.hub
def test_export_from_the_hub(local_hub: Any, run_cfx: Any, tmp_path: Path) -> None:
    """hf:// source through a process pool: the workers stream the Hub's shards; bytes match its files."""
    from tests.conftest import REPO

    out = tmp_path / "wds"
    r = run_cfx("export", f"hf://datasets/{REPO}", "--format", "webdataset", "--out", str(out), "-w", "2")
    assert r.returncode == 0, r.stderr
    want = {}
    for i in range(6):
        shard = f"data/HFCF_small_{i}.parquet"
        col = pq.read_table(local_hub.file(shard)).column("image_data").to_pylist()
        want.update({(shard, row): sha(b) for row, b in enumerate(col)})
    got = {}
    for s in read_wds(out):
        meta = json.loads(s["json"])
        body = next(v for k, v in s.items() if k not in ("json", "cls") and not k.startswith("__"))
        got[(meta["shard"], meta["row"])] = sha(body)
    assert got == want


@pytest.mark.slow
def test_memory_does_not_grow_with_the_row_group(tmp_path: Path) -> None:
    """Peak RSS exporting a 300 MB single-row-group shard stays near that of a 60 MB one (both layouts)."""
    from cfx.synth import make_large_shard
    from tests.rss import cfx_peak_rss_mb

    small, big = tmp_path / "small", tmp_path / "big"
    make_large_shard(small, target_bytes=60_000_000)
    make_large_shard(big, target_bytes=300_000_000)
    for fmt in ("cnndetection", "webdataset"):
        peaks = [
            cfx_peak_rss_mb(
                ["export", str(src), "--format", fmt, "--out", str(tmp_path / f"o-{src.name}-{fmt}")],
                tmp_path,
            )
            for src in (small, big)
        ]
        # a plateau, not growth: ~+60 MB from 60 to 300 MB (the read-ahead's batches), ~+4 MB from 300 MB to 2 GB
        assert peaks[1] - peaks[0] < 100 and peaks[1] < 600, (fmt, peaks)


def test_changed_shard_fails_cleanly_through_the_pool(
    cfx: Callable[..., Any], cf_small: Path, tmp_path: Path
) -> None:
    import shutil

    src = tmp_path / "src"
    shutil.copytree(cf_small, src)
    manifest = tmp_path / "m.parquet"
    assert cfx("index", str(src), "-o", str(manifest)).returncode == 0
    with open(src / "data" / "HFCF_small_3.parquet", "ab") as f:
        f.write(b"x")
    out = tmp_path / "out"
    r = cfx("export", str(manifest), "--format", "imagefolder", "--out", str(out), "-w", "2")
    assert r.returncode == 3 and "HFCF_small_3.parquet changed" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and not list(tmp_path.glob("out.tmp-*"))


@pytest.mark.slow
def test_kill_9_stops_the_pool_workers(tmp_path: Path) -> None:
    """Workers of a killed export stop writing into its temp folder (they watch their parent)."""
    import shutil

    from cfx.synth import make_large_shard

    src = tmp_path / "src"
    make_large_shard(src, target_bytes=60_000_000)
    shutil.copy(src / "data" / "HFCF_small_0.parquet", src / "data" / "HFCF_small_1.parquet")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "cfx",
        "export",
        str(src),
        "--format",
        "cnndetection",
        "--out",
        str(out),
        "-w",
        "2",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    tmp = None
    while time.monotonic() < deadline:
        tmps = list(tmp_path.glob("out.tmp-*"))
        if tmps and sum(1 for _ in tmps[0].rglob("*.png")) > 5:
            tmp = tmps[0]
            break
        time.sleep(0.01)
    assert tmp is not None, "the export never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(2)
    before = sum(1 for _ in tmp.rglob("*.png"))
    time.sleep(2)
    assert sum(1 for _ in tmp.rglob("*.png")) == before < len(load_manifest(str(src)))  # stopped, unfinished
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not tmp.exists()
    assert sum(1 for p in walk(out) if p.suffix == ".png") == len(load_manifest(str(src)))


def test_assigned_split_loads_as_splits(
    cf_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """assigned_split train/test: both loaders see the two splits with exactly their rows."""
    import datasets

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    manifest = load_manifest(str(cf_small))
    df = manifest.df.with_columns(
        pl.when(pl.col("row") % 4 == 0)
        .then(pl.lit("test"))
        .otherwise(pl.lit("train"))
        .alias("assigned_split")
    )
    want = {s: len(df.filter(pl.col("assigned_split") == s)) for s in ("train", "test")}
    for fmt in ("imagefolder", "webdataset"):
        out = tmp_path / fmt
        export(manifest.with_df(df), out, fmt)
        ds = (
            datasets.load_dataset("imagefolder", data_dir=str(out))
            if fmt == "imagefolder"
            else datasets.load_dataset(str(out))
        )
        assert {s: len(d) for s, d in ds.items()} == want
        rows = ds["test"]["row"] if fmt == "imagefolder" else [j["row"] for j in ds["test"]["json"]]
        assert all(r % 4 == 0 for r in rows)


@pytest.mark.parametrize("stem", ["train/../x", "/abs/x", "a//b", "a/./b", "a\\b", "..", ""])
def test_unsafe_paths_never_reach_the_disk(stem: str) -> None:
    """The last guard behind safe_names: a path component that could leave DIR is refused."""
    from cfx.errors import OutputError
    from cfx.export import _check_stems

    _check_stems(pl.Series(["train/a/0_real/x-000001", "train/b.c/1_fake/y-000002"]))
    with pytest.raises(OutputError, match="unsafe output path"):
        _check_stems(pl.Series([stem]))


# --- --transform (the specs of cfx subset) -------------------------------------------------------------
def _pngs(root: Path, images: dict[int, bytes] | None = None) -> Path:
    """Two shards of real PNGs (tests.shards), some rows of shard 0 replaced by ``images``."""
    recs = rows(8, label=1)
    for i, data in (images or {}).items():
        recs[i]["image_data"] = data
    write_shard(root / "data" / "s-0.parquet", recs)
    write_shard(root / "data" / "s-1.parquet", rows(8, label=0, start=8))
    return root


def subset_images(out: Path) -> dict[tuple[str, int], bytes]:
    """(source shard, source row) -> image bytes of a `cfx subset` output, through its manifest."""
    man = pl.read_parquet(out / "manifest.parquet")
    data = {
        s: pq.read_table(out / s, columns=["image_data"]).column(0).to_pylist() for s in set(man["shard"])
    }
    return {
        (s, r): data[shard][row]
        for s, r, shard, row in man.select("source_shard", "source_row", "shard", "row").iter_rows()
    }


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cli_transform_jpeg96_equals_subset_and_metadata_follows(
    cfx: Callable[..., Any], tmp_path: Path
) -> None:
    from cfx.jpegquality import parse_jpeg

    src = _pngs(tmp_path / "src")
    manifest = load_manifest(str(src))
    source = source_bytes(src, manifest)
    assert {sniff_format(b) for b in source.values()} == {"PNG"}
    out, sub = tmp_path / "hf", tmp_path / "sub"
    r = cfx("export", str(src), "-f", "imagefolder", "--out", str(out), "--transform", "jpeg:96", "-w", "2")
    assert r.returncode == 0, r.stderr
    r = cfx("subset", str(src), "--out", str(sub), "--transform", "jpeg:96", "-w", "2")
    assert r.returncode == 0, r.stderr
    by_subset = subset_images(sub)
    meta = {m["file_name"]: m for m in jsonl(out / "train" / "metadata.jsonl")}
    files = [p for p in walk(out) if p.name not in ("names.csv", "metadata.jsonl")]
    assert len(files) == len(meta) == len(manifest) == 16
    for path in files:
        body = path.read_bytes()
        assert path.suffix == ".jpg" and sniff_format(body) == "JPEG"
        assert parse_jpeg(body).quality == (96, True)
        key = key_to_row(out, path.stem)
        assert body == by_subset[key]  # the same bytes as `cfx subset --transform jpeg:96`
        m = meta[str(path.relative_to(out / "train"))]
        assert (m["shard"], m["row"]) == key
        assert (m["format"], m["source_format"], m["transform"]) == ("JPEG", "PNG", "jpeg:96")
        assert (m["width"], m["height"], m["resolution"], m["num_bytes"]) == (32, 32, [32, 32], len(body))
        assert m["image_name"].endswith(".jpg") and m["source_image_name"].endswith(".png")
        assert m["source_sha256"] == sha(source[key]) and "sha256" not in m


def test_seeded_draws_equal_subset_for_every_layout(tmp_path: Path) -> None:
    from cfx.subset import write_subset
    from cfx.transform import Pipeline

    src = _pngs(tmp_path / "src")
    manifest = load_manifest(str(src))
    pipeline = Pipeline.parse(["noise:2", "jpeg:60-99"])
    write_subset(manifest, tmp_path / "sub", transform=pipeline, seed=7)
    by_subset = subset_images(tmp_path / "sub")
    for fmt in ("cnndetection", "cf"):
        out = tmp_path / fmt
        res = export(manifest, out, fmt, workers=2, transform=pipeline, seed=7)
        assert res.rows == 16 and res.to_json()["transform"] == "noise:2 jpeg:60-99"
        found = {key_to_row(out, p.stem): p for p in walk(out) if p.suffix == ".jpg"}
        assert {k: p.read_bytes() for k, p in found.items()} == by_subset
    index = pl.read_csv(tmp_path / "cf" / "train" / "index.csv")
    assert index.height == 16 and all(
        Path(p).suffix == ".jpg" and Path(p).is_file() for p in index["ImagePath"]
    )
    other = export(manifest, tmp_path / "seed8", "cnndetection", transform=pipeline, seed=8)
    assert other.bytes != res.bytes  # the draws follow --seed


def test_webdataset_members_and_json_follow_the_new_bytes(tmp_path: Path) -> None:
    from cfx.transform import Pipeline

    src = _pngs(tmp_path / "src")
    manifest = load_manifest(str(src))
    source = source_bytes(src, manifest)
    out = tmp_path / "wds"
    pipeline = Pipeline.parse(["resize:0.5", "webp:80"])
    export(manifest, out, "webdataset", workers=2, transform=pipeline, shuffle=True, seed=2, shard_bytes=4000)
    import tarfile

    tars = sorted(out.glob("*.tar"))
    assert [t.name for t in tars] == [f"train-{i:06d}.tar" for i in range(len(tars))] and len(tars) > 1
    names = []
    for t in tars:
        with tarfile.open(t) as tar:
            names += tar.getnames()
    assert {Path(n).suffix for n in names} == {".webp", ".json", ".cls"}
    samples = read_wds(out)
    assert len(samples) == 16
    for s in samples:
        assert set(s) >= {"webp", "json", "cls"} and "png" not in s
        meta = json.loads(s["json"])
        key = (meta["shard"], meta["row"])
        assert key_to_row(out, s["__key__"]) == key
        image = Image.open(io.BytesIO(s["webp"]))
        assert (image.format, image.size) == ("WEBP", (16, 16))
        assert (meta["format"], meta["width"], meta["height"], meta["resolution"]) == (
            "WEBP",
            16,
            16,
            [16, 16],
        )
        assert (meta["source_format"], meta["source_width"], meta["source_resolution"]) == (
            "PNG",
            32,
            [32, 32],
        )
        assert meta["transform"] == "resize:0.5 webp:80" and meta["source_sha256"] == sha(source[key])
        assert meta["image_name"].endswith(".webp") and meta["num_bytes"] == len(s["webp"])
    card = (out / "README.md").read_text()
    assert '- name: "webp"' in card and '"png"' not in card and '"source_format"' in card


def test_bad_image_exit_3_or_skip_bad(cfx: Callable[..., Any], tmp_path: Path) -> None:
    src = _pngs(tmp_path / "src", {3: b"\x89PNG\r\n\x1a\n broken"})
    out = tmp_path / "out"
    r = cfx("export", str(src), "-f", "webdataset", "--out", str(out), "--transform", "jpeg:90", "-w", "2")
    assert r.returncode == 3, r.stderr
    assert "Error: data/s-0.parquet row 3: cannot decode the image" in r.stderr and "--skip-bad" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not list(tmp_path.glob("out.tmp-*"))
    r = cfx(
        "export", str(src), "-f", "imagefolder", "--out", str(out), "--transform", "jpeg:90",
        "--skip-bad", "--json", "-w", "2",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "skipped 1 image(s) that could not be transformed: data/s-0.parquet row 3" in r.stderr
    info = json.loads(r.out)
    assert info["rows"] == 15 and info["skipped"] == 1 and info["files"] == 15 + 2
    meta = jsonl(out / "train" / "metadata.jsonl")
    assert len(meta) == 15 and ("data/s-0.parquet", 3) not in {(m["shard"], m["row"]) for m in meta}
    images = [p for p in walk(out) if p.suffix == ".jpg"]
    assert len(images) == 15 and "s-0-000003" not in {p.stem for p in images}


def test_bad_image_library_inline_and_shuffled_webdataset(tmp_path: Path) -> None:
    from cfx.transform import BadImageError, Pipeline

    manifest = load_manifest(str(_pngs(tmp_path / "src", {3: b"\x89PNG\r\n\x1a\n broken"})))
    out = tmp_path / "out"
    with pytest.raises(BadImageError, match=r"data/s-0.parquet row 3"):  # inline (one worker)
        export(manifest, out, "cnndetection", transform=Pipeline.parse(["jpeg:90"]))
    assert not out.exists() and not list(tmp_path.glob("out.tmp-*"))
    # webdataset, shuffled: the bad sample leaves its tar, the others are all there
    wds = tmp_path / "wds"
    res = export(
        manifest,
        wds,
        "webdataset",
        transform=Pipeline.parse(["jpeg:90"]),
        skip_bad=True,
        shuffle=True,
        shard_bytes=3000,
    )
    assert res.rows == 15 and res.skipped == 1 and "row 3" in res.warnings[0]
    keys = {key_to_row(wds, s["__key__"]) for s in read_wds(wds)}
    assert len(keys) == 15 and ("data/s-0.parquet", 3) not in keys


def test_all_images_bad_is_an_empty_selection(tmp_path: Path) -> None:
    from cfx.errors import EmptySelectionError
    from cfx.transform import Pipeline

    write_shard(tmp_path / "src" / "data" / "s-0.parquet", [{**r, "image_data": b"junk"} for r in rows(3)])
    manifest = load_manifest(str(tmp_path / "src"))
    with pytest.raises(EmptySelectionError):
        export(manifest, tmp_path / "out", "cf", transform=Pipeline.parse(["png"]), skip_bad=True)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


def test_strip_metadata_keeps_pixels_and_format(cfx: Callable[..., Any], tmp_path: Path) -> None:
    from tests.test_transform import jpeg_with_metadata, png_with_metadata

    src = _pngs(tmp_path / "src", {0: jpeg_with_metadata(), 1: png_with_metadata()})
    manifest = load_manifest(str(src))
    source = source_bytes(src, manifest)
    out = tmp_path / "out"
    r = cfx("export", str(src), "-f", "imagefolder", "--out", str(out), "--strip-metadata", "--keep-icc")
    assert r.returncode == 0, r.stderr
    meta = {m["file_name"]: m for m in jsonl(out / "train" / "metadata.jsonl")}
    for path in (p for p in walk(out) if p.suffix in (".jpg", ".png")):
        key = key_to_row(out, path.stem)
        before, after = Image.open(io.BytesIO(source[key])), Image.open(io.BytesIO(path.read_bytes()))
        assert after.format == before.format and path.suffix == "." + extension(before.format)
        assert not after.getexif() and "parameters" not in after.info and "workflow" not in after.info
        assert after.info.get("icc_profile") == before.info.get("icc_profile")  # --keep-icc
        assert (np.asarray(after) == np.asarray(before)).all()  # container edit only, pixels untouched
        m = meta[str(path.relative_to(out / "train"))]
        assert (
            m["transform"] == "strip-metadata(keep-icc)" and m["format"] == after.format
        )  # the bytes, not the column
    stripped = (out / "train" / "fake").rglob("s-0-000000.jpg")
    assert len(next(stripped).read_bytes()) < len(source[("data/s-0.parquet", 0)])
    r = cfx("export", str(src), "-f", "cf", "--out", str(tmp_path / "x"), "--keep-icc")
    assert r.returncode == 2 and "--keep-icc needs --strip-metadata" in r.stderr


def test_dry_run_says_images_will_be_transformed(cfx: Callable[..., Any], tmp_path: Path) -> None:
    src = _pngs(tmp_path / "src")
    out = tmp_path / "out"
    args = (
        "export",
        str(src),
        "-f",
        "cnndetection",
        "--out",
        str(out),
        "--transform",
        "jpeg:96",
        "--dry-run",
    )
    r = cfx(*args)
    assert r.returncode == 0, r.stderr
    assert "Would write 16 images (≈ " in r.out
    assert "Images will be transformed (jpeg:96): the size is an estimate from the transform" in r.out
    r = cfx(*args, "--json")
    info = json.loads(r.out)
    assert info["transform"] == "jpeg:96" and info["bytes_exact"] is False and info["rows"] == 16
    r = cfx(*args[:-3], "--dry-run", "--json")
    assert json.loads(r.out)["transform"] is None
    r = cfx(*args[:-2], "jpeg:200")
    assert r.returncode == 2 and "Error: --transform 'jpeg:200'" in r.stderr
    assert not out.exists()
