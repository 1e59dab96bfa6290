"""What the checker knows about the tensors of one (sub)graph: types, shapes, constant values."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from trtq._core.onnx_model import RANDOM_OPS


@dataclass
class Scope:
    """Facts about tensors visible in a graph, including those of enclosing graphs.

    ``consts`` maps initializer and ``Constant`` outputs to their values (an *initializer* in
    operators.md's sense); ``resolvable`` also holds tensors computed only from constants, which
    TensorRT folds at build time.
    """

    opset: int
    types: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, list[int | None]] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    resolvable: set[str] = field(default_factory=set)
    io: set[str] = field(default_factory=set)  # names of the main graph's inputs and outputs

    def child(self, graph: onnx.GraphProto) -> Scope:
        """A scope for ``graph`` nested in this one (subgraph of If/Loop/Scan)."""
        sub = Scope(
            self.opset, dict(self.types), dict(self.shapes), dict(self.consts), set(self.resolvable), self.io
        )
        sub.learn(graph)
        return sub

    def learn(self, graph: onnx.GraphProto) -> None:
        """Record the value infos, initializers and constant subgraphs of ``graph``."""
        for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
            if vi.type.HasField("tensor_type"):
                tt = vi.type.tensor_type
                self.types[vi.name] = tt.elem_type
                if tt.HasField("shape"):
                    self.shapes[vi.name] = [
                        d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim
                    ]
        for init in graph.initializer:
            self.types[init.name] = init.data_type
            self.shapes[init.name] = list(init.dims)
            self.consts[init.name] = _to_array(init)
            self.resolvable.add(init.name)
        self.resolvable.add("")
        for node in graph.node:
            if node.op_type == "Constant":
                value = constant_node_value(node)
                if value is not None and node.output:
                    self.consts[node.output[0]] = value
                    self.resolvable.add(node.output[0])
            elif (
                node.op_type not in RANDOM_OPS
                and node.op_type not in ("Shape", "Size")
                and all(i in self.resolvable for i in node.input)
            ):
                self.resolvable.update(o for o in node.output if o)

    def is_initializer(self, name: str) -> bool:
        return name in self.consts

    def is_resolvable(self, name: str) -> bool:
        return name in self.resolvable


def _to_array(tensor: onnx.TensorProto) -> np.ndarray:
    try:
        return numpy_helper.to_array(tensor)
    except Exception:  # external data not loaded, unusual types: the value is unknown, not an error
        return np.empty((0,))


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value a ``Constant`` node produces, or ``None`` for sparse/string forms we do not read."""
    for attr in node.attribute:
        if attr.name == "value":
            return _to_array(attr.t)
        if attr.name == "value_float":
            return np.asarray(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.asarray(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.asarray(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.asarray(list(attr.ints), dtype=np.int64)
    return None
