"""The "bisect" section: the search trace plot and the final list of layers pinned to FP32.

The trace plot shows, per evaluation (x, in the order the search ran them), the model-level
metric of the candidate pin set (left axis; green = passed the criterion, red = failed, hollow =
answered from the evaluation cache, a triangle = stopped early: the best value it could still have
reached, already failing) and the size of that pin set (right axis, grey steps). The criterion's
threshold is the dashed line.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trtq.reports.figures import new_figure, png_data_uri, style
from trtq.reports.metrics import as_float, format_number
from trtq.reports.sections import BuildInputs, register_section

# Metrics whose values span decades and are plotted on a log axis.
_LOG_METRICS = {"rel-l2", "max-abs"}
# Metrics where larger is better: a stopped-early value is an upper bound ("at most").
_HIGHER_IS_BETTER = {"cosine", "sqnr", "top1", "mask-iou"}
_VERDICT_TEXT = {
    "found": "found a pin set that passes",
    "already-passes": "passes without any pin",
    "cannot-pass": "fails even with every layer pinned",
    "budget-exhausted": "evaluation budget exhausted before a passing set was found",
}
VERDICT_GOOD = {"found": True, "already-passes": True, "cannot-pass": False, "budget-exhausted": False}


def _fmt(value: Any) -> str:
    return format_number(value, ".5g")


def trace_plot(trace: list[dict[str, Any]], metric: str, threshold: float | None) -> str:
    """PNG data URI of the search trace (see the module docstring)."""
    evals = np.array([as_float(t.get("eval", i)) for i, t in enumerate(trace)])
    values = np.array([as_float(t.get("metric")) for t in trace])
    sizes = np.array([as_float(t.get("set_size")) for t in trace])
    passed = np.array([bool(t.get("passed")) for t in trace])
    cached = np.array([bool(t.get("cached")) for t in trace])
    early = np.array([bool(t.get("stopped_early")) for t in trace])
    with style():
        fig = new_figure(1320, 340)
        ax = fig.add_axes([0.065, 0.15, 0.86, 0.72])
        size_ax = ax.twinx()
        size_ax.step(evals, sizes, where="mid", color="#9aa5b1", linewidth=1.5, zorder=1)
        size_ax.fill_between(evals, 0, sizes, step="mid", color="#cbd2d9", alpha=0.35, zorder=0, linewidth=0)
        size_ax.set_ylabel("pin set size (layers in FP32)", color="#616e7c")
        size_ax.set_ylim(0, max(1.0, float(np.nanmax(sizes)) if np.isfinite(sizes).any() else 1.0) * 1.08)
        ax.set_zorder(size_ax.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.plot(evals, values, color="#3e4c59", linewidth=0.8, zorder=2)
        groups = [  # (which evaluations, marker style, legend label)
            (
                (passed == ok) & (cached == hollow) & ~early,
                {
                    "s": 34,
                    "linewidths": 1.4,
                    "facecolors": "none" if hollow else colour,
                    "edgecolors": colour,
                },
                ("passed" if ok else "failed") + (" (cached)" if hollow else ""),
            )
            for ok, colour in ((True, "#2e7d32"), (False, "#c62828"))
            for hollow in (False, True)
        ]
        early_marker = "v" if metric in _HIGHER_IS_BETTER else "^"
        groups.append(
            (
                early,
                {"s": 40, "marker": early_marker, "color": "#c62828"},
                "failed, stopped early (best possible)",
            )
        )
        for which, marker_style, label in groups:
            sel = which & np.isfinite(values)
            if sel.any():
                ax.scatter(evals[sel], values[sel], zorder=3, label=label, **marker_style)
        missing = ~np.isfinite(values)
        if missing.any():
            ax.scatter(
                evals[missing],
                np.full(missing.sum(), 0.02),
                transform=ax.get_xaxis_transform(),
                marker="x",
                color="#6a1b9a",
                s=30,
                zorder=3,
                label="NaN / no value",
            )
        if threshold is not None and math.isfinite(threshold):
            ax.axhline(
                threshold,
                color="#1f2933",
                linestyle="--",
                linewidth=1,
                zorder=2,
                label=f"threshold {threshold:g}",
            )
        finite = values[np.isfinite(values)]
        if metric in _LOG_METRICS and finite.size and (finite > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel("evaluation (in search order)")
        ax.set_ylabel(f"model {metric}")
        ax.grid(True, color="#e4e7eb", linewidth=0.6)
        if evals.size:
            ax.set_xlim(float(np.nanmin(evals)) - 0.6, float(np.nanmax(evals)) + 0.6)
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=6, frameon=False, fontsize=8)
        return png_data_uri(fig)


def _held_out(held: dict[str, Any]) -> dict[str, Any]:
    """The answer judged on held-out data (``--eval-data``) beside the search data's."""
    data = held.get("data") or {}
    return {
        "path": str(data.get("path") or ""),
        "samples": data.get("images_used"),
        "metric": _fmt(held.get("metric")),
        "passed": bool(held.get("passed")),
        "baseline": _fmt(held.get("baseline_metric")),
        "baseline_passed": bool(held.get("baseline_passed")),
    }


def build_one(result: dict[str, Any]) -> dict[str, Any]:
    settings = result.get("settings") or {}
    metric = str(settings.get("metric") or "metric")
    params = settings.get("metric_params") or {}
    label = metric + "".join(f", {k} {v:g}" for k, v in params.items() if isinstance(v, (int, float)))
    threshold = as_float(settings.get("threshold"))
    trace = [t for t in result.get("trace") or [] if isinstance(t, dict)]
    verdict = str(result.get("verdict") or "unknown")
    pins = [
        {
            "node": str(p.get("node", "")),
            "tensor": str(p.get("tensor", "")),
            "op_type": str(p.get("op_type", "")),
            "error": _fmt(p.get("layerwise_error")),
            "v": f"{as_float(p.get('layerwise_error')):.6g}"
            if math.isfinite(as_float(p.get("layerwise_error")))
            else "",
        }
        for p in result.get("pins") or []
        if isinstance(p, dict)
    ]
    held = result.get("held_out") if isinstance(result.get("held_out"), dict) else None
    return {
        "held_out": _held_out(held) if held else None,
        "model": str((result.get("model") or {}).get("path") or ""),
        "backend": str(result.get("backend") or ""),
        "precision": str(settings.get("precision") or ""),
        "strategy": str(settings.get("strategy") or ""),
        "mha": str(settings.get("mha") or ""),
        "metric": metric,
        "metric_label": label,
        "threshold": "—" if math.isnan(threshold) else f"{threshold:g}",
        "max_evals": settings.get("max_evals"),
        "verdict": verdict,
        "verdict_text": _VERDICT_TEXT.get(verdict, verdict),
        "good": VERDICT_GOOD.get(verdict, False),
        "baseline": _fmt(result.get("baseline_metric")),
        "final": _fmt(result.get("final_metric")),
        "all_pinned": _fmt(result.get("all_pinned_metric")),
        "pins": pins,
        "evals": len(trace),
        "cached": sum(bool(t.get("cached")) for t in trace),
        "time_s": f"{sum(as_float(t.get('time_s')) for t in trace if math.isfinite(as_float(t.get('time_s')))):.1f}",
        "plot": trace_plot(trace, metric, None if math.isnan(threshold) else threshold) if trace else None,
        "trace": [
            {
                "eval": t.get("eval", i),
                "set_size": t.get("set_size", ""),
                "metric": (("≤ " if metric in _HIGHER_IS_BETTER else "≥ ") if t.get("stopped_early") else "")
                + _fmt(t.get("metric")),
                "passed": bool(t.get("passed")),
                "early": bool(t.get("stopped_early")),
                "cached": bool(t.get("cached")),
                "time_s": _fmt(t.get("time_s")),
            }
            for i, t in enumerate(trace)
        ],
    }


@register_section("bisect", title="FP32 pin search (bisect)", template="bisect.html.j2", order=30)
def build_bisect(results: list[dict[str, Any]], inputs: BuildInputs) -> list[dict[str, Any]]:
    return [build_one(r) for r in results]
