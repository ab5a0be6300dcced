"""Defaults and choices that command signatures show in --help, in a module without heavy imports.

Every `cfx` command builds its signature at start-up, so these live here rather than in cfx.download,
cfx.dedupe, … (which pull in huggingface_hub, scipy, polars): `cfx --help` stays fast. The library
modules import them from here under their usual names.
"""

from __future__ import annotations

# cfx.download
DEFAULT_REPO = "OwensLab/CommunityForensics-Small"
DOWNLOAD_WORKERS = 4

# cfx.dedupe
DEDUPE_THRESHOLD = 8  # chosen from the ground-truth sweep in docs/benchmarks.md (## Dedupe)
KEEP_POLICIES = ("first", "largest", "smallest", "prefer-real", "prefer-generated")
SCOPES = ("all", "within-label", "within-generator")

# cfx.audit
AUDIT_THRESHOLD = 0.6
REPORT_SAMPLE = 600  # cfx report: thumbnails in Browse (~3 MB of 160 px JPEGs)

# cfx.subset
DEFAULT_ROW_GROUP_ROWS = 100

# cfx.split
FOLDS_MAX = 1000  # k-fold cross-validation uses 5-20; more folds than this is a typo (each costs a pass)

# cfx.balance — named match features: (description, default bin width or None for exact/categorical).
MATCH_FEATURES: dict[str, tuple[str, float | None]] = {
    "min-side": ("min(width, height) in pixels", None),
    "max-side": ("max(width, height) in pixels", None),
    "width": ("width in pixels", None),
    "height": ("height in pixels", None),
    "resolution": ("exact width x height", None),
    "aspect": ("width / height", 0.05),
    "pixels": ("width * height", None),
    "format": ("container format (PNG, JPEG, …)", None),
    "mode": ("PIL mode (RGB, L, …)", None),
    "num-bytes": ("encoded file size in bytes (needs `cfx index --num-bytes`)", None),
    # byte facts (cfx inspect; computed from its cache when the manifest lacks them)
    "jpeg-quality": ("JPEG quality, bins 1-5 … 96-100 with :5; non-JPEG images form their own bin", None),
    "chroma-subsampling": ("JPEG chroma subsampling (4:2:0, 4:4:4, …; non-JPEG: none)", None),
    "actual-format": ("format from the file signature, not the format column", None),
    # pixel facts (cfx inspect --pixels): N quantile bins over both labels together (default 10)
    "noise": ("noise_sigma, the noise level; noise:N = N quantile bins (default 10)", None),
    "sharpness": ("variance of the Laplacian; sharpness:N = N quantile bins (default 10)", None),
    "dims-grid": (
        "largest of 64/32/16/8/1 dividing both sides (dims_multiple_of, else from width/height)",
        None,
    ),
}
PIXEL_MATCHES = {"noise": "noise_sigma", "sharpness": "sharpness"}  # match feature -> pixel-fact column
PIXEL_FACT_COLUMNS = (  # numeric pixel facts of `cfx inspect --pixels` (cfx.pixelfacts), matchable as COLUMN:N
    "luma_mean",
    "luma_std",
    "saturation_mean",
    "colorfulness",
    "entropy",
    "sharpness",
    "noise_sigma",
    "hf_energy",
    "blockiness",
)
QUANTILE_BINS = 10  # default number of quantile bins of a pixel-fact match
BYTE_FACT_MATCHES = {  # match feature -> the byte-fact columns it needs
    "jpeg-quality": ("jpeg_quality", "actual_format"),
    "chroma-subsampling": ("chroma_subsampling", "actual_format"),
    "actual-format": ("actual_format",),
}
