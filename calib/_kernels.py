"""Numba kernels for the histogram hot path (the only compiled code in trtq.calib).

Kept apart from :mod:`trtq.calib.histogram` so that the data structure reads as plain Python.
The kernels release the GIL, so a thread pool runs them on several tensors at once.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def _merge_pairs(counts, times):  # pragma: no cover - compiled
    """Merge adjacent bin pairs ``times`` times (the range doubles each time)."""
    nbins = counts.shape[0]
    half = nbins // 2
    for _ in range(times):
        for j in range(half):
            counts[j] = counts[2 * j] + counts[2 * j + 1]
        for j in range(half, nbins):
            counts[j] = 0


@njit(nogil=True, cache=True)
def _bin_run(values, k, counts, upper, stats):  # pragma: no cover - compiled
    """Bin |values[k:]| into ``counts`` in groups of 4 while all four are finite and < ``upper``.

    Returns the index of the first group it could not take. Four interleaved sub-histograms
    break the store-to-load chains of repeated bins (the zeros after a ReLU).
    """
    nbins = counts.shape[0]
    local = np.zeros((4, nbins), np.int64)
    scale = nbins / upper
    vmax = stats[0]
    n4 = k + (values.shape[0] - k) // 4 * 4
    while k < n4:
        a0 = abs(values[k])
        a1 = abs(values[k + 1])
        a2 = abs(values[k + 2])
        a3 = abs(values[k + 3])
        if (a0 < upper) & (a1 < upper) & (a2 < upper) & (a3 < upper):
            local[0, int(a0 * scale)] += 1
            local[1, int(a1 * scale)] += 1
            local[2, int(a2 * scale)] += 1
            local[3, int(a3 * scale)] += 1
            m = max(max(a0, a1), max(a2, a3))
            if m > vmax:
                vmax = m
            k += 4
        else:
            break
    for r in range(4):
        for j in range(nbins):
            counts[j] += local[r, j]
    stats[0] = vmax
    return k


@njit(nogil=True, cache=True)
def accumulate_abs(values, counts, upper, stats):  # pragma: no cover - compiled
    """Add ``|values|`` to ``counts`` (B bins over [0, upper]); grow ``upper`` by powers of two.

    ``values``: flat float32 array. ``counts``: int64[B], B even. ``upper``: 0.0 until a non-zero
    value is seen, then a power of two strictly greater than every finite |x| seen. A value at or
    above ``upper`` makes adjacent bins merge pairwise while ``upper`` doubles. Since ``upper``
    and ``B / upper`` are powers of two, ``floor(|x| * B / upper)`` is exact, and the merged
    histogram equals the one built with the final range from the start: the result depends only
    on the multiset of values, never on their order or on how they were batched.
    ``stats``: float64[2] = (running max of finite |x|, count of NaN/Inf values, which are not
    binned). Returns the new ``upper``.
    """
    nbins = counts.shape[0]
    nonfinite = 0
    n = values.shape[0]
    k = 0
    while k < n:
        if upper > 0.0:
            k = _bin_run(values, k, counts, upper, stats)
        end = min(k + 4, n)
        while k < end:  # the group that stopped the run (or the last < 4 values), one by one
            a = abs(values[k])
            k += 1
            if a < upper:
                counts[int(a * (nbins / upper))] += 1
                stats[0] = max(stats[0], np.float64(a))
            elif a != a or a == np.inf:
                nonfinite += 1
            elif a == 0.0:  # reached only while upper == 0: zero lands in bin 0 for any range
                counts[0] += 1
            else:
                stats[0] = max(stats[0], np.float64(a))
                if upper == 0.0:
                    upper = 2.0 ** np.floor(np.log2(np.float64(a)))
                times = 0
                while upper <= a:
                    upper *= 2.0
                    times += 1
                if times:
                    _merge_pairs(counts, times)
                counts[int(a * (nbins / upper))] += 1
    stats[1] += nonfinite
    return upper


@njit(nogil=True, cache=True)
def rebinned(counts, upper, new_upper):  # pragma: no cover - compiled
    """A copy of ``counts`` (over [0, upper]) merged pairwise to cover [0, new_upper].

    Both are powers of two with ``new_upper >= upper``, or ``upper == 0`` (only zeros seen).
    """
    out = counts.copy()
    if upper == 0.0:
        return out
    times = 0
    while upper < new_upper:
        upper *= 2.0
        times += 1
    _merge_pairs(out, times)
    return out
