"""``Upsample`` in a model of opset >= 10 -> ``Resize`` with the same scales and mode.

What is true about Upsample: ONNX deprecated it in opset 10 (Resize replaces it). TensorRT's ONNX
parser still imports it at any opset (the support table lists it), but in a model whose default
opset is 10 or more ``onnx.checker`` rejects the node ("Op registered for Upsample is deprecated")
and ONNX Runtime refuses to load the model, so nothing else can run, check or convert it. In
an opset 7-9 model Upsample is valid and TensorRT imports it: this rule leaves it alone there.

The rewrite: Upsample's output is ``x[floor(i / scale)]`` (nearest) or linear interpolation at
``i / scale`` (asymmetric coordinates), which is ``Resize`` with
``coordinate_transformation_mode="asymmetric"`` (and ``nearest_mode="floor"``) from opset 11 on,
or plain ``Resize`` (same semantics) in opset 10. ``bilinear`` (accepted by some exporters) is
``linear``. The scales come from the input (Upsample-9/10) or the attribute (Upsample-7), and must
be constant. Equality is proven in the tests against Upsample run by ONNX Runtime in the
equivalent opset-9 model (the original, being invalid, cannot be run); ``surgery fix`` therefore
cannot verify such a model against itself and says so.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node, constant_value, input_at
from trtq.surgery.rule import Match, Rule, register_rule

DEPRECATED_SINCE = 10
_MODES = {"nearest": "nearest", "linear": "linear", "bilinear": "linear"}


def _scales(node: gs.Node) -> np.ndarray | None:
    value = constant_value(input_at(node, 1))
    if value is None and "scales" in node.attrs:
        value = np.asarray(node.attrs["scales"], np.float32)
    return None if value is None else value.astype(np.float32).reshape(-1)


def _mode(node: gs.Node) -> str | None:
    mode = node.attrs.get("mode", "nearest")
    return _MODES.get(mode.decode() if isinstance(mode, bytes) else mode)


@register_rule
class UpsampleToResize(Rule):
    name = "upsample_to_resize"
    summary = "Upsample in an opset >= 10 model (deprecated, invalid ONNX) -> the equivalent Resize"
    reports = True
    order = 15
    rewrites = ("Upsample",)

    def match(self, graph: gs.Graph) -> list[Match]:
        if graph.opset < DEPRECATED_SINCE:
            return []
        return [
            self._match(
                [n],
                f"Upsample is deprecated since opset {DEPRECATED_SINCE}: onnx.checker and ONNX Runtime reject "
                f"this opset-{graph.opset} model (TensorRT's parser imports it); Resize is the same operation",
            )
            for n in graph.nodes
            if n.op == "Upsample"
            and (n.domain or "") in ("", "ai.onnx")
            and _scales(n) is not None
            and _mode(n)
        ]

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        scales, mode = _scales(node), _mode(node)
        if scales is None or mode is None:
            return False
        names = NameMaker(graph)
        s = gs.Constant(names(f"{node.name}_scales"), scales)
        out = node.outputs[0]
        node.outputs.clear()
        if graph.opset == DEPRECATED_SINCE:
            add_node(
                graph, names, "Resize", [node.inputs[0], s], [out], {"mode": mode}, base=f"{node.name}_resize"
            )
            return True
        attrs = {"mode": mode, "coordinate_transformation_mode": "asymmetric"}
        if mode == "nearest":
            attrs["nearest_mode"] = "floor"
        roi = (
            gs.Constant(names(f"{node.name}_roi"), np.zeros((0,), np.float32))
            if graph.opset < 13
            else gs.Variable("")
        )
        add_node(graph, names, "Resize", [node.inputs[0], roi, s], [out], attrs, base=f"{node.name}_resize")
        return True
