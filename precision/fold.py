"""Fold a model the way TensorRT's builder does before it picks precisions, all in FP32.

Passes, in this order (each returns a new model; the input is never modified):

1. :func:`trtq._core.onnx_fold.fold_constants` (onnx-graphsurgeon, with trtq's one exclusion
   list: random ops, Q/DQ, control flow): every subgraph computable from initializers and
   ``Constant`` nodes becomes an initializer. PaddlePaddle exports (PP-OCR) keep their weights in
   ``Constant`` nodes; after this pass they are ordinary initializers.
2. BatchNormalization after a Conv / ConvTranspose whose output feeds only that BatchNorm is
   merged into the convolution's weights and bias. A BatchNorm anywhere else becomes
   ``Mul`` + ``Add`` by a per-channel scale and shift (TensorRT turns it into a Scale layer).
   The arithmetic is done in float64 and stored as float32, so a ``running_var`` of 9.8e7 (seen in
   PP-OCRv4 det) never appears as a weight: the folded scale ``gamma / sqrt(var + eps)`` is small.
3. cleanup + topological sort.

Tensor names: the output of a BatchNorm keeps its name (it is now produced by the Conv); the
Conv's own pre-BatchNorm output disappears, as it does in a TensorRT engine.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from trtq._core.onnx_fold import fold_constants
from trtq._core.onnx_model import export_graph, tensor_ranks, tensor_readers

_CONV_OPS = ("Conv", "ConvTranspose")


def fold_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return ``model`` with constants and BatchNorms folded into FP32 weights (see module doc)."""
    model = _fold_constants(model)
    model = _fold_batchnorm(model)
    return _cleanup(model)


def is_folded(model: onnx.ModelProto) -> bool:
    """True when the model has no ``Constant`` or ``BatchNormalization`` nodes left to fold."""
    return not any(n.op_type in ("Constant", "BatchNormalization") for n in model.graph.node)


def _fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx_graphsurgeon as gs

    return export_graph(fold_constants(gs.import_onnx(model)).toposort(), model)


def _cleanup(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx_graphsurgeon as gs

    return export_graph(gs.import_onnx(model).cleanup().toposort(), model)


def _fold_batchnorm(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if not any(n.op_type == "BatchNormalization" for n in graph.node):
        return out
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers = tensor_readers(graph)
    graph_outputs = {o.name for o in graph.output}
    # shape inference (slow on big models) only once a standalone BatchNorm needs the ranks
    ranks: dict[str, int] | None = None
    used_names = set(inits) | {o for n in graph.node for o in n.output} | {n.name for n in graph.node}

    def fresh(base: str) -> str:
        name, k = base, 0
        while name in used_names:
            k += 1
            name = f"{base}_{k}"
        used_names.add(name)
        return name

    new_inits: list[onnx.TensorProto] = []
    ordered: list[onnx.NodeProto] = []
    replaced: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    for node in graph.node:
        if node.op_type != "BatchNormalization" or not all(i in inits for i in node.input[1:5]):
            continue
        gamma, beta, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64) for i in node.input[1:5])
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        conv = producer.get(node.input[0])
        if (
            conv is not None
            and conv.op_type in _CONV_OPS
            and len(readers.get(node.input[0], ())) == 1
            and node.input[0] not in graph_outputs
            and conv.input[1] in inits
            and (len(conv.input) < 3 or not conv.input[2] or conv.input[2] in inits)
        ):
            w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
            has_bias = len(conv.input) > 2 and bool(conv.input[2])
            b = (
                numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
                if has_bias
                else np.zeros(scale.shape)
            )
            if conv.op_type == "Conv":  # weight [Cout, Cin/group, k...]
                w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
            else:  # ConvTranspose weight [Cin, Cout/group, k...]
                group = next((a.i for a in conv.attribute if a.name == "group"), 1)
                cin, cout_g = w.shape[0], w.shape[1]
                wg = w.reshape(group, cin // group, cout_g, *w.shape[2:])
                w = (wg * scale.reshape(group, 1, cout_g, *([1] * (w.ndim - 2)))).reshape(w.shape)
            b = b * scale + shift
            w_name, b_name = fresh(conv.input[1] + "_bnfold"), fresh(node.output[0] + "_bias")
            new_inits += [
                numpy_helper.from_array(w.astype(np.float32), w_name),
                numpy_helper.from_array(b.astype(np.float32), b_name),
            ]
            data = conv.input[0]
            del conv.input[:]
            conv.input.extend([data, w_name, b_name])
            conv.output[0] = node.output[0]
            dropped.add(id(node))
            continue
        # Standalone BatchNorm -> x * scale + shift per channel (axis 1), as TensorRT's Scale layer.
        if ranks is None:
            ranks = tensor_ranks(model)
        rank = ranks.get(node.input[0], 4)
        shape = (1, -1) + (1,) * max(rank - 2, 0)
        s_name, t_name = fresh(node.name + "_scale"), fresh(node.name + "_shift")
        new_inits += [
            numpy_helper.from_array(scale.reshape(shape).astype(np.float32), s_name),
            numpy_helper.from_array(shift.reshape(shape).astype(np.float32), t_name),
        ]
        mid = fresh(node.output[0] + "_scaled")
        replaced[id(node)] = [
            onnx.helper.make_node("Mul", [node.input[0], s_name], [mid], name=fresh(node.name + "_mul")),
            onnx.helper.make_node("Add", [mid, t_name], [node.output[0]], name=node.name or fresh("bn_add")),
        ]
    for node in graph.node:
        if id(node) in dropped:
            continue
        ordered.extend(replaced.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(ordered)
    graph.initializer.extend(new_inits)
    return out
