"""The "quantize" section: what ``precision quantize`` made (ranges, the layers kept in FP32, the
Q/DQ model) and how the written model compares with FP32 at its outputs, on the calibration data
and on the held-out data side by side (the held-out column is the one to trust: every step was
fitted to the calibration data)."""

from __future__ import annotations

from typing import Any

from trtq.reports.metrics import format_number
from trtq.reports.sections import BuildInputs, register_section

#: Output metrics shown, in this order, when the result has them (task metrics first).
_SHOWN = ("top1", "mask_iou", "cosine", "rel_l2", "sqnr_db", "max_abs")


def _outputs(block: Any) -> dict[str, dict[str, Any]]:
    outs = (block or {}).get("outputs") if isinstance(block, dict) else None
    return {str(k): v for k, v in outs.items() if isinstance(v, dict)} if isinstance(outs, dict) else {}


def build_one(result: dict[str, Any]) -> dict[str, Any]:
    held_block = result.get("held_out") if isinstance(result.get("held_out"), dict) else {}
    cal, held = _outputs(result.get("calibration")), _outputs(held_block)
    metrics = [m for m in _SHOWN if any(m in o for o in (*cal.values(), *held.values()))]
    rows = [
        {
            "tensor": tensor,
            "cells": [
                (
                    format_number(cal.get(tensor, {}).get(m), ".5g"),
                    format_number(held.get(tensor, {}).get(m), ".5g"),
                )
                for m in metrics
            ],
        }
        for tensor in dict.fromkeys([*cal, *held])
    ]
    ranges = result.get("ranges") or {}
    how = (
        f"from {ranges['cache']}"
        if ranges.get("cache")
        else f"{ranges.get('method', '?')} on the calibration data"
    )
    check = ranges.get("auto_check") or {}
    if check.get("flagged"):
        how += (
            f" (auto's model-output check kept {check.get('kept', '?')}; {check['flagged']} tensors flagged)"
        )
    pins = []
    for entry in result.get("ranking") or []:
        if isinstance(entry, dict):
            pins.append(
                {
                    "node": entry.get("node"),
                    "op": entry.get("op"),
                    "error": format_number(entry.get("error"), ".4g"),
                }
            )
    held_data = held_block.get("data") or {}
    recovery = result.get("recovery") if isinstance(result.get("recovery"), dict) else {}
    return {
        "model": (result.get("model") or {}).get("path", "?"),
        "output": result.get("output", "?"),
        "qtype": str(result.get("qtype") or "?").upper(),
        "ranges": how,
        "pairs": result.get("qdq_pairs", "—"),
        "pins": pins or [{"node": p, "op": "", "error": "—"} for p in result.get("pins") or []],
        "rest": "FP16" if result.get("fp16") else "FP32",
        "recovery": " ".join(str(f) for f in recovery.get("flags") or []) or "none",
        "metrics": metrics,
        "rows": rows,
        "has_held": bool(held),
        "held_path": held_data.get("path"),
        "held_samples": held_data.get("images_used", "?"),
        "cal_samples": (result.get("data") or {}).get("images_used", "?"),
        "timings": result.get("timings") or {},
    }


@register_section(
    "quantize", title="Quantized model (precision quantize)", template="quantize.html.j2", order=40
)
def build_quantize(results: list[dict[str, Any]], inputs: BuildInputs) -> list[dict[str, Any]]:
    return [build_one(r) for r in results]
