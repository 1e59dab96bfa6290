"""An ONNX graph run by PyTorch, node for node, so that a Q/DQ model's INT8 weights can be trained.

:class:`TorchGraph` interprets the graph with ONNX semantics (the operators of the models trtq is
tested on: CNNs, OCR, ViT and BERT-style encoders; anything else is one error naming the node).
Quantization is the model's own:

- an activation ``QuantizeLinear -> DequantizeLinear`` pair is fake quantization with the graph's
  scale and zero point (round half to even, saturate), its gradient passed straight through
  inside the range and zero outside it;
- a ``DequantizeLinear`` of an INT8 initializer (a weight) reads a trainable *latent* instead, in
  units of the weight's own scale (1.0 = one quantization step), rounded and clipped to
  ``[-127, 127]`` the same straight-through way; :meth:`TorchGraph.to_onnx` writes the rounded
  latents back as the INT8 initializers and changes nothing else: scales, zero points and every
  node stay as they were, so TensorRT builds the same engine with other weight values;
- ``Cast`` to float16 (an FP16 rest) rounds through float16 and computes on in float32.

Everything else runs in float32. PyTorch is imported by this module only (``pip install
"trtq[finetune]"``); nothing else in trtq needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from trtq._core.errors import InputError
from trtq._core.onnx_model import node_names

#: Where the INT8 weight latents are clipped: the symmetric range of trtq's (and TensorRT's)
#: weight quantization (to -128 for a weight that holds -128, as other tools' may).
WEIGHT_QMIN, WEIGHT_QMAX = -127.0, 127.0

_INT_RANGES = {torch.int8: (-128.0, 127.0), torch.uint8: (0.0, 255.0)}  # by the zero point's dtype


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


def _axis_shape(ndim: int, axis: int) -> list[int]:
    shape = [1] * ndim
    shape[axis] = -1
    return shape


class _Quantized:
    """A QuantizeLinear's output on its way to a DequantizeLinear: the integer-valued tensor (float
    dtype, straight-through gradient) and its zero point."""

    def __init__(self, q: torch.Tensor, zero_point: torch.Tensor) -> None:
        self.q, self.zero_point = q, zero_point


class TorchGraph(torch.nn.Module):
    """``model`` as a differentiable function of its inputs and of its INT8 weights' latents.

    ``forward(inputs)`` takes a mapping of input name to tensor and returns the graph outputs in
    order. ``latents``: a ``ParameterDict`` with one float32 tensor per INT8 weight initializer
    (key: position in :attr:`weight_names`), initialised to the stored integers.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        opset = check_graph(model)
        self.model = model
        graph = model.graph
        self._names = node_names(graph)
        self._initializers = {t.name: t for t in graph.initializer}
        self._weight_axis: dict[str, int | None] = {}
        self._weight_min: dict[str, float] = {}
        for i, node in enumerate(graph.node):
            source = self._initializers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
            if source is not None and source.data_type == onnx.TensorProto.INT8:
                zp = self._initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
                if zp is not None and np.any(numpy_helper.to_array(zp) != 0):
                    raise InputError(
                        f"node '{self._names[i]}': an INT8 weight with a non-zero zero point is not supported"
                    )
                axis = _attrs(node).get("axis", 1) if len(source.dims) > 0 else None
                self._weight_axis[node.input[0]] = axis
                low = float(numpy_helper.to_array(source).min(initial=0))
                self._weight_min[node.input[0]] = -128.0 if low < WEIGHT_QMIN else WEIGHT_QMIN
        #: the INT8 weight initializers, in graph order of their DequantizeLinear
        self.weight_names: list[str] = list(self._weight_axis)
        self.latents = torch.nn.ParameterDict(
            {
                str(i): torch.nn.Parameter(
                    torch.from_numpy(numpy_helper.to_array(self._initializers[n]).astype(np.float32))
                )
                for i, n in enumerate(self.weight_names)
            }
        )
        self._latent_key = {n: str(i) for i, n in enumerate(self.weight_names)}
        consts = {}
        for name, tensor in self._initializers.items():
            if name not in self._weight_axis:
                consts[name] = _to_torch(numpy_helper.to_array(tensor))
        for i, node in enumerate(graph.node):
            if node.op_type == "Constant":
                consts[node.output[0]] = _to_torch(_constant_value(node, self._names[i]))
        self._consts: dict[str, torch.Tensor] = consts
        # each node's attributes read once, not on every forward pass (the operators' extras:
        # Split's output count, Softmax's opset)
        self._nodes = [
            (self._names[i], node, {**_attrs(node), "__outputs": len(node.output), "__opset": opset})
            for i, node in enumerate(graph.node)
            if node.op_type != "Constant"
        ]

    def to(self, *args: Any, **kwargs: Any) -> TorchGraph:
        super().to(*args, **kwargs)  # moves the latents; the constants are plain tensors
        self._consts = {n: t.to(*args, **kwargs) for n, t in self._consts.items()}
        return self

    def forward(
        self, inputs: Mapping[str, torch.Tensor], outputs: Sequence[str] | None = None
    ) -> list[torch.Tensor]:
        """The values of ``outputs`` (default: the graph outputs), in order."""
        env: dict[str, Any] = dict(inputs)

        def get(name: str) -> Any:
            if name in env:
                return env[name]
            if name in self._consts:
                return self._consts[name]
            raise InputError(f"tensor '{name}' has no value (not an input, initializer or node output)")

        for name, node, attrs in self._nodes:
            op = node.op_type
            if op == "DequantizeLinear" and node.input[0] in self._weight_axis:
                env[node.output[0]] = self._weight(node)
                continue
            args = [get(i) if i else None for i in node.input]
            try:
                if op == "QuantizeLinear":
                    out = _quantize(args, attrs)
                elif op == "DequantizeLinear":
                    out = _dequantize(args, attrs, name)
                else:
                    out = _OPS[op](args, attrs)
            except InputError:
                raise
            except Exception as exc:  # a shape or type the operator cannot take: name the node
                raise InputError(f"node '{name}' ({op}): {str(exc).splitlines()[0]}") from exc
            outs = out if isinstance(out, tuple) else (out,)
            for tensor_name, value in zip(node.output, outs, strict=False):
                if tensor_name:
                    env[tensor_name] = value
        return [
            env[o] for o in (outputs if outputs is not None else [o.name for o in self.model.graph.output])
        ]

    def _weight(self, node: onnx.NodeProto) -> torch.Tensor:
        latent = self.latents[self._latent_key[node.input[0]]]
        scale = self._consts[node.input[1]].float()
        axis = self._weight_axis[node.input[0]]
        q = _round_ste(torch.clamp(latent, self._weight_min[node.input[0]], WEIGHT_QMAX))
        if scale.ndim == 1 and axis is not None:
            scale = scale.reshape(_axis_shape(latent.ndim, axis % latent.ndim))
        return q * scale

    def rounded_weights(self) -> dict[str, np.ndarray]:
        """Each INT8 weight initializer's values as the latents now round (int8)."""
        return {
            n: np.clip(
                np.rint(self.latents[k].detach().cpu().numpy()), self._weight_min[n], WEIGHT_QMAX
            ).astype(np.int8)
            for n, k in self._latent_key.items()
        }

    def to_onnx(self) -> onnx.ModelProto:
        """A copy of the model with the rounded latents as its INT8 weights; nothing else changed."""
        out = onnx.ModelProto()
        out.CopyFrom(self.model)
        new = self.rounded_weights()
        for tensor in out.graph.initializer:
            if tensor.name in new:
                tensor.CopyFrom(numpy_helper.from_array(new[tensor.name], tensor.name))
        return out


def check_graph(model: onnx.ModelProto) -> int:
    """The model's default-domain opset, when :class:`TorchGraph` can run every node of it;
    :class:`InputError` naming the first node it cannot (another domain, an unsupported operator)
    or an opset before 11. Reads the node list only: cheap enough to call before any other work."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:
        raise InputError(f"opset {opset}: trtq's PyTorch graph runs opset 11 and later")
    known = SUPPORTED_OPS | {"Constant", "QuantizeLinear", "DequantizeLinear"}
    for name, node in zip(node_names(model.graph), model.graph.node, strict=True):
        if node.domain not in ("", "ai.onnx"):
            raise InputError(f"node '{name}': custom domain '{node.domain}' is not supported")
        if node.op_type not in known:
            raise InputError(
                f"node '{name}': operator {node.op_type} is not supported by trtq's PyTorch graph"
            )
    return opset


# ------------------------------------------------------------------ quantization


def _quantize(args: list, attrs: dict) -> _Quantized:
    x, scale = args[0], args[1].float()
    # no zero point: ONNX's default is uint8 0
    zero_point = args[2] if len(args) > 2 and args[2] is not None else torch.zeros((), dtype=torch.uint8)
    lo, hi = _INT_RANGES.get(zero_point.dtype, (None, None))
    if lo is None:
        raise InputError(f"QuantizeLinear to {zero_point.dtype} is not supported (INT8 and UINT8 only)")
    zp = zero_point.float()
    if scale.ndim == 1 and x.ndim > 0:
        shape = _axis_shape(x.ndim, attrs.get("axis", 1) % x.ndim)
        scale, zp = scale.reshape(shape), zp.reshape(shape) if zp.ndim == 1 else zp
    # straight-through round; the clamp passes no gradient outside the range (the saturated values)
    q = torch.clamp(_round_ste(x / scale) + zp, lo, hi)
    return _Quantized(q, zp)


def _dequantize(args: list, attrs: dict, name: str) -> torch.Tensor:
    value, scale = args[0], args[1].float()
    if not isinstance(value, _Quantized):
        raise InputError(f"node '{name}': DequantizeLinear of a tensor that is not a QuantizeLinear output")
    q, zp = value.q, value.zero_point
    if scale.ndim == 1 and q.ndim > 0:
        shape = _axis_shape(q.ndim, attrs.get("axis", 1) % q.ndim)
        scale = scale.reshape(shape)
    return (q - zp) * scale


def _to_torch(array: np.ndarray) -> torch.Tensor:
    array = np.asarray(array)
    if array.dtype == np.float16 or array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype == np.uint64 or array.dtype == np.uint32:
        array = array.astype(np.int64)
    return torch.from_numpy(np.array(array, copy=True, order="C"))


def _constant_value(node: onnx.NodeProto, name: str) -> np.ndarray:
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_int"):
            return np.array(
                onnx.helper.get_attribute_value(a), np.float32 if a.name == "value_float" else np.int64
            )
        if a.name in ("value_floats", "value_ints"):
            return np.array(
                onnx.helper.get_attribute_value(a), np.float32 if a.name == "value_floats" else np.int64
            )
    raise InputError(f"node '{name}': Constant without a supported value attribute")


# ------------------------------------------------------------------ operators
#
# Each takes the node's inputs (tensors, None for an omitted optional input) and its attributes.


def _ints(t: Any) -> list[int]:
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else t)]


def _conv(args: list, a: dict) -> torch.Tensor:
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    dims = x.ndim - 2
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise InputError("Conv auto_pad SAME_* is not supported")
    pads = a.get("pads", [0] * 2 * dims)
    if pads[:dims] != pads[dims:]:
        x = F.pad(x, [p for i in reversed(range(dims)) for p in (pads[i], pads[i + dims])])
        pads = [0] * 2 * dims
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    return fn(
        x, w, b, a.get("strides", [1] * dims), pads[:dims], a.get("dilations", [1] * dims), a.get("group", 1)
    )


def _conv_transpose(args: list, a: dict) -> torch.Tensor:
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise InputError("ConvTranspose auto_pad SAME_* is not supported")
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    dims = x.ndim - 2
    pads = a.get("pads", [0] * 2 * dims)
    if pads[:dims] != pads[dims:] or "output_shape" in a:
        raise InputError("ConvTranspose with asymmetric pads or output_shape is not supported")
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[dims]
    return fn(
        x,
        w,
        b,
        a.get("strides", [1] * dims),
        pads[:dims],
        a.get("output_padding", [0] * dims),
        a.get("group", 1),
        a.get("dilations", [1] * dims),
    )


def _pool(kind: str) -> Callable[[list, dict], torch.Tensor]:
    def run(args: list, a: dict) -> torch.Tensor:
        x = args[0]
        dims = x.ndim - 2
        kernel = a["kernel_shape"]
        pads = a.get("pads", [0] * 2 * dims)
        strides = a.get("strides", [1] * dims)
        if pads[:dims] != pads[dims:]:
            raise InputError(f"{kind} with asymmetric pads is not supported")
        ceil = bool(a.get("ceil_mode", 0))
        if kind == "max":
            fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]
            return fn(x, kernel, strides, pads[:dims], a.get("dilations", [1] * dims), ceil_mode=ceil)
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
        include = bool(a.get("count_include_pad", 0))
        return fn(x, kernel, strides, pads[:dims], ceil_mode=ceil, count_include_pad=include)

    return run


def _resize(args: list, a: dict) -> torch.Tensor:
    x = args[0]
    scales = args[2] if len(args) > 2 else None
    sizes = args[3] if len(args) > 3 else None
    mode = a.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    ctm = a.get("coordinate_transformation_mode", b"half_pixel")
    ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
    if sizes is not None and sizes.numel():
        out = _ints(sizes)[2:]
        kwargs: dict[str, Any] = {"size": out}
    else:
        s = [float(v) for v in scales.tolist()]
        if s[:2] != [1.0, 1.0]:
            raise InputError("Resize of the batch or channel axis is not supported")
        kwargs = {"scale_factor": s[2:]}
    if mode == "nearest":
        if ctm != "asymmetric" or a.get("nearest_mode", b"round_prefer_floor") not in (b"floor", "floor"):
            raise InputError(
                "Resize nearest is supported with asymmetric coordinates and floor rounding only"
            )
        return F.interpolate(x, mode="nearest", **kwargs)
    if mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        m = {1: "linear", 2: "bilinear", 3: "trilinear"}[x.ndim - 2]
        return F.interpolate(x, mode=m, align_corners=ctm == "align_corners", **kwargs)
    if (
        mode == "cubic"
        and ctm in ("half_pixel", "align_corners")
        and abs(a.get("cubic_coeff_a", -0.75) + 0.75) < 1e-6
    ):
        if a.get("exclude_outside", 0):
            raise InputError("Resize cubic with exclude_outside is not supported")
        return F.interpolate(x, mode="bicubic", align_corners=ctm == "align_corners", **kwargs)
    raise InputError(f"Resize mode {mode} with {ctm} coordinates is not supported")


def _reshape(args: list, a: dict) -> torch.Tensor:
    x, shape = args[0], _ints(args[1])
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _slice(args: list, a: dict) -> torch.Tensor:
    x = args[0]
    starts, ends = _ints(args[1]), _ints(args[2])
    axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else list(range(len(starts)))
    steps = _ints(args[4]) if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index: list[Any] = [slice(None)] * x.ndim
    flips = []
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis %= x.ndim
        n = x.shape[axis]
        if step > 0:
            start = max(0, min(n, start + n if start < 0 else start))
            end = max(0, min(n, end + n if end < 0 else end))
            index[axis] = slice(start, end, step)
        else:  # negative steps: torch has none; slice the flipped axis
            start = max(0, min(n - 1, start + n if start < 0 else start))
            end = max(-1, min(n - 1, end + n if end < 0 else end))
            index[axis] = slice(n - 1 - start, n - 1 - end, -step)
            flips.append(axis)
    if flips:
        x = torch.flip(x, flips)
    return x[tuple(index)]


def _axes(args: list, a: dict, position: int = 1) -> list[int] | None:
    if "axes" in a:
        return list(a["axes"])
    if len(args) > position and args[position] is not None:
        return _ints(args[position])
    return None


def _squeeze(args: list, a: dict) -> torch.Tensor:
    axes = _axes(args, a)
    x = args[0]
    if axes is None:
        return x.squeeze()
    for axis in sorted((ax % x.ndim for ax in axes), reverse=True):
        x = x.squeeze(axis)
    return x


def _unsqueeze(args: list, a: dict) -> torch.Tensor:
    x = args[0]
    axes = _axes(args, a)
    rank = x.ndim + len(axes)
    for axis in sorted(ax % rank for ax in axes):
        x = x.unsqueeze(axis)
    return x


def _reduce(fn: str) -> Callable[[list, dict], torch.Tensor]:
    def run(args: list, a: dict) -> torch.Tensor:
        x = args[0]
        axes = _axes(args, a)
        keep = bool(a.get("keepdims", 1))
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.ndim))
        dims = tuple(ax % x.ndim for ax in axes)
        if fn == "mean":
            return x.mean(dim=dims, keepdim=keep)
        if fn == "sum":
            return x.sum(dim=dims, keepdim=keep)
        return torch.amax(x, dim=dims, keepdim=keep) if fn == "max" else torch.amin(x, dim=dims, keepdim=keep)

    return run


def _gather(args: list, a: dict) -> torch.Tensor:
    x, idx = args[0], args[1].long()
    axis = a.get("axis", 0) % x.ndim
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = torch.index_select(x, axis, idx.reshape(-1))
    return out.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1 :]))


def _expand(args: list, a: dict) -> torch.Tensor:
    x, shape = args[0], _ints(args[1])
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(shape)))


def _constant_of_shape(args: list, a: dict) -> torch.Tensor:
    value = a.get("value")
    fill = _to_torch(numpy_helper.to_array(value)) if value is not None else torch.zeros(1)
    return fill.to(args[0].device).reshape(()).expand(_ints(args[0])).clone()


def _cast(args: list, a: dict) -> torch.Tensor:
    x, to = args[0], a["to"]
    if to == onnx.TensorProto.FLOAT16:
        return x.float().half().float()  # FP16 rounding; the arithmetic goes on in float32
    if to in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        return x.float()
    if to == onnx.TensorProto.BFLOAT16:
        return x.float().bfloat16().float()
    dtype = {
        onnx.TensorProto.INT64: torch.int64,
        onnx.TensorProto.INT32: torch.int32,
        onnx.TensorProto.BOOL: torch.bool,
        onnx.TensorProto.INT8: torch.int8,
        onnx.TensorProto.UINT8: torch.uint8,
    }.get(to)
    if dtype is None:
        raise InputError(f"Cast to {onnx.TensorProto.DataType.Name(to)} is not supported")
    return x.to(dtype)


def _layer_norm(args: list, a: dict) -> torch.Tensor:
    x, scale = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    axis = a.get("axis", -1) % x.ndim
    return F.layer_norm(x, tuple(x.shape[axis:]), scale, bias, a.get("epsilon", 1e-5))


def _batch_norm(args: list, a: dict) -> torch.Tensor:
    x, scale, bias, mean, var = args[:5]
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, a.get("epsilon", 1e-5))


def _gemm(args: list, a: dict) -> torch.Tensor:
    x, w = args[0], args[1]
    if a.get("transA", 0):
        x = x.t()
    if a.get("transB", 0):
        w = w.t()
    y = a.get("alpha", 1.0) * (x @ w)
    if len(args) > 2 and args[2] is not None:
        y = y + a.get("beta", 1.0) * args[2]
    return y


def _flatten(args: list, a: dict) -> torch.Tensor:
    x = args[0]
    axis = a.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis  # axis == rank is valid: (N, 1)
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def _shape(args: list, a: dict) -> torch.Tensor:
    dims = list(args[0].shape)
    start, end = a.get("start", 0), a.get("end", len(dims))
    return torch.tensor(dims[start:end], dtype=torch.int64, device=args[0].device)


def _softmax(args: list, a: dict) -> torch.Tensor:
    x = args[0]
    if a["__opset"] >= 13:
        return torch.softmax(x, dim=a.get("axis", -1))
    # before opset 13: the input as 2-D [prod(shape[:axis]), prod(shape[axis:])], softmax over rows
    axis = a.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return torch.softmax(x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1), dim=1).reshape(x.shape)


def _clip(args: list, a: dict) -> torch.Tensor:
    lo = args[1] if len(args) > 1 and args[1] is not None else a.get("min")
    hi = args[2] if len(args) > 2 and args[2] is not None else a.get("max")
    lo = float(lo) if lo is not None else None
    hi = float(hi) if hi is not None else None
    return torch.clamp(args[0], lo, hi)


def _binary(fn: Callable[[Any, Any], torch.Tensor]) -> Callable[[list, dict], torch.Tensor]:
    return lambda args, a: fn(args[0], args[1])


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[list, dict], torch.Tensor]:
    return lambda args, a: fn(args[0])


def _div(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if not x.is_floating_point() and not y.is_floating_point():
        return torch.div(x, y, rounding_mode="trunc")
    return x / y


def _hard_sigmoid(args: list, a: dict) -> torch.Tensor:
    return torch.clamp(a.get("alpha", 0.2) * args[0] + a.get("beta", 0.5), 0.0, 1.0)


def _concat(args: list, a: dict) -> torch.Tensor:
    parts = [t for t in args if t is not None and t.numel() > 0] or [args[0]]
    return torch.cat(parts, dim=a["axis"])


def _split(args: list, a: dict) -> tuple[torch.Tensor, ...]:
    x = args[0]
    axis = a.get("axis", 0)
    sizes = _ints(args[1]) if len(args) > 1 and args[1] is not None else a.get("split")
    if sizes is None:
        n = a.get("num_outputs", a["__outputs"])  # before opset 18: one equal part per output
        sizes = [-(-x.shape[axis] // n)] * n
        sizes[-1] = x.shape[axis] - sum(sizes[:-1])
    return tuple(torch.split(x, list(sizes), dim=axis))


_OPS: dict[str, Callable[[list, dict], Any]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MatMul": _binary(torch.matmul),
    "Gemm": _gemm,
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _binary(_div),
    "Pow": _binary(torch.pow),
    "Equal": _binary(torch.eq),
    "Greater": _binary(torch.gt),
    "Less": _binary(torch.lt),
    "Where": lambda args, a: torch.where(args[0].bool(), args[1], args[2]),
    "Max": lambda args, a: torch.stack(torch.broadcast_tensors(*args)).amax(0),
    "Min": lambda args, a: torch.stack(torch.broadcast_tensors(*args)).amin(0),
    "Sqrt": _unary(torch.sqrt),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Reciprocal": _unary(torch.reciprocal),
    "Erf": _unary(torch.erf),
    "Tanh": _unary(torch.tanh),
    "Sigmoid": _unary(torch.sigmoid),
    "Relu": _unary(F.relu),
    "LeakyRelu": lambda args, a: F.leaky_relu(args[0], a.get("alpha", 0.01)),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _unary(F.hardswish),
    "Gelu": lambda args, a: F.gelu(
        args[0], approximate="tanh" if a.get("approximate", b"none") in (b"tanh", "tanh") else "none"
    ),
    "Clip": _clip,
    "Softmax": _softmax,
    "Identity": _unary(lambda x: x),
    "Dropout": lambda args, a: args[0],
    "Cast": _cast,
    "GlobalAveragePool": _unary(lambda x: x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)),
    "GlobalMaxPool": _unary(lambda x: x.amax(dim=tuple(range(2, x.ndim)), keepdim=True)),
    "AveragePool": _pool("average"),
    "MaxPool": _pool("max"),
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "Resize": _resize,
    "Concat": _concat,
    "Split": _split,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": lambda args, a: args[0].permute(
        a["perm"] if "perm" in a else list(reversed(range(args[0].ndim)))
    ),
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Slice": _slice,
    "Gather": _gather,
    "Expand": _expand,
    "Shape": _shape,
    "ConstantOfShape": _constant_of_shape,
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"),
}

#: The operators :class:`TorchGraph` runs (besides Constant, QuantizeLinear and DequantizeLinear).
SUPPORTED_OPS = frozenset(_OPS)
