"""Calibration |x| histograms: loading the ``.npz`` of docs/SCHEMA.md, and what INT8 does to them.

A histogram is ``(counts, upper)``: ``counts[b]`` values of |x| fell in bin ``b`` of
``linspace(0, upper, B + 1)`` (the last bin includes ``upper``). Bin centres stand for the values
of their bin in every estimate below.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trtq._core.errors import InputError

Histogram = tuple[np.ndarray, float]
_NPZ_KEYS = ("names", "counts", "upper")


def load_npz(path: str | os.PathLike) -> dict[str, Histogram]:
    """Read a histogram ``.npz`` (format 1) into ``{tensor name: (counts, upper)}``.

    Raises :class:`InputError` naming the file when it is missing or not in that format.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: histogram file not found")
    try:
        with np.load(p, allow_pickle=False) as data:
            missing = [k for k in _NPZ_KEYS if k not in data.files]
            if missing:
                raise InputError(f"{p}: not a trtq histogram file (missing {', '.join(missing)})")
            names = [str(n) for n in data["names"]]
            counts = np.asarray(data["counts"])
            upper = np.asarray(data["upper"], dtype=np.float64)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        why = "not a .npz of arrays" if "pickle" in str(exc) else str(exc)  # not numpy's unsafe-load advice
        raise InputError(f"{p}: not a readable .npz histogram file ({why})") from exc
    if counts.ndim != 2 or counts.shape[0] != len(names) or upper.shape != (len(names),):
        raise InputError(
            f"{p}: histogram arrays disagree in shape (names {len(names)}, counts {counts.shape}, upper {upper.shape})"
        )
    return {name: (counts[i], float(upper[i])) for i, name in enumerate(names)}


def as_histograms(source: Mapping[str, Any] | str | os.PathLike | None) -> dict[str, Histogram]:
    """Normalise the ``histograms`` argument of :func:`trtq.reports.build_report`."""
    if source is None:
        return {}
    if isinstance(source, str | os.PathLike):
        return load_npz(source)
    out: dict[str, Histogram] = {}
    for name, value in source.items():
        counts, upper = value
        out[str(name)] = (np.asarray(counts), float(upper))
    return out


def quantisation_estimate(counts: np.ndarray, upper: float, amax: float) -> tuple[float, float]:
    """Estimated ``(sqnr_db, clipped_fraction)`` of symmetric INT8 with threshold ``amax``.

    Values with |x| <= amax get uniform rounding noise of variance ``scale**2 / 12`` with
    ``scale = amax / 127``; values above are clipped to amax, adding ``(|x| - amax)**2``. SQNR is
    ``10 log10(sum x**2 / sum noise)``; ``inf`` for an all-zero tensor, ``nan`` for no data.
    """
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0 or not math.isfinite(amax) or amax <= 0 or not math.isfinite(upper) or upper <= 0:
        return math.nan, math.nan
    width = upper / c.size
    centres = (np.arange(c.size) + 0.5) * width
    clipped = centres > amax
    scale = amax / 127.0
    noise = (c[~clipped].sum() * scale * scale / 12.0) + float(
        (c[clipped] * (centres[clipped] - amax) ** 2).sum()
    )
    signal = float((c * centres * centres).sum())
    if noise <= 0:
        return math.inf, 0.0
    return 10.0 * math.log10(max(signal, 1e-300) / noise), float(c[clipped].sum() / total)
