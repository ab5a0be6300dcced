"""Shard specs: ``"0-9,93"`` <-> ``[0, 1, ..., 9, 93]``, and the shard number in a shard's file name."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from cfx.errors import UsageError

_SINGLE = re.compile(r"^\d+$")
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_TRAILING_INT = re.compile(r"(\d+)$")
_EXAMPLE = "e.g. 0-9,93"


def parse_shard_spec(spec: str, option: str = "--shards") -> list[int]:
    """Shard numbers in ``spec`` (comma-separated singles and START-END ranges), sorted, without repeats.

    Raises ``UsageError`` naming the first bad item.
    """
    if not spec.strip():
        raise UsageError(f"{option}: empty shard list", f"give shard numbers and ranges, {_EXAMPLE}")
    numbers: set[int] = set()
    for raw in spec.split(","):
        token = raw.strip()
        if _SINGLE.match(token):
            numbers.add(int(token))
            continue
        m = _RANGE.match(token)
        if m is None:
            what = "an empty item" if not token else f"'{token}' is not a shard number or range"
            raise UsageError(
                f"{option}: {what}", f"write numbers and START-END ranges separated by commas, {_EXAMPLE}"
            )
        start, end = int(m.group(1)), int(m.group(2))
        if start > end:
            raise UsageError(
                f"{option}: '{token}' is not a valid range",
                f"write START-END with START <= END, {_EXAMPLE}",
            )
        numbers.update(range(start, end + 1))
    return sorted(numbers)


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
