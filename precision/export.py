"""Write the Q/DQ ONNX model that TensorRT 11 (explicit quantization) and ONNX Runtime both run.

Placement is :mod:`trtq.precision.emulate`'s ``explicit`` rule on the folded model, per pattern:
QuantizeLinear -> DequantizeLinear on the activation inputs of Conv/ConvTranspose/Gemm/MatMul,
on the residual inputs of Adds fused into a Conv, on the branch input of a transformer's
residual Add (never the residual stream), none before a LayerNorm or Softmax, and on the
attention products' inputs only with ``mha="int8"``; per-tensor activation scales from the
calibration (``scale = amax / 127``); weights stored as INT8 initializers with a per-output-channel
DequantizeLinear (``axis``); zero-points are INT8 zeros everywhere; outputs are not quantized.
Pinned nodes are left unquantized (FP32). The model is raised to opset 13 (per-axis
DequantizeLinear) with ONNX's version converter when it is older.

With ``fp16=True`` every node that is not pinned, not a Q/DQ and not shape plumbing computes in
FP16 (its float inputs and outputs typed FP16, weights stored in FP16); Casts are inserted where
an FP16 tensor meets an FP32 one (pinned nodes, Q/DQ, graph inputs and outputs, which stay
FP32). This is the strongly typed form TensorRT 11 builds without precision flags.

With ``fp8=True`` the Q/DQ pairs are FP8 E4M3 instead (the same amax; the placement leaves out
the convolutions TensorRT has no FP8 kernels for): activation scales ``amax / 112``
(``qdq.FP8_HEADROOM``: amax two binades below 448), FLOAT8E4M3FN zero-points
(QuantizeLinear-19: saturating, round to nearest even), weights stored as
FLOAT8E4M3FN initializers with one scale per output channel (``max |W_c| / d_c``, the INT8 axis,
``d_c`` the best of :func:`~trtq.precision.qdq.quantize_weight_fp8`'s eight grids)
and a DequantizeLinear; the model is raised to opset 19. Rules and their source (TensorRT
developer guide, "Working with Quantized Types" / FP8) in :mod:`trtq.precision.emulate`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtq._core.errors import InputError
from trtq._core.onnx_model import tensor_types
from trtq.precision import qdq
from trtq.precision.emulate import (
    _ZP,
    DEFAULT_MHA,
    FP8_OPSET,
    EmulationConfig,
    at_least_opset,
    folded,
    model_opset,
    plan_emulation,
    prune_initializers,
)

logger = logging.getLogger(__name__)

QDQ_OPSET = 13


def export_qdq(
    model: onnx.ModelProto,
    amax: Mapping[str, float],
    pins: Iterable[str] = (),
    *,
    fp16: bool = False,
    fp8: bool = False,
    mha: str = DEFAULT_MHA,
    weight_scales: Mapping[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """Q/DQ model of ``model`` with activation ranges ``amax`` (tensor -> amax); ``pins`` stay FP32.

    With ``fp16=True`` and an empty ``amax`` the result is the FP16 model alone (no Q/DQ).
    ``fp8=True``: FP8 E4M3 Q/DQ instead of INT8 (opset 19). ``mha``: ``fp16`` leaves the attention
    blocks' matrix products unquantized, ``int8`` quantizes Q, K, the probabilities and V.
    The result passes ``onnx.checker`` and runs in ONNX Runtime.
    """
    if not amax and (fp8 or not fp16):
        raise InputError("Q/DQ export needs a calibration cache (amax per tensor)")
    base = _at_least_opset(folded(model), FP8_OPSET if fp8 else QDQ_OPSET)
    quant = "fp8" if fp8 else "int8"
    if fp8:
        precision = "fp8+fp16" if fp16 else "fp8"
    else:
        precision = ("fp16+int8" if amax else "fp16") if fp16 else "int8"
    config = EmulationConfig(precision, "explicit", frozenset(pins), mha)
    plan = plan_emulation(base, config, amax or None)
    out = onnx.ModelProto()
    out.CopyFrom(plan.model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    new_inits: list[onnx.TensorProto] = [qdq.zero_point(_ZP, qtype=quant)]
    made: dict[str, str] = {}
    plan_of_node = plan.plan_of_node
    nodes: list[onnx.NodeProto] = []
    kept_fp32: set[int] = set()  # positions in the new node list of the pinned nodes
    for idx, node in enumerate(graph.node):
        lp = plan_of_node.get(idx)
        if lp is not None and lp.int8:
            for pos, t in enumerate(node.input):
                w = lp.weights.get((idx, pos))
                if w is not None and w[0] in ("int8", "fp8"):
                    given = (weight_scales or {}).get(t)
                    node.input[pos] = _weight_dq(t, w[1], inits, made, new_inits, nodes, w[0], given)
                elif (idx, pos) in lp.quant_edges:
                    node.input[pos] = _activation_qdq(t, plan.amax[t], made, new_inits, nodes, quant)
        if plan.graph.node_names[idx] in config.pins:  # by index: an unnamed node is pinned as Op_idx
            kept_fp32.add(len(nodes))
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    if fp16:
        _to_fp16(out, kept_fp32)
    prune_initializers(out)
    out.producer_name = "trtq"
    onnx.checker.check_model(out)
    return out


def _opset(model: onnx.ModelProto, default: int) -> int:
    return model_opset(model, default)


def _at_least_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    return at_least_opset(model, opset)


def _activation_qdq(
    t: str,
    amax: float,
    made: dict[str, str],
    inits: list[onnx.TensorProto],
    nodes: list[onnx.NodeProto],
    qtype: str = "int8",
) -> str:
    key = f"act:{t}"
    if key not in made:
        scale = f"{t}_scale"
        inits.append(qdq.scalar_scale(scale, amax, qtype))
        dst = f"{t}_DequantizeLinear"
        nodes.extend(qdq.qdq_pair(t, dst, scale, _ZP, f"{t}_QDQ"))
        made[key] = dst
    return made[key]


def _weight_dq(
    name: str,
    axis: int | None,
    inits: Mapping[str, onnx.TensorProto],
    made: dict[str, str],
    new_inits: list[onnx.TensorProto],
    nodes: list[onnx.NodeProto],
    qtype: str = "int8",
    scale: np.ndarray | None = None,
) -> str:
    key = f"w:{name}:{axis}:{qtype}"
    if key not in made:
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        q_name, s_name, z_name = f"{name}_{qtype}", f"{name}_scale", f"{name}_zero_point"
        if qtype == "fp8":
            values, scale = qdq.quantize_weight_fp8(w, axis, scale)
            q_init = qdq.fp8_tensor(q_name, values)
        else:
            q, scale = qdq.quantize_weight(w, axis, scale)
            q_init = numpy_helper.from_array(q, q_name)
        new_inits += [
            q_init,
            numpy_helper.from_array(scale, s_name),
            qdq.zero_point(z_name, scale.shape, qtype),
        ]
        dst = f"{name}_DequantizeLinear"
        attrs = {} if axis is None else {"axis": axis}
        nodes.append(
            helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [dst], name=f"{name}_DQ", **attrs)
        )
        made[key] = dst
    return made[key]


# -- FP16 ----------------------------------------------------------------------------------------
_KEEP_FP32 = frozenset({"QuantizeLinear", "DequantizeLinear", "Shape", "Size", "Cast", "Constant"})


def _float_type_params(node: onnx.NodeProto, opset: int) -> tuple[set[int], set[int]]:
    """Input and output positions whose type is the node's float type parameter (per its schema)."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:
        return set(), set()
    float_params = {
        c.type_param_str for c in schema.type_constraints if "tensor(float16)" in c.allowed_type_strs
    }

    def positions(formals, count: int) -> set[int]:
        pos: set[int] = set()
        for i in range(count):
            f = formals[min(i, len(formals) - 1)] if formals else None
            if f is not None and f.type_str in float_params:
                pos.add(i)
        return pos

    return positions(schema.inputs, len(node.input)), positions(schema.outputs, len(node.output))


def _to_fp16(model: onnx.ModelProto, pinned: set[int]) -> None:
    """Turn every float node into FP16 except those at the positions ``pinned`` and _KEEP_FP32 ops."""
    graph = model.graph
    opset = _opset(model, QDQ_OPSET)
    types = tensor_types(model)
    for init in graph.initializer:
        types[init.name] = init.data_type
    inits = {i.name: i for i in graph.initializer}
    converted: dict[int, tuple[set[int], set[int]]] = {}
    for idx, node in enumerate(graph.node):
        if idx in pinned or node.op_type in _KEEP_FP32:
            continue
        ins, outs = _float_type_params(node, opset)
        ins = {p for p in ins if node.input[p]}
        outs = {p for p in outs if node.output[p]}
        typed = [types.get(node.input[p]) for p in ins] + [types.get(node.output[p]) for p in outs]
        if outs and all(t == TensorProto.FLOAT for t in typed):
            converted[idx] = (ins, outs)
    half_name: dict[str, str] = {}  # fp32 tensor -> its fp16 twin
    produced_half: set[str] = set()
    for idx, (_ins, outs) in converted.items():
        for p in outs:
            produced_half.add(graph.node[idx].output[p])
    new_inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    graph_outputs = {o.name for o in graph.output}
    needs_fp32: set[str] = set(graph_outputs)
    for idx, node in enumerate(graph.node):
        ins = converted.get(idx, (set(), set()))[0]
        for p, t in enumerate(node.input):
            if t in produced_half and p not in ins:
                needs_fp32.add(t)
    for idx, node in enumerate(graph.node):
        if idx not in converted:
            nodes.append(node)
            continue
        ins, outs = converted[idx]
        for p in ins:
            t = node.input[p]
            if t in produced_half:
                node.input[p] = f"{t}__fp16"
            elif t in inits:
                if t not in half_name:
                    half_name[t] = f"{t}__fp16"
                    with np.errstate(over="ignore"):
                        arr = numpy_helper.to_array(inits[t]).astype(np.float16)
                    new_inits.append(numpy_helper.from_array(arr, half_name[t]))
                node.input[p] = half_name[t]
            else:
                if t not in half_name:
                    half_name[t] = f"{t}__fp16"
                    nodes.append(
                        helper.make_node(
                            "Cast", [t], [half_name[t]], name=f"{t}__to_fp16", to=TensorProto.FLOAT16
                        )
                    )
                node.input[p] = half_name[t]
        nodes.append(node)
        for p in outs:
            o = node.output[p]
            node.output[p] = f"{o}__fp16"
            if o in needs_fp32:
                nodes.append(
                    helper.make_node("Cast", [f"{o}__fp16"], [o], name=f"{o}__to_fp32", to=TensorProto.FLOAT)
                )
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    del graph.value_info[:]
