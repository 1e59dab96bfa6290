"""Per-channel weight scales chosen by each layer's output error on calibration data.

Without data the export scales a weight channel ``c`` from the weights alone: INT8 ``max|W_c| /
127``; FP8 ``max|W_c| / d_c`` with ``d_c`` the one of eight grids (``448 * 2**(-j/8)``) whose
*rounding* error over the channel is smallest (:func:`trtq.precision.qdq.fp8_weight_scale`).
Which weights a rounding error lands on matters less than what the layer computes with them:
an error on a weight that meets a large, frequent input costs more than one on a weight that
meets zeros. Here each channel's scale is the candidate whose quantized weights give the smallest
squared error of the layer's *output* on the calibration data, against the FP32 layer on the
FP32 input:

    sum_p (q(w_c)·x~_p + b_c - (w_c·x_p + b_c))^2

over sampled output positions ``p`` (im2col patches, or the rows of a Gemm/MatMul input), with
``x~`` the input quantized per tensor as the layer receives it (INT8 or FP8 at the calibrated
amax). The sums come from the normal equations weight correction accumulates
(:func:`trtq.precision.weight_correction.own_equations`: one FP32 pass), so every candidate is
scored exactly without running the model again.

Candidates per channel:

- FP8: the same eight grids as the data-free choice. None saturates (the channel's largest weight
  maps to ``d_c <= 448``), so the choice only moves where the rounding falls;
- INT8: ``r * max|W_c| / 127`` for ``r`` in :data:`INT8_CLIP_RATIOS` (1 is the data-free scale;
  below 1 the largest weights saturate at ``+-127``, and the rest get a finer step).

Only the export uses the scales (``export_qdq(..., weight_scales=...)``, the Q/DQ model TensorRT
explicit quantization and ONNX Runtime run); the calibration cache does not change. Measured over
6 calibration / held-out splits (BENCHMARKS.md, "Weight scales by output error"): FP8 better or
level on every model (PP-OCRv4 rec's real text lines most, det on 6 of 6 splits), so ``precision
export --fp8`` uses it whenever ``--data`` is given; INT8 mixed (the small classifiers, rec's
cosine and unpinned det gain, ViT-S loses on 5 of 6, det with pins loses), so opt-in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from trtq._core.errors import InputError
from trtq._core.progress import ProgressFn, null_progress
from trtq.precision import qdq
from trtq.precision.emulate import EmulationConfig
from trtq.precision.weight_correction import DEFAULT_POSITIONS, channel_errors, own_equations, weight_of

#: INT8 candidates: the channel's scale is ``r * max|W_c| / 127``.
INT8_CLIP_RATIOS = (1.0, 0.97, 0.94, 0.9, 0.86, 0.82, 0.78, 0.74)
QTYPES = ("int8", "fp8")


@dataclass(frozen=True)
class LayerScales:
    """One layer's choice: how many of its channels left the data-free scale, and the summed
    squared output error (squared output units, over the sampled calibration positions and the
    channels) with the data-free scales and with the chosen ones."""

    node: str
    weight: str
    channels: int
    changed: int
    error_before: float
    error_after: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class WeightScalesReport:
    """What :func:`choose_weight_scales` chose (``skipped``: node -> why the data-free scale stays)."""

    qtype: str
    samples: int = 0
    positions: int = DEFAULT_POSITIONS
    layers: list[LayerScales] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "qtype": self.qtype,
            "samples": self.samples,
            "positions": self.positions,
            "layers": [f.to_dict() for f in self.layers],
            "skipped": dict(self.skipped),
        }


def candidate_scales(w: np.ndarray, axis: int, qtype: str) -> np.ndarray:
    """``[candidates, channels]`` float32 scales of weight ``w`` per channel along ``axis``, the
    data-free one first (module docstring)."""
    amax = np.abs(qdq.channel_rows(np.asarray(w, np.float32), axis)).max(axis=1).astype(np.float64)
    if qtype == "fp8":
        grids = amax[None, :] / qdq.fp8_weight_divisors()[:, None]
        first = qdq.fp8_weight_scale(w, axis)[None, :]
        out = np.concatenate([first, grids]).astype(np.float32)
    else:
        out = (np.asarray(INT8_CLIP_RATIOS)[:, None] * amax[None, :] / 127.0).astype(np.float32)
    return np.where(amax[None, :] > 0, out, np.float32(1.0)).astype(np.float32)


def choose_weight_scales(
    model: onnx.ModelProto,
    batches: Iterable[Mapping[str, np.ndarray]],
    amax: Mapping[str, float],
    *,
    qtype: str = "fp8",
    pins: Iterable[str] = (),
    positions: int = DEFAULT_POSITIONS,
    seed: int = 0,
    threads: int | None = None,
    progress: ProgressFn = null_progress,
) -> tuple[dict[str, np.ndarray], WeightScalesReport]:
    """``(scales, report)``: weight initializer name (of the folded ``model``) -> float32 scale
    per output channel, for every per-channel weight of a layer the ``qtype`` export quantizes
    (``pins`` stay FP32), chosen by output error on ``batches`` (calibration feeds) at the
    activation ranges ``amax`` (module docstring). Pass ``scales`` to
    :func:`trtq.precision.export.export_qdq` with the same ``amax``, ``pins`` and type."""
    if qtype not in QTYPES:
        raise InputError(f"unknown weight type '{qtype}'; choose one of: {', '.join(QTYPES)}")
    batches = list(batches)
    if not batches:
        raise InputError("weight scales by output error need calibration data (--data)")
    report = WeightScalesReport(qtype, len(batches), positions)
    config = EmulationConfig(qtype, "explicit", frozenset(pins))
    fits, report.skipped = own_equations(
        model, batches, amax, config, positions=positions, seed=seed, threads=threads, progress=progress
    )
    scales: dict[str, np.ndarray] = {}
    for f in fits:
        if f.shared:  # one scale per weight in the export: its layers may want different ones
            report.skipped[f.target.node] = "weight shared with other nodes"
            continue
        if f.axis is None:
            report.skipped[f.target.node] = "weight quantized per tensor"
            continue
        w = weight_of(f).astype(np.float32)
        cands = candidate_scales(w, f.axis, qtype)
        errors = channel_errors(f, [qdq.fake_quantize_weight(w, f.axis, qtype, s) for s in cands])
        best = np.argmin(errors, axis=1)  # the first (data-free) on a tie
        chosen = cands[best, np.arange(cands.shape[1])]
        scales[f.weight] = chosen
        report.layers.append(
            LayerScales(
                node=f.target.node,
                weight=f.weight,
                channels=int(chosen.size),
                changed=int(np.sum(chosen != cands[0])),
                error_before=float(np.sum(errors[:, 0])),
                error_after=float(np.sum(errors[np.arange(len(best)), best])),
            )
        )
    return scales, report
