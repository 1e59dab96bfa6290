"""ONNX Runtime's elementwise QOperator contrib ops -> a lookup table (``Gather``), bit-exact.

``com.microsoft`` ``QLinearSigmoid``, ``QLinearLeakyRelu`` (one 8-bit input: 256 entries),
``QLinearAdd`` and ``QLinearMul`` (two: 65,536 entries, 256 KiB of FP32 per node) are pure functions of their 8-bit
input values once the scales and zero points are constant. ORT itself computes them through
tables (Sigmoid, LeakyRelu) or a fused multiply-add kernel whose rounding no chain of FP32 ONNX ops
reproduces at every tie (measured: ``round(a*ra + b*rb + zc)`` misses a handful of the 65,536
pairs). So the table is computed by running the node itself in ONNX Runtime on every input value,
and the rewrite is ``index = DequantizeLinear(q, 1, qmin)`` (``q - qmin`` in 0..255, for two
inputs ``ia * 256 + ib``, broadcasting as the op does) -> ``Cast(INT32)`` -> ``Gather(table)`` ->
``Cast`` to the output's 8-bit type. Exact by construction: the output equals ORT's for every
input. TensorRT runs it as a Gather. Conditions: scales and zero points constant per-tensor
values; ONNX Runtime available when fixing; opset >= 11 (the index Q/DQ and casts).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, const
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._qlinear import (
    all_values,
    data_dtype,
    gather_table,
    run_node_once,
    scalar_params,
    table_index,
    zero_point_dtype,
)

ORT_DOMAIN = "com.microsoft"
# op -> (data input indices, index of the output zero point)
_OPS = {
    "QLinearSigmoid": ((0,), 4),
    "QLinearLeakyRelu": ((0,), 4),
    "QLinearAdd": ((0, 3), 7),
    "QLinearMul": ((0, 3), 7),
}


def _plan(node: gs.Node, opset: int) -> dict | None:
    data, out_zp = _OPS[node.op]
    dtypes = []
    for i in data:
        dtype = data_dtype(node.inputs[i]) or zero_point_dtype(node, i + 2)
        if (
            dtype not in (np.dtype(np.uint8), np.dtype(np.int8))
            or scalar_params(node, i + 1, i + 2, dtype) is None
        ):
            return None
        dtypes.append(dtype)
    y = scalar_params(node, out_zp - 1, out_zp, dtypes[0])
    if y is None:
        return None
    if len(data) == 1:
        feeds = {0: all_values(dtypes[0])}
    else:
        a, b = np.meshgrid(all_values(dtypes[0]), all_values(dtypes[1]), indexing="ij")
        feeds = {0: a.reshape(-1), 3: b.reshape(-1)}
    table = run_node_once(node, opset, feeds, y[1].dtype)
    if table is None:
        return None
    return {"dtypes": dtypes, "out_dtype": np.dtype(y[1].dtype), "table": table.astype(np.float32)}


@register_rule
class QLinearLookup(Rule):
    name = "qlinear_lookup"
    summary = "ORT QLinearSigmoid/LeakyRelu/Add/Mul -> Gather from a table ORT computes, bit-exact"
    order = 57
    rewrites = tuple(_OPS)

    def match(self, graph: gs.Graph) -> list[Match]:
        if graph.opset < 11:
            return []
        out = []
        for node in graph.nodes:
            if node.op in _OPS and node.domain == ORT_DOMAIN and _plan(node, graph.opset) is not None:
                out.append(
                    self._match([node], f"{node.op} is an ONNX Runtime contrib op TensorRT does not know")
                )
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        plan = _plan(node, graph.opset)
        if plan is None:
            return False
        names = NameMaker(graph)
        base = node.name
        data, _ = _OPS[node.op]
        index = table_index(graph, names, node.inputs[data[0]], plan["dtypes"][0], f"{base}_a")
        if len(data) == 2:
            scaled = gs.Variable(names(f"{base}_a_row"), dtype=np.float32)
            add_node(graph, names, "Mul", [index, const(names, f"{base}_row", np.float32(256))], [scaled])
            b_index = table_index(graph, names, node.inputs[data[1]], plan["dtypes"][1], f"{base}_b")
            index = gs.Variable(names(f"{base}_pair"), dtype=np.float32)
            add_node(graph, names, "Add", [scaled, b_index], [index], base=f"{base}_pair")
        out = node.outputs[0]
        node.outputs.clear()
        gather_table(graph, names, index, plan["table"], out, plan["out_dtype"], base)
        return True
