"""``mse``: amax minimising the mean squared error of symmetric INT8 quantisation of |x|.

Values are assumed uniform within each histogram bin, and the error is integrated exactly
over each bin (not sampled at bin centres, which is badly biased once the quantisation step
approaches the bin width). For a candidate amax ``t`` with step ``s = t / 127`` a value ``x``
becomes ``s * min(round(x / s), 127)``. Candidates are the bin upper edges; the first candidate
with the smallest error wins.

Degenerate histograms (:mod:`trtq.calib.methods`): empty or only zeros (e.g. an attention mask
of 0 and -inf: the range is 0, so every candidate step would be 0) -> ``EMPTY_AMAX``; a single
non-empty bin -> ``max_abs`` (the uniform-within-a-bin model would clip a constant tensor to the
bin's lower edge).
"""

from __future__ import annotations

import numpy as np

from trtq._core.jit import njit
from trtq.calib.methods import degenerate_amax, register_method


@njit(nogil=True)
def _round_err_integral(u):  # pragma: no cover - compiled
    """F(u) = integral over [0, u] of (v - round(v))^2 dv, for u >= 0."""
    k = np.floor(u)
    f = u - k
    if f <= 0.5:
        g = f * f * f / 3.0
    else:
        g = 1.0 / 24.0 + ((f - 1.0) ** 3 + 0.125) / 3.0
    return k / 12.0 + g


@njit(nogil=True)
def _candidate_error(counts, edges, filled, i, bound):  # pragma: no cover - compiled
    """Expected squared error of candidate ``edges[i]``, or ``inf`` once its partial sum exceeds
    ``bound``. Every term is >= 0 and a float sum of non-negative terms never decreases, so a
    partial sum above ``bound`` means the total is above it too. The order of the sums is fixed
    (clipped bins from the top down, then rounded bins from the bottom up): a candidate that is
    not cut short gets the same value whatever the bound."""
    t = edges[i]
    s = t / 127.0
    clip = 0.0
    for k in range(filled.shape[0] - 1, -1, -1):  # bins [lo, hi] above t: clipped to t
        j = filled[k]
        lo = edges[j]
        if lo < t:
            break
        hi = edges[j + 1]
        clip += counts[j] * (((hi - t) ** 3 - (lo - t) ** 3) / 3.0) / (hi - lo)
        if clip > bound:
            return np.inf
    err = 0.0
    for j in filled:  # bins below t: rounding error, periodic in x with period s
        lo = edges[j]
        if lo >= t:
            break
        hi = edges[j + 1]
        err += counts[j] * (s**3 * (_round_err_integral(hi / s) - _round_err_integral(lo / s))) / (hi - lo)
        if clip + err > bound:
            return np.inf
    return err + clip


#: Candidates evaluated first, evenly spaced, to find a bound that cuts the others short.
_SEEDS = 32


@njit(nogil=True)
def squared_errors(counts, edges):  # pragma: no cover - compiled
    """Expected total squared error for each candidate amax ``edges[i]``, i = 1..B; ``inf`` for a
    candidate that cannot be the smallest.

    A candidate's sum stops as soon as it exceeds the smallest total found so far
    (:func:`_candidate_error`): the clipped error, summed first, rules out most candidates below
    the optimum; the rounding error, which grows with the step, most of those above it. So that
    the bound is tight from the start, ``_SEEDS`` evenly spaced candidates are evaluated in full
    first; then every candidate is visited from the largest down. Candidates that are not cut
    short get their full value, so the first minimum is the one a full evaluation finds.
    """
    n = counts.shape[0]
    out = np.full(n, np.inf)
    filled = np.flatnonzero(counts)
    best = np.inf
    step = max(1, n // _SEEDS)
    for i in range(n, 0, -step):
        err = _candidate_error(counts, edges, filled, i, np.inf)
        if err < best:
            best = err
    for i in range(n, 0, -1):
        err = _candidate_error(counts, edges, filled, i, best)
        out[i - 1] = err
        if err < best:
            best = err
    return out


@register_method(
    "mse", algorithm="EntropyCalibration2", description="minimum mean squared quantisation error"
)
def mse_amax(counts: np.ndarray, edges: np.ndarray, *, max_abs: float) -> float:
    degenerate = degenerate_amax(counts, max_abs)
    if degenerate is not None:
        return degenerate
    errs = squared_errors(counts.astype(np.float64), edges.astype(np.float64))
    i = int(np.argmin(errs)) + 1
    return min(float(edges[i]), max(max_abs, float(edges[1])))
