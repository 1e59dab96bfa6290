"""Shared pieces of the QOperator rewrites (QLinearConv, QLinearMatMul, ORT's QLinear* contrib ops).

Conventions. A quantized tensor ``q`` with scale ``s`` and zero point ``z`` stands for
``(q - z) * s``. ONNX Runtime's QLinear kernels accumulate ``(q - z)`` products in INT32 and
*requantize* once: ``y = saturate(round_half_even(float32(acc) * M) + z_y)`` with
``M = float32(float32(s_x * s_w) / s_y)`` (``qlinearconv.cc``/``qlinearmatmul.cc``: "output_scales =
x_scale * w_scale / y_scale"). A Q/DQ form with the real scales (DQ(x) * DQ(w) summed in float, then
``round(v / s_y)``) rounds differently at some values, so the rewrites here use the *integer* Q/DQ
form instead, which is exact:

    DequantizeLinear(x, scale=1, z_x)          -> x - z_x, an integer held in FP32
    float op on integers (weights w - z_w)      -> float32(acc): exact while every partial sum
                                                   stays below 2**24 (checked from the weights)
    Mul(M)                                      -> the same float32 product ONNX Runtime forms
    QuantizeLinear(scale=1, z_y)                -> round half to even, + z_y, saturate

A float32 sum of integers is exact whatever the order while all partial sums are below 2**24 in
magnitude; :func:`accumulator_bound` bounds them by ``max|x - z_x| * sum|w - z_w| + |bias|``.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, constant_value, input_at

EXACT_LIMIT = 2**24  # float32 represents every integer of smaller magnitude


def const0(names: NameMaker, base: str, value) -> gs.Constant:
    """A new initializer keeping ``value``'s shape (0-d stays 0-d, unlike ``graph_util.const``)."""
    return gs.Constant(names(base), np.array(value))


def qrange(dtype) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def scalar_params(node: gs.Node, scale_idx: int, zp_idx: int, default=np.uint8):
    """``(scale, zero_point)`` as numpy scalars when both are constant per-tensor values, else None.

    An omitted zero point is 0 of ``default`` type (the data input's type decides for QLinear ops).
    """
    s = constant_value(input_at(node, scale_idx))
    zt = input_at(node, zp_idx)
    z = np.zeros((), default) if zt is None else constant_value(zt)
    if s is None or z is None or s.size != 1 or z.size != 1:
        return None
    return np.float32(s.reshape(())), z.reshape(())


def zero_point_dtype(node: gs.Node, index: int):
    """The dtype of a constant zero point input (the 8-bit type of the data it describes), or None."""
    value = constant_value(input_at(node, index))
    return None if value is None else np.dtype(value.dtype)


def data_dtype(t: gs.Tensor):
    dtype = getattr(t, "dtype", None)
    try:
        return np.dtype(dtype) if dtype is not None else None
    except TypeError:
        return None


def dequantize_int(graph: gs.Graph, names: NameMaker, q: gs.Tensor, zp: np.ndarray, base: str) -> gs.Tensor:
    """``DequantizeLinear(q, 1.0, zp)``: the integer ``q - zp`` as FP32."""
    out = gs.Variable(names(f"{base}_int"), dtype=np.float32)
    add_node(
        graph,
        names,
        "DequantizeLinear",
        [q, const0(names, f"{base}_one", np.float32(1.0)), const0(names, f"{base}_zp", zp)],
        [out],
        base=f"{base}_dq",
    )
    return out


def quantize_int(
    graph: gs.Graph, names: NameMaker, v: gs.Tensor, zp: np.ndarray, out: gs.Tensor, base: str
) -> None:
    """``QuantizeLinear(v, 1.0, zp) -> out``: round half to even, add ``zp``, saturate."""
    add_node(
        graph,
        names,
        "QuantizeLinear",
        [v, const0(names, f"{base}_one", np.float32(1.0)), const0(names, f"{base}_zp", zp)],
        [out],
        base=f"{base}_q",
    )


def mul_const(graph: gs.Graph, names: NameMaker, v: gs.Tensor, value: np.ndarray, base: str) -> gs.Tensor:
    out = gs.Variable(names(f"{base}_scaled"), dtype=np.float32)
    add_node(graph, names, "Mul", [v, const0(names, f"{base}_multiplier", value)], [out], base=f"{base}_mul")
    return out


def output_multiplier(s_x: np.float32, s_w: np.ndarray, s_y: np.float32) -> np.ndarray:
    """``float32(float32(s_x * s_w) / s_y)`` elementwise, as ONNX Runtime computes it."""
    s_w = np.asarray(s_w, np.float32)
    return ((np.float32(s_x) * s_w).astype(np.float32) / np.float32(s_y)).astype(np.float32)


def max_deviation(zp: np.ndarray) -> int:
    """The largest ``|q - zp|`` over the range of ``zp``'s 8-bit type."""
    lo, hi = qrange(zp.dtype)
    z = int(zp)
    return max(z - lo, hi - z)


def accumulator_bound(w_int: np.ndarray, x_dev: int, bias: np.ndarray | None, axis: int = 0) -> float:
    """Largest possible ``|partial sum|`` of a dot product along every axis but ``axis`` of ``w_int``."""
    w = np.abs(np.moveaxis(w_int.astype(np.float64), axis, 0)).reshape(w_int.shape[axis], -1).sum(axis=1)
    total = w * x_dev + (0 if bias is None else np.abs(bias.astype(np.float64)))
    return float(total.max()) if total.size else 0.0


def weight_int(w: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    """``w - zp`` as exact FP32 integers, ``zp`` per-tensor or along ``axis``."""
    z = zp.astype(np.int64)
    if z.size > 1:
        shape = [1] * w.ndim
        shape[axis] = z.size
        z = z.reshape(shape)
    return (w.astype(np.int64) - z).astype(np.float32)


def weights_input(
    graph: gs.Graph, names: NameMaker, w_t: gs.Tensor, w: np.ndarray, zp: np.ndarray, axis: int, base: str
) -> gs.Tensor:
    """INT8 weights with zero point 0 stay INT8 behind ``DequantizeLinear(w, 1.0)`` (TensorRT's
    explicit-quantization form); other weights become the FP32 constant ``w - zp``."""
    if w.dtype == np.int8 and not np.any(zp):
        out = gs.Variable(names(f"{base}_int"), dtype=np.float32)
        add_node(
            graph,
            names,
            "DequantizeLinear",
            [w_t, const0(names, f"{base}_one", np.float32(1.0))],
            [out],
            base=f"{base}_dq",
        )
        return out
    return const0(names, f"{base}_int", weight_int(w, zp, axis))


def run_node_once(node: gs.Node, opset: int, feeds: dict[int, np.ndarray], out_dtype) -> np.ndarray | None:
    """Run ``node`` alone in ONNX Runtime: inputs at ``feeds`` indices get those values, the other
    inputs their constant values. Returns output 0, or None when ORT cannot run it.

    Used to build the lookup tables of elementwise 8-bit ops: their outputs are a pure function of
    the input values (checked for position independence in the tests), so a table of ORT's own
    results is exact by construction.
    """
    key = _node_key(node, opset, feeds, out_dtype)
    if key is not None and key in _TABLES:
        return _TABLES[key]
    result = _run_node(node, opset, feeds, out_dtype)
    if key is not None:
        _TABLES[key] = result
    return result


# Tables already computed, by node signature: check and every fix pass match the same nodes again.
_TABLES: dict[tuple, np.ndarray | None] = {}


def _node_key(node: gs.Node, opset: int, feeds: dict[int, np.ndarray], out_dtype) -> tuple | None:
    parts: list = [
        node.op,
        node.domain or "",
        opset,
        str(np.dtype(out_dtype)),
        repr(sorted(node.attrs.items())),
    ]
    for i, t in enumerate(node.inputs):
        if i in feeds:
            parts.append((i, "feed", feeds[i].dtype.str, feeds[i].shape))
            continue
        value = None if t is None or (isinstance(t, gs.Variable) and not t.name) else constant_value(t)
        if value is None and not (t is None or (isinstance(t, gs.Variable) and not t.name)):
            return None
        parts.append((i, None if value is None else (value.dtype.str, value.shape, value.tobytes())))
    return tuple(parts)


def _run_node(node: gs.Node, opset: int, feeds: dict[int, np.ndarray], out_dtype) -> np.ndarray | None:
    import onnx
    from onnx import helper

    inputs, inits, names = [], [], []
    for i, t in enumerate(node.inputs):
        name = f"in{i}"
        if i in feeds:
            value = feeds[i]
            inputs.append(
                helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
            )
        elif t is None or (isinstance(t, gs.Variable) and t.name == "" and not t.inputs):
            name = ""
        else:
            value = constant_value(t)
            if value is None:
                return None
            inits.append(onnx.numpy_helper.from_array(np.asarray(value), name))
        names.append(name)
    attrs = {k: v for k, v in node.attrs.items()}
    proto = helper.make_node(node.op, names, ["out"], domain=node.domain or "", **attrs)
    out = helper.make_tensor_value_info("out", helper.np_dtype_to_tensor_dtype(np.dtype(out_dtype)), None)
    opsets = [helper.make_opsetid("", opset)]
    if node.domain:
        opsets.append(helper.make_opsetid(node.domain, 1))
    model = helper.make_model(helper.make_graph([proto], "table", inputs, [out], inits), opset_imports=opsets)
    model.ir_version = 8
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return sess.run(None, {f"in{i}": v for i, v in feeds.items()})[0]
    except Exception:  # no ORT, or ORT cannot run this node: no table, no rewrite
        return None


def all_values(dtype) -> np.ndarray:
    lo, hi = qrange(dtype)
    return np.arange(lo, hi + 1).astype(dtype)


def table_index(graph: gs.Graph, names: NameMaker, q: gs.Tensor, dtype, base: str) -> gs.Tensor:
    """``q - qmin`` (0..255) as FP32, through ``DequantizeLinear(q, 1, qmin)``."""
    lo, _ = qrange(dtype)
    return dequantize_int(graph, names, q, np.array(lo, dtype), base)


def gather_table(
    graph: gs.Graph, names: NameMaker, index_f: gs.Tensor, table: np.ndarray, out: gs.Tensor, dtype, base: str
) -> None:
    """``out = Cast(Gather(table, int32(index_f)))`` with ``table`` the 8-bit results as FP32."""
    out.dtype = np.dtype(dtype)
    idx = gs.Variable(names(f"{base}_index"), dtype=np.int32)
    add_node(graph, names, "Cast", [index_f], [idx], {"to": 6}, base=f"{base}_index")
    vals = gs.Variable(names(f"{base}_lookup"), dtype=np.float32)
    add_node(
        graph,
        names,
        "Gather",
        [const0(names, f"{base}_table", table.astype(np.float32)), idx],
        [vals],
        {"axis": 0},
        base=f"{base}_lookup",
    )
    add_node(graph, names, "Cast", [vals], [out], {"to": _ONNX_TYPE[np.dtype(dtype)]}, base=f"{base}_cast")


_ONNX_TYPE = {np.dtype(np.uint8): 2, np.dtype(np.int8): 3}


def requantize_float(
    graph: gs.Graph,
    names: NameMaker,
    v: gs.Tensor,
    out: gs.Tensor,
    dtype,
    base: str,
    zp_before_round: float | None = None,
) -> None:
    """``out = Cast(Clip(Round(v [+ zp]), qmin, qmax))``: ORT's pool/elementwise requantization, with
    the zero point added in FP32 *before* rounding when ``zp_before_round`` is given."""
    dtype = np.dtype(dtype)
    out.dtype = dtype
    lo, hi = qrange(dtype)
    if zp_before_round is not None and zp_before_round != 0:
        shifted = gs.Variable(names(f"{base}_plus_zp"), dtype=np.float32)
        add_node(graph, names, "Add", [v, const0(names, f"{base}_zp", np.float32(zp_before_round))], [shifted],
                 base=f"{base}_add_zp")  # fmt: skip
        v = shifted
    r = gs.Variable(names(f"{base}_round"), dtype=np.float32)
    add_node(graph, names, "Round", [v], [r], base=f"{base}_round")
    c = gs.Variable(names(f"{base}_saturate"), dtype=np.float32)
    add_node(graph, names, "Clip", [r, const0(names, f"{base}_min", np.float32(lo)), const0(names, f"{base}_max", np.float32(hi))],
             [c], base=f"{base}_saturate")  # fmt: skip
    add_node(graph, names, "Cast", [c], [out], {"to": _ONNX_TYPE[dtype]}, base=f"{base}_cast")
