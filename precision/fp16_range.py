"""FP16 range pre-check: what cannot be represented in half precision, and where (no extra run).

Checked, after folding (as TensorRT folds before choosing precisions):
- *initializers*: float weights whose largest magnitude exceeds 65504 (they would become inf);
- *activations*: tensors whose calibrated amax, or whose largest |value| seen in the FP32
  reference run a comparison already made, exceeds 65504.

Checking the unfolded model (``fold=False``) reproduces what a naive cast sees: for PP-OCRv4 det
it flags a BatchNorm ``running_var`` of 9.8e7 that TensorRT never materialises. That is the
false alarm this module exists to avoid; the default folds first.

Only *finite* FP32 values count. A value that is already ±inf (or NaN) in FP32, such as the -inf
of a padding mask, stays what it is in FP16: that is not a finding. A finite value that FP16
turns into ±inf is one, with a ``note`` where its cause is recognisable: a mask fill (|x| >=
2^126, e.g. float32's lowest value in a Hugging Face attention mask) that reaches a Softmax
through an Add becomes -inf, which is harmless there (exp(-inf) = 0) unless a whole Softmax row
is masked, whose output then turns NaN in FP16 where FP32 gave a uniform row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from trtq._core.onnx_model import float_tensors, node_names, tensor_readers
from trtq.precision.emulate import folded
from trtq.precision.metrics import MASK_FILL_ABS
from trtq.precision.qdq import FP16_MAX

_FLOAT = (
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
)


# Ops a mask passes through on its way from the mask input to the attention Softmax.
_MASK_PATH = frozenset(
    {"Add", "Sub", "Where", "Cast", "Reshape", "Expand", "Unsqueeze", "Squeeze", "Transpose", "Slice", "Mul"}
)
MASK_NOTE = (
    "mask fill: finite in FP32, -inf in FP16, read by Softmax: harmless (exp(-inf) = 0) "
    "unless a whole row is masked (then NaN in FP16)"
)
# The same, told by an FP16 run over the data: did a Softmax reading the fill output NaN/Inf?
MASK_NOTE_HARMLESS = (
    "mask fill: finite in FP32, -inf in FP16, read by Softmax: harmless here (exp(-inf) = 0; "
    "no Softmax row was wholly masked in this data)"
)
MASK_NOTE_WHOLE_ROW = (
    "mask fill: finite in FP32, -inf in FP16, read by Softmax: whole rows are masked in this data "
    "({tensors}: NaN in FP16 where FP32 gives a uniform row)"
)


@dataclass(frozen=True)
class RangeIssue:
    """A tensor beyond FP16's range: ``kind`` is ``"initializer"`` or ``"activation"``; ``node``
    the first node reading the initializer, or the activation's producer; ``max_abs`` the largest
    *finite* |x| in FP32; ``note`` the recognised cause, if any (see the module docstring)."""

    kind: str
    tensor: str
    node: str | None
    max_abs: float
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _constants(model: onnx.ModelProto) -> Iterable[tuple[str, np.ndarray]]:
    for init in model.graph.initializer:
        if init.data_type in _FLOAT:
            yield init.name, numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in _FLOAT:
                    yield node.output[0], numpy_helper.to_array(a.t)


def fp16_range_check(
    model: onnx.ModelProto,
    amax: Mapping[str, float] | None = None,
    observed: Mapping[str, float] | None = None,
    *,
    fold: bool = True,
    limit: float = FP16_MAX,
    fp16_nonfinite: Mapping[str, float] | None = None,
) -> list[RangeIssue]:
    """Tensors whose magnitude exceeds ``limit`` (65504 by default), largest first.

    ``amax``: calibrated ranges (tensor -> amax); ``observed``: largest |x| per tensor seen in an
    FP32 run (as returned by :func:`trtq.precision.compare.compare_runs`); ``fp16_nonfinite``:
    the share of NaN/Inf per tensor in an FP16 run over the same data (compare's graphwise
    ``nonfinite``), which tells a mask fill that is harmless on this data from one that masks a
    whole Softmax row (:data:`MASK_NOTE_HARMLESS` / :data:`MASK_NOTE_WHOLE_ROW`; without it,
    :data:`MASK_NOTE` names both cases).
    """
    m = folded(model) if fold else model
    consumer, readers = _readers(m)

    def note(tensor: str, big: float) -> str | None:
        softmaxes = _softmaxes_reached(tensor, readers) if big >= MASK_FILL_ABS else []
        if not softmaxes:
            return None
        if fp16_nonfinite is None:
            return MASK_NOTE
        bad = [t for t in softmaxes if _nonfinite_share(t, fp16_nonfinite, readers) > 0]
        return MASK_NOTE_WHOLE_ROW.format(tensors=", ".join(bad)) if bad else MASK_NOTE_HARMLESS

    issues: list[RangeIssue] = []
    for name, value in _constants(m):
        v = np.abs(value.astype(np.float64))
        v = v[np.isfinite(v)]  # already ±inf/NaN in FP32: FP16 changes nothing there
        if v.size:
            big = float(v.max())
            if big > limit:
                issues.append(RangeIssue("initializer", name, consumer.get(name), big, note(name, big)))
    producers = {s.name: s.producer.node if s.producer else None for s in float_tensors(m)}
    ranges: dict[str, float] = {}
    for source in (amax or {}), (observed or {}):
        for name, value in source.items():
            if name in producers and np.isfinite(value):
                ranges[name] = max(ranges.get(name, 0.0), float(value))
    for name, value in ranges.items():
        if value > limit:
            issues.append(RangeIssue("activation", name, producers[name], value, note(name, value)))
    issues.sort(key=lambda i: -i.max_abs)
    return issues


def fp32_nonfinite_constants(model: onnx.ModelProto, *, fold: bool = True) -> list[RangeIssue]:
    """Float constants that already hold ±inf/NaN in FP32 (e.g. the -inf of ``where(mask, 0, -inf)``).

    Not findings: FP16 holds the same ±inf/NaN. Listed apart so that a user who sees -inf in the
    model knows it was checked. ``max_abs`` is the largest *finite* |x| (0 when none); ``note``
    says what was found and whether it reaches a Softmax through the mask path.
    """
    m = folded(model) if fold else model
    consumer, readers = _readers(m)
    found = []
    for name, value in _constants(m):
        v = value.astype(np.float64)
        bad = ~np.isfinite(v)
        if bad.any():
            kinds = [
                k
                for k, hit in (("-inf", np.isneginf(v)), ("+inf", np.isposinf(v)), ("NaN", np.isnan(v)))
                if hit.any()
            ]
            note = f"{'/'.join(kinds)} in FP32, unchanged in FP16"
            if _softmaxes_reached(name, readers):
                note += "; a Softmax mask"
            finite = np.abs(v[~bad])
            found.append(
                RangeIssue(
                    "initializer", name, consumer.get(name), float(finite.max()) if finite.size else 0.0, note
                )
            )
    return found


def _readers(m: onnx.ModelProto) -> tuple[dict[str, str], dict[str, list[onnx.NodeProto]]]:
    """tensor -> the name of its first reader, and tensor -> all its reader nodes."""
    names, nodes, at = node_names(m), m.graph.node, tensor_readers(m)
    return {t: names[ks[0]] for t, ks in at.items()}, {t: [nodes[k] for k in ks] for t, ks in at.items()}


def _nonfinite_share(
    t: str, shares: Mapping[str, float], readers: Mapping[str, list[onnx.NodeProto]]
) -> float:
    """``t``'s NaN/Inf share in the FP16 run; a Softmax inside a fused attention layer is not
    compared, so then the largest share among the outputs of the nodes reading it (the NaN of a
    wholly masked row reaches the attention output)."""
    if t in shares:
        return shares[t]
    return max((shares.get(o, 0.0) for node in readers.get(t, []) for o in node.output), default=0.0)


def _softmaxes_reached(tensor: str, readers: Mapping[str, list[onnx.NodeProto]], hops: int = 6) -> list[str]:
    """Outputs of the Softmax nodes ``tensor`` flows into through mask-path ops only (at most ``hops``)."""
    frontier, seen, found = [tensor], {tensor}, []
    for _ in range(hops):
        nxt = []
        for t in frontier:
            for node in readers.get(t, []):
                if node.op_type in ("Softmax", "LogSoftmax"):
                    found += [o for o in node.output[:1] if o not in found]
                elif node.op_type in _MASK_PATH:
                    nxt += [o for o in node.output if o and o not in seen]
                    seen.update(node.output)
        frontier = nxt
    return found
