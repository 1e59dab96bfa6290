"""``--method auto``: per tensor, the threshold whose INT8 error *at the consumer layer's output* is
smallest, measured on the calibration data.

Why: a histogram-only method (entropy2, mse, percentile, minmax) judges a threshold by the error
of the tensor itself, but INT8 quality is decided by what the quantized tensor feeds. A clipped
outlier in a channel the next convolution weighs heavily costs more than its share of |x|; a
coarse step on values the weights average away costs less. No single histogram method is best on
every model (BENCHMARKS.md, "Threshold methods").

Algorithm (one extra pass over a bounded subset of the calibration data, after the histograms):

1. Candidates per tensor, from its saved histogram: the amax of ``entropy2``, ``mse``,
   ``percentile`` at 99.9 / 99.99 / 99.999, ``minmax``, and optionally a geometric grid of
   ``auto_grid`` points between the 99th percentile and max|x| (:func:`candidates`). The grid is
   off by default: measured on held-out data (BENCHMARKS.md) a 16-point grid made every model
   worse (PP-LCNet cosine 0.967 vs 0.981, PP-OCR cls 0.989 vs 0.994, PP-OCRv4 det IoU 0.861 vs
   0.876): with more freedom the search follows the proxy's blind spot (below) into clipping.
2. Quantized consumers (:func:`find_consumers`), on the model as calibrated, by the explicit
   placement rule of :mod:`trtq.precision.emulate` (restated here: calib may not import precision):
   the activation inputs of Conv / ConvTranspose / Gemm / MatMul, the residual inputs of Adds
   fed by a Conv chain, and the branch input of a transformer's residual Add (the input fed by a
   Gemm/MatMul chain; the residual stream is not quantized). Transformer patterns
   (:mod:`trtq._core.transformer_patterns`): LayerNorm and Softmax inputs are never quantized,
   and the two matrix products of an attention block only with ``mha="int8"`` (the default
   ``fp16`` leaves them in float, as the emulation's default does). ``auto`` measures with
   ``mha="int8"`` whatever the export will use (:data:`MEASURED_MHA`): the products' inputs (Q,
   K, the softmax probabilities, V) get measured thresholds, the others are unchanged. A
   BatchNormalization right after a Conv is folded into its weights (as TensorRT does), and
   weights are quantized per output channel (amax_c = max |W_c|, scale = amax_c / 127, values in
   [-127, 127]) as the INT8 build would.
3. For every retained sample and every consumer, the consumer-output error with the input
   fake-quantized at each candidate (``q(x) = clip(round_half_even(x / s), -128, 127) * s``,
   ``s = amax / 127``), in a weight-aware proxy: ``sum_i w_i (q(x_i) - x_i)^2`` with ``w_i`` the
   sum of the squared INT8 weights that multiply element ``i`` (for a linear consumer ``W``,
   ``||W e||^2 = e^T W^T W e``; the proxy keeps the diagonal of ``W^T W``, exact in expectation
   for uncorrelated errors and exact for an isolated clipped outlier), normalised by the same
   weighted energy ``sum_i w_i x_i^2``:

   - Conv (any stride, padding, dilation, group) / ConvTranspose: ``w`` per input channel, from
     the (BN-folded) per-channel-quantized weights;
   - MatMul / Gemm with a constant weight: ``w`` per input feature (alpha included);
   - MatMul of two activations (attention): ``w`` from the *other input in FP32*, per sample;
   - residual Add inputs, and any consumer the above does not cover (a transposed Gemm input,
     a non-constant weight, ...): ``w = 1``, i.e. the tensor's own measured squared error.

   The cost per candidate is one pass over sampled elements, not a layer evaluation (the
   search itself adds 0.2-0.5 s to a plain run on the benchmark models; the fallback's
   thresholds for every tensor are the other extra cost, BENCHMARKS.md "The cost of auto"):
   every element above the smallest candidate (where the candidates differ: the clipped tails)
   is kept (at most ``8 * auto_positions`` per sample,
   else a uniform draw), plus ``auto_positions`` uniform draws of the rest (default 4096), each
   weighted so that the sums are unbiased; all elements when the sample is that small. The draws
   are seeded by the sample's index, so batching does not change the errors. (An exact
   evaluation through the layers, im2col patches times the weights for all candidates, was
   measured at 30-40x a plain run on PP-LCNet.)

4. A tensor's error for a candidate is the mean over its consumers of the relative output error
   ``SSE / energy``; the candidate with the smallest error wins (the first in the order above on
   a tie, so entropy2 keeps a tie). A tensor with no quantized consumer (it is quantized only by
   TensorRT 10's implicit placement), or with no finite non-zero value, gets the ``auto_fallback``
   method's amax (default ``mse``). These tensors matter for TensorRT 10's implicit placement
   from the cache, which quantizes them; the Q/DQ export quantizes almost none (a few on
   PP-OCRv4 det that the consumer finder misses). Why mse (BENCHMARKS.md, "auto's fallback
   back to mse"): in the implicit emulation, held out over 4 splits, it beat entropy2 on PP-OCR
   cls (top-1 +0.125, cosine +0.004) and on rec's reading of real text lines (CER -0.003, exact
   lines +0.10), tied on PP-OCRv4 det and ViT-S, and was mixed on PP-LCNet (top-1 +0.04, photo
   cosine -0.0035, document cosine +0.0003); the Q/DQ export gained +0.0025 IoU on det. The
   fallback is computed for every tensor; entropy2 was the default while mse's search cost 3x a
   plain run over all tensors, until its kernel learned to stop a candidate's sum once it
   cannot win (:mod:`trtq.calib.methods.mse`: 1-2 ms a tensor, about entropy2's cost).

5. With build tools from the caller (``calib run`` and ``precision`` lend the precision room's),
   the choices are then checked at the model output (:mod:`trtq.calib.auto_check`): the tensors
   auto clipped below 1/1.5 of their max|x| get max|x| when the INT8 model's outputs on the same
   samples say so.

Known limits: the error of each tensor is measured with the other tensors in FP32 (no
interaction between choices); the diagonal proxy ignores correlated errors (a cluster of clipped
neighbours adds up coherently in a smoothing kernel, so clipping is underrated); weight-unaware
for the identity cases listed above; and on at most ``auto_samples`` samples (default 16, a
uniform subset of the data: :class:`MeasuredSubset`). The cache and Q/DQ formats do not change:
only the amax values differ, so the result serves TensorRT 10 caches and TensorRT 11 Q/DQ models
alike.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from trtq._core.errors import InputError
from trtq._core.onnx_model import FLOAT_TYPES, float_tensors, tensor_readers
from trtq._core.progress import ProgressFn, null_progress
from trtq._core.transformer_patterns import find_attention, find_layernorms
from trtq.calib.auto_check import CLIP_FACTOR, BuildInt8, CheckOutcome, EarlyBuild, check_ranges
from trtq.calib.histogram import HistogramSet, TensorHistogram
from trtq.calib.methods import EMPTY_AMAX, get_method
from trtq.datasets.prefetch import ordered_map

DEFAULT_SAMPLES = 16
DEFAULT_GRID = 0
DEFAULT_POSITIONS = 4096
DEFAULT_FALLBACK = "mse"
#: The attention products' precision ``auto`` measures for (``find_consumers``' ``mha``): always
#: ``int8``, not the export's ``--mha``, which calibration does not know. Why: one cache serves
#: both choices (``precision export --mha fp16|int8`` reads the same ranges) and TensorRT 10's
#: implicit placement from a cache may run the products in INT8 too; with ``fp16`` the products'
#: inputs got the fallback's thresholds, measured nowhere. Why nothing else changes: a
#: tensor read only by attention products (the usual case: Q, K and V after their head
#: transposes, the softmax output) is not quantized by an ``--mha fp16`` export, and the products
#: are listed after every other consumer, so the other tensors keep their position and with it
#: their seeded element draws (their choices are the same as with ``fp16``). A tensor read by a
#: product *and* by another quantized consumer has its error averaged over both. Cost: auto went
#: from 1.65x to 2.0x a plain run on ViT-S (BENCHMARKS.md, "auto measures the attention
#: products' inputs"), paid by ``--mha fp16`` users too.
MEASURED_MHA = "int8"
AUTO_PERCENTILES = (99.9, 99.99, 99.999)

_POINTWISE_CHAIN = frozenset(
    {"BatchNormalization", "Add", "Sub", "Mul", "Div", "Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid",
     "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu"}
)  # fmt: skip
_ANCHORS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class AutoSettings:
    """Parameters of ``auto`` (also the method's registered parameters, with an ``auto_`` prefix)."""

    samples: int = DEFAULT_SAMPLES  # samples (images) of the search pass: the first ones of the data
    grid: int = DEFAULT_GRID  # geometric grid points between the 99th percentile and max|x| (0: none)
    positions: int = DEFAULT_POSITIONS  # uniform element draws per sample (plus the tail)
    fallback: str = DEFAULT_FALLBACK  # method for tensors without a quantized consumer
    check: bool = True  # the model-output check (trtq.calib.auto_check), when a build is given

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> AutoSettings:
        def get(key: str, default: Any) -> Any:
            v = params.get(f"auto_{key}")
            if v is None:
                return default
            try:
                return type(default)(v)
            except (TypeError, ValueError):
                raise InputError(f"auto_{key} must be an {type(default).__name__}, not {v!r}") from None

        check = get("check", 1)
        if check not in (0, 1):
            raise InputError(f"auto_check must be 0 (off) or 1 (on), not {check!r}")
        s = cls(
            get("samples", DEFAULT_SAMPLES),
            get("grid", DEFAULT_GRID),
            get("positions", DEFAULT_POSITIONS),
            get("fallback", DEFAULT_FALLBACK),
            bool(check),
        )
        if s.samples < 1 or s.grid < 0 or s.positions < 1:
            raise InputError("auto: auto_samples and auto_positions must be >= 1, auto_grid >= 0")
        if get_method(s.fallback).needs_data:
            raise InputError(f"auto_fallback must be a histogram method, not '{s.fallback}'")
        return s


# -- candidates ------------------------------------------------------------------------------------
#: Candidates whose amax does not depend on method parameters: what auto computes for them is
#: what ``compute_amax`` would, so the memo of :func:`auto_thresholds` may share it.
SHARED_METHODS = ("mse", "minmax")


def candidates(
    h: TensorHistogram, grid: int = DEFAULT_GRID, known: Mapping[str, float] | None = None
) -> list[tuple[str, float]]:
    """``(label, amax)`` candidates of one tensor: every histogram method, then the grid.

    Labels: ``entropy2``, ``mse``, ``percentile:99.9`` (and the other percentiles), ``minmax``,
    ``grid:i``. The grid is ``np.geomspace(p99, max_abs, grid)`` with ``p99`` the 99th percentile
    bin edge (max|x| / 256 when that is 0). ``known``: method name -> this tensor's amax that the
    caller has already (the fallback method computes it for every tensor); the others are
    computed here.
    """
    counts, edges, max_abs = h.counts, h.edges, h.max_abs
    known = known or {}

    def of(method: str) -> float:
        v = known.get(method)
        return get_method(method).amax(counts, edges, max_abs=max_abs) if v is None else v

    out = [("entropy2", of("entropy2")), ("mse", of("mse"))]
    pct = get_method("percentile")
    out += [
        (f"percentile:{p:g}", pct.amax(counts, edges, max_abs=max_abs, percentile=p))
        for p in AUTO_PERCENTILES
    ]
    out.append(("minmax", max_abs if max_abs > 0 else EMPTY_AMAX))
    if grid > 0 and max_abs > 0:
        lo = pct.amax(counts, edges, max_abs=max_abs, percentile=99.0)
        if not lo > 0 or lo >= max_abs:
            lo = max_abs / 256.0
        out += [(f"grid:{i}", float(v)) for i, v in enumerate(np.geomspace(lo, max_abs, grid))]
    return [(k, float(v)) for k, v in out]


def fake_quantize(x: np.ndarray, amax: float) -> np.ndarray:
    """Per-tensor symmetric INT8 as QuantizeLinear -> DequantizeLinear computes it (float32)."""
    s = np.float32(amax / 127.0)
    return (np.clip(np.rint(x / s), -128, 127) * s).astype(np.float32)


def fake_quantize_weight(w: np.ndarray, axis: int | None) -> np.ndarray:
    """Per-output-channel symmetric INT8 weights (values in [-127, 127]), dequantized (float32)."""
    w = np.asarray(w, np.float32)
    if axis is None:
        amax = np.array(np.abs(w).max() if w.size else 0.0, np.float32)
    else:
        amax = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis), keepdims=True)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    return (np.clip(np.rint(w / scale), -127, 127) * scale).astype(np.float32)


# -- consumers -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Consumer:
    """One quantized input of one consumer node, with the weight of each input channel.

    ``kind``: ``linear`` (a constant weight: ``channel_weight[c]`` = the sum of the squared INT8
    weights that multiply input channel ``c``, along ``axis`` of one sample), ``matmul_a`` /
    ``matmul_b`` (a product with the ``other`` activation, whose squared values give the
    weights per sample), ``identity`` (weight 1).
    """

    tensor: str
    node: str
    kind: str
    channel_weight: np.ndarray | None = None
    other: str | None = None
    axis: int = -1
    index: int = 0  # position in the consumer list


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(a.t)
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def find_consumers(
    model: onnx.ModelProto, activations: Iterable[str] | None = None, mha: str = "fp16"
) -> dict[str, list[Consumer]]:
    """tensor -> the quantized consumers of that tensor (explicit placement; module docstring).

    ``activations``: the model's float activations when the caller has them (they need shape
    inference: :func:`trtq._core.onnx_model.float_tensors`); ``mha``: ``int8`` when the
    attention blocks' matrix products are quantized (the export's rule for that ``--mha``;
    ``auto`` passes :data:`MEASURED_MHA`). Their consumers come after all the others."""
    graph = model.graph
    consts = _constants(graph)
    acts = set(activations) if activations is not None else {t.name for t in float_tensors(model)}
    producer = {o: node for node in graph.node for o in node.output}
    readers = tensor_readers(graph)
    names = [n.name or f"{n.op_type}_{k}" for k, n in enumerate(graph.node)]
    found: list[tuple[str, str, str, dict]] = []

    def add(t: str, node_name: str, kind: str, **kw: Any) -> None:
        found.append((t, node_name, kind, kw))

    def anchor_of(t: str) -> str | None:
        """The op type of the Conv/Gemm/MatMul that ``t`` comes from through single-reader
        pointwise ops (a fused chain), else None."""
        for _ in range(16):
            p = producer.get(t)
            if p is None:
                return None
            if p.op_type in _ANCHORS:
                return p.op_type
            if p.op_type not in _POINTWISE_CHAIN or len(readers.get(t, [])) != 1:
                return None
            ins = [i for i in p.input if i in acts]
            if len(ins) != 1:
                return None
            t = ins[0]
        return None

    # Inside a transformer pattern only the attention products may be quantized (with mha int8);
    # they are listed after every other consumer (see MEASURED_MHA).
    never = {k for p in find_layernorms(graph) for k in p.nodes}
    products: list[int] = []
    for p in find_attention(graph):
        never |= set(p.nodes)
        products += [p.bmm1, p.bmm2] if mha == "int8" else []
    order = [k for k in range(len(graph.node)) if k not in never] + products
    for k in order:
        node = graph.node[k]
        op, name, ins = node.op_type, names[k], list(node.input)
        if op == "Conv" and ins and ins[0] in acts:
            w = consts.get(ins[1]) if len(ins) > 1 else None
            if w is not None and w.ndim in (3, 4):
                r = [graph.node[j] for j in readers.get(node.output[0], [])]
                bn = r[0] if len(r) == 1 and r[0].op_type == "BatchNormalization" else None
                add(ins[0], name, "linear", channel_weight=_conv_weights(node, w, consts, bn), axis=0)
            else:
                add(ins[0], name, "identity")
        elif op == "ConvTranspose" and ins and ins[0] in acts:
            w = consts.get(ins[1]) if len(ins) > 1 else None
            if w is not None and w.ndim == 4 and _attrs(node).get("group", 1) == 1:
                wq = fake_quantize_weight(w.astype(np.float32), 1)
                add(ins[0], name, "linear", channel_weight=_sq_sum(wq, keep=0), axis=0)
            else:
                add(ins[0], name, "identity")
        elif op == "MatMul" and len(ins) == 2:
            a, b = ins
            if a in acts and b in consts and consts[b].ndim == 2:
                wq = fake_quantize_weight(consts[b].astype(np.float32), 1)
                add(a, name, "linear", channel_weight=_sq_sum(wq, keep=0), axis=-1)
            elif a in acts and b in acts:
                add(a, name, "matmul_a", other=b)
                add(b, name, "matmul_b", other=a)
            else:
                for t in (a, b):
                    if t in acts:
                        add(t, name, "identity")
        elif op == "Gemm" and len(ins) >= 2:
            at = _attrs(node)
            a, b = ins[0], ins[1]
            if a in acts and b in consts and consts[b].ndim == 2 and not at.get("transA", 0):
                w = consts[b].astype(np.float32)
                w = (w.T if at.get("transB", 0) else w) * np.float32(at.get("alpha", 1.0))
                wq = fake_quantize_weight(w, 1)
                add(a, name, "linear", channel_weight=_sq_sum(wq, keep=0), axis=-1)
            else:
                for t in (a, b):
                    if t in acts:
                        add(t, name, "identity")
        elif op == "Add":
            act_ins = [t for t in ins if t in acts]
            if len(act_ins) >= 2:
                chain = {t: anchor_of(t) for t in act_ins}
                for t in act_ins:
                    others = [chain[o] for o in act_ins if o != t]
                    conv_residual = any(a in ("Conv", "ConvTranspose") for a in others)
                    branch = chain[t] in ("MatMul", "Gemm") and not any(a in _ANCHORS for a in others)
                    if conv_residual or branch:
                        add(t, name, "identity")
    out: dict[str, list[Consumer]] = {}
    for idx, (t, node_name, kind, kw) in enumerate(found):
        out.setdefault(t, []).append(Consumer(t, node_name, kind, index=idx, **kw))
    return out


def _conv_weights(
    node: onnx.NodeProto, w: np.ndarray, consts: Mapping[str, np.ndarray], bn: onnx.NodeProto | None
) -> np.ndarray:
    """Per input channel: the sum of the squared INT8 weights that read it; ``bn``: the
    BatchNormalization reading only this Conv, folded into its weights (per output channel)."""
    w = w.astype(np.float32)
    if bn is not None and all(i in consts for i in bn.input[1:5]):
        gamma, _beta, _mean, var = (consts[i].astype(np.float64) for i in bn.input[1:5])
        eps = float(_attrs(bn).get("epsilon", 1e-5))
        factor = (gamma / np.sqrt(var + eps)).astype(np.float32)
        w = w * factor.reshape((-1,) + (1,) * (w.ndim - 1))
    wq = fake_quantize_weight(w, 0)
    group = int(_attrs(node).get("group", 1))
    cout, cin_g = wq.shape[:2]
    per = np.square(wq.reshape(group, cout // group, cin_g, -1), dtype=np.float64).sum(axis=(1, 3))
    return per.reshape(-1)  # [Cin]: input channel c is in group c // cin_g


def _sq_sum(w: np.ndarray, keep: int) -> np.ndarray:
    return np.square(w, dtype=np.float64).sum(axis=tuple(i for i in range(w.ndim) if i != keep))


# -- sampling and evaluation -----------------------------------------------------------------------
def _weights_at(c: Consumer, x: np.ndarray, other: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    """The consumer's weight of the elements ``idx`` (flat indices into one sample ``x``); None: 1."""
    if c.kind == "linear":
        if c.axis == 0:
            return c.channel_weight[idx // (x.size // x.shape[0])]
        return c.channel_weight[idx % x.shape[-1]]
    if c.kind == "matmul_a":  # A [.., M, K] @ B [.., K, N]: A[.., m, k] meets row k of B
        w = np.square(other, dtype=np.float64).sum(axis=-1)[..., None, :]
    elif c.kind == "matmul_b":  # B[.., k, n] meets column k of A
        w = np.square(other, dtype=np.float64).sum(axis=-2)[..., :, None]
    else:
        return None
    shape = np.broadcast_shapes(w.shape, x.shape)
    if shape != x.shape:
        return None  # broadcasting beyond x: weight-unaware
    return np.broadcast_to(w, shape)[np.unravel_index(idx, shape)]


def _sample(x: np.ndarray, lo: float, rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(flat indices, multiplicity)`` for one sample: every element above ``lo`` (the smallest
    candidate: where the candidates differ most; at most ``8 k``, else a uniform draw of them)
    and ``k`` uniform draws of the rest, each weighted so that sums over them estimate sums over
    the whole sample without bias; all elements when the sample has at most ``k``."""
    flat = x.reshape(-1)
    big = np.abs(flat) > lo
    tail = np.flatnonzero(big)
    tail_mult = np.ones(len(tail))
    if len(tail) > 8 * k:
        n_big = len(tail)
        tail = tail[rng.integers(0, n_big, 8 * k)]
        tail_mult = np.full(len(tail), n_big / len(tail))
    if flat.size > k:
        draws, mult_body = rng.integers(0, flat.size, k), flat.size / k
    else:
        draws, mult_body = np.arange(flat.size), 1.0
    body = draws[~big[draws]]
    return np.concatenate([tail, body]), np.concatenate([tail_mult, np.full(len(body), mult_body)])


@dataclass
class _Accumulator:
    sse: np.ndarray  # [K] summed squared output error per candidate
    energy: float = 0.0


@dataclass
class AutoSearch:
    """The measured search: candidates per tensor, consumers, and errors accumulated per sample.

    Use :meth:`add` for every batch of FP32 tensors (any batching: errors are sums over samples),
    then :meth:`choose`.
    """

    histograms: HistogramSet
    consumers: Mapping[str, Sequence[Consumer]]
    settings: AutoSettings = field(default_factory=AutoSettings)
    seen_samples: int = 0
    known_amax: Mapping[str, Mapping[str, float]] | None = None  # method -> amax per tensor, if computed

    def __post_init__(self) -> None:
        names = [
            n
            for n, cons in self.consumers.items()
            if n in self.histograms and cons and self.histograms[n].counts.any()
        ]
        with ThreadPoolExecutor() as pool:  # the methods' kernels release the GIL
            known = self.known_amax or {}
            found = pool.map(
                lambda n: candidates(
                    self.histograms[n], self.settings.grid, {m: v[n] for m, v in known.items() if n in v}
                ),
                names,
            )
            self.cands: dict[str, list[tuple[str, float]]] = dict(zip(names, found, strict=True))
        self.acc: dict[tuple[str, int], _Accumulator] = {
            (t, c.index): _Accumulator(np.zeros(len(self.cands[t])))
            for t in self.cands
            for c in self.consumers[t]
        }
        self._amax = {t: np.array([a for _, a in cands]) for t, cands in self.cands.items()}

    def needed(self) -> list[str]:
        """Tensors a batch must provide: the measured tensors and the other MatMul inputs."""
        names = set(self.cands)
        names |= {c.other for t in self.cands for c in self.consumers[t] if c.other}
        return sorted(names)

    def add(self, tensors: Mapping[str, np.ndarray]) -> None:
        """Accumulate the errors of one batch (``tensors``: FP32 values, batch dimension first)."""
        first = next((v for n, v in tensors.items() if n in self.cands), None)
        if first is None:
            return
        batch = int(first.shape[0]) if first.ndim else 1
        for i in range(batch):
            sample = self.seen_samples + i
            for ti, t in enumerate(self.cands):
                if t in tensors:
                    self._add_one(t, ti, tensors, i, batch, sample)
        self.seen_samples += batch

    def _add_one(
        self, t: str, ti: int, tensors: Mapping[str, np.ndarray], i: int, batch: int, sample: int
    ) -> None:
        """One tensor of one sample: one draw of elements, the errors of every candidate on it,
        then each consumer's weighting of them."""
        x = tensors[t][i].astype(np.float32, copy=False)
        amax = self._amax[t]
        rng = np.random.default_rng([sample, ti])
        idx, mult = _sample(x, float(amax.min()), rng, self.settings.positions)
        v = x.reshape(-1)[idx]
        s = (amax / 127.0).astype(np.float32)[:, None]
        err2 = np.square(np.clip(np.rint(v[None, :] / s), -128, 127) * s - v[None, :], dtype=np.float64)
        v2 = np.square(v, dtype=np.float64)
        for c in self.consumers[t]:
            other = None
            if c.other is not None:
                o = tensors[c.other]
                other = o[i] if o.shape[0] == batch else o[0]
            w = _weights_at(c, x, other, idx)
            m = mult if w is None else mult * w
            acc = self.acc[(t, c.index)]
            acc.energy += float(m @ v2)
            acc.sse += err2 @ m

    def errors(self, tensor: str) -> np.ndarray:
        """Relative consumer-output error per candidate of ``tensor`` (mean over its consumers)."""
        rel = []
        for c in self.consumers[tensor]:
            acc = self.acc[(tensor, c.index)]
            rel.append(acc.sse / acc.energy if acc.energy > 0 else acc.sse)
        return np.mean(rel, axis=0)

    def choose(self, fallback: Mapping[str, float]) -> tuple[dict[str, float], dict[str, dict]]:
        """``(amax, choices)``: the winner per measured tensor, ``fallback`` for the others."""
        amax = dict(fallback)
        choices: dict[str, dict] = {}
        if self.cands and self.seen_samples == 0:
            raise InputError("method 'auto' needs at least one batch of data in this run to measure on")
        for t, cands in self.cands.items():
            errs = self.errors(t)
            j = int(np.argmin(errs))
            label, value = cands[j]
            amax[t] = value
            named = {
                lab: _short(e) for (lab, _), e in zip(cands, errs, strict=True) if not lab.startswith("grid")
            }
            grid = [
                [_short(a), _short(e)]
                for (lab, a), e in zip(cands, errs, strict=True)
                if lab.startswith("grid")
            ]
            choices[t] = {
                "method": label.split(":")[0],
                "candidate": label,
                "amax": value,
                "error": float(errs[j]),
                "errors_by_candidate": {**named, "grid": grid},
                "consumers": [f"{c.node}:{c.kind}" for c in self.consumers[t]],
            }
        for t in fallback:
            if t not in choices:
                choices[t] = {"method": self.settings.fallback, "candidate": "fallback", "amax": fallback[t]}
        return amax, choices


_MASK64 = (1 << 64) - 1


def batch_priority(index: int) -> int:
    """A fixed pseudo-random 64-bit rank of batch ``index`` (splitmix64's finaliser): the batches
    with the lowest ranks are the ones auto measures on (:class:`MeasuredSubset`)."""
    z = (index + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class MeasuredSubset:
    """The batches auto measures on: a uniform subset of the data holding ``samples`` samples.

    Every batch is offered in data order (its index is the number offered before it); the subset
    keeps the batches of the lowest :func:`batch_priority` whose sizes add up to ``samples`` (all
    of them on smaller data),
    holding at most that many batches plus one. The ranks depend on the index alone, so a subset
    does not depend on what the data holds, and a resumed run that offers the batches it skips
    keeps exactly the batches a whole run keeps. The first samples of a folder sorted by class
    would be one class; these are spread over the data.
    """

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self._heap: list[tuple[int, int, int, Mapping[str, np.ndarray]]] = []  # (-rank, index, size, batch)
        self._held = 0
        self.offered = 0

    def offer(self, batch: Mapping[str, np.ndarray]) -> None:
        """Consider the next batch of the data."""
        index, self.offered = self.offered, self.offered + 1
        size = int(next(iter(batch.values())).shape[0]) if batch else 0
        heapq.heappush(self._heap, (-batch_priority(index), index, size, batch))
        self._held += size
        while self._heap and self._held - self._heap[0][2] >= self.samples:
            self._held -= heapq.heappop(self._heap)[2]

    def batches(self) -> list[Mapping[str, np.ndarray]]:
        """The kept batches, in data order."""
        return [b for _, _, _, b in sorted(self._heap, key=lambda e: e[1])]


def _short(v: float) -> float:
    return float(f"{float(v):.4g}")


def auto_thresholds(
    model: onnx.ModelProto,
    histograms: HistogramSet,
    batches: Iterable[Mapping[str, np.ndarray]],
    run: Any,
    params: Mapping[str, object] | None = None,
    *,
    fallback_amax: Mapping[str, float] | None = None,
    known_amax: dict[str, dict[str, float]] | None = None,
    activations: Iterable[str] | None = None,
    build: BuildInt8 | None = None,
    progress: ProgressFn = null_progress,
) -> tuple[dict[str, float], dict[str, dict], CheckOutcome | None]:
    """The ``auto`` thresholds: ``(amax per tensor, choice per tensor, check outcome)``.

    ``batches``: the (retained) calibration batches to measure on; ``run(batch, names)`` returns
    the FP32 values of ``names`` for a batch (graph inputs are taken from the batch itself).
    ``fallback_amax``: the fallback method's amax for every tensor (computed when omitted);
    ``known_amax``: a memo of method -> tensor -> amax that the caller keeps: its values are reused
    as candidates, and the parameter-free methods' amax computed here (``SHARED_METHODS``) are
    added to it, so that the calib document's ``amax_by_method`` does not compute them again;
    ``activations``: the float activations, when known (see :func:`find_consumers`);
    ``build(amax)``: a runner of the model with INT8 at ``amax`` as the export places it, for
    the model-output check (:mod:`trtq.calib.auto_check`; the outcome is None without it or
    with ``auto_check=0``).
    """
    from trtq.calib.run import compute_amax

    settings = AutoSettings.from_params(params or {})
    if fallback_amax is None:
        fallback_amax = compute_amax(histograms, settings.fallback)
    known = known_amax if known_amax is not None else {}
    known[settings.fallback] = dict(fallback_amax)  # the candidates reuse the fallback's amax
    consumers = find_consumers(model, activations, mha=MEASURED_MHA)
    search = AutoSearch(histograms, consumers, settings, known_amax=known)
    for t, cands in search.cands.items():  # hand the computed methods' amax back to the memo
        for label, value in cands:
            if label in SHARED_METHODS:
                known.setdefault(label, {})[t] = value
    need = search.needed()
    checking = build is not None and settings.check
    max_abs = {t: histograms[t].max_abs for t in search.cands}
    early = None
    if checking:  # build ahead, in a thread, unless no candidate clips enough to be flagged
        lowest = {t: min(a for _, a in cands) for t, cands in search.cands.items()}
        if any(max_abs[t] > CLIP_FACTOR * lowest[t] for t in search.cands):
            # every measured tensor's scale is an input: auto may choose any candidate for it
            early = EarlyBuild(build, fallback_amax, [t for t in search.cands if t in fallback_amax])
    outputs = (
        [o.name for o in model.graph.output if o.type.tensor_type.elem_type in FLOAT_TYPES]
        if checking
        else []
    )
    kept: list[Mapping[str, np.ndarray]] = []
    reference: list[dict[str, np.ndarray]] = []

    def measure(batch: Mapping[str, np.ndarray]) -> tuple[Mapping[str, np.ndarray], dict[str, np.ndarray]]:
        fetch = [n for n in dict.fromkeys(need + outputs) if n not in batch]
        outs = run(batch, fetch) if fetch else {}
        return batch, {**{n: batch[n] for n in need if n in batch}, **outs}

    try:
        # The next batch runs on a worker thread while this one's errors are added (the runtime
        # and numpy release the GIL); results come back in order, one batch ahead at most.
        for batch, outs in ordered_map(measure, batches, workers=1, window=1):
            search.add(outs)
            if checking:
                kept.append(batch)
                reference.append({o: outs[o] for o in outputs})
            progress(int(next(iter(batch.values())).shape[0]))
        amax, choices = search.choose(fallback_amax)
    except BaseException:
        if early is not None:
            early.close()
        raise
    if not checking:
        return amax, choices, None
    amax, outcome = check_ranges(amax, choices, max_abs, list(search.cands), kept, reference, build, early)
    return amax, choices, outcome
