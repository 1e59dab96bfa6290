"""``MaxUnpool`` -> ``ScatterElements`` of the values into a flat zero tensor, reshaped.

``MaxUnpool(X, I)`` writes ``X`` at the flat positions ``I`` (indices over the whole output, batch
and channel included, as ``MaxPool`` returns them) of a zero tensor of the output shape. The rule
writes exactly that: ``Reshape(ScatterElements(zeros[prod(out)], Reshape(I, [-1]), Reshape(X, [-1]),
axis=0), out)``. Fires when:
- ``X`` has a static shape and the output shape is known: the constant ``output_shape`` input, or
  ``(in - 1) * stride + kernel - pad_begin - pad_end`` per spatial axis;
- no two updates of different value can hit the same position, since the order of duplicate
  writes is unspecified in ``ScatterElements`` (and in TensorRT): ``I`` is a constant without
  duplicates, or ``I`` is the ``Indices`` output of a ``MaxPool`` whose windows do not overlap
  (``stride >= dilation * (kernel - 1) + 1`` on every axis, so every input element is in at most
  one window) or whose ``Y`` output is ``X`` itself (duplicates then carry the same value).
Then every output element is either 0 or the one value written there: the result is exact.
The zero tensor is a constant of the output's size.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import constant_value, input_at, producer
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._tensor_ops import Builder, detach, np_dtype, static_shape


def _output_shape(node: gs.Node, x_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    given = input_at(node, 2)
    if given is not None:
        value = constant_value(given)
        return None if value is None else tuple(int(v) for v in value.reshape(-1))
    spatial = len(x_shape) - 2
    kernel = list(node.attrs.get("kernel_shape", []))
    strides = list(node.attrs.get("strides", [1] * spatial))
    pads = list(node.attrs.get("pads", [0] * 2 * spatial))
    if len(kernel) != spatial:
        return None
    dims = [
        (x_shape[2 + i] - 1) * strides[i] + kernel[i] - pads[i] - pads[spatial + i] for i in range(spatial)
    ]
    return (*x_shape[:2], *dims)


def _unique_writes(node: gs.Node) -> bool:
    x, indices = node.inputs[0], node.inputs[1]
    value = constant_value(indices)
    if value is not None:
        return np.unique(value).size == value.size
    pool = producer(indices)
    if pool is None or pool.op != "MaxPool" or len(pool.outputs) < 2 or pool.outputs[1] is not indices:
        return False
    if pool.outputs[0] is x:
        return True
    kernel = list(pool.attrs.get("kernel_shape", []))
    strides = list(pool.attrs.get("strides", [1] * len(kernel)))
    dilations = list(pool.attrs.get("dilations", [1] * len(kernel)))
    return bool(kernel) and all(
        s >= d * (k - 1) + 1 for k, s, d in zip(kernel, strides, dilations, strict=True)
    )


@register_rule
class MaxUnpoolScatter(Rule):
    name = "maxunpool_scatter"
    summary = "MaxUnpool with duplicate-free indices -> ScatterElements into zeros, reshaped"
    order = 50  # before maxpool_indices_argmax, which hides where the indices come from
    rewrites: ClassVar[tuple[str, ...]] = ("MaxUnpool",)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "MaxUnpool" or len(node.inputs) < 2:
                continue
            x_shape = static_shape(node.inputs[0])
            shape = _output_shape(node, x_shape) if x_shape else None
            if shape and np_dtype(node.inputs[0]) is not None and _unique_writes(node):
                out.append(
                    self._match([node], "MaxUnpool is not supported by TensorRT's ONNX parser", shape=shape)
                )
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        x, indices = node.inputs[0], node.inputs[1]
        shape = match.data["shape"]
        dtype = np_dtype(x)
        (y,) = detach(graph, node)
        b = Builder(graph, node.name)
        zeros = b.const("zeros", np.zeros(int(np.prod(shape)), dtype))
        flat = b.op(
            "ScatterElements", [zeros, b.reshape(indices, [-1]), b.reshape(x, [-1])], dtype, {"axis": 0}
        )
        b.reshape(flat, list(shape), out=y)
        return True
