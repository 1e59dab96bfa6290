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

For every unpinned INT8 Conv (grouped and depthwise included; 1-D or 2-D), ConvTranspose
(``group = 1``; below), Gemm (``transA = 0``) and MatMul with a constant 2-D weight (the layers of
:func:`trtq.precision.bias_correction.correction_targets`), and per output channel ``c`` (its
group's input channels for a grouped Conv):

    min over w', b' of  sum_p (w'·x~_p + b' - (w_c·x_p + b_c))^2  +  lambda * ||w' - w_c||^2

over patches ``p`` (im2col columns: exactly the values one output position reads, strides, pads
and dilations applied; Gemm/MatMul: rows of the input) of the calibration data, with ``lambda =
alpha * mean(diag(G))``, ``G`` the Gram matrix of the ``x~`` patches of the channel's group (so
``alpha`` is relative to the mean input power times the number of patches; the bias is not
regularised). ``alpha -> inf`` leaves the weights as they are; ``alpha = 0`` is the plain
least-squares fit. The normal equations ``(G + lambda D) v = C u + lambda D u`` (``v = [w'; b']``,
``u = [w; b]``, ``C u`` the ``x~`` patches times the FP32 outputs, ``D`` the identity without
the bias entry) are accumulated over a fixed, seeded sample of at most ``positions`` output
positions per batch and layer (``G`` from the INT8 codes of ``x~`` in float32 BLAS on row chunks
that keep it exact, ``C u`` in float32 BLAS but for its bias row, sums over batches in float64:
:func:`_accumulate`; ``w·x + b`` is the layer's output as the FP32 model computes it), and solved for all groups in one batched solve (a singular group alone: minimum
norm). Layers reading the same ``x~`` at the same positions (the Q/K/V projections of a
transformer) share one Gram product.

A ConvTranspose (weight ``[Cin, Cout, k...]``, quantized per output channel along axis 1, as
:func:`trtq.precision.qdq.weight_axis` and the export do) is the same linear map read the other
way: output ``o`` receives input ``i`` through tap ``k`` where ``o = i * stride - pad + k *
dilation``, so the output positions of one *phase* (``o mod stride`` per axis) all read the same
subset of taps. The fit is solved per phase (``Cin x taps-of-the-phase`` unknowns per channel
instead of ``Cin x k^2``, the zero blocks never formed), the phases coupled only by their shared
bias, which is eliminated exactly (Schur complement); a ConvTranspose whose phases read unequal
numbers of taps (e.g. ``k = 3``, stride 2), a grouped one (per-tensor weights) or one with
``output_shape`` / ``auto_pad`` is skipped and the report says why.

Modes:

- ``own`` (the default): ``x~ = Q(x)``, the FP32 input fake-quantized per tensor with the layer's
  calibrated input amax (round half to even, saturated to ``[-128, 127] * scale`` as QuantizeLinear
  with zero point 0 does in TensorRT, ONNX Runtime and the export): each layer is
  fitted alone against its own input rounding, from one FP32 pass over the data;
- ``sequential``: ``x~`` is the input the layer sees in the INT8 emulation of the model with every
  corrected layer upstream of it already corrected (the layer-by-layer sequential fit, exactly).
  The layers are fitted in *waves*: a layer's wave is one more than the largest wave of the
  corrected layers it depends on, and each wave is fitted on one emulation pass of the model
  corrected so far (layers of one wave cannot see each other, so nothing is approximated), after
  one FP32 pass whose sampled layer outputs are kept in memory (4 bytes x positions x output
  channels per layer and batch). A wave's pass runs only the part of the emulation that the
  previous wave's corrections changed and that leads to this wave's inputs; the tensors it starts
  from were computed by earlier passes and kept (``STORE_BYTES`` at most; beyond, recomputed),
  so the waves together cost about one emulation pass over the data. Fitting a layer on inputs
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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from trtq._core.errors import InputError
from trtq._core.onnx_model import tensor_readers, tensor_types
from trtq._core.progress import ProgressFn, null_progress
from trtq.precision import qdq
from trtq.precision.adaround import adaround
from trtq.precision.bias_correction import (
    Target,
    bias_name,
    bias_vector,
    correction_targets,
    prepare_biases,
    shift_bias,
)
from trtq.precision.emulate import (
    FP8_OPSET,
    EmulationConfig,
    apply_plan,
    at_least_opset,
    folded,
    plan_emulation,
    refresh_initializers,
)

logger = logging.getLogger(__name__)

MODES = ("own", "sequential")
#: How the refitted weights become INT8 steps: to the nearest (what TensorRT and the export do with
#: any float weight), or up or down by :func:`trtq.precision.adaround.adaround`.
ROUNDINGS = ("nearest", "adaround")
#: AdaRound's pull toward the float weights, ``ridge * mean(diag(G))``, and the bias it keeps (the
#: float one it is given, not a refit): of the four variants measured on held-out images (bias
#: refit or kept, ridge 0 or 0.1), the only one no worse than nearest rounding on every model
#: (BENCHMARKS.md, "AdaRound").
ADAROUND_RIDGE = 0.1
#: ``lambda = alpha * mean(diag(G))``: BENCHMARKS.md, "Least-squares weight correction".
DEFAULT_ALPHA = 0.01
DEFAULT_POSITIONS = 2048
#: ``sequential``: bytes of emulation tensors kept from one wave's pass for later passes (a tensor
#: beyond it is computed again when needed: slower, same values).
STORE_BYTES = 2 << 30


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
    flipped: int = 0  # adaround: weights rounded away from their nearest INT8 step

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class WeightCorrectionReport:
    """What :func:`correct_weights` did, per layer (``skipped``: node -> why not corrected)."""

    mode: str = "own"
    alpha: float = DEFAULT_ALPHA
    rounding: str = "nearest"
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
            "rounding": self.rounding,
            "positions": self.positions,
            "passes": self.passes,
            "samples": self.samples,
            "placement": self.placement,
            "layers": [f.to_dict() for f in self.layers],
            "skipped": dict(self.skipped),
        }


@dataclass
class NormalEquations:
    """One target's least-squares problem over the calibration data (:func:`own_equations`). Its
    linear map is ``y[p, c] = sum_k A[j, p, k] u[j, k, c]`` (last k = bias), ``j``
    a block: a group of a grouped Conv (its own channels), or, for a ConvTranspose, an output
    phase (``phases``: the same channels, the bias shared by all phases)."""

    target: Target
    weight: str  # initializer name
    layout: str  # "conv" | "convT" | "gemm-t" (B is [N, K]) | "gemm" / "matmul" (B is [K, N])
    scale: float  # Gemm alpha: W_eff = scale * B(^T)
    groups: int
    conv: dict | None  # Conv/ConvTranspose geometry, None for Gemm/MatMul
    u: np.ndarray  # [blocks, K + 1, channels per block] original weights and bias, float64
    axis: int | None  # the weight's per-channel quantization axis (qdq.weight_axis)
    input_fp32: str  # anchor input 0 in the FP32 model
    bias: str  # the bias initializer (bias_correction.bias_name)
    output_fp32: str  # the anchor's output (bias included) in the FP32 model
    input_q: str = ""  # anchor input 0 in the emulation (sequential), or "" (own)
    amax: float = 0.0  # the input's amax (own)
    qtype: str = "int8"  # how the input is quantized (own): "int8" or "fp8"
    shared: bool = False  # the model's weight is shared with other nodes; ``weight`` names this layer's copy
    phases: list[tuple[tuple[int, ...], tuple[int, ...]]] | None = None  # ConvTranspose: taps per phase
    gram: np.ndarray | None = None  # [blocks, K + 1, K + 1]  sum A~^T A~
    cross: np.ndarray | None = None  # [blocks, K + 1, channels per block]  sum A~^T (A u)
    power: np.ndarray | None = None  # [channels] sum (A u)^2
    ys: list[list[np.ndarray]] | None = None  # sequential: per batch and block, the sampled FP32 output
    samples: int = 0


def correct_weights(
    model: onnx.ModelProto,
    batches: Iterable[Mapping[str, np.ndarray]],
    amax: Mapping[str, float],
    *,
    mode: str = "own",
    alpha: float = DEFAULT_ALPHA,
    rounding: str = "nearest",
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
    if rounding not in ROUNDINGS:
        raise InputError(f"unknown weight rounding '{rounding}'; choose one of: {', '.join(ROUNDINGS)}")
    if not alpha >= 0:  # also rejects NaN
        raise InputError(f"weight correction alpha must be >= 0 (got {alpha})")
    if positions < 1:
        raise InputError(f"weight correction needs at least one position per batch (got {positions})")
    batches = list(batches)
    if not batches:
        raise InputError("weight correction needs calibration data (--data)")
    config = EmulationConfig("int8", placement, frozenset(pins))
    original, base, fits, skipped = _prepare(model, amax, config)
    report = WeightCorrectionReport(mode, alpha, rounding, positions, 1, len(batches), placement)
    report.skipped.update(skipped)
    if not fits:
        logger.info("weight correction: no INT8 layer to correct")
        return base, report
    blocks = [fits] if mode == "own" else _waves(base, fits)
    report.passes = len(blocks) + (mode == "sequential")
    progress(0, total=report.passes * len(batches), description=f"weight correction ({mode})")
    if mode == "own":
        _accumulate(fits, _own_values(original, fits, batches, threads, progress), positions, seed)
        report.layers = [_solve_and_write(base, f, alpha, rounding) for f in fits]
    else:
        _fp32_targets(original, fits, batches, positions, seed, threads, progress)
        # One plan and one emulation for every wave: a wave changes initializer values only.
        wave_plan = plan_emulation(base, config, amax)
        if wave_plan.model is not base:  # folded() returns a folded model as is
            raise AssertionError("weight correction: the emulation plan must read the corrected model")
        emulated = apply_plan(wave_plan)
        by_output = {n.output[0]: n for n in emulated.graph.node if n.output}
        for f in fits:
            f.input_q = by_output[base.graph.node[f.target.node_index].output[0]].input[0]
        passes = _WavePasses(emulated, blocks, threads)
        for i, block in enumerate(blocks):
            values = passes.run(i, emulated, batches)
            _accumulate(block, _counted(values, progress), positions, seed)
            report.layers.extend(_solve_and_write(base, f, alpha, rounding) for f in block)
            refresh_initializers(emulated, wave_plan, {n for f in block for n in (f.weight, f.bias) if n})
        logger.debug("weight correction: at most %.0f MiB of wave inputs kept", passes.peak_bytes / 2**20)
    logger.info(
        "weight correction (%s, alpha %g): %d layer(s), %d batch(es)", mode, alpha, len(fits), len(batches)
    )
    return base, report


def _prepare(
    model: onnx.ModelProto, amax: Mapping[str, float], config: EmulationConfig
) -> tuple[onnx.ModelProto, onnx.ModelProto, list[NormalEquations], dict[str, str]]:
    """``(original, base, equations, skipped)``: the folded model, a copy with a bias on every
    target (the one corrected), one unaccumulated :class:`NormalEquations` per quantized layer of
    ``config`` (``fp8`` precisions: the FP8 layers, inputs quantized to FP8), and node -> why
    not for the layers left out."""
    qtype = "fp8" if config.fp8 else "int8"
    original = folded(model)
    if config.fp8:  # raised as the FP8 plan and export raise it (and folded again), so that the
        original = folded(at_least_opset(original, FP8_OPSET))  # plan reads ``base`` itself
    base = onnx.ModelProto()
    base.CopyFrom(original)
    plan = plan_emulation(base, config, amax)
    targets = correction_targets(plan, (qtype,))
    input_amax = {  # by node name: prepare_biases may insert nodes and shift the indices
        t.node: plan.amax[plan.model.graph.node[t.node_index].input[0]]
        for t in targets
        if (t.node_index, 0) in plan.plan_of_node[t.node_index].quant_edges
    }
    prepare_biases(base, targets)
    fits: list[NormalEquations] = []
    skipped: dict[str, str] = {}
    for t in targets:
        why = "input not quantized" if t.node not in input_amax else ""
        fit = None if why else _make_fit(base, t, input_amax[t.node])
        if isinstance(fit, str) or fit is None:
            skipped[t.node] = why or str(fit)
            continue
        fit.qtype = qtype
        fits.append(fit)
    return original, base, fits, skipped


def own_equations(
    model: onnx.ModelProto,
    batches: Iterable[Mapping[str, np.ndarray]],
    amax: Mapping[str, float],
    config: EmulationConfig,
    *,
    positions: int = DEFAULT_POSITIONS,
    seed: int = 0,
    threads: int | None = None,
    progress: ProgressFn = null_progress,
) -> tuple[list[NormalEquations], dict[str, str]]:
    """Every quantized layer's normal equations of the ``own`` mode (its FP32 input quantized per
    tensor as ``config`` quantizes it, its FP32 output as the target), accumulated over
    ``batches`` in one FP32 pass, and node -> why not for the layers left out. The layers' weight
    names are the folded ``model``'s (a weight shared by several nodes is copied under a new
    name, and its equations say ``shared``). ``progress`` counts batches."""
    original, base, fits, skipped = _prepare(model, amax, config)
    batches = list(batches)
    progress(0, total=len(batches), description="layer statistics")
    if fits:
        _accumulate(fits, _own_values(original, fits, batches, threads, progress), positions, seed)
    return fits, skipped


def channel_errors(f: NormalEquations, weights: list[np.ndarray]) -> np.ndarray:
    """``[channels, len(weights)]``: for each candidate weight (initializer layout; the bias as
    it is), each output channel's ``sum_p (A~_p v - A_p u)^2`` over the sampled positions: the
    squared error of the layer's output on its quantized input against FP32, from the
    accumulated matrices.

    Computed as the original weights' error plus ``d^T G d + 2 d^T (G u - C u)`` with ``d = v -
    u``: the candidates differ only in those terms, which hold no cancellation of large sums, so
    candidates whose errors are close still rank in the right order."""
    u = f.u
    base = _channel_sq(f, [u])[:, 0]
    residual = np.matmul(f.gram, u) - f.cross  # A~^T (A~ u - A u): [blocks, K + 1, channels per block]
    out = []
    for w in weights:
        d = _with_weight(f, u, w.astype(np.float64)) - u
        e = np.sum(np.matmul(f.gram, d) * d, axis=1) + 2 * np.sum(d * residual, axis=1)
        out.append(e.reshape(-1) if f.phases is None else np.sum(e, axis=0))
    return np.maximum(base[:, None] + np.stack(out, axis=1), 0.0)


def weight_of(f: NormalEquations) -> np.ndarray:
    """The layer's original weight in its initializer's layout (float64)."""
    return _weight_of(f, f.u)


def _counted(
    values: Iterable[dict[str, np.ndarray]], progress: ProgressFn
) -> Iterator[dict[str, np.ndarray]]:
    for v in values:
        yield v
        progress(1)


def _waves(model: onnx.ModelProto, fits: list[NormalEquations]) -> list[list[NormalEquations]]:
    """``fits`` grouped so that no fit depends (through the graph) on another of its group, each
    group after every group it depends on."""
    at = {f.target.node_index: f for f in fits}
    wave_of: dict[str, int] = {}  # tensor -> 1 + the largest wave of a fit upstream of it (0: none)
    waves: dict[int, list[NormalEquations]] = {}
    for i, node in enumerate(model.graph.node):  # topological order
        up = max((wave_of.get(t, 0) for t in node.input), default=0)
        if i in at:
            waves.setdefault(up, []).append(at[i])
            up += 1
        for o in node.output:
            wave_of[o] = up
    return [waves[w] for w in sorted(waves)]


def _make_fit(model: onnx.ModelProto, t: Target, amax: float) -> NormalEquations | str:
    """The target's weights as ``u`` and its geometry, or why it is not corrected."""
    graph = model.graph
    node = graph.node[t.node_index]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    bias = bias_vector(model, t)
    if bias is None:
        return "no per-channel bias"
    inits = {i.name: i for i in graph.initializer}
    shared = len(tensor_readers(graph).get(node.input[1], ())) > 1
    if shared:  # a weight shared with other nodes: this layer gets its own copy
        name = f"{t.node}__trtq_wc_weight"
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[node.input[1]]), name))
        node.input[1] = name
        inits[name] = graph.initializer[-1]
    w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    axis = qdq.weight_axis(t.op_type, 1, w.shape, attrs)
    conv, phases = None, None
    scale, groups = 1.0, 1
    if t.op_type in ("Conv", "ConvTranspose"):
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
        if t.op_type == "ConvTranspose":
            why = _transpose_unsupported(attrs, groups, conv)
            if why:
                return why
            conv["output_padding"] = tuple(attrs.get("output_padding", [0] * spatial))
            phases = _phases(conv)
            if phases is None:
                return "ConvTranspose whose output phases read different numbers of kernel taps"
            wmat = _transpose_blocks(w, phases)  # [phases, Cin * taps, Cout]
            layout = "convT"
        else:
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
    blocks = wmat.shape[0]
    per = t.channels // groups
    b = np.broadcast_to(bias.reshape(groups, 1, per), (blocks, 1, per))
    u = np.concatenate([wmat, b], axis=1)
    return NormalEquations(t, node.input[1], layout, scale, groups, conv, u, axis, node.input[0], bias_name(model, t),
                t.tensor, amax=amax, phases=phases, shared=shared)  # fmt: skip


def _transpose_unsupported(attrs: dict, groups: int, conv: dict) -> str:
    auto = conv["auto_pad"]
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if groups != 1:
        return "grouped ConvTranspose (its weights are quantized per tensor)"
    if "output_shape" in attrs or auto not in ("", "NOTSET"):
        return "ConvTranspose with output_shape or auto_pad"
    return ""


def _phases(conv: dict) -> list[tuple[tuple[int, ...], tuple[int, ...]]] | None:
    """A ConvTranspose's output phases (output position modulo the stride, per axis) and the kernel
    taps each reads: output ``o`` reads input ``i = (o + pad_begin - k * dilation) / stride`` through
    tap ``k`` when that divides. ``None`` when the phases of an axis read unequal numbers of taps."""
    per_axis = []
    spatial = len(conv["kernel"])
    for ax in range(spatial):
        k, s, d, p = conv["kernel"][ax], conv["strides"][ax], conv["dilations"][ax], conv["pads"][ax]
        taps = [tuple(t for t in range(k) if (a + p - t * d) % s == 0) for a in range(s)]
        if len({len(t) for t in taps}) != 1 or not taps[0]:
            return None
        per_axis.append(taps)
    if spatial == 1:
        return [((0,), tw) for tw in per_axis[0]]
    return [(th, tw) for th in per_axis[0] for tw in per_axis[1]]


def _transpose_blocks(w: np.ndarray, phases) -> np.ndarray:
    """ConvTranspose weight ``[Cin, Cout, kh, kw]`` (1-D: ``[Cin, Cout, k]``) as ``[phases, Cin *
    taps, Cout]``, rows in the order of :func:`_transpose_patches` (channel, tap row, tap column)."""
    w4 = w if w.ndim == 4 else w[:, :, None, :]
    cin, cout = w4.shape[:2]
    return np.stack(
        [w4[:, :, list(th)][:, :, :, list(tw)].transpose(0, 2, 3, 1).reshape(-1, cout) for th, tw in phases]
    )


def _own_values(
    original: onnx.ModelProto,
    fits: list[NormalEquations],
    batches: list[Mapping[str, np.ndarray]],
    threads: int | None,
    progress: ProgressFn,
) -> Iterator[dict[str, np.ndarray]]:
    """``own``: per batch, every fit's FP32 input and output, and the INT8 codes of ``Q(x)``
    (``Q(x) = codes * scale``, computed here) under :func:`_own_key`, from one FP32 pass."""
    from trtq.runtime.onnxruntime import run_marked

    names = [n for f in fits for n in (f.input_fp32, f.output_fp32)]
    for xs in run_marked(original, names, batches, threads=threads):
        values = dict(xs)
        for f in fits:
            if _own_key(f) not in values:
                values[_own_key(f)] = qdq.activation_codes(xs[f.input_fp32], f.amax, f.qtype)
        yield values
        progress(1)


def _own_key(f: NormalEquations) -> str:
    return f"{f.input_fp32}\x00{f.amax!r}\x00{f.qtype}"


def _fp32_targets(
    original: onnx.ModelProto,
    fits: list[NormalEquations],
    batches: list[Mapping[str, np.ndarray]],
    positions: int,
    seed: int,
    threads: int | None,
    progress: ProgressFn,
) -> None:
    """``sequential``: every fit's FP32 output on its sampled positions, per batch (float32), from
    one FP32 pass, so that each wave needs only an emulation pass."""
    from trtq.runtime.onnxruntime import run_marked

    for f in fits:
        f.ys = []
    names = [f.output_fp32 for f in fits]
    for b, xs in enumerate(run_marked(original, names, batches, threads=threads)):
        for f in fits:
            y = np.asarray(xs[f.output_fp32], np.float32)
            f.ys.append(_sampled_outputs(f, y, _pick(f, y.shape, _rng(seed, f, b), positions)))
        progress(1)


def _accumulate(
    fits: list[NormalEquations], values: Iterable[Mapping[str, np.ndarray]], positions: int, seed: int
) -> None:
    """Gram, ``A~^T y`` and output power of every fit over the batches: ``values`` holds per batch
    the quantized input (own: its INT8 codes under :func:`_own_key`, and the FP32 output;
    sequential: the emulation's anchor input, ``y`` from :func:`_fp32_targets`).

    ``x~`` is ``codes * scale`` with integer codes in ``[-128, 127]``: the Gram matrix of the codes
    (and the ones of the bias) is computed in float32 with BLAS on row chunks small enough that
    every partial sum is an integer below ``2^24``, so it is exact, and scaled in float64;
    ``A~^T y`` is a float32 product, its bias row (the sum of ``y``) summed in float64; every
    sum over batches in float64. FP8 codes (``qtype`` ``fp8``: E4M3 values) go through the same
    float32 products, which are then not exact (relative error about 1e-7 per chunk)."""
    emulated = all(f.ys is not None for f in fits)
    for f in fits:
        k = f.u.shape[1]
        f.gram = np.zeros((f.u.shape[0], k, k))
        f.cross = np.zeros(f.u.shape)
        f.power = np.zeros(f.target.channels)
        f.samples = 0
    shared: dict[tuple, list] = {}  # fits reading the same x~ at the same positions: one Gram
    for b, xs in enumerate(values):
        shared.clear()
        for f in fits:
            scale = qdq.activation_scale(f.amax, f.qtype)
            if emulated:
                xq = np.asarray(xs[f.input_q], np.float32)
                codes = _codes(xq, scale)
                if codes is None:  # not an INT8 grid (never seen): the values, inexact products
                    codes, scale = xq, 1.0
                ys = f.ys[b]
                out_shape = _output_shape(f, xq.shape)
            else:
                codes = xs[_own_key(f)]
                y = np.asarray(xs[f.output_fp32], np.float32)
                out_shape = y.shape
            pick = _pick(f, out_shape, _rng(seed, f, b), positions)
            if not emulated:
                ys = _sampled_outputs(f, y, pick)
            key = (f.input_q or _own_key(f), f.layout, repr(f.conv), f.groups, pick.tobytes())
            if key not in shared:
                aqs = _patches(f, codes, pick, out_shape)
                d = np.full(aqs[0].shape[2], scale)
                d[-1] = 1.0  # the bias column is not scaled
                shared[key] = [aqs, [_gram(a) * np.outer(d, d) for a in aqs], d]
            aqs, grams, d = shared[key]
            for j, (a, g, y) in enumerate(zip(aqs, grams, ys, strict=True)):
                sl = slice(None) if f.phases is None else slice(j, j + 1)
                f.gram[sl] += g
                f.cross[sl] += _cross(a, y) * d[:, None]
                f.power += np.einsum("gpc,gpc->gc", y, y, dtype=np.float64).reshape(-1)
                f.samples += a.shape[1]
    for f in fits:
        f.ys = None


#: Rows per float32 Gram product: 1024 * 128 * 128 = 2^24, so sums of INT8 code products are exact.
_EXACT_ROWS = 1024


def _codes(xq: np.ndarray, scale: float) -> np.ndarray | None:
    """The INT8 codes of a dequantized tensor (``xq == codes * scale`` in float32, as
    DequantizeLinear computes it), as float32; ``None`` when ``xq`` is not on that grid."""
    s = np.float32(scale)
    codes = np.rint(xq / s)
    if np.abs(codes).max(initial=0.0) > 128 or not np.array_equal(codes * s, xq):
        return None
    return codes


def _gram(a: np.ndarray) -> np.ndarray:
    """``a^T a`` per block of ``a`` [blocks, P, K + 1] (float32 products on chunks of
    :data:`_EXACT_ROWS` rows, summed in float64: exact for INT8 codes and the ones of the bias)."""
    g = np.zeros((a.shape[0], a.shape[2], a.shape[2]))
    for start in range(0, a.shape[1], _EXACT_ROWS):
        c = a[:, start : start + _EXACT_ROWS]
        if a.shape[0] == 1:  # 2-D A^T A: numpy computes it as a symmetric rank-k update
            g[0] += c[0].T @ c[0]
        else:
            g += np.matmul(c.transpose(0, 2, 1), c)
    return g


def _cross(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``a^T y`` per block (float32 products; the bias row, the sum of ``y``, in float64)."""
    c = np.matmul(a.transpose(0, 2, 1), y).astype(np.float64)
    c[:, -1, :] = np.sum(y, axis=1, dtype=np.float64)
    return c


def _rng(seed: int, f: NormalEquations, batch: int) -> np.random.Generator:
    """The positions sampled for ``f`` in ``batch``: the same for its FP32 and quantized input."""
    return np.random.default_rng([seed, f.target.node_index, batch])


def _pick(
    f: NormalEquations, out_shape: tuple[int, ...], rng: np.random.Generator, positions: int
) -> np.ndarray:
    """Sampled output positions, flat indices over the output's batch and spatial axes (Conv:
    ``n * OH * OW``; Gemm/MatMul: the rows)."""
    if f.conv is None:
        total = int(np.prod(out_shape[:-1]))
    else:
        total = out_shape[0] * int(np.prod(out_shape[2:]))
    return _sample(rng, total, positions)


def _sample(rng: np.random.Generator, total: int, positions: int) -> np.ndarray:
    if total <= positions:
        return np.arange(total)
    return np.sort(rng.choice(total, positions, replace=False))


def _output_shape(f: NormalEquations, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The anchor's output shape for an input of ``shape`` (channels axis 1 for convolutions)."""
    if f.conv is None:
        return (*shape[:-1], f.target.channels)
    geo = _geometry_2d(f.conv, len(shape) - 2)
    size = shape[2:] if len(shape) == 4 else (1, shape[2])
    if f.layout == "convT":
        dims = tuple(
            s * (n - 1) + op + d * (k - 1) + 1 - pb - pe
            for n, k, s, d, pb, pe, op in zip(
                size, geo["kernel"], geo["strides"], geo["dilations"], geo["pads"][:2], geo["pads"][2:],
                geo["output_padding"], strict=True,
            )
        )  # fmt: skip
    else:
        pads = _pads(geo, size)
        dims = tuple(
            (n + pb + pe - d * (k - 1) - 1) // s + 1
            for n, k, s, d, pb, pe in zip(
                size, geo["kernel"], geo["strides"], geo["dilations"], pads[:2], pads[2:], strict=True
            )
        )
    return (shape[0], f.target.channels, *(dims if len(shape) == 4 else dims[1:]))


def _geometry_2d(conv: dict, spatial: int) -> dict:
    """``conv`` as a 2-D convolution (a 1-D one has height 1)."""
    if spatial == 2:
        return {"output_padding": (0, 0), **conv}
    return {
        "kernel": (1, *conv["kernel"]),
        "strides": (1, *conv["strides"]),
        "dilations": (1, *conv["dilations"]),
        "pads": (0, conv["pads"][0], 0, conv["pads"][1]),
        "auto_pad": conv["auto_pad"],
        "output_padding": (0, *conv.get("output_padding", (0,))),
    }


def _sampled_outputs(f: NormalEquations, y: np.ndarray, pick: np.ndarray) -> list[np.ndarray]:
    """``y`` (the anchor's output, bias included) at the sampled positions, float32, per block:
    ``[groups, P, channels per group]`` (one block), or per ConvTranspose phase ``[1, P_phase,
    channels]``."""
    if f.conv is None:
        rows = y.reshape(-1, y.shape[-1])[pick]
        return [rows[None]]
    y4 = y if y.ndim == 4 else y[:, :, None, :]
    n, c, oh, ow = y4.shape
    ni, rest = np.divmod(pick, oh * ow)
    hi, wi = np.divmod(rest, ow)
    if f.phases is None:
        vals = y4[ni, :, hi, wi]  # [P, C]
        return [vals.reshape(len(pick), f.groups, -1).transpose(1, 0, 2)]
    sh, sw = _geometry_2d(f.conv, y.ndim - 2)["strides"]
    return [y4[ni[m], :, hi[m], wi[m]][None] for m in _phase_masks(f, hi, wi, sh, sw)]


def _phase_masks(f: NormalEquations, hi: np.ndarray, wi: np.ndarray, sh: int, sw: int) -> list[np.ndarray]:
    """Per phase of ``f.phases`` (row-major over the strides), the sampled positions in it."""
    return [(hi % sh == a) & (wi % sw == b) for a in range(sh) for b in range(sw)]


def _patches(
    f: NormalEquations, x: np.ndarray, pick: np.ndarray, out_shape: tuple[int, ...]
) -> list[np.ndarray]:
    """Per block, ``[groups, P, K + 1]`` float32: the im2col columns of ``x`` at the sampled output
    positions (a trailing 1 for the bias), in the weight's flattening order (Conv: input channel
    of the group, then kernel rows, columns; ConvTranspose, per phase: input channel, then the
    phase's taps; Gemm/MatMul: the input's last axis)."""
    if f.conv is None:
        blocks = [x.reshape(-1, x.shape[-1])[pick][None]]
    elif f.phases is None:
        blocks = [_conv_patches(x, f.conv, f.groups, pick, out_shape)]
    else:
        blocks = _transpose_patches(x, f, pick, out_shape)
    out = []
    for a in blocks:
        a1 = np.empty(a.shape[:2] + (a.shape[2] + 1,), np.float32)
        a1[:, :, :-1] = a
        a1[:, :, -1] = 1.0
        out.append(a1)
    return out


def _conv_patches(x: np.ndarray, conv: dict, groups: int, pick: np.ndarray, out_shape: tuple[int, ...]):
    if x.ndim == 3:  # 1-D: a 2-D convolution of height 1
        x = x[:, :, None, :]
    conv = _geometry_2d(conv, 2) if len(conv["kernel"]) == 2 else _geometry_2d(conv, 1)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = conv["kernel"], conv["strides"], conv["dilations"]
    pads = _pads(conv, (h, w))
    ow = out_shape[-1]
    oh = out_shape[2] if len(out_shape) == 4 else 1
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    ni, rest = np.divmod(pick, oh * ow)
    hi, wi = np.divmod(rest, ow)
    rows = hi[:, None] * sh + np.arange(kh)[None, :] * dh  # [P, kh]
    cols = wi[:, None] * sw + np.arange(kw)[None, :] * dw  # [P, kw]
    patch = xp[ni[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # [P, kh, kw, C]
    patch = patch.transpose(0, 3, 1, 2).reshape(len(pick), groups, -1)  # [P, g, C/g * kh * kw]
    return np.ascontiguousarray(patch.transpose(1, 0, 2), dtype=np.float32)


def _transpose_patches(
    x: np.ndarray, f: NormalEquations, pick: np.ndarray, out_shape: tuple[int, ...]
) -> list[np.ndarray]:
    """ConvTranspose, per phase: ``[1, P_phase, Cin * taps]``, the input values each sampled output
    position reads through the phase's taps (0 where the tap falls outside the input)."""
    x4 = x if x.ndim == 4 else x[:, :, None, :]
    geo = _geometry_2d(f.conv, x.ndim - 2)
    n, c, h, w = x4.shape
    (sh, sw), (dh, dw), (ph, pw) = geo["strides"], geo["dilations"], geo["pads"][:2]
    ow = out_shape[-1]
    oh = out_shape[2] if len(out_shape) == 4 else 1
    ni, rest = np.divmod(pick, oh * ow)
    hi, wi = np.divmod(rest, ow)
    out = []
    for (th, tw), m in zip(f.phases, _phase_masks(f, hi, wi, sh, sw), strict=True):
        rows = (hi[m][:, None] + ph - np.asarray(th)[None, :] * dh) // sh  # [P, taps_h]
        cols = (wi[m][:, None] + pw - np.asarray(tw)[None, :] * dw) // sw
        ok = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        patch = x4[
            ni[m][:, None, None], :, np.clip(rows, 0, h - 1)[:, :, None], np.clip(cols, 0, w - 1)[:, None, :]
        ]
        patch = patch * ok[..., None]  # [P, th, tw, C]
        out.append(np.ascontiguousarray(patch.transpose(0, 3, 1, 2).reshape(1, int(m.sum()), -1), np.float32))
    return out


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


def _solve(f: NormalEquations, alpha: float) -> np.ndarray:
    """The ridge solution ``v`` (``u``'s layout) of every block, all blocks in one batched solve.
    ``lambda = alpha * mean(diag(G))`` per group (the bias entry excluded); ConvTranspose phases
    share one ``lambda`` and one bias: their weights are eliminated per phase and the bias solved
    from the Schur complement (exactly the joint problem)."""
    u = f.u
    if np.isinf(alpha):
        return u.copy()
    g, k1, _ = f.gram.shape
    k = k1 - 1
    diag = np.diagonal(f.gram, axis1=1, axis2=2)[:, :k]
    if f.phases is None:
        lam = alpha * np.mean(diag, axis=1)  # [g]
        reg = np.eye(k1)
        reg[k, k] = 0.0
        lhs = f.gram + lam[:, None, None] * reg
        rhs = f.cross + lam[:, None, None] * (reg @ u)
        return _batched_solve(lhs, rhs)
    lam = alpha * float(np.mean(diag))
    m = f.gram[:, :k, :k] + lam * np.eye(k)
    col = f.gram[:, :k, k]  # [phases, K]: the bias column
    rhs = np.concatenate([f.cross[:, :k] + lam * u[:, :k], col[:, :, None]], axis=2)
    sol = _batched_solve(m, rhs)
    x, z = sol[:, :, :-1], sol[:, :, -1]
    num = np.sum(f.cross[:, k], axis=0) - np.einsum("pk,pkc->c", col, x)
    den = float(np.sum(f.gram[:, k, k]) - np.einsum("pk,pk->", col, z))
    b = num / den if den > 0 else u[0, k]
    w = x - z[:, :, None] * b[None, None, :]
    return np.concatenate([w, np.broadcast_to(b, (g, 1, b.size))], axis=1)


def _batched_solve(lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``lhs[j] x[j] = rhs[j]`` for every block ``j``; a singular block (alpha 0, dead inputs) gets
    the minimum-norm answer."""
    try:
        return np.linalg.solve(lhs, rhs)
    except np.linalg.LinAlgError:
        out = np.empty(rhs.shape)
        for j in range(lhs.shape[0]):
            try:
                out[j] = np.linalg.solve(lhs[j], rhs[j])
            except np.linalg.LinAlgError:
                out[j] = np.linalg.lstsq(lhs[j], rhs[j], rcond=None)[0]
        return out


def _solve_and_write(
    model: onnx.ModelProto, f: NormalEquations, alpha: float, rounding: str = "nearest"
) -> LayerFit:
    """Solve every block's ridge problem (then, for ``adaround``, choose its INT8 steps), write
    ``w'`` and ``b'`` into ``model``, and measure."""
    u = f.u
    v = _solve(f, alpha)
    flipped = 0
    if rounding == "adaround":
        v, flipped = _adaround(f, v)
    w_old, w_new = _weight_of(f, u), _weight_of(f, v)
    uq, vq = _with_weight(f, u, _fq(w_old, f.axis)), _with_weight(f, v, _fq(w_new, f.axis))
    n = max(f.samples, 1)
    errs = _sq_errors(f, [uq, vq, u, v])
    mse = [float(e) / (n * f.target.channels) for e in errs]
    _write(model, f, v)
    axis = 0 if f.axis is None else f.axis
    num = np.linalg.norm(np.moveaxis(w_new - w_old, axis, 0).reshape(f.target.channels, -1), axis=1)
    den = np.linalg.norm(np.moveaxis(w_old, axis, 0).reshape(f.target.channels, -1), axis=1)
    ratio = float(np.max(np.abs(w_new)) / max(np.max(np.abs(w_old)), 1e-30))
    return LayerFit(
        node=f.target.node,
        op_type=f.target.op_type,
        weight=f.weight,
        channels=f.target.channels,
        groups=f.groups,
        samples=f.samples,
        rel_weight_change=float(np.mean(num / np.maximum(den, 1e-30))),
        max_abs_ratio=ratio,
        mse_before=mse[0],
        mse_after=mse[1],
        fit_before=mse[2],
        fit_after=mse[3],
        output_power=float(np.sum(f.power)) / (n * f.target.channels),
        flipped=flipped,
    )


def _adaround(f: NormalEquations, v: np.ndarray) -> tuple[np.ndarray, int]:
    """``v`` with its weights on their INT8 steps (per-channel scales of ``v``'s own weights, the
    ones the export computes), each rounded up or down by AdaRound on the accumulated quadratic
    with ``v``'s bias kept; and how many weights moved off their nearest step."""
    w = _weight_of(f, v)
    _, scale = qdq.quantize_weight(w, f.axis)
    shape = [1] * w.ndim
    if f.axis is not None:
        shape[f.axis] = -1
    steps = np.broadcast_to(scale.reshape(shape).astype(np.float64), w.shape)
    step = _with_weight(f, v, steps)[:, :-1, :]  # in v's layout, Gemm alpha included
    res = adaround(
        f.gram,
        f.cross,
        float(np.sum(f.power)),
        v[:, :-1, :],
        step,
        bias=v[:, -1, :],  # kept, so ConvTranspose phases' shared bias needs no special case
        ridge=ADAROUND_RIDGE,
    )
    out = v.copy()
    out[:, :-1, :] = res.codes * step
    return out, res.flipped


def _sq_errors(f: NormalEquations, vs: list[np.ndarray]) -> list[float]:
    """For each ``v`` of ``vs``, ``sum_p (A~_p v - A_p u)^2`` over the sampled positions and the
    channels, from the accumulated Gram matrices (one matrix product for all of ``vs``)."""
    return [float(e) for e in np.sum(_channel_sq(f, vs), axis=0)]


def _channel_sq(f: NormalEquations, vs: list[np.ndarray]) -> np.ndarray:
    """``[channels, len(vs)]``: :func:`_sq_errors` per output channel."""
    c = vs[0].shape[2]
    z = np.concatenate(vs, axis=2)
    quad = np.sum(np.matmul(f.gram, z) * z, axis=1)  # [blocks, len(vs) * c]
    cross = np.einsum("gkc,gkc->gc", z, np.concatenate([f.cross] * len(vs), axis=2))
    e = quad - 2 * cross
    out = []
    for i in range(len(vs)):
        ei = e[:, i * c : (i + 1) * c]
        per_channel = ei.reshape(-1) if f.phases is None else np.sum(ei, axis=0)
        out.append(np.maximum(per_channel + f.power, 0.0))
    return np.stack(out, axis=1)


def _weight_of(f: NormalEquations, v: np.ndarray) -> np.ndarray:
    """``v``'s weight part in the initializer's layout (float64)."""
    w = v[:, :-1, :]
    if f.layout == "conv":
        out = f.target.channels
        kernel = f.conv["kernel"]
        return w.transpose(0, 2, 1).reshape(out, -1, *kernel)
    if f.layout == "convT":
        kernel = f.conv["kernel"]
        k4 = kernel if len(kernel) == 2 else (1, *kernel)
        cout = f.target.channels
        full = np.zeros((w.shape[1] // (len(f.phases[0][0]) * len(f.phases[0][1])), cout, *k4))
        for (th, tw), wp in zip(f.phases, w, strict=True):
            block = wp.reshape(-1, len(th), len(tw), cout).transpose(0, 3, 1, 2)
            full[:, :, np.asarray(th)[:, None], np.asarray(tw)[None, :]] = block
        return full.reshape(full.shape[0], cout, *kernel)
    w = w[0] / f.scale
    return w if f.layout in ("gemm", "matmul") else w.T


def _with_weight(f: NormalEquations, v: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``v`` with its weight part replaced by ``weight`` (initializer layout)."""
    out = v.copy()
    if f.layout == "conv":
        g = f.groups
        out[:, :-1, :] = weight.reshape(g, weight.shape[0] // g, -1).transpose(0, 2, 1)
    elif f.layout == "convT":
        out[:, :-1, :] = _transpose_blocks(weight, f.phases)
    else:
        w = weight if f.layout in ("gemm", "matmul") else weight.T
        out[0, :-1, :] = w * f.scale
    return out


def _fq(w: np.ndarray, axis: int | None) -> np.ndarray:
    return qdq.fake_quantize_weight(w.astype(np.float32), axis).astype(np.float64)


def _write(model: onnx.ModelProto, f: NormalEquations, v: np.ndarray) -> None:
    init = next(i for i in model.graph.initializer if i.name == f.weight)
    init.CopyFrom(numpy_helper.from_array(_weight_of(f, v).astype(np.float32), f.weight))
    old = bias_vector(model, f.target)
    if old is not None:
        new = v[:, -1, :].reshape(-1) if f.phases is None else v[0, -1, :]
        shift_bias(model, f.target, old - new)


class _WavePasses:
    """``sequential``: each wave's anchor inputs in the emulation, computing per pass only what the
    previous waves changed. A tensor computed in pass ``j`` whose value no wave ``>= j`` can change
    (no corrected anchor of those waves upstream of it) is final: kept (up to ``STORE_BYTES`` in all)
    while a later pass reads it, and that pass starts from it instead of the model's inputs; a
    tensor not kept is computed again. Node for node as the whole emulation runs (ONNX Runtime's
    optimisations off), so the values are the same."""

    def __init__(
        self, emulated: onnx.ModelProto, waves: list[list[NormalEquations]], threads: int | None
    ) -> None:
        graph = emulated.graph
        self.threads, self.budget = threads, STORE_BYTES
        self.nodes = list(graph.node)
        self.inits = {i.name for i in graph.initializer}
        self.inputs = {i.name for i in graph.input} - self.inits
        self.producer = {o: i for i, n in enumerate(self.nodes) for o in n.output if o}
        self.types = tensor_types(emulated)
        self.needed = [list(dict.fromkeys(f.input_q for f in wave)) for wave in waves]
        self.whole = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                         for n in self.nodes for a in n.attribute)  # fmt: skip
        changed: dict[int, int] = {}  # node -> the wave whose correction changes what it reads
        for w, wave in enumerate(waves):
            names = {f.weight for f in wave} | {f.bias for f in wave if f.bias}
            for i, n in enumerate(self.nodes):
                if any(x in names or x.split("__trtq_", 1)[0] in names or any(x.startswith(f"{m}__trtq_") for m in names)
                       for x in n.input if x in self.inits):  # fmt: skip
                    changed[i] = max(changed.get(i, -1), w)
        self.version: dict[str, int] = {}  # tensor -> the last wave whose correction changes it (-1: none)
        for i, n in enumerate(self.nodes):
            v = max([self.version.get(x, -1) for x in n.input] + [changed.get(i, -1)])
            for o in n.output:
                self.version[o] = v
        self.last_read: dict[str, int] = {}
        avail: set[str] = set()
        for j, needed in enumerate(self.needed):  # the passes with every final tensor kept
            nodes, boundary = self._walk(needed, avail)
            for t in boundary:
                self.last_read[t] = j
            avail |= {o for i in nodes for o in self.nodes[i].output if self.version.get(o, -1) < j}
        self.store: dict[str, list[np.ndarray]] = {}
        self.bytes = self.peak_bytes = 0

    def _walk(self, needed: list[str], avail: set[str]) -> tuple[list[int], set[str]]:
        """The nodes to run for ``needed`` given the ``avail``able tensors, and the tensors they
        read from those or from the model's inputs."""
        nodes: set[int] = set()
        boundary: set[str] = set()
        stack, seen = list(needed), set()
        while stack:
            t = stack.pop()
            if not t or t in seen or t in self.inits:
                continue
            seen.add(t)
            if t in avail or t in self.inputs:
                boundary.add(t)
            elif self.producer[t] not in nodes:
                nodes.add(self.producer[t])
                stack.extend(self.nodes[self.producer[t]].input)
        return sorted(nodes), boundary

    def run(
        self, j: int, emulated: onnx.ModelProto, batches: list[Mapping[str, np.ndarray]]
    ) -> Iterator[dict[str, np.ndarray]]:
        """Pass ``j`` on ``emulated`` (waves ``< j`` corrected): per batch, the needed tensors."""
        from trtq.runtime.onnxruntime import OnnxRuntimeRunner, run_marked

        needed = self.needed[j]
        if self.whole:
            yield from run_marked(emulated, needed, batches, threads=self.threads)
            return
        nodes, boundary = self._walk(needed, set(self.store))
        computed = [o for i in nodes for o in self.nodes[i].output if o]
        keep = [t for t in computed if self.version.get(t, -1) < j and self.last_read.get(t, -1) > j]
        outputs = list(dict.fromkeys([t for t in needed if t not in boundary] + keep))
        kept: dict[str, list[np.ndarray]] = {t: [] for t in keep}
        runner = None
        if outputs:
            assert len(emulated.graph.node) == len(self.nodes)  # every wave's emulation has one graph
            sub = self._submodel(emulated, nodes, boundary, outputs, batches[0])
            runner = OnnxRuntimeRunner(sub, optimize=False, threads=self.threads)
        try:
            for b, feeds in enumerate(batches):
                given = {t: (self.store[t][b] if t in self.store else feeds[t]) for t in boundary}
                got = runner.run(given, outputs) if runner else {}
                for t in keep:
                    kept[t].append(got[t])
                yield {t: got[t] if t in got else given[t] for t in needed}
        finally:
            if runner:
                runner.close()
        for t, vals in kept.items():
            size = sum(v.nbytes for v in vals)
            if self.bytes + size <= self.budget:
                self.store[t] = vals
                self.bytes += size
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        for t in [t for t in self.store if self.last_read.get(t, -1) <= j]:
            self.bytes -= sum(v.nbytes for v in self.store.pop(t))

    def _submodel(self, emulated, nodes, boundary, outputs, sample) -> onnx.ModelProto:
        graph = emulated.graph
        used = {x for i in nodes for x in self.nodes[i].input}
        inputs = []
        for t in sorted(boundary):
            value = self.store[t][0] if t in self.store else np.asarray(sample[t])
            elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            inputs.append(helper.make_tensor_value_info(t, elem, None))
        outs = [
            helper.make_tensor_value_info(t, self.types.get(t, onnx.TensorProto.FLOAT), None) for t in outputs
        ]
        sub_graph = helper.make_graph(
            [graph.node[i] for i in nodes],
            "wave",
            inputs,
            outs,
            [i for i in graph.initializer if i.name in used],
        )
        sub = helper.make_model(sub_graph, opset_imports=list(emulated.opset_import))
        sub.ir_version = emulated.ir_version
        sub.functions.extend(emulated.functions)
        return sub
