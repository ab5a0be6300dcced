"""The joint canary (`cfx audit --joint`, cfx/joint.py) on 556,541 synthetic rows (bench_inspect.joint_rows).

1. Where the time goes, one pass: the grouped fold split, the fits, the test-fold AUROCs, and the permutation
   importances scored on whole test folds vs on at most ``IMPORTANCE_ROWS`` rows of each (wall and CPU seconds).
2. ``joint_canary`` end to end with importances on whole test folds (the behaviour before the cap) and with the
   cap, interleaved, and ``audit(joint=True)`` (single features + joint): medians of --reps, wall and CPU.

CPU seconds are those of this process (every thread), the number to trust on a shared machine.

    python bench/bench_joint.py [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, median, table  # noqa: E402
from bench.bench_inspect import joint_rows  # noqa: E402


def _clock(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def breakdown(df: Any, used: list[Any]) -> list[list[str]]:
    import numpy as np
    from threadpoolctl import threadpool_limits

    from cfx import joint
    from cfx.audit import auroc
    from cfx.schema import GENERATED

    spent: dict[str, list[float]] = {}

    def add(step: str, fn: Callable[..., Any], *args: Any) -> Any:
        wall, cpu, out = _clock(lambda: fn(*args))
        acc = spent.setdefault(step, [0.0, 0.0])
        acc[0] += wall
        acc[1] += cpu
        return out

    def predicted_auroc(model: Any, xt: Any, yt: Any) -> float:
        return auroc(model.predict_proba(xt)[:, 1], yt)

    joint.load_sklearn()  # before the limit: it applies to loaded OpenMP runtimes only
    with threadpool_limits(1):
        y_all = (df.get_column("label") == GENERATED).to_numpy()
        keep = joint._sample(df.height, y_all, joint.MAX_ROWS, 0)
        part, y = df[keep], y_all[keep]
        x, cat = add("feature matrix + groups", joint.feature_matrix, part, used)
        groups = add("feature matrix + groups", joint._groups, part, y, joint.FOLDS)
        splits = add("StratifiedGroupKFold split", joint.fold_splits, x, y, groups, joint.FOLDS, 0)
        capped = f"importances, ≤{joint.IMPORTANCE_ROWS:,} rows per fold"
        for tr, te in splits:
            model = add("fit (5 folds)", joint.fit, x[tr], y[tr], cat, 0)
            add("test-fold AUROC (predict)", predicted_auroc, model, x[te], y[te])
            add(
                "importances, whole test fold",
                joint.importances,
                model,
                x[te],
                y[te],
                np.random.default_rng(0),
                None,
            )
            rng = np.random.default_rng(0)
            add(capped, joint.importances, model, x[te], y[te], rng, joint.IMPORTANCE_ROWS)
    return [[step, f"{w:.2f}", f"{c:.2f}"] for step, (w, c) in spent.items()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from cfx.audit import BYTE_FEATURES, FEATURES, audit
    from cfx.joint import IMPORTANCE_ROWS, joint_canary

    m = joint_rows()
    scored = {s.feature for s in audit(m, joint=False).features}
    used = [f for f in (*FEATURES, *BYTE_FEATURES) if f.name in scored]
    print(f"### Joint canary — {m.df.height:,} rows, {len(used)} features, {machine()}\n")
    print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    print(table(["step (one pass, 1 thread)", "wall s", "CPU s"], breakdown(m.df, used)))
    variants = {
        "importances on whole test folds": None,
        f"importances on ≤{IMPORTANCE_ROWS:,} rows/fold": IMPORTANCE_ROWS,
    }
    runs: dict[str, list[tuple[float, float, Any]]] = {k: [] for k in [*variants, "audit(joint=True)"]}
    for _ in range(args.reps):
        for name, rows in variants.items():
            runs[name].append(
                _clock(lambda rows=rows: joint_canary(m.df, used, seed=0, importance_rows=rows))
            )
        runs["audit(joint=True)"].append(_clock(lambda: audit(m, joint=True).joint))
    rows_out = []
    for name, rs in runs.items():
        res = rs[-1][2]
        top = ", ".join(f"{k} {v:.3f}" for k, v in list(res.importances.items())[:3])
        walls, cpus = [r[0] for r in rs], [r[1] for r in rs]
        rows_out.append(
            [
                name,
                f"{median(walls):.1f} ({min(walls):.1f}–{max(walls):.1f})",
                f"{median(cpus):.1f}",
                f"{res.auroc:.4f}",
                top,
            ]
        )
    print()
    print(
        table(
            [
                "joint_canary, 200,000 rows fitted",
                "wall s median (range)",
                "CPU s median",
                "AUROC",
                "top importances",
            ],
            rows_out,
        )
    )
    print(f"\nload average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
