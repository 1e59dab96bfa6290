"""The summary block: one card per result (model, data, precision modes, criterion, verdict,
and where the numbers came from: a TensorRT version or "emulated on ONNX Runtime")."""

from __future__ import annotations

from typing import Any

from trtq.reports.bisect_section import VERDICT_GOOD
from trtq.reports.layer_grid import run_label


def _shape(shape: Any) -> str:
    if not isinstance(shape, list | tuple):
        return "?"
    return "×".join(str(d) if d not in (None, -1) else "?" for d in shape)


def _backend(result: dict[str, Any]) -> str:
    backend = str(result.get("backend") or "")
    if result.get("kind") == "calib":
        trt = (result.get("settings") or {}).get("trt_version")
        return (
            f"cache for TensorRT {trt}; statistics on ONNX Runtime" if trt else "statistics on ONNX Runtime"
        )
    if not backend or backend.startswith("onnxruntime"):
        return "emulated on ONNX Runtime"
    return backend.replace("tensorrt", "TensorRT")


def _modes(result: dict[str, Any]) -> list[str]:
    kind = result.get("kind")
    if kind == "compare":
        return [run_label(r) for r in result.get("runs") or [] if isinstance(r, dict)]
    if kind == "bisect":
        return [str((result.get("settings") or {}).get("precision") or "?").upper()]
    if kind == "quantize":
        n = len(result.get("pins") or [])
        return [f"{str(result.get('qtype') or '?').upper()} Q/DQ, {n} layer{'s' if n != 1 else ''} in FP32"]
    settings = result.get("settings") or {}
    return [f"INT8 calibration ({settings.get('method', '?')})"]


def _worst(outputs: list[dict[str, Any]], key: str, pick: Any, spec: str) -> str:
    """The worst value of metric ``key`` over the outputs ("—" if none is a number)."""
    values = [o.get(key) for o in outputs if isinstance(o.get(key), int | float)]
    return format(pick(values), spec) if values else "—"


def _criterion(result: dict[str, Any]) -> tuple[str, str, bool | None]:
    """``(criterion, verdict, good)``; ``good`` is None where there is no pass/fail."""
    kind = result.get("kind")
    if kind == "bisect":
        s = result.get("settings") or {}
        threshold = s.get("threshold")
        crit = f"{s.get('metric', '?')}" + (
            f" vs threshold {threshold:g}" if isinstance(threshold, int | float) else ""
        )
        verdict = str(result.get("verdict") or "?")
        n = len(result.get("pins") or [])
        text = (
            f"{verdict}: {n} layer{'s' if n != 1 else ''} pinned to FP32" if verdict == "found" else verdict
        )
        return crit, text, VERDICT_GOOD.get(verdict, False)
    if kind == "calib":
        cov = result.get("coverage") or {}
        return (
            "coverage",
            f"{cov.get('calibrated', '?')} / {cov.get('total', '?')} tensors have a scale",
            None,
        )
    if kind == "quantize":
        held = result.get("held_out") if isinstance(result.get("held_out"), dict) else None
        block = held or result.get("calibration") or {}
        outs = [o for o in (block.get("outputs") or {}).values() if isinstance(o, dict)]
        where = "held-out data" if held else "calibration data (no held-out data)"
        return (
            f"outputs vs FP32 on {where} (worst output)",
            (
                f"cosine {_worst(outs, 'cosine', min, '.5f')}, rel L2 {_worst(outs, 'rel_l2', max, '.3g')}"
                if outs
                else "—"
            ),
            None,
        )
    worst = []
    for run in result.get("runs") or []:
        outs = [o for o in run.get("outputs") or [] if isinstance(o, dict)]
        if any((o.get("nonfinite") or 0) > 0 for o in outs):
            worst.append(f"{run_label(run)}: NaN/Inf in outputs")
        elif outs:
            worst.append(
                f"{run_label(run)}: cosine {_worst(outs, 'cosine', min, '.5f')}, rel L2 {_worst(outs, 'rel_l2', max, '.3g')}"
            )
    return "outputs vs FP32 (worst output)", "\n".join(worst) or "—", None


def summary_cards(results: list[dict[str, Any]], labels: list[str]) -> list[dict[str, Any]]:
    cards = []
    for result, label in zip(results, labels, strict=True):
        model = result.get("model") or {}
        data = result.get("data") or {}
        crit, verdict, good = _criterion(result)
        cards.append(
            {
                "label": label,
                "kind": str(result.get("kind")),
                "model": str(model.get("path") or "?"),
                "inputs": [
                    f"{i.get('name', '?')} {_shape(i.get('shape'))} {i.get('dtype', '')}".strip()
                    for i in model.get("inputs") or []
                    if isinstance(i, dict)
                ],
                "nodes": model.get("nodes", "?"),
                "tensors": model.get("tensors", "?"),
                "data": str(data.get("path") or "?"),
                "images_used": data.get("images_used", "?"),
                "images_skipped": data.get("images_skipped", 0),
                "skipped": [
                    {"file": str(s.get("file", "")), "reason": str(s.get("reason", ""))}
                    for s in data.get("skipped") or []
                    if isinstance(s, dict)
                ][:50],
                "modes": _modes(result),
                "criterion": crit,
                "verdict": verdict,
                "good": good,
                "backend": _backend(result),
            }
        )
    return cards
