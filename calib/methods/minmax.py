"""``minmax``: amax = the largest finite |x| seen (exact, not a bin edge)."""

from __future__ import annotations

import numpy as np

from trtq.calib.methods import register_method


@register_method("minmax", algorithm="MinMaxCalibration", description="largest |x| seen (no clipping)")
def minmax_amax(counts: np.ndarray, edges: np.ndarray, *, max_abs: float) -> float:
    return max_abs
