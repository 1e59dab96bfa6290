"""``minmax``: amax = the largest finite |x| seen (exact, not a bin edge).

Degenerate histograms (:mod:`trtq.calib.methods`): empty or only zeros -> ``EMPTY_AMAX``; a
single non-empty bin -> ``max_abs`` (as always).
"""

from __future__ import annotations

import numpy as np

from trtq.calib.methods import degenerate_amax, register_method


@register_method("minmax", algorithm="MinMaxCalibration", description="largest |x| seen (no clipping)")
def minmax_amax(counts: np.ndarray, edges: np.ndarray, *, max_abs: float) -> float:
    degenerate = degenerate_amax(counts, max_abs)
    return max_abs if degenerate is None else degenerate
