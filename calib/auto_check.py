"""``auto``'s model-output check: keep auto's choices, or give max|x| to the tensors it clipped hard,
whichever set the *model output* prefers on the calibration samples.

Why: auto's per-tensor search judges a threshold at the layer that reads the tensor. That misses
errors whose cost appears only further on. Transformers carry a few very large activations (the
MLP's GELU outputs of a few tokens, which feed the residual stream's outliers); clipping them is
cheap at ``fc2``'s output and expensive at the model's (BENCHMARKS.md, "auto's model-output check":
on ViT-S, max|x| for the 12 ``fc2`` inputs alone moves held-out cosine by +0.005, more than
auto's whole gap to minmax). A per-tensor decision at the model output overfits a few
calibration samples (the greedy search of BENCHMARKS.md, "auto stage 2", lost held-out accuracy);
one decision between two whole sets does not.

Algorithm, after auto's search (:func:`trtq.calib.auto.auto_thresholds`):

1. *Flag* each measured tensor whose max|x| exceeds ``CLIP_FACTOR`` x auto's amax (auto clipped
   its range by more than a third).
2. Build the model once with INT8 as the export places it (the caller's ``build``: the
   precision room's emulation on ONNX Runtime), the flagged tensors' scales as graph inputs
   (:class:`ScalesAsInputs`).
3. Run it twice on the kept calibration samples (the ones auto measured on): with auto's amax,
   and with max|x| for the flagged tensors and auto's amax for the others; compare the relative
   L2 error of all float model outputs against FP32 (``sqrt(sum (y_q - y)^2 / sum y^2)``, pooled
   over outputs and samples). The flagged tensors get max|x| only when that set's error is lower
   *and* the samples agree: in at least ``CONFIDENCE`` of bootstrap resamples of the samples
   (:func:`confidence`) its pooled error is the lower one too. With 12-16 samples a pooled error
   can be carried by one or two of them, and a swap on such evidence was the check's one costly
   decision on the benchmarks (PP-OCRv4 rec calibrated on photos: 0.742, CER 0.0078 -> 0.0157).

Cost: one INT8 build and two passes over at most ``auto_samples`` samples (the FP32 outputs come
from auto's own pass); the second pass, with the max set, stops as soon as its squared errors so
far add up to more than auto's whole pass (the max set can no longer win: the decision is the one
the whole pass would make). The build does not wait for auto's choices: once the candidates are known,
:class:`EarlyBuild` starts it in a background thread, with every tensor auto measures taking its
scale from a graph input (auto's values are not known yet), so that folding, Q/DQ placement and
the session's creation overlap auto's pass instead of following it. Nothing is built when no
tensor can be flagged (no candidate clips more than ``CLIP_FACTOR``), and ``auto_check=0`` turns
the check off.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from trtq._core.onnx_model import tensor_readers

#: A tensor is flagged when max|x| > CLIP_FACTOR x auto's amax. 1.5 was the one factor measured
#: (BENCHMARKS.md, "auto stage 2"): 1.0 swapped tensors whose clipping helps (PP-OCR cls lost).
CLIP_FACTOR = 1.5

#: The flagged tensors get max|x| only when the lower pooled error holds in at least this share
#: of bootstrap resamples of the kept samples (:func:`confidence`). Chosen on the 17 swaps
#: measured (BENCHMARKS.md, "The check's evidence"): every helpful one scored >= 0.85 (ViT-S
#: 0.985-1.0, rec on text lines 0.85-1.0), the harmful ones 0.53-0.74.
CONFIDENCE = 0.8
_RESAMPLES = 2000

#: ``build(amax, variable)`` returns a runner of the model with INT8 at those ranges (a context
#: manager with ``inputs()`` and ``run(feeds, outputs=None)``, as :class:`trtq.runtime.runner.Runner`)
#: in which the activation scales of the ``variable`` tensors are graph inputs named
#: :func:`scale_input` (:class:`ScalesAsInputs`), so that one build serves both sets.
BuildInt8 = Callable[[Mapping[str, float], Sequence[str]], Any]


def scale_input(tensor: str) -> str:
    """The graph input that carries ``tensor``'s activation scale in the check's build."""
    return f"{tensor}::check_scale"


def int8_scale(amax: float) -> np.ndarray:
    """INT8 activation scale ``amax / 127`` in float32, as the export writes it."""
    return np.array(np.float32(amax) / np.float32(127.0), np.float32)


def scales_as_inputs(
    model: onnx.ModelProto, tensors: Sequence[str], *, in_place: bool = False
) -> onnx.ModelProto:
    """``model`` (a Q/DQ model) with the scale of every QuantizeLinear reading one of ``tensors``,
    and of the DequantizeLinear reading it, taken from a scalar float graph input
    (:func:`scale_input`) instead of an initializer. A tensor without a QuantizeLinear gets none.
    A copy, unless ``in_place``."""
    out = model
    if not in_place:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    wanted = set(tensors)
    nodes, readers = out.graph.node, tensor_readers(out.graph)
    added: set[str] = set()
    for node in out.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in wanted:
            continue
        name = scale_input(node.input[0])
        node.input[1] = name
        for j in readers.get(node.output[0], []):
            if nodes[j].op_type == "DequantizeLinear":
                nodes[j].input[1] = name
        if name not in added:
            added.add(name)
            out.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, []))
    return out


class ScalesAsInputs:
    """Build tools (:class:`trtq.runtime.build.BuildTools`) that emulate as ``tools`` do, then make
    the ``tensors``' activation scales graph inputs (:func:`scales_as_inputs`)."""

    def __init__(self, tools: Any, tensors: Sequence[str]) -> None:
        self._tools, self._tensors = tools, list(tensors)

    def emulate(self, model: onnx.ModelProto, spec: Any) -> onnx.ModelProto:
        emulated = self._tools.emulate(model, spec)  # a new model, unless there was nothing to do
        return scales_as_inputs(emulated, self._tensors, in_place=emulated is not model)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tools, name)


@dataclass
class CheckOutcome:
    """What the check did (the ``auto_check`` entry of the calib document)."""

    flagged: list[str] = field(default_factory=list)  # tensors with max|x| > CLIP_FACTOR x auto's amax
    error_auto: float | None = None  # output rel. L2 of auto's set on the kept samples
    error_max: float | None = None  # ... of the set with max|x| for the flagged tensors
    kept: str = "auto"  # "auto" | "max" (the flagged tensors got max|x|)
    samples: int = 0
    confidence: float | None = None  # share of resamples in which the max set's error is lower
    max_stopped_after: int | None = None  # samples of the max set run before it lost for sure

    def to_dict(self) -> dict[str, Any]:
        return {
            "flagged": len(self.flagged),
            "error_auto": self.error_auto,
            "error_max": self.error_max,
            "kept": self.kept,
            "samples": self.samples,
            "confidence": self.confidence,
            "max_stopped_after": self.max_stopped_after,
            "clip_factor": CLIP_FACTOR,
            "confidence_needed": CONFIDENCE,
        }


def flag(amax: Mapping[str, float], max_abs: Mapping[str, float], measured: Sequence[str]) -> list[str]:
    """The measured tensors whose max|x| exceeds ``CLIP_FACTOR`` x their amax."""
    return [t for t in measured if t in amax and max_abs.get(t, 0.0) > CLIP_FACTOR * amax[t]]


def _quantized(amax: Mapping[str, float]) -> frozenset[str]:
    """The tensors an INT8 build quantizes at ``amax`` (a finite positive amax): what decides the
    structure of the build; the values of the variable scales do not."""
    return frozenset(t for t, a in amax.items() if np.isfinite(a) and a > 0)


class EarlyBuild:
    """The check's one INT8 build, started in a background thread before auto's choices exist.

    ``build(amax, variable)`` runs in the thread with ``amax`` (the fallback's ranges: same
    tensors as auto's final set) and ``variable`` (every tensor auto measures), so it serves any
    choice of auto's: the variable scales are fed at run time, the others are the fallback's,
    which auto keeps for every tensor it does not measure. :meth:`take` hands the runner over when
    the final ranges quantize the same tensors (else ``None``: the caller builds anew); a runner
    never taken is closed by :meth:`close`.
    """

    def __init__(self, build: BuildInt8, amax: Mapping[str, float], variable: Sequence[str]) -> None:
        self.variable = list(variable)
        self._quantized = _quantized(amax)
        self._taken = False
        pool = ThreadPoolExecutor(1, thread_name_prefix="trtq-auto-check-build")
        self._future: Future = pool.submit(build, dict(amax), self.variable)
        pool.shutdown(wait=False)

    def take(self, amax: Mapping[str, float], flagged: Sequence[str]) -> Any | None:
        """The runner, when it fits ``amax`` and covers ``flagged``; else ``None``, the runner
        closed (waits for the thread; its error, if any, is raised here)."""
        runner = self._future.result()
        if _quantized(amax) != self._quantized or not set(flagged) <= set(self.variable):
            self.close()
            return None
        self._taken = True
        return runner

    def close(self) -> None:
        """Close the runner unless :meth:`take` handed it over (waits for the thread; errors of a
        build nobody used are dropped)."""
        if self._taken:
            return
        self._taken = True
        try:
            runner = self._future.result()
        except Exception:  # noqa: BLE001 - an unused build's failure changes nothing
            return
        runner.close()


def output_error(
    runner: Any,
    scales: Mapping[str, np.ndarray],
    batches: Sequence[Mapping[str, np.ndarray]],
    reference: Sequence[Mapping[str, np.ndarray]],
    stop_above: float = np.inf,
) -> np.ndarray:
    """Squared error of the float outputs of the INT8 ``runner`` (fed ``scales`` besides each
    batch) against ``reference`` (the FP32 outputs of ``batches``): one sum per batch, over its
    outputs' finite reference values; ``inf`` for a batch where the INT8 model outputs a
    non-finite value the reference does not have. :func:`relative_l2` pools them.

    ``stop_above``: stop once the sum so far exceeds it (the errors are >= 0, so the total will
    too); the array then holds only the batches run."""
    sse = np.zeros(len(batches))
    for i, (batch, ref) in enumerate(zip(batches, reference, strict=True)):
        if i and sse[:i].sum() > stop_above:
            return sse[:i]
        got = runner.run({**batch, **scales}, list(ref))
        for name, r in ref.items():
            r64, g64 = r.astype(np.float64), np.asarray(got[name], np.float64)
            finite = np.isfinite(r64)
            if not np.isfinite(g64[finite]).all():
                sse[i] = np.inf
                break
            sse[i] += float(np.square(g64[finite] - r64[finite]).sum())
    return sse


def reference_energy(reference: Sequence[Mapping[str, np.ndarray]]) -> float:
    """``sum y^2`` over the finite values of every reference output."""
    total = 0.0
    for ref in reference:
        for r in ref.values():
            r64 = r.astype(np.float64)
            total += float(np.square(r64[np.isfinite(r64)]).sum())
    return total


def relative_l2(sse: np.ndarray, energy: float) -> float:
    """``sqrt(sum sse / energy)`` (``sqrt(sum sse)`` when the reference is all zeros)."""
    total = float(np.sum(sse))
    return float(np.sqrt(total / energy)) if energy > 0 else float(np.sqrt(total))


def confidence(sse_auto: np.ndarray, sse_max: np.ndarray, resamples: int = _RESAMPLES) -> float:
    """Share of bootstrap resamples of the batches (drawn with replacement, fixed seed) in which
    ``sse_max`` sums lower than ``sse_auto``. Both sets are judged against the same reference, so
    comparing summed squared errors compares the pooled relative errors."""
    diff = np.asarray(sse_max, np.float64) - np.asarray(sse_auto, np.float64)
    if not np.isfinite(diff).all():
        return float(np.sum(np.nan_to_num(diff, nan=np.inf)) < 0)
    idx = np.random.default_rng(0).integers(0, len(diff), (resamples, len(diff)))
    return float(np.mean(diff[idx].sum(axis=1) < 0))


def check_ranges(
    amax: dict[str, float],
    choices: dict[str, dict],
    max_abs: Mapping[str, float],
    measured: Sequence[str],
    batches: Sequence[Mapping[str, np.ndarray]],
    reference: Sequence[Mapping[str, np.ndarray]],
    build: BuildInt8,
    early: EarlyBuild | None = None,
) -> tuple[dict[str, float], CheckOutcome]:
    """``(amax, outcome)`` after the check (module docstring). ``measured``: the tensors auto
    measured; ``max_abs``: their max|x|; ``batches`` / ``reference``: the kept calibration
    batches and their FP32 float outputs; ``early``: the build started ahead (used when it fits,
    closed in any case). ``choices`` of the tensors that get max|x| are updated in place
    (``method`` ``minmax``, ``check`` ``max``)."""
    outcome = CheckOutcome(flagged=flag(amax, max_abs, measured))
    outcome.samples = sum(int(next(iter(b.values())).shape[0]) for b in batches if b)
    if not outcome.flagged or not reference:
        if early is not None:
            early.close()
        return amax, outcome
    swapped = {**amax, **{t: float(max_abs[t]) for t in outcome.flagged}}
    runner = early.take(amax, outcome.flagged) if early is not None else None
    variable = early.variable if runner is not None else outcome.flagged
    if runner is None:
        runner = build(amax, outcome.flagged)
    with runner:  # one build: the variable scales are inputs
        have = {t.name for t in runner.inputs()}

        def feeds(ranges: Mapping[str, float]) -> dict[str, np.ndarray]:
            return {scale_input(t): int8_scale(ranges[t]) for t in variable if scale_input(t) in have}

        sse_auto = output_error(runner, feeds(amax), batches, reference)
        # the max set loses for sure once its errors so far exceed auto's total: stop there
        sse_max = output_error(runner, feeds(swapped), batches, reference, stop_above=float(np.sum(sse_auto)))
    energy = reference_energy(reference)
    outcome.error_auto, outcome.error_max = relative_l2(sse_auto, energy), relative_l2(sse_max, energy)
    if len(sse_max) < len(sse_auto):
        outcome.max_stopped_after = int(
            sum(int(next(iter(b.values())).shape[0]) for b in batches[: len(sse_max)])
        )
        return amax, outcome  # error_max is then a lower bound, above error_auto
    outcome.confidence = confidence(sse_auto, sse_max)
    if outcome.error_max < outcome.error_auto and outcome.confidence >= CONFIDENCE:
        outcome.kept = "max"
        for t in outcome.flagged:
            choices[t].update(
                {
                    "method": "minmax",
                    "candidate": "minmax",
                    "amax": swapped[t],
                    "check": "max",
                    "auto_amax": amax[t],
                }
            )
        return swapped, outcome
    return amax, outcome
