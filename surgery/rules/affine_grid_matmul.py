"""``AffineGrid`` with a constant ``size`` -> ``MatMul`` of a constant base grid with ``theta``.

``AffineGrid(theta, size)`` is, per batch item, the homogeneous base grid ``[x, y, (z,) 1]`` of the
output's spatial size times ``theta`` transposed. The coordinate of index ``i`` along an axis of
size ``s`` is ``-1 + (2i + 1)/s`` (``align_corners=0``) or ``-1 + 2i/(s - 1)`` (``align_corners=1``;
with ``x`` running along the last axis. The rule computes that base grid once
(float64, rounded to FP32) as a constant ``[prod(spatial), 3 or 4]`` and emits
``Reshape(MatMul(base, Transpose(theta, [0, 2, 1])), [N, *spatial, 2 or 3])``: the same products
and sums as the operator, so it is exact up to float rounding (relative 1e-5; coordinates differ
from a float32 computation by at most an ulp). Fires on FP32 ``theta`` and a constant ``size`` of
length 4 (2D) or 5 (3D) (on TensorRT, with TF32 off: TF32 MatMul keeps 10 mantissa bits), except ``align_corners=1`` with a spatial size of 1, where the spec's
``2/(s - 1)`` is undefined and implementations differ (ONNX Runtime gives 1, the reference -1).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import constant_value
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._tensor_ops import Builder, detach, np_dtype


def _coords(size: int, align_corners: bool) -> np.ndarray:
    i = np.arange(size, dtype=np.float64)
    if align_corners:
        return -1.0 + 2.0 * i / (size - 1)
    return -1.0 + (2.0 * i + 1.0) / size


def base_grid(spatial: tuple[int, ...], align_corners: bool) -> np.ndarray:
    """``[prod(spatial), len(spatial) + 1]``: ``(x, y[, z], 1)`` per output position, row-major."""
    axes = np.meshgrid(*[_coords(s, align_corners) for s in spatial], indexing="ij")
    columns = [a.reshape(-1) for a in reversed(axes)]  # x is the last spatial axis
    return np.stack([*columns, np.ones(int(np.prod(spatial)))], axis=1).astype(np.float32)


@register_rule
class AffineGridMatMul(Rule):
    name = "affine_grid_matmul"
    summary = "AffineGrid with a constant size -> MatMul of a constant base grid with theta^T"
    order = 60
    rewrites: ClassVar[tuple[str, ...]] = ("AffineGrid",)

    def match(self, graph: gs.Graph) -> list[Match]:
        out = []
        for node in graph.nodes:
            if node.op != "AffineGrid" or len(node.inputs) != 2:
                continue
            size = constant_value(node.inputs[1])
            if np_dtype(node.inputs[0]) != np.dtype(np.float32) or size is None or size.size not in (4, 5):
                continue
            if int(node.attrs.get("align_corners", 0)) and 1 in size.reshape(-1)[2:]:
                continue
            out.append(self._match([node], "AffineGrid is not supported by TensorRT's ONNX parser",
                                   size=tuple(int(s) for s in size.reshape(-1))))  # fmt: skip
        return out

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        theta = node.inputs[0]
        n, _, *spatial = match.data["size"]
        align = bool(int(node.attrs.get("align_corners", 0)))
        (y,) = detach(graph, node)
        b = Builder(graph, node.name)
        base = b.const("base_grid", base_grid(tuple(spatial), align))
        grid = b.op("MatMul", [base, b.transpose(theta, [0, 2, 1])], np.float32)
        b.reshape(grid, [n, *spatial, len(spatial)], out=y)
        return True
