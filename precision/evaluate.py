"""One bisect evaluation: build the model with a pin set, run it on the data, judge the outputs.

An *evaluation* is what ``precision bisect`` counts and caches:

1. **build** the model in reduced precision with the pinned ONNX nodes kept in FP32. The default
   build is TensorRT's emulation on ONNX Runtime (:func:`trtq.precision.emulate.emulate`);
   ``backend="tensorrt"`` builds a real engine where TensorRT is installed (layers pinned with
   ``layer.precision`` / ``set_output_type`` float32 by the TensorRT backend);
2. **run** it on every batch of the data and collect the model's final outputs;
3. **judge** them with a :class:`Criterion`:

   - a metric criterion compares each final output with the FP32 reference (computed once, with
     the unmodified model on ONNX Runtime) and takes the *worst* output: ``cosine >= 0.999`` by
     default; ``rel-l2 <= t``, ``max-abs <= t``, ``sqnr >= t`` dB. Any NaN/Inf in an output fails;
   - :class:`CheckCommand` runs a user command whose exit code decides (0 = pass). The command
     gets the candidate model as ``{model}`` in its text and ``$TRTQ_MODEL`` in its environment
     (with the default build: the emulation, an ONNX file for ONNX Runtime; run it with graph
     optimisations off, ``SessionOptions.graph_optimization_level = ORT_DISABLE_ALL``, or ONNX
     Runtime's own Q/DQ fusions change its numbers), and the pinned node names as a JSON list in
     the file ``{pins}`` / ``$TRTQ_PINS``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
import onnx

from trtq._core.errors import InputError
from trtq.precision.builds import Candidate, onnx_candidate

if TYPE_CHECKING:
    from trtq.precision.metrics import OutputAccumulator

log = logging.getLogger(__name__)

Batch = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class EvalResult:
    """The outcome of one evaluation.

    ``metric`` is the criterion's value on the worst final output (``None`` for a check
    command); ``outputs`` holds every metric of every final output (see
    :func:`trtq.precision.metrics.tensor_metrics`); ``time_s`` is wall time in seconds for build +
    run + judge; ``note`` is free text (e.g. the tail of a check command's output).
    ``stopped_early``: the evaluation ended before the last batch because no rest of the data
    could make it pass; ``metric`` and ``outputs`` are then the most favourable values still
    possible (:meth:`~trtq.precision.metrics.MetricAccumulator.bound`), which fail.
    """

    pins: frozenset[str]
    passed: bool
    metric: float | None
    time_s: float
    outputs: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    note: str = ""
    stopped_early: bool = False


# -- criteria -------------------------------------------------------------------------------------


class Criterion:
    """Decides pass/fail. Metric criteria judge outputs; :class:`CheckCommand` judges a model file."""

    name: ClassVar[str] = "criterion"
    needs_outputs: ClassVar[bool] = True
    needs_model_file: ClassVar[bool] = False
    threshold: float | None = None

    def judge(self, outputs: Mapping[str, Mapping[str, float]]) -> tuple[float | None, bool]:
        raise NotImplementedError

    def judge_file(self, model_path: Path, pins: frozenset[str]) -> tuple[float | None, bool, str]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def accumulator(self) -> OutputAccumulator:
        """A fresh accumulator for one output (the tensor metrics)."""
        from trtq.precision.metrics import OutputAccumulator

        return OutputAccumulator()


# Default thresholds of ``--metric`` when ``--threshold`` is not given (task metrics carry theirs).
DEFAULT_THRESHOLDS = {"cosine": 0.999, "rel-l2": 0.01, "max-abs": 0.01, "mean-abs": 0.001, "sqnr": 30.0}
BISECT_METRICS = ("cosine", "rel-l2", "max-abs", "sqnr", "top1", "mask-iou")


#: The values a metric can take (by its key): a threshold outside them can never be met, or always is.
THRESHOLD_BOUNDS = {
    "cosine": (-1.0, 1.0),
    "rel_l2": (0.0, math.inf),
    "max_abs": (0.0, math.inf),
    "mean_abs": (0.0, math.inf),
    "nonfinite": (0.0, math.inf),
    "top1": (0.0, 1.0),
    "mask_iou": (0.0, 1.0),
}


def metric_criterion(
    name: str, threshold: float | None = None, params: Mapping[str, float | None] | None = None
) -> MetricCriterion:
    """The criterion ``name >= threshold`` (or ``<=``, by the metric's direction) on every output.

    ``name`` is any registered metric (:func:`trtq.precision.metrics.get_metric`): a tensor metric
    (``cosine``, ``rel-l2``, ``max-abs``, ``sqnr``, ...) or a task metric (``top1``, ``mask-iou``,
    plug-ins), with its ``params`` (e.g. ``{"binarize": 0.3}``; a metric without parameters
    rejects any). ``threshold`` defaults to :data:`DEFAULT_THRESHOLDS` or the task metric's own.
    """
    from trtq.precision.metrics import get_metric
    from trtq.precision.task_metrics import metric_params

    metric = get_metric(name)
    resolved = metric_params(metric, params)
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS.get(metric.name, getattr(metric, "default_threshold", None))
        if threshold is None:
            raise InputError(f"metric '{name}' has no default threshold: give --threshold")
    if not math.isfinite(float(threshold)):
        raise InputError(f"--threshold must be a finite number, got {threshold}")
    lo, hi = THRESHOLD_BOUNDS.get(metric.key, (-math.inf, math.inf))
    if not lo <= float(threshold) <= hi:
        raise InputError(f"--threshold {threshold} is outside {metric.name}'s range [{lo:g}, {hi:g}]")
    return MetricCriterion(metric.name, float(threshold), tuple(sorted(resolved.items())))


@dataclass(frozen=True)
class MetricCriterion(Criterion):
    """Compare every final output with FP32; the worst output decides.

    ``metric`` names a registered metric (:mod:`trtq.precision.metrics`: tensor metrics, task
    metrics, plug-ins), whose direction decides whether the threshold is a floor (cosine, sqnr,
    top1, mask-iou) or a ceiling (rel-l2, max-abs). ``params`` are the metric's parameters as
    ``(name, value)`` pairs (e.g. ``(("binarize", 0.3),)``). An output holding NaN/Inf fails, and
    its value counts as the worst possible (-inf or +inf).
    """

    metric: str
    threshold: float
    params: tuple[tuple[str, float], ...] = ()

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.metric

    def accumulator(self) -> OutputAccumulator:
        """A fresh accumulator for one output: the tensor metrics, plus the task metric's."""
        from trtq.precision.metrics import OutputAccumulator, get_metric
        from trtq.precision.task_metrics import TaskMetric

        metric = get_metric(self.metric)
        task = metric.make(**dict(self.params)) if isinstance(metric, TaskMetric) else None
        return OutputAccumulator(task)

    def judge(self, outputs: Mapping[str, Mapping[str, float]]) -> tuple[float | None, bool]:
        from trtq.precision.metrics import get_metric

        metric = get_metric(self.metric)
        if not outputs:
            return None, False
        worst = max(outputs.values(), key=metric.badness)
        badness = metric.badness(worst)
        value = -badness if metric.higher_is_better else badness
        passed = all(metric.passes(m, self.threshold) for m in outputs.values())
        return value, passed

    def describe(self) -> str:
        from trtq.precision.metrics import get_metric

        direction = ">=" if get_metric(self.metric).higher_is_better else "<="
        params = ", ".join(f"{k} {v:g}" for k, v in self.params)
        return f"{self.metric} {direction} {self.threshold:g} on every output" + (
            f" ({params})" if params else ""
        )


@dataclass(frozen=True)
class CheckCommand(Criterion):
    """A user command decides: exit code 0 passes, anything else fails.

    ``command`` is a shell command line. ``{model}`` in it is replaced by the (quoted) path of the
    candidate ONNX model and ``{pins}`` by the path of a JSON file holding the list of pinned node
    names; the same paths are in the environment as ``TRTQ_MODEL`` and ``TRTQ_PINS``. The files are
    temporary and removed after the command ends. ``timeout_s`` bounds one run (a timeout fails).
    """

    command: str
    timeout_s: float | None = None
    name: ClassVar[str] = "check"
    needs_outputs: ClassVar[bool] = False
    needs_model_file: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.timeout_s is not None and not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise InputError(f"--check-timeout must be a positive number of seconds, got {self.timeout_s}")

    def judge_file(self, model_path: Path, pins: frozenset[str]) -> tuple[float | None, bool, str]:
        pins_path = model_path.with_suffix(".pins.json")
        pins_path.write_text(json.dumps(sorted(pins)), encoding="utf-8")
        text = self.command.replace("{model}", shlex.quote(str(model_path))).replace(
            "{pins}", shlex.quote(str(pins_path))
        )
        env = dict(os.environ, TRTQ_MODEL=str(model_path), TRTQ_PINS=str(pins_path))
        try:
            proc = subprocess.run(
                text, shell=True, env=env, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            return None, False, f"check command timed out after {self.timeout_s:g} s"
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return (
            None,
            proc.returncode == 0,
            f"exit {proc.returncode}" + (f": {' | '.join(tail)}" if tail else ""),
        )

    def describe(self) -> str:
        return f"check '{self.command}' exits 0"


# -- builds ---------------------------------------------------------------------------------------


class Build(Protocol):
    """Builds the model with ``pins`` (ONNX node names) kept in FP32 (e.g.
    :class:`trtq.precision.builds.ModelBuild`)."""

    backend_label: str

    def __call__(self, pins: frozenset[str]) -> Candidate: ...


# -- the evaluator --------------------------------------------------------------------------------


def run_outputs(candidate: Candidate, batches: Sequence[Batch]) -> list[dict[str, np.ndarray]]:
    """The candidate's final outputs for every batch, in order."""
    return [candidate.run(feeds) for feeds in batches]


def reference_outputs(
    model: onnx.ModelProto, batches: Sequence[Batch], threads: int | None = None
) -> list[dict[str, np.ndarray]]:
    """FP32 outputs of the unmodified model on ONNX Runtime, per batch: the reference of every metric.

    Run node for node (no graph optimisations), like the emulations it is compared with.
    """
    candidate = onnx_candidate(model, threads=threads)
    try:
        return run_outputs(candidate, batches)
    finally:
        candidate.close()


def output_metrics(
    candidate: Candidate,
    batches: Sequence[Batch],
    reference: Sequence[Mapping[str, np.ndarray]],
    stop: Callable[[Mapping[str, OutputAccumulator], int], dict[str, dict[str, float]] | None] | None = None,
    accumulator: Callable[[], OutputAccumulator] | None = None,
) -> tuple[dict[str, dict[str, float]], int]:
    """Run the batches in order and accumulate each final output's metrics over them (float64
    sums, so the result does not depend on batching; see :mod:`trtq.precision.metrics`).

    ``stop(accumulators, i)`` is asked after every batch ``i`` but the last (0-based); when it
    returns metrics instead of None, the remaining batches are skipped and those metrics are
    returned. ``accumulator()`` makes each output's accumulator (default: the tensor metrics;
    a criterion's :meth:`~MetricCriterion.accumulator` adds its task metric). Returns the
    metrics and the number of batches run.
    """
    from trtq.precision.metrics import OutputAccumulator

    accumulator = accumulator or OutputAccumulator
    acc: dict[str, OutputAccumulator] = {}
    for i, (feeds, ref) in enumerate(zip(batches, reference, strict=True)):
        actual = candidate.run(feeds)
        for name, value in ref.items():
            if name not in actual:
                raise InputError(f"the built model has no output '{name}'")
            acc.setdefault(name, accumulator()).update(actual[name], value)
        if stop is not None and i + 1 < len(batches):
            final = stop(acc, i)
            if final is not None:
                return final, i + 1
    return {name: a.result() for name, a in acc.items()}, len(batches)


class Evaluator:
    """``evaluator(pins) -> EvalResult``: one build + run + judgement (no caching here).

    Args:
        build: makes a runnable candidate from a pin set (a :class:`~trtq.precision.builds.ModelBuild`).
        batches: the data, a sequence of ``{input name: array}``, run in order.
        criterion: a :class:`MetricCriterion` or :class:`CheckCommand`.
        reference: FP32 outputs per batch; computed from ``model`` if omitted.
        model: the FP32 model (needed when ``reference`` is omitted and the criterion needs outputs).
        early_stop: with a metric criterion, stop running a candidate as soon as no rest of the
            data could make it pass (the reference's remaining energy bounds the final metric,
            see :meth:`~trtq.precision.metrics.MetricAccumulator.bound`). Passing candidates
            always run every batch, and the pass/fail answers are the same as without it.
    """

    def __init__(
        self,
        build: Build,
        batches: Iterable[Batch],
        criterion: Criterion,
        *,
        reference: Sequence[Mapping[str, np.ndarray]] | None = None,
        model: onnx.ModelProto | None = None,
        threads: int | None = None,
        early_stop: bool = True,
    ) -> None:
        self.build = build
        self.batches = list(batches)
        self.criterion = criterion
        if criterion.needs_outputs and reference is None:
            if model is None:
                raise ValueError("Evaluator needs the FP32 model or reference outputs")
            reference = reference_outputs(model, self.batches, threads=threads)
        self.reference = reference
        self._rest = None
        if early_stop and reference and criterion.needs_outputs:
            self._rest = _remaining(reference, criterion.accumulator)

    @property
    def backend_label(self) -> str:
        return getattr(self.build, "backend_label", type(self.build).__name__)

    def __call__(self, pins: frozenset[str]) -> EvalResult:
        pins = frozenset(pins)
        start = time.perf_counter()
        candidate = self.build(pins)
        try:
            if self.criterion.needs_model_file:
                with tempfile.TemporaryDirectory(prefix="trtq-bisect-") as tmp:
                    path = Path(tmp) / "candidate.onnx"
                    candidate.save(path)
                    metric, passed, note = self.criterion.judge_file(path, pins)
                return EvalResult(pins, passed, metric, time.perf_counter() - start, {}, note)
            stop = self._hopeless if self._rest is not None else None
            outputs, ran = output_metrics(
                candidate, self.batches, self.reference or [], stop, self.criterion.accumulator
            )
        finally:
            candidate.close()
        metric, passed = self.criterion.judge(outputs)
        stopped = ran < len(self.batches)
        note = f"stopped after {ran} of {len(self.batches)} batches: cannot pass" if stopped else ""
        return EvalResult(pins, passed, metric, time.perf_counter() - start, outputs, note, stopped)

    def _hopeless(self, accs: Mapping[str, OutputAccumulator], i: int) -> dict[str, dict[str, float]] | None:
        """The bounds after batch ``i`` when even the best rest of the data cannot pass, else None
        (also when a task metric has no bound: then every batch runs)."""
        bounds = {name: a.bound(*self._rest[name][i]) for name, a in accs.items()}
        if any(b is None for b in bounds.values()):
            return None
        return None if self.criterion.judge(bounds)[1] else bounds


def _remaining(
    reference: Sequence[Mapping[str, np.ndarray]], accumulator: Callable[[], OutputAccumulator]
) -> dict[str, list[tuple[float, ...]]] | None:
    """Per output, after each batch: the summed :meth:`rest` statistics of the batches still to
    come (for the tensor metrics: sum of r^2 and element count). None when a task metric has no
    bound (nothing can stop early)."""
    probe = accumulator()
    if not probe.has_bound:
        return None
    out: dict[str, list[tuple[float, ...]]] = {}
    for name in reference[0]:
        per_batch = [np.asarray(probe.rest(b[name]), np.float64) for b in reference]
        out[name] = [
            tuple(float(v) for v in np.sum(per_batch[i + 1 :], axis=0))
            if i + 1 < len(per_batch)
            else tuple(0.0 for _ in per_batch[0])
            for i in range(len(reference))
        ]
    return out
