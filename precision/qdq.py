"""Numeric building blocks of INT8/FP16 emulation and Q/DQ export.

Conventions (TensorRT's, and ONNX QuantizeLinear/DequantizeLinear's):
- symmetric quantization, zero-point 0, ``scale = amax / 127``;
- activations: one scale per tensor; ``q = saturate(round_half_even(x / scale))`` to [-128, 127];
- weights: one scale per output channel, ``amax_c = max |W_c|``, values in [-127, 127];
- FP16: IEEE round-to-nearest-even; magnitudes that round beyond 65504 become ``inf``.

FP8 (E4M3, ONNX ``FLOAT8E4M3FN``: 1 sign, 4 exponent bits with bias 7, 3 mantissa bits,
subnormals at exponent 0, largest finite 448, no infinity, ``S.1111.111`` is NaN), symmetric,
zero-point 0 (a FLOAT8E4M3FN zero); QuantizeLinear-19 rounds ``x / scale`` to nearest even and
saturates to +-448 (``saturate=1``, its default):
- activations: one scale per tensor, ``scale = amax / 112`` (:data:`FP8_HEADROOM`: the
  calibrated amax sits two binades below saturation);
- weights: one scale per output channel on the INT8 weight axis, ``max |W_c| / d_c`` on the best of
  :data:`FP8_WEIGHT_GRIDS` grids (see
  :mod:`trtq.precision.emulate` for the sources and the caveat).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP16_MAX = 65504.0
FP8_MAX = 448.0
#: FP8 activations: ``amax`` maps to ``FP8_MAX / FP8_HEADROOM`` (112), not to 448, so that a
#: held-out value up to 4x the calibration's largest is still represented. A power of two changes
#: no rounding of E4M3's normal values (the same mantissa, two binades up); it only moves the
#: subnormals' edge, ``2**-6 * amax / 112`` (about amax / 7000), 4x higher than with 448.
#: Measured over 6 calibration / held-out splits (BENCHMARKS.md, "FP8 against ModelOpt's FP8"):
#: PP-OCR cls cosine better on 6 of 6 splits, its text lines on 5 of 5, rec's exact lines 0.17 ->
#: 0.34; PP-LCNet, ViT-S, BERT and det level; 12.4 (ModelOpt 0.47's effective factor) cost det 0.06
#: on 2 of 4 splits.
FP8_HEADROOM = 4.0
#: FP8's default ranges: each tensor's largest |x| (the ``minmax`` method). E4M3 is a float
#: format: values far below amax keep their relative precision, so the clipping that helps INT8's
#: uniform grid (entropy2) costs FP8 more than it saves. Measured (BENCHMARKS.md, "FP8 ranges"):
#: minmax >= entropy2 for FP8 on PP-OCRv4 det, PP-OCR cls, PP-LCNet and ViT-S.
FP8_RANGES = "minmax"
#: Quantized types: name -> the magnitude an activation ``scale`` maps ``amax`` to.
QMAX = {"int8": 127.0, "fp8": FP8_MAX / FP8_HEADROOM}


def round_fp8(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to the nearest E4M3 value (ties to even), saturated to +-448, as float32;
    NaN stays NaN (:func:`trtq.precision._fp8_kernels.e4m3` says how)."""
    from trtq.precision._fp8_kernels import round_array

    x = np.asarray(x, dtype=np.float32)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    round_array(flat, out)
    return out.reshape(x.shape)


def fp8_values() -> np.ndarray:
    """The 127 non-negative finite E4M3 values in code order (codes 0x00..0x7E), increasing."""
    codes = np.arange(0x7F)
    exp, man = codes >> 3, codes & 7
    sub = man.astype(np.float64) * 2.0**-9
    normal = (1.0 + man / 8.0) * np.exp2(exp - 7.0)
    return np.where(exp == 0, sub, normal).astype(np.float32)


def fp8_bits(x: np.ndarray) -> np.ndarray:
    """The E4M3 bit patterns (uint8) of values already representable (``round_fp8``'s output)."""
    x = np.asarray(x, dtype=np.float32)
    mag = np.searchsorted(fp8_values(), np.abs(x)).astype(np.uint8)
    return np.where(np.signbit(x) & (x != 0), mag | np.uint8(0x80), mag).astype(np.uint8)


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


def quantize_weight(
    w: np.ndarray, axis: int | None, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric INT8 weights: ``(q int8, scale float32)``; ``scale`` has one entry per channel
    along ``axis`` (a 0-d array when ``axis`` is None). By default ``scale = max|w_c| / 127``
    (channels that are all zero get scale 1); a given ``scale`` (the same shape, e.g. from
    :mod:`trtq.precision.weight_scales`) is used as is, weights beyond ``127 * scale`` saturate."""
    w = np.asarray(w, dtype=np.float32)
    if scale is None:
        amax = _channel_amax(w, axis)
        scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    q = np.clip(np.rint(w / scale.reshape(_channel_shape(w, axis))), -127, 127).astype(np.int8)
    return q, scale


def _channel_amax(w: np.ndarray, axis: int | None) -> np.ndarray:
    """``max |w|`` per channel along ``axis`` (float32; a 0-d array when ``axis`` is None)."""
    if axis is None:
        return np.array(np.abs(w).max() if w.size else 0.0, dtype=np.float32)
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    return np.abs(w).max(axis=reduce).astype(np.float32)


def channel_rows(w: np.ndarray, axis: int | None) -> np.ndarray:
    """``w`` as ``[channels, values]``, one row per channel along ``axis`` (one row when ``axis`` is
    None)."""
    w = np.asarray(w)
    return w.reshape(1, -1) if axis is None else np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)


def _channel_shape(w: np.ndarray, axis: int | None) -> list[int]:
    """The shape a per-channel vector broadcasts to against ``w``."""
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    return shape


#: FP8 weight scales: each channel's largest |w| maps to one of this many points spread
#: geometrically over E4M3's top binade, ``448 * 2**(-j / 8)``, j = 0..7: the one whose rounding
#: error (sum of squares over the channel) is smallest. A power of two changes no E4M3 rounding,
#: so these eight offsets are every distinct grid up to 1/8 binade. Why: which grid a channel
#: lands on moves held-out accuracy as much as anything else in FP8 (BENCHMARKS.md, "FP8 against
#: ModelOpt's FP8", point 5); data-free, deterministic.
FP8_WEIGHT_GRIDS = 8


def fp8_weight_divisors() -> np.ndarray:
    """The candidate ``max|w_c| / scale_c`` of :data:`FP8_WEIGHT_GRIDS`, largest (448) first."""
    return (FP8_MAX * 2.0 ** (-np.arange(FP8_WEIGHT_GRIDS) / FP8_WEIGHT_GRIDS)).astype(np.float64)


def quantize_weight_fp8(
    w: np.ndarray, axis: int | None = None, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """FP8 E4M3 weights: ``(values rounded to E4M3 as float32, scale float32)``, one scale per
    channel along ``axis`` (a 0-d array when ``axis`` is None: the tensor is one channel).
    By default ``scale_c = max|w_c| / d_c``, ``d_c`` the divisor of :func:`fp8_weight_divisors`
    with the smallest rounding error of that channel (448 on a tie); an all-zero channel gets
    scale 1. Per channel, a channel far smaller than the tensor's largest keeps E4M3's 3-bit
    mantissa instead of falling into its subnormals. A given ``scale`` (the same shape, e.g.
    from :mod:`trtq.precision.weight_scales`) is used as is."""
    w = np.asarray(w, dtype=np.float32)
    if scale is None:
        scale = fp8_weight_scale(w, axis)
    scale = np.asarray(scale, dtype=np.float32)
    return round_fp8(w / scale.reshape(_channel_shape(w, axis))), scale


def fp8_weight_scale(w: np.ndarray, axis: int | None) -> np.ndarray:
    """:func:`quantize_weight_fp8`'s data-free scales: per channel the grid of the eight with the
    smallest rounding error (float32, a 0-d array when ``axis`` is None)."""
    from trtq.precision._fp8_kernels import channel_errors

    rows = channel_rows(np.asarray(w, dtype=np.float32), axis)
    amax = np.abs(rows).max(axis=1).astype(np.float32) if rows.size else np.zeros(len(rows), np.float32)
    divisors = fp8_weight_divisors()
    errors = channel_errors(np.ascontiguousarray(rows), amax.astype(np.float64), divisors)
    best = divisors[np.argmin(errors, axis=1)].astype(np.float32)
    scale = np.where(amax > 0, amax / best, np.float32(1.0)).astype(np.float32)
    return scale.reshape(()) if axis is None else scale


def fake_quantize_weight(
    w: np.ndarray, axis: int | None, qtype: str = "int8", scale: np.ndarray | None = None
) -> np.ndarray:
    """``dequantize(quantize(w))`` in float32: what an INT8 or FP8 kernel multiplies by, in float
    (scales per channel along ``axis``, per tensor when it is None; ``scale`` as in
    :func:`quantize_weight`)."""
    quantize = quantize_weight_fp8 if qtype == "fp8" else quantize_weight
    q, scale = quantize(w, axis, scale)
    return (q.astype(np.float32) * scale.reshape(_channel_shape(q, axis))).astype(np.float32)


def activation_codes(x: np.ndarray, amax: float, qtype: str = "int8") -> np.ndarray:
    """The codes of ``x`` through a per-tensor Q/DQ with ``amax``, as float32: INT8, integers in
    ``[-128, 127]`` (scale :func:`activation_scale`, round half to even, saturate; zero point 0, as
    TensorRT's and ONNX Runtime's QuantizeLinear compute them); FP8, E4M3 values (saturated to
    +-448). The dequantized value is ``activation_codes(x, amax, q) * activation_scale(amax, q)``."""
    scale = np.float32(activation_scale(amax, qtype))
    if qtype == "fp8":
        return round_fp8(np.asarray(x, np.float32) / scale)
    return np.clip(np.rint(np.asarray(x, np.float32) / scale), -128, 127).astype(np.float32)


def activation_scale(amax: float, qtype: str = "int8") -> float:
    """Per-tensor scale as float32: ``amax / 127`` (the value a TensorRT cache stores) for INT8,
    ``amax / 112`` for FP8 (``448 / FP8_HEADROOM``)."""
    return float(np.float32(np.float32(amax) / np.float32(QMAX[qtype])))


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


def scalar_scale(name: str, amax: float, qtype: str = "int8") -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(activation_scale(amax, qtype), dtype=np.float32), name)


def zero_point(name: str, shape: tuple[int, ...] = (), qtype: str = "int8") -> onnx.TensorProto:
    """Zero-point 0: INT8, or FLOAT8E4M3FN for ``qtype="fp8"`` (which makes QuantizeLinear-19
    produce E4M3, saturating)."""
    if qtype == "fp8":
        return fp8_tensor(name, np.zeros(shape, dtype=np.float32))
    return numpy_helper.from_array(np.zeros(shape, dtype=np.int8), name)


def fp8_tensor(name: str, values: np.ndarray) -> onnx.TensorProto:
    """A FLOAT8E4M3FN initializer holding ``values`` (already representable in E4M3)."""
    values = np.asarray(values, dtype=np.float32)
    t = onnx.TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT8E4M3FN
    t.dims.extend(values.shape)
    t.raw_data = fp8_bits(values).tobytes()
    return t
