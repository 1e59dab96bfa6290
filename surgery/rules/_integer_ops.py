"""Shared arithmetic for rewriting integer ops (ConvInteger, MatMulInteger) into float ops.

A float32 sum of integer products is exact while every partial sum stays below 2**24: products
of two 8-bit values after zero-point subtraction are at most 255*255 = 65025 in magnitude, so a dot
product of ``K`` terms is exact when ``K * 65025 < 2**24``, i.e. ``K <= 258``. Rules only match
when the reduction length is known and within this bound, which makes the rewrite exact; the
float result is rounded (a no-op when exact) and cast to INT32.

Beyond 258 terms a constant weight operand still proves exactness: every partial sum is at most
``255 * sum_k |w_k - w_zp|`` per output, which :func:`bounded_by_weights` checks against 2**24.
The zero point of the data operand may be computed at run time (``DynamicQuantizeLinear`` makes it
for ``quantize_dynamic`` models): :func:`to_float_minus_tensor`.

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


def is_scalar_tensor(t: gs.Tensor | None) -> bool:
    """A tensor known to hold one value (shape () or [1])."""
    shape = getattr(t, "shape", None)
    if t is None or shape is None or not all(isinstance(d, int) for d in shape):
        return False
    return int(np.prod(shape)) == 1


def bounded_by_weights(w: np.ndarray, zp: np.ndarray, out_axis: int) -> bool:
    """``255 * sum |w - zp|`` over every axis but ``out_axis`` stays below 2**24 for each output."""
    z = zp.astype(np.float64)
    if z.size > 1:
        shape = [1] * w.ndim
        shape[out_axis] = z.size
        z = z.reshape(shape)
    dev = np.abs(w.astype(np.float64) - z)
    per_output = np.moveaxis(dev, out_axis, 0).reshape(w.shape[out_axis], -1).sum(axis=1)
    return float(per_output.max(initial=0.0)) * 255 < 2**24


def to_float_minus_tensor(graph: gs.Graph, names: NameMaker, t: gs.Tensor, zp: gs.Tensor) -> gs.Tensor:
    """``float32(t) - float32(zp)`` for a zero point computed at run time (integers: exact)."""
    f = gs.Variable(names(f"{t.name}_float"), dtype=np.float32)
    add_node(graph, names, "Cast", [t], [f], {"to": 1})
    z = gs.Variable(names(f"{zp.name}_float"), dtype=np.float32)
    add_node(graph, names, "Cast", [zp], [z], {"to": 1})
    shifted = gs.Variable(names(f"{t.name}_shifted"), dtype=np.float32)
    add_node(graph, names, "Sub", [f, z], [shifted])
    return shifted
