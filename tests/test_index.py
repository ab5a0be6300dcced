"""cfx index / the manifest layer: local sources, labels, cache, pipes and bad input."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cfx.errors import BadShardError, InputError, PartialError
from cfx.index import build_manifest, normalize_labels, raise_for_bad, scan_shard
from cfx.load import load_manifest
from cfx.manifest import read_manifest, read_manifest_stream
from cfx.schema import CORE_COLUMNS, MANIFEST_SCHEMA
from cfx.sources import resolve_local
from tests.shards import rows, write_shard


def test_index_matches_source_rows(cf_small: Path) -> None:
    result = build_manifest(resolve_local(str(cf_small)))
    m = result.manifest
    assert not result.bad
    assert list(m.df.columns) == list(CORE_COLUMNS)
    assert dict(m.df.schema) == MANIFEST_SCHEMA
    shards = sorted(
        (cf_small / "data").glob("HFCF_small_*.parquet"), key=lambda p: int(p.stem.rsplit("_", 1)[1])
    )
    assert list(m.df.get_column("shard").unique(maintain_order=True)) == [f"data/{p.name}" for p in shards]
    total = 0
    for p in shards:
        src = pq.read_table(p, columns=["image_name", "resolution", "label", "model_name"])
        part = m.df.filter(pl.col("shard") == f"data/{p.name}").sort("row")
        assert part.get_column("row").to_list() == list(range(src.num_rows))
        assert part.get_column("image_name").to_list() == src.column("image_name").to_pylist()
        assert part.get_column("label").to_list() == src.column("label").to_pylist()
        total += src.num_rows
        assert m.shards[f"data/{p.name}"].size == p.stat().st_size
    assert m.df.height == total
    # width/height parsed from "[w, h]"
    res = m.df.select("resolution", "width", "height").unique()
    for r, w, h in res.iter_rows():
        assert r == f"[{w}, {h}]"


def test_num_bytes_streams_image_lengths(cf_small: Path) -> None:
    m = build_manifest(resolve_local(str(cf_small)), with_num_bytes=True).manifest
    p = cf_small / "data" / "HFCF_small_0.parquet"
    lengths = [len(b) for b in pq.read_table(p, columns=["image_data"]).column(0).to_pylist()]
    got = (
        m.df.filter(pl.col("shard") == "data/HFCF_small_0.parquet")
        .sort("row")
        .get_column("num_bytes")
        .to_list()
    )
    assert got == lengths
    # a default (cold) index leaves it unknown rather than guessing ...
    cold = build_manifest(resolve_local(str(cf_small)), use_cache=False).manifest
    assert cold.df.get_column("num_bytes").null_count() == cold.df.height
    # ... and a cached index keeps what was measured before
    assert build_manifest(resolve_local(str(cf_small))).manifest.df.get_column("num_bytes").null_count() == 0


def test_cache_hit_and_invalidation(tmp_path: Path) -> None:
    write_shard(tmp_path / "data" / "HFCF_small_0.parquet", rows(5))
    write_shard(tmp_path / "data" / "HFCF_small_1.parquet", rows(4, label=0))
    first = build_manifest(resolve_local(str(tmp_path)))
    assert first.cached == 0
    second = build_manifest(resolve_local(str(tmp_path)))
    assert second.cached == 2
    assert second.manifest.df.equals(first.manifest.df)
    # a changed shard is re-read, the other still comes from the cache
    write_shard(tmp_path / "data" / "HFCF_small_1.parquet", rows(7, label=0))
    third = build_manifest(resolve_local(str(tmp_path)))
    assert third.cached == 1
    assert third.manifest.df.height == 12


def test_natural_shard_order(tmp_path: Path) -> None:
    for i in (10, 2, 1):
        write_shard(tmp_path / "data" / f"HFCF_small_{i}.parquet", rows(1))
    m = build_manifest(resolve_local(str(tmp_path))).manifest
    assert m.df.get_column("shard").to_list() == [f"data/HFCF_small_{i}.parquet" for i in (1, 2, 10)]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 1, 1], [0, 1, 1]),
        ([True, False], [1, 0]),
        (["real", "Generated", " fake ", "0", "1"], [0, 1, 1, 0, 1]),
    ],
)
def test_label_mapping(values: list[object], expected: list[int]) -> None:
    assert normalize_labels(pa.array(values), "s").to_list() == expected


@pytest.mark.parametrize("values", [[0, 2], ["real", "maybe"], [1, None]])
def test_unknown_labels_name_shard_and_row(values: list[object]) -> None:
    with pytest.raises(BadShardError) as exc:
        normalize_labels(pa.array(values), "data/x.parquet")
    assert "data/x.parquet" in str(exc.value) and "row 1" in str(exc.value)


def test_string_label_shard_indexes(tmp_path: Path) -> None:
    schema = pa.schema([f if f.name != "label" else pa.field("label", pa.string()) for f in write_schema()])
    write_shard(tmp_path / "data" / "HFCF_small_0.parquet", rows(3, label="generated"), schema=schema)
    m = build_manifest(resolve_local(str(tmp_path))).manifest
    assert m.df.get_column("label").to_list() == [1, 1, 1]


def write_schema() -> pa.Schema:
    from cfx.schema import SOURCE_SCHEMA

    return SOURCE_SCHEMA


def test_manifest_roundtrip_parquet_and_ipc(cf_small: Path, tmp_path: Path) -> None:
    m = load_manifest(str(cf_small))
    m.history.append("index test")
    m.write(tmp_path / "m.parquet")
    back = read_manifest(tmp_path / "m.parquet")
    assert (
        back.df.equals(m.df) and back.root == m.root and back.shards == m.shards and back.history == m.history
    )
    buf = io.BytesIO()
    m.write_ipc(buf)
    again = read_manifest_stream(io.BytesIO(buf.getvalue()))
    assert again.df.equals(m.df) and again.shards == m.shards
    # a saved manifest is a valid source for every command
    assert load_manifest(str(tmp_path / "m.parquet")).df.equals(m.df)


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_index_then_stats_pipe(cfx, cf_small: Path) -> None:  # type: ignore[no-untyped-def]
    idx = cfx("index", str(cf_small))
    assert idx.returncode == 0, idx.stderr
    assert idx.stdout[:4] == b"\xff\xff\xff\xff"  # an Arrow IPC stream, not text
    st = cfx("stats", "-", "--json", input=idx.stdout)
    assert st.returncode == 0, st.stderr
    data = json.loads(st.out)
    direct = json.loads(cfx("stats", str(cf_small), "--json").out)
    assert data["totals"] == direct["totals"]
    t = data["totals"]
    assert t["rows"] == t["real"] + t["generated"] == 240
    labels = {v["value"]: v["rows"] for v in data["breakdowns"]["label"]["values"]}
    assert labels == {"real": t["real"], "generated": t["generated"]}


def test_cli_index_output_file(cfx, cf_small: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "m.parquet"
    r = cfx("index", str(cf_small), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b""
    assert read_manifest(out).df.height == 240
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_stats_breakdowns_and_plot(cfx, cf_small: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = cfx(
        "stats",
        str(cf_small),
        "--by",
        "architecture",
        "--by",
        "format",
        "--json",
        "--plot",
        str(tmp_path / "s.png"),
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.out)
    assert list(data["breakdowns"]) == ["architecture", "format"]
    assert sum(v["rows"] for v in data["breakdowns"]["format"]["values"]) == 240
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    human = cfx("stats", str(cf_small), "--top", "3")
    assert human.returncode == 0 and "by model_name" in human.out and "more (use --top)" in human.out


def test_cli_stats_unknown_by_column(cfx, cf_small: Path) -> None:  # type: ignore[no-untyped-def]
    r = cfx("stats", str(cf_small), "--by", "colour")
    assert r.returncode == 2
    assert r.stderr.startswith("Error: --by colour: no such manifest column — pick one of: shard, row")


# --- bad input -------------------------------------------------------------------------------------


def test_missing_path(cfx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = cfx("index", str(tmp_path / "nope"), "-o", str(tmp_path / "m.parquet"))
    assert r.returncode == 3
    assert "nope does not exist" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.parquet").exists()


def test_not_parquet_and_truncated_shards(cfx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "ds" / "data"
    write_shard(data / "HFCF_small_0.parquet", rows(4))
    good = write_shard(data / "HFCF_small_1.parquet", rows(4, label=0))
    (data / "HFCF_small_2.parquet").write_text("hello, not parquet")
    raw = good.read_bytes()
    (data / "HFCF_small_3.parquet").write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "m.parquet"
    r = cfx("index", str(tmp_path / "ds"), "-o", str(out))
    assert r.returncode == 6, r.stderr
    assert "data/HFCF_small_2.parquet" in r.stderr and "data/HFCF_small_3.parquet" in r.stderr
    assert "--skip-bad" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
    r = cfx("index", str(tmp_path / "ds"), "-o", str(out), "--skip-bad")
    assert r.returncode == 0, r.stderr
    assert "HFCF_small_3.parquet" in r.stderr  # still named as a warning
    m = read_manifest(out)
    assert m.df.height == 8 and set(m.shards) == {"data/HFCF_small_0.parquet", "data/HFCF_small_1.parquet"}


def test_missing_required_column(tmp_path: Path) -> None:
    table = pa.table({"image_name": ["a.png"], "image_data": [b"x"]})
    pq.write_table(table, tmp_path / "s.parquet")
    result = build_manifest(resolve_local(str(tmp_path / "s.parquet")))
    assert len(result.bad) == 1
    msg = str(result.bad[0])
    assert "missing required column(s) label" in msg and "columns found: image_name, image_data" in msg
    with pytest.raises(PartialError):
        raise_for_bad(result, skip_bad=False)


def test_optional_columns_filled_with_nulls(tmp_path: Path) -> None:
    table = pa.table({"image_data": [b"x", b"y"], "label": [0, 1]})
    pq.write_table(table, tmp_path / "s.parquet")
    result = build_manifest(resolve_local(str(tmp_path / "s.parquet")))
    assert result.manifest.df.height == 2
    assert result.manifest.df.get_column("model_name").null_count() == 2
    assert any("absent" in w for w in result.warnings)


def test_unknown_label_cli(cfx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    records = rows(3) + rows(1, label=7, start=3)
    write_shard(tmp_path / "data" / "HFCF_small_0.parquet", records)
    r = cfx("stats", str(tmp_path))
    assert r.returncode == 6
    assert "data/HFCF_small_0.parquet: row 3: unknown label 7" in r.stderr


def test_empty_stdin_and_garbage_stdin(cfx) -> None:  # type: ignore[no-untyped-def]
    r = cfx("stats", "-", input=b"")
    assert r.returncode == 3 and "no manifest was piped in" in r.stderr
    r = cfx("stats", "-", input=b"garbage bytes")
    assert r.returncode == 3 and "is not a cfx manifest (Arrow IPC stream)" in r.stderr


def test_plain_parquet_is_not_a_manifest(tmp_path: Path) -> None:
    # a shard file given as SOURCE is indexed, not mistaken for a manifest
    p = write_shard(tmp_path / "data" / "HFCF_small_0.parquet", rows(2))
    m = load_manifest(str(p))
    assert m.df.height == 2 and m.root == str(tmp_path)
    with pytest.raises(InputError, match="not a cfx manifest"):
        read_manifest(p)


def test_glob_source(tmp_path: Path) -> None:
    for i in range(3):
        write_shard(tmp_path / "data" / f"HFCF_small_{i}.parquet", rows(2))
    m = load_manifest(str(tmp_path / "data" / "HFCF_small_[01].parquet"))
    assert m.df.get_column("shard").unique().sort().to_list() == [
        "data/HFCF_small_0.parquet",
        "data/HFCF_small_1.parquet",
    ]
    assert m.root == str(tmp_path)


class _CountingFile(io.FileIO):
    read_bytes = 0

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        data = super().read(n)
        _CountingFile.read_bytes += len(data)
        return data

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def,override]
        n = super().readinto(b)
        _CountingFile.read_bytes += n or 0
        return n  # type: ignore[return-value]


class _CountingFS:
    """An fsspec-shaped filesystem that counts the bytes read (stands in for HfFileSystem's opener)."""

    def open(self, path: str, mode: str = "rb", **kwargs: object) -> io.FileIO:
        return _CountingFile(path, "rb")


def test_index_reads_only_metadata_bytes(tmp_path: Path) -> None:
    """A shard of 40 MB of images is indexed reading < 2% of it: the image column is never fetched."""
    big = [dict(r, image_data=os.urandom(2_000_000)) for r in rows(20)]
    p = write_shard(tmp_path / "data" / "HFCF_small_0.parquet", big)
    ref = resolve_local(str(p)).shards[0]
    _CountingFile.read_bytes = 0
    df, _ = scan_shard(ref, _CountingFS())
    assert df.height == 20
    assert 0 < _CountingFile.read_bytes < 0.02 * p.stat().st_size, (
        _CountingFile.read_bytes,
        p.stat().st_size,
    )


def test_value_counts_merge_values_that_read_the_same() -> None:
    from cfx.stats import value_counts

    df = pl.DataFrame({"label": [1, 1, 0, 1], "architecture": ["GAN", None, "(null)", None]})
    assert value_counts(df, "architecture") == [("(null)", 3, 1, 2), ("GAN", 1, 0, 1)]
    assert value_counts(df, "label") == [("generated", 3, 0, 3), ("real", 1, 1, 0)]
    assert value_counts(df, "no_such_column") == []


def test_network_errors_are_told_from_bad_data() -> None:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    from cfx.sources import is_network_error

    request = httpx2.Request("GET", "https://hub.example/x")
    status = HfHubHTTPError("503 Server Error", response=httpx2.Response(503, request=request))
    refused = httpx2.ConnectError("connection refused", request=request)
    for exc in (
        status,
        refused,
        httpx2.ReadTimeout("timed out", request=request),
        ConnectionResetError(104, "reset"),
    ):
        assert is_network_error(exc), exc
    try:  # the cause is what counts: pyarrow or fsspec may wrap it
        try:
            raise refused
        except httpx2.ConnectError as inner:
            raise OSError("read failed") from inner
    except OSError as outer:
        assert is_network_error(outer)
    for exc in (
        OSError(28, "No space left on device"),
        pa.ArrowInvalid("Parquet magic bytes not found"),
        EOFError(),
    ):
        assert not is_network_error(exc), exc
