"""2D ``MaxPool`` whose ``Indices`` output is used -> ``MaxPool`` for the values and ``ArgMax``
over the window for the indices (TensorRT's parser imports only MaxPool's first output).

Fires on a 2D ``MaxPool`` with non-overlapping, unpadded windows (``strides == kernel_shape``, no
pads, dilations 1, ``ceil_mode=0``, ``storage_order=0``) on an input of static shape
``[N, C, H, W]``. The input is cut to ``[.., Ho*kh, Wo*kw]`` (the rows/columns floor mode drops),
reshaped and transposed to ``[N, C, Ho, Wo, kh*kw]`` (window elements in row-major order), and
``ArgMax`` (first occurrence) picks the window position ``a``; the index is
``((n*C + c)*H + oh*kh + a // kw)*W + ow*kw + a % kw``, written as a constant per-window base plus a
constant per-position offset looked up with ``Gather``. ONNX Runtime's ``MaxPool`` takes the first
maximum in the same order, so the indices are exact on inputs without NaN (MaxPool's choice on NaN
is implementation-defined). Caveat: TensorRT implements ``ArgMax`` with ``TopK``, whose choice among
equal values is not documented.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._tensor_ops import Builder, static_shape


def _eligible(node: gs.Node) -> bool:
    if node.op != "MaxPool" or len(node.outputs) < 2 or node.outputs[1].name == "":
        return False
    kernel = list(node.attrs.get("kernel_shape", []))
    shape = static_shape(node.inputs[0])
    return (
        len(kernel) == 2
        and shape is not None
        and len(shape) == 4
        and list(node.attrs.get("strides", [1, 1])) == kernel
        and not any(node.attrs.get("pads", []))
        and all(d == 1 for d in node.attrs.get("dilations", [1, 1]))
        and int(node.attrs.get("ceil_mode", 0)) == 0
        and int(node.attrs.get("storage_order", 0)) == 0
        and node.attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID")
        and all(s >= k for s, k in zip(shape[2:], kernel, strict=True))
    )


@register_rule
class MaxPoolIndicesArgMax(Rule):
    name = "maxpool_indices_argmax"
    summary = "2D MaxPool with used Indices (stride == kernel, no pads) -> MaxPool + ArgMax over the window"
    order = 55
    rewrites: ClassVar[tuple[str, ...]] = ("MaxPool",)

    def match(self, graph: gs.Graph) -> list[Match]:
        return [
            self._match([n], "TensorRT imports only MaxPool's first output (Y), not Indices")
            for n in graph.nodes
            if _eligible(n)
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        x = node.inputs[0]
        n, c, height, width = static_shape(x)  # type: ignore[misc]
        kh, kw = node.attrs["kernel_shape"]
        ho, wo = height // kh, width // kw
        values, indices = node.outputs[0], node.outputs[1]
        node.outputs.clear()
        node.outputs.append(values)
        b = Builder(graph, node.name)
        i64 = np.dtype(np.int64)
        cut = x
        if (ho * kh, wo * kw) != (height, width):
            ints = [b.const(k, np.array(v, np.int64)) for k, v in
                    (("start", [0, 0]), ("stop", [ho * kh, wo * kw]), ("axes", [2, 3]))]  # fmt: skip
            cut = b.op("Slice", [x, *ints], x.dtype)
        windows = b.reshape(b.transpose(b.reshape(cut, [n, c, ho, kh, wo, kw]), [0, 1, 2, 4, 3, 5]),
                            [n, c, ho, wo, kh * kw])  # fmt: skip
        first = {"select_last_index": 0} if graph.opset >= 12 else {}  # ArgMax's default before 12 too
        position = b.op("ArgMax", [windows], i64, {"axis": -1, "keepdims": 0, **first})
        a = np.arange(kh * kw)
        offset = b.const("window_offset", ((a // kw) * width + a % kw).astype(np.int64))
        nn, cc, oh, ow = np.meshgrid(np.arange(n), np.arange(c), np.arange(ho), np.arange(wo), indexing="ij")
        base = b.const("window_base", (((nn * c + cc) * height + oh * kh) * width + ow * kw).astype(np.int64))
        b.op("Add", [base, b.op("Gather", [offset, position], i64, {"axis": 0})], i64, out=indices)
        return True
