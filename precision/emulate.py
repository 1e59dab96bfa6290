"""Emulate a TensorRT FP16 / INT8 build on ONNX Runtime, as TensorRT would compute it.

Rules, applied to the model after :func:`trtq.precision.fold.fold_model` (constants and
BatchNorm folded in FP32, as TensorRT's builder does) and grouped into fused layers by
:func:`trtq.precision.emulation_fusion.find_layers`:

FP16 (``precision`` contains ``fp16``)
  - weights of every non-pinned layer (float initializers with more than one element) are rounded
    to half; scalar constants of the epilogue (Clip bounds, the 3 and 6 of hard-swish, epsilons)
    stay FP32; the bias of an INT8 convolution stays FP32;
  - every tensor at a layer boundary produced by a non-pinned layer is rounded through half
    (IEEE round-to-nearest-even; beyond 65504 it becomes inf, as in TensorRT). Tensors inside a
    fused layer are not rounded (the kernel keeps FP32 accumulators and epilogue), except a
    layer's ``stored`` tensors (the attention probabilities before the second product);
  - a decomposed LayerNorm is one layer with FP32 inside (emulation_fusion's docstring); the
    plan logs TensorRT's FP16 overflow warning for them, naming those whose calibrated input
    reaches 256 (``Pow(x - mean, 2)`` past 65504 if TensorRT does not fuse them);
  - an FP16 layer reading an FP32 tensor (a graph input, a pinned layer's output) rounds it on
    that edge only (TensorRT's reformat).

INT8 (``precision`` contains ``int8``), symmetric, zero-point 0, scale = amax / 127; chosen per
pattern, transformer patterns first (sources: TensorRT developer guide, "Q/DQ layer placement
recommendations" and "Fused Attention"; ModelOpt 0.47's ONNX INT8 defaults, read in
``modelopt/onnx/quantization/partitioning.py`` and ``graph_utils.py``):
  - LayerNorm layers: never quantized (ModelOpt: LayerNorm partitions are non-quantizable);
  - attention layers: the two products' inputs (Q, K, the probabilities, V) only with
    ``mha="int8"``; the default ``mha="fp16"`` leaves them in the float precision of the build
    (ModelOpt quantizes them for INT8 up to sequence length 512 and skips them beyond, and has
    ``disable_mha_qdq``); measured on ViT-S, held-out cosine 0.9934 (fp16) vs 0.9823 (int8) with
    entropy2 ranges, 0.9985 vs 0.9981 with mse (BENCHMARKS.md): entropy2 clips the softmax
    output to ~0.15;
  - a transformer's residual Add (an Add with two activation inputs fused into a MatMul/Gemm
    layer): never its residual input (the residual stream stays float); in the explicit
    placement its branch (the non-residual input, computed inside the layer) is quantized, as
    ModelOpt places it (an INT8-output GEMM), in FP32 before the Q/DQ;
  - ``placement="explicit"`` (TensorRT 11, Q/DQ guidance), everything else: quantize the
    activation inputs of Conv/ConvTranspose/Gemm/MatMul, and the outside (residual) inputs of
    an Add fused into a Conv layer (the CNN rule, unchanged); Softmax and the rest never;
  - ``placement="implicit"`` (TensorRT 10 with a calibrator), pessimistic outside the
    transformer patterns: every activation edge into a non-pinned layer is quantized, i.e. each
    boundary tensor carries its own calibrated scale wherever it is read; only graph outputs
    (FP32 by default) are spared;
  - an anchor (Conv/Gemm/MatMul) whose activation inputs are all quantized runs in INT8: its
    weights are quantized per output channel (see :func:`trtq.precision.qdq.weight_axis`); an
    anchor with a tensor missing from ``amax`` falls back to FP16/FP32, as TensorRT does
    ("Missing scale and zero-point ... fall back to non-int8");
  - with ``int8`` alone, everything not quantized runs in FP32.

FP8 (``precision`` contains ``fp8``: ``fp8`` or ``fp8+fp16``), E4M3, zero-point 0 (a
FLOAT8E4M3FN zero), scale = amax / 112, saturating (QuantizeLinear-19's default ``saturate=1``,
round to nearest even), from the same calibrated amax as INT8:
  - placement as INT8 (both rules above), except for the convolutions TensorRT has no FP8
    kernels for, which stay in float (FP32, or FP16 with ``fp8+fp16``): a Conv with ``group > 1``
    (depthwise and grouped: TensorRT 10.x release notes, Limitations: no optimized FP8 kernels,
    INT8 recommended), a Conv whose kernel has more than 32 elements (e.g. 7x7: "FP16 or FP32
    fallback kernels will be used", same notes), and ConvTranspose (not in ModelOpt's FP8 op
    list, Conv/Gemm/MatMul/residual Add, and no TensorRT note on FP8 deconvolution). Leaving them
    unquantized costs no speed (TensorRT would run them in float anyway) and adds no FP8 error.
    Also a Conv with at most :data:`FP8_MIN_CHANNELS` input or output channels, as ModelOpt's ONNX
    FP8 export leaves it (a speed rule of NVIDIA's: FP16 kernels beat FP8 ones there).
    TensorRT runs FP8 only through explicit quantization (Q/DQ in the ONNX), so ``explicit`` is
    the placement that predicts a real build;
  - activations per tensor; weights of an FP8 anchor per output channel, on the INT8 axis,
    ``scale_c = max |W_c| / d_c`` with ``d_c`` the one of eight E4M3 grids (448 down to 244)
    that rounds the channel best (:func:`trtq.precision.qdq.quantize_weight_fp8`). Sources:
    TensorRT 10.6 release notes (per-channel scaling for FP8 GEMMs, Hopper); ModelOpt's ONNX FP8
    export quantizes Conv, Gemm and MatMul weights per channel (ONNX Runtime's quantizer with
    ``per_channel=True``, then INT8 -> FP8); TensorRT's Q/DQ layers take a 1-D weight scale
    without an FP8 exception. Not confirmed in a TensorRT
    document for FP8 *convolutions*: check an FP8 CNN with TensorRT's engine inspector. Per tensor
    (trtq before), a BatchNorm-folded convolution's small channels fall into E4M3's subnormals:
    PP-OCRv4 det at 640, held-out IoU 0.575 per tensor vs 0.737 per channel (BENCHMARKS.md);
  - the emulated model is raised to opset 19 (QuantizeLinear/DequantizeLinear with FLOAT8E4M3FN),
    which ONNX Runtime's CPU provider runs.

Pins: the listed ONNX nodes stay FP32 in every mode (no rounding of their weights or outputs, no
quantization of their inputs) and do not fuse with neighbours.

Tensor names: every activation of the folded model keeps its name and carries the emulated
value; helper tensors are suffixed ``__trtq_*``. Known limits: see emulation_fusion's docstring;
TensorRT may also pick FP32 kernels for some layers in FP16 mode (we assume it never does), and
INT8 kernels accumulate in INT32 where we accumulate the dequantized values in FP32 (equal up to
float summation order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import onnx
from onnx import numpy_helper

from trtq._core.errors import InputError
from trtq._core.onnx_model import node_names, tensor_readers, without_initializers
from trtq._core.tensors import TensorInfo
from trtq.precision import qdq
from trtq.precision.emulation_fusion import ANCHORS, Layer, LayerGraph, find_layers
from trtq.precision.fold import fold_model, is_folded
from trtq.runtime.build import PrecisionFlags

logger = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8", "fp16+int8", "fp8", "fp8+fp16")
#: The opset QuantizeLinear/DequantizeLinear take FLOAT8E4M3FN from.
FP8_OPSET = 19
PLACEMENTS = ("explicit", "implicit")
#: Attention matrix products: ``fp16`` = not quantized (the build's float precision, FP32 with
#: ``int8`` alone), ``int8`` = Q/DQ on Q, K, the probabilities and V (FP8 in an FP8 build).
MHA_MODES = ("fp16", "int8")
DEFAULT_MHA = "fp16"
#: A decomposed LayerNorm whose input reaches this magnitude overflows ``Pow(x - mean, 2)`` in FP16
#: (256**2 = 65536 > 65504) when TensorRT does not fuse it.
LAYERNORM_FP16_LIMIT = 256.0
_LAYERNORM_WARNED: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
# Ops that never take an INT8 input in TensorRT (shape and type plumbing).
_NO_INT8 = frozenset(
    {"Shape", "Size", "Cast", "NonZero", "Equal", "Less", "Greater", "Where", "ArgMax", "ArgMin"}
)
_ANCHOR_WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (0, 1), "MatMul": (0, 1)}
_ZP = "__trtq_zero_point"


@dataclass(frozen=True)
class EmulationConfig(PrecisionFlags):
    """What to emulate.

    Attributes:
        precision: ``"fp16"``, ``"int8"``, ``"fp16+int8"`` (TensorRT with both flags), ``"fp8"``
            or ``"fp8+fp16"`` (FP8 E4M3 Q/DQ, the rest FP32 or FP16).
        placement: INT8 placement, ``"explicit"`` (TensorRT 11 / Q-DQ rules) or ``"implicit"``
            (TensorRT 10 calibrator, pessimistic: every layer-boundary tensor quantized).
        pins: ONNX node names kept in FP32 in every mode.
        mha: the attention blocks' two matrix products (:data:`MHA_MODES`): ``fp16`` (default:
            not quantized) or ``int8`` (quantized like the other MatMuls).
    """

    precision: str
    placement: str = "explicit"
    pins: frozenset[str] = frozenset()
    mha: str = DEFAULT_MHA

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision '{self.precision}'; choose one of: {', '.join(PRECISIONS)}")
        if self.placement not in PLACEMENTS:
            raise InputError(
                f"unknown INT8 placement '{self.placement}'; choose one of: {', '.join(PLACEMENTS)}"
            )
        if self.mha not in MHA_MODES:
            raise InputError(f"unknown --mha '{self.mha}'; choose one of: {', '.join(MHA_MODES)}")
        object.__setattr__(self, "pins", frozenset(self.pins))

    @property
    def qtype(self) -> str:
        """The quantized type, ``"fp8"`` or ``"int8"`` (``"int8"`` when nothing is quantized)."""
        return "fp8" if self.fp8 else "int8"


@dataclass(frozen=True)
class LayerPlan:
    """What happens to one fused layer.

    ``quant_edges`` are ``(node index, input position)`` pairs whose activation is quantized with
    its tensor's amax; ``weights`` maps ``(node index, input position)`` of a float initializer to
    ``("int8", axis)``, ``("fp8", axis)`` or ``("fp16", None)``.
    """

    layer: Layer
    pinned: bool
    fp16: bool
    quant_edges: frozenset[tuple[int, int]] = frozenset()
    weights: Mapping[tuple[int, int], tuple[str, int | None]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.fp16 or self.quant_edges or self.weights)

    @property
    def int8(self) -> bool:
        """The layer is quantized (INT8 or FP8, per the plan's config)."""
        return bool(self.quant_edges)


@dataclass(frozen=True)
class EmulationPlan:
    """A folded model, its layers, and the precision decision for each layer."""

    model: onnx.ModelProto
    graph: LayerGraph
    config: EmulationConfig
    layers: tuple[LayerPlan, ...]
    amax: Mapping[str, float]
    missing_amax: tuple[str, ...] = ()

    @cached_property
    def plan_of_node(self) -> dict[int, LayerPlan]:
        """Node index -> the plan of the layer holding it (nodes outside every layer are absent)."""
        return {n: lp for lp in self.layers for n in lp.layer.nodes}

    def pin_node(self, layer: Layer) -> str:
        """The node to pin to keep ``layer`` in FP32: its Conv/Gemm/MatMul, else its last node."""
        return self.graph.node_names[layer.head]


def folded(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` folded once (returned as is when there is nothing left to fold)."""
    return model if is_folded(model) else fold_model(model)


def plan_emulation(
    model: onnx.ModelProto,
    config: EmulationConfig,
    amax: Mapping[str, float] | None = None,
    *,
    sites: Sequence[TensorInfo] | None = None,
) -> EmulationPlan:
    """Decide, layer by layer, what the TensorRT build would run in which precision.

    ``sites``: the folded model's float tensors if the caller has them (see :func:`find_layers`).
    """
    if config.quantized and not amax:
        kind = "FP8" if config.fp8 else "INT8"
        raise InputError(
            f"{kind} emulation needs activation ranges: pass a calibration cache (amax per tensor)"
        )
    amax = dict(amax or {})
    model = folded(model)
    if config.fp8:
        raised = at_least_opset(model, FP8_OPSET)
        if raised is not model:
            model, sites = raised, None  # the converter may add tensors: find them again
    unknown = sorted(set(config.pins) - set(node_names(model)))
    if unknown:
        raise InputError(f"pinned node(s) not in the model: {', '.join(unknown[:5])}")
    lg = find_layers(model, config.pins, sites=sites)
    nodes = model.graph.node
    float_inits = {
        i.name: i
        for i in model.graph.initializer
        if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    }
    missing: set[str] = set()
    plans: list[LayerPlan] = []
    for layer in lg.layers:
        if any(lg.node_names[n] in config.pins for n in layer.nodes):
            plans.append(LayerPlan(layer, pinned=True, fp16=False))
            continue
        quant: set[tuple[int, int]] = set()
        anchor_op = nodes[layer.anchor].op_type if layer.anchor is not None else ""
        no_fp8 = config.fp8 and layer.anchor is not None and not fp8_kernel(nodes[layer.anchor], float_inits)
        if config.quantized and not no_fp8:
            for n in layer.nodes:
                node = nodes[n]
                branch = _residual_branch(node, layer, lg.activations, anchor_op)
                for pos, t in enumerate(node.input):
                    inside = t in layer.internal and t not in layer.stored
                    if (
                        t in lg.activations
                        and (not inside or t == branch)
                        and _wants_int8(node, pos, layer, config, anchor_op, inside)
                    ):
                        if t in amax and np.isfinite(amax[t]) and amax[t] > 0:
                            quant.add((n, pos))
                        else:
                            missing.add(t)
        weights: dict[tuple[int, int], tuple[str, int | None]] = {}
        for n in layer.nodes:
            node = nodes[n]
            act_pos = [p for p, t in enumerate(node.input) if t in lg.activations]
            int8_anchor = node.op_type in ANCHORS and bool(act_pos) and all((n, p) in quant for p in act_pos)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            for pos, t in enumerate(node.input):
                init = float_inits.get(t)
                if init is None:
                    continue
                if int8_anchor and pos in _ANCHOR_WEIGHT_INPUTS.get(node.op_type, ()):
                    axis = qdq.weight_axis(node.op_type, pos, tuple(init.dims), attrs)
                    weights[(n, pos)] = ("fp8" if config.fp8 else "int8", axis)
                elif config.fp16 and int(np.prod(init.dims)) > 1 and not (int8_anchor and pos == 2):
                    weights[(n, pos)] = ("fp16", None)
        plans.append(
            LayerPlan(layer, pinned=False, fp16=config.fp16, quant_edges=frozenset(quant), weights=weights)
        )
    if config.fp16:
        _warn_layernorm_fp16(lg, nodes, amax)
    if missing:
        logger.warning(
            "%d tensor(s) that would run in %s have no calibrated range and stay in float (e.g. %s)",
            len(missing),
            config.qtype.upper(),
            ", ".join(sorted(missing)[:3]),
        )
    return EmulationPlan(model, lg, config, tuple(plans), amax, tuple(sorted(missing)))


def model_opset(model: onnx.ModelProto, default: int) -> int:
    """The model's default-domain opset (``default`` when it declares none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default)


def at_least_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``model`` raised to ``opset`` with ONNX's version converter (as is when already there)."""
    current = model_opset(model, opset)
    if current >= opset:
        return model
    from onnx import version_converter

    from trtq._core.onnx_model import keep_metadata

    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as exc:
        raise InputError(f"cannot raise the model from opset {current} to {opset} for Q/DQ: {exc}") from exc
    out = keep_metadata(converted, model)
    if current < 13 <= opset:
        _unwrap_last_axis_softmax(out, model)
    if opset >= FP8_OPSET:  # FLOAT8 tensors need IR version 9
        out.ir_version = max(out.ir_version, 9)
    return out


_SOFTMAX_OPS = ("Softmax", "LogSoftmax", "Hardmax")


def _unwrap_last_axis_softmax(converted: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Undo, in place, the version converter's wrapper around a last-axis Softmax raised to opset 13.

    Opset 13 changed Softmax/LogSoftmax/Hardmax from "flatten to 2-D at ``axis``" to "along
    ``axis``", so the converter rewrites every one as ``Shape``, ``Flatten(axis)``, the op on the
    last axis, ``Reshape`` back. For the last axis both meanings are the same computation, and the
    wrapper hides the op from the transformer patterns (an attention block ``MatMul -> Softmax ->
    MatMul`` is no longer one): collapse it to the single op on the original tensors.
    """
    last: dict[str, str] = {}  # the op's output -> its input, for the original last-axis ops
    rank = _ranks(original)
    for node in original.graph.node:
        if node.op_type in _SOFTMAX_OPS and len(node.output) == 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            r = rank.get(node.input[0])
            if axis == -1 or (r is not None and axis % r == r - 1):
                last[node.output[0]] = node.input[0]
    if not last:
        return
    graph = converted.graph
    producer = {o: n for n in graph.node for o in n.output}
    reads = {t: len(ks) for t, ks in tensor_readers(graph).items()}
    drop: set[int] = set()
    for reshape in graph.node:
        src = last.get(reshape.output[0]) if reshape.op_type == "Reshape" and reshape.output else None
        op = producer.get(reshape.input[0]) if src is not None else None
        flat = producer.get(op.input[0]) if op is not None and op.op_type in _SOFTMAX_OPS else None
        shape = producer.get(reshape.input[1]) if len(reshape.input) > 1 else None
        if flat is None or flat.op_type != "Flatten" or list(flat.input) != [src]:
            continue
        if reads.get(op.output[0]) != 1 or reads.get(flat.output[0]) != 1:
            continue
        op.input[0], op.output[0] = src, reshape.output[0]
        drop |= {id(flat), id(reshape)}
        if shape is not None and shape.op_type == "Shape" and reads.get(shape.output[0]) == 1:
            drop.add(id(shape))
    kept = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(kept)


_BROADCAST = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Where", "MatMul", "PRelu"})
_FIRST_RANK = frozenset(
    {"Relu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Sqrt", "Clip", "Cast", "Identity",
     "Slice", "Softmax", "LogSoftmax", "Hardmax", "LeakyRelu", "BatchNormalization", "Neg", "Abs", "Exp"}
)  # fmt: skip


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every tensor ONNX shape inference types, plus those it leaves unranked (after a
    Reshape to a computed shape, say) that follow from their producer alone: Transpose (its
    ``perm``), Squeeze/Unsqueeze (their axes), MatMul of operands of rank >= 2 and the
    broadcasting point-wise ops (the largest input rank), a Reshape to a constant shape."""
    from trtq._core.onnx_model import constant_tensors, tensor_ranks

    rank = tensor_ranks(model)
    consts = constant_tensors(model.graph)
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if not node.output or node.output[0] in rank:
            continue
        op, ins = node.op_type, list(node.input)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        known = [rank.get(i, values[i].ndim if i in values else None) for i in ins if i]
        axes = attrs.get("axes")
        if axes is None and len(ins) > 1 and ins[1] in values:
            axes = values[ins[1]].reshape(-1).tolist()
        r = None
        if op == "Transpose" and "perm" in attrs:
            r = len(attrs["perm"])
        elif op == "Squeeze" and axes is not None and known and known[0] is not None:
            r = known[0] - len(axes)
        elif op == "Unsqueeze" and axes is not None and known and known[0] is not None:
            r = known[0] + len(axes)
        elif op == "Reshape" and len(ins) > 1 and ins[1] in values:
            r = int(values[ins[1]].size)
        elif op in _FIRST_RANK and known:
            r = known[0]
        elif op in _BROADCAST and known and None not in known and (op != "MatMul" or min(known) >= 2):
            r = max(k for k in known if k is not None)  # a 1-D MatMul operand drops a dimension
        if r is not None and node.output[0] not in consts:
            rank[node.output[0]] = r
    return rank


def _residual_branch(
    node: onnx.NodeProto, layer: Layer, activations: frozenset[str], anchor_op: str
) -> str | None:
    """For a transformer's residual Add (two activation inputs, fused into a MatMul/Gemm layer):
    its non-residual input, the branch computed inside the layer; else None."""
    if node.op_type != "Add" or layer.kind or anchor_op not in ("MatMul", "Gemm"):
        return None
    acts = [t for t in node.input if t in activations]
    inside = [t for t in acts if t in layer.internal]
    return inside[0] if len(acts) == 2 and len(inside) == 1 else None


#: The most kernel elements (product of the spatial kernel dims) TensorRT runs an FP8 Conv with.
FP8_MAX_KERNEL = 32
#: A Conv with at most this many input or output channels stays float in FP8: ModelOpt's ONNX FP8
#: export leaves these out because TensorRT's FP16 kernels beat its FP8 ones there (a speed rule,
#: not a TensorRT limit; it keeps them out of FP8's error too).
FP8_MIN_CHANNELS = 16


def fp8_kernel(node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]) -> bool:
    """Whether the layer anchored at ``node`` runs in FP8 (module docstring): not a ConvTranspose,
    nor a Conv with ``group > 1``, more than :data:`FP8_MAX_KERNEL` kernel elements or at most
    :data:`FP8_MIN_CHANNELS` input or output channels; Gemm and MatMul always."""
    if node.op_type == "ConvTranspose":
        return False
    if node.op_type != "Conv":
        return True
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if int(attrs.get("group", 1)) != 1:
        return False
    w = inits.get(node.input[1]) if len(node.input) > 1 else None
    if w is not None and min(w.dims[:2]) <= FP8_MIN_CHANNELS:
        return False
    kernel = list(attrs.get("kernel_shape") or (list(w.dims[2:]) if w is not None else []))
    return int(np.prod(kernel, dtype=np.int64)) <= FP8_MAX_KERNEL


def _wants_int8(
    node: onnx.NodeProto, pos: int, layer: Layer, config: EmulationConfig, anchor_op: str, inside: bool
) -> bool:
    """Whether input ``pos`` of ``node`` (in ``layer``, whose anchor is an ``anchor_op``) carries
    Q/DQ: the per-pattern rules of the module docstring (transformer patterns first, then the
    placement's CNN rules). ``inside``: the input is computed inside the layer (only a residual
    Add's branch gets here)."""
    if layer.kind == "layernorm":
        return False
    if layer.kind == "attention":
        return config.mha == "int8" and node.op_type == "MatMul" and pos in (0, 1)
    if node.op_type == "Add" and anchor_op in ("MatMul", "Gemm"):
        # A transformer's residual Add: the residual stream stays float; the branch carries Q/DQ
        # in the explicit placement (an INT8-output GEMM; ModelOpt's non-residual input rule).
        return inside and config.placement == "explicit"
    if config.placement == "implicit":
        return node.op_type not in _NO_INT8
    if node.op_type in ("Conv", "ConvTranspose"):
        return pos == 0
    if node.op_type in ("MatMul", "Gemm"):
        return pos in (0, 1)
    # The residual input of an Add fused into a Conv layer.
    return node.op_type == "Add" and layer.anchor is not None


def emulate(
    model: onnx.ModelProto,
    config: EmulationConfig,
    amax: Mapping[str, float] | None = None,
    *,
    sites: Sequence[TensorInfo] | None = None,
) -> onnx.ModelProto:
    """An ONNX Runtime model emulating the TensorRT build described by ``config``.

    ``amax`` maps tensor name -> amax (calibration-cache scale * 127); required for INT8.
    Activations of the folded model keep their names (see the module docstring for the rules).
    Run the result with ONNX Runtime's graph optimisations off
    (``OnnxRuntimeRunner(..., optimize=False)``): its Q/DQ propagation and Conv/Add fusions move
    the rounding points (measured up to 0.1 on PP-OCR cls's softmax output).
    """
    return apply_plan(plan_emulation(model, config, amax, sites=sites))


class _Builder:
    """Emits helper nodes and initializers once per derived value."""

    def __init__(self, model: onnx.ModelProto, amax: Mapping[str, float], qtype: str = "int8") -> None:
        self.amax = amax
        self.qtype = qtype  # of the activation Q/DQ made next (a layerwise model may mix plans)
        self.inits = {i.name: i for i in model.graph.initializer}
        self.nodes: list[onnx.NodeProto] = []
        self.new_inits: list[onnx.TensorProto] = []
        self.made: set[str] = set()

    def _zero_point(self) -> str:
        name = _ZP if self.qtype == "int8" else f"{_ZP}_{self.qtype}"
        if name not in self.made:
            self.made.add(name)
            self.new_inits.append(qdq.zero_point(name, qtype=self.qtype))
        return name

    def rounded(self, src: str) -> str:
        dst = f"{src}__trtq_fp16"
        if dst not in self.made:
            self.made.add(dst)
            self.nodes.extend(qdq.cast_pair(src, dst, dst))
        return dst

    def quantized(self, src: str, tensor: str) -> str:
        tag = "" if self.qtype == "int8" else f"_{self.qtype}"
        dst = f"{src}__trtq_q{tag}"
        if dst not in self.made:
            self.made.add(dst)
            scale = f"{tensor}__trtq_scale{tag}"
            if scale not in self.made:
                self.made.add(scale)
                self.new_inits.append(qdq.scalar_scale(scale, self.amax[tensor], self.qtype))
            self.nodes.extend(qdq.qdq_pair(src, dst, scale, self._zero_point(), dst))
        return dst

    def weight(self, name: str, kind: str, axis: int | None) -> str:
        dst = f"{name}__trtq_{kind}" + ("" if axis is None else f"_ax{axis}")
        if dst not in self.made:
            self.made.add(dst)
            w = numpy_helper.to_array(self.inits[name]).astype(np.float32)
            if kind in ("int8", "fp8"):
                value = qdq.fake_quantize_weight(w, axis, kind)
            else:
                value = qdq.round_fp16(w)
            self.new_inits.append(numpy_helper.from_array(value.astype(np.float32), dst))
        return dst

    def take(self) -> list[onnx.NodeProto]:
        out, self.nodes = self.nodes, []
        return out


def _edge_value(
    b: _Builder, plan: LayerPlan, n: int, pos: int, t: str, producer_rounded: bool, src: str | None = None
) -> str:
    """The value ``node n`` reads at input ``pos``: tensor ``t`` (or its copy ``src``) rounded
    to FP16 and/or fake-quantized with ``t``'s amax, as the plan says."""
    value = t if src is None else src
    if plan.fp16 and not producer_rounded:
        value = b.rounded(value)
    if (n, pos) in plan.quant_edges:
        value = b.quantized(value, t)
    return value


def _warn_layernorm_fp16(lg: LayerGraph, nodes: Sequence[onnx.NodeProto], amax: Mapping[str, float]) -> None:
    """TensorRT's builder warns that a decomposed LayerNorm in FP16 may overflow (``Pow(x - mean,
    2)`` beyond 65504) unless it runs as one normalization layer; the emulation assumes the fused
    layer (FP32 inside), so say where that assumption carries the most risk."""
    decomposed = [ly for ly in lg.layers if ly.kind == "layernorm" and len(ly.nodes) > 1]
    if not decomposed:
        return
    risky = [
        lg.node_names[ly.nodes[0]]
        for ly in decomposed
        if ly.inputs and amax.get(ly.inputs[0], 0.0) >= LAYERNORM_FP16_LIMIT
    ]
    key = (tuple(lg.node_names[ly.nodes[0]] for ly in decomposed), tuple(risky))
    if key in _LAYERNORM_WARNED:  # once per model and ranges: bisect plans every pin set
        return
    _LAYERNORM_WARNED.add(key)
    logger.warning(
        "%d decomposed LayerNorm(s) emulated as one FP16 normalization layer with FP32 inside, as "
        "TensorRT builds it when it fuses them; unfused, Pow(x - mean, 2) overflows FP16 for "
        "|x - mean| >= %g (TensorRT warns 'Running layernorm after self-attention in FP16 may cause "
        "overflow'; export with opset >= 17 for LayerNormalization or pin them)%s",
        len(decomposed),
        LAYERNORM_FP16_LIMIT,
        f"; calibrated inputs reach that at: {', '.join(risky[:5])}" if risky else "",
    )


def apply_plan(plan: EmulationPlan) -> onnx.ModelProto:
    """Rewrite the folded model so that ONNX Runtime computes what the plan says (graphwise)."""
    out = without_initializers(plan.model)  # the weights kept are added once, at the end
    graph = out.graph
    b = _Builder(plan.model, plan.amax, plan.config.qtype)
    plan_of_node = plan.plan_of_node
    rounded_at_producer = {t for lp in plan.layers if lp.fp16 for t in lp.layer.outputs}
    acts = plan.graph.activations
    new_nodes: list[onnx.NodeProto] = []
    for idx, node in enumerate(graph.node):
        lp = plan_of_node.get(idx)
        if lp is None or not lp.changed:
            new_nodes.append(node)
            continue
        for pos, t in enumerate(node.input):
            if (idx, pos) in lp.weights:
                node.input[pos] = b.weight(t, *lp.weights[(idx, pos)])
            elif t in acts and (t not in lp.layer.internal or t in lp.layer.stored):
                node.input[pos] = _edge_value(b, lp, idx, pos, t, t in rounded_at_producer)
            elif (idx, pos) in lp.quant_edges:  # a residual Add's branch: quantized in FP32
                node.input[pos] = _edge_value(b, lp, idx, pos, t, True)
        new_nodes.extend(b.take())
        new_nodes.append(node)
        if lp.fp16:
            for k, o in enumerate(node.output):
                if o in lp.layer.outputs:
                    node.output[k] = f"{o}__trtq_fp32"
                    new_nodes.extend(qdq.cast_pair(node.output[k], o, f"{o}__trtq_fp16"))
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = _read_names(graph)  # prune_initializers' rule, without copying what it would drop
    graph.initializer.extend(i for i in plan.model.graph.initializer if i.name in used)
    graph.initializer.extend(b.new_inits)
    return out


def refresh_initializers(emulated: onnx.ModelProto, plan: EmulationPlan, names: Iterable[str]) -> None:
    """Update ``emulated`` (made by :func:`apply_plan` from ``plan``) in place after the
    initializers ``names`` of ``plan.model`` changed value (same shapes): each one and every
    quantized or rounded copy ``apply_plan`` made of it get the values ``apply_plan(plan)`` would
    give now, without rebuilding the model."""
    names = set(names)
    at = {i.name: i for i in emulated.graph.initializer}
    b = _Builder(plan.model, plan.amax, plan.config.qtype)
    for name in names:
        if name in at:
            at[name].CopyFrom(b.inits[name])
    nodes = plan.model.graph.node
    for lp in plan.layers:
        for (idx, pos), (kind, axis) in lp.weights.items():
            src = nodes[idx].input[pos]
            if src in names:
                b.weight(src, kind, axis)
    for init in b.new_inits:
        if init.name in at:
            at[init.name].CopyFrom(init)


def build_layerwise_model(plans: Iterable[EmulationPlan]) -> tuple[onnx.ModelProto, list[dict[str, str]]]:
    """One model computing the FP32 graph plus, for each plan and each changed layer, a copy of
    that layer in reduced precision fed with the FP32 tensors ("each layer alone").

    Returns the model and, per plan, a map ``original boundary tensor -> its layerwise copy``.
    All plans must share the same folded model. One run of this model gives both the FP32
    reference and every layer's own error.
    """
    plans = list(plans)
    if not plans:
        raise ValueError("no plans")
    out = onnx.ModelProto()
    out.CopyFrom(plans[0].model)
    graph = out.graph
    originals = list(graph.node)
    b = _Builder(out, {})
    maps: list[dict[str, str]] = []
    extra: list[onnx.NodeProto] = []
    for k, plan in enumerate(plans):
        b.amax, b.qtype = plan.amax, plan.config.qtype
        suffix = f"__trtq_lw{k}"
        mapping: dict[str, str] = {}
        for lp in plan.layers:
            if not lp.changed:
                continue
            for idx in lp.layer.nodes:
                node = onnx.NodeProto()
                node.CopyFrom(originals[idx])
                node.name = plan.graph.node_names[idx] + suffix
                for pos, t in enumerate(node.input):
                    if t in lp.layer.internal and (t in lp.layer.stored or (idx, pos) in lp.quant_edges):
                        rounded = t not in lp.layer.stored  # a residual branch stays FP32 before its Q/DQ
                        node.input[pos] = _edge_value(b, lp, idx, pos, t, rounded, src=t + suffix)
                    elif t in lp.layer.internal:
                        node.input[pos] = t + suffix
                    elif (idx, pos) in lp.weights:
                        node.input[pos] = b.weight(t, *lp.weights[(idx, pos)])
                    elif t in plan.graph.activations:
                        node.input[pos] = _edge_value(b, lp, idx, pos, t, producer_rounded=False)
                extra.extend(b.take())
                extra.append(node)
                for j, o in enumerate(node.output):
                    if not o:
                        continue
                    if o in lp.layer.outputs:
                        mapping[o] = o + suffix
                        if lp.fp16:
                            node.output[j] = o + suffix + "__fp32"
                            extra.extend(qdq.cast_pair(node.output[j], o + suffix, o + suffix + "_fp16"))
                            continue
                    node.output[j] = o + suffix
        maps.append(mapping)
    graph.node.extend(extra)
    graph.initializer.extend(b.new_inits)
    prune_initializers(out)
    return out, maps


def _read_names(graph: onnx.GraphProto) -> set[str]:
    """Names a node or the graph's outputs read: the initializers worth keeping."""
    return {i for n in graph.node for i in n.input} | {o.name for o in graph.output}


def prune_initializers(model: onnx.ModelProto) -> None:
    """Drop initializers no node reads any more (weights replaced by rounded/quantized copies)."""
    used = _read_names(model.graph)
    keep = [i for i in model.graph.initializer if i.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
