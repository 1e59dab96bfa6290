"""The negative log-likelihood of given log-probabilities, built from Gather/Where/ReduceSum.

Shared by ``nll_loss_decompose`` and ``softmax_cross_entropy_decompose``. For input ``x`` of shape
``[N, C, d...]``, target ``t`` of shape ``[N, d...]``, optional class weights ``w`` and an optional
``ignore_index``: ``keep = t != ignore_index``; ``t' = where(keep, t, 0)`` (so an ignored, possibly
out-of-range, label is never used as an index); ``g = GatherElements(x, t'[:, None], axis=1)``;
per element ``loss = where(keep, -g * w[t'], 0)`` and ``weight = where(keep, w[t'], 0)`` (``w = 1``
when absent). ``none`` returns ``loss``; ``sum`` its sum; ``mean`` ``sum(loss) / sum(weight)``, which
is NaN when every element is ignored, as ONNX Runtime and the reference give. These are the
operator's own products and sums (``where`` keeps an ignored element's ``-inf`` input out of the
result instead of multiplying it by 0), so the result is exact up to the order of summation.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.rules._tensor_ops import Builder, np_dtype

REDUCTIONS = ("none", "sum", "mean")


def nll(
    b: Builder,
    x: gs.Tensor,
    target: gs.Tensor,
    weight: gs.Tensor | None,
    reduction: str,
    ignore_index: int | None,
    out: gs.Tensor,
) -> gs.Tensor:
    """Write the loss into ``out`` (see the module docstring)."""
    f32 = np.dtype(np.float32)
    tdtype = np_dtype(target)
    keep = None
    if ignore_index is not None:
        same = b.op(
            "Equal", [target, b.const("ignore_index", np.array(ignore_index, tdtype))], np.dtype(bool)
        )
        keep = b.op("Not", [same], np.dtype(bool))
        target = b.op("Where", [keep, target, b.const("label_zero", np.array(0, tdtype))], tdtype)
    picked = b.squeeze(b.op("GatherElements", [x, b.unsqueeze(target, [1])], f32, {"axis": 1}), [1])
    loss = b.op("Neg", [picked], f32)
    w = None if weight is None else b.op("Gather", [weight, target], f32, {"axis": 0})
    if w is not None:
        loss = b.op("Mul", [loss, w], f32)
    zero = b.const("zero", np.array(0.0, np.float32))
    if keep is not None:
        loss = b.op("Where", [keep, loss, zero], f32)
        w = b.op("Where", [keep, b.const("one", np.array(1.0, np.float32)) if w is None else w, zero], f32)
    if reduction == "none":
        return b.identity(loss, out)
    if reduction == "sum":
        return b.op("ReduceSum", [loss], f32, {"keepdims": 0}, out=out)
    if w is None:
        return b.op("ReduceMean", [loss], f32, {"keepdims": 0}, out=out)
    total = b.op("ReduceSum", [loss], f32, {"keepdims": 0})
    return b.op("Div", [total, b.op("ReduceSum", [w], f32, {"keepdims": 0})], f32, out=out)
