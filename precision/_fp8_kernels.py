"""Numba kernels for FP8 E4M3 rounding: the one implementation of it in trtq.precision.

:func:`trtq.precision.qdq.round_fp8` rounds arrays through :func:`round_array`, and the weight-grid
choice of :func:`trtq.precision.qdq.quantize_weight_fp8` measures each candidate's error with the
same :func:`e4m3`. Imported on first use, so that commands which never touch FP8 do not load
numba; compiled kernels are cached in the per-user folder of :mod:`trtq._core.jit`.

Rounding: ``rint(x / q) * q`` with ``q`` the spacing of E4M3 values in the binade of ``x``
(``2**(e - 3)`` for ``2**e <= |x| < 2**(e+1)``, ``2**-9`` below ``2**-6``): ``x / q`` is exact
(``q`` is a power of two), ``rint`` rounds half to even, and a result at the next power of two is
representable there too; saturated to +-448; NaN stays NaN. Arithmetic is float64 on float32
inputs, which gives the float32 result exactly (every step is exact or a rounding to a value
float32 holds).
"""

from __future__ import annotations

import math

import numpy as np

from trtq._core.jit import njit
from trtq.precision.qdq import FP8_MAX

_MIN_NORMAL_EXP = -6  # 2**-6, the smallest normal E4M3 magnitude
_MANTISSA_BITS = 3


@njit(nogil=True)
def e4m3(x):  # pragma: no cover - compiled
    """``x`` rounded to the nearest E4M3 value (ties to even), saturated to +-448."""
    if x != x:
        return x
    _, e = math.frexp(x)  # |x| = m * 2**e with 0.5 <= m < 1, so floor(log2|x|) = e - 1
    q = math.ldexp(1.0, max(e - 1, _MIN_NORMAL_EXP) - _MANTISSA_BITS)
    r = np.rint(x / q) * q
    return min(max(r, -FP8_MAX), FP8_MAX)


@njit(nogil=True)
def round_array(x, out):  # pragma: no cover - compiled
    """``out[i] = e4m3(x[i])`` for flat float32 arrays."""
    for i in range(x.shape[0]):
        out[i] = e4m3(np.float64(x[i]))


@njit(nogil=True)
def channel_errors(w, amax, divisors):  # pragma: no cover - compiled
    """``[C, D]`` summed squared error of E4M3 rounding of each row of ``w`` ``[C, K]`` at scale
    ``amax[c] / divisors[d]`` (float64 sums: used to choose a grid, not to round)."""
    c_n, k_n = w.shape
    out = np.zeros((c_n, divisors.shape[0]))
    for c in range(c_n):
        if amax[c] <= 0:
            continue
        for d in range(divisors.shape[0]):
            s = amax[c] / divisors[d]
            acc = 0.0
            for k in range(k_n):
                diff = e4m3(w[c, k] / s) * s - w[c, k]
                acc += diff * diff
            out[c, d] = acc
    return out
