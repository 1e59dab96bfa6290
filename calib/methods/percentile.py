"""``percentile``: amax = the upper edge of the bin holding the p-th percentile of |x|.

Degenerate histograms (:mod:`trtq.calib.methods`): empty or only zeros -> ``EMPTY_AMAX``; a
single non-empty bin -> ``max_abs``.
"""

from __future__ import annotations

import numpy as np

from trtq.calib.methods import degenerate_amax, register_method


@register_method(
    "percentile",
    algorithm="EntropyCalibration2",
    description="p-th percentile of |x| (--percentile, default 99.99)",
)
def percentile_amax(
    counts: np.ndarray, edges: np.ndarray, *, max_abs: float, percentile: float = 99.99
) -> float:
    """Smallest bin upper edge ``edges[j+1]`` with at least ``percentile`` % of counts at or below
    bin ``j``; never above ``max_abs`` (the edge of the last bin can exceed the data)."""
    if not 0 < percentile <= 100:
        from trtq._core.errors import InputError

        raise InputError(f"--percentile must be in (0, 100], got {percentile}")
    degenerate = degenerate_amax(counts, max_abs)
    if degenerate is not None:
        return degenerate
    cum = np.cumsum(counts, dtype=np.float64)
    j = int(np.searchsorted(cum, cum[-1] * percentile / 100.0, side="left"))
    return min(float(edges[min(j, len(counts) - 1) + 1]), max_abs)
