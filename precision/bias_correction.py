"""Bias correction of INT8 layers (empirical variant of Nagel et al. 2019, "Data-Free Quantization
Through Weight Equalization and Bias Correction", section 4.2).

Quantizing a layer's weights per channel (and its input per tensor) shifts the expected value of
its output: ``E[W_q Q(x)] - E[W x]`` is in general not zero, and a non-zero mean error is
systematic: it survives averaging, passes through the following layers and adds up. This module
measures that shift per output channel on calibration data and subtracts it from the layer's
bias, in the **FP32 model** (folded, as TensorRT folds it). The corrected model is then what the
user exports (:func:`trtq.precision.export.export_qdq`, TensorRT 11) or builds with a calibration
cache (TensorRT 10): both consume the corrected biases, and the activation ranges (the cache) do
not change.

Algorithm, for the model folded in FP32 and its INT8 emulation under the same placement and pins:

- the corrected layers are the INT8 Conv/ConvTranspose/Gemm/MatMul with a constant weight input
  (the weight is input 1; a MatMul whose constant is its first input is left alone);
- ``mode="weights"`` (the default; Nagel et al.'s quantity): the shift of the weight rounding,
  ``E[W_q x] - E[W x]`` per output channel, where ``x`` is the input the INT8 layer really sees
  (the emulation's quantized activation, upstream layers quantized and corrected): each anchor of
  the emulated model gets a twin with the FP32 weights on the same inputs, and the difference of
  their per-channel means (channel axis 1 for Conv/ConvTranspose, the last axis for Gemm/MatMul;
  mean over samples and positions) is the shift;
- ``mode="output"``: the whole mean error of the layer's output against the FP32 model,
  ``E[y_int8] - E[y_fp32]``, activation clipping and upstream errors included. Measured harmful on
  the real models (BENCHMARKS.md: it moves biases by the clipping error of whole subnetworks), kept
  for experiments;
- the shift is subtracted from the bias (Conv/ConvTranspose: input 2, created when missing; Gemm:
  C, created or broadcast; MatMul: the constant of a following ``Add`` when the Add is its only
  reader and the constant is one value per channel, else a new ``Add`` after the MatMul, which
  TensorRT fuses as the MatMul's bias);
- ``passes`` > 1 repeats the measurement with the corrections in place and applies what is left:
  each layer's shift is then measured with its upstream layers corrected. The fixed point of this
  iteration is the sequential (topological, layer by layer) correction; one pass (the default) is
  the one-shot correction, every layer measured with the uncorrected upstream. The report gives
  the shift left after the last pass (``nan`` with one pass: not re-measured).

Units: a correction is in the layer's output units, one value per output channel. The layer's
output is its Conv/Gemm/MatMul output before any activation (after the bias Add for a MatMul
whose bias is folded into an Add). Known limits: the correction is a mean over the data given, so
it is only as representative as that data (use the calibration data, never held-out data); it
does not correct MatMuls between two activations (attention), nor layers kept in FP32 (pins).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from trtq._core.errors import InputError
from trtq._core.onnx_model import tensor_readers
from trtq.precision.emulate import EmulationConfig, apply_plan, folded, plan_emulation

logger = logging.getLogger(__name__)

MODES = ("weights", "output")
_WEIGHT_POS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


@dataclass(frozen=True)
class LayerCorrection:
    """One corrected layer: ``node``, its op, the tensor measured, and per-channel figures."""

    node: str
    op_type: str
    tensor: str
    bias: str  # the initializer that carries the correction
    channels: int
    mean_abs_shift: float  # mean |shift| removed, over the channels (output units)
    max_abs_shift: float
    residual_mean_abs: float  # mean |shift| left after the last pass (nan when not re-measured)
    created: str = ""  # "" | "bias" (a new bias input) | "add" (a new Add node)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class BiasCorrectionReport:
    """What :func:`correct_biases` did: per layer, the mean |shift| removed."""

    layers: list[LayerCorrection] = field(default_factory=list)
    passes: int = 1
    samples: int = 0
    placement: str = "explicit"

    def to_dict(self) -> dict:
        return {
            "passes": self.passes,
            "samples": self.samples,
            "placement": self.placement,
            "layers": [c.to_dict() for c in self.layers],
        }


@dataclass
class Target:
    """One INT8 Conv/ConvTranspose/Gemm/MatMul with a constant weight, and where its bias lives
    (shared with :mod:`trtq.precision.weight_correction`)."""

    node_index: int
    node: str
    op_type: str
    tensor: str  # measured tensor (kept by name in the FP32 and emulated models)
    axis: int  # channel axis of ``tensor`` (negative: from the end)
    channels: int
    bias_kind: str  # "conv" | "gemm" | "add" | "new-add"
    add_index: int | None = None  # the Add node carrying the bias (bias_kind "add")
    created: str = ""
    total: np.ndarray = field(default_factory=lambda: np.zeros(0))  # correction subtracted so far


def correct_biases(
    model: onnx.ModelProto,
    batches: Iterable[Mapping[str, np.ndarray]],
    amax: Mapping[str, float],
    *,
    placement: str = "explicit",
    pins: Iterable[str] = (),
    passes: int = 1,
    mode: str = "weights",
    threads: int | None = None,
) -> tuple[onnx.ModelProto, BiasCorrectionReport]:
    """The folded FP32 ``model`` with the INT8 layers' per-channel output shift folded into their
    biases, and a report.

    ``batches``: calibration feeds (input name -> array), read ``passes + 1`` times; ``amax``: the
    activation ranges (tensor -> amax, as in the calibration cache); ``placement`` and ``pins`` as
    in :class:`~trtq.precision.emulate.EmulationConfig`. Export or build the returned model with
    the same ``amax``, placement and pins. ``passes`` >= 1 (see the module docstring).
    """
    if passes < 1:
        raise InputError("bias correction needs at least one pass")
    if mode not in MODES:
        raise InputError(f"unknown bias correction mode '{mode}'; choose one of: {', '.join(MODES)}")
    batches = list(batches)
    if not batches:
        raise InputError("bias correction needs calibration data (--data)")
    pins = frozenset(pins)
    config = EmulationConfig("int8", placement, pins)
    base = onnx.ModelProto()
    base.CopyFrom(folded(model))
    plan = plan_emulation(base, config, amax)
    targets = correction_targets(plan)
    report = BiasCorrectionReport(passes=passes, samples=len(batches), placement=placement)
    if not targets:
        logger.info("bias correction: no INT8 layer with constant weights")
        return base, report
    prepare_biases(base, targets)
    for t in targets:
        t.total = np.zeros(t.channels)
    specs = [(t.tensor, t.axis, t.channels) for t in targets]
    ref = _channel_means(base, batches, specs, threads) if mode == "output" else None
    residual: list[np.ndarray] = []
    for p in range(passes + 1):
        emulated = apply_plan(plan_emulation(base, config, amax))
        if ref is None:  # the twin shares the corrected bias: what is left is the raw shift - total
            raw = _weight_shift(emulated, base, batches, targets, threads)
            shift = [r - t.total for r, t in zip(raw, targets, strict=True)]
        else:
            means = _channel_means(emulated, batches, specs, threads)
            shift = [m - r for m, r in zip(means, ref, strict=True)]
        if p == passes:  # the last measurement only checks what is left
            residual = shift
            break
        for t, s in zip(targets, shift, strict=True):
            shift_bias(base, t, s)
            t.total = t.total + s
        if passes == 1:
            residual = [np.full_like(s, np.nan) for s in shift]
            break
    for t, r in zip(targets, residual, strict=True):
        total = t.total
        report.layers.append(
            LayerCorrection(
                node=t.node,
                op_type=t.op_type,
                tensor=t.tensor,
                bias=bias_name(base, t),
                channels=t.channels,
                mean_abs_shift=float(np.mean(np.abs(total))),
                max_abs_shift=float(np.max(np.abs(total))),
                residual_mean_abs=float(np.mean(np.abs(r))),
                created=t.created,
            )
        )
    logger.info("bias correction: %d layer(s), measured on %d batch(es)", len(targets), len(batches))
    return base, report


def correction_targets(plan, qtypes: tuple[str, ...] = ("int8",)) -> list[Target]:
    """The unpinned quantized layers of ``plan`` whose Conv/ConvTranspose/Gemm/MatMul has a
    constant weight (input 1) quantized to one of ``qtypes``, in node (topological) order."""
    model = plan.model
    nodes = model.graph.node
    inits = {i.name: i for i in model.graph.initializer}
    consumers = tensor_readers(model)
    graph_outputs = {o.name for o in model.graph.output}
    out: list[Target] = []
    for lp in plan.layers:
        if lp.pinned or not lp.int8:
            continue
        for idx in lp.layer.nodes:
            node = nodes[idx]
            pos = _WEIGHT_POS.get(node.op_type)
            w = lp.weights.get((idx, pos)) if pos is not None else None
            if w is None or w[0] not in qtypes:
                continue
            wshape = tuple(inits[node.input[pos]].dims)
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            name = plan.graph.node_names[idx]
            if node.op_type == "Conv":
                t = Target(idx, name, "Conv", node.output[0], 1, wshape[0], "conv")
            elif node.op_type == "ConvTranspose":
                channels = wshape[1] * attrs.get("group", 1)
                t = Target(idx, name, "ConvTranspose", node.output[0], 1, channels, "conv")
            elif node.op_type == "Gemm":
                if len(wshape) != 2:
                    continue
                channels = wshape[0] if attrs.get("transB", 0) else wshape[1]
                t = Target(idx, name, "Gemm", node.output[0], -1, channels, "gemm")
            else:  # MatMul with a constant B [.., K, N]
                if len(wshape) < 2:
                    continue
                channels = wshape[-1]
                t = Target(idx, name, "MatMul", node.output[0], -1, channels, "new-add")
                readers = consumers.get(node.output[0], [])
                if len(readers) == 1 and node.output[0] not in graph_outputs:
                    add = nodes[readers[0]]
                    other = [x for x in add.input if x != node.output[0]]
                    if add.op_type == "Add" and len(other) == 1 and other[0] in inits:
                        cshape = tuple(inits[other[0]].dims)
                        if cshape and cshape[-1] == channels and int(np.prod(cshape)) == channels:
                            t.bias_kind, t.add_index, t.tensor = "add", readers[0], add.output[0]
            out.append(t)
    return out


def prepare_biases(model: onnx.ModelProto, targets: list[Target]) -> None:
    """Give every target a bias initializer of its own (zeros when it had none); may insert Add
    nodes (``targets``' node indices are updated)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers = {t: len(ks) for t, ks in tensor_readers(graph).items()}
    new_nodes: dict[int, onnx.NodeProto] = {}
    for t in targets:
        node = graph.node[t.node_index]
        if t.bias_kind == "conv" or t.bias_kind == "gemm":
            if len(node.input) > 2 and node.input[2]:
                name = node.input[2]
                if readers.get(name, 0) > 1 or name not in inits:  # shared: give this layer a copy
                    _copy_init(graph, inits, name, f"{t.node}__trtq_bias", node, 2)
                continue
            zeros = np.zeros(t.channels, dtype=np.float32)
            if t.bias_kind == "gemm":
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                beta = float(attrs.get("beta", 1.0))
                if beta != 1.0:  # a new C with beta = 1 keeps the rest of the Gemm as it was
                    continue
            bias = f"{t.node}__trtq_bias"
            graph.initializer.append(numpy_helper.from_array(zeros, bias))
            inits[bias] = graph.initializer[-1]
            if len(node.input) == 2:
                node.input.append(bias)
            else:
                node.input[2] = bias
            t.created = "bias"
        elif t.bias_kind == "add":
            add = graph.node[t.add_index]
            pos = next(i for i, x in enumerate(add.input) if x in inits)
            if readers.get(add.input[pos], 0) > 1:
                _copy_init(graph, inits, add.input[pos], f"{t.node}__trtq_bias", add, pos)
        else:  # a new Add after the MatMul; the Add's output keeps the MatMul's output name
            out = node.output[0]
            node.output[0] = f"{out}__trtq_matmul"
            bias = f"{t.node}__trtq_bias"
            graph.initializer.append(numpy_helper.from_array(np.zeros(t.channels, np.float32), bias))
            inits[bias] = graph.initializer[-1]
            new_nodes[t.node_index] = helper.make_node(
                "Add", [node.output[0], bias], [out], name=f"{t.node}__trtq_bias_add"
            )
            t.bias_kind, t.created = "new-add", "add"
    if new_nodes:
        old = list(graph.node)
        ordered: list[onnx.NodeProto] = []
        new_index: dict[int, int] = {}
        for i, n in enumerate(old):
            new_index[i] = len(ordered)
            ordered.append(n)
            if i in new_nodes:
                ordered.append(new_nodes[i])
        del graph.node[:]
        graph.node.extend(ordered)
        for t in targets:
            t.node_index = new_index[t.node_index]
            if t.add_index is not None:
                t.add_index = new_index[t.add_index]


def _copy_init(graph, inits, name: str, new: str, node, pos: int) -> None:
    arr = numpy_helper.to_array(inits[name]).astype(np.float32)
    graph.initializer.append(numpy_helper.from_array(arr, new))
    inits[new] = graph.initializer[-1]
    node.input[pos] = new


def bias_name(model: onnx.ModelProto, t: Target) -> str:
    """The initializer carrying the target's bias (after :func:`prepare_biases`), or ""."""
    graph = model.graph
    if t.bias_kind in ("conv", "gemm"):
        node = graph.node[t.node_index]
        return node.input[2] if len(node.input) > 2 else ""
    if t.bias_kind == "add":
        inits = {i.name for i in graph.initializer}
        return next(x for x in graph.node[t.add_index].input if x in inits)
    return f"{t.node}__trtq_bias"


def bias_vector(model: onnx.ModelProto, t: Target) -> np.ndarray | None:
    """The target's bias per output channel in output units (Gemm: ``beta * C``), float64;
    ``None`` when it has no bias :func:`prepare_biases` could give it (a Gemm with beta != 1 and no
    C) or its bias is not one value per channel."""
    name = bias_name(model, t)
    if not name:
        return None
    init = next(i for i in model.graph.initializer if i.name == name)
    value = numpy_helper.to_array(init).astype(np.float64)
    if t.bias_kind == "gemm":
        node = model.graph.node[t.node_index]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        value = value * float(attrs.get("beta", 1.0))
    if value.size == 1:
        return np.full(t.channels, float(value.reshape(-1)[0]))
    if value.size != t.channels:
        return None
    return value.reshape(-1)


def shift_bias(model: onnx.ModelProto, t: Target, shift: np.ndarray) -> None:
    """Subtract ``shift`` (one value per output channel, output units) from the target's bias."""
    name = bias_name(model, t)
    if not name:  # a Gemm with beta != 1 and no C: left uncorrected
        return
    init = next(i for i in model.graph.initializer if i.name == name)
    value = numpy_helper.to_array(init).astype(np.float64)
    delta = shift.astype(np.float64)
    if t.bias_kind == "gemm":
        node = model.graph.node[t.node_index]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        delta = delta / float(attrs.get("beta", 1.0))
        value = (
            value - delta if value.ndim and value.shape[-1] == t.channels else value - delta.reshape(1, -1)
        )
    else:
        value = value - delta.reshape(value.shape) if value.size == delta.size else value - delta
    init.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))


def _weight_shift(
    emulated: onnx.ModelProto,
    base: onnx.ModelProto,
    batches: list[Mapping[str, np.ndarray]],
    targets: list[Target],
    threads: int | None,
) -> list[np.ndarray]:
    """Per target, ``E[W_q x] - E[W x]`` per channel, ``x`` the input its INT8 layer sees in the
    emulation: each anchor gets a twin with the FP32 weight on the same (quantized) inputs."""
    model = onnx.ModelProto()
    model.CopyFrom(emulated)
    graph = model.graph
    have = {i.name for i in graph.initializer}
    base_inits = {i.name: i for i in base.graph.initializer}
    twins: dict[str, onnx.NodeProto] = {}
    specs: list[tuple[str, int, int]] = []
    for t in targets:
        anchor = base.graph.node[t.node_index]
        out, weight = anchor.output[0], anchor.input[_WEIGHT_POS[anchor.op_type]]
        if weight not in have:
            graph.initializer.append(base_inits[weight])
            have.add(weight)
        twin = onnx.NodeProto()
        twin.CopyFrom(next(n for n in graph.node if n.output and n.output[0] == out))
        twin.name = f"{twin.name or out}__trtq_bc_fp32"
        twin.input[_WEIGHT_POS[anchor.op_type]] = weight
        twin.output[0] = f"{out}__trtq_bc_fp32"
        twins[out] = twin
        specs += [(out, t.axis, t.channels), (twin.output[0], t.axis, t.channels)]
    nodes = []
    for n in graph.node:
        nodes.append(n)
        if n.output and n.output[0] in twins:
            nodes.append(twins[n.output[0]])
    del graph.node[:]
    graph.node.extend(nodes)
    means = _channel_means(model, batches, specs, threads)
    return [means[2 * k] - means[2 * k + 1] for k in range(len(targets))]


def _channel_means(
    model: onnx.ModelProto,
    batches: list[Mapping[str, np.ndarray]],
    specs: list[tuple[str, int, int]],
    threads: int | None,
) -> list[np.ndarray]:
    """Per ``(tensor, channel axis, channels)``, the tensor's mean per channel over every batch,
    sample and position."""
    from trtq.runtime.onnxruntime import run_marked

    sums = [np.zeros(c, dtype=np.float64) for _, _, c in specs]
    counts = [0] * len(specs)
    for values in run_marked(model, [name for name, _, _ in specs], batches, threads=threads):
        for k, (name, axis, channels) in enumerate(specs):
            v = np.moveaxis(np.asarray(values[name], dtype=np.float64), axis, -1).reshape(-1, channels)
            sums[k] += v.sum(axis=0)
            counts[k] += v.shape[0]
    return [s / max(c, 1) for s, c in zip(sums, counts, strict=True)]
