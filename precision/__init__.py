"""trtq.precision: emulate TensorRT FP16/INT8 on ONNX Runtime, compare layer by layer, export Q/DQ.

Public API (the names below are also attributes of this package, imported lazily; ``emulate``
and ``compare`` are not, because they are also the names of their modules)::

    from trtq.precision.emulate import EmulationConfig, emulate
    from trtq.precision.compare import compare, compare_runs, layerwise_sensitivity
    from trtq.precision.metrics import tensor_metrics, get_metric
    from trtq.precision.export import export_qdq
    from trtq.precision.fp16_range import fp16_range_check
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EmulationConfig": "trtq.precision.emulate",
    "compare_runs": "trtq.precision.compare",
    "layerwise_sensitivity": "trtq.precision.compare",
    "tensor_metrics": "trtq.precision.metrics",
    "get_metric": "trtq.precision.metrics",
    "export_qdq": "trtq.precision.export",
    "fp16_range_check": "trtq.precision.fp16_range",
    "fold_model": "trtq.precision.fold",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trtq.precision' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
