"""``DFT`` -> one ``MatMul`` with a constant matrix of cosines and sines.

A DFT of length ``L`` is linear in the input: ``X_k = sum_n x_n e^{-2 pi i k n / L}`` (inverse:
``e^{+...}`` and a factor ``1/L``). The rule moves the signal axis next to the last (real/imaginary)
axis, flattens those two to ``n * c + part`` (``c`` = 1 for real input, 2 for complex), multiplies
by a constant ``[N*c, 2M]`` matrix and unflattens to ``[.., M, 2]``: entry
``(n*c + re, 2k + re) = cos``, ``(n*c + re, 2k + im) = -/+ sin``, ``(n*c + im, 2k + re) = +/- sin``,
``(n*c + im, 2k + im) = cos`` (forward / inverse), times ``1/L`` for the inverse, with the angle
``2 pi ((k n) mod L) / L`` computed in float64. ``dft_length`` ``L`` shorter than the input uses
its first ``L`` samples (zero rows), longer zero-pads it (no rows needed); ``onesided`` keeps
``k < L // 2 + 1``. These are the operator's sums of products in another order, so the result
is exact up to float rounding: within 1e-6 of a float64 FFT (measured up to L = 4096). ONNX
Runtime's own FP32 DFT is that close only for power-of-two lengths; for other lengths of about
100 and more it is off by more than 1e-5 (2e-5 at L = 100, 2.5e-4 at L = 1000), so ``surgery fix``'s
comparison with ONNX Runtime can refuse such a model although the rewrite is the more accurate.
On TensorRT, build with TF32 off (``--noTF32``): TF32 MatMul keeps 10 mantissa bits.
Fires on FP32 input with a static rank, a static signal length, a constant ``dft_length`` (or none)
and a constant axis (opset 20 input, or the opset 17 attribute), except ``onesided`` with complex
input or with ``inverse`` (where the spec does not define a result).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import constant_value, input_at
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._tensor_ops import Builder, detach, np_dtype


def dft_matrix(n_in: int, parts: int, length: int, n_out: int, inverse: bool) -> np.ndarray:
    """``[n_in * parts, 2 * n_out]`` float32; see the module docstring for the layout."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    theta = 2.0 * np.pi * ((n * k) % length) / length
    cos, sin = np.cos(theta), np.sin(theta)
    cos[n_in if n_in <= length else length :] = 0.0
    sin[n_in if n_in <= length else length :] = 0.0
    sign = 1.0 if inverse else -1.0
    w = np.zeros((n_in, parts, n_out, 2))
    w[:, 0, :, 0] = cos
    w[:, 0, :, 1] = sign * sin
    if parts == 2:
        w[:, 1, :, 0] = -sign * sin
        w[:, 1, :, 1] = cos
    if inverse:
        w /= length
    return w.reshape(n_in * parts, n_out * 2).astype(np.float32)


def _plan(node: gs.Node, opset: int) -> dict | None:
    x = node.inputs[0]
    shape = getattr(x, "shape", None)
    if shape is None or np_dtype(x) != np.dtype(np.float32) or len(shape) < 3:
        return None
    rank = len(shape)
    if opset >= 20:
        axis_t = input_at(node, 2)
        axis_v = np.array(-2) if axis_t is None else constant_value(axis_t)
        if axis_v is None or axis_v.size != 1:
            return None
        axis = int(axis_v.reshape(-1)[0])
    else:
        axis = int(node.attrs.get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    parts = shape[-1]
    if not 0 <= axis < rank - 1 or parts not in (1, 2):
        return None
    n_in = shape[axis]
    if not isinstance(n_in, int) or n_in <= 0:
        return None
    length_t = input_at(node, 1)
    length = n_in
    if length_t is not None:
        value = constant_value(length_t)
        if value is None or value.size != 1:
            return None
        length = int(value.reshape(-1)[0])
    inverse = bool(int(node.attrs.get("inverse", 0)))
    onesided = bool(int(node.attrs.get("onesided", 0)))
    if length <= 0 or (onesided and (inverse or parts == 2)):
        return None
    n_out = length // 2 + 1 if onesided else length
    return {"axis": axis, "rank": rank, "parts": parts, "n_in": n_in, "length": length,
            "n_out": n_out, "inverse": inverse}  # fmt: skip


@register_rule
class DFTMatMul(Rule):
    name = "dft_matmul"
    summary = "DFT with static length and constant axis -> MatMul with a constant cos/sin matrix"
    order = 60
    rewrites: ClassVar[tuple[str, ...]] = ("DFT",)

    def match(self, graph: gs.Graph) -> list[Match]:
        return [
            self._match([n], "DFT is not supported by TensorRT's ONNX parser")
            for n in graph.nodes
            if n.op == "DFT" and n.inputs and _plan(n, graph.opset)
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        p = _plan(node, graph.opset)
        x = node.inputs[0]
        rank, axis = p["rank"], p["axis"]  # type: ignore[index]
        (y,) = detach(graph, node)
        b = Builder(graph, node.name)
        perm = list(range(rank))
        perm[axis], perm[rank - 2] = perm[rank - 2], perm[axis]
        moved = x if axis == rank - 2 else b.transpose(x, perm)
        flat = b.reshape(moved, [0] * (rank - 2) + [p["n_in"] * p["parts"]])  # type: ignore[index]
        w = dft_matrix(p["n_in"], p["parts"], p["length"], p["n_out"], p["inverse"])  # type: ignore[index]
        product = b.op("MatMul", [flat, b.const("dft_matrix", w)], np.float32)
        if axis == rank - 2:
            b.reshape(product, [0] * (rank - 2) + [p["n_out"], 2], out=y)  # type: ignore[index]
        else:
            b.transpose(b.reshape(product, [0] * (rank - 2) + [p["n_out"], 2]), perm, out=y)  # type: ignore[index]
        return True
