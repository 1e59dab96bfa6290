"""The whole accuracy-first flow in one call: ranges, pins, the Q/DQ model, judged held out.

What ``precision quantize`` runs, in the order the README's "Getting INT8 accurate" walks it:

1. **Ranges** on the calibration data (or a cache's): INT8 ``auto`` (per tensor, the threshold
   with the least error at its consumer layer, then its model-output check); FP8 each tensor's
   largest |x| (:data:`~trtq.precision.qdq.FP8_RANGES`).
2. **Pins** (optional, ``pin_worst`` K): the K layers with the largest own error when each runs
   alone in INT8/FP8 with FP32 inputs (the layerwise ranking of ``precision compare``), on the
   calibration data, kept in FP32. The ranking never looks at the held-out data.
3. **Weight scales** by each layer's output error on the calibration data where
   ``precision export --weight-scales auto`` picks them (FP8; INT8 only with ``"output"``).
4. **The Q/DQ model** (:func:`~trtq.precision.export.export_qdq`): what TensorRT 11 builds and
   ONNX Runtime runs.
5. **Judged** against the FP32 model: the Q/DQ model itself run in ONNX Runtime on the calibration
   data and, when given, on held-out data (the figure to trust: every step above was fitted to the
   calibration data).

Nothing here is new arithmetic: each step is the library call of one ``precision`` or ``calib``
command, so the result is the model those commands make one by one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from trtq._core.errors import InputError
from trtq._core.progress import ProgressFn, null_progress

Batches = Callable[[], Iterable[Mapping[str, np.ndarray]]]


@dataclass
class QuantizeResult:
    """What :func:`quantize` made and measured."""

    model: onnx.ModelProto  # the Q/DQ model
    qtype: str  # "int8" | "fp8"
    amax: dict[str, float]  # the activation ranges (amax per tensor; scale = amax / 127 for INT8)
    ranges: dict[str, Any]  # how they were made: {"method", "cache", "seconds", "auto_check"}
    pins: list[str]  # ONNX nodes kept in FP32, worst first
    ranking: list[
        dict[str, Any]
    ]  # the pinned head of the layerwise ranking: {"node", "op", "metric", "error"}
    qdq_pairs: int  # activation QuantizeLinear nodes in the model
    weight_scales: dict[str, Any] | None  # the weight-scale choice's report, when it ran
    calibration: Any = None  # CompareRun of the Q/DQ model against FP32 on the calibration data
    held_out: Any = None  # the same on the held-out data, when given
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step


def quantize(
    model: onnx.ModelProto,
    batches: Batches,
    *,
    fp8: bool = False,
    amax: Mapping[str, float] | None = None,
    method: str | None = None,
    params: Mapping[str, Any] | None = None,
    pin_worst: int = 0,
    rank_metric: str = "rel-l2",
    weight_scales: str = "auto",
    mha: str | None = None,
    eval_batches: Batches | None = None,
    output_accumulator: Callable[[], Any] | None = None,
    threads: int | None = None,
    samples: int | None = None,
    progress: ProgressFn = null_progress,
) -> QuantizeResult:
    """Quantize ``model`` (FP32) and judge it (module docstring).

    ``batches`` / ``eval_batches``: callables returning a fresh pass over the calibration /
    held-out batches (dicts of input name -> array, batch dimension first); the calibration data is
    read up to four times (ranges, ranking, weight scales, judging), never held whole in memory.
    ``amax``: ranges to use instead of calibrating (a cache's); ``method``/``params``: the
    calibration method (default INT8 ``auto``, FP8 ``minmax``). ``pin_worst``: how many of the
    layerwise ranking's worst layers (by ``rank_metric``) stay FP32. ``weight_scales``: ``auto``
    (by output error for FP8), ``weights`` or ``output``. ``output_accumulator``: a factory of
    the model outputs' accumulators (a task metric's, e.g. mask-iou), else the tensor metrics.
    ``progress``: calibration advances it per sample (``samples``: their number, for the bar);
    each later step is announced as one unit of work.
    """
    from trtq.calib.run import calibrate
    from trtq.precision.builds import PrecisionTools
    from trtq.precision.compare import layerwise_sensitivity
    from trtq.precision.emulate import DEFAULT_MHA, EmulationConfig, folded
    from trtq.precision.export import export_qdq
    from trtq.precision.qdq import FP8_RANGES
    from trtq.precision.qdq_model import compare_qdq

    if pin_worst < 0:
        raise InputError(f"pin_worst must be >= 0, not {pin_worst}")
    if weight_scales not in ("auto", "weights", "output"):
        raise InputError(f"weight_scales must be auto, weights or output, not {weight_scales!r}")
    qtype = "fp8" if fp8 else "int8"
    mha = mha or DEFAULT_MHA
    timings: dict[str, float] = {}
    base = folded(model)  # folded once: the ranking and the export take it as it is

    t = time.perf_counter()
    if amax is not None:
        ranges: dict[str, Any] = {"method": None, "cache": True}
        amax = dict(amax)
    else:
        method = method or (FP8_RANGES if fp8 else "auto")
        progress(0, total=samples, description=f"calibrating ({method})")
        result = calibrate(
            model, batches(), method=method, params=params, threads=threads, progress=progress,
            tools=PrecisionTools(),
        )  # fmt: skip
        amax = dict(result.amax)
        ranges = {"method": method, "cache": False, "auto_check": result.check}
    timings["ranges"] = ranges["seconds"] = round(time.perf_counter() - t, 3)

    pins: list[str] = []
    ranking: list[dict[str, Any]] = []
    if pin_worst:
        t = time.perf_counter()
        progress(0, total=1, description="ranking the layers")
        scores = layerwise_sensitivity(
            base, batches(), EmulationConfig(qtype, "explicit", frozenset(), mha), amax=amax,
            metric=rank_metric, threads=threads,
        )  # fmt: skip
        progress(1)
        layers = len({s.node for s in scores})
        if pin_worst >= layers:
            raise InputError(
                f"--pin-worst {pin_worst}: the model has {layers} layers that run in {qtype.upper()}; "
                "pinning every one leaves nothing to quantize"
            )
        for s in scores:
            if s.node not in pins and len(pins) < pin_worst:
                pins.append(s.node)
                ranking.append({"node": s.node, "op": s.op_type, "metric": rank_metric, "error": s.error})
        timings["ranking"] = round(time.perf_counter() - t, 3)

    scales, scales_report = None, None
    if weight_scales == "output" or (weight_scales == "auto" and fp8):
        from trtq.precision.weight_scales import choose_weight_scales

        t = time.perf_counter()
        progress(0, total=1, description="weight scales")
        scales, report = choose_weight_scales(
            base, list(batches()), amax, qtype=qtype, pins=pins, threads=threads
        )
        progress(1)
        scales_report = report.to_dict()
        timings["weight_scales"] = round(time.perf_counter() - t, 3)

    qdq = export_qdq(base, amax, pins, fp8=fp8, mha=mha, weight_scales=scales)
    pairs = sum(n.op_type == "QuantizeLinear" for n in qdq.graph.node)
    if not pairs:
        raise InputError(f"nothing to quantize: no layer of the model runs in {qtype.upper()}")

    def judge(data: Batches) -> Any:
        return compare_qdq(
            qdq, model, data(), threads=threads, output_accumulator=output_accumulator, layers=False
        )

    t = time.perf_counter()
    progress(0, total=1, description="judging against FP32")
    on_calibration = judge(batches)
    held = judge(eval_batches) if eval_batches is not None else None
    progress(1)
    timings["judging"] = round(time.perf_counter() - t, 3)
    return QuantizeResult(
        qdq, qtype, amax, ranges, pins, ranking, pairs, scales_report, on_calibration, held, timings
    )
