"""Find the nodes TensorRT's ONNX parser would reject or restrict.

Two sources of facts:
- without TensorRT, onnx-tensorrt's operator table (:mod:`trtq.surgery.support_table`) and its
  restrictions (:mod:`trtq.surgery.restrictions`), applied to the main graph, every If/Loop/Scan
  body and every local function;
- with TensorRT installed (``use_tensorrt=True``), the parser's own ``supports_model`` verdict
  (:mod:`trtq.surgery.trt_capability`), merged in.

Then every rewrite rule is matched against the main graph: a finding on a node a rule rewrites
names that rule, and rules that flag hazards on their own (``Rule.reports``) add warnings. A model
that fails ``onnx.checker`` gets one model-level warning first (``surgery fix`` refuses it).
"""

from __future__ import annotations

import logging
import os

import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto

from trtq._core.onnx_model import checker_error, ensure_node_names, node_names
from trtq.surgery import support_table as table
from trtq.surgery.findings import CheckReport, Finding
from trtq.surgery.restrictions import checks_for
from trtq.surgery.rule import Rule, make_rules
from trtq.surgery.scope import Scope

log = logging.getLogger(__name__)


def model_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in table.ONNX_DOMAINS:
            return int(op.version)
    return 0


def infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape/type inference that never fails: on error the model is returned as it is."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference is help, not a requirement
        log.debug("shape inference failed: %s", exc)
        return model


def table_findings(model: onnx.ModelProto) -> list[Finding]:
    """Findings from the operator table for the main graph, its subgraphs and local functions.

    ``model`` should have names on its main-graph nodes (:func:`ensure_node_names`).
    """
    opset = model_opset(model)
    findings: list[Finding] = []
    if opset and not table.MIN_OPSET <= opset <= table.MAX_OPSET:
        findings.append(
            Finding(
                "model",
                "(opset)",
                f"opset {opset} is outside the parser's range {table.MIN_OPSET}-{table.MAX_OPSET}",
            )
        )
    functions = {(f.domain, f.name): f for f in model.functions}
    scope = Scope(opset)
    scope.learn(model.graph)
    scope.io = {v.name for v in list(model.graph.input) + list(model.graph.output)}
    _walk_nodes(model.graph.node, scope, "graph", functions, findings)
    for (domain, name), fn in functions.items():
        fscope = Scope(opset)
        _walk_nodes(fn.node, fscope, f"function {domain}.{name}", functions, findings, learn_from=fn)
    for vi in list(model.graph.input) + list(model.graph.output):
        elem = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
        if elem and elem not in table.ONNX_TO_TRT_TYPE:
            kind = "input" if vi in model.graph.input else "output"
            sev, why = _type_issue(elem)
            findings.append(Finding(kind, vi.name, f"graph {kind} {why}", sev))
    return findings


def _walk_nodes(
    nodes, scope: Scope, location: str, functions, findings: list[Finding], learn_from=None
) -> None:
    if learn_from is not None:  # a FunctionProto: only Constant nodes give facts
        fake = onnx.GraphProto()
        fake.node.extend(learn_from.node)
        scope.learn(fake)
    for node, name in zip(nodes, node_names(nodes), strict=True):
        for severity, reason in node_issues(node, scope, functions):
            findings.append(Finding(node.op_type, name, reason, severity, location))
        for a in node.attribute:  # If then/else_branch, Loop/Scan body
            if a.type == onnx.AttributeProto.GRAPH:
                _walk_nodes(a.g.node, scope.child(a.g), f"{location}/{name}.{a.name}", functions, findings)


def _type_issue(elem: int) -> tuple[str, str]:
    type_name = TensorProto.DataType.Name(elem)
    if elem in table.CAST_DOWN_TYPES:
        return "warning", f"has type {type_name}, which TensorRT casts down to FLOAT (clamped to ±FLT_MAX)"
    return "error", f"has type {type_name}, which TensorRT does not support"


def node_issues(node: onnx.NodeProto, scope: Scope, functions) -> list[tuple[str, str]]:
    """``(severity, reason)`` for one node against the table."""
    domain = node.domain or ""
    if (domain, node.op_type) in functions:
        return []  # a call of a local function: its body is checked on its own
    if domain in table.PLUGIN_DOMAINS:
        return []  # resolved by TensorRT's plugin registry at build time
    if domain == table.ORT_CONTRIB_DOMAIN:
        return [
            (
                "error",
                f"ONNX Runtime contrib op (domain {domain!r}): not an ONNX operator TensorRT's parser knows",
            )
        ]
    if domain not in table.ONNX_DOMAINS:
        return [
            ("error", f"custom op of domain {domain!r}: not in TensorRT's operator table; map it to a plugin")
        ]
    if not table.is_known(node.op_type):
        return [("error", "not in TensorRT's ONNX operator table; map it to a plugin")]
    if not table.is_supported(node.op_type):
        return [("error", "not supported by TensorRT's ONNX parser")]
    issues: list[tuple[str, str]] = []
    seen_types: set[int] = set()
    for name in list(node.input) + list(node.output):
        elem = scope.types.get(name)
        if name and elem and elem not in table.ONNX_TO_TRT_TYPE and elem not in seen_types:
            seen_types.add(elem)
            sev, why = _type_issue(elem)
            issues.append((sev, f"tensor {name} {why}"))
    for name in node.output:
        if scope.types.get(name) in table.IO_ONLY_TYPES and name not in scope.io:
            type_name = table.ONNX_TO_TRT_TYPE[scope.types[name]]
            issues.append(
                (
                    "error",
                    f"output {name} is {type_name}, which TensorRT allows only as a network input/output",
                )
            )
    if node.op_type == "Cast":
        for a in node.attribute:
            if a.name == "to" and a.i not in table.ONNX_TO_TRT_TYPE and a.i not in seen_types:
                sev, why = _type_issue(a.i)
                issues.append((sev, f"casts to a type that {why.split(', ', 1)[-1]}"))
    if node.op_type not in table.TYPE_CHECK_EXEMPT and node.input:
        elem = scope.types.get(node.input[0])
        allowed = table.OP_TYPES[node.op_type]
        type_name = table.ONNX_TO_TRT_TYPE.get(elem) if elem else None
        if type_name and type_name not in allowed:
            issues.append(
                ("error", f"input type {type_name} is not supported ({', '.join(sorted(allowed))})")
            )
    for check in checks_for(node.op_type):
        issues.extend(check(node, scope))
    return issues


def rule_findings(graph: gs.Graph, rules: list[Rule], findings: list[Finding]) -> list[Finding]:
    """Name the fixing rule on each finding and add the warnings of reporting rules."""
    fixed_by: dict[str, str] = {}
    extra: list[Finding] = []
    for rule in rules:
        try:
            matches = rule.match(graph)
        except Exception as exc:  # a rule that cannot read this graph must not break check
            log.debug("rule %s failed to match: %s", rule.name, exc)
            continue
        for m in matches:
            for node_name in m.nodes:
                fixed_by.setdefault(node_name, rule.name)
            if "function" in m.data:
                fixed_by.setdefault(f"function {m.data['function']}", rule.name)
            if rule.reports:
                extra.append(Finding(m.op_type, m.nodes[0], m.reason, "warning", "graph", rule.name, "rule"))
    out = []
    for f in findings:
        rule = f.rule
        if rule is None and f.location == "graph":
            rule = fixed_by.get(f.node)
        elif rule is None and f.location.startswith("graph/"):
            owner = f.location.split("/")[1].rsplit(".", 1)[0]
            rule = fixed_by.get(owner)
        elif rule is None and f.location.startswith("function "):
            rule = fixed_by.get(f.location)
        out.append(Finding(f.op_type, f.node, f.reason, f.severity, f.location, rule, f.source))
    reported = {(f.node, f.location) for f in out}
    out.extend(f for f in extra if (f.node, f.location) not in reported)
    return out


def checker_finding(model: onnx.ModelProto, model_path: str | os.PathLike | None = None) -> Finding | None:
    """A model-level warning when ``model`` fails ``onnx.checker`` (None when it passes): the
    support table judges nodes one by one and would call such a model clean."""
    why = checker_error(model, model_path)
    if why is None:
        return None
    return Finding(
        "",
        "(model)",
        f"fails onnx.checker: {why}; TensorRT's parser may reject the file, and surgery fix refuses it",
        severity="warning",
        location="model",
        source="checker",
    )


def check_model(
    model: onnx.ModelProto,
    *,
    name: str = "model",
    use_tensorrt: bool = False,
    model_path: str | os.PathLike | None = None,
    rules: list[Rule] | None = None,
) -> CheckReport:
    """Check ``model`` (not modified) and return every finding, in graph order.

    ``use_tensorrt=True`` adds the installed TensorRT parser's verdict (raises
    :class:`~trtq._core.errors.MissingDependencyError` when TensorRT is absent).
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    invalid = checker_finding(model, model_path)
    ensure_node_names(work)
    inferred = infer(work)
    findings = ([invalid] if invalid else []) + table_findings(inferred)
    source = table.SOURCE
    trt_version = table.TABLE_TRT_VERSION
    if use_tensorrt:
        from trtq.surgery.trt_capability import tensorrt_findings

        trt_found, trt_version = tensorrt_findings(work, model_path)
        known = {(f.node, f.location) for f in findings}
        findings.extend(f for f in trt_found if (f.node, f.location) not in known)
        source = f"TensorRT {trt_version} OnnxParser.supports_model + {table.SOURCE}"
    graph = gs.import_onnx(inferred)
    rules = make_rules() if rules is None else rules
    findings = rule_findings(graph, rules, findings)
    return CheckReport(str(name), findings, source, trt_version, model_opset(model))
