"""ONNX Runtime's ``QLinearAveragePool`` / ``QLinearGlobalAveragePool`` -> FP32 ops, bit-exact.

``QLinearGlobalAveragePool`` (ORT: INT32 window sums, then one requantization with
``scale = x_scale / (y_scale * H*W)``, rounded half to even, zero point added after rounding):
``DequantizeLinear(x, 1, x_zp)`` -> ``ReduceSum`` over the spatial axes (integers: exact while
``H*W*255 < 2**24``) -> ``Mul(scale)`` -> ``QuantizeLinear(1, y_zp)``.

``QLinearAveragePool`` (ORT ``qlinear_pool.cc``: dequantize every value to FP32 as
``x_scale * (x - x_zp)``, add the window's values one by one in row-major order starting from
0.0, divide by the element count, then ``nearbyint(y / y_scale + y_zp)``, the zero point added
*before* rounding): ``DequantizeLinear(x, x_scale, x_zp)`` -> ``Pad`` with zeros -> one strided
``Slice`` per kernel position, summed by ``Add`` in the same row-major order (adding a padded 0.0
changes no sum) -> ``Div`` by the constant count map (``count_include_pad`` respected: ORT clips
windows to the image and divides by kernel size or by the clipped window) -> ``Div(y_scale)`` ->
``Add(y_zp)`` -> ``Round`` -> ``Clip`` -> ``Cast``. The order of the additions is ORT's, so the
FP32 sum is the same number, not just close to it.

Conditions: constant per-tensor scales and zero points; static spatial shape; for
``QLinearAveragePool`` 2D, NCHW (``channels_last=0``), explicit pads (no ``auto_pad``),
``ceil_mode=0``, no dilations.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, const
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._qlinear import (
    EXACT_LIMIT,
    data_dtype,
    dequantize_int,
    max_deviation,
    mul_const,
    quantize_int,
    requantize_float,
    scalar_params,
    zero_point_dtype,
)

ORT_DOMAIN = "com.microsoft"


def _static_shape(t: gs.Tensor) -> list[int] | None:
    shape = getattr(t, "shape", None)
    if shape is None or not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    return [int(d) for d in shape]


def _params(node: gs.Node):
    dtype = data_dtype(node.inputs[0]) or zero_point_dtype(node, 2)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.int8)):
        return None
    xq = scalar_params(node, 1, 2, dtype)
    yq = scalar_params(node, 3, 4, dtype)
    if xq is None or yq is None:
        return None
    return dtype, xq, yq


def _gap_plan(node: gs.Node) -> dict | None:
    p = _params(node)
    shape = _static_shape(node.inputs[0])
    if p is None or shape is None or len(shape) < 3:
        return None
    last = int(node.attrs.get("channels_last", 0))
    axes = list(range(1, len(shape) - 1)) if last else list(range(2, len(shape)))
    size = int(np.prod([shape[a] for a in axes]))
    dtype, (sx, zx), (sy, zy) = p
    if size * max_deviation(zx) >= EXACT_LIMIT:
        return None
    scale = np.float32(sx / np.float32(sy * np.float32(size)))
    return {"axes": axes, "zx": zx, "zy": zy, "scale": scale}


def _pool_plan(node: gs.Node) -> dict | None:
    p = _params(node)
    shape = _static_shape(node.inputs[0])
    kernel = list(node.attrs.get("kernel_shape", []))
    if p is None or shape is None or len(shape) != 4 or len(kernel) != 2:
        return None
    a = node.attrs
    if (
        int(a.get("channels_last", 0))
        or int(a.get("ceil_mode", 0))
        or a.get("auto_pad", "NOTSET")
        not in (
            "NOTSET",
            b"NOTSET",
        )
    ):
        return None
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        return None
    strides = list(a.get("strides", [1, 1]))
    pads = list(a.get("pads", [0, 0, 0, 0]))
    height, width = shape[2], shape[3]
    out_hw = [(shape[2 + i] + pads[i] + pads[i + 2] - kernel[i]) // strides[i] + 1 for i in range(2)]
    if min(out_hw) < 1:
        return None
    counts = np.zeros(out_hw, np.float32)
    for oh in range(out_hw[0]):
        for ow in range(out_hw[1]):
            hs, ws = oh * strides[0] - pads[0], ow * strides[1] - pads[1]
            he, we = min(hs + kernel[0], height), min(ws + kernel[1], width)
            hs, ws = max(hs, 0), max(ws, 0)
            inside = (he - hs) * (we - ws)
            counts[oh, ow] = kernel[0] * kernel[1] if int(a.get("count_include_pad", 0)) else inside
    # zero padding so that every (kernel position, output position) pair reads inside the array
    ends = [max(0, (out_hw[i] - 1) * strides[i] + kernel[i] - shape[2 + i] - pads[i]) for i in range(2)]
    dtype, xq, yq = p
    return {"dtype": dtype, "xq": xq, "yq": yq, "kernel": kernel, "strides": strides, "out": out_hw,
            "pads": [0, 0, pads[0], pads[1], 0, 0, ends[0], ends[1]], "counts": counts}  # fmt: skip


_PLANS = {"QLinearGlobalAveragePool": _gap_plan, "QLinearAveragePool": _pool_plan}


@register_rule
class QLinearPool(Rule):
    name = "qlinear_pool"
    summary = "ORT QLinearAveragePool/QLinearGlobalAveragePool -> FP32 sums in ORT's order, bit-exact"
    order = 58
    rewrites = tuple(_PLANS)

    def match(self, graph: gs.Graph) -> list[Match]:
        if graph.opset < 11:
            return []
        return [
            self._match([n], f"{n.op} is an ONNX Runtime contrib op TensorRT does not know")
            for n in graph.nodes
            if n.op in _PLANS and n.domain == ORT_DOMAIN and _PLANS[n.op](n) is not None
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        plan = _PLANS[node.op](node)
        if plan is None:
            return False
        names = NameMaker(graph)
        if node.op == "QLinearGlobalAveragePool":
            self._gap(graph, names, node, plan)
        else:
            self._pool(graph, names, node, plan)
        return True

    def _gap(self, graph: gs.Graph, names: NameMaker, node: gs.Node, plan: dict) -> None:
        base = node.name
        x_int = dequantize_int(graph, names, node.inputs[0], plan["zx"], f"{base}_x")
        total = gs.Variable(names(f"{base}_sum"), dtype=np.float32)
        axes = np.array(plan["axes"], np.int64)
        if graph.opset >= 13:
            add_node(graph, names, "ReduceSum", [x_int, const(names, f"{base}_axes", axes)], [total],
                     {"keepdims": 1}, base=f"{base}_sum")  # fmt: skip
        else:
            add_node(graph, names, "ReduceSum", [x_int], [total], {"axes": plan["axes"], "keepdims": 1},
                     base=f"{base}_sum")  # fmt: skip
        scaled = mul_const(graph, names, total, plan["scale"], base)
        out = node.outputs[0]
        node.outputs.clear()
        out.dtype = np.dtype(plan["zy"].dtype)
        quantize_int(graph, names, scaled, plan["zy"], out, f"{base}_y")

    def _pool(self, graph: gs.Graph, names: NameMaker, node: gs.Node, plan: dict) -> None:
        base = node.name
        (sx, zx), (sy, zy) = plan["xq"], plan["yq"]
        xd = gs.Variable(names(f"{base}_x_float"), dtype=np.float32)
        add_node(graph, names, "DequantizeLinear",
                 [node.inputs[0], const(names, f"{base}_x_scale", sx), const(names, f"{base}_x_zp", zx)],
                 [xd], base=f"{base}_x_dq")  # fmt: skip
        src = xd
        if any(plan["pads"]):
            src = gs.Variable(names(f"{base}_padded"), dtype=np.float32)
            add_node(graph, names, "Pad", [xd, const(names, f"{base}_pads", np.array(plan["pads"], np.int64))],
                     [src], {"mode": "constant"}, base=f"{base}_pad")  # fmt: skip
        (kh, kw), (sh, sw), (oh, ow) = plan["kernel"], plan["strides"], plan["out"]
        acc = None
        for i in range(kh):
            for j in range(kw):
                part = gs.Variable(names(f"{base}_win_{i}_{j}"), dtype=np.float32)
                bounds = [
                    const(names, f"{base}_starts", np.array([i, j], np.int64)),
                    const(
                        names,
                        f"{base}_ends",
                        np.array([i + sh * (oh - 1) + 1, j + sw * (ow - 1) + 1], np.int64),
                    ),
                    const(names, f"{base}_axes", np.array([2, 3], np.int64)),
                    const(names, f"{base}_steps", np.array([sh, sw], np.int64)),
                ]
                add_node(graph, names, "Slice", [src, *bounds], [part], base=f"{base}_win")
                if acc is None:
                    acc = part
                    continue
                total = gs.Variable(names(f"{base}_acc"), dtype=np.float32)
                add_node(graph, names, "Add", [acc, part], [total], base=f"{base}_acc")
                acc = total
        avg = gs.Variable(names(f"{base}_avg"), dtype=np.float32)
        add_node(graph, names, "Div", [acc, const(names, f"{base}_count", plan["counts"][None, None])], [avg],
                 base=f"{base}_avg")  # fmt: skip
        v = gs.Variable(names(f"{base}_over_scale"), dtype=np.float32)
        add_node(graph, names, "Div", [avg, const(names, f"{base}_y_scale", sy)], [v], base=f"{base}_y_div")
        out = node.outputs[0]
        node.outputs.clear()
        requantize_float(graph, names, v, out, plan["dtype"], f"{base}_y", zp_before_round=float(zy))
