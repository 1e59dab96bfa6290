"""Apply a pin set and check it: the deployable model, judged twice on the same data.

:func:`verify_pins` is what ``precision pin`` does, as a library call. It writes the pins into a
deployable ONNX (:func:`trtq.precision.pins.apply_pins`: Q/DQ for INT8, Casts for FP16, pinned
nodes left in FP32) and judges (1) that model as written, run node for node on ONNX Runtime, and
(2) the same pins through the TensorRT emulation. Both are needed: ONNX Runtime's CPU provider
runs most FP16 ops through FP32 kernels between Casts, so for FP16 the written model alone is
optimistic. Both answers are exact metrics (no early stop).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnx

from trtq.precision.builds import ModelBuild, onnx_candidate
from trtq.precision.emulate import DEFAULT_MHA, folded
from trtq.precision.evaluate import Criterion, EvalResult, Evaluator
from trtq.precision.pins import apply_pins, check_nodes_exist
from trtq.runtime.build import BuildSpec


@dataclass
class PinVerification:
    """The applied model and the two judgements; ``passed`` needs both."""

    model: onnx.ModelProto
    nodes: list[str]
    precision: str
    criterion: Criterion
    applied: EvalResult
    emulated: EvalResult
    time_s: float

    @property
    def passed(self) -> bool:
        return self.applied.passed and self.emulated.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "pinned_nodes": len(self.nodes),
            "criterion": self.criterion.describe(),
            "metric": self.applied.metric,
            "passed": self.passed,
            "applied_passed": self.applied.passed,
            "emulated_metric": self.emulated.metric,
            "emulated_passed": self.emulated.passed,
            "outputs": {k: dict(v) for k, v in self.applied.outputs.items()},
            "note": self.applied.note,
            "time_s": self.time_s,
        }


def verify_pins(
    model: onnx.ModelProto,
    nodes: Sequence[str],
    batches: Sequence[Mapping[str, Any]],
    criterion: Criterion,
    *,
    precision: str,
    placement: str = "explicit",
    amax: Mapping[str, float] | None = None,
    threads: int | None = None,
    source: str = "pins",
    mha: str = DEFAULT_MHA,
    weight_scales: Mapping[str, Any] | None = None,
) -> PinVerification:
    """Apply ``nodes`` (ONNX node names kept in FP32) to ``model`` and judge the result on
    ``batches`` against the FP32 model. ``amax`` are the INT8 ranges (scale = amax / 127);
    ``source`` names the pins in errors (e.g. the pins.json path); ``weight_scales`` go into the
    written model (:func:`trtq.precision.weight_scales.choose_weight_scales`), the emulation keeps
    the data-free ones."""
    base = folded(model)  # folded once: the pins check, the export and the emulation take it as it is
    check_nodes_exist(base, nodes, source=source)
    applied_model = apply_pins(
        base, list(nodes), precision=precision, amax=amax, mha=mha, weight_scales=weight_scales
    )
    start = time.perf_counter()

    class _Written:  # the evaluator's build: the applied model as written
        backend_label = "onnxruntime"

        def __call__(self, pins: frozenset[str]):
            return onnx_candidate(applied_model, threads=threads)

    # early_stop=False: the metrics reported are real values, never bounds
    written = Evaluator(_Written(), batches, criterion, model=model, threads=threads, early_stop=False)
    applied = written(frozenset(nodes))
    emulation = ModelBuild(
        "onnxruntime", base, BuildSpec(precision, placement, amax=amax, mha=mha), threads=threads
    )
    emulated = Evaluator(
        emulation, batches, criterion, reference=written.reference, model=model, early_stop=False
    )(frozenset(nodes))
    return PinVerification(
        applied_model, list(nodes), precision, criterion, applied, emulated, time.perf_counter() - start
    )
