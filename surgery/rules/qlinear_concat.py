"""ONNX Runtime's ``QLinearConcat`` -> per-input lookup tables + ``Concat``, bit-exact.

``QLinearConcat(y_scale, y_zp, x1, s1, z1, x2, s2, z2, ...)`` requantizes each input to the output's
scale and zero point (ORT copies an input whose parameters equal the output's and requantizes the
others through a 256-entry table) and concatenates. The requantization is a pure function of
the 8-bit value, so each input becomes ``Gather(table_i, x_i - qmin)`` with ``table_i`` computed
by running the node in ONNX Runtime on all 256 values; the FP32 integer parts are concatenated
and cast to the output's 8-bit type once. Conditions: constant per-tensor scales and zero points;
ONNX Runtime available when fixing.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, const
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._qlinear import (
    all_values,
    data_dtype,
    run_node_once,
    scalar_params,
    table_index,
    zero_point_dtype,
)

ORT_DOMAIN = "com.microsoft"


def _plan(node: gs.Node, opset: int) -> dict | None:
    if len(node.inputs) < 5 or (len(node.inputs) - 2) % 3:
        return None
    out_dtype = zero_point_dtype(node, 1)
    if (
        out_dtype not in (np.dtype(np.uint8), np.dtype(np.int8))
        or scalar_params(node, 0, 1, out_dtype) is None
    ):
        return None
    dtypes, feeds = [], {}
    for k in range(2, len(node.inputs), 3):
        dtype = data_dtype(node.inputs[k]) or zero_point_dtype(node, k + 2)
        if (
            dtype not in (np.dtype(np.uint8), np.dtype(np.int8))
            or scalar_params(node, k + 1, k + 2, dtype) is None
        ):
            return None
        dtypes.append(dtype)
        feeds[k] = all_values(dtype)
    saved = node.attrs.get("axis")
    node.attrs["axis"] = 0  # the 1-D table run concatenates along axis 0
    try:
        result = run_node_once(node, opset, feeds, out_dtype)
    finally:
        node.attrs["axis"] = saved
    if result is None:
        return None
    tables = np.split(result.astype(np.float32), len(dtypes))
    return {"dtypes": dtypes, "tables": tables, "out_dtype": out_dtype}


@register_rule
class QLinearConcatToTables(Rule):
    name = "qlinear_concat"
    summary = "ORT QLinearConcat -> per-input Gather tables (ORT-computed) + Concat, bit-exact"
    order = 58
    rewrites = ("QLinearConcat",)

    def match(self, graph: gs.Graph) -> list[Match]:
        if graph.opset < 11:
            return []
        return [
            self._match([n], "QLinearConcat is an ONNX Runtime contrib op TensorRT does not know")
            for n in graph.nodes
            if n.op == "QLinearConcat" and n.domain == ORT_DOMAIN and _plan(n, graph.opset) is not None
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        plan = _plan(node, graph.opset)
        if plan is None:
            return False
        names = NameMaker(graph)
        base = node.name
        parts = []
        for n, k in enumerate(range(2, len(node.inputs), 3)):
            index = table_index(graph, names, node.inputs[k], plan["dtypes"][n], f"{base}_in{n}")
            idx = gs.Variable(names(f"{base}_in{n}_index"), dtype=np.int32)
            add_node(graph, names, "Cast", [index], [idx], {"to": 6}, base=f"{base}_in{n}_index")
            part = gs.Variable(names(f"{base}_in{n}_requantized"), dtype=np.float32)
            table = const(names, f"{base}_in{n}_table", plan["tables"][n])
            add_node(graph, names, "Gather", [table, idx], [part], {"axis": 0}, base=f"{base}_in{n}_lookup")
            parts.append(part)
        joined = gs.Variable(names(f"{base}_joined"), dtype=np.float32)
        add_node(graph, names, "Concat", parts, [joined], {"axis": int(node.attrs.get("axis", 0))}, base=base)
        out = node.outputs[0]
        node.outputs.clear()
        out.dtype = plan["out_dtype"]
        to = {np.dtype(np.uint8): 2, np.dtype(np.int8): 3}[plan["out_dtype"]]
        add_node(graph, names, "Cast", [joined], [out], {"to": to}, base=f"{base}_cast")
        return True
