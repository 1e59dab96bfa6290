"""Cross-layer equalisation (Nagel et al. 2019, "Data-Free Quantization", section 4.1): rescale
the channels between two convolutions so that INT8 ranges fit them better, without changing the
FP32 function.

For a pair ``Conv1 -> [Relu] -> Conv2`` (the tensor between read by the next node alone, and not a
graph output): Relu is positive-homogeneous, ``relu(x / s) = relu(x) / s`` for ``s > 0``, so
dividing output channel ``c`` of Conv1 (its weights and bias) by ``s_c`` and multiplying the
weights of Conv2 that read channel ``c`` by ``s_c`` computes the same function. With ``r1_c`` the
largest |weight| of Conv1's output channel ``c`` and ``r2_c`` that of Conv2's input channel ``c``,
``s_c = sqrt(r1_c / r2_c)`` makes both ``sqrt(r1_c * r2_c)``.

TensorRT quantizes weights per output channel, so what this changes for INT8 is mostly the
per-tensor activation between the two layers: its channels are divided by ``s_c``. Measured on
PP-OCRv4 det (BENCHMARKS.md, "Cross-layer equalisation"), its 15 pairs, held out, ``auto``
ranges: with nothing pinned photos IoU +0.05 (8 splits, 7 better), drawn documents level; with
the 8 worst layers pinned −0.013 (4 splits, 4 worse). For models deployed fully in INT8, then;
the pinned flow is better without it.

The pass works on the folded model (:func:`trtq.precision.emulate.folded`: BatchNorms in the
convolution weights, as TensorRT builds it), so its result is a folded FP32 model: calibrate,
compare, bisect and export *that* model, and build the engine from it. Pairs are chained as they
come (a convolution can be Conv2 of one pair and Conv1 of the next); each pair is equalised once,
in graph order. Clip (ReLU6), HardSwish and other activations are not positive-homogeneous and end
a pair; so does a tensor of the chain read by any other node.

The factors come from a :data:`ScaleRule`; :func:`meet_at_geometric_mean` (the one above) is the
default, and ``benchmarks/equalize.py`` measures an activation-driven one through the same pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from trtq._core.onnx_model import tensor_readers

#: ``rule(conv1, relu or None, conv2, r1, r2) -> s``: the factor of each channel between the pair
#: (``r1``/``r2``: each channel's largest |weight| in Conv1 / Conv2). Factors that are not finite
#: and positive, and those of channels with a zero range, become 1.
ScaleRule = Callable[
    [onnx.NodeProto, onnx.NodeProto | None, onnx.NodeProto, np.ndarray, np.ndarray], np.ndarray
]


def meet_at_geometric_mean(
    conv1: onnx.NodeProto, relu: onnx.NodeProto | None, conv2: onnx.NodeProto, r1: np.ndarray, r2: np.ndarray
) -> np.ndarray:
    """``sqrt(r1 / r2)``: both weight ranges become ``sqrt(r1 * r2)`` (Nagel et al. 2019)."""
    return np.sqrt(r1 / r2)


@dataclass(frozen=True)
class Pair:
    """One equalised pair: node names, the tensor between, and the scales applied."""

    conv1: str
    conv2: str
    between: str  # the tensor whose channels were divided by s
    channels: int
    scale_min: float  # smallest and largest s_c
    scale_max: float


@dataclass
class EqualizeResult:
    """What :func:`equalize` did (the ``precision equalize --json`` document)."""

    pairs: list[Pair] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"count": len(self.pairs), "pairs": [dict(p.__dict__) for p in self.pairs]}


def find_pairs(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto | None, onnx.NodeProto]]:
    """``(conv1, relu or None, conv2)`` of ``model`` in graph order: Conv (constant weights, and
    bias if any) into an optional Relu into a Conv with constant weights, every link read by the
    next node alone and no tensor of it a graph output, each weight read by its Conv alone."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    readers = tensor_readers(g)
    inits = {i.name for i in g.initializer}
    outputs = {o.name for o in g.output}

    def sole(t: str) -> bool:
        return len(readers.get(t, [])) == 1 and t not in outputs

    def constant_conv(node: onnx.NodeProto) -> bool:
        ins = list(node.input)
        return (
            node.op_type == "Conv"
            and len(ins) > 1
            and ins[1] in inits
            and sole(ins[1])
            and (len(ins) < 3 or not ins[2] or (ins[2] in inits and sole(ins[2])))
        )

    out = []
    for conv2 in g.node:
        if not constant_conv(conv2):
            continue
        t = conv2.input[0]
        relu = producer.get(t)
        if relu is not None and relu.op_type == "Relu" and sole(t):
            t = relu.input[0]
        else:
            relu = None
        conv1 = producer.get(t)
        if conv1 is not None and constant_conv(conv1) and sole(t):
            out.append((conv1, relu, conv2))
    return out


def equalize(
    model: onnx.ModelProto, rule: ScaleRule = meet_at_geometric_mean
) -> tuple[onnx.ModelProto, EqualizeResult]:
    """``(equalised model, what was done)``: ``model`` folded, then every pair of
    :func:`find_pairs` rescaled by the factors of ``rule`` (module docstring). ``model`` is not
    modified."""
    from trtq.precision.emulate import folded

    out = folded(model)  # a new model, unless ``model`` was folded already
    if out is model:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer}
    result = EqualizeResult()

    def get(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name]).astype(np.float64)

    def put(name: str, value: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    for conv1, relu, conv2 in find_pairs(out):
        w1, w2 = get(conv1.input[1]), get(conv2.input[1])
        channels = w1.shape[0]
        group = next((a.i for a in conv2.attribute if a.name == "group"), 1)
        cout, cin_g = w2.shape[:2]
        if cin_g * group != channels or cout % group:
            continue  # shapes that do not chain (a malformed model): leave it
        # Conv2's weights that read input channel k: group k // cin_g, input column k % cin_g
        w2g = w2.reshape(group, cout // group, cin_g, -1)
        r2 = np.abs(w2g).max(axis=(1, 3)).reshape(-1)  # [group * cin_g] = per input channel
        r1 = np.abs(w1.reshape(channels, -1)).max(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.asarray(rule(conv1, relu, conv2, r1, r2), np.float64)
        s = np.where((r1 > 0) & (r2 > 0) & np.isfinite(s) & (s > 0), s, 1.0)  # a dead channel keeps 1
        put(conv1.input[1], w1 / s.reshape(-1, *([1] * (w1.ndim - 1))))
        if len(conv1.input) > 2 and conv1.input[2]:
            put(conv1.input[2], get(conv1.input[2]) / s)
        put(conv2.input[1], (w2g * s.reshape(group, 1, cin_g, 1)).reshape(w2.shape))
        between = (relu or conv1).output[0]
        result.pairs.append(Pair(conv1.name, conv2.name, between, channels, float(s.min()), float(s.max())))
    return out, result
