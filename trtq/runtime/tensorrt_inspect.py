"""Read TensorRT's engine-inspector JSON: which precision each (fused) layer actually ran in.

With ``config.profiling_verbosity = DETAILED``, ``engine.create_engine_inspector()
.get_engine_information(LayerInformationFormat.JSON)`` returns ``{"Layers": [...], "Bindings":
[...]}``; each layer has ``Name``, ``LayerType``, ``Inputs``/``Outputs`` (each with a
``Format/Datatype`` string such as ``"Row major linear FP32"`` or ``"Thirty-two wide channel
vectorized row major Int8 format"``) and, in TensorRT >= 10, ``Metadata`` holding the ONNX node
names it came from (``"[ONNX Layer: conv1]"``, several joined by the ASCII record separator).

Convention: a layer's precision is the datatype of its first input's format string (the data it
reads is the data it computes on); the outputs' datatypes are reported too. With a lower
verbosity the layers are bare names and the precision is ``None``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from trtq._core.errors import TrtqError

# Order matters: "BF16" before "FP16"; "Int8" is matched as a word ("Int8 format", "Int8").
_DATATYPES = (
    ("bf16", re.compile(r"\bBF16\b", re.I)),
    ("fp16", re.compile(r"\b(FP16|Half)\b", re.I)),
    ("fp32", re.compile(r"\b(FP32|Float)\b", re.I)),
    ("fp8", re.compile(r"\bFP8\b", re.I)),
    ("fp4", re.compile(r"\bFP4\b", re.I)),
    ("int8", re.compile(r"\bInt8\b", re.I)),
    ("int4", re.compile(r"\bInt4\b", re.I)),
    ("int32", re.compile(r"\bInt32\b", re.I)),
    ("int64", re.compile(r"\bInt64\b", re.I)),
    ("bool", re.compile(r"\bBool\b", re.I)),
    ("uint8", re.compile(r"\bUInt8\b", re.I)),
)
_ONNX_LAYER = re.compile(r"ONNX Layer:\s*([^\]\x1e]+)")


def datatype_of(format_string: str) -> str | None:
    """``"Row major linear FP16 format"`` -> ``"fp16"``; unknown strings give ``None``."""
    for name, pattern in _DATATYPES:
        if pattern.search(format_string or ""):
            return name
    return None


@dataclass(frozen=True)
class LayerPrecision:
    """One engine layer: ``precision`` is its first input's datatype (see the module docstring)."""

    name: str
    layer_type: str | None
    precision: str | None
    input_types: tuple[str | None, ...]
    output_types: tuple[str | None, ...]
    onnx_nodes: tuple[str, ...]

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "layer_type": self.layer_type,
            "precision": self.precision,
            "input_types": list(self.input_types),
            "output_types": list(self.output_types),
            "onnx_nodes": list(self.onnx_nodes),
        }


def parse_engine_information(text: str) -> list[LayerPrecision]:
    """Parse the inspector's JSON text into one :class:`LayerPrecision` per engine layer."""
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrtqError(f"TensorRT's engine inspector returned invalid JSON: {exc}") from exc
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    out = []
    for entry in layers:
        if isinstance(entry, str):  # LAYER_NAMES_ONLY verbosity
            out.append(LayerPrecision(entry, None, None, (), (), ()))
            continue
        ins = tuple(datatype_of(t.get("Format/Datatype", "")) for t in entry.get("Inputs", []))
        outs = tuple(datatype_of(t.get("Format/Datatype", "")) for t in entry.get("Outputs", []))
        nodes = tuple(n.strip() for n in _ONNX_LAYER.findall(str(entry.get("Metadata", ""))))
        out.append(
            LayerPrecision(
                name=str(entry.get("Name", "")),
                layer_type=entry.get("LayerType"),
                precision=ins[0] if ins else (outs[0] if outs else None),
                input_types=ins,
                output_types=outs,
                onnx_nodes=nodes,
            )
        )
    return out
