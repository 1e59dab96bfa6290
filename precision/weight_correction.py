"""Least-squares weight correction of INT8 layers (a closed-form, per-layer relative of AdaQuant:
Hubara et al. 2020, "Improving Post Training Neural Quantization: Layer-wise Calibration and
Integer Programming", without its integer rounding step).

An INT8 layer does not see the input ``x`` the FP32 model computes but a quantized one ``x~``:
per tensor, ``x~ = Q(x)`` (rounded to ``amax / 127`` steps and clipped to ``±amax``), plus, deep in
the network, whatever the upstream INT8 layers changed. This module refits each layer's FP32
weights and bias so that, **on the input it really sees**, it reproduces the FP32 layer's output
as well as a linear layer can, in the least-squares sense over the calibration data. The refitted
weights are written into the **FP32 model** (folded, as TensorRT folds it), which the Q/DQ export
(:func:`trtq.precision.export.export_qdq`, TensorRT 11) or a TensorRT 10 build then quantizes per
channel as usual; the activation ranges (the cache) do not change.

For every unpinned INT8 Conv (grouped and depthwise included; 1-D or 2-D), Gemm (``transA = 0``)
and MatMul with a constant 2-D weight (the layers of
:func:`trtq.precision.bias_correction.correction_targets`; ConvTranspose is left alone), and per
output channel ``c`` (its group's input channels for a grouped Conv):

    min over w', b' of  sum_p (w'·x~_p + b' - (w_c·x_p + b_c))^2  +  lambda * ||w' - w_c||^2

over patches ``p`` (im2col columns: exactly the values one output position reads, strides, pads
and dilations applied; Gemm/MatMul: rows of the input) of the calibration data, with ``lambda =
alpha * mean(diag(G))``, ``G`` the Gram matrix of the ``x~`` patches of the channel's group (so
``alpha`` is relative to the mean input power times the number of patches; the bias is not
regularised). ``alpha -> inf`` leaves the weights as they are; ``alpha = 0`` is the plain
least-squares fit. The normal equations ``(G + lambda D) v = C u + lambda D u`` (``v = [w'; b']``,
``u = [w; b]``, ``C u`` the ``x~`` patches times the FP32 outputs, ``D`` the identity without
the bias entry) are accumulated in float64 over a fixed, seeded sample of at most ``positions`` output
positions per batch and layer, and solved once per group.

Modes:

- ``own`` (the default): ``x~ = Q(x)``, the FP32 input fake-quantized per tensor with the layer's
  calibrated input amax (round half to even, saturated to ``[-128, 127] * scale`` as QuantizeLinear
  with zero point 0 does in TensorRT, ONNX Runtime and the export): each layer is
  fitted alone against its own input rounding, from one FP32 pass over the data;
- ``sequential``: ``x~`` is the input the layer sees in the INT8 emulation of the model with every
  corrected layer upstream of it already corrected (the layer-by-layer sequential fit, exactly).
  The layers are fitted in *waves*: a layer's wave is one more than the largest wave of the
  corrected layers it depends on, and each wave is fitted on one emulation pass of the model
  corrected so far (layers of one wave cannot see each other, so nothing is approximated; the
  cost is one emulation pass over the data per wave, after one FP32 pass whose sampled layer
  outputs are kept in memory: 4 bytes x positions x output channels per layer and batch). Fitting a layer on inputs
  whose upstream layers are corrected *afterwards* over-corrects: measured on PP-OCRv4 det, four
  contiguous blocks of layers each fitted on one pass drove the output to zero (BENCHMARKS.md).

The target output is always the **original** FP32 layer on the FP32 input (``w·x + b``), never the
corrected model. Units: weights and biases in the model's units; the report's output MSEs are in
squared output units, per output value, on the sampled calibration positions: ``mse_before`` with
the original weights and ``mse_after`` with the corrected ones, both quantized per channel to INT8
as deployed; ``fit_before`` / ``fit_after`` the same with unquantized weights (the quantity the
solve minimises, so ``fit_after <= fit_before`` always). Known limits: like bias correction it is
only as representative as the calibration data (never fit on held-out data); weights are
refitted in float and only then rounded per channel, so the rounding of ``w'`` itself is not
optimised; a larger ``max |w'|`` coarsens that channel's INT8 weight scale (``alpha`` bounds it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from trtq._core.errors import InputError
from trtq._core.onnx_model import tensor_readers
from trtq._core.progress import ProgressFn, null_progress
from trtq.precision import qdq
from trtq.precision.bias_correction import Target, bias_vector, correction_targets, prepare_biases, shift_bias
from trtq.precision.emulate import EmulationConfig, apply_plan, folded, plan_emulation

logger = logging.getLogger(__name__)

MODES = ("own", "sequential")
#: ``lambda = alpha * mean(diag(G))``: BENCHMARKS.md, "Least-squares weight correction".
DEFAULT_ALPHA = 0.01
DEFAULT_POSITIONS = 2048


@dataclass(frozen=True)
class LayerFit:
    """One corrected layer: its node, op and per-layer figures (module docstring for units)."""

    node: str
    op_type: str
    weight: str  # the initializer holding the corrected weight
    channels: int
    groups: int
    samples: int  # patches the fit saw (sampled positions x batches)
    rel_weight_change: float  # mean over channels of ||w' - w|| / ||w||
    max_abs_ratio: float  # max |w'| / max |w| over the whole weight (>1: coarser INT8 scales)
    mse_before: float
    mse_after: float
    fit_before: float
    fit_after: float
    output_power: float  # mean (w·x + b)^2 on the same samples: the scale of the MSEs

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class WeightCorrectionReport:
    """What :func:`correct_weights` did, per layer (``skipped``: node -> why not corrected)."""

    mode: str = "own"
    alpha: float = DEFAULT_ALPHA
    positions: int = DEFAULT_POSITIONS
    passes: int = 1  # passes over the data: 1 for own; sequential: 1 FP32 + 1 emulation per wave
    samples: int = 0
    placement: str = "explicit"
    layers: list[LayerFit] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "alpha": self.alpha,
            "positions": self.positions,
            "passes": self.passes,
            "samples": self.samples,
            "placement": self.placement,
            "layers": [f.to_dict() for f in self.layers],
            "skipped": dict(self.skipped),
        }


@dataclass
class _Fit:
    """One target's linear map as ``y[p, c] = sum_k A[g(c), p, k] u[k, c]`` (last k = bias)."""

    target: Target
    weight: str  # initializer name
    layout: str  # "conv" | "gemm-t" (B is [N, K]) | "gemm" / "matmul" (B is [K, N])
    scale: float  # Gemm alpha: W_eff = scale * B(^T)
    groups: int
    conv: dict | None  # Conv geometry (kernel, strides, pads, dilations), None for Gemm/MatMul
    u: np.ndarray  # [groups, K + 1, channels // groups] original weights and bias, float64
    input_fp32: str  # anchor input 0 in the FP32 model
    input_q: str = ""  # anchor input 0 in the emulation (sequential), or "" (own)
    amax: float = 0.0  # the input's amax (own)
    gram: np.ndarray | None = None  # [groups, K + 1, K + 1]  sum A~^T A~
    cross: np.ndarray | None = None  # [groups, K + 1, channels // groups]  sum A~^T (A u)
    power: np.ndarray | None = None  # [channels] sum (A u)^2
    ys: list[np.ndarray] | None = None  # sequential: per batch, the FP32 output on the sampled positions
    samples: int = 0


def correct_weights(
    model: onnx.ModelProto,
    batches: Iterable[Mapping[str, np.ndarray]],
    amax: Mapping[str, float],
    *,
    mode: str = "own",
    alpha: float = DEFAULT_ALPHA,
    positions: int = DEFAULT_POSITIONS,
    placement: str = "explicit",
    pins: Iterable[str] = (),
    seed: int = 0,
    threads: int | None = None,
    progress: ProgressFn = null_progress,
) -> tuple[onnx.ModelProto, WeightCorrectionReport]:
    """The folded FP32 ``model`` with each INT8 layer's weights and bias refitted by ridge
    regression to its FP32 output on the input it sees in INT8, and a report.

    ``batches``: calibration feeds (input name -> array); ``amax``: the activation ranges (tensor
    -> amax, as in the calibration cache); ``mode`` ``own`` | ``sequential`` and ``alpha`` >= 0
    (``inf``: no change) as in the module docstring; ``positions``: output positions sampled per
    batch and layer (seeded by ``seed``); ``placement`` and ``pins`` as in :class:`~trtq.precision.emulate.EmulationConfig`.
    Export or build the returned model with the same ``amax``, placement and pins. ``progress``
    counts batches over all passes.
    """
    if mode not in MODES:
        raise InputError(f"unknown weight correction mode '{mode}'; choose one of: {', '.join(MODES)}")
    if not alpha >= 0:  # also rejects NaN
        raise InputError(f"weight correction alpha must be >= 0 (got {alpha})")
    if positions < 1:
        raise InputError(f"weight correction needs at least one position per batch (got {positions})")
    batches = list(batches)
    if not batches:
        raise InputError("weight correction needs calibration data (--data)")
    config = EmulationConfig("int8", placement, frozenset(pins))
    original = folded(model)
    base = onnx.ModelProto()
    base.CopyFrom(original)
    plan = plan_emulation(base, config, amax)
    targets = correction_targets(plan)
    report = WeightCorrectionReport(mode, alpha, positions, 1, len(batches), placement)
    input_amax = {  # by node name: prepare_biases may insert nodes and shift the indices
        t.node: plan.amax[plan.model.graph.node[t.node_index].input[0]]
        for t in targets
        if (t.node_index, 0) in plan.plan_of_node[t.node_index].quant_edges
    }
    prepare_biases(base, targets)
    fits: list[_Fit] = []
    for t in targets:
        why = "input not quantized" if t.node not in input_amax else ""
        fit = None if why else _make_fit(base, t, input_amax[t.node])
        if isinstance(fit, str) or fit is None:
            report.skipped[t.node] = why or str(fit)
            continue
        fits.append(fit)
    if not fits:
        logger.info("weight correction: no INT8 layer to correct")
        return base, report
    blocks = [fits] if mode == "own" else _waves(base, fits)
    report.passes = len(blocks) + (mode == "sequential")
    progress(0, total=report.passes * len(batches), description=f"weight correction ({mode})")
    if mode == "sequential":
        _fp32_targets(original, fits, batches, positions, seed, threads, progress)
    for block in blocks:
        model_run = original
        if mode == "sequential":
            model_run = apply_plan(plan_emulation(base, config, amax))
            by_output = {n.output[0]: n for n in model_run.graph.node if n.output}
            for f in block:
                anchor = base.graph.node[f.target.node_index]
                f.input_q = by_output[anchor.output[0]].input[0]
        _accumulate(model_run, block, batches, positions, seed, threads, progress)
        for f in block:
            report.layers.append(_solve_and_write(base, f, alpha))
    logger.info(
        "weight correction (%s, alpha %g): %d layer(s), %d batch(es)", mode, alpha, len(fits), len(batches)
    )
    return base, report


def _waves(model: onnx.ModelProto, fits: list[_Fit]) -> list[list[_Fit]]:
    """``fits`` grouped so that no fit depends (through the graph) on another of its group, each
    group after every group it depends on."""
    at = {f.target.node_index: f for f in fits}
    wave_of: dict[str, int] = {}  # tensor -> 1 + the largest wave of a fit upstream of it (0: none)
    waves: dict[int, list[_Fit]] = {}
    for i, node in enumerate(model.graph.node):  # topological order
        up = max((wave_of.get(t, 0) for t in node.input), default=0)
        if i in at:
            waves.setdefault(up, []).append(at[i])
            up += 1
        for o in node.output:
            wave_of[o] = up
    return [waves[w] for w in sorted(waves)]


def _make_fit(model: onnx.ModelProto, t: Target, amax: float) -> _Fit | str:
    """The target's weights as ``u`` and its geometry, or why it is not corrected."""
    graph = model.graph
    node = graph.node[t.node_index]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    bias = bias_vector(model, t)
    if bias is None:
        return "no per-channel bias"
    inits = {i.name: i for i in graph.initializer}
    # a weight shared with other nodes: this layer gets its own copy
    if len(tensor_readers(graph).get(node.input[1], ())) > 1:
        name = f"{t.node}__trtq_wc_weight"
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[node.input[1]]), name))
        node.input[1] = name
        inits[name] = graph.initializer[-1]
    w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    conv = None
    scale, groups = 1.0, 1
    if t.op_type == "Conv":
        if w.ndim not in (3, 4):
            return f"{w.ndim - 2}-D convolution"
        spatial = w.ndim - 2
        groups = int(attrs.get("group", 1))
        conv = {
            "kernel": tuple(w.shape[2:]),
            "strides": tuple(attrs.get("strides", [1] * spatial)),
            "dilations": tuple(attrs.get("dilations", [1] * spatial)),
            "pads": tuple(attrs.get("pads", [0] * 2 * spatial)),
            "auto_pad": attrs.get("auto_pad", b"NOTSET"),
        }
        out = w.shape[0]
        wmat = w.reshape(groups, out // groups, -1).transpose(0, 2, 1)  # [g, K, out/g]
        layout = "conv"
    elif t.op_type == "Gemm":
        if attrs.get("transA", 0):
            return "Gemm with transA"
        scale = float(attrs.get("alpha", 1.0))
        layout = "gemm-t" if attrs.get("transB", 0) else "gemm"
        wmat = (w if layout == "gemm" else w.T)[None] * scale  # [1, K, N]
    elif t.op_type == "MatMul":
        if w.ndim != 2:
            return "batched MatMul weight"
        layout = "matmul"
        wmat = w[None]
    else:
        return f"{t.op_type} is not refitted"
    per = t.channels // groups
    u = np.concatenate([wmat, bias.reshape(groups, 1, per)], axis=1)
    return _Fit(t, node.input[1], layout, scale, groups, conv, u, node.input[0], amax=amax)


def _fp32_targets(
    original: onnx.ModelProto,
    fits: list[_Fit],
    batches: list[Mapping[str, np.ndarray]],
    positions: int,
    seed: int,
    threads: int | None,
    progress: ProgressFn,
) -> None:
    """``sequential``: every fit's FP32 output ``A u`` on its sampled positions, per batch (float32),
    from one FP32 pass, so that each wave needs only an emulation pass."""
    from trtq.runtime.onnxruntime import run_marked

    for f in fits:
        f.ys = []
    names = [f.input_fp32 for f in fits]
    for b, xs in enumerate(run_marked(original, names, batches, threads=threads)):
        for f in fits:
            a = _patches(f, np.asarray(xs[f.input_fp32], np.float32), _rng(seed, f, b), positions)
            f.ys.append(np.matmul(a, f.u).astype(np.float32))
        progress(1)


def _accumulate(
    model: onnx.ModelProto,
    fits: list[_Fit],
    batches: list[Mapping[str, np.ndarray]],
    positions: int,
    seed: int,
    threads: int | None,
    progress: ProgressFn,
) -> None:
    """Gram, ``A~^T y`` and output power of every fit over the batches. ``own``: ``model`` is the
    FP32 model, ``x~ = Q(x)``; ``sequential``: ``model`` is the emulation (``x~`` its anchor input,
    ``y`` from :func:`_fp32_targets`)."""
    from trtq.runtime.onnxruntime import run_marked

    emulated = all(f.ys is not None for f in fits)
    for f in fits:
        k = f.u.shape[1]
        f.gram = np.zeros((f.groups, k, k))
        f.cross = np.zeros(f.u.shape)
        f.power = np.zeros(f.target.channels)
        f.samples = 0
    names = [f.input_q if emulated else f.input_fp32 for f in fits]
    for b, xs in enumerate(run_marked(model, names, batches, threads=threads)):
        for f in fits:
            if emulated:
                xq = np.asarray(xs[f.input_q], np.float32)
                y = f.ys[b].astype(np.float64)
            else:
                x = np.asarray(xs[f.input_fp32], np.float32)
                xq = qdq.fake_quantize_activation(x, f.amax)
                y = np.matmul(_patches(f, x, _rng(seed, f, b), positions), f.u)  # [g, P, out/g]
            aq = _patches(f, xq, _rng(seed, f, b), positions)
            if f.groups == 1:  # 2-D A^T A: numpy computes it as a symmetric rank-k update
                f.gram[0] += aq[0].T @ aq[0]
            else:
                f.gram += np.einsum("gpk,gpl->gkl", aq, aq)  # many small groups
            f.cross += np.matmul(aq.transpose(0, 2, 1), y)
            f.power += np.sum(y * y, axis=1).reshape(-1)
            f.samples += aq.shape[1]
        progress(1)
    for f in fits:
        f.ys = None


def _rng(seed: int, f: _Fit, batch: int) -> np.random.Generator:
    """The positions sampled for ``f`` in ``batch``: the same for its FP32 and quantized input."""
    return np.random.default_rng([seed, f.target.node_index, batch])


def _patches(f: _Fit, x: np.ndarray, rng: np.random.Generator, positions: int) -> np.ndarray:
    """``[groups, P, K + 1]`` float64: the sampled im2col columns of ``x`` (a trailing 1 for the
    bias), in the weight's flattening order (Conv: input channel of the group, then kernel rows,
    columns; Gemm/MatMul: the input's last axis)."""
    if f.conv is None:
        rows = x.reshape(-1, x.shape[-1])
        pick = _sample(rng, rows.shape[0], positions)
        a = rows[pick].astype(np.float64)[None]
    else:
        a = _conv_patches(x, f.conv, f.groups, rng, positions)
    ones = np.ones(a.shape[:2] + (1,))
    return np.concatenate([a, ones], axis=2)


def _sample(rng: np.random.Generator, total: int, positions: int) -> np.ndarray:
    if total <= positions:
        return np.arange(total)
    return np.sort(rng.choice(total, positions, replace=False))


def _conv_patches(x: np.ndarray, conv: dict, groups: int, rng: np.random.Generator, positions: int):
    if x.ndim == 3:  # 1-D: a 2-D convolution of height 1
        x = x[:, :, None, :]
        conv = {
            "kernel": (1, *conv["kernel"]),
            "strides": (1, *conv["strides"]),
            "dilations": (1, *conv["dilations"]),
            "pads": (0, conv["pads"][0], 0, conv["pads"][1]),
            "auto_pad": conv["auto_pad"],
        }
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = conv["kernel"], conv["strides"], conv["dilations"]
    pads = _pads(conv, (h, w))
    oh = (h + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    pick = _sample(rng, n * oh * ow, positions)
    ni, rest = np.divmod(pick, oh * ow)
    hi, wi = np.divmod(rest, ow)
    rows = hi[:, None] * sh + np.arange(kh)[None, :] * dh  # [P, kh]
    cols = wi[:, None] * sw + np.arange(kw)[None, :] * dw  # [P, kw]
    patch = xp[ni[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # [P, kh, kw, C]
    patch = patch.transpose(0, 3, 1, 2).reshape(len(pick), groups, -1)  # [P, g, C/g * kh * kw]
    return patch.transpose(1, 0, 2).astype(np.float64)


def _pads(conv: dict, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """ONNX pads ``(top, left, bottom, right)``, ``auto_pad`` resolved."""
    auto = conv["auto_pad"]
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("", "NOTSET"):
        return tuple(int(p) for p in conv["pads"])  # type: ignore[return-value]
    if auto == "VALID":
        return (0, 0, 0, 0)
    begin, end = [], []
    for dim, k, s, d in zip(size, conv["kernel"], conv["strides"], conv["dilations"], strict=True):
        out = -(-dim // s)
        total = max(0, (out - 1) * s + d * (k - 1) + 1 - dim)
        small, large = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else large)
        end.append(large if auto == "SAME_UPPER" else small)
    return (begin[0], begin[1], end[0], end[1])


def _solve_and_write(model: onnx.ModelProto, f: _Fit, alpha: float) -> LayerFit:
    """Solve every group's ridge problem, write ``w'`` and ``b'`` into ``model``, and measure."""
    g, k1, _ = f.gram.shape
    k = k1 - 1
    u = f.u
    if np.isinf(alpha):
        v = u.copy()
    else:
        v = np.empty_like(u)
        reg = np.eye(k1)
        reg[k, k] = 0.0
        for j in range(g):
            lam = alpha * float(np.mean(np.diag(f.gram[j])[:k]))
            lhs = f.gram[j] + lam * reg
            rhs = f.cross[j] + lam * (reg @ u[j])
            try:
                v[j] = np.linalg.solve(lhs, rhs)
            except np.linalg.LinAlgError:  # singular (alpha 0, dead inputs): minimum-norm answer
                v[j] = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    w_old, w_new = _weight_of(f, u), _weight_of(f, v)
    axis = 0 if f.layout in ("conv", "gemm-t") else 1
    uq, vq = _with_weight(f, u, _fq(w_old, axis)), _with_weight(f, v, _fq(w_new, axis))
    n = max(f.samples, 1)
    mse = [float(np.sum(_sq_error(f, z))) / (n * f.target.channels) for z in (uq, vq, u, v)]
    _write(model, f, v)
    num = np.linalg.norm((v - u)[:, :k, :], axis=1).reshape(-1)
    den = np.linalg.norm(u[:, :k, :], axis=1).reshape(-1)
    ratio = float(np.max(np.abs(w_new)) / max(np.max(np.abs(w_old)), 1e-30))
    return LayerFit(
        node=f.target.node,
        op_type=f.target.op_type,
        weight=f.weight,
        channels=f.target.channels,
        groups=g,
        samples=f.samples,
        rel_weight_change=float(np.mean(num / np.maximum(den, 1e-30))),
        max_abs_ratio=ratio,
        mse_before=mse[0],
        mse_after=mse[1],
        fit_before=mse[2],
        fit_after=mse[3],
        output_power=float(np.sum(f.power)) / (n * f.target.channels),
    )


def _sq_error(f: _Fit, v: np.ndarray) -> np.ndarray:
    """Per group and channel, ``sum_p (A~_p v - A_p u)^2`` from the accumulated Gram matrices."""
    quad = np.sum(np.matmul(f.gram, v) * v, axis=1)
    cross = np.einsum("gkc,gkc->gc", v, f.cross)
    return np.maximum(quad - 2 * cross + f.power.reshape(quad.shape), 0.0)


def _weight_of(f: _Fit, v: np.ndarray) -> np.ndarray:
    """``v``'s weight part in the initializer's layout (float64)."""
    w = v[:, :-1, :]
    if f.layout == "conv":
        out = f.target.channels
        kernel = f.conv["kernel"]
        return w.transpose(0, 2, 1).reshape(out, -1, *kernel)
    w = w[0] / f.scale
    return w if f.layout in ("gemm", "matmul") else w.T


def _with_weight(f: _Fit, v: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``v`` with its weight part replaced by ``weight`` (initializer layout)."""
    out = v.copy()
    if f.layout == "conv":
        g = f.groups
        out[:, :-1, :] = weight.reshape(g, weight.shape[0] // g, -1).transpose(0, 2, 1)
    else:
        w = weight if f.layout in ("gemm", "matmul") else weight.T
        out[0, :-1, :] = w * f.scale
    return out


def _fq(w: np.ndarray, axis: int) -> np.ndarray:
    return qdq.fake_quantize_weight(w.astype(np.float32), axis).astype(np.float64)


def _write(model: onnx.ModelProto, f: _Fit, v: np.ndarray) -> None:
    init = next(i for i in model.graph.initializer if i.name == f.weight)
    init.CopyFrom(numpy_helper.from_array(_weight_of(f, v).astype(np.float32), f.weight))
    old = bias_vector(model, f.target)
    if old is not None:
        shift_bias(model, f.target, old - v[:, -1, :].reshape(-1))
