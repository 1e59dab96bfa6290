"""Q/DQ models made by other tools (ModelOpt, ONNX Runtime's ``quantize_static``, trtq's export):
find their Q/DQ groups, take groups off, recover the float model, compare and bisect over groups.

A **group** is what quantizes one consumer node: the QuantizeLinear -> DequantizeLinear pairs
feeding its activation inputs and the DequantizeLinear of its constant inputs (INT8/INT32 weights
and biases stored as initializers, or float weights quantized by an explicit Q). The consumer's
node name (:func:`trtq._core.onnx_model.node_names`) names the group and is the pin name.

:func:`strip_qdq` takes the groups of some consumers off: the consumer reads the float tensor
that went into Q (activations, and float weights behind an explicit Q), and a DequantizeLinear of
a constant is replaced by its dequantized float initializer, i.e. exactly the weight values the
Q/DQ model multiplied by. Q/DQ nodes no other consumer reads are removed. TensorRT 11 then runs
that consumer in float (strongly typed: a layer without Q/DQ on its inputs is not INT8).

:func:`float_original` strips every group (and a Q/DQ pair on a graph output). It is **exactly**
the float model where the Q/DQ model keeps float weights quantized by an explicit Q node (the
Q/DQ of float weights); where weights are stored as INT8 initializers (ModelOpt, ONNX Runtime's
``quantize_static`` default, trtq's export) it is the float model with the **dequantized**
weights (each weight rounded to its INT8 grid), not the original weights: a reference that
already contains the weight quantization error, so errors measured against it are those of the
activations only. :func:`recovery_kind` says which case a model is.

Matching by name: these tools keep the float activation's name as the input of Q and give the
DQ output a new name, so every float tensor of the reference is found under the same name in the
Q/DQ model (the float tensor before Q, and the consumers' outputs).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from trtq._core.onnx_model import node_names

Q, DQ = "QuantizeLinear", "DequantizeLinear"


@dataclass(frozen=True)
class QdqGroup:
    """The Q/DQ of one consumer node. ``activations``: (input position, float tensor before Q);
    ``constants``: (input position, DQ node index) of dequantized constants (weights, biases)."""

    node: str
    op_type: str
    index: int
    outputs: tuple[str, ...]
    activations: tuple[tuple[int, str], ...]
    constants: tuple[tuple[int, int], ...]


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node values by name."""
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _producers(model: onnx.ModelProto) -> dict[str, int]:
    return {t: i for i, n in enumerate(model.graph.node) for t in n.output}


def is_qdq_model(model: onnx.ModelProto) -> bool:
    """True when some node's activation input comes through QuantizeLinear -> DequantizeLinear."""
    return bool(find_groups(model))


def qdq_precision(model: onnx.ModelProto) -> str:
    """``fp8`` when a QuantizeLinear / DequantizeLinear of ``model`` reads an FP8 initializer (an
    FP8 zero point or weight), else ``int8``: the label of its comparison and pins."""
    fp8 = {
        onnx.TensorProto.FLOAT8E4M3FN,
        onnx.TensorProto.FLOAT8E4M3FNUZ,
        onnx.TensorProto.FLOAT8E5M2,
        onnx.TensorProto.FLOAT8E5M2FNUZ,
    }
    types = {t.name: t.data_type for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in (Q, DQ) and any(types.get(t) in fp8 for t in node.input):
            return "fp8"
    return "int8"


def find_groups(model: onnx.ModelProto) -> list[QdqGroup]:
    """The Q/DQ groups of ``model`` in topological order; a group needs at least one activation
    Q/DQ pair (a node fed only by weight DQs, e.g. a weight-only quantized MatMul, is one too)."""
    nodes = model.graph.node
    names = node_names(model)
    prod = _producers(model)
    consts = _constants(model)
    groups = []
    for idx, node in enumerate(nodes):
        if node.op_type in (Q, DQ):
            continue
        acts, cons = [], []
        for pos, t in enumerate(node.input):
            d = prod.get(t)
            if d is None or nodes[d].op_type != DQ:
                continue
            src = nodes[d].input[0]
            q = prod.get(src)
            if q is not None and nodes[q].op_type == Q:
                acts.append((pos, nodes[q].input[0]))
            elif src in consts:
                cons.append((pos, d))
        if acts or cons:
            groups.append(
                QdqGroup(names[idx], node.op_type, idx, tuple(node.output), tuple(acts), tuple(cons))
            )
    return groups


def _dequantize(node: onnx.NodeProto, consts: Mapping[str, np.ndarray]) -> np.ndarray:
    """The float value of a DequantizeLinear of constants (ONNX semantics, ``axis`` default 1)."""
    x = consts[node.input[0]].astype(np.float32)
    scale = consts[node.input[1]].astype(np.float32)
    zp = consts[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else np.float32(0)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if scale.size > 1:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        scale, zp = scale.reshape(shape), np.asarray(zp).reshape(shape) if np.ndim(zp) else zp
    else:
        scale, zp = scale.reshape(()), np.asarray(zp).reshape(())
    return ((x - zp) * scale).astype(np.float32)


def strip_qdq(model: onnx.ModelProto, consumers: Iterable[str], *, outputs: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` with the Q/DQ groups of ``consumers`` (node names) taken off (see the
    module docstring); ``outputs=True`` also takes the Q/DQ pairs off graph outputs. Q/DQ nodes
    and initializers left unused are removed."""
    wanted = set(consumers)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    consts = _constants(model)
    new_inits: dict[str, onnx.TensorProto] = {}
    for g in find_groups(out):
        if g.node not in wanted:
            continue
        node = graph.node[g.index]
        for pos, src in g.activations:
            node.input[pos] = src
        for pos, d in g.constants:
            dq = graph.node[d]
            name = f"{dq.input[0]}_dequantized" if dq.op_type == DQ else dq.output[0]
            if name not in new_inits:
                new_inits[name] = numpy_helper.from_array(_dequantize(dq, consts), name)
            node.input[pos] = name
    if outputs:
        prod = _producers(out)
        for o in graph.output:
            d = prod.get(o.name)
            if d is None or graph.node[d].op_type != DQ:
                continue
            q = prod.get(graph.node[d].input[0])
            if q is not None and graph.node[q].op_type == Q:
                src = graph.node[q].input[0]
                graph.node[d].CopyFrom(helper.make_node("Identity", [src], [o.name], name=graph.node[d].name))
    graph.initializer.extend(new_inits.values())
    _prune(out)
    return out


def _prune(model: onnx.ModelProto) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads, then unused initializers."""
    graph = model.graph
    while True:
        used = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
        dead = [i for i, n in enumerate(graph.node) if n.op_type in (Q, DQ) and not set(n.output) & used]
        if not dead:
            break
        for i in reversed(dead):
            del graph.node[i]
    used = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def recovery_kind(model: onnx.ModelProto) -> str:
    """``exact`` when every quantized constant of ``model`` is a float weight behind an explicit
    Q (strip gives the original weights back), else ``dequantized-weights``."""
    nodes = model.graph.node
    prod = _producers(model)
    consts = _constants(model)
    for g in find_groups(model):
        for _, d in g.constants:
            if nodes[d].input[0] in consts:
                return "dequantized-weights"
        for _, src in g.activations:
            if src in consts and prod.get(src) is None and consts[src].dtype != np.float32:
                return "dequantized-weights"
    return "exact"


def float_original(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float model behind ``model``: every group stripped, graph-output Q/DQ too. Exact for
    Q/DQ of float weights; with INT8-stored weights the weights are the dequantized ones (see the
    module docstring and :func:`recovery_kind`)."""
    return strip_qdq(model, [g.node for g in find_groups(model)], outputs=True)


def recovery_note(model: onnx.ModelProto) -> str:
    """One line for people saying how the float reference was recovered."""
    if recovery_kind(model) == "exact":
        return "no --reference: the float model was recovered from the Q/DQ model exactly (float weights behind Q)"
    return (
        "no --reference: the float model was recovered from the Q/DQ model with its weights dequantized "
        "(INT8 initializers): errors are those of the activations' quantization only"
    )


# -- compare ----------------------------------------------------------------------------------


def compare_qdq(
    qdq_model: onnx.ModelProto,
    reference: onnx.ModelProto,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    threads: int | None = None,
    output_accumulator: Any = None,
    layers: bool = True,
) -> Any:
    """Per-tensor error of ``qdq_model`` against ``reference`` (its float original): every float
    tensor of the reference found under the same name in the Q/DQ model, graphwise. Returns one
    :class:`~trtq.precision.compare.CompareRun` (precision ``int8`` or ``fp8``,
    :func:`qdq_precision`; placement ``qdq-model``). ``layers=False``: the model outputs only
    (nothing marked: both models run as they are built)."""
    from trtq._core.onnx_model import float_tensors
    from trtq.precision.compare import CompareRun, TensorRecord
    from trtq.precision.metrics import MetricAccumulator, OutputAccumulator
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    ref_tensors = {t.name: t for t in float_tensors(reference)}
    qdq_names = {t for n in qdq_model.graph.node for t in n.output} | {i.name for i in qdq_model.graph.input}
    out_names = [o.name for o in reference.graph.output]
    inputs = {i.name for i in reference.graph.input}
    names = [n for n in ref_tensors if n in qdq_names and n not in out_names and n not in inputs]
    if not layers:
        names = []
    ref_nodes = node_names(reference)
    producers = {t: (ref_nodes[i], n.op_type) for i, n in enumerate(reference.graph.node) for t in n.output}
    fetch = [*names, *out_names]
    make_out = output_accumulator or OutputAccumulator
    acc = {n: MetricAccumulator() for n in names}
    out_acc = {n: make_out() for n in out_names}
    ref_run = OnnxRuntimeRunner(reference, mark=names, threads=threads, optimize=False)
    got_run = OnnxRuntimeRunner(qdq_model, mark=names, threads=threads, optimize=False)
    try:
        for feeds in batches:
            ref = ref_run.run(feeds, fetch)
            got = got_run.run(feeds, fetch)
            for n in names:
                if n in ref and n in got:
                    acc[n].update(got[n], ref[n])
            for n in out_names:
                out_acc[n].update(got[n], ref[n])
    finally:
        ref_run.close()
        got_run.close()
    pinned: set[str] = set()
    layers = [
        TensorRecord(i, *producers.get(n, ("", "input")), n, n in pinned, acc[n].result())
        for i, n in enumerate(names)
        if acc[n].n
    ]
    outputs = [TensorRecord(-1, "", "", n, False, out_acc[n].result()) for n in out_names]
    return CompareRun(qdq_precision(qdq_model), "graphwise", "qdq-model", [], layers, outputs)


# -- bisect over groups -----------------------------------------------------------------------


class QdqBuild:
    """The Build of :class:`~trtq.precision.evaluate.Evaluator` for a Q/DQ model:
    ``build(pins)`` is ``strip_qdq(model, pins)`` run node for node on ONNX Runtime."""

    backend_label = "onnxruntime (Q/DQ model)"

    def __init__(self, model: onnx.ModelProto, threads: int | None = None) -> None:
        self.model, self.threads = model, threads

    def __call__(self, pins: frozenset[str]):
        from trtq.precision.builds import onnx_candidate

        return onnx_candidate(strip_qdq(self.model, pins) if pins else self.model, threads=self.threads)


def group_scores(
    model: onnx.ModelProto, batches: Sequence[Mapping[str, np.ndarray]], threads: int | None = None
) -> dict[str, float]:
    """The ranking proxy of each group: the worst rel-l2, over the consumer's activation inputs,
    of the dequantized input against the float tensor that went into Q, both from one run of the
    Q/DQ model (the quantization error that group's Q/DQ adds at that point; weights not counted).
    A planted bad scale (an amax 300x too large) makes rel-l2 ~1 there and ranks that group first."""
    from trtq.precision.metrics import MetricAccumulator
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    groups = find_groups(model)
    nodes = model.graph.node
    pairs = {}
    for g in groups:
        node = nodes[g.index]
        pairs[g.node] = [(src, node.input[pos]) for pos, src in g.activations]
    mark = sorted({t for p in pairs.values() for pair in p for t in pair})
    graph_inputs = {i.name for i in model.graph.input}
    acc: dict[tuple[str, str], MetricAccumulator] = {}
    runner = OnnxRuntimeRunner(
        model, mark=[t for t in mark if t not in graph_inputs], threads=threads, optimize=False
    )
    try:
        for feeds in batches:
            values = dict(runner.run(feeds, runner.marked))
            values.update(feeds)
            for p in pairs.values():
                for src, dq in p:
                    if src in values and dq in values:
                        acc.setdefault((src, dq), MetricAccumulator()).update(values[dq], values[src])
    finally:
        runner.close()
    scores = {}
    for name, p in pairs.items():
        errs = [acc[k].result()["rel_l2"] for k in p if k in acc]
        errs = [float("inf") if not np.isfinite(e) else float(e) for e in errs]
        scores[name] = max(errs) if errs else 0.0
    return scores


def group_space(model: onnx.ModelProto, scores: Mapping[str, float] | None = None):
    """The bisect :class:`~trtq.precision.strategies.SearchSpace` of ``model``'s groups (one
    Layer per consumer node), ranked worst first by ``scores`` when given."""
    from trtq.precision.strategies import Layer, SearchSpace

    layers = tuple(
        Layer(
            g.node,
            g.outputs[0] if g.outputs else g.node,
            g.op_type,
            g.index,
            g.outputs or (g.node,),
            None if scores is None else scores.get(g.node),
        )
        for g in find_groups(model)
    )
    if scores is None:
        return SearchSpace(layers)
    ranked = tuple(sorted(layers, key=lambda lay: (-(lay.error or 0.0), lay.index)))
    return SearchSpace(layers, ranked)


def run_bisect_qdq(
    model: onnx.ModelProto,
    batches: Sequence[Mapping[str, np.ndarray]],
    *,
    reference: onnx.ModelProto | None = None,
    criterion: Any = None,
    strategy: str = "ranked",
    max_evals: int | None = None,
    threads: int | None = None,
    early_stop: bool = True,
    progress: Any = None,
    sources: Mapping[str, Any] | None = None,
):
    """Bisect over the Q/DQ groups of ``model``: the smallest set of consumers whose Q/DQ must come
    off (those layers run in float) so that the model passes ``criterion`` against ``reference``
    (default: :func:`float_original`). Same driver, strategies and verdicts as
    :func:`trtq.precision.bisect.run_bisect`; the ranked/linear strategies rank groups by
    :func:`group_scores`. ``settings`` record ``qdq_model: true``."""
    from trtq._core.progress import null_progress
    from trtq.precision.bisect import DEFAULT_MAX_EVALS, replay_settings, search
    from trtq.precision.evaluate import Evaluator, metric_criterion
    from trtq.precision.strategies import get_strategy

    start = time.perf_counter()
    batches = list(batches)
    criterion = criterion or metric_criterion("cosine")
    max_evals = max_evals or DEFAULT_MAX_EVALS
    progress = progress or null_progress
    recovered = reference is None
    reference = float_original(model) if recovered else reference
    build = QdqBuild(model, threads)
    evaluator = Evaluator(build, batches, criterion, model=reference, threads=threads, early_stop=early_stop)
    ranking_s = 0.0
    if get_strategy(strategy).needs_ranking:
        t0 = time.perf_counter()
        space = group_space(model, group_scores(model, batches, threads))
        ranking_s = time.perf_counter() - t0
    else:
        space = group_space(model)
    result = search(space, evaluator, strategy, max_evals=max_evals, progress=progress)
    result.settings = replay_settings(
        criterion,
        batches,
        strategy=strategy,
        max_evals=max_evals,
        sources=sources,
        precision="int8",
        placement="qdq-model",
        qdq_model=True,
        reference_recovered=recovery_kind(model) if recovered else None,
        amax=None,
    )
    result.criterion = criterion.describe()
    result.backend = build.backend_label
    result.ranking_s = ranking_s
    result.wall_s = time.perf_counter() - start
    return result


def verify_qdq_pins(
    model: onnx.ModelProto,
    nodes: Sequence[str],
    batches: Sequence[Mapping[str, np.ndarray]],
    criterion: Any,
    *,
    reference: onnx.ModelProto | None = None,
    threads: int | None = None,
    source: str = "pins",
):
    """``precision pin`` for a Q/DQ model: strip the groups of ``nodes`` and judge the repaired
    model on ONNX Runtime against ``reference`` (default :func:`float_original`). Returns a
    :class:`~trtq.precision.verify_pins.PinVerification`; the model is its own emulation here (the
    Q/DQ model is what TensorRT 11 builds), so ``emulated`` is the same judgement."""
    from trtq._core.errors import InputError
    from trtq.precision.evaluate import Evaluator
    from trtq.precision.verify_pins import PinVerification

    known = {g.node for g in find_groups(model)}
    missing = [n for n in nodes if n not in known]
    if missing:
        raise InputError(
            f"{source}: pinned node '{missing[0]}' is not a Q/DQ consumer of the model: were the pins made for another model?"
        )
    start = time.perf_counter()
    fixed = strip_qdq(model, nodes)
    reference = reference if reference is not None else float_original(model)
    build = QdqBuild(fixed, threads)
    applied = Evaluator(build, batches, criterion, model=reference, threads=threads, early_stop=False)(
        frozenset()
    )
    return PinVerification(
        fixed, list(nodes), "int8", criterion, applied, applied, time.perf_counter() - start
    )
