"""``Col2Im`` -> one ``Gather`` of every block element's source column, summed over block elements.

``Col2Im(x [N, C*K, L], image_shape, block_shape)`` adds block element ``kk`` (of ``K = prod(block)``)
of sliding-block location ``l`` (of ``L``) into output position ``l * stride + kk * dilation - pad``
(per spatial axis), skipping positions outside the image. The rule precomputes, for every output
position ``p`` and block element ``kk``, the column ``l`` that lands there (at most one, since the
map from ``l`` is injective for a fixed ``kk``) or a sentinel pointing at an appended zero column:
``x -> [N, C, K, L] -> [K, L, N, C]``, pad one zero column, flatten to ``[K*(L+1), N, C]``,
``Gather`` with a constant ``[K, P]`` index, ``ReduceSum`` over ``K``, back to ``[N, C, *image]``.
Every output is the sum of exactly the terms Col2Im adds (plus exact zeros), in another order, so
it is exact up to float rounding (relative 1e-5). Fires on FP32 input with constant
``image_shape``/``block_shape`` and static channel and column dimensions consistent with them.
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import constant_value
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._tensor_ops import Builder, detach, np_dtype


def gather_index(image, block, strides, dilations, pads) -> tuple[np.ndarray, int]:
    """``([K, P] flat index into [K, L + 1], L)``: column ``l`` of block element ``kk`` landing on
    position ``p``, or ``L`` (the zero column) when none does."""
    d = len(image)
    counts = [(image[i] + pads[i] + pads[d + i] - (dilations[i] * (block[i] - 1) + 1)) // strides[i] + 1
              for i in range(d)]  # fmt: skip
    n_cols = int(np.prod(counts))
    n_blocks = int(np.prod(block))
    index = np.full((n_blocks, int(np.prod(image))), n_cols, np.int64)
    for kk, offset in enumerate(itertools.product(*[range(b) for b in block])):
        for col, loc in enumerate(itertools.product(*[range(c) for c in counts])):
            pos = [loc[i] * strides[i] + offset[i] * dilations[i] - pads[i] for i in range(d)]
            if all(0 <= pos[i] < image[i] for i in range(d)):
                index[kk, np.ravel_multi_index(pos, image)] = col
    return index + (np.arange(n_blocks, dtype=np.int64) * (n_cols + 1))[:, None], n_cols


def _plan(node: gs.Node) -> dict | None:
    x = node.inputs[0]
    image = constant_value(node.inputs[1])
    block = constant_value(node.inputs[2])
    shape = getattr(x, "shape", None)
    if image is None or block is None or shape is None or len(shape) != 3:
        return None
    image, block = [int(v) for v in image.reshape(-1)], [int(v) for v in block.reshape(-1)]
    d = len(image)
    strides = list(node.attrs.get("strides", [1] * d))
    dilations = list(node.attrs.get("dilations", [1] * d))
    pads = list(node.attrs.get("pads", [0] * 2 * d))
    ck, cols = shape[1], shape[2]
    k = int(np.prod(block))
    if not all(isinstance(v, int) for v in (ck, cols)) or len(block) != d or ck % k:
        return None
    index, n_cols = gather_index(image, block, strides, dilations, pads)
    if n_cols != cols:
        return None
    return {"image": image, "k": k, "c": ck // k, "cols": cols, "index": index}


@register_rule
class Col2ImGather(Rule):
    name = "col2im_gather"
    summary = "Col2Im with constant shapes -> Gather of source columns + ReduceSum over block elements"
    order = 60
    rewrites: ClassVar[tuple[str, ...]] = ("Col2Im",)

    def match(self, graph: gs.Graph) -> list[Match]:
        return [
            self._match([n], "Col2Im is not supported by TensorRT's ONNX parser")
            for n in graph.nodes
            if n.op == "Col2Im"
            and len(n.inputs) == 3
            and np_dtype(n.inputs[0]) == np.dtype(np.float32)
            and _plan(n)
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        plan = _plan(node)
        x = node.inputs[0]
        k, c, cols = plan["k"], plan["c"], plan["cols"]  # type: ignore[index]
        (y,) = detach(graph, node)
        b = Builder(graph, node.name)
        blocks = b.transpose(b.reshape(x, [0, c, k, cols]), [2, 3, 0, 1])  # [K, L, N, C]
        padded = b.op("Pad", [blocks, b.const("pads", np.array([0, 0, 0, 0, 0, 1, 0, 0], np.int64))], x.dtype,
                      {"mode": "constant"})  # fmt: skip
        flat = b.reshape(padded, [k * (cols + 1), -1, c])
        picked = b.op("Gather", [flat, b.const("source_columns", plan["index"])], x.dtype, {"axis": 0})  # type: ignore[index]
        summed = b.reduce("ReduceSum", picked, [0], 0)  # [P, N, C]
        b.reshape(b.transpose(summed, [1, 2, 0]), [0, c, *plan["image"]], out=y)  # type: ignore[index]
        return True
