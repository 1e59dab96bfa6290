"""Shared arithmetic for rewriting integer ops (ConvInteger, MatMulInteger) into float ops.

A float32 sum of integer products is exact while every partial sum stays below 2**24: products
of two 8-bit values after zero-point subtraction are at most 255*255 = 65025 in magnitude, so a dot
product of ``K`` terms is exact when ``K * 65025 < 2**24``, i.e. ``K <= 258``. Rules only match
when the reduction length is known and within this bound, which makes the rewrite exact; the
float result is rounded (a no-op when exact) and cast to INT32.

Caveat for TensorRT: with TF32 enabled (the default on Ampere and later) FP32 convolutions and
matmuls drop mantissa bits; build with TF32 off (``trtexec --noTF32``) to keep these exact.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, const, constant_value, input_at

EXACT_MAX_TERMS = (2**24 - 1) // (255 * 255)  # 258


def zero_point_value(node: gs.Node, index: int) -> np.ndarray | None:
    """The zero point's value (0 when omitted), or None if it is not a constant."""
    t = input_at(node, index)
    if t is None:
        return np.zeros((), np.float32)
    v = constant_value(t)
    return None if v is None else v.astype(np.float32)


def to_float_minus_zp(
    graph: gs.Graph, names: NameMaker, t: gs.Tensor, zp: np.ndarray, zp_shape=None
) -> gs.Tensor:
    """``float32(t) - zp``: folded into a constant when ``t`` is constant, nodes otherwise."""
    zp_arr = zp if zp_shape is None else zp.reshape(zp_shape)
    value = constant_value(t)
    if value is not None:
        return const(names, f"{t.name}_float", (value.astype(np.float32) - zp_arr).astype(np.float32))
    f = gs.Variable(names(f"{t.name}_float"), dtype=np.float32)
    add_node(graph, names, "Cast", [t], [f], {"to": 1})
    if not np.any(zp_arr):
        return f
    shifted = gs.Variable(names(f"{t.name}_shifted"), dtype=np.float32)
    add_node(
        graph, names, "Sub", [f, const(names, f"{t.name}_zero_point", zp_arr.astype(np.float32))], [shifted]
    )
    return shifted


def round_cast_int32(graph: gs.Graph, names: NameMaker, x: gs.Tensor, out: gs.Tensor) -> None:
    r = gs.Variable(names(f"{out.name}_rounded"), dtype=np.float32)
    add_node(graph, names, "Round", [x], [r])
    add_node(graph, names, "Cast", [r], [out], {"to": 6})
