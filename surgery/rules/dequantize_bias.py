"""Replace quantized biases (``DequantizeLinear`` of a constant, optionally after a
``QuantizeLinear`` of a constant) by the float constant they evaluate to.

TensorRT's explicit quantization takes INT8/FP8 weights through Q/DQ but not INT32 biases:
``DequantizeLinear`` accepts INT8/FP8/FP4/INT4 inputs only. The bias value is computed here exactly
as ONNX Runtime does: ``q = saturate(round_half_even(x / scale) + zero_point)`` and
``y = float32(q - zero_point) * scale``, in float32, per tensor or per ``axis``.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, constant_value, input_at, producer, set_io
from trtq.surgery.rule import Match, Rule, register_rule

_BIAS_USERS = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}


def _axis_shape(scale: np.ndarray, rank: int, axis: int) -> np.ndarray:
    if scale.ndim == 0 or scale.size == 1:
        return scale.reshape(())
    shape = [1] * rank
    shape[axis % rank] = scale.size
    return scale.reshape(shape)


def dequantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    scale = _axis_shape(scale.astype(np.float32), x.ndim, axis)
    zpv = np.zeros((), np.int64) if zp is None else _axis_shape(zp.astype(np.int64), x.ndim, axis)
    return ((x.astype(np.int64) - zpv).astype(np.float32) * scale).astype(np.float32)


def quantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    dtype = np.uint8 if zp is None else zp.dtype
    info = np.iinfo(dtype)
    s = _axis_shape(scale.astype(np.float32), x.ndim, axis)
    z = np.zeros((), np.int64) if zp is None else _axis_shape(zp.astype(np.int64), x.ndim, axis)
    q = np.rint(x.astype(np.float32) / s).astype(np.int64) + z
    return np.clip(q, info.min, info.max).astype(dtype)


def _feeds_bias(tensor: gs.Tensor) -> bool:
    for user in tensor.outputs:
        idx = _BIAS_USERS.get(user.op)
        if idx is not None and len(user.inputs) > idx and user.inputs[idx] is tensor:
            return True
        if user.op == "Add":
            return True
    return False


def _bias_value(dq: gs.Node) -> tuple[np.ndarray, list[gs.Node]] | None:
    """The float value of ``dq``'s output and the Q/DQ nodes it replaces, or None."""
    x, scale, zp = input_at(dq, 0), input_at(dq, 1), input_at(dq, 2)
    s = constant_value(scale)
    z = constant_value(zp) if zp is not None else None
    if s is None or (zp is not None and z is None):
        return None
    axis = int(dq.attrs.get("axis", 1))
    xv = constant_value(x)
    if xv is not None:
        if xv.dtype != np.int32:
            return None  # INT8 weights stay quantized: that is what TensorRT wants
        return dequantize(xv, s, z, axis), [dq]
    q = producer(x) if x is not None else None
    if q is None or q.op != "QuantizeLinear" or len(x.outputs) != 1:
        return None
    fv = constant_value(input_at(q, 0))
    qs = constant_value(input_at(q, 1))
    qz = constant_value(input_at(q, 2)) if input_at(q, 2) is not None else None
    if fv is None or qs is None or (qz is None and input_at(q, 2) is not None):
        return None
    if fv.ndim > 1:
        return None  # not a bias
    qv = quantize(fv, qs, qz, int(q.attrs.get("axis", 1)))
    return dequantize(qv, s, z, axis), [dq, q]


@register_rule
class DequantizeBias(Rule):
    name = "dequantize_bias"
    summary = "Q/DQ on biases -> the float bias constant they evaluate to"
    order = 40
    rewrites = ("DequantizeLinear",)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "DequantizeLinear" or not node.outputs or node.outputs[0] in graph.outputs:
                continue
            if not _feeds_bias(node.outputs[0]):
                continue
            found = _bias_value(node)
            if found is not None:
                out.append(
                    self._match(found[1], "quantized bias: TensorRT takes biases in float, not through Q/DQ")
                )
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        dq = found[0]
        value = _bias_value(dq)
        if value is None:
            return False
        out = dq.outputs[0]
        if out in graph.outputs:
            return False
        # gs.Constant, not const(), which makes 0-d 1-d; np.asarray, since a 0-d bias computes to a
        # numpy scalar, which gs.Constant refuses (seen on ORT's QDQ models: Add of a quantized 3.0)
        bias = gs.Constant(NameMaker(graph)(f"{out.name}_value"), np.asarray(value[0]))
        for user in list(out.outputs):
            set_io(user.inputs, [bias if t is out else t for t in user.inputs])
        dq.outputs.clear()
        return True
