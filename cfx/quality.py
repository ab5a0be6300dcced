"""Quality issues (cleanvision's kinds) from the pixel facts, counted per label — and dropped on request.

Each kind is a documented threshold on the pixel facts of `cfx inspect --pixels` (cfx/pixelfacts.py) or on the
size columns. The thresholds follow cleanvision's defaults where its score maps onto a fact cfx has; for the
others they are stated here and in docs/audit.md:

- ``dark``: luma_mean + 2·luma_std < 82 (≈ 0.32 × 255: even the bright end of the picture is dim; cleanvision
  scores darkness by a high brightness percentile, threshold 0.32);
- ``overexposed``: luma_mean − 2·luma_std > 242 (≈ 0.95 × 255: even the dark end is bright; cleanvision
  "light", threshold 0.05 on 1 − a low percentile);
- ``blurry``: sharpness (variance of the Laplacian of luma) < 100, the usual rule of thumb
  (Pech-Pacheco et al. 2000);
- ``low-information``: entropy of the luma histogram < 3 bits (cleanvision: 0.3 × its normalising 10 bits);
- ``near-uniform``: luma_std < 3 grey levels (one flat colour);
- ``grayscale``: saturation_mean < 0.01 in a picture stored with colour channels (mode RGB, RGBA, CMYK, …;
  cleanvision's "grayscale": R = G = B) — three channels carrying one;
- ``odd-aspect``: min(width, height) / max(width, height) < 0.35 (cleanvision's odd_aspect_ratio, 0.35).

An issue is a shortcut when it hits one label more than the other: it is flagged when the difference is not
chance (two-proportion z ≥ ``MIN_Z``) and either large — the issue as a one-bit predictor has an AUROC
(0.5 + |rate difference| / 2) above the audit's threshold — or lopsided: one label's rate at least ``RATE_RATIO``
times the other's (a rare issue that is still a sure sign of one label).
Rows whose facts are unknown (not pixel-inspected, or ``pixel_error``) are left out of a kind's rates and
counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from cfx.defaults import AUDIT_THRESHOLD
from cfx.errors import InputError, UsageError
from cfx.manifest import Manifest
from cfx.schema import GENERATED, REAL

RATE_RATIO = 2.0
MIN_Z = 3.0
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F", "P")  # stored as one channel (P: a palette, judged elsewhere)


@dataclass(frozen=True)
class IssueKind:
    name: str
    description: str  # with its threshold
    needs: tuple[str, ...]
    expr: Callable[[Sequence[str]], pl.Expr]  # True / False, null when unknown


def _fact(name: str, columns: Sequence[str]) -> pl.Expr:
    """A pixel fact as a float, null where the image could not be decoded (pixel_error)."""
    value = pl.col(name).cast(pl.Float64)
    if "pixel_error" in columns:
        value = pl.when(pl.col("pixel_error").is_null()).then(value)
    return pl.when(value.is_finite()).then(value)


def _grayscale(columns: Sequence[str]) -> pl.Expr:
    grey = _fact("saturation_mean", columns) < 0.01
    if "mode" not in columns:
        return grey
    return grey & ~pl.col("mode").cast(pl.String).fill_null("RGB").is_in(GREY_MODES)


def _odd_aspect(columns: Sequence[str]) -> pl.Expr:
    w, h = pl.col("width").cast(pl.Float64), pl.col("height").cast(pl.Float64)
    ok = (w > 0) & (h > 0)
    return pl.when(ok).then(pl.min_horizontal(w, h) / pl.max_horizontal(w, h) < 0.35)


KINDS: tuple[IssueKind, ...] = (
    IssueKind(
        "dark",
        "luma_mean + 2·luma_std < 82 (the bright end is dim)",
        ("luma_mean", "luma_std"),
        lambda c: _fact("luma_mean", c) + 2 * _fact("luma_std", c) < 82,
    ),
    IssueKind(
        "overexposed",
        "luma_mean − 2·luma_std > 242 (the dark end is bright)",
        ("luma_mean", "luma_std"),
        lambda c: _fact("luma_mean", c) - 2 * _fact("luma_std", c) > 242,
    ),
    IssueKind(
        "blurry",
        "sharpness (variance of the Laplacian) < 100",
        ("sharpness",),
        lambda c: _fact("sharpness", c) < 100,
    ),
    IssueKind(
        "low-information",
        "luma histogram entropy < 3 bits",
        ("entropy",),
        lambda c: _fact("entropy", c) < 3,
    ),
    IssueKind(
        "near-uniform",
        "luma_std < 3 grey levels (one flat colour)",
        ("luma_std",),
        lambda c: _fact("luma_std", c) < 3,
    ),
    IssueKind(
        "grayscale",
        "saturation_mean < 0.01 in a picture stored with colour channels (RGB)",
        ("saturation_mean",),
        _grayscale,
    ),
    IssueKind(
        "odd-aspect",
        "min(width, height) / max(width, height) < 0.35",
        ("width", "height"),
        _odd_aspect,
    ),
)
KIND_NAMES = tuple(k.name for k in KINDS)
_BY_NAME = {k.name: k for k in KINDS}
_ALIASES = {"light": "overexposed", "low_information": "low-information", "odd_aspect_ratio": "odd-aspect"}


@dataclass
class IssueCount:
    kind: str
    description: str
    real: int  # rows with the issue
    generated: int
    real_known: int  # rows whose facts are known (the denominators)
    generated_known: int
    real_unknown: int
    generated_unknown: int
    threshold: float = AUDIT_THRESHOLD

    @property
    def real_rate(self) -> float:
        return self.real / self.real_known if self.real_known else 0.0

    @property
    def generated_rate(self) -> float:
        return self.generated / self.generated_known if self.generated_known else 0.0

    @property
    def auroc(self) -> float:
        """The issue as a one-bit label predictor: 0.5 + |rate difference| / 2 (symmetrised AUROC)."""
        return 0.5 + abs(self.generated_rate - self.real_rate) / 2

    @property
    def z(self) -> float:
        """Two-proportion z statistic of the rate difference (0 when either label has no known row)."""
        n1, n2 = self.real_known, self.generated_known
        if not n1 or not n2:
            return 0.0
        pooled = (self.real + self.generated) / (n1 + n2)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        return abs(self.generated_rate - self.real_rate) / se if se else 0.0

    @property
    def shortcut(self) -> bool:
        low, high = sorted((self.real_rate, self.generated_rate))
        return self.z >= MIN_Z and (self.auroc > self.threshold or high >= RATE_RATIO * low)

    @property
    def more_in(self) -> str:
        if self.generated_rate == self.real_rate:
            return ""
        return "generated" if self.generated_rate > self.real_rate else "real"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": self.description,
            "real": self.real,
            "generated": self.generated,
            "real_rate": round(self.real_rate, 6),
            "generated_rate": round(self.generated_rate, 6),
            "unknown": {"real": self.real_unknown, "generated": self.generated_unknown},
            "auroc": round(self.auroc, 6),
            "z": round(self.z, 3),
            "shortcut": self.shortcut,
            "more_in": self.more_in,
        }


@dataclass
class QualityReport:
    issues: list[IssueCount]
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def shortcuts(self) -> list[IssueCount]:
        return [i for i in self.issues if i.shortcut]

    def to_json(self) -> dict[str, Any]:
        return {
            "issues": [i.to_json() for i in self.issues],
            "shortcuts": [i.kind for i in self.shortcuts],
            "skipped": self.skipped,
            "rule": f"shortcut: two-proportion z ≥ {MIN_Z:g} and (AUROC above the threshold or one label's "
            f"rate ≥ {RATE_RATIO:g}× the other's)",
        }


def _missing(kind: IssueKind, columns: Sequence[str]) -> list[str]:
    return [c for c in kind.needs if c not in columns]


def quality_issues(df: pl.DataFrame, threshold: float = AUDIT_THRESHOLD) -> QualityReport:
    """Count every kind whose columns the manifest has, per label (see module doc)."""
    issues: list[IssueCount] = []
    skipped: list[dict[str, str]] = []
    for kind in KINDS:
        absent = _missing(kind, df.columns)
        if absent:
            skipped.append(
                {
                    "kind": kind.name,
                    "reason": f"no {', '.join(absent)} in the manifest: add pixel facts with "
                    "`cfx inspect SOURCE --pixels -o inspected.parquet`",
                }
            )
            continue
        issues.append(_count(df, kind, threshold))
    return QualityReport(issues, skipped)


def _count(df: pl.DataFrame, kind: IssueKind, threshold: float) -> IssueCount:
    row: dict[str, int] = {}
    for side, value in (("real", REAL), ("generated", GENERATED)):
        flag = kind.expr(df.columns).filter(pl.col("label") == value)
        row |= df.select(
            flag.fill_null(False).cast(pl.Int64).sum().alias(f"hit_{side}"),
            flag.is_not_null().sum().alias(f"known_{side}"),
            flag.is_null().sum().alias(f"unknown_{side}"),
        ).row(0, named=True)
    return IssueCount(
        kind.name,
        kind.description,
        int(row["hit_real"]),
        int(row["hit_generated"]),
        int(row["known_real"]),
        int(row["known_generated"]),
        int(row["unknown_real"]),
        int(row["unknown_generated"]),
        threshold,
    )


# --- dropping rows with issues (cfx subset / export --drop-quality-issues) ---------------------------
def parse_kinds(values: Iterable[str]) -> list[str]:
    """'dark,blurry' (repeatable) -> known kind names, in the order of KINDS; an unknown one is a usage error."""
    names: list[str] = []
    for value in values:
        for part in value.split(","):
            text = part.strip().lower()
            if not text:
                continue
            name = _ALIASES.get(text, text)
            if name not in _BY_NAME:
                raise UsageError(
                    f"--drop-quality-issues: unknown kind {part.strip()!r}",
                    f"use one or more of {', '.join(KIND_NAMES)} (comma-separated)",
                )
            names.append(name)
    if not names:
        raise UsageError(
            "--drop-quality-issues was given no kind", f"name one or more of {', '.join(KIND_NAMES)}"
        )
    return [k for k in KIND_NAMES if k in names]


@dataclass
class DropReport:
    kinds: list[str]
    dropped: dict[str, dict[str, int]]  # kind -> {"real": n, "generated": n} (a row may have several issues)
    removed: dict[str, int]  # rows removed per label (each row once)
    unknown: dict[str, int]  # rows kept because their facts are unknown, per label

    def to_json(self) -> dict[str, Any]:
        return {
            "kinds": self.kinds,
            "dropped": self.dropped,
            "removed": self.removed,
            "unknown": self.unknown,
        }

    def summary(self) -> str:
        per = ", ".join(
            f"{k} {v['real']:,} real / {v['generated']:,} generated" for k, v in self.dropped.items()
        )
        line = (
            f"dropped quality issues: {self.removed['real']:,} real + {self.removed['generated']:,} generated "
            f"row(s) ({per})"
        )
        if any(self.unknown.values()):
            line += (
                f"; {self.unknown['real']:,} real + {self.unknown['generated']:,} generated row(s) without "
                "pixel facts kept"
            )
        return line


def drop_quality_issues(manifest: Manifest, kinds: Sequence[str]) -> tuple[Manifest, DropReport]:
    """``manifest`` without the rows that have any of ``kinds`` (rows whose facts are unknown are kept and
    counted). A kind whose pixel facts the manifest lacks is an input error naming `cfx inspect --pixels`."""
    df = manifest.df
    for name in kinds:
        absent = _missing(_BY_NAME[name], df.columns)
        if absent:
            raise InputError(
                f"--drop-quality-issues {name}: the manifest has no pixel facts ({', '.join(absent)})",
                "add them with `cfx inspect SOURCE --pixels -o inspected.parquet` and select from that manifest",
            )
    flags = [_BY_NAME[k].expr(df.columns).alias(f"__q{i}") for i, k in enumerate(kinds)]
    marked = df.with_columns(flags).with_columns(
        pl.any_horizontal(*(pl.col(f"__q{i}").fill_null(False) for i in range(len(kinds)))).alias("__drop"),
        pl.any_horizontal(*(pl.col(f"__q{i}").is_null() for i in range(len(kinds)))).alias("__unknown"),
    )
    report = DropReport(
        list(kinds),
        {k: _per_label(marked, pl.col(f"__q{i}").fill_null(False)) for i, k in enumerate(kinds)},
        _per_label(marked, pl.col("__drop")),
        _per_label(marked, pl.col("__unknown") & ~pl.col("__drop")),
    )
    kept = marked.filter(~pl.col("__drop")).select(df.columns)
    return manifest.with_df(kept, step=f"drop quality issues {','.join(kinds)}"), report


def _per_label(df: pl.DataFrame, cond: pl.Expr) -> dict[str, int]:
    row = df.select(
        (cond & (pl.col("label") == REAL)).sum().alias("real"),
        (cond & (pl.col("label") == GENERATED)).sum().alias("generated"),
    ).row(0, named=True)
    return {"real": int(row["real"]), "generated": int(row["generated"])}
