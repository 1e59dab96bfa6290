"""pins.json: the layers to keep in FP32, read and written atomically, and applied to a model.

The file is the ``kind = "bisect"`` document of docs/SCHEMA.md. Each entry of ``"pins"`` names
one TensorRT layer:

- ``node``: the layer's ONNX node name (its Conv/Gemm/MatMul, or its last node);
- ``members``: every ONNX node kept in FP32 with it (nodes TensorRT fuses into that layer);
- ``tensor`` / ``outputs``: its output tensor names (ONNX names = TensorRT tensor names);
- ``op_type``, ``layerwise_error``.

Applying the pins:

- ONNX Runtime and TensorRT 11 (strongly typed): :func:`apply_pins` writes a Q/DQ (INT8) and/or
  Cast (FP16) ONNX in which the member nodes are left unquantized in FP32
  (:func:`trtq.precision.export.export_qdq`);
- TensorRT 10 (weakly typed): the pins are precision constraints set at build time;
  :func:`tensorrt_constraints` gives them as ``[{"layer": node, "nodes": members, "outputs":
  tensors}]`` for the TensorRT backend, which sets ``layer.precision = trt.float32`` and
  ``layer.set_output_type(i, trt.float32)`` on every network layer named after a member node
  or producing one of the tensors, with ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from trtq._core.errors import InputError
from trtq._core.jsonio import write_json
from trtq._core.onnx_model import node_names
from trtq.precision.emulate import DEFAULT_MHA, PRECISIONS


def write_pins(path: str | os.PathLike, doc: Mapping[str, Any]) -> None:
    """Write a bisect document atomically as indented JSON (NaN/Inf as null)."""
    write_json(path, doc)


def _read_json(p: Path) -> Any:
    if not p.is_file():
        raise InputError(f"{p}: no such pins file")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid JSON ({exc})") from exc


def read_pin_nodes(path: str | os.PathLike) -> list[str]:
    """Node names to keep in FP32 from a pins.json (a bisect document) or a plain JSON list."""
    p = Path(path)
    doc = _read_json(p)
    if isinstance(doc, list):
        if not all(isinstance(n, str) and n for n in doc):
            raise InputError(f"{p}: a plain pins list must hold node names (strings)")
        return list(dict.fromkeys(doc))
    return pinned_nodes(read_pins(p))


def read_pins(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a pins.json (a bisect document); errors name the file and the field."""
    p = Path(path)
    doc = _read_json(p)
    if not isinstance(doc, dict) or doc.get("kind") != "bisect":
        raise InputError(f'{p}: not a pins file (expected a JSON object with "kind": "bisect")')
    if doc.get("schema") != 1:
        raise InputError(f"{p}: unsupported schema {doc.get('schema')!r} (this trtq reads schema 1)")
    pins = doc.get("pins")
    if not isinstance(pins, list):
        raise InputError(f'{p}: "pins" must be a list')
    for i, entry in enumerate(pins):
        if not isinstance(entry, dict) or not isinstance(entry.get("node"), str) or not entry["node"]:
            raise InputError(f'{p}: pins[{i}] has no "node" name')
        members = entry.get("members", [entry["node"]])
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise InputError(f'{p}: pins[{i}] ("{entry["node"]}"): "members" must be a list of node names')
    precision = (doc.get("settings") or {}).get("precision")
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"{p}: settings.precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return doc


def pinned_nodes(doc: Mapping[str, Any]) -> list[str]:
    """Every ONNX node to keep in FP32, in file order, without repeats."""
    seen: dict[str, None] = {}
    for entry in doc.get("pins") or []:
        for name in entry.get("members") or [entry["node"]]:
            seen.setdefault(name, None)
    return list(seen)


def tensorrt_constraints(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The pins as TensorRT 10 build-time constraints (see the module docstring)."""
    return [
        {
            "layer": entry["node"],
            "nodes": list(entry.get("members") or [entry["node"]]),
            "outputs": list(entry.get("outputs") or ([entry["tensor"]] if entry.get("tensor") else [])),
        }
        for entry in doc.get("pins") or []
    ]


def check_nodes_exist(model: onnx.ModelProto, nodes: Iterable[str], source: str = "model") -> None:
    """Raise :class:`InputError` naming the first pinned node the model does not have.

    Unnamed ONNX nodes are known as ``<op_type>_<index>`` (:func:`~trtq._core.onnx_model.node_names`).
    """
    names = set(node_names(model))
    missing = [n for n in nodes if n not in names]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(
            f"{source}: pinned node '{missing[0]}'{more} is not in the model: were the pins made for another model?"
        )


def apply_pins(
    model: onnx.ModelProto,
    nodes: Sequence[str],
    *,
    precision: str,
    amax: Mapping[str, float] | None = None,
    mha: str = DEFAULT_MHA,
    weight_scales: Mapping[str, Any] | None = None,
) -> onnx.ModelProto:
    """A deployable ONNX with ``nodes`` in FP32 and the rest in ``precision``
    (``weight_scales``: per-channel weight scales by initializer name, as ``export_qdq`` takes them).

    ``int8`` / ``fp16+int8`` (``fp8`` / ``fp8+fp16``: FP8 E4M3, ``scale = amax / 112``): Q/DQ model (needs ``amax``, the calibrated ranges; ``scale =
    amax / 127``), FP16 islands as Casts for ``fp16+int8``; ``fp16``: Cast model with the
    rest in half. Produced by :func:`trtq.precision.export.export_qdq`; runs in ONNX Runtime and
    builds strongly typed in TensorRT 11.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    quantized = "int8" in precision or "fp8" in precision
    if quantized and not amax:
        raise InputError(
            "INT8/FP8 pins need calibrated ranges: give --cache calib.cache (or --data to calibrate)"
        )
    from trtq.precision.export import export_qdq

    return export_qdq(
        model,
        dict(amax or {}) if quantized else {},
        pins=tuple(nodes),
        fp16="fp16" in precision,
        fp8="fp8" in precision,
        mha=mha,
        weight_scales=weight_scales,
    )


def modelopt_args(doc: Mapping[str, Any]) -> dict[str, list[str]]:
    """The pins of a bisect document as NVIDIA ModelOpt arguments: ``ptq`` for
    ``python -m modelopt.onnx.quantization`` and ``autocast`` for ``python -m
    modelopt.onnx.autocast``, both ``["--nodes_to_exclude", REGEX, ...]``. Both tools match each
    regex with ``re.match`` against node names, so every pinned ONNX node (``members`` included)
    is one exact-match regex, ``^`` + ``re.escape(name)`` + ``$``."""
    import re

    regexes = [f"^{re.escape(name)}$" for name in pinned_nodes(doc)]
    if not regexes:
        return {"ptq": [], "autocast": []}
    return {"ptq": ["--nodes_to_exclude", *regexes], "autocast": ["--nodes_to_exclude", *regexes]}
