"""The one home of the ONNX facts trtq relies on: loading and saving (with one-line errors for bad
files, and one way of keeping a source model's metadata), node names, real inputs, tensor types
and the float activations TensorRT would calibrate. Constant folding lives in
:mod:`trtq._core.onnx_fold`, the tensor metadata type in :mod:`trtq._core.tensors`.

Conventions used across trtq:
- a node's name is its ``name``, or ``<op_type>_<index>`` when it has none (:func:`node_names`:
  collision-safe, so pins, reports, ``surgery`` findings and rewrites all mean the same node);
- a model's *real inputs* are its graph inputs that are not initializers (:func:`real_inputs`:
  old exporters list every initializer as a graph input too);
- a *float tensor* is a graph input or node output of type FLOAT, FLOAT16 or BFLOAT16 that is
  computed from the data (not only from initializers/Constant nodes: TensorRT folds those away,
  so they never become network tensors with activations);
- tensors are listed in topological order, keyed by their ONNX names, which are also the
  TensorRT network tensor names produced by its ONNX parser;
- who reads a tensor: :func:`tensor_readers` (node positions, one per input slot).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError, Message

from trtq._core.atomic import atomic_folder, atomic_path
from trtq._core.errors import InputError
from trtq._core.tensors import Producer, TensorInfo, is_static_dim

FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
# Ops whose output is data-independent metadata or random: never "computed from data" in the
# calibration sense, or never foldable.
_SHAPE_OPS = {"Shape", "Size"}
RANDOM_OPS = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}


#: Float initializers with at least this many elements are passed to shape inference without
#: their values (:func:`without_weights`): no shape input or attribute-like input is this large.
_WEIGHT_ELEMENTS = 1024
_FLOAT_DATA = (*FLOAT_TYPES, onnx.TensorProto.DOUBLE)


def without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose large float initializers keep name, type and dims but no values.

    Shape inference needs an initializer's values only where they are shapes, indices or scales
    (int64, or a handful of floats such as Resize's scales); the weights only lend their dims.
    Inference on this copy gives the same value infos and does not serialise the weights
    (ViT-S: 0.3 s -> 0.01 s per call). Small and external initializers are copied as they are.
    """
    out = without_initializers(model)
    for init in model.graph.initializer:
        if (
            init.data_type in _FLOAT_DATA
            and init.data_location != onnx.TensorProto.EXTERNAL
            and int(np.prod(init.dims, dtype=np.int64)) >= _WEIGHT_ELEMENTS
        ):
            out.graph.initializer.add(name=init.name, dims=init.dims, data_type=init.data_type)
        else:
            out.graph.initializer.append(init)
    return out


def without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose graph has no initializers; everything else is copied. For passes
    that replace most weights: copying them only to drop them costs a copy of the whole model."""
    out = onnx.ModelProto()
    for owner, copy, skip in ((model, out, "graph"), (model.graph, out.graph, "initializer")):
        for fd, value in owner.ListFields():
            if fd.name == skip:
                continue
            if isinstance(value, Message):
                getattr(copy, fd.name).CopyFrom(value)
            elif hasattr(value, "extend"):  # a repeated field
                getattr(copy, fd.name).extend(value)
            else:
                setattr(copy, fd.name, value)
    out.graph.SetInParent()
    return out


def _inferred_value_infos(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Declared and shape-inferred value infos (only the declared ones when inference fails)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(without_weights(model), strict_mode=False).graph
    except Exception:  # a model shape inference cannot handle keeps its declared types
        inferred = model.graph
    return list(inferred.value_info) + list(inferred.input) + list(inferred.output)


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """ONNX element type of every tensor whose type is declared or found by shape inference."""
    vis = _inferred_value_infos(model)
    return {vi.name: vi.type.tensor_type.elem_type for vi in vis if vi.type.HasField("tensor_type")}


def tensor_ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every tensor whose shape is declared or found by shape inference."""
    vis = _inferred_value_infos(model)
    return {v.name: len(v.type.tensor_type.shape.dim) for v in vis if v.type.tensor_type.HasField("shape")}


def np_dtype(elem_type: int) -> np.dtype:
    """numpy dtype of an ONNX element type (float32 for types numpy has no match for)."""
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        return np.dtype(np.float32)


def node_names(
    graph: onnx.ModelProto | onnx.GraphProto | onnx.FunctionProto | Sequence[onnx.NodeProto],
) -> list[str]:
    """The name of every node of ``graph`` (a model's main graph, a subgraph, a function body or
    a list of nodes), by position.

    A named node keeps its name; an unnamed one is ``<op_type>_<index>`` (``index``: its position
    in ``graph.node``), with ``_`` appended while that collides with a name in the graph (a node
    already called ``Relu_0``, or an earlier generated name). This is the one naming every room
    uses: bisect pins, calibration and comparison reports, the FP16 export, ``surgery``
    findings and rewrites. Names are not made unique among nodes that share an explicit name.
    """
    if isinstance(graph, onnx.ModelProto):
        graph = graph.graph
    nodes = graph.node if hasattr(graph, "node") else graph
    taken = {n.name for n in nodes if n.name}
    names = []
    for idx, node in enumerate(nodes):
        name = node.name
        if not name:
            name = f"{node.op_type}_{idx}"
            while name in taken:
                name += "_"
            taken.add(name)
        names.append(name)
    return names


def ensure_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Write :func:`node_names` into the unnamed nodes of the main graph (in place); returns ``model``."""
    for node, name in zip(model.graph.node, node_names(model), strict=True):
        node.name = name
    return model


def tensor_readers(graph: onnx.ModelProto | onnx.GraphProto) -> dict[str, list[int]]:
    """Tensor name -> the positions in ``graph.node`` of the nodes that read it, in node order.

    One entry per input slot: a node reading a tensor twice (``Mul(x, x)``) is listed twice, so
    ``len`` is the number of reads. Omitted optional inputs (``""``) are no tensor and are not
    listed; tensors read by nothing (graph outputs included) are absent. Reads inside subgraphs
    (If/Loop bodies) are not seen. The node list is the caller's: a rewrite that inserts or
    removes nodes makes the map stale.
    """
    if isinstance(graph, onnx.ModelProto):
        graph = graph.graph
    readers: dict[str, list[int]] = {}
    for k, node in enumerate(graph.node):
        for t in node.input:
            if t:
                readers.setdefault(t, []).append(k)
    return readers


def tensor_names(model: onnx.ModelProto) -> set[str]:
    """Every tensor name of the main graph: graph inputs and the nodes' inputs and outputs."""
    names = {i.name for i in model.graph.input}
    for node in model.graph.node:
        names.update(t for t in (*node.input, *node.output) if t)
    return names


def checker_error(model: onnx.ModelProto, path: str | os.PathLike | None = None) -> str | None:
    """The first line of what ``onnx.checker`` finds wrong with ``model``, or None when it passes.
    A model over protobuf's 2 GB limit is checked from ``path`` (its external data beside it)."""
    from trtq._core.errors import first_line

    try:
        if path is not None and model.ByteSize() >= 2**31:
            onnx.checker.check_model(os.fspath(path))
        else:
            onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises ValidationError, and ValueError for size
        return first_line(exc)
    return None


def has_qdq_nodes(model: onnx.ModelProto) -> bool:
    """True when the main graph holds a QuantizeLinear or DequantizeLinear: an already quantized
    model, which calibration and equalisation refuse and a float reference must not be."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _dim(d: onnx.TensorShapeProto.Dimension) -> int | str | None:
    if d.HasField("dim_value") and d.dim_value > 0:
        return int(d.dim_value)
    return d.dim_param or None


def value_info(vi: onnx.ValueInfoProto) -> TensorInfo:
    """A declared tensor as :class:`TensorInfo`: dims > 0 as ints, others as their ``dim_param``
    name or ``None``; a tensor without a declared shape gets ``()``."""
    tt = vi.type.tensor_type
    return TensorInfo(vi.name, tuple(_dim(d) for d in tt.shape.dim), np_dtype(tt.elem_type))


def _real_input_protos(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def real_inputs(model: onnx.ModelProto) -> list[TensorInfo]:
    """The inputs a caller must feed, as declared: graph inputs that are not initializers.

    Exporters before IR version 4 (and some later ones) list every initializer as a graph input
    too; those have a value already and are not fed.
    """
    return [value_info(i) for i in _real_input_protos(model.graph)]


def load_onnx(path: str | os.PathLike, *, load_external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX model or raise :class:`InputError` with one line naming the file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected an .onnx file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not a valid ONNX model ({type(exc).__name__})") from exc
    except Exception as exc:  # protobuf raises assorted internal errors on garbage input
        raise InputError(f"{p}: not a valid ONNX model ({exc})") from exc
    if not model.graph.node and not model.graph.input:
        raise InputError(f"{p}: not a valid ONNX model (empty graph)")
    if load_external_data:
        try:
            onnx.load_external_data_for_model(model, str(p.parent))
        except (FileNotFoundError, OSError) as exc:
            raise InputError(f"{p}: external data missing: {exc}") from exc
        except Exception as exc:
            raise InputError(f"{p}: cannot load external data: {exc}") from exc
    return model


#: Models larger than this (bytes of the serialized proto) are saved with their tensors in an
#: external data file ``NAME.data`` beside ``NAME``: protobuf cannot serialize 2 GiB.
EXTERNAL_DATA_BYTES = 2_000_000_000


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Save ``model`` atomically (temporary file + rename). Models over
    :data:`EXTERNAL_DATA_BYTES` put their tensors in ``PATH.data``; the two files land together
    (:func:`~trtq._core.atomic.atomic_folder`), and ``model`` keeps its tensors in memory."""
    target = Path(path)
    if model.ByteSize() <= EXTERNAL_DATA_BYTES:
        with atomic_path(target, suffix=".onnx") as tmp:
            onnx.save_model(model, str(tmp))
        return
    with atomic_folder(target) as folder:
        onnx.save_model(
            model, str(folder / target.name), save_as_external_data=True, location=target.name + ".data"
        )
        # onnx's writer moved the tensors out of the proto; read them back from the files just written
        onnx.load_external_data_for_model(model, str(folder))


def keep_metadata(model: onnx.ModelProto, like: onnx.ModelProto) -> onnx.ModelProto:
    """Give ``model`` (a rewrite of ``like``) ``like``'s metadata, in place; returns ``model``.

    Kept: IR version (the writer's newer default could be one ONNX Runtime does not read yet),
    producer name (unless ``like`` has none) and version, model version, doc string and
    ``metadata_props``. Opset imports: ``model``'s own are kept (a rewrite may raise the default
    domain's, e.g. for Q/DQ), ``like``'s other domains are added, and a domain used by a node or
    function but imported nowhere is added at version 1. Every rewrite that writes a model uses
    this (folding, ``surgery fix``, the Q/DQ export).
    """
    model.ir_version = like.ir_version
    model.producer_name = like.producer_name or model.producer_name
    model.producer_version = like.producer_version
    model.model_version = like.model_version
    model.doc_string = like.doc_string
    del model.metadata_props[:]
    model.metadata_props.extend(like.metadata_props)
    domains = {o.domain or "" for o in model.opset_import}
    if "ai.onnx" in domains:
        domains.add("")
    for op in like.opset_import:
        domain = "" if op.domain in ("", "ai.onnx") else op.domain
        if domain not in domains:
            model.opset_import.append(op)
            domains.add(domain)
    used = {n.domain for n in model.graph.node} | {f.domain for f in model.functions}
    for domain in sorted(used - domains - {"", "ai.onnx"}):
        model.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    return model


def export_graph(graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export an onnx-graphsurgeon ``graph`` (as is: no cleanup) with ``like``'s metadata
    (:func:`keep_metadata`)."""
    import onnx_graphsurgeon as gs

    return keep_metadata(gs.export_onnx(graph, do_type_check=False), like)


def constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Names of tensors computable from initializers and Constant nodes alone (foldable).

    Outputs of Shape/Size are also treated as constant: with static shapes TensorRT folds them,
    and they are never activations that need an INT8 scale.
    """
    const = {i.name for i in graph.initializer}
    const.add("")  # an omitted optional input
    for node in graph.node:
        if node.op_type in RANDOM_OPS:
            continue
        if node.op_type in ("Constant", *_SHAPE_OPS) or all(i in const for i in node.input):
            const.update(o for o in node.output if o)
    return const


def float_tensors(model: onnx.ModelProto, types: dict[str, int] | None = None) -> list[TensorInfo]:
    """Every float tensor TensorRT would see as an activation, in topological order.

    Graph inputs come first (their declared shape, no producer), then node outputs (shape
    ``None``: only element types are inferred here; ``producer`` names the node as
    :func:`node_names` does). Element types come from ``types`` (default: :func:`tensor_types`,
    i.e. declared types and ONNX shape inference); a tensor whose type cannot be inferred is
    skipped.
    """
    graph = model.graph
    if types is None:
        types = tensor_types(model)
    const = constant_tensors(graph)
    sites = [value_info(i) for i in _real_input_protos(graph) if i.type.tensor_type.elem_type in FLOAT_TYPES]
    names = node_names(graph)
    for idx, node in enumerate(graph.node):
        for out in node.output:
            if out and out not in const and types.get(out) in FLOAT_TYPES:
                where = Producer(names[idx], node.op_type, idx)
                sites.append(TensorInfo(out, None, np_dtype(types[out]), where))
    return sites


def model_summary(
    model: onnx.ModelProto,
    path: str | os.PathLike | None = None,
    *,
    shapes: dict[str, tuple[int, ...]] | None = None,
    tensors: int | None = None,
) -> dict:
    """The ``model`` block of docs/SCHEMA.md: path, inputs (name, shape, dtype), nodes, tensors.

    ``shapes`` are the static input shapes actually run (from ``--shape`` or the data); without
    them a dynamic dimension is reported as -1. ``tensors`` defaults to the number of float
    activations (:func:`float_tensors`).
    """
    inputs = []
    for info in real_inputs(model):
        if shapes and info.name in shapes:
            dims = [int(d) for d in shapes[info.name]]
        else:
            dims = [d if is_static_dim(d) else -1 for d in info.shape or ()]
        inputs.append({"name": info.name, "shape": dims, "dtype": str(info.dtype)})
    return {
        "path": str(path) if path is not None else "",
        "inputs": inputs,
        "nodes": len(model.graph.node),
        "tensors": len(float_tensors(model)) if tensors is None else tensors,
    }
