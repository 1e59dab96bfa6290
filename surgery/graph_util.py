"""Small helpers over onnx-graphsurgeon graphs shared by the rewrite rules."""

from __future__ import annotations

import itertools

import numpy as np
import onnx_graphsurgeon as gs

from trtq._core.onnx_model import RANDOM_OPS


def constant_value(tensor: gs.Tensor | None) -> np.ndarray | None:
    """The value of ``tensor`` when it is an initializer or the output of a ``Constant`` node."""
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        attrs = tensor.inputs[0].attrs
        if "value" in attrs and isinstance(attrs["value"], gs.Constant):
            return np.asarray(attrs["value"].values)
        for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
            if key in attrs:
                return np.asarray(attrs[key], dtype=dtype)
        for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
            if key in attrs:
                return np.asarray(list(attrs[key]), dtype=dtype)
    return None


def is_omitted(tensor: gs.Tensor | None) -> bool:
    """True for an absent optional input (graphsurgeon's empty Variable)."""
    return tensor is None or (isinstance(tensor, gs.Variable) and tensor.name == "" and not tensor.inputs)


def input_at(node: gs.Node, index: int) -> gs.Tensor | None:
    """Input ``index`` of ``node`` or ``None`` when absent or omitted."""
    if index >= len(node.inputs) or is_omitted(node.inputs[index]):
        return None
    return node.inputs[index]


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node that produces ``tensor`` (``None`` for graph inputs and initializers)."""
    return tensor.inputs[0] if tensor.inputs else None


def node_names(graph: gs.Graph) -> set[str]:
    return {n.name for n in graph.nodes}


def find_node(graph: gs.Graph, name: str) -> gs.Node | None:
    for node in graph.nodes:
        if node.name == name:
            return node
    return None


def nodes_present(graph: gs.Graph, names: tuple[str, ...]) -> list[gs.Node] | None:
    """The nodes called ``names`` in order, or ``None`` if any is gone (a stale match)."""
    by_name = {n.name: n for n in graph.nodes}
    found = [by_name.get(n) for n in names]
    return None if any(f is None for f in found) else found  # type: ignore[return-value]


class NameMaker:
    """Fresh tensor/node names that do not collide with anything in the graph."""

    def __init__(self, graph: gs.Graph) -> None:
        self.taken = set(graph.tensors().keys()) | node_names(graph)
        self.counter = itertools.count()

    def __call__(self, base: str) -> str:
        name = base
        while name in self.taken:
            name = f"{base}_{next(self.counter)}"
        self.taken.add(name)
        return name


def const(names: NameMaker, base: str, value: np.ndarray) -> gs.Constant:
    """A new initializer with a fresh name."""
    return gs.Constant(names(base), np.ascontiguousarray(value))


def add_node(
    graph: gs.Graph, names: NameMaker, op: str, inputs, outputs, attrs=None, base=None, domain=None
) -> gs.Node:
    node = gs.Node(
        op=op, name=names(base or op), attrs=attrs or {}, inputs=list(inputs), outputs=list(outputs)
    )
    if domain:
        node.domain = domain
    graph.nodes.append(node)
    return node


def is_random(node: gs.Node) -> bool:
    return node.op in RANDOM_OPS


def set_io(items, new: list) -> None:
    """Replace the contents of a node's ``inputs``/``outputs`` (graphsurgeon's synchronized
    lists do not support slice assignment)."""
    new = list(new)
    items.clear()
    items.extend(new)


def is_square(node: gs.Node) -> bool:
    """``node`` is ``Pow(x, 2)`` with a constant exponent of exactly 2."""
    if node.op != "Pow" or len(node.inputs) != 2:
        return False
    e = constant_value(node.inputs[1])
    return e is not None and e.size == 1 and float(e.reshape(-1)[0]) == 2.0
