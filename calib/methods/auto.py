"""``auto``: per tensor, the candidate threshold with the smallest measured error at the output of
the layer that consumes the quantized tensor (see :mod:`trtq.calib.auto`).

Not a function of the histogram alone: it needs the model and calibration data, so it runs in
``calib run`` / :func:`trtq.calib.run.calibrate`, and ``calib compute`` / ``calib merge`` refuse it.
"""

from __future__ import annotations

import numpy as np

from trtq._core.errors import InputError
from trtq.calib.methods import register_method

NEEDS_DATA = (
    "method 'auto' measures each threshold on the model's layers over calibration data: it needs "
    "the model and the data, not histograms alone; use `calib run` (auto is its default)"
)


@register_method(
    "auto",
    algorithm="EntropyCalibration2",
    description="per tensor, the candidate with the least measured consumer-layer error (needs data)",
    needs_data=True,
)
def auto_amax(
    counts: np.ndarray,
    edges: np.ndarray,
    *,
    max_abs: float,
    auto_samples: int = 16,
    auto_grid: int = 0,
    auto_positions: int = 4096,
    auto_fallback: str = "mse",
    auto_check: int = 1,
) -> float:
    """Parameters: samples measured on, grid points, positions per sample, fallback method, and
    whether the model-output check runs (1; it needs the precision room's build tools)."""
    raise InputError(NEEDS_DATA)
