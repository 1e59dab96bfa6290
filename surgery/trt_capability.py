"""Ask an installed TensorRT's ONNX parser which nodes it supports (``supports_model``).

This is the same question Polygraphy's ``inspect capability`` asks. TensorRT 10 offers
``OnnxParser.supports_model(bytes, path) -> (bool, [(node_indices, supported)])``; TensorRT 11
removed it in favour of ``supports_model_v2`` plus ``num_subgraphs`` / ``get_subgraph_nodes(i)`` /
``is_subgraph_supported(i)``. Both are handled. Parser errors (``num_errors``, ``get_error(i)``)
name the failing node and its reason. TensorRT is imported lazily; nothing here runs without it.
"""

from __future__ import annotations

import os

import onnx

from trtq._core.errors import MissingDependencyError
from trtq._core.trt_import import import_tensorrt
from trtq.surgery.findings import Finding

TABLE_HINT = "leave out `--tensorrt yes` to check against the built-in support table"

#: What this module calls on ``tensorrt.OnnxParser`` (TensorRT >= 10 ``_v2`` API, the only one in 11)
PARSER_API_V2 = ("supports_model_v2", "num_subgraphs", "get_subgraph_nodes", "is_subgraph_supported",
                 "num_errors", "get_error")  # fmt: skip
#: ... the TensorRT 10 tuple-returning API used when ``_v2`` is absent
PARSER_API_V1 = ("supports_model",)
#: ... and on the parser's error objects
PARSER_ERROR_API = ("desc", "node")


def _parser(trt):
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    return builder, network, trt.OnnxParser(network, logger)


def supported_subgraphs(parser, model_bytes: bytes, path: str) -> tuple[bool, list[tuple[list[int], bool]]]:
    """``(whole model supported, [(node indices, supported)])`` for either TensorRT API."""
    if hasattr(parser, "supports_model_v2"):
        ok = parser.supports_model_v2(model_bytes, path)
        groups = [
            (list(parser.get_subgraph_nodes(i)), bool(parser.is_subgraph_supported(i)))
            for i in range(parser.num_subgraphs)
        ]
        return bool(ok), groups
    ok, groups = parser.supports_model(model_bytes, path)
    return bool(ok), [(list(nodes), bool(sup)) for nodes, sup in groups]


def parser_errors(parser) -> dict[int, str]:
    """Node index -> the parser's error description, for errors that name a node."""
    errors: dict[int, str] = {}
    for i in range(getattr(parser, "num_errors", 0)):
        err = parser.get_error(i)
        node = err.node() if callable(getattr(err, "node", None)) else -1
        if node is not None and node >= 0:
            errors.setdefault(int(node), str(err.desc()))
    return errors


def tensorrt_findings(
    model: onnx.ModelProto, model_path: str | os.PathLike | None = None
) -> tuple[list[Finding], str]:
    """Findings from the installed parser (main-graph nodes in unsupported subgraphs) and its version."""
    trt = import_tensorrt(hint=TABLE_HINT)  # "tensorrt" or the bare "tensorrt_bindings" wheel
    if not hasattr(trt, "OnnxParser"):
        raise MissingDependencyError(
            f"'tensorrt' at {getattr(trt, '__path__', '?')} is not TensorRT (no OnnxParser); install 'trtq[trt]'"
        )
    try:
        _builder, _network, parser = _parser(trt)
        ok, groups = supported_subgraphs(parser, model.SerializeToString(), str(model_path or ""))
    except Exception as exc:  # e.g. no GPU/driver: "factory function returned nullptr"
        raise MissingDependencyError(
            f"TensorRT {getattr(trt, '__version__', '?')} cannot create its ONNX parser: {exc}"
        ) from exc
    errors = parser_errors(parser)
    findings: list[Finding] = []
    if not ok:
        nodes = model.graph.node
        for indices, supported in groups:
            if supported:
                continue
            for idx in indices:
                if idx in errors or not any(i in errors for i in indices):
                    node = nodes[idx]
                    reason = errors.get(idx, "in a subgraph the TensorRT parser does not support")
                    findings.append(
                        Finding(node.op_type, node.name, reason, "error", "graph", None, "tensorrt")
                    )
    return findings, str(getattr(trt, "__version__", "unknown"))
