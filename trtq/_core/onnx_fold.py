"""The one constant-folding pass of trtq (onnx-graphsurgeon ``fold_constants``), shared by the
emulation's FP32 fold (:mod:`trtq.precision.fold`) and the ``fold_constants`` surgery rule.

TensorRT folds every layer computed from build-time constants when it builds an engine (and
Shape of static dims; an ``If`` with a constant condition is imported as its taken branch), so
folding first is what both users need: the emulation sees the layers TensorRT would run, and
surgery turns computed axes/shapes/K into the initializers TensorRT's parser wants.

Settings: shapes of static dims are folded; inference errors are ignored (what cannot be
evaluated stays); subgraphs are not entered (see ``If``/``Loop``/``Scan`` below); ``If`` nodes
whose condition became a constant are flattened into their taken branch, as TensorRT does.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from trtq._core.onnx_model import RANDOM_OPS

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

logger = logging.getLogger(__name__)
_FOLDING = threading.Lock()

#: Ops never folded, even when all their inputs are constants:
#: - random ops (:data:`~trtq._core.onnx_model.RANDOM_OPS`): folding would freeze one draw into
#:   the model, while the op (TensorRT's random fill) draws anew on every run;
#: - Q/DQ: TensorRT reads QuantizeLinear/DequantizeLinear as quantization markers and builds INT8
#:   kernels from the INT8 weights behind them; folding a weight's DequantizeLinear would turn
#:   an INT8 weight into an FP32 one (onnx-graphsurgeon also refuses these by itself);
#: - control flow: onnx-graphsurgeon evaluates a node with a subgraph without this exclusion
#:   list (it does not pass it into subgraphs), so a random op inside a Loop body would be
#:   frozen. An ``If`` with a constant condition is still flattened, which needs no evaluation.
NEVER_FOLD = frozenset(
    RANDOM_OPS | {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "If", "Loop", "Scan"}
)


def never_folded(node: gs.Node) -> bool:
    """``node`` is excluded from folding (:data:`NEVER_FOLD`)."""
    return node.op in NEVER_FOLD


def fold_constants(graph: gs.Graph) -> gs.Graph:
    """Fold every constant subgraph of ``graph`` in place, except :data:`NEVER_FOLD` nodes, then
    remove what became unused (``cleanup``). ``Constant`` nodes become initializers (the values do
    not change). Returns ``graph``. A failure of onnx-graphsurgeon is logged at DEBUG and leaves
    the graph with what was folded so far."""
    from onnx_graphsurgeon.logger import G_LOGGER

    # graphsurgeon's own logger prints to stdout (its advice on large folded constants, a note on
    # the missing 'colored' module), -q or not; trtq folds large constants on purpose (TensorRT
    # folds them too), so only its errors are shown, and at DEBUG everything. Its severity is
    # process-wide: one fold at a time (auto's check builds in a worker thread).
    with _FOLDING:
        severity = G_LOGGER.severity
        if not logger.isEnabledFor(logging.DEBUG):
            G_LOGGER.severity = max(severity, G_LOGGER.ERROR)
        try:
            try:
                graph.fold_constants(
                    fold_shapes=True,
                    recurse_subgraphs=False,
                    error_ok=True,
                    should_exclude_node=never_folded,
                )
            except Exception as exc:  # graphsurgeon evaluates subgraphs with ONNX Runtime; keep going
                logger.debug("fold_constants failed (%s); continuing with what was folded", exc)
            graph.cleanup()
        finally:
            G_LOGGER.severity = severity
    return graph
