"""Compute in FLOAT what the model computes in DOUBLE.

TensorRT casts DOUBLE down to FLOAT anyway (clamping at ±FLT_MAX); doing it in the model makes
that explicit and lets ONNX Runtime prove the difference is within tolerance. Inside the graph:
``Cast(to=DOUBLE)`` becomes ``Cast(to=FLOAT)``, DOUBLE initializers and ``Constant`` values become
float32. A DOUBLE graph input is cast to FLOAT once at the start and a DOUBLE graph output is
cast back at the end, so the model's interface does not change.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, find_node, set_io
from trtq.surgery.rule import Match, Rule, register_rule

_DOUBLE = onnx.TensorProto.DOUBLE
_FLOAT = onnx.TensorProto.FLOAT


def _is_double(t: gs.Tensor) -> bool:
    dtype = getattr(t, "dtype", None)
    try:
        return dtype is not None and np.dtype(dtype) == np.float64
    except TypeError:
        return False


def _node_is_double(node: gs.Node) -> bool:
    if node.op == "Cast" and node.attrs.get("to") == _DOUBLE:
        return True
    if node.op == "Constant":
        value = node.attrs.get("value")
        return isinstance(value, gs.Constant) and value.values.dtype == np.float64
    if node.op == "ConstantOfShape":
        value = node.attrs.get("value")
        if isinstance(value, gs.Constant) and value.values.dtype == np.float64:
            return True
    return any(_is_double(t) for t in list(node.inputs) + list(node.outputs))


def _boundary_cast(node: gs.Node, graph: gs.Graph) -> bool:
    """A Cast that only converts a graph input or output: the interface, left as it is."""
    if node.op != "Cast":
        return False
    from_double_input = any(t in graph.inputs and _is_double(t) for t in node.inputs)
    to_double_output = all(t in graph.outputs and _is_double(t) for t in node.outputs)
    return from_double_input or to_double_output


@register_rule
class DoubleToFloat(Rule):
    name = "double_to_float"
    summary = "DOUBLE tensors, casts and constants -> FLOAT (graph interface kept)"
    order = 30
    rewrites = ("Cast",)

    def match(self, graph: gs.Graph) -> list[Match]:
        return [self._match([n], "computes in DOUBLE, which TensorRT casts down to FLOAT")
                for n in graph.nodes if _node_is_double(n) and not _boundary_cast(n, graph)]  # fmt: skip

    def apply(self, graph: gs.Graph, match: Match) -> bool:
        # One apply converts the whole graph; the pass's other matches find their node done.
        anchor = find_node(graph, match.nodes[0])
        if anchor is None or not _node_is_double(anchor) or _boundary_cast(anchor, graph):
            return True
        names = NameMaker(graph)
        for inp in list(graph.inputs):
            if _is_double(inp) and any(_node_is_double(c) for c in inp.outputs):
                cast_out = gs.Variable(names(f"{inp.name}_float"), dtype=np.float32, shape=inp.shape)
                for consumer in list(inp.outputs):
                    set_io(consumer.inputs, [cast_out if t is inp else t for t in consumer.inputs])
                add_node(graph, names, "Cast", [inp], [cast_out], {"to": _FLOAT})
        for out in list(graph.outputs):
            if (
                _is_double(out)
                and out.inputs
                and not (out.inputs[0].op == "Cast" and out.inputs[0].attrs.get("to") == _DOUBLE)
            ):
                inner = gs.Variable(names(f"{out.name}_float"), dtype=np.float32, shape=out.shape)
                producer = out.inputs[0]
                set_io(producer.outputs, [inner if t is out else t for t in producer.outputs])
                add_node(graph, names, "Cast", [inner], [out], {"to": _DOUBLE})
        changed = False
        floats: dict[int, gs.Constant] = {}  # id(DOUBLE initializer) -> its FLOAT copy, shared by all users
        for node in list(graph.nodes):
            if node.op == "Cast" and node.attrs.get("to") == _DOUBLE and not _boundary_cast(node, graph):
                node.attrs["to"] = _FLOAT
                changed = True
            elif node.op in ("Constant", "ConstantOfShape"):
                value = node.attrs.get("value")
                if isinstance(value, gs.Constant) and value.values.dtype == np.float64:
                    node.attrs["value"] = gs.Constant(value.name, value.values.astype(np.float32))
                    changed = True
            for i, t in enumerate(node.inputs):
                if isinstance(t, gs.Constant) and t.values.dtype == np.float64:
                    if id(t) not in floats:  # not const(): it would make a 0-d value 1-d
                        floats[id(t)] = gs.Constant(names(t.name + "_float"), t.values.astype(np.float32))
                    node.inputs[i] = floats[id(t)]
                    changed = True
            for t in node.outputs:
                if _is_double(t) and t not in graph.outputs:
                    t.dtype = np.float32
                    changed = True
        return changed or not _node_is_double(anchor) or _boundary_cast(anchor, graph)
