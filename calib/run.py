"""Calibration on the CPU: stream batches through ONNX Runtime into histograms, then thresholds.

``calibrate`` marks every float activation of the model as an output (TensorRT calibrates every
network tensor), runs each batch, adds every tensor to its histogram and drops the batch's
tensors before the next one: memory depends on one batch's activations, never on the number of
images. Graph inputs are histogrammed straight from the feeds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtq._core.errors import InputError
from trtq._core.onnx_model import float_tensors, load_onnx
from trtq._core.progress import ProgressFn, null_progress
from trtq._core.tensors import TensorInfo
from trtq.calib.auto_check import ScalesAsInputs
from trtq.calib.cache import DEFAULT_TRT_VERSION, CalibrationCache
from trtq.calib.histogram import DEFAULT_BINS, HistogramSet
from trtq.calib.methods import available_methods, get_method
from trtq.runtime.build import BuildSpec, BuildTools

log = logging.getLogger(__name__)


def compute_amax(
    histograms: HistogramSet,
    method: str = "entropy2",
    *,
    threads: int | None = None,
    known: Mapping[str, float] | None = None,
    **params: object,
) -> dict[str, float]:
    """Thresholds (amax) for the tensors of ``histograms`` with the named method.

    Histograms alone: the default is ``entropy2``, and a method that needs the model and the
    data (``auto``) raises :class:`InputError` (:func:`calibrate` runs it).

    Tensors that never held a finite non-zero value get a tiny positive amax (see
    :data:`trtq.calib.methods.EMPTY_AMAX`). Tensors that held ±inf/NaN or mask fills get none
    (:func:`kept_float`). Methods run on a thread pool (their kernels release the GIL).
    ``known``: this method's amax already computed for some tensors (reused as they are).
    """
    m = get_method(method)
    if m.needs_data:
        from trtq.calib.methods.auto import NEEDS_DATA

        raise InputError(NEEDS_DATA)

    def one(name: str) -> float:
        h = histograms[name]
        return m.amax(h.counts, h.edges, max_abs=h.max_abs, **params)

    floats = set(kept_float(histograms))
    names = [n for n in histograms.names if n not in floats]
    known = known or {}
    todo = [n for n in names if n not in known]
    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        computed = dict(zip(todo, pool.map(one, todo), strict=True))
    return {n: known[n] if n in known else computed[n] for n in names}


def kept_float(histograms: HistogramSet) -> list[str]:
    """Tensors that held ±inf/NaN or mask fills (|x| >= 2^126) in FP32: they get no threshold.

    Such a tensor is an attention mask (``where(mask, 0, -inf)``, float32's lowest value) or
    the scores it was added to. INT8 cannot hold ±inf, and a scale would clamp the fill to
    -amax, a value real scores reach, so that padding would no longer be masked. Without a
    scale in the cache TensorRT keeps the tensor in float ("Missing scale ... fall back to
    non-int8"), and so do trtq's emulation and export.
    """
    return [n for n in histograms.names if histograms.nonfinite(n) or histograms.mask_fill(n)]


@dataclass
class CalibrationResult:
    """What a calibration produced: histograms, the chosen thresholds, and run statistics."""

    histograms: HistogramSet
    sites: list[TensorInfo]  # the calibrated float tensors (float_tensors: with their producers)
    method: str
    params: dict[str, object]
    amax: dict[str, float]
    seconds: float = 0.0
    batches: int = 0
    choices: dict[str, dict] | None = None  # auto: the choice per tensor (trtq.calib.auto)
    check: dict[str, Any] | None = None  # auto: what the model-output check did (trtq.calib.auto_check)
    _by_method: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    # auto's memo: method -> amax per tensor
    _known: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

    def cache(self, trt_version: str = DEFAULT_TRT_VERSION, algorithm: str | None = None) -> CalibrationCache:
        """The TensorRT cache for these thresholds (``scale = amax / 127``).

        The header algorithm defaults to the method's own (entropy2 and the methods TensorRT
        has no calibrator for: ``EntropyCalibration2``; minmax: ``MinMaxCalibration``). Use the
        algorithm of the calibrator that will read the cache: TensorRT ignores a mismatch.
        """
        algo = algorithm or get_method(self.method).algorithm
        return CalibrationCache.from_amax(self.amax, trt_version=trt_version, algorithm=algo)

    def amax_by_method(self) -> dict[str, dict[str, float]]:
        """amax of every tensor under every registered method (for reports), computed once.

        Methods that need data (``auto``) appear only when they are this result's method."""
        for m in available_methods():
            if m.needs_data and m.name != self.method:
                continue
            if m.name not in self._by_method:
                self._by_method[m.name] = (
                    self.amax
                    if m.name == self.method
                    else compute_amax(self.histograms, m.name, known=self._known.get(m.name), **self.params)
                )
        return self._by_method


def model_sites(model: onnx.ModelProto) -> list[TensorInfo]:
    sites = float_tensors(model)
    if not sites:
        raise InputError("the model has no float tensors to calibrate")
    return sites


def calibrate(
    model: str | os.PathLike | onnx.ModelProto,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    method: str = "auto",
    num_bins: int = DEFAULT_BINS,
    params: Mapping[str, object] | None = None,
    histograms: HistogramSet | None = None,
    skipped: Iterable[Mapping[str, np.ndarray]] = (),
    threads: int | None = None,
    progress: ProgressFn = null_progress,
    on_batch: object = None,
    backend: str = "onnxruntime",
    tools: BuildTools | None = None,
) -> CalibrationResult:
    """Calibrate ``model`` on ``batches`` (dicts of input name -> array, batch dim first).

    Args:
        method: threshold method name (``auto``, the default | ``entropy2`` | ``minmax`` |
            ``percentile`` | ``mse``). ``auto`` keeps ``auto_samples`` samples' batches in
            memory (a uniform subset of the data: :class:`trtq.calib.auto.MeasuredSubset`)
            and, after the histogram pass, runs them once more to measure every candidate
            threshold at the consumer layers (:mod:`trtq.calib.auto`; tensors without
            one get the ``auto_fallback`` method's, mse by default); the choices land in
            ``choices``. Its cache header is ``EntropyCalibration2``'s.
        num_bins: histogram bins per tensor (even).
        params: method parameters, e.g. ``{"percentile": 99.99}``, ``{"auto_fallback": "mse"}``.
        histograms: an existing :class:`HistogramSet` to continue (resume / add more data).
        skipped: the batches that ``histograms`` already holds and ``batches`` leaves out (a
            resumed run's first ones), in the data's order, all of them: ``auto`` picks the
            batches it measures on from the whole data (consumed one at a time, at most
            ``auto_samples`` samples' worth held); other methods ignore them.
        threads: histogram threads (default: all cores).
        progress: advanced by the number of samples of each batch (callers that already
            report progress from their data loader pass ``null_progress``).
        on_batch: optional callable ``(histograms, batch_index)`` after every batch, e.g. to
            checkpoint the histograms.
        backend: the backend (registry name) whose FP32 activations are histogrammed. Backends
            that calibrate natively (TensorRT 10) go through :func:`trtq.calib.tensorrt.calibrate_with_tensorrt`.
        tools: the precision room's build tools (``trtq.precision.builds.PrecisionTools()``):
            with them ``auto`` checks its choices at the model output on ``backend``'s INT8
            emulation (:mod:`trtq.calib.auto_check`; ``calib run`` passes them). calib never
            imports precision, so without them the check does not run.

    Returns:
        A :class:`CalibrationResult`; ``amax`` holds a threshold for every float tensor but
        those :func:`kept_float` names.
    """
    from trtq.runtime import get_backend

    m = get_method(method)  # fail on a bad name before any work
    backend_cls = get_backend(backend)
    if backend_cls.native_calibration:
        raise InputError(
            f"backend '{backend}' calibrates INT8 itself: use calibrate_with_tensorrt (calib run --backend {backend})"
        )
    params = dict(params or {})
    proto = model if isinstance(model, onnx.ModelProto) else load_onnx(model)
    sites = model_sites(proto)
    names = [s.name for s in sites]
    hs = histograms if histograms is not None else HistogramSet(names, num_bins)
    for n in names:
        if n not in hs:
            hs._add_name(n)
    input_names = [s.name for s in sites if s.producer is None]
    output_names = [s.name for s in sites if s.producer is not None]
    auto = None
    if m.needs_data:
        from trtq.calib.auto import AutoSettings

        auto = AutoSettings.from_params(params)
    measured = None  # auto: the batches it measures on after the histograms
    if auto is not None:
        from trtq.calib.auto import MeasuredSubset

        measured = MeasuredSubset(auto.samples)
        for batch in skipped:
            measured.offer(batch)
    start = time.perf_counter()
    n_batches = 0
    choices = check = None
    with (
        backend_cls.build(proto, mark=output_names) as runner,
        ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool,
    ):
        for batch in batches:
            outs = runner.run(batch, output_names)
            for n in input_names:
                if n in batch:
                    outs[n] = batch[n]
            size = int(next(iter(batch.values())).shape[0]) if batch else 0
            if measured is not None:
                measured.offer(batch)
            hs.collect(outs, samples=size, executor=pool)
            del outs
            n_batches += 1
            progress(size)
            if callable(on_batch):
                on_batch(hs, n_batches)
        if n_batches == 0 and hs.samples == 0:
            raise InputError("no batches to calibrate on: the data source yielded nothing")
        if auto is not None:
            from trtq.calib.auto import auto_thresholds

            fallback = compute_amax(hs, auto.fallback, threads=threads, **params)
            # Float-kept tensors are measured unquantized, as they will run, and get no threshold:
            # the fallback has none for them, and auto measures only the activations given.
            floats = set(kept_float(hs))
            build = None if tools is None else _int8_builder(backend_cls, proto, tools, threads)
            known: dict[str, dict[str, float]] = {}  # auto's memo of methods' amax, for the document
            amax, choices, check = auto_thresholds(
                proto, hs, measured.batches(), runner.run, params, fallback_amax=fallback,
                known_amax=known, activations=[n for n in names if n not in floats], build=build,
            )  # fmt: skip
            del measured
        else:
            amax = compute_amax(hs, method, threads=threads, **params)
    result = CalibrationResult(hs, sites, method, params, amax, time.perf_counter() - start, n_batches)
    if auto is not None:  # what auto computed (its fallback, mse, minmax): not computed again
        result._known = known
    result.choices = choices
    result.check = check.to_dict() if check is not None else None
    return result


def _int8_builder(backend_cls: Any, proto: onnx.ModelProto, tools: BuildTools, threads: int | None) -> Any:
    """``build(amax, variable)``: a runner of ``proto`` with INT8 at ``amax``, placed as the export
    does, the ``variable`` tensors' scales as graph inputs (:data:`trtq.calib.auto_check.BuildInt8`)."""

    def build(amax: Mapping[str, float], variable: Sequence[str] = ()) -> Any:
        lent = ScalesAsInputs(tools, variable) if variable else tools
        return backend_cls.build(proto, BuildSpec("int8", amax=dict(amax)), lent, threads=threads)

    return build


def result_from_histograms(
    histograms: HistogramSet,
    model: str | os.PathLike | onnx.ModelProto | None = None,
    *,
    method: str = "entropy2",
    **params: object,
) -> CalibrationResult:
    """Recompute thresholds from saved histograms, without running the model again (a histogram
    method: ``entropy2`` by default; ``auto`` needs :func:`calibrate`)."""
    sites = (
        model_sites(model if isinstance(model, onnx.ModelProto) else load_onnx(model))
        if model
        else [TensorInfo(n) for n in histograms.names]
    )
    return CalibrationResult(
        histograms, sites, method, dict(params), compute_amax(histograms, method, **params)
    )


def histogram_path_for(cache_path: str | os.PathLike) -> Path:
    """Where the histograms of ``calib.cache`` are kept: ``calib.cache.hist.npz`` beside it."""
    p = Path(cache_path)
    return p.with_name(p.name + ".hist.npz")
