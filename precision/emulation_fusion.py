"""Which ONNX nodes TensorRT fuses into one layer, and so which tensors survive as layer boundaries.

Reduced precision is applied only at layer boundaries: inside a fused layer TensorRT keeps the
intermediate values in registers at the kernel's internal precision (FP32 accumulation and
epilogue), so rounding every ONNX tensor would overstate the error.

Fusion rules assumed (run on a model already folded by :mod:`trtq.precision.fold`):

- *Anchors* are Conv, ConvTranspose, Gemm and MatMul. A layer holds at most one anchor.
- *Pointwise* ops (Add, Sub, Mul, Div, Pow, Sqrt, Relu, Clip, Sigmoid, HardSigmoid, HardSwish,
  Tanh, Erf, ...; the set ``POINTWISE``) fuse with their producer when that producer is an anchor
  or pointwise and **every** consumer of the tensor between them is pointwise: this covers
  Conv+bias+activation, Conv+residual Add+activation, hard-swish written as
  ``x * Clip(x + 3, 0, 6) / 6`` (TensorRT's ``Conv + PWN(...)``), and chains of element-wise ops
  (TensorRT's PointWise fusion), including ones with several outside inputs.
- A tensor that is a graph output, or is read by any non-pointwise op (pooling, Reduce*, Concat,
  Resize, Softmax, Reshape, another Conv, ...), is a boundary.
- A fusion that would create a cycle between layers is refused (fused layers must stay convex).
  Nodes are visited in reverse topological order, so of two Convs feeding a residual Add the
  later one absorbs the Add and the other Conv's output is the Add's residual input.
- Pinned nodes (kept in FP32) never fuse with anything: TensorRT does not fuse across precisions.

Transformer patterns (matched first by :mod:`trtq._core.transformer_patterns`; each is one
closed layer: nothing else fuses into it, and a pin on any of its nodes pins it whole):

- *LayerNorm* (``kind="layernorm"``), the decomposed form (ReduceMean, Sub, Pow, ReduceMean,
  Add eps, Sqrt, Div, [Mul gamma], [Add beta]) and the ``LayerNormalization`` op: one
  normalization layer, FP32 inside (mean, variance and normalisation accumulate in FP32), the
  reduced precision only at its input and output. TensorRT's ONNX parser maps
  ``LayerNormalization`` (opset 17) to ``INormalizationLayer``; the decomposed form is fused by
  the builder's pattern matcher (Myelin) into one kernel, which is what we assume. When it does
  not fuse it, the FP16 ``Pow(x - mean, 2)`` overflows for ``|x - mean| >= 256``: TensorRT's
  builder warns "Detected layernorm nodes in FP16" / "Running layernorm after self-attention in
  FP16 may cause overflow. Exporting the model to the latest available ONNX opset (later than
  opset 17) to use the INormalizationLayer, or forcing layernorm layers to run in FP32
  precision can help with preserving accuracy" (TensorRT 8.6+ builder log, quoted from user
  reports of it); :mod:`trtq.precision.emulate` repeats that warning, naming the LayerNorms
  whose calibrated input reaches 256.
- *Attention* (``kind="attention"``): ``MatMul(Q, K')`` -> up to three point-wise ops (scale,
  additive or ``Where`` mask) -> ``Softmax`` -> ``MatMul(P, V)``: one fused attention layer, as
  TensorRT builds it from these primitive layers (TensorRT developer guide, "Fused Attention":
  fusion from IMatrixMultiplyLayer + ISoftMaxLayer graphs, mask as an add offset or boolean, the
  scale recommended on Q and/or K *before* the first product, which then stays an ordinary
  point-wise layer outside). Internal precision emulated: the scores, scale, mask and softmax in
  FP32; the probabilities ``P`` are ``stored`` at the layer's I/O precision before the second
  product (FP16 in an FP16 build; quantized, with their calibrated scale, when the attention
  runs quantized: IAttention's "normalization quantize scale" on the softmax output). That
  FP32-inside / FP16-P split is our reading of the fused kernels, not a documented guarantee.
- GELU, Erf form (``0.5 x (1 + erf(x / sqrt 2))``) and Tanh form, and ``Gelu``: point-wise ops,
  so they fuse into their producer's layer (fc1 + bias + GELU is one layer) by the rule above.

Known limits: TensorRT's real choice depends on the version, the GPU and kernel timing; it also
fuses patterns we do not model (e.g. larger Myelin regions spanning several of our layers,
Concat elimination by writing into a shared buffer, Shuffle+Conv) and can decline a fusion we
assume (an attention block whose head size or sequence length has no fused kernel runs as
separate layers: its scores and probabilities are then FP16 tensors). The rules here are the
common case for Conv/MatMul networks and standard transformer blocks, not a guarantee.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import onnx

from trtq._core.onnx_model import float_tensors, node_names, tensor_readers
from trtq._core.tensors import TensorInfo
from trtq._core.transformer_patterns import find_attention, find_layernorms

ANCHORS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
POINTWISE = frozenset(
    {
        "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Abs", "Neg", "Reciprocal", "Min", "Max",
        "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "Sigmoid", "HardSigmoid",
        "HardSwish", "Tanh", "Softplus", "Softsign", "Clip", "Erf", "Gelu", "Mish", "Floor", "Ceil",
        "Sin", "Cos",
    }
)  # fmt: skip
_FUSIBLE = POINTWISE | ANCHORS


@dataclass(frozen=True)
class Layer:
    """One fused TensorRT layer.

    ``nodes`` are indices into ``model.graph.node`` in topological order; ``anchor`` is the index
    of its Conv/Gemm/MatMul (or ``None``); ``inputs`` are the activation tensors it reads from
    outside; ``outputs`` the boundary tensors it produces; ``internal`` the tensors that stay
    inside the fused kernel. ``kind``: ``"layernorm"`` or ``"attention"`` for a transformer
    pattern grouped whole (:mod:`trtq._core.transformer_patterns`), ``""`` otherwise; ``stored``:
    internal tensors the kernel keeps in its I/O precision rather than FP32 (the attention
    probabilities between the two matrix products: FP16 in an FP16 build, quantized when the
    attention runs in INT8/FP8).
    """

    id: int
    nodes: tuple[int, ...]
    anchor: int | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    internal: frozenset[str] = field(default_factory=frozenset)
    kind: str = ""
    stored: frozenset[str] = field(default_factory=frozenset)

    @property
    def head(self) -> int:
        """The node that names the layer (and is pinned to keep it in FP32): its anchor, else its last node."""
        return self.anchor if self.anchor is not None else self.nodes[-1]


@dataclass(frozen=True)
class LayerGraph:
    """The layers of a model plus the lookups every emulation step needs."""

    layers: tuple[Layer, ...]
    activations: frozenset[str]  # float activation tensors (see trtq._core.onnx_model.float_tensors)
    producer: dict[str, int]  # tensor -> node index
    sites: tuple[TensorInfo, ...] = ()  # the float tensors themselves, topological order
    node_names: tuple[str, ...] = ()  # every node's name (trtq._core.onnx_model.node_names), by index


def find_layers(
    model: onnx.ModelProto, pins: Iterable[str] = (), *, sites: Sequence[TensorInfo] | None = None
) -> LayerGraph:
    """Group the nodes of a folded, topologically sorted ``model`` into TensorRT layers.

    Only nodes producing at least one float activation form layers; shape computations and
    constant subgraphs are not layers (TensorRT folds them). ``sites``: the model's
    :func:`~trtq._core.onnx_model.float_tensors`, when the caller already has them (they need
    shape inference, and only the pins change between the evaluations of a search).
    """
    graph = model.graph
    pins = set(pins)
    sites = tuple(float_tensors(model) if sites is None else sites)
    activations = frozenset(s.name for s in sites)
    producer = {o: idx for idx, node in enumerate(graph.node) for o in node.output if o}
    consumers = tensor_readers(graph)
    graph_outputs = {o.name for o in graph.output}
    layer_nodes = sorted({producer[s.name] for s in sites if s.name in producer})
    is_layer = set(layer_nodes)
    names = tuple(node_names(model))
    pinned = {i for i in layer_nodes if names[i] in pins}

    parent = {i: i for i in layer_nodes}
    members: dict[int, set[int]] = {i: {i} for i in layer_nodes}
    has_anchor = {i: graph.node[i].op_type in ANCHORS for i in layer_nodes}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    internal: set[str] = set()
    # Transformer patterns first, each one closed layer (a pin on any of its nodes pins it whole).
    kinds: dict[int, str] = {}
    stored: set[str] = set()
    closed: set[int] = set()
    for p in (*find_layernorms(graph), *find_attention(graph)):
        if len(p.nodes) < 2 or not all(i in is_layer for i in p.nodes) or closed & set(p.nodes):
            if len(p.nodes) == 1 and p.nodes[0] in is_layer:
                kinds[p.nodes[0]] = p.kind
            continue
        root = min(p.nodes)
        for i in p.nodes:
            parent[i] = root
            if i != root:
                members[root] |= members.pop(i)
                has_anchor[root] = has_anchor[root] or has_anchor.pop(i)
        closed |= set(p.nodes)
        kinds[root] = p.kind
        internal |= {o for i in p.nodes for o in graph.node[i].output if o and o != p.output}
        if p.probs:
            stored.add(p.probs)

    def fusible(i: int) -> bool:
        return i in is_layer and i not in pinned and i not in closed and graph.node[i].op_type in _FUSIBLE

    def creates_cycle(group: set[int]) -> bool:
        # A path leaving the group and re-entering it: search forward from outside successors,
        # bounded by the group's last topological position.
        last = max(group)
        stack = [
            c for n in group for o in graph.node[n].output for c in consumers.get(o, ()) if c not in group
        ]
        seen: set[int] = set()
        while stack:
            n = stack.pop()
            if n in seen or n > last:
                continue
            seen.add(n)
            for o in graph.node[n].output:
                for c in consumers.get(o, ()):
                    if c in group:
                        return True
                    stack.append(c)
        return False

    # Reverse topological order: a consumer-side chain (Clip -> Div -> Mul of a hard-swish) is
    # merged before its producer joins it, so the later join never looks like a cycle; and of two
    # Convs feeding one residual Add, the later one (as in TensorRT) takes the Add.
    for a in reversed(layer_nodes):
        if not fusible(a):
            continue
        for t in graph.node[a].output:
            if t not in activations or t in graph_outputs:
                continue
            cons = consumers.get(t, [])
            if not cons or not all(fusible(c) and graph.node[c].op_type in POINTWISE for c in cons):
                continue
            roots = {find(a)} | {find(c) for c in cons}
            if sum(has_anchor[r] for r in roots) > 1:
                continue
            group = set().union(*(members[r] for r in roots))
            if creates_cycle(group):
                continue
            root = min(roots)
            for r in roots:
                if r != root:
                    parent[r] = root
                    members[root] |= members.pop(r)
                    has_anchor[root] = has_anchor[root] or has_anchor.pop(r)
            internal.add(t)

    groups: dict[int, list[int]] = defaultdict(list)
    for i in layer_nodes:
        groups[find(i)].append(i)
    layers: list[Layer] = []
    for lid, root in enumerate(sorted(groups, key=lambda r: max(groups[r]))):
        nodes = tuple(sorted(groups[root]))
        node_set = set(nodes)
        anchor = next((n for n in nodes if graph.node[n].op_type in ANCHORS), None)
        ins: list[str] = []
        outs: list[str] = []
        for n in nodes:
            for i in graph.node[n].input:
                if i in activations and producer.get(i) not in node_set and i not in ins:
                    ins.append(i)
            for o in graph.node[n].output:
                if o in activations and o not in internal:
                    outs.append(o)
        layer_internal = frozenset(o for n in nodes for o in graph.node[n].output if o in internal)
        layers.append(
            Layer(
                lid, nodes, anchor, tuple(ins), tuple(outs), layer_internal,
                kinds.get(root, ""), frozenset(layer_internal & stored),
            )
        )  # fmt: skip
    return LayerGraph(
        layers=tuple(layers), activations=activations, producer=producer, sites=sites, node_names=names
    )
