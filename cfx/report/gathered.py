"""What ``cfx.report.build.gather`` collects and the page renders (its own module: build uses the page, the
page only reads this)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from cfx.manifest import Manifest


@dataclass
class Gathered:
    report: dict[str, Any]
    manifest: Manifest  # with byte facts / hashes where they were cached
    browse: pl.DataFrame
    against: Manifest | None = None
    thumbs: dict[str, dict[tuple[str, int], str]] = field(default_factory=dict)
