"""Loading, saving and inspecting ONNX models, with one-line errors for bad files.

Tensor conventions used across trtq:
- a *float tensor* is a graph input or node output of type FLOAT, FLOAT16 or BFLOAT16 that is
  computed from the data (not only from initializers/Constant nodes: TensorRT folds those away,
  so they never become network tensors with activations);
- tensors are listed in topological order, keyed by their ONNX names, which are also the
  TensorRT network tensor names produced by its ONNX parser.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from trtq._core.atomic import atomic_path
from trtq._core.errors import InputError

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


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """ONNX element type of every tensor whose type is declared or found by shape inference."""
    graph = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    except Exception:  # a model shape inference cannot handle keeps its declared types
        inferred = graph
    vis = list(inferred.value_info) + list(inferred.input) + list(inferred.output)
    return {vi.name: vi.type.tensor_type.elem_type for vi in vis if vi.type.HasField("tensor_type")}


def np_dtype(elem_type: int) -> np.dtype:
    """numpy dtype of an ONNX element type (float32 for types numpy has no match for)."""
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        return np.dtype(np.float32)


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


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Save ``model`` atomically (temporary file + rename). Models over 2 GB use external data."""
    target = Path(path)
    large = model.ByteSize() > 2_000_000_000 if hasattr(model, "ByteSize") else False
    with atomic_path(target, suffix=".onnx") as tmp:
        if large:
            onnx.save_model(model, str(tmp), save_as_external_data=True, location=target.name + ".data")
        else:
            onnx.save_model(model, str(tmp))


@dataclass(frozen=True)
class TensorSite:
    """A float activation tensor and the node that produces it (``None`` for graph inputs)."""

    name: str
    node: str | None
    op_type: str | None
    index: int  # topological position of the producing node; -1 for graph inputs


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


def float_tensors(model: onnx.ModelProto, types: dict[str, int] | None = None) -> list[TensorSite]:
    """Every float tensor TensorRT would see as an activation, in topological order.

    Graph inputs come first, then node outputs. Element types come from ``types`` (default:
    :func:`tensor_types`, i.e. declared types and ONNX shape inference); a tensor whose type
    cannot be inferred is skipped.
    """
    graph = model.graph
    if types is None:
        types = tensor_types(model)
    const = constant_tensors(graph)
    inits = {i.name for i in graph.initializer}
    sites: list[TensorSite] = []
    for inp in graph.input:
        if inp.name not in inits and inp.type.tensor_type.elem_type in FLOAT_TYPES:
            sites.append(TensorSite(inp.name, None, None, -1))
    for idx, node in enumerate(graph.node):
        for out in node.output:
            if out and out not in const and types.get(out) in FLOAT_TYPES:
                sites.append(TensorSite(out, node.name or f"{node.op_type}_{idx}", node.op_type, idx))
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
    inits = {i.name for i in model.graph.initializer}
    inputs = []
    for i in model.graph.input:
        if i.name in inits:
            continue
        if shapes and i.name in shapes:
            dims = [int(d) for d in shapes[i.name]]
        else:
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim]
        dtype = str(onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
        inputs.append({"name": i.name, "shape": dims, "dtype": dtype})
    return {
        "path": str(path) if path is not None else "",
        "inputs": inputs,
        "nodes": len(model.graph.node),
        "tensors": len(float_tensors(model)) if tensors is None else tensors,
    }
