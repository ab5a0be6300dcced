"""Shard specs: ``"0-9,93"`` <-> ``[0, 1, ..., 9, 93]``, and the shard number in a shard's file name."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from cfx.errors import UsageError

_SINGLE = re.compile(r"^\d+$")
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_TRAILING_INT = re.compile(r"(\d+)$")
_EXAMPLE = "e.g. 0-9,93"
MAX_SHARD_NUMBER = 2**63 - 1  # beyond int64 a number names no file anyone wrote
MAX_ITEMS = 10_000  # comma-separated items in one spec


@dataclass(frozen=True)
class ShardSet:
    """Shard numbers as sorted, merged, inclusive ranges: ``0-99999999999`` costs one pair, not a list.

    Test membership, intersect with the shards a source has, or list the wanted numbers a source lacks,
    all without expanding the ranges.
    """

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, numbers: Iterable[int]) -> ShardSet:
        return cls(_merge((n, n) for n in numbers))

    def __contains__(self, n: object) -> bool:
        if not isinstance(n, int):
            return False
        i = bisect.bisect_right(self.ranges, (n, MAX_SHARD_NUMBER + 1)) - 1
        return i >= 0 and self.ranges[i][0] <= n <= self.ranges[i][1]

    def __len__(self) -> int:
        return sum(b - a + 1 for a, b in self.ranges)

    def __iter__(self) -> Iterator[int]:
        for a, b in self.ranges:
            yield from range(a, b + 1)

    def intersect(self, numbers: Iterable[int | None]) -> list[int]:
        """The numbers of ``numbers`` in this set, sorted, without repeats."""
        return sorted({n for n in numbers if n is not None and n in self})

    def without(self, numbers: Iterable[int | None]) -> ShardSet:
        """This set minus ``numbers`` (e.g. the wanted shards a source does not have), still as ranges."""
        holes = sorted({n for n in numbers if n is not None})
        out: list[tuple[int, int]] = []
        for a, b in self.ranges:
            lo = a
            for n in holes[bisect.bisect_left(holes, a) : bisect.bisect_right(holes, b)]:
                if n > lo:
                    out.append((lo, n - 1))
                lo = n + 1
            if lo <= b:
                out.append((lo, b))
        return ShardSet(tuple(out))

    def up_to(self, hi: int) -> ShardSet:
        """The part of this set at or below ``hi``."""
        return ShardSet(tuple((a, min(b, hi)) for a, b in self.ranges if a <= hi))

    def __str__(self) -> str:
        return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in self.ranges)


def _merge(pairs: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(pairs):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return tuple(merged)


def parse_shard_set(spec: str, option: str = "--shards") -> ShardSet:
    """The shard numbers in ``spec`` (comma-separated singles and START-END ranges) as ranges.

    Raises ``UsageError`` naming the first bad item, and for absurd specs (a number beyond int64, more than
    MAX_ITEMS items).
    """
    if not spec.strip():
        raise UsageError(f"{option}: empty shard list", f"give shard numbers and ranges, {_EXAMPLE}")
    items = spec.split(",")
    if len(items) > MAX_ITEMS:
        raise UsageError(
            f"{option}: {len(items):,} items is too many (at most {MAX_ITEMS:,})",
            f"write runs as START-END ranges, {_EXAMPLE}",
        )
    return ShardSet(_merge(_parse_item(raw.strip(), option) for raw in items))


def _parse_item(token: str, option: str) -> tuple[int, int]:
    m = _RANGE.match(token)
    if _SINGLE.match(token):
        start = end = int(token)
    elif m is not None:
        start, end = int(m.group(1)), int(m.group(2))
    else:
        what = "an empty item" if not token else f"'{token}' is not a shard number or range"
        raise UsageError(
            f"{option}: {what}", f"write numbers and START-END ranges separated by commas, {_EXAMPLE}"
        )
    if start > end:
        raise UsageError(
            f"{option}: '{token}' is not a valid range", f"write START-END with START <= END, {_EXAMPLE}"
        )
    if end > MAX_SHARD_NUMBER:
        raise UsageError(
            f"{option}: '{token}' is beyond any shard number (at most {MAX_SHARD_NUMBER})",
            f"for 'every shard from N on' write N-{MAX_SHARD_NUMBER}, or a smaller range, {_EXAMPLE}",
        )
    return start, end


def parse_shard_spec(spec: str, option: str = "--shards") -> list[int]:
    """Shard numbers in ``spec``, sorted, without repeats, as a list: for specs known to be small.

    Use ``parse_shard_set`` to match a spec against a source: it never expands a range.
    """
    shard_set = parse_shard_set(spec, option)
    if len(shard_set) > 1_000_000:
        raise UsageError(f"{option}: {spec!r} names more than a million shards", f"narrow it, {_EXAMPLE}")
    return list(shard_set)


def format_shard_spec(numbers: Iterable[int]) -> str:
    """The shortest spec for ``numbers``: consecutive runs become ranges (``[0, 1, 2, 5]`` -> ``"0-2,5"``)."""
    items = sorted(set(numbers))
    if any(n < 0 for n in items):
        raise ValueError("shard numbers are >= 0")
    parts: list[str] = []
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        parts.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(parts)


def shard_number(path: str) -> int | None:
    """The trailing integer of the file stem (``data/HFCF_small_12.parquet`` -> 12), or None."""
    stem = PurePosixPath(path).name.split(".", 1)[0]
    m = _TRAILING_INT.search(stem)
    return int(m.group(1)) if m else None
