"""All pairs of 64-bit codes within a Hamming distance: exact, sub-quadratic (multi-index hashing).

Pigeonhole: split the 64 bits into blocks ``B_1 … B_m`` with radii ``r_i`` such that ``Σ (r_i + 1) > t``.
If ``popcount(x ^ y) <= t`` then some block has ``popcount((x ^ y) & B_i) <= r_i`` (otherwise the distance
would be at least ``Σ (r_i + 1)``). So probing, for every block, the buckets whose key is within ``r_i``
of a code's key finds every pair; each candidate is then verified with a popcount of the XOR, so the result
is exactly brute force's. A pair found in several blocks is kept only in the first block that can find it,
so no global de-duplication is needed.

Identical codes are merged first (``np.unique``): a thousand copies of one image are one code, not a
million candidate pairs. ``hamming_pairs`` expands them back when asked for row-level pairs.

``cross_code_pairs`` is the same search between two sets (every ``x`` of A and ``y`` of B within ``t``):
the larger set is indexed, every code of the smaller one probes every key within ``r_i`` of its own, so
only cross candidates are generated (none inside A or inside B).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from cfx.pool import process_pool, results

MAX_THRESHOLD = 32
BRUTE_FORCE_MAX = 3000  # below this many distinct codes a blocked brute force is cheaper than indexing
CHUNK_CANDIDATES = 1 << 22  # candidate pairs verified at once (bounds memory: ~100 MB per chunk)
DENSE_TABLE_BITS = 24  # blocks up to this many bits use a dense bucket table, longer ones a sorted search
PARALLEL_MIN_COST = 1e9  # estimated work from which a process pool pays for its start-up (~2 s)

_U64 = np.uint64


@dataclass(frozen=True)
class CodePairs:
    """Pairs ``(a[k], b[k])`` and their distance: indices into the searched codes with ``a < b``, or for
    ``cross_code_pairs`` an index into the first set and one into the second."""

    a: np.ndarray  # int64
    b: np.ndarray  # int64
    distance: np.ndarray  # uint8

    def __len__(self) -> int:
        return int(self.a.size)

    def sorted(self) -> CodePairs:
        order = np.lexsort((self.b, self.a))
        return CodePairs(self.a[order], self.b[order], self.distance[order])


def _empty() -> CodePairs:
    return CodePairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8))


def _check(codes: np.ndarray, threshold: int) -> np.ndarray:
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise ValueError(f"threshold must be in 0..{MAX_THRESHOLD}, got {threshold}")
    codes = np.asarray(codes)
    if codes.ndim != 1:
        raise ValueError("codes must be a 1-D array")
    return codes.astype(_U64, copy=False)


_BYTE_COUNTS = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 (``np.bitwise_count`` on numpy >= 2, a byte table before)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return popcount_table(x)


def popcount_table(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _BYTE_COUNTS[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)


# --- brute force (reference and small inputs) -------------------------------------------------------
def brute_force_pairs(codes: np.ndarray, threshold: int) -> CodePairs:
    """All pairs ``i < j`` within ``threshold``, comparing every pair (O(n²); the reference)."""
    codes = _check(codes, threshold)
    n = codes.size
    out_a, out_b, out_d = [], [], []
    step = max(1, (1 << 22) // max(n, 1))
    for start in range(0, n, step):
        block = codes[start : start + step]
        d = popcount(block[:, None] ^ codes[None, :])
        i, j = np.nonzero(d <= threshold)
        i = i + start
        keep = i < j
        out_a.append(i[keep])
        out_b.append(j[keep])
        out_d.append(d[i[keep] - start, j[keep]])
    if not out_a:
        return _empty()
    return CodePairs(
        np.concatenate(out_a).astype(np.int64),
        np.concatenate(out_b).astype(np.int64),
        np.concatenate(out_d).astype(np.uint8),
    )


# --- multi-index hashing ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    blocks: tuple[tuple[int, ...], ...]  # bit positions of each block
    radii: tuple[int, ...]
    cost: float = 0.0  # estimated work (about 1e8 units per second on one core)

    @property
    def masks(self) -> list[int]:
        return [sum(1 << p for p in block) for block in self.blocks]


def _ball(bits: int, radius: int) -> int:
    from math import comb

    return sum(comb(bits, k) for k in range(radius + 1))


def _plan(
    codes: np.ndarray,
    threshold: int,
    blocks: int | None = None,
    *,
    probing: int | None = None,
    compared: float | None = None,
) -> _Plan:
    """Pick blocks and radii minimising (probes x probing keys + expected candidates) for these codes.

    Self-join (the defaults): ``probing`` is the distinct keys of a block (at most the codes) and
    ``compared`` the n²/2 pairs. A cross search passes the probing set's size and ``|A| x |B|``, with
    ``codes`` both sets (for the bit statistics).

    Bits are dealt round-robin into blocks in order of how balanced they are, so near-constant bits
    (pHash's DC bit is almost always 1) do not all land in one block and inflate its buckets.
    """
    n = codes.size
    pairs = n * n / 2 if compared is None else compared
    ones = np.array([int(((codes >> _U64(p)) & _U64(1)).sum()) for p in range(64)])
    balance = np.abs(ones / max(n, 1) - 0.5)
    order = [int(p) for p in np.argsort(balance, kind="stable")]
    best: tuple[float, _Plan] | None = None
    for m in [blocks] if blocks else range(1, min(threshold + 1, 8) + 1):
        parts = tuple(tuple(sorted(order[i::m])) for i in range(m))
        # radii: m slots of (r + 1) summing to threshold + 1, spread evenly (larger radii on earlier blocks)
        base, extra = divmod(threshold + 1, m)
        radii = tuple(base - 1 + (1 if i < extra else 0) for i in range(m))
        if min(radii) < 0:
            continue
        cost = 0.0
        for block, r in zip(parts, radii, strict=True):
            b = len(block)
            probes = _ball(b, r)
            keys_seen = min(n, 2**b) if probing is None else probing
            cost += probes * keys_seen * 1.0 + probes * pairs / 2**b
        plan = _Plan(parts, radii, cost)
        if best is None or cost < best[0]:
            best = (cost, plan)
    assert best is not None
    return best[1]


def _block_keys(codes: np.ndarray, block: tuple[int, ...]) -> np.ndarray:
    key = np.zeros(codes.size, np.int64)
    for k, p in enumerate(block):
        key |= ((codes >> _U64(p)) & _U64(1)).astype(np.int64) << k
    return key


def _flip_masks(bits: int, radius: int) -> list[int]:
    out = [0]
    for r in range(1, radius + 1):
        for combo in itertools.combinations(range(bits), r):
            out.append(sum(1 << c for c in combo))
    return out


class _Buckets:
    """Codes sorted by block key (``order``): distinct keys with the (start, count) of their run.

    ``find(keys)`` gives, per key, 0 when no code has it, ``start + 1`` when one code has it (the common
    case: that code's position, no bucket to expand) and ``-(index of the distinct key + 1)`` otherwise.
    """

    def __init__(self, key: np.ndarray, bits: int, codes: np.ndarray) -> None:
        self.order = np.argsort(key, kind="stable")
        sk = self.sorted_keys = key[self.order]
        self.sorted_codes = codes[self.order]
        self.ukeys, self.ustart, self.ucount = np.unique(sk, return_index=True, return_counts=True)
        code = np.where(self.ucount == 1, self.ustart + 1, -np.arange(1, self.ukeys.size + 1))
        self.dense = bits <= DENSE_TABLE_BITS
        if self.dense:
            self.table = np.zeros(1 << bits, np.int32)
            self.table[self.ukeys] = code
            self.sorted_keys = sk.astype(np.int32)  # half the bytes per probe
        else:
            self.code = code
        self._side: tuple[int, tuple[np.ndarray, ...]] | None = None

    def find(self, keys: np.ndarray) -> np.ndarray:
        if self.dense:
            return self.table[keys]
        pos = np.minimum(np.searchsorted(self.ukeys, keys), self.ukeys.size - 1)
        return np.where(self.ukeys[pos] == keys, self.code[pos], 0)

    def side(self, top: int) -> tuple[np.ndarray, ...]:
        """(positions, keys, codes) of the codes whose key's bit ``top`` is 0 (the last one kept): probing
        per code, not per distinct key, leaves no source bucket to expand (most buckets hold one code)."""
        if self._side is None or self._side[0] != top:
            pos = np.flatnonzero((self.sorted_keys & top) == 0)
            self._side = (top, (pos, self.sorted_keys[pos], self.sorted_codes[pos]))
        return self._side[1]


def _expand(x: np.ndarray, ystart: np.ndarray, ylen: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Candidate pairs (x[k], ystart[k] + 0 … ylen[k]-1), in chunks of about CHUNK_CANDIDATES."""
    one = ylen == 1  # the common case (most buckets hold one code): no repeat needed
    xs, ys = x[one], ystart[one]
    for lo in range(0, xs.size, CHUNK_CANDIDATES):
        yield xs[lo : lo + CHUNK_CANDIDATES], ys[lo : lo + CHUNK_CANDIDATES]
    keep = ylen > 1
    x, ystart, ylen = x[keep], ystart[keep], ylen[keep]
    if not x.size:
        return
    ends = np.cumsum(ylen)
    lo = 0
    while lo < x.size:
        base = ends[lo - 1] if lo else 0
        hi = int(np.searchsorted(ends, base + CHUNK_CANDIDATES, side="right"))
        hi = max(hi, lo + 1)
        n = ylen[lo:hi]
        total = int(n.sum())
        firsts = np.cumsum(n) - n
        within = np.arange(total, dtype=np.int64) - np.repeat(firsts, n)
        yield np.repeat(x[lo:hi], n), np.repeat(ystart[lo:hi], n) + within
        lo = hi


def _earlier(plan: _Plan, block_index: int) -> list[tuple[np.uint64, int]]:
    """(mask, radius) of the blocks before ``block_index``: a pair one of them finds is theirs."""
    return [(_U64(plan.masks[j]), plan.radii[j]) for j in range(block_index)]


def _verified(
    xor: np.ndarray, threshold: int, earlier: list[tuple[np.uint64, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """(positions in ``xor`` of the candidates within ``threshold`` that no earlier block finds, their
    distances). Few candidates survive the threshold, so the earlier blocks are checked on those only."""
    ok = np.flatnonzero(popcount(xor) <= threshold)
    xor = xor[ok]
    keep = np.ones(ok.size, bool)
    for mask, r in earlier:
        keep &= popcount(xor & mask) > r
    return ok[keep], popcount(xor[keep]).astype(np.uint8)


def _hits(
    buckets: _Buckets, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Which ``keys`` are in ``buckets``: (probe positions, code positions) for buckets of one code and
    (probe positions, distinct-key indices) for larger ones; None when no key is."""
    found = buckets.find(keys)
    hit = np.flatnonzero(found)
    if not hit.size:
        return None
    f = found[hit]
    one = f > 0
    many = ~one
    return hit[one], f[one].astype(np.int64) - 1, hit[many], -f[many].astype(np.int64) - 1


def _search_block(
    codes: np.ndarray,
    threshold: int,
    plan: _Plan,
    block_index: int,
    flips: list[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verified pairs of one block for the given flip masks, minus those an earlier block finds.

    Candidates are positions in the block's key order (``order``) and are verified on a copy of the codes
    in that order (the probing side is read in sequence); only verified pairs are mapped back to indices.
    """
    block = plan.blocks[block_index]
    buckets = _Buckets(_block_keys(codes, block), len(block), codes)
    earlier = _earlier(plan, block_index)
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    ustart, ucount, order, sorted_codes = buckets.ustart, buckets.ucount, buckets.order, buckets.sorted_codes

    def verify(px: np.ndarray, py: np.ndarray, xor: np.ndarray) -> None:
        ok, d = _verified(xor, threshold, earlier)
        if ok.size:
            xa, yb = order[px[ok]], order[py[ok]]
            out.append((np.minimum(xa, yb), np.maximum(xa, yb), d))

    def verify_runs(x: np.ndarray, ystart: np.ndarray, ylen: np.ndarray) -> None:
        for px, py in _expand(x, ystart, ylen):
            verify(px, py, sorted_codes[px] ^ sorted_codes[py])

    # flips grouped by their top bit, so each side of the buckets is built once
    for flip in sorted(flips, key=int.bit_length):
        if flip == 0:
            # pairs inside a bucket: each member against the members after it
            multi = ucount > 1
            s, c = ustart[multi], ucount[multi]
            x = np.repeat(s, c) + (np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c))
            verify_runs(x, x + 1, np.repeat(s + c, c) - (x + 1))
            continue
        # key -> key ^ flip, taken once per unordered pair of buckets (the side whose top flipped bit is 0)
        pos, keys, side_codes = buckets.side(1 << (flip.bit_length() - 1))
        hits = _hits(buckets, keys ^ flip)
        if hits is None:
            continue
        h1, y1, hm, tgt = hits
        verify(pos[h1], y1, side_codes[h1] ^ sorted_codes[y1])
        if hm.size:
            verify_runs(pos[hm], ustart[tgt], ucount[tgt])
    return _columns(out)


def _columns(
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8)
    a, b, d = (np.concatenate(column) for column in zip(*out, strict=True))
    return a, b, d


def _tasks(plan: _Plan, pieces: int) -> list[tuple[int, list[int]]]:
    """(block, flip masks) work items; each block's masks are split into ``pieces`` interleaved parts."""
    out: list[tuple[int, list[int]]] = []
    for i, (block, r) in enumerate(zip(plan.blocks, plan.radii, strict=True)):
        flips = _flip_masks(len(block), r)
        k = max(1, min(pieces, len(flips)))
        out.extend((i, flips[j::k]) for j in range(k))
    return out


def distinct_code_pairs(
    codes: np.ndarray,
    threshold: int,
    *,
    workers: int = 1,
    method: str = "auto",
    executor_factory: Callable[[int], Executor] | None = None,
) -> CodePairs:
    """All pairs ``i < j`` of DISTINCT codes within ``threshold`` (codes must be unique), exact.

    ``method``: "index" (multi-index hashing), "brute" or "auto" (brute force for small inputs).
    ``workers`` > 1 splits the probes over a process pool (only for large inputs).
    """
    codes = _check(codes, threshold)
    n = codes.size
    if n < 2 or threshold == 0:
        return _empty()
    if method == "brute" or (method == "auto" and n <= BRUTE_FORCE_MAX):
        return brute_force_pairs(codes, threshold).sorted()
    plan = _plan(codes, threshold)
    return _run(_search_block, (codes, threshold, plan), plan, workers, executor_factory)


def _run(
    search: Callable[..., tuple[np.ndarray, ...]],
    args: tuple[object, ...],
    plan: _Plan,
    workers: int,
    executor_factory: Callable[[int], Executor] | None,
) -> CodePairs:
    """``search(*args, block, flips)`` over the plan's tasks, on a process pool when the work pays for it
    (``workers`` > 1 and an estimated cost from ``PARALLEL_MIN_COST``, or an injected executor)."""
    parallel = workers > 1 and (plan.cost >= PARALLEL_MIN_COST or executor_factory is not None)
    tasks = _tasks(plan, pieces=workers if parallel else 1)
    parts: list[tuple[np.ndarray, ...]] = []
    if parallel:
        factory = executor_factory or process_pool
        with factory(workers) as pool:
            futures = [pool.submit(search, *args, i, f) for i, f in tasks]
            parts.extend(p for p in results(futures))
    else:
        parts = [search(*args, i, f) for i, f in tasks]
    parts = [p for p in parts if p[0].size]
    if not parts:
        return _empty()
    a = np.concatenate([p[0] for p in parts])
    b = np.concatenate([p[1] for p in parts])
    d = np.concatenate([p[2] for p in parts])
    return CodePairs(a.astype(np.int64), b.astype(np.int64), d).sorted()


# --- cross search: A x B -----------------------------------------------------------------------------
def brute_force_cross_pairs(codes_a: np.ndarray, codes_b: np.ndarray, threshold: int) -> CodePairs:
    """Every ``(i, j)`` with ``codes_a[i]`` and ``codes_b[j]`` within ``threshold`` (O(|A| x |B|))."""
    codes_a, codes_b = _check(codes_a, threshold), _check(codes_b, threshold)
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    step = max(1, (1 << 22) // max(codes_b.size, 1))
    for start in range(0, codes_a.size, step):
        d = popcount(codes_a[start : start + step, None] ^ codes_b[None, :])
        i, j = np.nonzero(d <= threshold)
        out.append((i + start, j, d[i, j].astype(np.uint8)))
    a, b, d = _columns(out)
    return CodePairs(a.astype(np.int64), b.astype(np.int64), d).sorted()


def _cross_block(
    probe: np.ndarray,
    indexed: np.ndarray,
    threshold: int,
    plan: _Plan,
    block_index: int,
    flips: list[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verified (probe index, indexed index, distance) of one block for the given flip masks, minus those
    an earlier block finds. Every probing code looks up ``key ^ flip`` for every flip: a pair within the
    block's radius is met by exactly one flip (``key_x ^ key_y``), so no pair is found twice."""
    block = plan.blocks[block_index]
    buckets = _Buckets(_block_keys(indexed, block), len(block), indexed)
    # the probing codes in key order too: ``key ^ flip`` then walks the table nearly in sequence
    keys = _block_keys(probe, block)
    probe_order = np.argsort(keys, kind="stable")
    keys, probe_codes = keys[probe_order], probe[probe_order]
    if buckets.dense:
        keys = keys.astype(np.int32)  # half the bytes per probe
    earlier = _earlier(plan, block_index)
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    ustart, ucount, order, sorted_codes = buckets.ustart, buckets.ucount, buckets.order, buckets.sorted_codes

    def verify(px: np.ndarray, py: np.ndarray) -> None:
        ok, d = _verified(probe_codes[px] ^ sorted_codes[py], threshold, earlier)
        if ok.size:
            out.append((probe_order[px[ok]], order[py[ok]], d))

    for flip in flips:
        hits = _hits(buckets, keys ^ flip)
        if hits is None:
            continue
        h1, y1, hm, tgt = hits
        verify(h1, y1)
        if hm.size:
            for px, py in _expand(hm, ustart[tgt], ucount[tgt]):
                verify(px, py)
    return _columns(out)


def cross_code_pairs(
    codes_a: np.ndarray,
    codes_b: np.ndarray,
    threshold: int,
    *,
    workers: int = 1,
    method: str = "auto",
    executor_factory: Callable[[int], Executor] | None = None,
) -> CodePairs:
    """Every ``(i, j)`` with ``popcount(codes_a[i] ^ codes_b[j]) <= threshold``, exact, sorted; each side's
    codes must be unique (a code may be in both). ``a`` indexes ``codes_a``, ``b`` indexes ``codes_b``.

    ``method``: "index" (multi-index hashing: the larger side indexed, the smaller one probing), "brute"
    or "auto" (brute force for small inputs). ``workers`` > 1 splits the probes over a process pool
    (only for large inputs).
    """
    codes_a, codes_b = _check(codes_a, threshold), _check(codes_b, threshold)
    na, nb = codes_a.size, codes_b.size
    if not na or not nb:
        return _empty()
    if threshold == 0:
        _, i, j = np.intersect1d(codes_a, codes_b, assume_unique=True, return_indices=True)
        return CodePairs(i.astype(np.int64), j.astype(np.int64), np.zeros(i.size, np.uint8)).sorted()
    if method == "brute" or (method == "auto" and na * nb <= BRUTE_FORCE_MAX**2 // 2):
        return brute_force_cross_pairs(codes_a, codes_b, threshold)
    swap = na > nb  # probe with the smaller side: probes cost per probing code, candidates do not
    probe, indexed = (codes_b, codes_a) if swap else (codes_a, codes_b)
    plan = _plan(
        np.concatenate([codes_a, codes_b]), threshold, probing=probe.size, compared=float(na) * float(nb)
    )
    found = _run(_cross_block, (probe, indexed, threshold, plan), plan, workers, executor_factory)
    if swap:
        found = CodePairs(found.b, found.a, found.distance).sorted()
    return found


def hamming_pairs(codes: np.ndarray, threshold: int, *, workers: int = 1, method: str = "auto") -> CodePairs:
    """All pairs ``i < j`` of ``codes`` (duplicates allowed) with ``popcount(codes[i] ^ codes[j]) <= threshold``.

    Identical to ``brute_force_pairs`` (sorted by (a, b)). Note that k copies of one code give k(k-1)/2
    pairs: callers that only need groups should use ``distinct_code_pairs`` on ``np.unique(codes)``.
    """
    codes = _check(codes, threshold)
    uniq, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    members = np.argsort(inverse, kind="stable")  # indices grouped by distinct code, ascending within
    first = np.cumsum(counts) - counts
    out_a, out_b, out_d = [], [], []
    # pairs among copies of one code
    for u in np.flatnonzero(counts > 1):
        idx = members[first[u] : first[u] + counts[u]]
        i, j = np.triu_indices(idx.size, 1)
        out_a.append(idx[i])
        out_b.append(idx[j])
        out_d.append(np.zeros(i.size, np.uint8))
    # pairs across distinct codes: the cross product of their members
    dp = distinct_code_pairs(uniq, threshold, workers=workers, method=method)
    if len(dp):
        ca, cb = counts[dp.a], counts[dp.b]
        n = ca * cb
        rep = np.repeat(np.arange(len(dp)), n)
        within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        ia = members[first[dp.a][rep] + within // cb[rep]]
        ib = members[first[dp.b][rep] + within % cb[rep]]
        out_a.append(np.minimum(ia, ib))
        out_b.append(np.maximum(ia, ib))
        out_d.append(dp.distance[rep])
    if not out_a:
        return _empty()
    return CodePairs(
        np.concatenate(out_a).astype(np.int64),
        np.concatenate(out_b).astype(np.int64),
        np.concatenate(out_d).astype(np.uint8),
    ).sorted()
