"""The "calib" section: coverage, the worst tensors' |x| histograms with every method's threshold.

"Worst" tensors are those where INT8 at the chosen threshold loses the most: lowest estimated SQNR
from the histogram (:func:`trtq.reports.histograms.quantisation_estimate`). Without histograms the
ranking falls back to the clipping ratio ``max_abs / amax`` (largest first).

Histograms come from, in order: the ``histograms`` argument of ``build_report``, else the
``histograms`` path the calib result names (if that file exists).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import LogLocator, NullFormatter

from trtq._core.errors import InputError
from trtq.reports.figures import new_figure, png_data_uri, style
from trtq.reports.histograms import Histogram, load_npz, quantisation_estimate
from trtq.reports.metrics import as_float, format_number
from trtq.reports.sections import BuildInputs, register_section

logger = logging.getLogger(__name__)

HIST_N = 9
PLOT_BINS = 256
# Colour and line style per calibration method; unknown methods are drawn grey.
METHOD_STYLE: dict[str, tuple[str, str]] = {
    "entropy2": ("#d62728", "-"),
    "minmax": ("#1f77b4", "--"),
    "percentile": ("#2ca02c", "-."),
    "mse": ("#ff7f0e", ":"),
}
_OTHER_STYLE = ("#7b8794", "-")


def histogram_plot(counts: np.ndarray, upper: float, thresholds: dict[str, float], chosen: str) -> str:
    """PNG data URI: |x| histogram (log counts) with a vertical line per method's amax."""
    c = np.asarray(counts, dtype=np.float64)
    group = max(1, c.size // PLOT_BINS)
    usable = (c.size // group) * group
    merged = c[:usable].reshape(-1, group).sum(axis=1)
    if usable < c.size:
        merged[-1] += c[usable:].sum()
    edges = np.linspace(0.0, upper * usable / c.size if usable < c.size else upper, merged.size + 1)
    with style():
        fig = new_figure(420, 210)
        ax = fig.add_axes([0.13, 0.2, 0.84, 0.74])
        ax.stairs(np.where(merged > 0, merged, np.nan), edges, fill=True, color="#9fb3c8", linewidth=0)
        ax.stairs(np.where(merged > 0, merged, np.nan), edges, color="#486581", linewidth=0.6)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(bottom=0.7)
        finite = [v for v in thresholds.values() if math.isfinite(v)]
        right = max([upper, *finite]) * 1.03 if upper > 0 else 1.0
        ax.set_xlim(0, right)
        for method in sorted(thresholds):
            value = thresholds[method]
            if not math.isfinite(value):
                continue
            colour, dash = METHOD_STYLE.get(method, _OTHER_STYLE)
            ax.axvline(
                value, color=colour, linestyle=dash, linewidth=2.4 if method == chosen else 1.3, zorder=3
            )
        ax.set_xlabel("|x|", labelpad=1)
        ax.set_ylabel("count", labelpad=1)
        ax.tick_params(labelsize=7)
        return png_data_uri(fig)


def _histograms_for(result: dict[str, Any], inputs: BuildInputs) -> tuple[dict[str, Histogram], str | None]:
    """Histograms to use for ``result`` and a note for the reader when there are none."""
    if inputs.histograms:
        return inputs.histograms, None
    path = result.get("histograms")
    if not path:
        return {}, "this result names no histogram file"
    try:
        return load_npz(path), None
    except InputError as exc:
        logger.warning("report without histograms: %s", exc)
        return {}, str(exc)


def _choice_text(choice: Any) -> str:
    """``auto``'s choice for one tensor, for the table: candidate and measured error."""
    if not isinstance(choice, dict):
        return ""
    label = str(choice.get("candidate") or choice.get("method") or "")
    if label == "fallback":
        return f"{choice.get('method', '')} (no quantized consumer)"
    err = as_float(choice.get("error"))
    return label if math.isnan(err) else f"{label} (err {err:.3g})"


def build_one(result: dict[str, Any], inputs: BuildInputs) -> dict[str, Any]:
    settings = result.get("settings") or {}
    chosen = str(settings.get("method") or "")
    tensors = [t for t in result.get("tensors") or [] if isinstance(t, dict)]
    hists, note = _histograms_for(result, inputs)
    methods = sorted({str(m) for t in tensors for m in (t.get("amax_by_method") or {})})
    rows = []
    for t in tensors:
        name = str(t.get("name", ""))
        amax = as_float(t.get("amax"))
        max_abs = as_float(t.get("max_abs"))
        hist = hists.get(name)
        sqnr, clipped = (
            quantisation_estimate(hist[0], hist[1], amax) if hist is not None else (math.nan, math.nan)
        )
        by_method = {str(k): as_float(v) for k, v in (t.get("amax_by_method") or {}).items()}
        rows.append(
            {
                "name": name,
                "node": str(t.get("node") or ""),
                "op_type": str(t.get("op_type") or ""),
                "index": t.get("index", ""),
                "amax": amax,
                "scale": as_float(t.get("scale")),
                "max_abs": max_abs,
                "ratio": max_abs / amax if amax > 0 else math.nan,
                "sqnr": sqnr,
                "clipped": clipped,
                "by_method": by_method,
                "has_hist": hist is not None,
                "choice": _choice_text(t.get("auto_choice")),
            }
        )
    df = pd.DataFrame(
        rows,
        columns=[
            "name",
            "node",
            "op_type",
            "index",
            "amax",
            "scale",
            "max_abs",
            "ratio",
            "sqnr",
            "clipped",
            "by_method",
            "has_hist",
            "choice",
        ],
    )
    if hists and len(df):
        order = df.sort_values("sqnr", ascending=True, na_position="last", kind="mergesort")
        ranked_by = "lowest estimated INT8 SQNR at the chosen threshold"
    else:
        order = df.sort_values("ratio", ascending=False, na_position="last", kind="mergesort")
        ranked_by = "largest clipping ratio max|x| / amax"

    def view(r: Any) -> dict[str, Any]:
        return {
            "name": r["name"],
            "op_type": r["op_type"],
            "amax": format_number(r["amax"]),
            "scale": format_number(r["scale"], ".4e"),
            "max_abs": format_number(r["max_abs"]),
            "ratio": format_number(r["ratio"], ".3g"),
            "sqnr": "∞" if r["sqnr"] == math.inf else format_number(r["sqnr"], ".1f"),
            "sqnr_v": "" if math.isnan(r["sqnr"]) else f"{-r['sqnr']:.4g}",
            "clipped": "—" if math.isnan(r["clipped"]) else f"{r['clipped']:.3%}",
            "methods": [format_number(r["by_method"].get(m, math.nan)) for m in methods],
            "plot": None,
            "choice": r["choice"],
        }

    worst = []
    for _, r in order.head(HIST_N).iterrows():
        v = view(r)
        if r["has_hist"]:
            counts, upper = hists[r["name"]]
            v["plot"] = histogram_plot(counts, upper, r["by_method"], chosen)
        worst.append(v)
    coverage = result.get("coverage") or {}
    calibrated, total = (
        int(coverage.get("calibrated", len(tensors)) or 0),
        int(coverage.get("total", len(tensors)) or 0),
    )
    return {
        "model": str((result.get("model") or {}).get("path") or ""),
        "method": chosen,
        "methods": [
            {
                "name": m,
                "colour": METHOD_STYLE.get(m, _OTHER_STYLE)[0],
                "dash": METHOD_STYLE.get(m, _OTHER_STYLE)[1],
                "chosen": m == chosen,
            }
            for m in methods
        ],
        "settings": {str(k): str(v) for k, v in settings.items()},
        "cache": str(result.get("cache") or ""),
        "calibrated": calibrated,
        "total": total,
        "coverage_pct": 100.0 * calibrated / total if total else 0.0,
        "ranked_by": ranked_by,
        "hist_note": note,
        "worst": worst,
        "hist_n": HIST_N,
        "has_choice": bool(len(df)) and any(df["choice"]),
        "all": [view(r) for _, r in df.iterrows()],
        "time_s": format_number(result.get("time_s"), ".1f"),
        "images_per_s": format_number(result.get("images_per_s"), ".1f"),
    }


@register_section("calib", title="INT8 calibration", template="calib.html.j2", order=40)
def build_calib(results: list[dict[str, Any]], inputs: BuildInputs) -> list[dict[str, Any]]:
    return [build_one(r, inputs) for r in results]
