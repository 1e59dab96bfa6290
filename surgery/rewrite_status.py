"""For every operator TensorRT 10's ONNX parser rejects: is there an exact rewrite, and which rule?

The status of an operator is computed, never written down twice:

- ``rule``: some registered rule lists the op in :attr:`~trtq.surgery.rule.Rule.rewrites`; the
  rule names come from the registry and the conditions under which the rewrite is exact from
  :data:`CONDITIONS`;
- ``plugin``: no rewrite into supported operators exists, but TensorRT can run the op through a
  plugin (``surgery fix --plugin OpType=Plugin``, the ``plugin_mapping`` rule);
- ``none``: no exact rewrite into supported operators exists (:data:`NO_REWRITE` says why:
  strings, random sampling, training-only semantics, data-dependent output shapes, ...);
- ``open``: an exact rewrite exists in principle but no rule implements it yet (the reason says
  what it would be);
- ``no rule yet``: the op has neither a registered rule nor a recorded reason. :func:`missing`
  lists these; the test suite keeps that list in check.

Besides the 42 ``""`` rows of :mod:`trtq.surgery.support_table`, the table covers ONNX Runtime's
contrib QOperator ops (domain ``com.microsoft``, which ``quantize_static(quant_format=QOperator)``
emits) and the supported operators whose parser restriction a rule lifts (:data:`RESTRICTIONS`).
``surgery ops --markdown`` renders it; ``docs/SURGERY_OPS.md`` is that output.
"""

from __future__ import annotations

from dataclasses import dataclass

from trtq.surgery import support_table as table
from trtq.surgery.rule import rule_class, rule_names

ORT_CONTRIB_DOMAIN = table.ORT_CONTRIB_DOMAIN

#: The contrib QOperator ops ``quantize_static(..., quant_format=QuantFormat.QOperator)`` emits on
#: ordinary CNNs (seen with onnxruntime 1.32 on Conv/Relu/MaxPool/Sigmoid/Mul/Add/LeakyRelu/
#: AveragePool/Concat/GlobalAveragePool/MatMul; QGemm for Gemm; QLinearSoftmax on PP-OCR's
#: classifier), with the conditions of their rewrite.
CONTRIB_CONDITIONS: dict[str, str] = {
    "QLinearAdd": "scales and zero points constant per-tensor scalars; same arithmetic as ORT's kernel",
    "QLinearMul": "scales and zero points constant per-tensor scalars; same arithmetic as ORT's kernel",
    "QLinearSigmoid": "8-bit, scales/zero points constant: a 256-entry table computed as ORT does",
    "QLinearLeakyRelu": "8-bit, scales/zero points constant: a 256-entry table computed as ORT does",
    "QLinearAveragePool": "2D, constant scalar scales/zero points; integer window sums exact in FP32",
    "QLinearGlobalAveragePool": "NCHW, constant scalar scales/zero points; window sums exact in FP32",
    "QLinearConcat": "constant scalar scales/zero points per input",
    "QGemm": "B, C, scales and zero points constant; integer accumulator provably below 2^24",
    "QLinearSoftmax": "softmax over the last axis, static row length <= 64, constant scalar scales/zero points",
}

#: When the exact rewrite of an operator applies (statically known shapes, constant inputs, opset).
CONDITIONS: dict[str, str] = {
    # this branch
    "QLinearConv": (
        "weights, scales and zero points constant; integer accumulator provably below 2^24 "
        "(bound from the weights); bias |B| < 2^24"
    ),
    "QLinearMatMul": (
        "B, scales and zero points constant; integer accumulator provably below 2^24 (bound from B)"
    ),
    "DynamicQuantizeLinear": "always (float input); the UINT8 outputs are cast at the end",
    "TfIdfVectorizer": "INT32/INT64 tokens, static row length, distinct ngram_indexes when weighted "
    "(STRING tokens: no TensorRT type, no rewrite)",
    "MaxRoiPool": "static shapes of X and RoIs (coordinates may be computed); intermediates <= 2^26 elements",
    # rules already on main
    "ConvInteger": "weights constant; reduction C/group * prod(kernel) <= 258 terms or weights bounding every "
    "sum below 2^24; scalar x_zero_point (constant or computed)",
    "MatMulInteger": "inner dimension K known and <= 258, or a constant B bounding every sum below 2^24; "
    "scalar a_zero_point (constant or computed, e.g. by DynamicQuantizeLinear)",
    "SequenceConstruct": "sequence statically known: consumed by ConcatFromSequence / the sequence rules",
    "ConcatFromSequence": "sequence statically known: built by SequenceConstruct (with the other sequence "
    "rules also SequenceEmpty/Insert/Erase and SplitToSequence)",
    "MelWeightMatrix": "constant inputs: folded to a constant",
    "Unique": "constant input: folded to constants (the output size depends on the data)",
    # the other surgery branch (operators rewritten there)
    "MaxUnpool": "static X, known output shape, no conflicting duplicate indices: ScatterElements into zeros",
    "AffineGrid": "FP32 theta, constant size (2D/3D): MatMul with a constant base grid",
    "BitShift": "UINT8: INT32 Mul/Div by a power of two looked up from the shift",
    "BitwiseAnd": "INT8/INT32/INT64/UINT8: arithmetic on the operands' bits",
    "BitwiseOr": "INT8/INT32/INT64/UINT8: arithmetic on the operands' bits",
    "BitwiseXor": "INT8/INT32/INT64/UINT8: arithmetic on the operands' bits",
    "BitwiseNot": "INT8/INT32/INT64/UINT8: -1 - x (255 - x for UINT8)",
    "CenterCropPad": "constant target shape, static sizes on the listed axes: Slice + zero Pad",
    "Col2Im": "FP32, constant image/block shape, static dimensions: Gather + ReduceSum",
    "Compress": "Gather of the true positions (constant condition: constant indices; else NonZero)",
    "Optional": "presence known from the graph: removed",
    "OptionalGetElement": "made by an Optional node with an input: Identity",
    "OptionalHasElement": "made by an Optional node, or omitted: a constant",
    "SequenceAt": "sequence statically known: the element, or Gather for a run-time position",
    "SequenceEmpty": "sequence statically known: resolved by the sequence rules",
    "SequenceErase": "sequence statically known (constant position): resolved by the sequence rules",
    "SequenceInsert": "sequence statically known (constant position): resolved by the sequence rules",
    "SequenceLength": "sequence statically known: a constant",
    "SequenceMap": "sequences statically known, no nested graphs in the body: the body unrolled",
    "SplitToSequence": "static length, constant split: resolved by the sequence rules",
    "DFT": "MatMul with a constant cosine/sine matrix (within float rounding)",
    "NegativeLogLikelihoodLoss": "FP32 input, INT32/INT64 target: GatherElements, weights, mask, reduction",
    "SoftmaxCrossEntropyLoss": "FP32 scores: LogSoftmax + the negative log-likelihood decomposition",
    **CONTRIB_CONDITIONS,
}

#: Operators with no exact rewrite into supported operators: status and reason.
NO_REWRITE: dict[str, tuple[str, str]] = {
    "Bernoulli": ("none", "random sampling: no deterministic rewrite reproduces its outputs"),
    "Multinomial": ("none", "random sampling: no deterministic rewrite reproduces its outputs"),
    "ImageDecoder": (
        "none",
        "decodes encoded image bytes (JPEG/PNG...): output shape depends on the data; decode outside",
    ),
    "RegexFullMatch": ("none", "STRING tensors: TensorRT has no string type"),
    "StringConcat": ("none", "STRING tensors: TensorRT has no string type"),
    "StringNormalizer": ("none", "STRING tensors: TensorRT has no string type"),
    "StringSplit": ("none", "STRING tensors: TensorRT has no string type"),
    "Det": (
        "plugin",
        "no rewrite matches it within float tolerance for every input: an elimination in another order "
        "than ONNX Runtime's rounds differently, by about cond(A) * 1e-7 relative to the determinant",
    ),
}

_EIGHT_BIT = "8-bit (UINT8/INT8) tensor, as ONNX Runtime's QOperator models move them (qdq_to_float)"
_CONSTANT = "input must be a build-time constant (fold_constants)"

#: Supported operators with a parser restriction (or hazard) that a rule lifts: op -> restriction(s).
RESTRICTIONS: dict[str, str] = {
    "If": "branches containing rejected operators, with a constant condition (if_constant_branch)",
    "Cast": "DOUBLE is cast down to FLOAT (double_to_float); UINT8 inside the network (qdq_to_float)",
    "DequantizeLinear": "INT32 bias input (dequantize_bias); UINT8 input or non-zero zero point (qdq_to_float)",
    "QuantizeLinear": "non-zero zero point; UINT8 output inside the network (qdq_to_float)",
    "Resize": f"scales/sizes computed at run time (resize_constant_scales); nearest on an {_EIGHT_BIT}",
    "Pad": _EIGHT_BIT,
    "Split": _EIGHT_BIT,
    "Concat": _EIGHT_BIT,
    "ScatterND": "reduction other than 'none' (scatternd_reduction)",
    "TopK": f"K input {_CONSTANT}; K > {table.TOPK_MAX_K} (topk_split)",
    "ReduceMean": f"axes {_CONSTANT}; a decomposed LayerNorm overflows in FP16, a hazard (layernorm_fusion)",
    "Pow": "Pow(x, 2) overflows in FP16 where Mul(x, x) need not, a hazard (pow_square_to_mul)",
    "Upsample": "deprecated since opset 10: invalid ONNX in opset >= 10 models (upsample_to_resize)",
    **{op: _CONSTANT for op in table.CONSTANT_INPUTS if op not in ("ReduceMean", "TopK", "Squeeze", "Unsqueeze")},
    "Squeeze": f"axes {_CONSTANT}; {_EIGHT_BIT}",
    "Unsqueeze": f"axes {_CONSTANT}; {_EIGHT_BIT}",
    "MaxPool": f"only the first output is imported (maxpool_indices_argmax); {_EIGHT_BIT}",
    **{op: _EIGHT_BIT for op in ("Reshape", "Flatten", "Transpose", "Identity", "Slice", "Gather",
                                 "DepthToSpace", "SpaceToDepth", "Tile", "Expand")},
}  # fmt: skip

STATUSES = ("rule", "plugin", "open", "none", "no rule yet")


@dataclass(frozen=True)
class OpStatus:
    """One row: ``op`` (with ``domain``), its status, the rules that rewrite it and the conditions
    of those rules (status ``rule``) or the reason there is none."""

    op: str
    status: str
    rules: tuple[str, ...]
    note: str
    domain: str = ""

    def to_dict(self) -> dict:
        return {
            "op": self.op,
            "domain": self.domain,
            "status": self.status,
            "rules": list(self.rules),
            "note": self.note,
        }


def rules_for(op: str) -> tuple[str, ...]:
    """Registered rules (in fix order) whose ``rewrites`` list ``op``."""
    return tuple(n for n in rule_names() if op in rule_class(n).rewrites)


def unsupported_ops() -> list[str]:
    """The operators the support table marks as not imported by the parser (the ``""`` rows)."""
    return sorted(op for op in table.OP_TYPES if not table.is_supported(op))


def op_status(op: str, domain: str = "") -> OpStatus:
    """The status of ``op``, computed from the registry first, then the recorded reasons."""
    rules = rules_for(op)
    if rules:
        return OpStatus(op, "rule", rules, CONDITIONS.get(op, RESTRICTIONS.get(op, "")), domain)
    if op in NO_REWRITE:
        status, reason = NO_REWRITE[op]
        return OpStatus(op, status, (), reason, domain)
    return OpStatus(op, "no rule yet", (), CONDITIONS.get(op, ""), domain)


def status_table() -> dict[str, list[OpStatus]]:
    """The three sections: unsupported ONNX ops, ORT contrib ops, restrictions lifted by rules."""
    restricted = sorted({op for n in rule_names() for op in rule_class(n).rewrites} - set(unsupported_ops()))
    restricted = [op for op in restricted if op not in CONTRIB_CONDITIONS]
    return {
        "unsupported": [op_status(op) for op in unsupported_ops()],
        "contrib": [op_status(op, ORT_CONTRIB_DOMAIN) for op in sorted(CONTRIB_CONDITIONS)],
        "restrictions": [OpStatus(op, "rule", rules_for(op), RESTRICTIONS.get(op, "")) for op in restricted],
    }


def missing() -> list[str]:
    """Unsupported operators with neither a registered rule nor a recorded reason."""
    return [s.op for s in status_table()["unsupported"] if s.status == "no rule yet"]


def why_no_rule(op: str, domain: str = "") -> str:
    """One line for ``surgery fix``: why a rejected node of ``op`` is still there."""
    s = op_status(op, domain)
    if s.status == "rule" and op in CONDITIONS:
        return f"{', '.join(s.rules)} did not apply; it needs: {CONDITIONS[op]}"
    if s.status == "rule":
        return f"no rule lifts this restriction here (rules for {op}: {', '.join(s.rules)})"
    if s.status == "plugin":
        return f"no exact rewrite ({s.note}); map it with --plugin {op}=PluginName"
    if s.status in ("none", "open"):
        return f"no rule: {s.note}"
    if domain not in ("", "ai.onnx"):
        return f"no rule for {domain}.{op}; map it with --plugin {op}=PluginName"
    if table.is_supported(op):
        return "no rule lifts this restriction"
    return "no rule for this operator yet"


_CELL_PIPE = "\\|"  # a literal | inside a Markdown table cell

_HEAD = """# Operators TensorRT's ONNX parser rejects, and their rewrites

Generated by `surgery ops --markdown` from `surgery/rewrite_status.py` and the registered rules
(`Rule.rewrites`); do not edit by hand.
Support facts: {source}.

Status: **rule** — an exact rewrite into supported operators exists and the named rule does it
(under the conditions given; otherwise the node stays and `surgery fix` exits 1 naming it);
**plugin** — only a TensorRT plugin can run it (`surgery fix --plugin OpType=Plugin`);
**open** — an exact rewrite exists in principle, no rule implements it yet;
**none** — no exact rewrite into supported operators exists, for the reason given;
**no rule yet** — nothing recorded.
"""


def markdown() -> str:
    """The generated ``docs/SURGERY_OPS.md``."""
    sections = status_table()
    lines = [_HEAD.format(source=table.SOURCE)]
    titles = {
        "unsupported": f"## The {len(sections['unsupported'])} operators the parser does not support",
        "contrib": f"## ONNX Runtime contrib QOperator ops (domain `{ORT_CONTRIB_DOMAIN}`)",
        "restrictions": "## Supported operators whose restriction a rule lifts",
    }
    for key, rows in sections.items():
        lines += [
            "",
            titles[key],
            "",
            "| operator | status | rule(s) | conditions / reason |",
            "|---|---|---|---|",
        ]
        for s in rows:
            rules = ", ".join(f"`{r}`" for r in s.rules) or "-"
            lines.append(f"| {s.op} | {s.status} | {rules} | {s.note.replace('|', _CELL_PIPE)} |")
    counts = {st: sum(s.status == st for s in sections["unsupported"]) for st in STATUSES}
    lines += [
        "",
        "Unsupported operators by status: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + ".",
        f"Registered rules: {len(rule_names())}.",
        "",
    ]
    return "\n".join(lines)
