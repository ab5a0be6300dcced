"""Licences: normalisation, flags, licence tables (CSV/JSON/JSONL/parquet), annotation, filters, `cfx licenses`."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.ipc as ipc
import pytest

from cfx.errors import InputError, UsageError
from cfx.licenses import (
    UNKNOWN,
    annotate_licenses,
    annotate_licenses_info,
    builtin_real_sources,
    dataset_license_table,
    ensure_licenses,
    filter_licenses,
    is_commercial,
    license_flags,
    license_report,
    load_license_table,
    normalize_license,
    real_license_table,
)
from cfx.manifest import Manifest, read_manifest
from cfx.progress import NullReporter


def manifest_of(rows: list[tuple[str, str | None, str | None]], root: str = "/nowhere") -> Manifest:
    """(label 'g'/'r', model_name, real_source) rows -> a manifest (metadata only)."""
    df = pl.DataFrame(
        {
            "shard": [f"data/s{i // 10}.parquet" for i in range(len(rows))],
            "row": [i % 10 for i in range(len(rows))],
            "model_name": [m for _, m, _ in rows],
            "real_source": [s for _, _, s in rows],
            "label": [1 if k == "g" else 0 for k, _, _ in rows],
        },
        schema_overrides={"label": pl.Int8, "model_name": pl.String, "real_source": pl.String},
    )
    return Manifest(df=df, root=root)


# --- normalisation and flags -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("CreativeML OpenRAIL-M", "creativeml-openrail-m"),
        ("creativeml-openrail-m", "creativeml-openrail-m"),
        ("creativeml_openrail_m", "creativeml-openrail-m"),
        ("OpenRAIL++", "openrail++"),
        ("Apache 2.0", "apache-2.0"),
        ("Apache License, Version 2.0", "apache-2.0"),
        ("apache-2.0", "apache-2.0"),
        ("MIT License", "mit"),
        ("CC BY-NC 4.0", "cc-by-nc-4.0"),
        ("CC-BY-NC-SA-4.0", "cc-by-nc-sa-4.0"),
        ("Creative Commons Attribution-NonCommercial 4.0 International", "cc-by-nc-4.0"),
        ("Creative Commons Attribution-ShareAlike 4.0", "cc-by-sa-4.0"),
        ("https://creativecommons.org/licenses/by-nc-sa/4.0/", "cc-by-nc-sa-4.0"),
        ("https://creativecommons.org/licenses/by/2.0/", "cc-by-2.0"),
        ("https://creativecommons.org/publicdomain/zero/1.0/", "cc0-1.0"),
        ("CC0", "cc0-1.0"),
        ("cc-by-4", "cc-by-4.0"),
        ("GPL v3", "gpl-3.0"),
        ("other", "other"),
        ("", UNKNOWN),
        ("  N/A ", UNKNOWN),
        (None, UNKNOWN),
        ("unknown", UNKNOWN),
    ],
)
def test_normalize_license(raw: str | None, expected: str) -> None:
    assert normalize_license(raw) == expected
    assert normalize_license(expected) == expected  # ids are fixed points


@pytest.mark.parametrize(
    ("lid", "commercial", "nc", "sa"),
    [
        ("creativeml-openrail-m", True, False, False),
        ("openrail++", True, False, False),
        ("apache-2.0", True, False, False),
        ("mit", True, False, False),
        ("cc-by-4.0", True, False, False),
        ("cc-by-sa-4.0", True, False, True),
        ("cc-by-nc-4.0", False, True, False),
        ("cc-by-nc-sa-4.0", False, True, True),
        ("deepfloyd-if-license", False, True, False),
        ("imagenet-nc-research", False, True, False),
        ("other", None, False, False),
        ("flickr-per-image", None, False, False),
        (UNKNOWN, None, False, False),
        ("some-custom-terms", None, False, False),
    ],
)
def test_license_flags(lid: str, commercial: bool | None, nc: bool, sa: bool) -> None:
    flags = license_flags(lid)
    assert flags["commercial"] is commercial
    assert flags["non_commercial"] is nc
    assert flags["share_alike"] is sa
    assert flags["unknown"] is (lid == UNKNOWN)
    assert is_commercial(lid) is (commercial is True)


def test_builtin_real_sources_are_documented_and_normalised() -> None:
    entries = builtin_real_sources()
    names = {e.name for e in entries}
    expected = {"FFHQ", "COCO", "LAION", "ImageNet", "CelebA", "MetFaces", "AFHQ-v2"}
    expected |= {"VISION", "LandscapesHQ", "Forchheim", "IMD2020"}
    assert expected <= names
    for e in entries:
        assert e.source.strip(), f"{e.name}: every entry documents its source"
        assert normalize_license(e.license) == e.license
        assert e.license_raw.strip()
    by = {e.name: e.license for e in entries}
    assert by["FFHQ"] == "cc-by-nc-sa-4.0"
    assert by["MetFaces"] == "cc-by-nc-2.0"
    assert by["AFHQ-v2"] == "cc-by-nc-4.0"
    assert by["LAION"] == UNKNOWN  # per image, never guessed
    # no real source is claimed to be commercially usable as a whole
    assert not any(is_commercial(e.license) for e in entries)


# --- tables ------------------------------------------------------------------------------------------
TABLE = [("runwayml/stable-diffusion-v1-5", "CreativeML OpenRAIL-M"), ("StyleGAN2", "CC BY-NC 4.0")]


def _write(path: Path, kind: str, rows: list[tuple[str, str]], cols: tuple[str, str]) -> Path:
    m, lic = cols
    if kind == "csv":
        path.write_text(f"{m},{lic}\n" + "".join(f"{a},{b}\n" for a, b in rows))
    elif kind == "tsv":
        path.write_text(f"{m}\t{lic}\n" + "".join(f"{a}\t{b}\n" for a, b in rows))
    elif kind == "json-list":
        path.write_text(json.dumps([{m: a, lic: b, "extra": 1} for a, b in rows]))
    elif kind == "json-map":
        path.write_text(json.dumps({a: b for a, b in rows}))
    elif kind == "json-columns":
        path.write_text(json.dumps({m: [a for a, _ in rows], lic: [b for _, b in rows]}))
    elif kind == "json-wrapped":
        path.write_text(json.dumps({"models": [{m: a, lic: b} for a, b in rows]}))
    elif kind == "jsonl":
        path.write_text("".join(json.dumps({m: a, lic: b}) + "\n" for a, b in rows))
    elif kind == "parquet":
        pl.DataFrame({m: [a for a, _ in rows], lic: [b for _, b in rows]}).write_parquet(path)
    return path


@pytest.mark.parametrize(
    ("kind", "suffix"),
    [
        ("csv", ".csv"),
        ("tsv", ".tsv"),
        ("json-list", ".json"),
        ("json-map", ".json"),
        ("json-columns", ".json"),
        ("json-wrapped", ".json"),
        ("jsonl", ".jsonl"),
        ("parquet", ".parquet"),
    ],
)
def test_load_table_formats(tmp_path: Path, kind: str, suffix: str) -> None:
    path = _write(tmp_path / f"t{suffix}", kind, TABLE, ("model_name", "license"))
    table = load_license_table(path)
    assert len(table) == 2
    assert table.lookup("runwayml/stable-diffusion-v1-5") == (True, "CreativeML OpenRAIL-M")
    # lookups ignore case, spaces/underscores and a huggingface.co URL prefix
    assert table.lookup("https://huggingface.co/RunwayML/Stable-Diffusion-v1-5/")[0]
    assert table.lookup("stylegan_2") == (True, "CC BY-NC 4.0")
    assert table.lookup("not-there") == (False, None)


@pytest.mark.parametrize(
    ("cols", "found"),
    [
        (("Model", "Licence"), ("Model", "Licence")),
        (("generator", "license_id"), ("generator", "license_id")),
        (("repo_id", "License Name"), ("repo_id", "License Name")),
    ],
)
def test_columns_found_by_common_names(tmp_path: Path, cols: tuple[str, str], found: tuple[str, str]) -> None:
    table = load_license_table(_write(tmp_path / "t.csv", "csv", TABLE, cols))
    assert (table.key_column, table.license_column) == found


def test_explicit_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,weights,terms\n1,StyleGAN2,cc-by-nc-4.0\n2,BigGAN,MIT\n")
    with pytest.raises(InputError) as err:
        load_license_table(path)
    assert str(path) in err.value.message and "id, weights, terms" in err.value.message
    assert "--model-column" in err.value.hint
    table = load_license_table(path, model_column="weights", license_column="terms")
    assert table.lookup("BigGAN") == (True, "MIT")
    with pytest.raises(InputError) as err:
        load_license_table(path, model_column="weights", license_column="nope")
    assert "'nope'" in err.value.message and "id, weights, terms" in err.value.message


def test_bad_tables(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_license_table(tmp_path / "missing.csv")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("model_name,license\na,b,c,d\n")
    with pytest.raises(InputError, match=r"ragged\.csv is malformed"):
        load_license_table(ragged)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match=r"broken\.json is malformed"):
        load_license_table(broken)
    notparquet = tmp_path / "x.parquet"
    notparquet.write_bytes(b"PAR1 garbage")
    with pytest.raises(InputError, match="malformed"):
        load_license_table(notparquet)
    empty = tmp_path / "empty.csv"
    empty.write_text("model_name,license\n")
    with pytest.raises(InputError, match="empty; columns found: model_name, license"):
        load_license_table(empty)
    blank = tmp_path / "blank.csv"
    blank.write_text("model_name,license\n,mit\n")
    with pytest.raises(InputError, match="no usable rows"):
        load_license_table(blank)
    other = tmp_path / "t.xlsx"
    other.write_text("x")
    with pytest.raises(InputError, match="unsupported file type"):
        load_license_table(other)


def test_conflicting_duplicate_rows_keep_first(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("model_name,license\nA,mit\na,Apache 2.0\nB,mit\nb,MIT License\n")
    table = load_license_table(path)
    assert table.lookup("A") == (True, "mit")
    assert len(table.conflicts) == 1 and "Apache 2.0" in table.conflicts[0]  # B/b agree once normalised


def test_dataset_table_found_under_root(tmp_path: Path) -> None:
    meta = tmp_path / "data" / "metadata"
    meta.mkdir(parents=True)
    _write(meta / "generators.csv", "csv", TABLE, ("model_name", "license"))
    (meta / "notes.json").write_text(json.dumps([{"title": "not a licence table"}]))
    reporter = NullReporter()
    table = dataset_license_table(str(tmp_path), reporter=reporter)
    assert table is not None and len(table) == 2
    assert any("notes.json" in w for w in reporter.warnings)  # skipped, said so
    # no table at all: a warning, not an error
    reporter = NullReporter()
    (tmp_path / "other").mkdir()
    assert dataset_license_table(str(tmp_path / "other"), reporter=reporter) is None
    assert any("no licence table found" in w for w in reporter.warnings)
    # the only table is malformed: an error naming it
    (meta / "generators.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=r"generators\.csv.*columns found: a, b"):
        dataset_license_table(str(tmp_path))


# --- annotate / filter / report ----------------------------------------------------------------------
def test_annotate_generated_and_real(tmp_path: Path) -> None:
    meta = tmp_path / "data" / "metadata"
    meta.mkdir(parents=True)
    _write(meta / "generators.csv", "csv", TABLE, ("model_name", "license"))
    m = manifest_of(
        [
            ("g", "runwayml/stable-diffusion-v1-5", None),
            ("g", "StyleGAN2", ""),
            ("g", "mystery/gen", None),
            ("g", None, None),
            ("r", "", "FFHQ"),
            ("r", None, "afhqv2"),  # an alias of AFHQ-v2
            ("r", None, "COCO"),
            ("r", None, "MyPhotos"),
            ("r", None, None),
        ],
        root=str(tmp_path),
    )
    out, info = annotate_licenses_info(m)
    assert out.df.height == m.df.height
    assert out.df.get_column("license").to_list() == [
        "creativeml-openrail-m",
        "cc-by-nc-4.0",
        UNKNOWN,
        UNKNOWN,
        "cc-by-nc-sa-4.0",
        "cc-by-nc-4.0",
        "flickr-per-image",
        UNKNOWN,
        UNKNOWN,
    ]
    raw = out.df.get_column("license_raw").to_list()
    assert raw[0] == "CreativeML OpenRAIL-M" and raw[2] is None and raw[7] is None
    assert info.missing_generators == {"mystery/gen": 1, "(null)": 1}
    assert info.unknown_real_sources == {"MyPhotos": 1, "(null)": 1}
    assert out.history[-1] == "licenses"
    # order and other columns kept
    assert out.df.select("shard", "row").equals(m.df.select("shard", "row"))


def test_real_table_override(tmp_path: Path) -> None:
    user = tmp_path / "real.csv"
    user.write_text("real_source,license\nCOCO,CC BY 4.0\nMyPhotos,cc0\n")
    m = manifest_of([("r", None, "COCO"), ("r", None, "MyPhotos"), ("r", None, "FFHQ"), ("g", "x", None)])
    out = annotate_licenses(m, real_table=real_license_table(user), find_table=False)
    assert out.df.get_column("license").to_list() == ["cc-by-4.0", "cc0-1.0", "cc-by-nc-sa-4.0", UNKNOWN]
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset_x,terms\nCOCO,mit\n")
    with pytest.raises(InputError, match=r"bad\.csv.*columns found: dataset_x, terms"):
        real_license_table(bad)


def test_filter_licenses() -> None:
    df = pl.DataFrame(
        {"license": ["creativeml-openrail-m", "cc-by-nc-4.0", "apache-2.0", UNKNOWN, "cc-by-4.0", "other"]}
    )

    def kept(**kw: object) -> list[str]:
        return filter_licenses(df, **kw).get_column("license").to_list()  # type: ignore[arg-type]

    assert kept() == df.get_column("license").to_list()
    assert kept(include=["cc-by-*"]) == ["cc-by-nc-4.0", "cc-by-4.0"]
    assert kept(include=["cc-by-*,apache-2.0"]) == ["cc-by-nc-4.0", "apache-2.0", "cc-by-4.0"]
    assert kept(exclude=["*-nc-*", "unknown"]) == [
        "creativeml-openrail-m",
        "apache-2.0",
        "cc-by-4.0",
        "other",
    ]
    assert kept(commercial_only=True) == ["creativeml-openrail-m", "apache-2.0", "cc-by-4.0"]
    assert kept(include=["CC-BY-*"], commercial_only=True) == ["cc-by-4.0"]  # globs ignore case
    with pytest.raises(UsageError, match="empty licence pattern"):
        filter_licenses(df, include=["mit,"])
    with pytest.raises(InputError, match="no 'license' column"):
        filter_licenses(pl.DataFrame({"x": [1]}), commercial_only=True)


def test_ensure_licenses_keeps_an_existing_column() -> None:
    m = manifest_of([("g", "a", None)])
    m = m.with_df(m.df.with_columns(pl.lit("mit").alias("license")))
    assert ensure_licenses(m) is m


def test_license_report_counts_and_flags(tmp_path: Path) -> None:
    meta = tmp_path / "data" / "metadata"
    meta.mkdir(parents=True)
    _write(meta / "generators.csv", "csv", TABLE, ("model_name", "license"))
    rows = [("g", "runwayml/stable-diffusion-v1-5", None)] * 3 + [("g", "StyleGAN2", None)] * 2
    rows += [("g", "mystery/gen", None), ("r", None, "FFHQ"), ("r", None, "LAION")]
    m, info = annotate_licenses_info(manifest_of(rows, root=str(tmp_path)))
    report = license_report(m, info)
    by = {e["license"]: e for e in report["licenses"]}
    assert by["creativeml-openrail-m"]["rows"] == 3 and by["creativeml-openrail-m"]["generators"] == 1
    assert by["cc-by-nc-4.0"]["non_commercial"] is True
    assert by["cc-by-nc-sa-4.0"]["share_alike"] is True and by["cc-by-nc-sa-4.0"]["real_sources"] == ["FFHQ"]
    assert by[UNKNOWN]["rows"] == 2 and by[UNKNOWN]["real"] == 1 and by[UNKNOWN]["generated"] == 1
    assert report["flags"]["non_commercial"]["rows"] == 3
    assert report["flags"]["share_alike"]["rows"] == 1
    assert report["flags"]["unknown"]["rows"] == 2
    assert report["flags"]["commercial"]["rows"] == 3
    assert report["missing_generators"] == [{"model_name": "mystery/gen", "rows": 1}]
    assert sum(e["rows"] for e in report["licenses"]) == m.df.height


# --- on the CF-shaped synthetic dataset and through the CLI -------------------------------------------
def test_synth_dataset_licences(cf_small: Path) -> None:
    from cfx.load import load_manifest

    m, info = annotate_licenses_info(load_manifest(str(cf_small)))
    table = pl.read_csv(cf_small / "data" / "metadata" / "generators.csv")
    known = dict(table.iter_rows())
    gen = m.df.filter(pl.col("label") == 1)
    for name, lid in gen.select("model_name", "license").unique().iter_rows():
        assert lid == (normalize_license(known[name]) if name in known else UNKNOWN)
    missing = set(gen.get_column("model_name").unique().to_list()) - set(known)
    assert missing and set(info.missing_generators) == missing
    assert not info.unknown_real_sources  # every synth real source is in the built-in table


def test_cli_licenses_report_json_and_output(
    cfx: Callable[..., object], cf_small: Path, tmp_path: Path
) -> None:
    run = cfx("licenses", str(cf_small), "--json")
    assert run.returncode == 0, run.stderr  # type: ignore[attr-defined]
    report = json.loads(run.out)  # type: ignore[attr-defined]
    assert report["table"]["files"][0].endswith("generators.csv")
    assert report["missing_generators"]
    assert {"non_commercial", "share_alike", "unknown", "commercial"} <= set(report["flags"])
    # table on stdout for humans, names the missing generators
    run = cfx("licenses", str(cf_small), "-o", str(tmp_path / "lic.parquet"))
    assert run.returncode == 0, run.stderr  # type: ignore[attr-defined]
    assert "not in the licence table" in run.out  # type: ignore[attr-defined]
    saved = read_manifest(tmp_path / "lic.parquet")
    assert {"license", "license_raw"} <= set(saved.df.columns)
    # piped: the annotated manifest on stdout as Arrow IPC, the report on stderr
    run = cfx("licenses", str(cf_small))
    table = ipc.open_stream(io.BytesIO(run.stdout)).read_all()  # type: ignore[attr-defined]
    assert "license" in table.column_names and table.num_rows == saved.df.height
    assert "cfx licenses" in run.stderr  # type: ignore[attr-defined]


def test_cli_licenses_bad_table(cfx: Callable[..., object], cf_small: Path, tmp_path: Path) -> None:
    bad = tmp_path / "t.csv"
    bad.write_text("name_of_thing,whatever\nx,y\n")
    run = cfx("licenses", str(cf_small), "--license-table", str(bad), "--json")
    assert run.returncode == 3  # type: ignore[attr-defined]
    err = run.stderr  # type: ignore[attr-defined]
    assert err.startswith("Error: licence table") and str(bad) in err and "name_of_thing, whatever" in err
    assert "Traceback" not in err
    run = cfx(
        "licenses",
        str(cf_small),
        "--license-table",
        str(bad),
        "--model-column",
        "name_of_thing",
        "--license-column",
        "whatever",
        "--json",
    )
    assert run.returncode == 0, run.stderr  # type: ignore[attr-defined]
    # every generator of the dataset is now missing from that table
    assert len(json.loads(run.out)["missing_generators"]) > 5  # type: ignore[attr-defined]


@pytest.mark.hub
def test_cli_licenses_reads_the_table_from_the_hub(local_hub: Any, run_cfx: Any) -> None:
    from tests.conftest import REPO

    r = run_cfx("licenses", f"hf://datasets/{REPO}", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["table"]["files"] == [
        f"hf://datasets/{REPO}@{local_hub.commit}/data/metadata/generators.csv"
    ]
    by = {e["license"]: e for e in report["licenses"]}
    assert by["creativeml-openrail-m"]["generated"] > 0  # stabilityai/stable-diffusion-2 in generators.csv
    assert by["cc-by-nc-sa-4.0"]["real_sources"] == ["FFHQ"]
    assert report["missing_generators"] == []
