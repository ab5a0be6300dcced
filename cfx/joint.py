"""The joint shortcut canary: how well do all cheap features *together* predict the label?

Single-feature AUROCs miss combinations (format × size: each alone says nothing, together everything). The
joint canary is a cross-validated classifier over every cheap feature the single-feature audit scored:

- scikit-learn ``HistGradientBoostingClassifier`` (seeded; categorical features as categories), 5 folds of
  ``StratifiedGroupKFold`` grouped by **source** — the generator (``model_name``) for generated rows, the
  ``real_source`` for real rows — so a generator never sits in both a training and a test fold. A label with
  fewer sources than folds (e.g. every real row from one source) has each of its rows as its own group.
- AUROC: the mean over the folds of each test fold's AUROC (0.5 = the features together say nothing, 1.0 =
  they give the label away; per fold, because pooling the predictions of folds with different class rates
  biases the AUROC below 0.5 on pure noise), and permutation importances: the mean AUROC lost when one
  feature's column is shuffled in a test fold (that fold's model, seeded). The AUROC uses every test row; the
  importances a seeded stratified sample of at most ``importance_rows`` rows of each test fold (default
  10,000; base and shuffled AUROC on the same rows): scoring each shuffled column on the whole fold cost as
  much as fitting (9 features × 40k rows × 5 folds on 556k rows) and only ranks the features.
- At most ``max_rows`` rows (a seeded stratified sample; default 200,000). It never reads image bytes: byte facts
  come from the manifest (``cfx inspect``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from cfx.index import source_expr
from cfx.schema import GENERATED

if TYPE_CHECKING:
    from cfx.scores import Feature

FOLDS = 5
MAX_ROWS = 200_000
IMPORTANCE_ROWS = 10_000  # per test fold
_MAX_CATEGORIES = 250  # HistGradientBoosting takes at most 255 categories per feature


@dataclass
class JointResult:
    auroc: float | None
    folds: int
    rows: int
    features: list[str]
    importances: dict[str, float] = field(default_factory=dict)
    flagged: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "auroc": None if self.auroc is None else round(self.auroc, 6),
            "folds": self.folds,
            "rows": self.rows,
            "features": self.features,
            "importances": {k: round(v, 6) for k, v in self.importances.items()},
            "flagged": self.flagged,
            "note": self.note,
        }


def feature_matrix(df: pl.DataFrame, features: Sequence[Feature]) -> tuple[np.ndarray, list[bool]]:
    """(rows × features) float matrix, NaN where unknown; categorical features as integer codes."""
    cols, categorical = [], []
    for feat in features:
        x = df.select(feat.expr().alias("x")).to_series()
        if feat.kind == "categorical":
            codes = x.cast(pl.String).rank("dense").cast(pl.Float64) - 1
            cols.append(codes.to_numpy())
            categorical.append(bool(codes.max() is not None and codes.max() < _MAX_CATEGORIES))  # type: ignore[operator]
        else:
            v = x.cast(pl.Float64).to_numpy().copy()
            v[~np.isfinite(v)] = np.nan
            cols.append(v)
            categorical.append(False)
    return np.column_stack(cols).astype(np.float64), categorical


def _groups(df: pl.DataFrame, y: np.ndarray, folds: int) -> np.ndarray:
    """Group ids: the source per label, or each row its own group when a label has too few sources."""
    src = df.select(source_expr(df.columns).fill_null("(unknown)").alias("s")).to_series().to_numpy()
    groups = np.empty(len(y), dtype=object)
    for label in (False, True):
        mask = y == label
        names = src[mask]
        if len(set(names)) >= folds:
            groups[mask] = [f"{int(label)}:{s}" for s in names]
        else:
            groups[mask] = [f"{int(label)}#{i}" for i in np.flatnonzero(mask)]
    return np.unique(groups.astype(str), return_inverse=True)[1]


def _sample(n: int, y: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    if n <= max_rows:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(y == c), round(max_rows * (y == c).mean()), replace=False) for c in (0, 1)
    ]
    return np.sort(np.concatenate(picked))


def _importance_rows(y: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Positions of at most ``cap`` rows of a test fold, stratified, at least one of each class."""
    if cap is None or len(y) <= cap:
        return np.arange(len(y))
    picked = [
        rng.choice(where, min(len(where), max(1, round(cap * len(where) / len(y)))), replace=False)
        for where in (np.flatnonzero(~y), np.flatnonzero(y))
    ]
    return np.sort(np.concatenate(picked))


def joint_canary(
    df: pl.DataFrame,
    features: Sequence[Feature],
    *,
    threshold: float = 0.6,
    seed: int = 0,
    folds: int = FOLDS,
    max_rows: int = MAX_ROWS,
    importance_rows: int | None = IMPORTANCE_ROWS,
    threads: int = 1,
) -> JointResult:
    """Cross-validated AUROC and permutation importances of all ``features`` together (see module doc).

    ``importance_rows``: rows of each test fold the importances are scored on (None: all of them).
    ``threads``: OpenMP threads of the classifier. 1 by default: on a busy machine OpenMP's spinning threads
    cost more than they give (measured with other work running: 120 rows took 1.4 s with 1 thread, 20 s with 2;
    one fold of the 556k-row benchmark, 162k rows, 2.3 CPU-s with 1 thread, 23 CPU-s with 2).
    """
    from threadpoolctl import threadpool_limits

    load_sklearn()  # first (see there); on the demo's 279 rows, loaded machine: 64 s unlimited, 2.7 s limited
    with threadpool_limits(threads):
        return _joint(df, features, threshold, seed, folds, max_rows, importance_rows)


def load_sklearn() -> None:
    """Import the classifier first: threadpoolctl limits only the OpenMP runtimes already loaded, so in a fresh
    process (``cfx audit``) the first fit ran on every core (on the busy bench machine: 140 CPU-s instead of 22)."""
    import sklearn.ensemble
    import sklearn.model_selection  # noqa: F401


def _joint(
    df: pl.DataFrame,
    features: Sequence[Feature],
    threshold: float,
    seed: int,
    folds: int,
    max_rows: int,
    importance_rows: int | None,
) -> JointResult:
    from cfx.scores import auroc

    names = [f.name for f in features]
    y_all = (df.get_column("label") == GENERATED).to_numpy()
    keep = _sample(df.height, y_all, max_rows, seed)
    part = df[keep]
    y = y_all[keep]
    if not names:
        return JointResult(None, 0, part.height, names, note="no feature to combine")
    x, categorical = feature_matrix(part, features)
    groups = _groups(part, y, folds)
    if len(np.unique(groups)) < folds or min(y.sum(), (~y).sum()) < folds:
        return JointResult(None, 0, part.height, names, note=f"too few rows or sources for {folds} folds")
    rng = np.random.default_rng(seed)
    scores, lost = [], []
    for train, test in fold_splits(x, y, groups, folds, seed):
        model = fit(x[train], y[train], categorical, seed)
        scores.append(auroc(model.predict_proba(x[test])[:, 1], y[test]))
        lost.append(importances(model, x[test], y[test], rng, importance_rows))
    if not scores:
        return JointResult(None, 0, part.height, names, note="no fold holds both classes")
    score = float(np.mean(scores))
    mean_lost = np.mean(lost, axis=0)
    ranked = dict(sorted(zip(names, map(float, mean_lost), strict=True), key=lambda kv: -kv[1]))
    note = "" if len(keep) == df.height else f"a seeded sample of {len(keep):,} of {df.height:,} rows"
    return JointResult(score, len(scores), part.height, names, ranked, flagged=score > threshold, note=note)


def fold_splits(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, test) positions of the seeded grouped folds that hold both classes on both sides."""
    from sklearn.model_selection import StratifiedGroupKFold

    splits = StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(x, y, groups)
    return [(tr, te) for tr, te in splits if 0 < y[te].sum() < len(te) and 0 < y[tr].sum() < len(tr)]


def fit(x: np.ndarray, y: np.ndarray, categorical: list[bool], seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(categorical_features=categorical, random_state=seed).fit(x, y)


def importances(
    model: Any, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, rows: int | None
) -> list[float]:
    """AUROC lost per feature when its column is shuffled, on at most ``rows`` rows of (x, y)."""
    from cfx.scores import auroc

    sub = _importance_rows(y, rows, rng)
    x, y = x[sub], y[sub]
    base = auroc(model.predict_proba(x)[:, 1], y)
    lost = []
    for j in range(x.shape[1]):
        xt = x.copy()
        xt[:, j] = rng.permutation(xt[:, j])
        lost.append(base - float(auroc(model.predict_proba(xt)[:, 1], y)))
    return lost
