"""Per-layer error of an FP16/INT8 build against the FP32 model, graphwise and layerwise.

- *graphwise*: the whole model in reduced precision (errors accumulate through the graph); every
  float tensor of the FP32 reference and of the emulated model (or TensorRT engine) is fetched
  and matched by name.
- *layerwise*: each fused layer alone in reduced precision, fed with the FP32 tensors: its own
  sensitivity. All layers are evaluated in **one** run of one model that holds the FP32 graph plus
  a reduced-precision copy of every changed layer
  (:func:`trtq.precision.emulate.build_layerwise_model`); that run also gives the FP32 reference.

ONNX Runtime runs these models with its graph optimisations off (see ``_reference``). Metrics
accumulate over all batches (see :mod:`trtq.precision.metrics`); the FP32 reference is
the folded model, so that folding itself (which TensorRT also does) is not counted as error.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtq._core.errors import InputError
from trtq._core.onnx_model import load_onnx
from trtq._core.progress import ProgressFn, null_progress
from trtq.precision.emulate import (
    EmulationConfig,
    EmulationPlan,
    build_layerwise_model,
)
from trtq.precision.metrics import METRIC_KEYS, MetricAccumulator, OutputAccumulator, get_metric
from trtq.runtime.build import BuildSpec
from trtq.runtime.runner import Runner

logger = logging.getLogger(__name__)

MODES = ("graphwise", "layerwise")


@dataclass(frozen=True)
class TensorRecord:
    """Metrics of one tensor. ``node``/``op_type`` name its producer (graphwise) or the layer's
    node to pin (layerwise); ``fused`` lists the ONNX nodes of the fused layer (layerwise)."""

    index: int
    node: str
    op_type: str
    tensor: str
    pinned: bool
    metrics: Mapping[str, float]
    fused: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "index": self.index,
            "node": self.node,
            "op_type": self.op_type,
            "tensor": self.tensor,
            "pinned": self.pinned,
        }
        d.update(_metric_fields(self.metrics))
        if self.fused:
            d["fused"] = list(self.fused)
        return d


def _ranking_metric(name: str):
    """The metric that ranks tensors: ``name``, or ``rel-l2`` for a task metric (outputs only)."""
    m = get_metric(name)
    return m if m.key in METRIC_KEYS else get_metric("rel-l2")


def _metric_fields(metrics: Mapping[str, float]) -> dict[str, float]:
    """The tensor metrics in METRIC_KEYS order, then a task metric's key (outputs only)."""
    extra = [k for k in metrics if k not in METRIC_KEYS]
    return {k: float(metrics[k]) for k in (*METRIC_KEYS, *extra)}


@dataclass(frozen=True)
class LayerScore:
    """A layer's own error (layerwise view): ``error`` is the ranking metric's badness (larger is
    worse; inf for NaN/Inf); ``node`` is the ONNX node to pin to keep the layer in FP32."""

    node: str
    op_type: str
    tensor: str
    index: int
    error: float
    metrics: Mapping[str, float]
    nodes: tuple[str, ...] = ()


@dataclass
class CompareRun:
    """One (precision, mode) comparison; :meth:`to_dict` is one entry of ``runs`` in SCHEMA.md."""

    precision: str
    mode: str
    placement: str | None
    pins: list[str]
    layers: list[TensorRecord]
    outputs: list[TensorRecord]
    missing_amax: list[str] = field(default_factory=list)
    mha: str | None = None  # the attention products' precision (quantized builds only)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "mode": self.mode,
            "placement": self.placement,
            "mha": self.mha,
            "pins": sorted(self.pins),
            "layers": [r.to_dict() for r in self.layers],
            "outputs": [{"tensor": r.tensor, **_metric_fields(r.metrics)} for r in self.outputs],
        }

    def worst(self, n: int | None = 10, metric: str = "rel-l2") -> list[TensorRecord]:
        """The ``n`` worst tensors by ``metric`` (non-finite first); ties keep graph order. A task
        metric (``top1``, ``mask-iou``: outputs only) ranks by ``rel-l2`` instead."""
        m = _ranking_metric(metric)
        ranked = sorted(self.layers, key=lambda r: (-m.badness(r.metrics), r.index))
        return ranked if n is None else ranked[:n]

    def scores(self, metric: str = "rel-l2") -> list[LayerScore]:
        m = _ranking_metric(metric)
        return [
            LayerScore(r.node, r.op_type, r.tensor, r.index, m.badness(r.metrics), dict(r.metrics), r.fused)
            for r in self.worst(None, metric)
        ]


@dataclass
class CompareResult:
    """A whole ``precision compare`` result (kind "compare" of docs/SCHEMA.md)."""

    model: dict[str, Any]
    data: dict[str, Any]
    backend: str
    runs: list[CompareRun]
    fp16_range: list[dict[str, Any]] = field(default_factory=list)
    time_s: float | None = None
    task_metric: dict[str, Any] | None = None  # {"name", "key", "params"} when --metric is a task metric
    held_out: CompareHeldOut | None = None
    fp16_range_fp32_nonfinite: list[dict[str, Any]] = field(default_factory=list)  # not findings

    def to_dict(self, *, created_by: str | None = None) -> dict[str, Any]:
        """The ``kind = "compare"`` document; ``created_by`` names the command (default: the API)."""
        from trtq._core.result import result_document

        d = result_document(
            "compare",
            backend=self.backend,
            created_by=created_by,
            model=self.model,
            data=self.data,
            runs=[r.to_dict() for r in self.runs],
            fp16_range=self.fp16_range,
            fp16_range_fp32_nonfinite=self.fp16_range_fp32_nonfinite,
        )
        if self.time_s is not None:
            d["time_s"] = self.time_s
        if self.task_metric is not None:
            d["task_metric"] = dict(self.task_metric)
        if self.held_out is not None:
            d["held_out"] = self.held_out.to_dict()
        return d


@dataclass
class CompareHeldOut:
    """The same comparison on held-out data (``--eval-data``): the same builds and INT8 ranges
    (from ``--data``/``--cache``, never from the held-out data), other images."""

    data: dict[str, Any]
    runs: list[CompareRun]
    time_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"data": self.data, "runs": [r.to_dict() for r in self.runs]}
        if self.time_s is not None:
            d["time_s"] = self.time_s
        return d


def _as_model(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else load_onnx(Path(model))


def _finite_max_abs(v: np.ndarray) -> float:
    """Largest finite |x| (0 when none): values already ±inf/NaN in FP32 are no FP16 range finding."""
    m = max(float(v.max()), -float(v.min()))
    if math.isfinite(m):
        return m
    finite = v[np.isfinite(v)]
    return float(np.abs(finite).max()) if finite.size else 0.0


def _reference(model: onnx.ModelProto, names: Sequence[str], threads: int | None) -> Runner:
    """The FP32 reference: ONNX Runtime, node for node, with ``names`` fetchable. It runs without
    graph optimisations, like the emulations it is compared with (ONNX Runtime's Q/DQ propagation
    and Conv/Add fusions would move the rounding points the emulation placed; measured: up to 0.1
    on PP-OCR cls's softmax output), and the unoptimised CPU run is no slower on these models."""
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(model, mark=list(dict.fromkeys(names)), threads=threads, optimize=False)


def compare_runs(
    model: str | os.PathLike | onnx.ModelProto,
    batches: Iterable[Mapping[str, np.ndarray]],
    configs: Sequence[EmulationConfig],
    *,
    amax: Mapping[str, float] | None = None,
    modes: Sequence[str] = ("graphwise",),
    progress: ProgressFn = null_progress,
    threads: int | None = None,
    backend: str = "onnxruntime",
    cache_path: str | os.PathLike | None = None,
    output_accumulator: Callable[[], OutputAccumulator] | None = None,
) -> tuple[list[CompareRun], dict[str, float]]:
    """Compare several precisions and views over one pass through ``batches``.

    The FP32 reference is computed once per batch and shared by every config. Returns the runs
    (configs x modes, in that order) and the largest finite |value| seen per FP32 activation
    (used by the FP16 range check at no extra cost; ±inf/NaN already in FP32 are left out).

    ``backend`` names the backend that builds each config for the graphwise view (the default
    emulates TensorRT on ONNX Runtime; ``tensorrt`` builds real engines with the compared tensors
    marked, INT8 from ``cache_path``); the FP32 reference always runs on ONNX Runtime.

    ``output_accumulator()`` makes the accumulator of each model output (e.g. a criterion's
    :meth:`~trtq.precision.evaluate.MetricCriterion.accumulator`, which adds a task metric such as
    ``mask-iou`` to the outputs' metrics); other tensors get the tensor metrics only.
    """
    for mode in modes:
        if mode not in MODES:
            raise InputError(f"unknown mode '{mode}'; choose one of: {', '.join(MODES)}")
    if not configs:
        raise InputError("nothing to compare: no precision given")
    from trtq.precision.builds import TOOLS

    # folded and planned once, through the build tools: the backend's build finds the same plans
    base, _ = TOOLS.prepared(_as_model(model))
    plans: list[EmulationPlan] = [TOOLS.plan(base, c, amax) for c in configs]
    tensors = plans[0].graph.sites
    # Inside a LayerNorm or attention layer TensorRT materialises nothing: not compared (their
    # FP32 ranges are still observed, for the FP16 range check).
    hidden = {t for ly in plans[0].graph.layers if ly.kind for t in ly.internal}
    sites = [
        (s.producer.index, s.producer.node, s.name, s.producer.op_type)
        if s.producer
        else (-1, "", s.name, "")
        for s in tensors
        if s.name not in hidden
    ]
    names = [s.name for s in tensors]
    output_names = [o.name for o in base.graph.output]
    # graph inputs are fed, not compared
    compare_names = [s.name for s in tensors if s.producer is not None and s.name not in hidden]

    sessions: list[tuple[int, Runner]] = []  # (config index, graphwise runner)
    lw_maps: list[dict[str, str]] = []
    ref_session = None
    try:
        if "layerwise" in modes:
            lw_model, lw_maps = build_layerwise_model(plans)
            fetch = names + [v for m in lw_maps for v in m.values()]
            ref_session = _reference(lw_model, fetch, threads)
        else:
            ref_session = _reference(base, names, threads)
            fetch = names
        if "graphwise" in modes:
            for k, plan in enumerate(plans):
                sessions.append(
                    (k, _graphwise_runner(backend, plan, amax, compare_names, cache_path, threads))
                )

        make_out = output_accumulator or OutputAccumulator
        output_set = set(output_names)

        def new_acc(name: str) -> MetricAccumulator | OutputAccumulator:
            return make_out() if name in output_set else MetricAccumulator()

        acc_g = [{n: new_acc(n) for n in compare_names} for _ in plans]
        acc_l = [{o: new_acc(o) for o in m} for m in lw_maps]
        observed: dict[str, float] = {}
        batch_list = batches if hasattr(batches, "__len__") else None
        progress(0, total=len(batch_list) if batch_list is not None else None, description="comparing")
        seen = 0
        for feeds in batches:
            ref = ref_session.run(feeds, fetch)
            for n in names:
                v = ref[n]
                if v.size and np.issubdtype(v.dtype, np.floating):
                    observed[n] = max(observed.get(n, 0.0), _finite_max_abs(v))
            for k, mapping in enumerate(lw_maps):
                for orig, copy in mapping.items():
                    acc_l[k][orig].update(ref[copy], ref[orig])
            for k, session in sessions:
                got = session.run(feeds, _fetchable(session, compare_names))
                for n in compare_names:
                    if n in got:
                        acc_g[k][n].update(got[n], ref[n])
            del ref
            seen += 1
            progress(1)
        if seen == 0:
            raise InputError("no batches to compare: the data source yielded nothing")
    finally:
        if ref_session is not None:
            ref_session.close()
        for _k, s in sessions:
            s.close()

    runs: list[CompareRun] = []
    for k, plan in enumerate(plans):
        cfg = plan.config
        placement = cfg.placement if cfg.quantized else None
        for mode in modes:
            if mode == "graphwise":
                recs = [
                    TensorRecord(idx, node, op, n, node in cfg.pins, acc_g[k][n].result())
                    for idx, node, n, op in sites
                    if n in acc_g[k] and acc_g[k][n].n
                ]
            else:
                recs = _layerwise_records(plan, acc_l[k])
            outs = [r for r in recs if r.tensor in output_names]
            runs.append(
                CompareRun(
                    cfg.precision,
                    mode,
                    placement,
                    sorted(cfg.pins),
                    recs,
                    outs,
                    list(plan.missing_amax),
                    cfg.mha if cfg.quantized else None,
                )
            )
    return runs, observed


def _graphwise_runner(
    backend: str,
    plan: EmulationPlan,
    amax: Mapping[str, float] | None,
    names: Sequence[str],
    cache_path: str | os.PathLike | None,
    threads: int | None,
) -> Runner:
    """The candidate for one config: the backend's build of the plan's folded model with ``names``
    marked (an emulating backend finds this very plan in the build tools, by model, config and
    ``amax`` object)."""
    from trtq.precision.builds import build_runner

    cfg = plan.config
    spec = BuildSpec(cfg.precision, cfg.placement, cfg.pins, amax=amax, cache_path=cache_path, mha=cfg.mha)
    return build_runner(backend, plan.model, spec, mark=list(names), threads=threads)


def _fetchable(runner: Runner, names: Sequence[str]) -> list[str]:
    """The compared tensors a runner can return (an engine may have fused some away) and its outputs."""
    marked = getattr(runner, "marked", None)
    outs = [t.name for t in runner.outputs()]
    keep = names if marked is None else [n for n in names if n in set(marked)]
    return list(dict.fromkeys([*keep, *outs]))


def _layerwise_records(plan: EmulationPlan, acc: Mapping[str, Any]) -> list[TensorRecord]:
    model = plan.model
    recs: list[TensorRecord] = []
    for lp in plan.layers:
        if not lp.changed:
            continue
        layer = lp.layer
        pin = plan.pin_node(layer)
        fused = tuple(plan.graph.node_names[n] for n in layer.nodes)
        for o in layer.outputs:
            if o in acc and acc[o].n:
                idx = plan.graph.producer[o]
                recs.append(
                    TensorRecord(
                        idx, pin, model.graph.node[layer.head].op_type, o, False, acc[o].result(), fused
                    )
                )
    recs.sort(key=lambda r: r.index)
    return recs


def compare(
    model: str | os.PathLike | onnx.ModelProto,
    batches: Iterable[Mapping[str, np.ndarray]],
    config: EmulationConfig,
    *,
    amax: Mapping[str, float] | None = None,
    mode: str = "graphwise",
    progress: ProgressFn = null_progress,
    threads: int | None = None,
) -> CompareRun:
    """Compare one emulated precision with FP32 in one view (``graphwise`` or ``layerwise``)."""
    runs, _ = compare_runs(
        model, batches, [config], amax=amax, modes=(mode,), progress=progress, threads=threads
    )
    return runs[0]


def layerwise_sensitivity(
    model: str | os.PathLike | onnx.ModelProto,
    batches: Iterable[Mapping[str, np.ndarray]],
    config: EmulationConfig,
    *,
    amax: Mapping[str, float] | None = None,
    metric: str = "rel-l2",
    progress: ProgressFn = null_progress,
    threads: int | None = None,
) -> list[LayerScore]:
    """Each fused layer's own error with FP32 inputs, worst first (by ``metric``; NaN/Inf first).

    ``LayerScore.node`` is the ONNX node to pin to keep that layer in FP32.
    """
    run = compare(model, batches, config, amax=amax, mode="layerwise", progress=progress, threads=threads)
    return run.scores(metric)
