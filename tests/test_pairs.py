"""Hamming pair search: identical to brute force on random, planted and clustered codes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfx.pairs import CodePairs, brute_force_pairs, distinct_code_pairs, hamming_pairs

U64 = st.integers(min_value=0, max_value=2**64 - 1)


def _flip(code: int, bits: list[int]) -> int:
    for b in bits:
        code ^= 1 << b
    return code


def _as_set(p: CodePairs) -> set[tuple[int, int, int]]:
    return set(zip(p.a.tolist(), p.b.tolist(), p.distance.tolist(), strict=True))


def _naive(codes: list[int], t: int) -> set[tuple[int, int, int]]:
    out = set()
    for i in range(len(codes)):
        for j in range(i + 1, len(codes)):
            d = (codes[i] ^ codes[j]).bit_count()
            if d <= t:
                out.add((i, j, d))
    return out


@st.composite
def planted(draw: st.DrawFn) -> tuple[list[int], int]:
    """Random codes plus copies of some of them with 0..t+2 bits flipped (pairs at and around t)."""
    t = draw(st.integers(0, 12))
    base = draw(st.lists(U64, min_size=1, max_size=60))
    codes = list(base)
    for _ in range(draw(st.integers(0, 40))):
        src = draw(st.sampled_from(base))
        k = draw(st.integers(0, t + 2))
        bits = draw(st.lists(st.integers(0, 63), min_size=k, max_size=k, unique=True))
        codes.append(_flip(src, bits))
    order = draw(st.permutations(range(len(codes))))
    return [codes[i] for i in order], t


@settings(max_examples=150, deadline=None)
@given(planted())
def test_index_equals_brute_force(case: tuple[list[int], int]) -> None:
    codes, t = case
    arr = np.array(codes, dtype=np.uint64)
    expected = _naive(codes, t)
    assert _as_set(brute_force_pairs(arr, t)) == expected
    # multi-index hashing forced even on tiny inputs; duplicates expanded by hamming_pairs
    got = hamming_pairs(arr, t, method="index")
    assert _as_set(got) == expected
    assert len(got) == len(expected)  # no pair reported twice
    uniq = np.unique(arr)
    assert _as_set(distinct_code_pairs(uniq, t, method="index")) == _naive(uniq.tolist(), t)


@pytest.mark.parametrize("t", [0, 1, 3, 6, 8, 10, 12])
def test_index_equals_brute_force_clustered(t: int) -> None:
    """Codes around a few centres: big buckets, many pairs near t, both search paths must agree."""
    rng = np.random.default_rng(t)
    centres = rng.integers(0, 2**63, 30, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    which = rng.integers(0, centres.size, 6000)
    flips = rng.random((which.size, 64)) < 0.09
    noise = (flips * (np.uint64(1) << np.arange(64, dtype=np.uint64))).sum(axis=1, dtype=np.uint64)
    codes = np.unique(centres[which] ^ noise)
    bf = brute_force_pairs(codes, t).sorted()
    mi = distinct_code_pairs(codes, t, method="index")
    assert len(bf) > 0 or t == 0
    assert np.array_equal(bf.a, mi.a) and np.array_equal(bf.b, mi.b)
    assert np.array_equal(bf.distance, mi.distance)


def test_constant_bits_and_huge_buckets() -> None:
    """Half the bits fixed (like pHash's DC bit, but worse): one block key is shared by everything."""
    rng = np.random.default_rng(5)
    codes = np.unique(rng.integers(0, 2**32, 5000, dtype=np.uint64) | np.uint64(0xFFFF0000_00000000))
    bf = brute_force_pairs(codes, 9).sorted()
    mi = distinct_code_pairs(codes, 9, method="index")
    assert _as_set(bf) == _as_set(mi) and len(mi) == len(bf) > 0


def test_workers_split_gives_same_pairs() -> None:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**64 - 1, 4000, dtype=np.uint64)
    near = base[:800] ^ (np.uint64(1) << rng.integers(0, 64, 800).astype(np.uint64))
    codes = np.unique(np.concatenate([base, near]))
    one = distinct_code_pairs(codes, 7, method="index")
    # the pool is injected (threads) to test the work split without process start-up cost
    two = distinct_code_pairs(
        codes, 7, method="index", workers=2, executor_factory=lambda w: ThreadPoolExecutor(w)
    )
    assert len(one) >= 800
    assert np.array_equal(one.a, two.a) and np.array_equal(one.b, two.b)


def test_popcount_fallback_for_numpy_1() -> None:
    from cfx.pairs import popcount_table

    x = np.random.default_rng(1).integers(0, 2**64 - 1, (30, 5), dtype=np.uint64)
    expected = np.array([[int(v).bit_count() for v in r] for r in x.tolist()])
    assert np.array_equal(popcount_table(x), expected)


def test_edge_cases() -> None:
    assert len(hamming_pairs(np.zeros(0, np.uint64), 8)) == 0
    assert len(hamming_pairs(np.array([7], np.uint64), 8)) == 0
    same = hamming_pairs(np.array([5, 5, 5], np.uint64), 0)
    assert _as_set(same) == {(0, 1, 0), (0, 2, 0), (1, 2, 0)}
    full = hamming_pairs(np.array([0, 2**64 - 1], np.uint64), 32)
    assert len(full) == 0
    with pytest.raises(ValueError):
        hamming_pairs(np.zeros(3, np.uint64), 65)


@pytest.mark.slow
def test_full_dataset_scale_under_a_minute() -> None:
    """556,541 codes (the size of CF-Small) at the default threshold, on this 2-core machine."""
    from cfx.dedupe import DEFAULT_THRESHOLD

    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 2**64 - 1, 556_541, dtype=np.uint64))
    planted = codes[:1000] ^ (np.uint64(1) << rng.integers(0, 64, 1000).astype(np.uint64))
    codes = np.unique(np.concatenate([codes, planted]))
    start = time.perf_counter()
    got = distinct_code_pairs(codes, DEFAULT_THRESHOLD, workers=2)
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"{elapsed:.1f} s"
    assert len(got) >= 1000
    # spot-check exactness against brute force for a sample of codes
    sample = rng.choice(codes.size, 200, replace=False)
    found = set(zip(got.a.tolist(), got.b.tolist(), strict=True))
    for i in sample.tolist():
        d = np.bitwise_count(codes ^ codes[i])
        for j in np.flatnonzero(d <= DEFAULT_THRESHOLD).tolist():
            if j != i:
                assert (min(i, j), max(i, j)) in found
