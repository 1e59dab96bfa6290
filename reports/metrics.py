"""The per-layer error metrics a report can colour, and how each becomes an error magnitude.

Colour always encodes an *error magnitude* ``e >= 0`` where larger is worse, on a log scale:

- ``rel_l2``: ``||y - y32|| / ||y32||``, used as is;
- ``max_abs``, ``mean_abs``: absolute error in the tensor's own units, used as is;
- ``cosine``: ``e = 1 - cosine`` (0 for identical directions);
- ``sqnr_db``: ``e = 10 ** (-sqnr_db / 10)``, the noise-to-signal power ratio.

The number shown in a cell is always the metric as the result stored it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


def as_float(value: Any) -> float:
    """``float(value)``, or NaN where ``value`` is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def format_number(value: Any, spec: str = ".4g") -> str:
    """``value`` formatted with ``spec``, or "—" where it is missing, NaN or not a number."""
    v = as_float(value)
    return "—" if math.isnan(v) else format(v, spec)


def _identity_abs(v: np.ndarray) -> np.ndarray:
    return np.abs(v)


def _one_minus(v: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - v, 0.0, None)


def _db_to_noise_ratio(v: np.ndarray) -> np.ndarray:
    return np.power(10.0, -v / 10.0)


@dataclass(frozen=True)
class Metric:
    """One metric of SCHEMA.md's compare ``layers``: its key, label and error transform."""

    key: str
    label: str
    error_label: str
    to_error: Callable[[np.ndarray], np.ndarray] = _identity_abs
    fmt: str = "{:.3g}"

    def error(self, values: np.ndarray) -> np.ndarray:
        """Error magnitude (>= 0, larger is worse) for stored metric values (NaN stays NaN)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self.to_error(np.asarray(values, dtype=np.float64))

    def format(self, value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        if isinstance(value, float) and math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return self.fmt.format(value)


METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("rel_l2", "rel L2", "rel L2"),
        Metric("cosine", "cosine", "1 − cosine", _one_minus, "{:.5f}"),
        Metric("sqnr_db", "SQNR dB", "noise/signal power", _db_to_noise_ratio, "{:.1f}"),
        Metric("max_abs", "max |Δ|", "max |Δ|"),
        Metric("mean_abs", "mean |Δ|", "mean |Δ|"),
    )
}

# Columns of the heatmap for each run, and of the worst-layer table, in this order.
HEATMAP_METRICS: tuple[str, ...] = ("rel_l2", "cosine", "max_abs")
TABLE_METRICS: tuple[str, ...] = ("rel_l2", "cosine", "max_abs")
# Columns of the model-output table (one row per run and output).
OUTPUT_METRICS: tuple[str, ...] = ("rel_l2", "cosine", "sqnr_db", "max_abs", "mean_abs")
# The metric that ranks layers as "worst" (its error magnitude, max over runs).
RANK_METRIC = "rel_l2"
