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
  feature's column is shuffled in a test fold (that fold's model, seeded).
- At most ``max_rows`` rows (a seeded stratified sample; default 200,000), so 556k rows take seconds. It never
  reads image bytes: byte facts come from the manifest (``cfx inspect``).
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
    from cfx.audit import Feature

FOLDS = 5
MAX_ROWS = 200_000
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


def joint_canary(
    df: pl.DataFrame,
    features: Sequence[Feature],
    *,
    threshold: float = 0.6,
    seed: int = 0,
    folds: int = FOLDS,
    max_rows: int = MAX_ROWS,
    threads: int = 1,
) -> JointResult:
    """Cross-validated AUROC and permutation importances of all ``features`` together (see module doc).

    ``threads``: OpenMP threads of the classifier. 1 by default: on a busy machine OpenMP's spinning threads
    cost more than they give (measured on 120 rows with other work running: 1.4 s with 1 thread, 20 s with 2).
    """
    # sklearn first: threadpool_limits only limits the thread pools of libraries already loaded, and the
    # OpenMP runtime comes with sklearn's gradient boosting (imported after the limit, it ran unlimited:
    # 279 rows on a loaded 2-core machine took 64 s instead of 2.7 s)
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        return _joint(df, features, threshold, seed, folds, max_rows)


def _joint(
    df: pl.DataFrame, features: Sequence[Feature], threshold: float, seed: int, folds: int, max_rows: int
) -> JointResult:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedGroupKFold

    from cfx.audit import auroc

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
    for train, test in StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(x, y, groups):
        if y[test].all() or not y[test].any() or y[train].all() or not y[train].any():
            continue  # a fold without both classes has no AUROC
        model = HistGradientBoostingClassifier(categorical_features=categorical, random_state=seed)
        model.fit(x[train], y[train])
        base = auroc(model.predict_proba(x[test])[:, 1], y[test])
        scores.append(base)
        lost.append(
            [base - _permuted_auroc(model, x[test], y[test], j, rng, auroc) for j in range(len(names))]
        )
    if not scores:
        return JointResult(None, 0, part.height, names, note="no fold holds both classes")
    score = float(np.mean(scores))
    mean_lost = np.mean(lost, axis=0)
    ranked = dict(sorted(zip(names, map(float, mean_lost), strict=True), key=lambda kv: -kv[1]))
    note = "" if len(keep) == df.height else f"a seeded sample of {len(keep):,} of {df.height:,} rows"
    return JointResult(score, len(scores), part.height, names, ranked, flagged=score > threshold, note=note)


def _permuted_auroc(
    model: Any, x: np.ndarray, y: np.ndarray, j: int, rng: np.random.Generator, auroc: Any
) -> float:
    xt = x.copy()
    xt[:, j] = rng.permutation(xt[:, j])
    return float(auroc(model.predict_proba(xt)[:, 1], y))
