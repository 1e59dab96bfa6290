"""Align the per-layer metrics of several compare runs into one layers x runs grid.

Runs may come from several "compare" results of the same model (e.g. an FP16 run and an INT8
run saved separately). A layer is identified by ``(node, tensor)``; rows are ordered by the
node's topological ``index`` (ties keep first-seen order), which is the order SCHEMA.md
guarantees within each run. A layer absent from a run has no value in that run's column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trtq.reports.metrics import METRICS, RANK_METRIC, as_float

_PRECISION_LABEL = {
    "fp16": "FP16",
    "int8": "INT8",
    "fp16+int8": "FP16+INT8",
    "fp8": "FP8",
    "fp8+fp16": "FP8+FP16",
    "fp32": "FP32",
}


@dataclass(frozen=True)
class Layer:
    index: int
    node: str
    op_type: str
    tensor: str


@dataclass
class Run:
    """One run (column group) of the grid."""

    label: str
    outputs: list[dict[str, Any]]
    backend: str


@dataclass
class LayerGrid:
    """Metrics of every layer (rows, topological order) in every run (columns).

    ``values[key]`` is a float array ``[layers, runs]`` of the stored metric (NaN where absent or
    not finite); ``nonfinite`` the fraction of NaN/Inf elements (NaN where absent); ``pinned``
    whether the run kept the layer in FP32.
    """

    layers: list[Layer]
    runs: list[Run]
    values: dict[str, np.ndarray]
    nonfinite: np.ndarray
    present: np.ndarray
    pinned: np.ndarray
    extra_pins: set[str] = field(default_factory=set)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.layers), len(self.runs)

    def errors(self, key: str) -> np.ndarray:
        """Error magnitude of metric ``key`` (see :mod:`trtq.reports.metrics`), ``[layers, runs]``."""
        return METRICS[key].error(self.values[key])

    def is_nonfinite(self) -> np.ndarray:
        """``[layers, runs]``: the layer's tensor held NaN/Inf in that run."""
        return np.nan_to_num(self.nonfinite, nan=0.0) > 0

    def pinned_rows(self) -> np.ndarray:
        """Layers pinned to FP32 in any run or by a bisect result of the same model."""
        extra = np.array([layer.node in self.extra_pins for layer in self.layers], dtype=bool)
        return self.pinned.any(axis=1) | extra

    def worst_score(self) -> np.ndarray:
        """Ranking score per layer: max over runs of the rank metric's error; +inf for NaN/Inf."""
        err = self.errors(RANK_METRIC)
        err = np.where(self.is_nonfinite(), np.inf, err)
        if err.shape[1] == 0:
            return np.full(err.shape[0], np.nan)
        score = np.where(np.isnan(err), -np.inf, err).max(axis=1)
        score[np.isnan(err).all(axis=1)] = np.nan
        return score

    def frame(self) -> pd.DataFrame:
        """One row per layer: position, index, op_type, node, tensor, pinned, score, and one
        column per ``(run label, metric)`` plus ``(run label, "nonfinite")``."""
        data: dict[Any, Any] = {
            "pos": np.arange(len(self.layers)),
            "index": [layer.index for layer in self.layers],
            "op_type": [layer.op_type for layer in self.layers],
            "node": [layer.node for layer in self.layers],
            "tensor": [layer.tensor for layer in self.layers],
            "pinned": self.pinned_rows(),
            "score": self.worst_score(),
        }
        for j, run in enumerate(self.runs):
            for key, arr in self.values.items():
                data[(run.label, key)] = arr[:, j]
            data[(run.label, "nonfinite")] = self.nonfinite[:, j]
            data[(run.label, "pinned")] = self.pinned[:, j]
        return pd.DataFrame(data)

    def worst(self, n: int) -> pd.DataFrame:
        """The ``n`` worst layers by :meth:`worst_score`, worst first (stable for ties)."""
        df = self.frame()
        df = df[np.isfinite(df["score"]) | np.isposinf(df["score"])]
        df = df.sort_values("score", ascending=False, kind="mergesort")
        return df.head(n)


def run_label(run: dict[str, Any]) -> str:
    """Short column label: ``FP16``, ``INT8 implicit``, ``INT8 explicit + 4 pins``, ``… layerwise``.

    A quantized run with the attention products quantized (``--mha int8``; ``fp16`` is the default
    and is not shown) gets `` · MHA INT8``.
    """
    precision = str(run.get("precision") or "?")
    label = _PRECISION_LABEL.get(precision, precision.upper())
    if run.get("placement") and ("int8" in precision or "fp8" in precision):
        label += f" {run['placement']}"
    if run.get("mha") and run.get("mha") != "fp16":
        label += f" · MHA {str(run['mha']).upper()}"
    if run.get("mode") == "layerwise":
        label += " · layerwise"
    pins = run.get("pins") or []
    if pins:
        label += f" + {len(pins)} pin{'s' if len(pins) != 1 else ''}"
    return label


def build_grid(results: list[dict[str, Any]], extra_pins: set[str] | None = None) -> LayerGrid:
    """Align the runs of ``results`` (compare results of one model) into a :class:`LayerGrid`."""
    runs: list[Run] = []
    raw_runs: list[dict[str, Any]] = []
    for result in results:
        for run in result.get("runs") or []:
            raw_runs.append(run)
            runs.append(
                Run(
                    label=run_label(run),
                    outputs=list(run.get("outputs") or []),
                    backend=str(result.get("backend") or ""),
                )
            )
    seen: dict[str, int] = {}
    for run in runs:  # make labels unique, they head columns
        seen[run.label] = seen.get(run.label, 0) + 1
        if seen[run.label] > 1:
            run.label = f"{run.label} #{seen[run.label]}"

    order: dict[tuple[str, str], Layer] = {}
    for run in raw_runs:
        for layer in run.get("layers") or []:
            key = (str(layer.get("node", "")), str(layer.get("tensor", "")))
            if key not in order:
                idx = layer.get("index")
                order[key] = Layer(
                    int(idx) if isinstance(idx, int | float) else -1,
                    key[0],
                    str(layer.get("op_type") or ""),
                    key[1],
                )
    keys = sorted(order, key=lambda k: order[k].index)  # stable: ties keep first-seen order
    row = {k: i for i, k in enumerate(keys)}
    n, r = len(keys), len(runs)
    values = {key: np.full((n, r), np.nan) for key in METRICS}
    nonfinite = np.full((n, r), np.nan)
    present = np.zeros((n, r), dtype=bool)
    pinned = np.zeros((n, r), dtype=bool)
    for j, run in enumerate(raw_runs):
        pin_set = {str(p) for p in run.get("pins") or []}
        for layer in run.get("layers") or []:
            i = row[(str(layer.get("node", "")), str(layer.get("tensor", "")))]
            present[i, j] = True
            for key in METRICS:
                values[key][i, j] = as_float(layer.get(key))
            nonfinite[i, j] = as_float(layer.get("nonfinite", 0.0))
            pinned[i, j] = bool(layer.get("pinned")) or str(layer.get("node", "")) in pin_set
    for arr in values.values():
        arr[~np.isfinite(arr)] = np.nan
    return LayerGrid(
        [order[k] for k in keys], runs, values, nonfinite, present, pinned, set(extra_pins or ())
    )
