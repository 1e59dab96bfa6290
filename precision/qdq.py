"""Numeric building blocks of INT8/FP16 emulation and Q/DQ export.

Conventions (TensorRT's, and ONNX QuantizeLinear/DequantizeLinear's):
- symmetric quantization, zero-point 0, ``scale = amax / 127``;
- activations: one scale per tensor; ``q = saturate(round_half_even(x / scale))`` to [-128, 127];
- weights: one scale per output channel, ``amax_c = max |W_c|``, values in [-127, 127];
- FP16: IEEE round-to-nearest-even; magnitudes that round beyond 65504 become ``inf``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP16_MAX = 65504.0


def round_fp16(x: np.ndarray) -> np.ndarray:
    """``x`` rounded through IEEE half precision, returned as float32 (overflow -> inf)."""
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def weight_axis(op_type: str, input_index: int, weight_shape: tuple[int, ...], attrs: dict) -> int | None:
    """Axis of the output channels of a weight, or ``None`` for per-tensor quantization.

    Conv ``[Cout, Cin/g, k...]`` -> 0; ConvTranspose ``[Cin, Cout/g, k...]`` -> 1 when group == 1
    (grouped deconvolution weights are quantized per tensor); MatMul ``B [.., K, N]`` -> last axis;
    Gemm ``B`` -> 0 with ``transB`` else 1. A constant first MatMul/Gemm input is per tensor.
    """
    if op_type == "Conv" and input_index == 1:
        return 0
    if op_type == "ConvTranspose" and input_index == 1:
        return 1 if attrs.get("group", 1) == 1 else None
    if op_type == "MatMul" and input_index == 1 and len(weight_shape) >= 2:
        return len(weight_shape) - 1
    if op_type == "Gemm" and input_index == 1 and len(weight_shape) == 2:
        return 0 if attrs.get("transB", 0) else 1
    return None


def quantize_weight(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric INT8 weights: ``(q int8, scale float32)``; ``scale`` has one entry per channel
    along ``axis`` (a 0-d array when ``axis`` is None). Channels that are all zero get scale 1."""
    w = np.asarray(w, dtype=np.float32)
    if axis is None:
        amax = np.array(np.abs(w).max() if w.size else 0.0, dtype=np.float32)
    else:
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w).max(axis=reduce).astype(np.float32)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def fake_quantize_weight(w: np.ndarray, axis: int | None) -> np.ndarray:
    """``dequantize(quantize(w))`` in float32: what an INT8 kernel multiplies by, in float."""
    q, scale = quantize_weight(w, axis)
    shape = [1] * q.ndim
    if axis is not None:
        shape[axis] = -1
    return (q.astype(np.float32) * scale.reshape(shape)).astype(np.float32)


def activation_scale(amax: float) -> float:
    """Per-tensor scale ``amax / 127`` as float32 (the value a TensorRT cache stores)."""
    return float(np.float32(np.float32(amax) / np.float32(127.0)))


def cast_pair(src: str, dst: str, name: str) -> list[onnx.NodeProto]:
    """Nodes rounding ``src`` through FP16 into ``dst`` (FP32 -> FP16 -> FP32)."""
    mid = f"{dst}__half"
    return [
        helper.make_node("Cast", [src], [mid], name=f"{name}_to_fp16", to=TensorProto.FLOAT16),
        helper.make_node("Cast", [mid], [dst], name=f"{name}_to_fp32", to=TensorProto.FLOAT),
    ]


def qdq_pair(src: str, dst: str, scale_name: str, zp_name: str, name: str) -> list[onnx.NodeProto]:
    """QuantizeLinear -> DequantizeLinear of ``src`` into ``dst`` with the given initializers."""
    mid = f"{dst}__int8"
    return [
        helper.make_node("QuantizeLinear", [src, scale_name, zp_name], [mid], name=f"{name}_q"),
        helper.make_node("DequantizeLinear", [mid, scale_name, zp_name], [dst], name=f"{name}_dq"),
    ]


def scalar_scale(name: str, amax: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(activation_scale(amax), dtype=np.float32), name)


def zero_point(name: str, shape: tuple[int, ...] = ()) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, dtype=np.int8), name)
