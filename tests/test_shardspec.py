from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfx.errors import UsageError
from cfx.shardspec import format_shard_spec, parse_shard_spec, shard_number


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0-9,93", [*range(10), 93]),
        ("3", [3]),
        (" 1 , 4 - 6 ,2 ", [1, 2, 4, 5, 6]),
        ("5,5,4-5", [4, 5]),
        ("7-7", [7]),
        ("0,185", [0, 185]),
    ],
)
def test_parse(spec: str, expected: list[int]) -> None:
    assert parse_shard_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("9-3", "--shards: '9-3' is not a valid range"),
        ("1,x", "--shards: 'x' is not a shard number or range"),
        ("1,,2", "--shards: an empty item"),
        ("-3", "'-3' is not a shard number or range"),
        ("3-", "'3-' is not a shard number or range"),
        ("1-2-3", "'1-2-3' is not a shard number or range"),
        ("", "--shards: empty shard list"),
        ("1.5", "'1.5' is not a shard number or range"),
    ],
)
def test_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_shard_spec(spec)
    assert message in info.value.message
    assert "0-9,93" in info.value.hint


def test_range_error_text() -> None:
    with pytest.raises(UsageError) as info:
        parse_shard_spec("9-3")
    assert str(info.value) == (
        "--shards: '9-3' is not a valid range — write START-END with START <= END, e.g. 0-9,93"
    )


def test_format() -> None:
    assert format_shard_spec([5, 0, 1, 2, 9, 10]) == "0-2,5,9-10"
    assert format_shard_spec([]) == ""


@pytest.mark.parametrize(
    ("path", "number"),
    [
        ("data/HFCF_small_12.parquet", 12),
        ("HFCF_small_0.parquet", 0),
        ("data/Systematic/part-00007.parquet", 7),
        ("README.md", None),
        ("data/metadata/generators.csv", None),
    ],
)
def test_shard_number(path: str, number: int | None) -> None:
    assert shard_number(path) == number


@given(st.sets(st.integers(min_value=0, max_value=300), min_size=1))
def test_round_trip(numbers: set[int]) -> None:
    spec = format_shard_spec(numbers)
    assert parse_shard_spec(spec) == sorted(numbers)
    # the formatted spec is canonical: formatting the parse gives the same text
    assert format_shard_spec(parse_shard_spec(spec)) == spec


@given(
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 50)), min_size=1), st.sampled_from([",", " , "])
)
def test_parse_any_ranges(ranges: list[tuple[int, int]], sep: str) -> None:
    spec = sep.join(f"{a}-{a + n}" if n else str(a) for a, n in ranges)
    expected = sorted({i for a, n in ranges for i in range(a, a + n + 1)})
    assert parse_shard_spec(spec) == expected


@given(st.integers(0, 10**6))
def test_shard_number_of_formatted_name(n: int) -> None:
    assert shard_number(f"data/HFCF_small_{n}.parquet") == n
