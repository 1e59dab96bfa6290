"""The report's error colour scale: log-spaced, quantised into a few CSS classes.

One :class:`LogScale` per metric is shared by all runs in a heatmap, so FP16 and INT8 cells of
the same metric are directly comparable. Error ``e`` maps to a position
``t = (log10 e - log10 lo) / (log10 hi - log10 lo)`` clipped to [0, 1]; ``e == 0`` maps to 0.
HTML cells use ``t`` quantised into :data:`LEVELS` classes (``q0`` ... ``q{LEVELS-1}``); the
overview image uses ``t`` directly. NaN/Inf in the tensor and "no value" have their own colours,
outside the scale, so they can never be mistaken for a small or a large error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex

LEVELS = 16
CMAP_NAME = "YlOrRd"
# Part of the colormap used: its palest end is too close to white to read as "a colour".
CMAP_RANGE = (0.04, 1.0)
NONFINITE_COLOUR = "#6a1b9a"  # purple: outside the yellow-red scale
MISSING_COLOUR = "#e6e9ed"  # light grey: no value
PINNED_COLOUR = "#1565c0"  # blue: layer kept in FP32
# Levels from which white text reads better than dark text on the cell colour.
DARK_FROM = 11


def level_colours() -> list[str]:
    """Hex colour of each quantised level, palest (smallest error) first."""
    cmap = colormaps[CMAP_NAME]
    lo, hi = CMAP_RANGE
    return [to_hex(cmap(lo + (hi - lo) * (i + 0.5) / LEVELS)) for i in range(LEVELS)]


def rgba(t: np.ndarray) -> np.ndarray:
    """RGBA colours (float, [..., 4]) for scale positions ``t`` in [0, 1]."""
    lo, hi = CMAP_RANGE
    return colormaps[CMAP_NAME](lo + (hi - lo) * np.clip(t, 0.0, 1.0))


@dataclass(frozen=True)
class LogScale:
    """A log10 colour scale over error magnitudes [lo, hi] (both > 0)."""

    lo: float
    hi: float

    @classmethod
    def fit(cls, errors: np.ndarray) -> LogScale:
        """Fit to the finite, positive errors: hi = the largest, lo = their 2nd percentile (in
        log space), so a few exact-looking outliers do not stretch the scale.

        The scale always spans at least two decades, so near-identical errors do not look like
        a dramatic range. With no positive error at all it is ``[1e-8, 1e-6]``.
        """
        e = np.asarray(errors, dtype=np.float64).ravel()
        e = e[np.isfinite(e) & (e > 0)]
        if e.size == 0:
            return cls(1e-8, 1e-6)
        hi = float(e.max())
        lo = float(10.0 ** np.percentile(np.log10(e), 2))
        lo = min(lo, hi / 100.0)
        return cls(lo, hi)

    def position(self, errors: np.ndarray) -> np.ndarray:
        """Scale position in [0, 1] (NaN where the error is NaN)."""
        e = np.asarray(errors, dtype=np.float64)
        span = math.log10(self.hi) - math.log10(self.lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (np.log10(np.where(e > 0, e, self.lo)) - math.log10(self.lo)) / span
        t = np.clip(t, 0.0, 1.0)
        return np.where(np.isnan(e), np.nan, t)

    def level(self, errors: np.ndarray) -> np.ndarray:
        """Quantised level 0..LEVELS-1 (-1 where the error is NaN)."""
        t = self.position(errors)
        lv = np.minimum((np.nan_to_num(t, nan=0.0) * LEVELS).astype(np.int64), LEVELS - 1)
        return np.where(np.isnan(t), -1, lv)

    def ticks(self, max_ticks: int = 6) -> list[float]:
        """At most ``max_ticks`` powers of ten inside [lo, hi] (the ends if fewer than two)."""
        a, b = math.ceil(math.log10(self.lo) - 1e-9), math.floor(math.log10(self.hi) + 1e-9)
        ticks = [10.0**k for k in range(a, b + 1)]
        if len(ticks) > max_ticks:
            step = math.ceil(len(ticks) / max(1, max_ticks))
            ticks = ticks[::step]
        return ticks if len(ticks) >= 2 else [self.lo, self.hi]
