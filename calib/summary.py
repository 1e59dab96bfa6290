"""The "calib" result document (docs/SCHEMA.md): what a run did, for JSON output and reports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trtq._core.result import result_document
from trtq.calib.run import CalibrationResult


def calib_document(
    result: CalibrationResult,
    *,
    model: Mapping[str, Any],
    data: Mapping[str, Any],
    settings: Mapping[str, Any],
    cache_path: str | None,
    histogram_path: str | None,
    with_all_methods: bool = True,
    backend: str = "onnxruntime",
    created_by: str | None = None,
) -> dict[str, Any]:
    """Build the "calib" document; ``with_all_methods`` adds every method's amax per tensor.
    ``backend`` is the backend the FP32 activations were collected on (the one actually run)."""
    by_method = result.amax_by_method() if with_all_methods else {result.method: result.amax}
    hs = result.histograms
    tensors = []
    for site in result.sites:
        if site.name not in hs:
            continue
        amax = result.amax.get(site.name)  # None: kept in float (held ±inf/NaN or mask fills)
        where = site.producer
        tensors.append(
            {
                "name": site.name,
                "node": where.node if where else None,
                "op_type": where.op_type if where else None,
                "index": where.index if where else -1,
                "amax": amax,
                "scale": None if amax is None else amax / 127.0,
                "max_abs": hs.max_abs(site.name),
                "nonfinite": hs.nonfinite(site.name),
                "mask_fill": hs.mask_fill(site.name),
                "amax_by_method": {m: v.get(site.name) for m, v in by_method.items()},
            }
        )
        if result.choices and site.name in result.choices:
            tensors[-1]["auto_choice"] = result.choices[site.name]
    seconds = result.seconds
    used = int(data.get("images_used", hs.samples))
    return result_document(
        "calib",
        backend=backend,
        created_by=created_by,
        model=dict(model),
        data=dict(data),
        settings=dict(settings),
        cache=cache_path,
        histograms=histogram_path,
        coverage={"calibrated": sum(n in result.amax for n in hs.seen()), "total": len(result.sites)},
        tensors=tensors,
        time_s=seconds,
        images_per_s=(used / seconds) if seconds > 0 else None,
        **({"auto_check": result.check} if result.check is not None else {}),
    )
