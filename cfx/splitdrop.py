"""``cfx split --resolve drop``: cut the chains that shared prompts and copies make by leaving rows out.

With ``--resolve merge`` (the default) every link joins groups, so prompts reused across generators can chain
a large part of the set into one group that lands whole in one split. With ``drop`` the units (``--by``) are
grouped and assigned first, by the same hash rule; the links that leaving a row out can break are then
resolved in turn, each step only dropping rows:

1. ``exact`` (identical sha256), ``prompt`` (identical normalised prompt), ``near`` (identical pHash): a value
   whose kept rows sit in several splits stays in the split holding most of them; its rows in the other
   splits are dropped. A tie costs the same rows either way: they go from the split asked for the larger
   share (then the later named), which changes the shares least (train loses 0.2 % where val would lose 2 %).
2. ``near`` pairs of distinct codes within the threshold whose codes sit in two splits: the code with fewer
   kept rows is dropped (ties: the one in the split asked for the larger share, then the larger code index).
3. ``share``: a split whose generated share is off the whole set's by more than the tolerance drops rows of
   the label it has too many of (in a seeded order that does not depend on row order) until it is within,
   when it holds rows of both labels; else it is reported as off.

A link resolved stays resolved (later steps only drop rows), so afterwards no unit, value or near pair spans
two splits; the leak proof, run afterwards on the kept rows by its own path, says so. The rule is greedy:
"fewest rows" holds per value and per pair, not as a global minimum (a minimum vertex cut is NP-hard).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

REASONS = ("exact", "prompt", "near", "share")


@dataclass
class Drop:
    """Which rows stay; ``reason[i]`` is 0 for a kept row, else 1 + its index in ``REASONS``."""

    keep: np.ndarray
    reason: np.ndarray

    def out(self, rows: np.ndarray, why: str) -> None:
        self.keep[rows] = False
        self.reason[rows] = REASONS.index(why) + 1


def _winner(counts: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Per value the split holding most of its rows; ties go to the smaller asked share, then the first."""
    k = counts.shape[1]
    rank = np.argsort(np.lexsort((-np.arange(k), -fractions)))  # 0 for the least preferred split
    return np.argmax(counts * (k + 1) + rank[None, :], axis=1)


def drop_by_value(ids: np.ndarray, split: np.ndarray, drop: Drop, fractions: np.ndarray, why: str) -> None:
    """Rows of a value (``ids``, -1 for none) outside the split holding most of its kept rows."""
    rows = np.flatnonzero(drop.keep & (ids >= 0))
    if not rows.size:
        return
    k = fractions.size
    counts = np.bincount(ids[rows] * k + split[rows], minlength=(int(ids.max()) + 1) * k).reshape(-1, k)
    win = _winner(counts, fractions)
    drop.out(rows[split[rows] != win[ids[rows]]], why)


def drop_near_pairs(
    code_id: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    split: np.ndarray,
    drop: Drop,
    fractions: np.ndarray,
) -> None:
    """Codes of near pairs (``a``/``b``: code indices) whose kept rows sit in two splits: the code with fewer
    kept rows goes. Run after ``drop_by_value`` on ``code_id``, so each code's kept rows share one split."""
    rows = np.flatnonzero(drop.keep & (code_id >= 0))
    n_codes = int(max(code_id.max(initial=-1), a.max(initial=-1), b.max(initial=-1))) + 1
    count = np.bincount(code_id[rows], minlength=n_codes)
    where = np.full(n_codes, -1, np.int64)
    where[code_id[rows]] = split[rows]
    cross = (count[a] > 0) & (count[b] > 0) & (where[a] != where[b])
    alive = count > 0
    for x, y in zip(a[cross].tolist(), b[cross].tolist(), strict=True):
        if not (alive[x] and alive[y]):
            continue  # an earlier pair already dropped one side
        fx, fy = fractions[where[x]], fractions[where[y]]
        loser = x if (count[x], -fx, -x) < (count[y], -fy, -y) else y
        alive[loser] = False
    dead = rows[~alive[code_id[rows]]]
    drop.out(dead, "near")


def drop_for_share(
    generated: np.ndarray,
    split: np.ndarray,
    drop: Drop,
    n_splits: int,
    tolerance: float,
    order: Callable[[np.ndarray], np.ndarray],
) -> None:
    """Bring each split's generated share within ``tolerance`` of the whole set's (all input rows) by
    dropping rows of the label it has too many of, first in ``order(rows)`` (a seeded key per row)."""
    overall = float(generated.mean()) if generated.size else 0.0
    for s in range(n_splits):
        here = drop.keep & (split == s)
        g, r = int((here & generated).sum()), int((here & ~generated).sum())
        if not g or not r:
            continue  # one label only: nothing to trade against; reported as off
        hi, lo = overall + tolerance, overall - tolerance
        if g / (g + r) > hi:
            side, keep_n = generated, int(np.floor(hi * r / (1 - hi))) if hi < 1 else g
        elif g / (g + r) < lo:
            side, keep_n = ~generated, int(np.floor((1 - lo) * g / lo)) if lo > 0 else r
        else:
            continue
        rows = np.flatnonzero(here & side)
        if keep_n < rows.size:
            drop.out(rows[np.argsort(order(rows), kind="stable")[keep_n:]], "share")


def resolve(
    split: np.ndarray,
    fractions: tuple[float, ...],
    *,
    value_ids: list[tuple[str, np.ndarray]],
    code_id: np.ndarray | None,
    pair_a: np.ndarray | None,
    pair_b: np.ndarray | None,
    generated: np.ndarray,
    tolerance: float,
    order: Callable[[np.ndarray], np.ndarray],
) -> Drop:
    """The whole rule (module doc). ``value_ids``: (reason, dense id per row) for exact and prompt links."""
    n = split.size
    drop = Drop(np.ones(n, bool), np.zeros(n, np.int8))
    fr = np.asarray(fractions, np.float64)
    for why, ids in value_ids:
        drop_by_value(ids, split, drop, fr, why)
    if code_id is not None and pair_a is not None and pair_b is not None:
        drop_by_value(code_id, split, drop, fr, "near")
        drop_near_pairs(code_id, pair_a, pair_b, split, drop, fr)
    drop_for_share(generated, split, drop, fr.size, tolerance, order)
    return drop
