"""The "compare" section: output errors, overview strip, worst-layer table, full heatmap.

Compare results are grouped by model path; each group's runs become the columns of one heatmap
(e.g. an FP16 result and an INT8 result of the same model side by side). Layers pinned by a bisect
result of the same model are marked as well as layers a run itself pinned.
"""

from __future__ import annotations

import math
from typing import Any

from trtq.reports.colours import DARK_FROM, LogScale
from trtq.reports.layer_grid import LayerGrid, build_grid
from trtq.reports.metrics import (
    HEATMAP_METRICS,
    METRICS,
    OUTPUT_METRICS,
    TABLE_METRICS,
    as_float,
    format_number,
)
from trtq.reports.overview import overview_strip
from trtq.reports.sections import BuildInputs, register_section

WORST_N = 40
_FP16_MAX = 65504.0


def model_key(result: dict[str, Any]) -> str:
    return str((result.get("model") or {}).get("path") or "")


class _Cells:
    """Text, CSS class and sort value of every metric cell, computed once per metric array.

    The sort value (``data-v``) is the error magnitude, so larger is worse for every metric;
    NaN/Inf cells sort first (``1e308``) and cells without a value last (empty). With ``rows``,
    only those layers' cells are made (others are never asked for).
    """

    def __init__(
        self,
        grid: LayerGrid,
        scales: dict[str, LogScale],
        keys: tuple[str, ...],
        *,
        short: bool,
        rows: list[int] | None = None,
    ) -> None:
        self.grid = grid
        n, r = grid.shape
        wanted = range(n) if rows is None else rows
        present, pinned, frac = grid.present.tolist(), grid.pinned.tolist(), grid.nonfinite.tolist()
        bad = grid.is_nonfinite().tolist()
        self.cells: dict[str, dict[int, list[dict[str, str]]]] = {}
        for key in keys:
            metric = METRICS[key]
            err_arr = metric.error(grid.values[key])
            values, err = grid.values[key].tolist(), err_arr.tolist()
            levels = scales[key].level(err_arr).tolist()
            table = {}
            for i in wanted:
                row = []
                for j in range(r):
                    pin = " pin" if pinned[i][j] else ""
                    if not present[i][j]:
                        row.append({"text": "", "cls": "na" + pin, "v": ""})
                    elif bad[i][j]:
                        text = "NaN" if short else f"NaN/Inf {frac[i][j]:.0%}"
                        row.append({"text": text, "cls": "nf" + pin, "v": "1e308"})
                    elif levels[i][j] < 0:
                        row.append({"text": "—", "cls": "na" + pin, "v": ""})
                    else:
                        v = values[i][j]
                        text = (f"{v:.4f}" if key == "cosine" else f"{v:.2g}") if short else metric.format(v)
                        lv = levels[i][j]
                        row.append(
                            {
                                "text": text,
                                "cls": f"q{lv}{' dk' if lv >= DARK_FROM else ''}{pin}",
                                "v": f"{err[i][j]:.6g}",
                            }
                        )
                table[i] = row
            self.cells[key] = table

    def row(self, i: int, keys: tuple[str, ...]) -> list[dict[str, str]]:
        """Cells of layer ``i``: for each run, one per metric in ``keys``."""
        return [self.cells[key][i][j] for j in range(self.grid.shape[1]) for key in keys]


def _output_row(label: str, out: dict[str, Any], task_key: str | None) -> dict[str, Any]:
    nonfinite = out.get("nonfinite") or 0.0
    task = [format_number(out.get(task_key), ".5f")] if task_key else []
    return {
        "run": label,
        "tensor": str(out.get("tensor", "")),
        "metrics": task + [METRICS[k].format(as_float(out.get(k))) for k in OUTPUT_METRICS],
        "nonfinite": f"{float(nonfinite):.1%}" if nonfinite else "0",
        "bad": bool(nonfinite),
    }


def _outputs(grid: LayerGrid, task_key: str | None) -> list[dict[str, Any]]:
    return [_output_row(run.label, out, task_key) for run in grid.runs for out in run.outputs]


def _task(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The task metric (``--metric top1|mask-iou|...``) of the results, if any chose one."""
    for result in results:
        task = result.get("task_metric")
        if isinstance(task, dict) and task.get("key"):
            return task
    return None


def _held_out(results: list[dict[str, Any]], task_key: str | None) -> list[dict[str, Any]]:
    """Output rows of the comparisons repeated on held-out data (``--eval-data``)."""
    rows = []
    for result in results:
        held = result.get("held_out")
        if not isinstance(held, dict):
            continue
        path = str((held.get("data") or {}).get("path") or "")
        for run in held.get("runs") or []:
            label = " ".join(str(run.get(k)) for k in ("precision", "mode", "placement") if run.get(k))
            if run.get("mha") and run.get("mha") != "fp16":
                label += f" mha {run['mha']}"
            for out in run.get("outputs") or []:
                rows.append(dict(_output_row(label, out, task_key), data=path))
    return rows


def _fp16_range(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for result in results:
        for entry in result.get("fp16_range") or []:
            try:
                max_abs = float(entry.get("max_abs"))
            except (TypeError, ValueError):
                max_abs = math.inf
            rows.append(
                {
                    "kind": str(entry.get("kind", "")),
                    "tensor": str(entry.get("tensor", "")),
                    "node": str(entry.get("node") or ""),
                    "max_abs": f"{max_abs:.4g}",
                    "over": not math.isfinite(max_abs) or max_abs > _FP16_MAX,
                    "note": str(entry.get("note") or ""),
                }
            )
    return rows


def build_group(results: list[dict[str, Any]], inputs: BuildInputs) -> dict[str, Any]:
    """Template context for the compare results of one model."""
    path = model_key(results[0])
    extra_pins = {
        str(p.get("node"))
        for r in inputs.results
        if r.get("kind") == "bisect" and model_key(r) == path
        for p in r.get("pins") or []
        if isinstance(p, dict)
    }
    grid = build_grid(results, extra_pins)
    task = _task(results)
    task_key = str(task["key"]) if task else None
    n_layers, n_runs = grid.shape
    scales = {key: LogScale.fit(grid.errors(key)) for key in dict.fromkeys(HEATMAP_METRICS + TABLE_METRICS)}
    worst = grid.worst(WORST_N)
    worst_pos = [int(p) for p in worst["pos"]]
    pinned_rows = grid.pinned_rows()

    heat_cells = _Cells(grid, scales, HEATMAP_METRICS, short=True)
    table_cells = _Cells(grid, scales, TABLE_METRICS, short=False, rows=worst_pos)

    def row(i: int, metrics: tuple[str, ...], cells: _Cells) -> dict[str, Any]:
        layer = grid.layers[i]
        return {
            "index": layer.index,
            "op_type": layer.op_type,
            "node": layer.node,
            "tensor": layer.tensor,
            "pinned": bool(pinned_rows[i]),
            "cells": cells.row(i, metrics),
        }

    nonfinite = grid.is_nonfinite()
    nonfinite_layers = {run.label: int(nonfinite[:, j].sum()) for j, run in enumerate(grid.runs)}
    return {
        "model": path,
        "backends": sorted({run.backend for run in grid.runs if run.backend}),
        "runs": [run.label for run in grid.runs],
        "n_layers": n_layers,
        "n_pinned": int(pinned_rows.sum()),
        "nonfinite_layers": nonfinite_layers,
        "strip": overview_strip(grid, scales, HEATMAP_METRICS, worst_pos) if n_layers and n_runs else None,
        "legend": [
            {"label": METRICS[k].error_label, "lo": f"{scales[k].lo:.2g}", "hi": f"{scales[k].hi:.2g}"}
            for k in HEATMAP_METRICS
        ],
        "heatmap_metrics": [METRICS[k].label for k in HEATMAP_METRICS],
        "table_metrics": [METRICS[k].label for k in TABLE_METRICS],
        "output_metrics": ([str(task["name"])] if task else []) + [METRICS[k].label for k in OUTPUT_METRICS],
        "worst": [dict(row(p, TABLE_METRICS, table_cells), rank=r) for r, p in enumerate(worst_pos, start=1)],
        "worst_n": WORST_N,
        "heatmap": [row(i, HEATMAP_METRICS, heat_cells) for i in range(n_layers)],
        "outputs": _outputs(grid, task_key),
        "held_out": _held_out(results, task_key),
        "fp16_range": _fp16_range(results),
    }


@register_section("compare", title="Layer-by-layer error", template="compare.html.j2", order=20)
def build_compare(results: list[dict[str, Any]], inputs: BuildInputs) -> list[dict[str, Any]]:
    """One block per model; models in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault(model_key(result), []).append(result)
    return [build_group(group, inputs) for group in groups.values()]
