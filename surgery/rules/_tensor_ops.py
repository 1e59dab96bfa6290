"""Small builders shared by the rules that lower unsupported operators into plain tensor ops.

Every builder appends nodes to an onnx-graphsurgeon graph and returns the new output tensor(s).
Axes-taking ops follow the graph's opset: ``Unsqueeze``/``Squeeze``/``ReduceSum`` take axes as an
input from opset 13 on, the other reductions from opset 18 on, and as an attribute before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, const


def onnx_type(dtype) -> int:
    """The ONNX element type of a numpy dtype (for ``Cast``'s ``to``)."""
    return int(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


def np_dtype(tensor: gs.Tensor) -> np.dtype | None:
    """``tensor``'s element type as a numpy dtype (None when unknown)."""
    dtype = getattr(tensor, "dtype", None)
    if dtype is None:
        return None
    if isinstance(dtype, int):  # graphsurgeon keeps some types as ONNX enums
        try:
            return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dtype))
        except Exception:
            return None
    try:
        return np.dtype(dtype)
    except TypeError:
        return None


def static_shape(tensor: gs.Tensor) -> tuple[int, ...] | None:
    """``tensor``'s shape when every dimension is a known non-negative integer."""
    shape = getattr(tensor, "shape", None)
    if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    return tuple(int(d) for d in shape)


class Builder:
    """Appends nodes to ``graph`` with fresh names; each method returns the output tensor."""

    def __init__(self, graph: gs.Graph, base: str) -> None:
        self.graph = graph
        self.names = NameMaker(graph)
        self.base = base

    def const(self, what: str, value: np.ndarray) -> gs.Constant:
        return const(self.names, f"{self.base}_{what}", np.asarray(value))

    def op(
        self,
        op_type: str,
        inputs: Sequence[gs.Tensor],
        dtype=None,
        attrs: dict | None = None,
        out: gs.Tensor | None = None,
    ) -> gs.Tensor:
        """One node; its output is ``out`` when given, else a new tensor of ``dtype``."""
        if out is None:
            out = gs.Variable(self.names(f"{self.base}_{op_type.lower()}"), dtype=dtype)
        add_node(self.graph, self.names, op_type, inputs, [out], attrs, base=f"{self.base}_{op_type}")
        return out

    def cast(self, x: gs.Tensor, dtype, out: gs.Tensor | None = None) -> gs.Tensor:
        return self.op("Cast", [x], np.dtype(dtype), {"to": onnx_type(dtype)}, out)

    def _axes(self, op_type: str, x: gs.Tensor, axes: Sequence[int], dtype, attrs: dict, out, as_input: bool):
        if as_input:
            return self.op(
                op_type, [x, self.const("axes", np.array(list(axes), np.int64))], dtype, attrs, out
            )
        return self.op(op_type, [x], dtype, {"axes": list(axes), **attrs}, out)

    def unsqueeze(self, x: gs.Tensor, axes: Sequence[int], out: gs.Tensor | None = None) -> gs.Tensor:
        return self._axes("Unsqueeze", x, axes, x.dtype, {}, out, self.graph.opset >= 13)

    def squeeze(self, x: gs.Tensor, axes: Sequence[int], out: gs.Tensor | None = None) -> gs.Tensor:
        return self._axes("Squeeze", x, axes, x.dtype, {}, out, self.graph.opset >= 13)

    def reduce(
        self, op_type: str, x: gs.Tensor, axes: Sequence[int], keepdims: int, out: gs.Tensor | None = None
    ) -> gs.Tensor:
        as_input = self.graph.opset >= (13 if op_type == "ReduceSum" else 18)
        return self._axes(op_type, x, axes, x.dtype, {"keepdims": keepdims}, out, as_input)

    def reshape(self, x: gs.Tensor, shape: Sequence[int], out: gs.Tensor | None = None) -> gs.Tensor:
        return self.op(
            "Reshape", [x, self.const("shape", np.array(list(shape), np.int64))], x.dtype, None, out
        )

    def transpose(self, x: gs.Tensor, perm: Sequence[int], out: gs.Tensor | None = None) -> gs.Tensor:
        return self.op("Transpose", [x], x.dtype, {"perm": list(perm)}, out)

    def identity(self, x: gs.Tensor, out: gs.Tensor) -> gs.Tensor:
        return self.op("Identity", [x], x.dtype, None, out)


def detach(graph: gs.Graph, node: gs.Node) -> list[gs.Tensor]:
    """Remove ``node`` from ``graph`` and return its former outputs (now without a producer)."""
    outs = list(node.outputs)
    node.outputs.clear()
    node.inputs.clear()
    graph.nodes.remove(node)
    return outs
