"""Byte sizes: parse what users type (``500MB``, ``2GiB``) and print sizes for people."""

from __future__ import annotations

import re

from cfx.errors import UsageError

_SIZE_RE = re.compile(r"^\s*([\d.]+)\s*([kmgt]?i?b?)?\s*$", re.I)


def parse_size(text: str, option: str = "size") -> int:
    """``500MB`` → 500_000_000, ``2GiB`` → 2 * 2**30, ``123`` → 123 bytes (decimal units unless ``i``)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"{option} {text!r} is not a size", "write e.g. 500MB, 2GB or 1GiB")
    unit = (m[2] or "").lower().rstrip("b")
    base = 1024 if unit.endswith("i") else 1000
    power = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}[unit.rstrip("i")]
    try:
        value = int(float(m[1]) * base**power)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a size", "write e.g. 500MB") from None
    if value < 1:
        raise UsageError(f"{option} must be positive", "write e.g. 500MB")
    return value


def human_bytes(n: float | None) -> str:
    """1234567 → '1.2 MB' (decimal units); None → 'unknown'."""
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{int(size)} B" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{size:,.1f} TB"
