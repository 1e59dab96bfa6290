"""Apply rewrite rules to a fixed point, then check the result is a valid ONNX model.

Order of work: name unnamed nodes, infer shapes, import into onnx-graphsurgeon, then passes: in
each pass every selected rule (in ``Rule.order``) matches the current graph and applies each of
its matches, followed by ``cleanup().toposort()``; after a pass that changed something the graph
is exported and re-imported with fresh shape inference. Passes repeat until no rule changes
anything (at most ``max_passes``). The result is exported, its opset/IR kept, and checked with
``onnx.checker`` and strict shape inference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import onnx
import onnx_graphsurgeon as gs

from trtq._core.errors import CheckFailed, first_line
from trtq._core.onnx_model import checker_error, ensure_node_names, export_graph
from trtq._core.progress import ProgressFn, null_progress
from trtq.surgery.check import infer
from trtq.surgery.rule import Rule

log = logging.getLogger(__name__)


@dataclass
class FixResult:
    """The rewritten model and, per rule, the anchor node of every match it rewrote."""

    model: onnx.ModelProto
    changes: dict[str, list[str]] = field(default_factory=dict)
    passes: int = 0
    unverifiable: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(self.changes.values())

    def to_dict(self) -> dict:
        return {
            "passes": self.passes,
            "changes": {
                rule: {"count": len(nodes), "nodes": nodes} for rule, nodes in self.changes.items() if nodes
            },
        }


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """Import ``model`` (not modified) with shapes inferred and every node named."""
    work = infer(model)  # a new model, unless inference failed
    if work is model:
        work = _copy(model)
    ensure_node_names(work)
    return gs.import_onnx(work)


def export_model(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export ``graph`` keeping ``like``'s IR version, producer, metadata and extra opset imports."""
    out = export_graph(graph.cleanup().toposort(), like)
    # gs writes inferred value_info; drop it so stale shapes never survive a rewrite.
    del out.graph.value_info[:]
    return out


def validate(model: onnx.ModelProto, what: str = "rewritten model") -> None:
    """``onnx.checker`` plus strict shape inference; raises :class:`CheckFailed` with one line."""
    why = checker_error(model)
    if why is not None:
        raise CheckFailed(f"{what} fails onnx.checker: {why}")
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        raise CheckFailed(f"{what} fails shape inference: {first_line(exc)}") from exc


def fix_model(
    model: onnx.ModelProto,
    rules: list[Rule],
    *,
    max_passes: int = 10,
    progress: ProgressFn = null_progress,
    check: bool = True,
) -> FixResult:
    """Rewrite ``model`` (not modified) with ``rules`` until nothing changes.

    Returns the new model and what changed per rule. Raises :class:`CheckFailed` if the result is
    not a valid ONNX model (``check=True``).
    """
    graph = import_graph(model)
    changes: dict[str, list[str]] = {r.name: [] for r in rules}
    passes = 0
    progress(0, total=max_passes, description="rewriting")
    for pass_no in range(1, max_passes + 1):
        passes = pass_no
        changed = False
        for rule in rules:
            matches = rule.match(graph)
            for m in matches:
                if rule.apply(graph, m):
                    changed = True
                    changes[rule.name].append(m.nodes[0])
                    log.debug("%s rewrote %s", rule.name, m.nodes[0])
            if matches:
                graph.cleanup().toposort()
        progress(1)
        if not changed:
            break
        # Re-infer shapes so the next pass sees the types/shapes of the tensors rules created.
        graph = import_graph(export_model(graph, model))
    progress(max_passes - passes)  # finish the bar when the fixed point came early
    out = export_model(graph, model) if any(changes.values()) else _copy(model)
    if check:
        validate(out)
    unverifiable = [r.name for r in rules if not r.verifiable and changes[r.name]]
    return FixResult(out, changes, passes, unverifiable)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out
