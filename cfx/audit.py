"""The shortcut canary: how well does one cheap metadata feature alone predict the label?

A detector can cheat when a feature that has nothing to do with generation artefacts (image size, container
format, file size) separates real from generated images. For each such feature this module measures the
single-feature AUROC (symmetrised: ``max(auc, 1 - auc)``, so 0.5 = no information, 1.0 = a perfect
shortcut) and the balanced accuracy of the best single threshold. Numeric features are ranked directly;
categorical ones (format, mode) are scored by each category's share of generated rows (in-sample, so
with many rare categories the value is optimistic).

AUROC is the Mann–Whitney U statistic over mid-ranks (tied values share their average rank, so a tie
counts one half), computed with numpy: no scikit-learn needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from cfx.defaults import AUDIT_THRESHOLD as DEFAULT_THRESHOLD
from cfx.errors import EmptySelectionError, InputError
from cfx.manifest import Manifest
from cfx.schema import GENERATED, REAL
from cfx.scores import Feature, auroc, average_ranks  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from cfx.joint import JointResult
    from cfx.quality import QualityReport


def best_split(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(balanced accuracy, threshold) of the best rule 'score > t' or 'score <= t' for the label."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(scores, kind="mergesort")
    xs, ys = scores[order], labels[order]
    n_pos = int(ys.sum())
    n_neg = ys.shape[0] - n_pos
    # cut after the last element of each run of equal values
    last = np.append(xs[1:] != xs[:-1], True)
    pos_le = np.cumsum(ys)[last]
    neg_le = np.cumsum(~ys)[last]
    # 'score <= t' predicts positive: TPR = pos_le/n_pos, FPR = neg_le/n_neg; the opposite rule flips both
    diff = pos_le / n_pos - neg_le / n_neg
    i = int(np.argmax(np.abs(diff)))
    return 0.5 + abs(float(diff[i])) / 2.0, float(xs[last][i])


def _w() -> pl.Expr:
    return pl.col("width").cast(pl.Float64)


def _h() -> pl.Expr:
    return pl.col("height").cast(pl.Float64)


FEATURES: tuple[Feature, ...] = (
    Feature("width", "numeric", "width in pixels", _w, ("width",)),
    Feature("height", "numeric", "height in pixels", _h, ("height",)),
    Feature(
        "min_side",
        "numeric",
        "min(width, height)",
        lambda: pl.min_horizontal(_w(), _h()),
        ("width", "height"),
    ),
    Feature("aspect_ratio", "numeric", "width / height", lambda: _w() / _h(), ("width", "height")),
    Feature("pixels", "numeric", "width * height", lambda: _w() * _h(), ("width", "height")),
    Feature(
        "format", "categorical", "container format", lambda: pl.col("format").cast(pl.String), ("format",)
    ),
    Feature("mode", "categorical", "PIL mode", lambda: pl.col("mode").cast(pl.String), ("mode",)),
    Feature(
        "bytes_per_pixel",
        "numeric",
        "encoded bytes / (width * height)",
        lambda: pl.col("num_bytes").cast(pl.Float64) / (_w() * _h()),
        ("num_bytes", "width", "height"),
    ),
    Feature(
        "file_size", "numeric", "encoded bytes", lambda: pl.col("num_bytes").cast(pl.Float64), ("num_bytes",)
    ),
)


def _fact(name: str) -> pl.Expr:
    """A byte fact, null where the image was not inspected (no actual_format)."""
    return pl.when(pl.col("actual_format").is_not_null()).then(pl.col(name))


def _not_jpeg() -> pl.Expr:
    """Inspected and not a JPEG: the JPEG facts do not apply ("none"); a JPEG without them is unknown."""
    return pl.col("actual_format").is_not_null() & (pl.col("actual_format") != "JPEG")


# Byte facts (cfx inspect): present when the manifest was inspected, or every row's facts are cached.
BYTE_FEATURES: tuple[Feature, ...] = (
    Feature(
        "jpeg_quality",
        "numeric",
        "JPEG quality from the quantisation tables (non-JPEG images = 101: lossless; a JPEG whose "
        "quality could not be read is left out)",
        lambda: _fact("jpeg_quality").cast(pl.Float64).fill_null(pl.when(_not_jpeg()).then(101.0)),
        ("jpeg_quality", "actual_format"),
    ),
    Feature(
        "actual_format",
        "categorical",
        "format from the file signature",
        lambda: pl.col("actual_format").cast(pl.String),
        ("actual_format",),
    ),
    Feature(
        "chroma_subsampling",
        "categorical",
        "JPEG chroma subsampling (non-JPEG = none)",
        lambda: (
            _fact("chroma_subsampling").cast(pl.String).fill_null(pl.when(_not_jpeg()).then(pl.lit("none")))
        ),
        ("chroma_subsampling", "actual_format"),
    ),
    Feature(
        "progressive",
        "numeric",
        "progressive JPEG",
        lambda: _fact("progressive").cast(pl.Float64),
        ("progressive", "actual_format"),
    ),
    Feature(
        "bit_depth",
        "numeric",
        "bits per sample",
        lambda: _fact("bit_depth").cast(pl.Float64),
        ("bit_depth", "actual_format"),
    ),
    *(
        Feature(name, "numeric", what, (lambda n=name: _fact(n).cast(pl.Float64)), (name, "actual_format"))  # type: ignore[misc]
        for name, what in (
            ("has_exif", "EXIF block present"),
            ("has_gps", "EXIF GPS position present"),
            ("has_icc", "ICC colour profile present"),
            ("has_c2pa", "C2PA / JUMBF manifest present"),
        )
    ),
    Feature(
        "has_text_chunks",
        "numeric",
        "PNG text chunks present (e.g. generation parameters)",
        lambda: _fact("text_chunks").list.len().gt(0).cast(pl.Float64),
        ("text_chunks", "actual_format"),
    ),
)


def _pixel(name: str) -> pl.Expr:
    """A pixel fact, null where the image was not pixel-inspected or could not be decoded (pixel_error)."""
    return pl.when(pl.col("pixel_error").is_null()).then(pl.col(name))


def _pixel_label(name: str) -> pl.Expr:
    """A categorical pixel fact; an inspected image without it (a PNG has no qtable, most files no EXIF
    software) is in the category "none"."""
    seen = pl.col("pixel_error").is_null() & pl.col("luma_mean").is_not_null()
    return pl.when(seen).then(pl.col(name).cast(pl.String).fill_null(pl.lit("none")))


# Pixel facts (cfx inspect --pixels, cfx/pixelfacts.py): present when the manifest has them (luma_mean).
PIXEL_FEATURES: tuple[Feature, ...] = (
    *(
        Feature(name, "numeric", what, (lambda n=name: _pixel(n).cast(pl.Float64)), (name, "pixel_error"))  # type: ignore[misc]
        for name, what in (
            ("luma_mean", "mean Rec. 601 luma (0-255): brightness"),
            ("luma_std", "standard deviation of luma: contrast"),
            ("saturation_mean", "mean HSV saturation (0-1)"),
            ("colorfulness", "Hasler & Süsstrunk colourfulness"),
            ("entropy", "luma histogram entropy (bits)"),
            ("sharpness", "variance of the Laplacian of luma"),
            ("noise_sigma", "noise standard deviation (Immerkær)"),
            ("hf_energy", "share of spectral energy above half-Nyquist"),
            ("blockiness", "8x8 block-boundary discontinuity (earlier JPEG compression)"),
        )
    ),
    Feature(
        "dims_multiple_of",
        "categorical",
        "largest of 64/32/16/8/1 dividing both sides (latent-VAE grids)",
        lambda: _pixel("dims_multiple_of").cast(pl.String),
        ("dims_multiple_of", "pixel_error"),
    ),
    Feature(
        "qtable_id",
        "categorical",
        "hash of the JPEG quantisation tables: the encoder (non-JPEG = none)",
        lambda: _pixel_label("qtable_id"),
        ("qtable_id", "pixel_error", "luma_mean"),
    ),
    Feature(
        "exif_software",
        "categorical",
        "EXIF Software tag (none when absent)",
        lambda: _pixel_label("exif_software"),
        ("exif_software", "pixel_error", "luma_mean"),
    ),
)
PIXEL_COLUMNS = tuple(c for f in PIXEL_FEATURES for c in f.needs[:1])


def has_pixel_facts(columns: Sequence[str]) -> bool:
    """Whether a manifest carries pixel facts (`cfx inspect --pixels`)."""
    return "luma_mean" in columns


NOT_IN_METADATA = {
    "jpeg_quality": "not in the metadata: it needs each JPEG's quantisation tables, i.e. reading the image "
    "bytes — run `cfx inspect SOURCE -o inspected.parquet` (or `cfx dedupe`, which caches them) and audit again",
}
# The fix cfx offers for each shortcut (shown for flagged features).
_SIZE_FIX = (
    "`cfx balance --match min-side:64` (or --match resolution), or `cfx subset --transform resize:max-side=N`"
)
FIXES: dict[str, str] = {
    "width": _SIZE_FIX,
    "height": _SIZE_FIX,
    "min_side": _SIZE_FIX,
    "pixels": _SIZE_FIX,
    "aspect_ratio": "`cfx balance --match aspect:0.1`, or `cfx subset --transform center-crop:N`",
    "format": "`cfx balance --match format`, or re-encode both labels: `cfx subset --transform jpeg:96`",
    "actual_format": "`cfx balance --match actual-format`, or re-encode both labels: `cfx subset --transform jpeg:96`",
    "mode": "`cfx balance --match mode`",
    "jpeg_quality": "`cfx balance --match jpeg-quality:5 --match actual-format`, or `cfx subset --transform jpeg:96`",
    "chroma_subsampling": "`cfx balance --match chroma-subsampling`, or `cfx subset --transform jpeg:96,subsampling=4:2:0`",
    "progressive": "re-encode both labels as baseline JPEG: `cfx subset --transform jpeg:96`",
    "bit_depth": "re-encode both labels: `cfx subset --transform jpeg:96` (or png)",
    "file_size": "`cfx balance --match num-bytes:50000`, or re-encode both labels: `cfx subset --transform jpeg:96`",
    "bytes_per_pixel": "re-encode both labels at one quality: `cfx subset --transform jpeg:96`",
    "has_exif": "`cfx subset --strip-metadata`",
    "has_gps": "`cfx subset --strip-metadata` (also a privacy risk for real photos)",
    "has_icc": "`cfx subset --strip-metadata` (or convert both labels to sRGB)",
    "has_c2pa": "`cfx subset --strip-metadata`",
    "has_text_chunks": "`cfx subset --strip-metadata` (PNG text chunks name the generator)",
    # pixel facts: quantile bins computed on both labels together (docs/balance.md)
    "luma_mean": "`cfx balance --match luma_mean:10`, or `cfx subset --drop-quality-issues dark,overexposed`",
    "luma_std": "`cfx balance --match luma_std:10`, or `cfx subset --drop-quality-issues near-uniform`",
    "saturation_mean": "`cfx balance --match saturation_mean:10`, or `cfx subset --drop-quality-issues grayscale`",
    "colorfulness": "`cfx balance --match colorfulness:10`, or `cfx subset --drop-quality-issues grayscale`",
    "entropy": "`cfx balance --match entropy:10`, or `cfx subset --drop-quality-issues low-information`",
    "sharpness": "`cfx balance --match sharpness:10`, or `cfx subset --drop-quality-issues blurry`",
    "noise_sigma": "`cfx balance --match noise:10` (or give both labels the same noise floor: "
    "`cfx subset --transform noise:SIGMA`)",
    "hf_energy": "`cfx balance --match hf_energy:10` (or low-pass both labels: `cfx subset --transform blur:SIGMA`)",
    "blockiness": "`cfx balance --match blockiness:10` (a re-encode does not erase the blocks of an earlier JPEG)",
    "dims_multiple_of": "`cfx balance --match dims-grid`, or one size for both labels: "
    "`cfx subset --transform resize:min-side=N --transform center-crop:N`",
    "qtable_id": "re-encode both labels with one encoder: `cfx subset --transform jpeg:96` "
    "(or `cfx balance --match qtable_id`)",
    "exif_software": "`cfx subset --strip-metadata`",
}


@dataclass
class FeatureScore:
    feature: str
    kind: str
    description: str
    auroc: float
    raw_auc: float  # before symmetrising: > 0.5 means higher values (or rates) go with generated
    balanced_accuracy: float
    threshold: float | None
    rows: int
    coverage: float
    flagged: bool
    note: str = ""
    unknown_rows: int = 0  # rows without a value (unknown feature): left out of the score
    categories: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fix(self) -> str:
        return FIXES.get(self.feature, "") if self.flagged else ""

    @property
    def direction(self) -> str:
        if self.kind == "categorical":
            return "per-category generated rate"
        if abs(self.raw_auc - 0.5) < 1e-12:
            return "none"
        return "higher → generated" if self.raw_auc > 0.5 else "higher → real"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "feature": self.feature,
            "kind": self.kind,
            "description": self.description,
            "auroc": round(self.auroc, 6),
            "raw_auc": round(self.raw_auc, 6),
            "direction": self.direction,
            "balanced_accuracy": round(self.balanced_accuracy, 6),
            "threshold": self.threshold,
            "rows": self.rows,
            "coverage": round(self.coverage, 6),
            "unknown_rows": self.unknown_rows,
            "flagged": self.flagged,
            "note": self.note,
            "fix": self.fix,
        }
        if self.kind == "categorical":
            out["categories"] = self.categories
        return out


@dataclass
class AuditResult:
    rows: int
    real: int
    generated: int
    threshold: float
    features: list[FeatureScore]
    skipped: list[dict[str, str]]
    unusable_sizes: int = 0  # rows without a usable width/height (zero, negative or unreadable resolution)
    joint: JointResult | None = None
    quality: QualityReport | None = None

    @property
    def flagged(self) -> list[FeatureScore]:
        return [f for f in self.features if f.flagged]

    def above(self, limit: float) -> list[str]:
        """The canaries (single features, then "joint") whose AUROC is above ``limit``, worst first."""
        names = [f"{f.feature} ({f.auroc:.3f})" for f in self.features if f.auroc > limit]
        if self.joint is not None and self.joint.auroc is not None and self.joint.auroc > limit:
            names.append(f"joint ({self.joint.auroc:.3f})")
        return names

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "real": self.real,
            "generated": self.generated,
            "threshold": self.threshold,
            "flagged": [f.feature for f in self.flagged],
            "features": [f.to_json() for f in self.features],
            "skipped": self.skipped,
            "unusable_sizes": self.unusable_sizes,
            **({"joint": self.joint.to_json()} if self.joint is not None else {}),
            **({"quality": self.quality.to_json()} if self.quality is not None else {}),
        }


def audit(
    manifest: Manifest, threshold: float = DEFAULT_THRESHOLD, *, joint: bool = False, seed: int = 0
) -> AuditResult:
    """Score every cheap feature (metadata, and byte facts when inspected) as a label predictor, worst
    (most predictive) first; with ``joint`` also the joint canary (cfx.joint)."""
    df = manifest.df
    if "label" not in df.columns:
        raise InputError("the manifest has no label column", "re-create it with `cfx index`")
    labels = df.get_column("label")
    n_real = int((labels == REAL).sum())
    n_gen = int((labels == GENERATED).sum())
    if n_real == 0 or n_gen == 0:
        raise EmptySelectionError(
            f"audit needs real and generated rows; SOURCE has {n_real:,} real and {n_gen:,} generated",
            "audit a manifest that holds both classes (e.g. the output of `cfx balance`)",
        )
    scores: list[FeatureScore] = []
    skipped: list[dict[str, str]] = []
    inspected = "actual_format" in df.columns
    pixels = PIXEL_FEATURES if has_pixel_facts(df.columns) else ()
    for feat in (*FEATURES, *(BYTE_FEATURES if inspected else ()), *pixels):
        absent = [c for c in feat.needs if c not in df.columns]
        if absent:
            skipped.append(
                {"feature": feat.name, "reason": f"column(s) {', '.join(absent)} not in the manifest"}
            )
            continue
        frame = df.select(feat.expr().alias("x"), pl.col("label")).filter(pl.col("x").is_not_null())
        if feat.kind == "numeric":
            frame = frame.filter(pl.col("x").is_finite())
        if frame.height == 0:
            reason = "no row has a value"
            if "num_bytes" in feat.needs:
                reason = (
                    "num_bytes is unknown (the index does not read image bytes); "
                    "re-index with `cfx index SOURCE --num-bytes` to audit file sizes"
                )
            skipped.append({"feature": feat.name, "reason": reason})
            continue
        y = (frame.get_column("label") == GENERATED).to_numpy()
        if y.all() or not y.any():
            skipped.append(
                {"feature": feat.name, "reason": "only one class has values (the other is all null)"}
            )
            continue
        note = ""
        cats: list[dict[str, Any]] = []
        if feat.kind == "categorical":
            rates = (
                frame.group_by("x")
                .agg(pl.len().alias("rows"), (pl.col("label") == GENERATED).mean().alias("generated_rate"))
                .sort(["rows", "x"], descending=[True, False])
            )
            cats = [
                {"value": v, "rows": n, "generated_rate": round(float(rate), 6)}
                for v, n, rate in rates.iter_rows()
            ]
            rate_of = dict(
                zip(
                    rates.get_column("x").to_list(), rates.get_column("generated_rate").to_list(), strict=True
                )
            )
            x_np = frame.get_column("x").replace_strict(rate_of, return_dtype=pl.Float64).to_numpy()
            note = "scored by each category's generated rate, measured on the same rows (in-sample)"
        else:
            x_np = frame.get_column("x").to_numpy().astype(np.float64)
        raw = auroc(x_np, y)
        ba, thr = best_split(x_np, y)
        coverage = frame.height / df.height
        if coverage < 1:
            extra = f"{df.height - frame.height:,} row(s) without a value were left out"
            note = f"{note}; {extra}" if note else extra
        scores.append(
            FeatureScore(
                feature=feat.name,
                kind=feat.kind,
                description=feat.description,
                auroc=max(raw, 1 - raw),
                raw_auc=raw,
                balanced_accuracy=ba,
                threshold=thr if feat.kind == "numeric" else None,
                rows=frame.height,
                coverage=coverage,
                flagged=max(raw, 1 - raw) > threshold,
                note=note,
                unknown_rows=df.height - frame.height,
                categories=cats,
            )
        )
    if not inspected:
        for name, reason in NOT_IN_METADATA.items():
            skipped.append({"feature": name, "reason": reason})
    scores.sort(key=lambda s: (-s.auroc, s.feature))
    joint_result = None
    if joint:
        from cfx.joint import joint_canary

        used = [
            f for f in (*FEATURES, *BYTE_FEATURES, *PIXEL_FEATURES) if f.name in {s.feature for s in scores}
        ]
        joint_result = joint_canary(df, used, threshold=threshold, seed=seed)
    from cfx.quality import quality_issues

    return AuditResult(
        rows=df.height,
        real=n_real,
        generated=n_gen,
        threshold=threshold,
        features=scores,
        skipped=skipped,
        unusable_sizes=unusable_sizes(df),
        joint=joint_result,
        quality=quality_issues(df, threshold),
    )


def unusable_sizes(df: pl.DataFrame) -> int:
    """Rows whose width or height is unknown: size features leave them out, so say how many."""
    if "width" not in df.columns or "height" not in df.columns:
        return df.height
    return int(df.select((pl.col("width").is_null() | pl.col("height").is_null()).sum()).item())
