"""What TensorRT 10.x's ONNX parser accepts, as data.

Source: ``docs/operators.md`` of onnx/onnx-tensorrt (the parser TensorRT ships), the revision
headed "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24" (the
release/10.15 line, read through the stored copy of the repository, file id 4266455660; the
earlier stored revisions 6d0ab7be324d02c7feb3a306b6fdbeae84f71ddc and
009d6541b4ee1fa3f3150cd7cbabe7e56aa54840 describe TensorRT 8.5 and 8.4 and were *not* used).
Facts, not prose, are taken: which operators the parser imports, which element types each accepts,
and the restrictions of the "Restrictions" column, which :mod:`trtq.surgery.restrictions` turns
into checks.

Type names follow that document: FP32, FP16, BF16, FP8, FP4, INT32, INT64, INT8, INT4, UINT8, BOOL.
"""

from __future__ import annotations

from onnx import TensorProto

SOURCE = "onnx/onnx-tensorrt docs/operators.md, revision for TensorRT 10.15 (opset 9-24)"
TABLE_TRT_VERSION = "10.15"
MIN_OPSET = 9
MAX_OPSET = 24

# TensorRT's largest TopK K (ITopKLayer; operators.md: "K input must be less than 3840",
# TensorRT's API documents K <= 3840). We flag K > 3840.
TOPK_MAX_K = 3840

# ONNX element type -> the document's type name. Types missing here (STRING, UINT16, UINT32,
# UINT64, INT16, COMPLEX64/128, FLOAT8 variants other than E4M3FN) are not TensorRT types at all.
ONNX_TO_TRT_TYPE: dict[int, str] = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.FLOAT8E4M3FN: "FP8",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.INT8: "INT8",
    TensorProto.UINT8: "UINT8",
    TensorProto.BOOL: "BOOL",
}
if hasattr(TensorProto, "FLOAT4E2M1"):
    ONNX_TO_TRT_TYPE[TensorProto.FLOAT4E2M1] = "FP4"
if hasattr(TensorProto, "INT4"):
    ONNX_TO_TRT_TYPE[TensorProto.INT4] = "INT4"

# "UINT8 is only supported as network input or output tensor types."
IO_ONLY_TYPES = frozenset({TensorProto.UINT8})

# DOUBLE is accepted but cast down to FLOAT by the parser, clamped to +-FLT_MAX.
CAST_DOWN_TYPES = {TensorProto.DOUBLE: "FP32"}

_F = "FP32 FP16 BF16"
_FI = "FP32 FP16 BF16 INT32 INT64"
_FIB = "FP32 FP16 BF16 INT32 INT64 BOOL"

# op_type -> supported element types ("" = listed as not supported, "N").
_ROWS: dict[str, str] = {
    "Abs": _FI, "Acos": _F, "Acosh": _F, "Add": _FI, "AffineGrid": "", "And": "BOOL",
    "ArgMax": _FI, "ArgMin": _FI, "Asin": _F, "Asinh": _F, "Atan": _F, "Atanh": _F,
    "Attention": "FP32 FP16 BF16 INT8 FP8", "AveragePool": _F, "BatchNormalization": _F,
    "Bernoulli": "", "BitShift": "", "BitwiseAnd": "", "BitwiseNot": "", "BitwiseOr": "",
    "BitwiseXor": "", "BlackmanWindow": "FP32 FP16",
    "Cast": "FP32 FP16 BF16 INT32 INT64 UINT8 BOOL", "CastLike": "FP32 FP16 BF16 INT32 INT64 UINT8 BOOL",
    "Ceil": _F, "Col2Im": "", "Celu": _F, "CenterCropPad": "", "Clip": _F, "Compress": "",
    "Concat": _FIB, "ConcatFromSequence": "",
    "Constant": "FP32 FP16 BF16 FP8 FP4 INT4 INT32 INT64 BOOL",
    "ConstantOfShape": "FP32 FP16 BF16 FP8 FP4 INT4 INT32 INT64 BOOL",
    "Conv": _F, "ConvInteger": "", "ConvTranspose": _F, "Cos": _F, "Cosh": _F, "CumSum": _F,
    "DFT": "", "DeformConv": "FP32 FP16", "DepthToSpace": _FI, "DequantizeLinear": "INT8 FP8 FP4 INT4",
    "Det": "", "Div": _FI, "Dropout": _F, "DynamicQuantizeLinear": "", "Einsum": _F, "Elu": _F,
    "Equal": _FI, "Erf": _F, "Exp": _F, "Expand": _FIB, "EyeLike": _FIB, "Flatten": _FIB, "Floor": _F,
    "Gather": _FIB, "GatherElements": _FIB, "GatherND": _FIB, "Gelu": "FP32 FP16 BF16 INT8 INT32 INT64",
    "Gemm": _F, "GlobalAveragePool": _F, "GlobalLpPool": _F, "GlobalMaxPool": _F, "Greater": _FI,
    "GreaterOrEqual": _FI, "GridSample": "FP32 FP16", "GroupNormalization": _F, "GRU": _F,
    "HammingWindow": "FP32 FP16", "HannWindow": "FP32 FP16", "HardSigmoid": _F, "HardSwish": _F,
    "Hardmax": _F, "Identity": _FIB, "If": _FIB, "ImageScaler": _F, "ImageDecoder": "",
    "InstanceNormalization": _F, "IsInf": _F, "IsNaN": _FI, "LayerNormalization": _F, "LeakyRelu": _F,
    "Less": _FI, "LessOrEqual": _FI, "Log": _F, "LogSoftmax": _F, "Loop": _FIB, "LRN": _F, "LSTM": _F,
    "LpNormalization": _F, "LpPool": _F, "MatMul": _F, "MatMulInteger": "", "Max": _FI, "MaxPool": _F,
    "MaxRoiPool": "", "MaxUnpool": "", "Mean": "FP32 FP16 BF16 FP8 INT32 INT64",
    "MeanVarianceNormalization": _F, "MelWeightMatrix": "", "Min": _FI, "Mish": "FP32 FP16", "Mod": _FI,
    "Mul": _FI, "Multinomial": "", "Neg": _FI, "NegativeLogLikelihoodLoss": "",
    "NonMaxSuppression": "FP32 FP16", "NonZero": "FP32 FP16", "Not": "BOOL", "OneHot": _FIB,
    "Optional": "", "OptionalGetElement": "", "OptionalHasElement": "", "Or": "BOOL", "Pad": _FI,
    "ParametricSoftplus": _F, "Pow": _FI, "PRelu": _F, "QLinearConv": "", "QLinearMatMul": "",
    "QuantizeLinear": _F, "RandomNormal": _F, "RandomNormalLike": _F, "RandomUniform": _F,
    "RandomUniformLike": _F, "Range": _FI, "Reciprocal": _F, "ReduceL1": _FI, "ReduceL2": _FI,
    "ReduceLogSum": _FI, "ReduceLogSumExp": _FI, "ReduceMax": _FI, "ReduceMean": _FI, "ReduceMin": _FI,
    "ReduceProd": _FI, "ReduceSum": _FI, "ReduceSumSquare": _FI, "RegexFullMatch": "", "Relu": _FI,
    "Reshape": _FIB, "Resize": _F, "ReverseSequence": _FIB, "RMSNormalization": _F, "RNN": _F,
    "RoiAlign": "FP32 FP16", "RotaryEmbedding": _F, "Round": _F, "STFT": "FP32", "ScaledTanh": _F,
    "Scan": _F, "Scatter": _FI, "ScatterElements": _FI, "ScatterND": _FI, "Selu": _F,
    "SequenceAt": "", "SequenceConstruct": "", "SequenceEmpty": "", "SequenceErase": "",
    "SequenceInsert": "", "SequenceLength": "", "SequenceMap": "", "Shape": _FIB, "Shrink": _FI,
    "Sigmoid": _F, "Sign": _FI, "Sin": _F, "Sinh": _F, "Size": _FIB, "Slice": _FIB, "Softmax": _F,
    "SoftmaxCrossEntropyLoss": "", "Softplus": _F, "Softsign": _F, "SpaceToDepth": _FI, "Split": _FIB,
    "SplitToSequence": "", "Sqrt": _F, "Squeeze": _FIB, "StringConcat": "", "StringNormalizer": "",
    "StringSplit": "", "Sub": _FI, "Sum": _FI, "Tan": _F, "Tanh": _F, "TensorScatter": "FP32 FP16 BF16 INT32",
    "TfIdfVectorizer": "", "ThresholdedRelu": _F, "Tile": _FIB, "TopK": _FI, "Transpose": _FIB,
    "Trilu": _FIB, "Unique": "", "Unsqueeze": _FIB, "Upsample": _F, "Where": _FIB, "Xor": "BOOL",
}  # fmt: skip

#: op_type -> frozenset of supported type names; an empty set means "not supported".
OP_TYPES: dict[str, frozenset[str]] = {op: frozenset(types.split()) for op, types in _ROWS.items()}

# Ops whose type list describes something other than their data input 0, so a per-op type check
# on input 0 would mislead: conversions, quantization, shape queries, control flow.
TYPE_CHECK_EXEMPT = frozenset(
    {"Cast", "CastLike", "Constant", "ConstantOfShape", "Shape", "Size", "QuantizeLinear", "If", "Loop",
     "Scan", "EyeLike", "RandomNormalLike", "RandomUniformLike", "Range", "NonMaxSuppression", "Where",
     "Dropout", "Identity", "Attention"}
)  # fmt: skip

# Resize (operators.md restriction column).
RESIZE_COORDINATE_MODES = frozenset(
    {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
)
RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_NEAREST_MODES = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})
RESIZE_ASPECT_POLICIES = frozenset({"stretch"})

# Inputs that must be build-time constants: op_type -> {input index: what the document says}.
# "initializer" = an initializer or Constant output; "resolvable" = also a foldable subgraph.
CONSTANT_INPUTS: dict[str, dict[int, str]] = {
    "CumSum": {1: "initializer"},
    "OneHot": {1: "resolvable"},
    "Squeeze": {1: "resolvable"},
    "Unsqueeze": {1: "resolvable"},
    "TopK": {1: "resolvable"},
    "STFT": {1: "initializer", 2: "initializer"},
    **{op: {1: "initializer"} for op in (
        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
        "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")},
}  # fmt: skip

# Pooling: 2D or 3D only, dilations empty or all ones.
POOL_OPS = frozenset({"AveragePool", "MaxPool", "LpPool"})

# The only output the parser imports, for ops with optional outputs it does not support.
FIRST_OUTPUT_ONLY = frozenset({"LayerNormalization", "MaxPool"})

# Custom-op domains TensorRT resolves through its plugin registry, not the operator table.
PLUGIN_DOMAINS = frozenset({"trt.plugins"})
# ONNX Runtime's contrib operators (QLinearAdd, QGemm, ...): not ONNX operators at all.
ORT_CONTRIB_DOMAIN = "com.microsoft"
# Standard ONNX domains that the table covers.
ONNX_DOMAINS = frozenset({"", "ai.onnx"})


def is_known(op_type: str) -> bool:
    """True when ``op_type`` has a row in the table (supported or not)."""
    return op_type in OP_TYPES


def is_supported(op_type: str) -> bool:
    """True when the table marks ``op_type`` as imported by the parser ("Y")."""
    return bool(OP_TYPES.get(op_type))
