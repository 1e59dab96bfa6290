"""ONNX Runtime's ``QLinearSoftmax`` -> FP32 ops reproducing its kernel, bit-exact.

ORT (``contrib_ops/cpu/quantization/qlinear_softmax.cc``) builds a 256-entry FP32 table
``e[i] = float(exp((i - 255 + shift) * x_scale))`` with
``shift = max(0, log(FLT_MAX / D) - 5) / x_scale`` (double precision, ``D`` the reduced length),
then per row: ``m = max(x)``, ``sum = e[x_0 - m + 255] + e[x_1 - m + 255] + ...`` in FP32 and in
that order, ``y = saturate(nearbyint(e[x_j - m + 255] * floor(1 / y_scale) / sum) + y_zp)`` (seen
in onnxruntime 1.32: a one-hot INT8 row with ``y_zp = -128``, ``y_scale = 1/256`` gives 127, not
128 wrapped). The table is computed here with the same C library ``exp``/``log``
(Python's ``math``) that ORT calls; the row sum is a chain of ``Add`` over the row's elements in
ORT's order, so it is the same FP32 number.

Rewrite: ``DequantizeLinear(x, 1, 0)`` -> ``ReduceMax`` -> index ``x - m + 255`` -> ``Gather(e)``
-> sequential ``Add`` of the row's ``Slice``s -> ``Mul(floor(1/y_scale))`` -> ``Div(sum)`` ->
``Round`` -> ``Add(y_zp)`` -> ``Clip`` -> ``Cast``. Conditions: softmax over the last axis
(``axis = rank - 1``), static row length ``D <= 64`` (one Add per element), constant per-tensor
scales and zero points.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._qlinear import const0, data_dtype, dequantize_int, scalar_params, zero_point_dtype

ORT_DOMAIN = "com.microsoft"
MAX_ROW = 64
_FLT_MAX = float(np.finfo(np.float32).max)


def exp_table(x_scale: np.float32, row: int) -> np.ndarray:
    """ORT's table, indexed by ``x - max(x) + 255``."""
    shift = math.log(float(np.float32(_FLT_MAX) / np.float32(row)))  # float / size_t in float, then log
    shift = max(0.0, shift - 5.0) / float(x_scale)
    return np.array([math.exp((i - 255 + shift) * float(x_scale)) for i in range(256)], np.float64).astype(
        np.float32
    )


def _known_last_dim(t: gs.Tensor) -> list | None:
    shape = getattr(t, "shape", None)
    return list(shape) if shape and isinstance(shape[-1], int) and shape[-1] > 0 else None


_ELEMENTWISE = frozenset({"DequantizeLinear", "QuantizeLinear", "Cast", "Identity", "Clip", "Round"})


def _downstream_last_dim(t: gs.Tensor, depth: int = 0) -> list | None:
    """The shape of ``t`` or of a tensor computed from it elementwise (e.g. the graph output after
    ``DequantizeLinear``), when its last dimension is static: same shape as ``t``."""
    if (shape := _known_last_dim(t)) is not None or depth > 4:
        return shape
    for user in t.outputs:
        if user.op in _ELEMENTWISE and user.inputs and user.inputs[0] is t and user.outputs:
            if (shape := _downstream_last_dim(user.outputs[0], depth + 1)) is not None:
                return shape
    return None


def _plan(node: gs.Node) -> dict | None:
    dtype = data_dtype(node.inputs[0]) or zero_point_dtype(node, 2)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.int8)):
        return None
    xq, yq = scalar_params(node, 1, 2, dtype), scalar_params(node, 3, 4, dtype)
    shape = _known_last_dim(node.inputs[0]) or _downstream_last_dim(node.outputs[0])
    if xq is None or yq is None or shape is None:
        return None
    rank, row = len(shape), int(shape[-1])
    axis = int(node.attrs.get("axis", 1 if int(node.attrs.get("opset", 13)) < 13 else -1))
    if axis % rank != rank - 1 or not 1 <= row <= MAX_ROW:
        return None
    return {"dtype": dtype, "row": row, "table": exp_table(xq[0], row),
            "y_mult": np.float32(math.floor(np.float32(1.0) / yq[0])), "zy": float(yq[1])}  # fmt: skip


@register_rule
class QLinearSoftmaxToFloat(Rule):
    name = "qlinear_softmax"
    summary = "ORT QLinearSoftmax -> its exp table, row sum in ORT's order and requantization, bit-exact"
    order = 58
    rewrites = ("QLinearSoftmax",)

    def match(self, graph: gs.Graph) -> list[Match]:
        return [
            self._match([n], "QLinearSoftmax is an ONNX Runtime contrib op TensorRT does not know")
            for n in graph.nodes
            if n.op == "QLinearSoftmax"
            and n.domain == ORT_DOMAIN
            and graph.opset >= 11
            and _plan(n) is not None
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        plan = _plan(node)
        if plan is None:
            return False
        names = NameMaker(graph)
        base = node.name

        def op(kind, inputs, attrs=None, tag="", dtype=np.float32):
            out = gs.Variable(names(f"{base}_{tag or kind.lower()}"), dtype=dtype)
            add_node(graph, names, kind, inputs, [out], attrs, base=f"{base}_{tag or kind.lower()}")
            return out

        def c(value, tag):
            return const0(names, f"{base}_{tag}", value)

        x = dequantize_int(graph, names, node.inputs[0], np.array(0, plan["dtype"]), f"{base}_x")
        if graph.opset >= 18:
            xmax = op("ReduceMax", [x, c(np.array([-1], np.int64), "axes")], {"keepdims": 1}, "row_max")
        else:
            xmax = op("ReduceMax", [x], {"axes": [-1], "keepdims": 1}, "row_max")
        index = op("Add", [op("Sub", [x, xmax], tag="minus_max"), c(np.float32(255), "top")], tag="index_f")
        idx = op("Cast", [index], {"to": 6}, "index", dtype=np.int32)
        vals = op("Gather", [c(plan["table"], "exp_table"), idx], {"axis": 0}, "exp")
        total = None
        for j in range(plan["row"]):
            part = op("Slice", [vals, c(np.array([j], np.int64), f"s{j}"), c(np.array([j + 1], np.int64), f"e{j}"),
                                c(np.array([-1], np.int64), "last")], tag=f"exp_{j}")  # fmt: skip
            total = part if total is None else op("Add", [total, part], tag="row_sum")
        ratio = op("Div", [op("Mul", [vals, c(plan["y_mult"], "y_mult")], tag="scaled"), total], tag="ratio")
        q = op("Add", [op("Round", [ratio], tag="rounded"), c(np.float32(plan["zy"]), "y_zp")], tag="q")
        out = node.outputs[0]
        node.outputs.clear()
        out.dtype = plan["dtype"]
        lo, hi = (0, 255) if plan["dtype"] == np.dtype(np.uint8) else (-128, 127)
        y = op("Clip", [q, c(np.float32(lo), "lo"), c(np.float32(hi), "hi")], tag="saturate")
        add_node(graph, names, "Cast", [y], [out], {"to": 2 if lo == 0 else 3}, base=f"{base}_cast")
        return True
