"""cfx.pages, the page-level reader of the image column, against pyarrow's own reader on real parquet files."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfx import pages, stream
from cfx.errors import BadShardError
from cfx.manifest import Manifest
from cfx.pages import codecs, reader

SHARD = "data/s.parquet"


def _values(n: int, seed: int, null_every: int, repeat: bool) -> list[bytes | None]:
    rng = np.random.default_rng(seed)
    out: list[bytes | None] = []
    for i in range(n):
        if null_every and i % null_every == 1:
            out.append(None)
        elif repeat and i % 3 == 2:
            out.append(out[int(rng.integers(0, i))])  # an earlier value again (or an earlier null)
        else:
            size = int(rng.integers(0, 2500))
            # half noise (incompressible), half few-symbol bytes (long snappy/LZ4 copies, overlapping ones too)
            data = rng.bytes(size) if i % 2 else bytes(rng.integers(0, 3, size, dtype=np.uint8))
            out.append(data)
    return out


def _write(root: Path, values: list[bytes | None], **options: object) -> Path:
    n = len(values)
    table = pa.table({"label": pa.array(np.arange(n) % 2), "image_data": pa.array(values, pa.binary())})
    path = root / SHARD
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **options)  # type: ignore[arg-type]
    return path


def _read(root: Path, rows: np.ndarray | None, columns: tuple[str, ...] | None) -> pa.Table:
    m = Manifest(df=pl.DataFrame(), root=str(root), shards={})
    batches = list(stream.iter_shard_batches(m, SHARD, rows, columns, batch_rows=5))
    assert all(b.num_rows <= 5 for b in batches)
    return pa.Table.from_batches(batches) if batches else pa.table({})


@contextmanager
def _streaming(on: bool) -> Iterator[None]:
    """Decode every page as a stream, read in tiny pieces, with a tiny dictionary cache (on), or as shipped."""
    saved = codecs.WHOLE_PAGE_BYTES, codecs.OUT_STEP, reader.CHUNK, reader.DICT_CACHE_BYTES
    if on:
        codecs.WHOLE_PAGE_BYTES, codecs.OUT_STEP, reader.CHUNK, reader.DICT_CACHE_BYTES = 0, 3001, 777, 3000
    try:
        yield
    finally:
        codecs.WHOLE_PAGE_BYTES, codecs.OUT_STEP, reader.CHUNK, reader.DICT_CACHE_BYTES = saved


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    codec=st.sampled_from(["none", "snappy", "gzip", "zstd", "lz4"]),
    version=st.sampled_from(["1.0", "2.0"]),
    n=st.integers(1, 90),
    null_every=st.sampled_from([0, 2, 5]),
    repeat=st.booleans(),
    dictionary=st.booleans(),
    page_size=st.sampled_from([1, 3000, 1 << 20]),
    batch_size=st.sampled_from([1, 7, 64, 1024]),
    group_size=st.sampled_from([4, 25, 1 << 20]),
    pick=st.sampled_from(["all", "none", "empty", "first", "last", "sample"]),
    streaming=st.booleans(),
    all_columns=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_reader_equals_pyarrow(
    codec: str,
    version: str,
    n: int,
    null_every: int,
    repeat: bool,
    dictionary: bool,
    page_size: int,
    batch_size: int,
    group_size: int,
    pick: str,
    streaming: bool,
    all_columns: bool,
    seed: int,
) -> None:
    """Row for row and byte for byte what pyarrow reads, whatever the codec, page version, nulls, repeats,
    dictionary, page cuts, row groups and selection."""
    values = _values(n, seed, null_every, repeat)
    rng = np.random.default_rng(seed)
    rows = {
        "all": None,
        "none": None,
        "empty": np.array([], np.int64),
        "first": np.array([0]),
        "last": np.array([n - 1]),
        "sample": np.unique(rng.integers(0, n, max(1, n // 4))),
    }[pick]
    with tempfile.TemporaryDirectory() as tmp, _streaming(streaming):
        root = Path(tmp)
        path = _write(
            root,
            values,
            compression=codec,
            data_page_version=version,
            use_dictionary=dictionary,
            data_page_size=page_size,
            write_batch_size=batch_size,
            row_group_size=group_size,
        )
        assert pages.unsupported(pq.ParquetFile(path), "image_data") is None
        got = _read(root, rows, None if all_columns else ("image_data",))
        want = pq.read_table(path)
        if rows is not None:
            want = want.take(pa.array(rows, pa.int64()))
    if got.num_rows == 0:
        assert want.num_rows == 0
        return
    assert got.column("__row").to_pylist() == (list(range(n)) if rows is None else rows.tolist())
    assert got.column("image_data").to_pylist() == want.column("image_data").to_pylist()
    if all_columns:
        assert got.drop_columns(["__row"]).equals(want)


def test_large_pages_stream_in_constant_memory_pieces(tmp_path: Path) -> None:
    """A page bigger than WHOLE_PAGE_BYTES goes through the streaming decoders (not pyarrow's whole-page
    codec): every codec, the dictionary page included, equal to pyarrow."""
    big = [os.urandom(300_000) for _ in range(40)]  # a 12 MB dictionary page: above the 8 MB whole-page limit
    made: list[str] = []
    for codec in ("snappy", "lz4", "zstd", "gzip", "none"):
        path = _write(tmp_path, big, compression=codec)
        with open(path, "rb") as f:
            layout = pages.read_layout(pages.Source(f), pq.ParquetFile(path), "image_data")
        assert layout.largest_page > codecs.WHOLE_PAGE_BYTES
        seen: list[str] = []
        original = codecs._STREAMING.copy()

        def spy(name: str, cls: type, seen: list[str] = seen) -> type:
            def make(chunks):  # type: ignore[no-untyped-def]
                seen.append(name)
                return cls(chunks)

            return make  # type: ignore[return-value]

        codecs._STREAMING.update({k: spy(k, v) for k, v in original.items()})
        try:
            got = _read(tmp_path, np.array([0, 17, 39]), ("image_data",))
        finally:
            codecs._STREAMING.update(original)
        assert got.column("image_data").to_pylist() == [big[0], big[17], big[39]]
        assert seen or codec == "none", codec
        made.append(codec)
    assert len(made) == 5


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"compression": "brotli"}, "codec BROTLI"),
        (
            {"use_dictionary": False, "column_encoding": {"image_data": "DELTA_LENGTH_BYTE_ARRAY"}},
            "encoding DELTA_LENGTH_BYTE_ARRAY",
        ),
    ],
)
def test_fallback_to_pyarrow_is_taken_and_said_once(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    options: dict,
    reason: str,
) -> None:
    monkeypatch.setattr(stream, "_NOTED", set())
    values = _values(30, 1, 5, True)
    path = _write(tmp_path, values, **options)
    assert pages.unsupported(pq.ParquetFile(path), "image_data") == reason
    used = []
    monkeypatch.setattr(stream._Read, "_paged", lambda *a: used.append(a) or iter(()))
    for rows in (None, np.array([3, 29])):
        got = _read(tmp_path, rows, None)
        want = pq.read_table(path)
        if rows is not None:
            want = want.take(pa.array(rows))
        assert got.drop_columns(["__row"]).equals(want)
    err = capfd.readouterr().err
    assert err.count("note: the image column is read by pyarrow") == 1 and reason in err, err
    assert not used  # the page reader was not asked


def test_damaged_page_header_is_a_bad_shard(tmp_path: Path) -> None:
    values = _values(40, 2, 0, False)
    path = _write(tmp_path, values, use_dictionary=False, data_page_size=2000, write_batch_size=4)
    col = pq.ParquetFile(path).metadata.row_group(0).column(1)
    data = bytearray(path.read_bytes())
    data[col.data_page_offset : col.data_page_offset + 12] = b"\xff" * 12
    path.write_bytes(bytes(data))
    with pytest.raises(BadShardError, match="s.parquet"):
        _read(tmp_path, None, ("image_data",))


def test_only_the_row_groups_and_pages_holding_wanted_rows_are_read(tmp_path: Path) -> None:
    """An Eval-like file (5 row groups of 25 rows): one wanted row costs about its page, not the file."""
    values = [os.urandom(20_000) for _ in range(125)]
    path = _write(
        tmp_path, values, row_group_size=25, use_dictionary=False, write_batch_size=5, data_page_size=1
    )
    pf = pq.ParquetFile(path)
    size = path.stat().st_size
    for row in (0, 62, 124):
        (group,) = pages.row_groups(pf, np.array([row]))
        with open(path, "rb") as f:
            src = pages.Source(f)
            got = list(pages.iter_column(src, pf, "image_data", group))
        assert got == [(row, values[row])]
        # pages of 5 values (~100 KB): the wanted one, plus a header probe for each page before it
        assert src.fetched < 5 * 20_000 + 5 * pages.reader.header.HEADER_PROBE + 50_000, (row, src.fetched)
        assert src.fetched < size / 10


def test_index_layout_shows_row_groups_and_pages(tmp_path: Path, cfx) -> None:  # type: ignore[no-untyped-def]
    """`cfx index --layout`: the row groups and the image column's pages, read from the page headers."""
    values = _values(60, 3, 0, False)
    _write(
        tmp_path / "ds",
        values,
        row_group_size=25,
        use_dictionary=False,
        write_batch_size=10,
        data_page_size=1,
    )
    r = cfx("index", "ds", "--layout", "--json")
    assert r.returncode == 0, r.stderr
    (shard,) = json.loads(r.out)
    pf = pq.ParquetFile(tmp_path / "ds" / SHARD)
    assert shard["shard"] == SHARD and shard["rows"] == 60 and shard["rows_per_group"] == [25, 25, 10]
    assert shard["pages"] == 3 + 3 + 1 and shard["dictionary_pages"] == 0  # pages cut every 10 values
    assert (
        shard["encodings"] == {"PLAIN": 7}
        and shard["page_index"] == pf.metadata.row_group(0).column(1).has_offset_index
    )
    assert shard["reader"] == "pages" and shard["codec"] == "SNAPPY"
    assert shard["largest_page"] >= max(len(v or b"") for v in values)
    r = cfx("index", "ds", "--layout")
    assert r.returncode == 0 and "SNAPPY" in r.out


def test_workers_are_capped_to_fit_memory(cf_small: Path, cfx) -> None:  # type: ignore[no-untyped-def]
    capped = cfx(
        "dedupe", str(cf_small), "--workers", "2", "--no-cache", "--json", env={"CFX_MEMORY": "500MB"}
    )
    assert capped.returncode == 0, capped.stderr
    assert "--workers 2 capped to 1" in capped.stderr and "CFX_MEMORY" in capped.stderr
    free = cfx("dedupe", str(cf_small), "--workers", "2", "--no-cache", "--json", env={"CFX_MEMORY": "64GB"})
    assert free.returncode == 0 and "capped" not in free.stderr
    drop = lambda d: {k: v for k, v in d.items() if k != "timings"}  # noqa: E731
    assert drop(json.loads(capped.out)) == drop(json.loads(free.out))


@pytest.mark.hub
def test_hub_selection_fetches_only_its_row_group(local_hub, run_cfx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Over hf://, a row of an Eval-like file (5 row groups of 25 rows) costs its row group, not the rows
    before it: nginx's log counts the bytes sent (206 range responses only)."""
    values = [os.urandom(60_000) for _ in range(125)]
    path = _write(tmp_path / "src", values, row_group_size=25)
    repo, rel = "cfx-tests/eval-like", "data/CompEval-00000-of-00001.parquet"
    local_hub.hub.create_repo(repo, {"README.md": b"eval-like\n", rel: path})
    meta = pq.ParquetFile(path).metadata
    group = meta.row_group(2)  # holds row 60
    group_bytes = sum(group.column(c).total_compressed_size for c in range(group.num_columns))
    mark = local_hub.hub.log_mark()
    r = run_cfx("subset", f"hf://datasets/{repo}", "--out", str(tmp_path / "one"), "--where", "row = 60")
    assert r.returncode == 0, r.stderr
    sent = [e for e in local_hub.hub.entries_since(mark, rel) if e.method == "GET"]
    assert sent and all(e.status == 206 for e in sent)
    fetched = sum(e.body_bytes_sent for e in sent)
    # the row group + the footer and the small columns read by the index pass; reading from row 0 as pyarrow's
    # iter_batches does would cost 3 row groups
    assert fetched <= 1.2 * group_bytes + 100_000, (fetched, group_bytes)
    (out,) = (tmp_path / "one" / "data").glob("*.parquet")
    assert pq.read_table(out).column("image_data").to_pylist() == [values[60]]


def test_a_page_found_undecodable_midway_falls_back_from_the_next_row(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some limits show only inside a page (Hadoop-framed LZ4, a copy beyond the window): the rows already
    yielded stay, pyarrow reads the rest, every row comes once and equal, and it is said once."""
    monkeypatch.setattr(stream, "_NOTED", set())
    values = _values(60, 4, 5, False)
    path = _write(tmp_path, values, use_dictionary=False, write_batch_size=10, data_page_size=1)
    opened = []
    real = codecs.open_stream

    def third_page_fails(codec: str, *args):  # type: ignore[no-untyped-def]
        opened.append(codec)
        if len(opened) == 3:
            raise codecs.Unsupported("codec LZ4 (Hadoop framing)")
        return real(codec, *args)

    monkeypatch.setattr(codecs, "open_stream", third_page_fails)
    got = _read(tmp_path, None, ("image_data",))
    assert got.column("__row").to_pylist() == list(range(60))
    assert got.column("image_data").to_pylist() == pq.read_table(path).column("image_data").to_pylist()
    assert len(opened) == 3
    err = capfd.readouterr().err
    assert err.count("note: the image column is read by pyarrow") == 1 and "Hadoop framing" in err


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), flips=st.integers(1, 8), codec=st.sampled_from(["snappy", "none", "zstd"]))
def test_damaged_image_column_is_a_bad_shard_or_read(seed: int, flips: int, codec: str) -> None:
    """Random bytes of the image column chunk overwritten: every read ends with rows or a BadShardError
    naming the shard — never another exception, never a hang."""
    values = _values(40, seed, 5, True)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = _write(root, values, compression=codec, write_batch_size=8, data_page_size=3000)
        col = pq.ParquetFile(path).metadata.row_group(0).column(1)
        start = col.dictionary_page_offset or col.data_page_offset
        data = bytearray(path.read_bytes())
        for pos in rng.integers(start, start + col.total_compressed_size, flips):
            data[int(pos)] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))
        try:
            got = _read(root, None, ("image_data",))
        except BadShardError as exc:
            assert "s.parquet" in str(exc)
        else:
            assert got.num_rows == 40
