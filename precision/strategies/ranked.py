"""``ranked`` (default): sensitivity order, shortest passing prefix, then verified drops.

1. Order the layers worst first by their layerwise sensitivity (each layer alone in reduced
   precision with FP32 inputs, from ``precision compare``).
2. Find the shortest prefix of that order that passes: the worst layer alone first (one
   evaluation when it is the only culprit), then bisection over the lengths
   (:func:`probe_first_prefix`): at most ``1 + ceil(log2 N)`` evaluations. Its last layer is
   proven needed: the prefix without it failed.
3. Try to drop the other members, least sensitive first (:func:`minimise`): one at a time;
   after two drops in a row, gallop: drop 2, 4, ... layers at once while the smaller set keeps
   passing; after a failed group go back to single layers. A drop is kept only if the smaller
   set passes (evaluated, never inferred); a layer is kept only when unpinning it alone, from
   the set as it stood then, failed. A run of
   ``r`` unneeded layers costs about ``log2 r + 2`` evaluations, a needed layer 1 (plus 1 when
   it ends a run of drops, for the failed group).

What is verified: the final set passes (it was evaluated), every dropped layer was dropped by a
passing evaluation, and every kept layer failed when unpinned alone from a superset of the final
set. Without monotonicity a kept layer might become droppable after later drops; re-testing all
of them would double the cost in the common case, so it is not done.

Cost after the driver's two evaluations (nothing pinned, everything pinned): at most
``1 + ceil(log2 N)`` for the prefix, plus about ``m - 1`` for the drops of a prefix of length
``m``: within issue 5's ``ceil(log2 N) + 2k + 2`` whenever the ranking puts the ``k`` needed
layers among the first ``2k - 1`` or so.
"""

from __future__ import annotations

from collections.abc import Generator

from trtq.precision.strategies import register_strategy
from trtq.precision.strategies.base import GeneratorStrategy, minimise, probe_first_prefix


@register_strategy("ranked")
class RankedStrategy(GeneratorStrategy):
    """Shortest passing prefix of the sensitivity ranking, minimised by verified single drops."""

    needs_ranking = True

    def _search(self) -> Generator[frozenset[str], bool, None]:
        order = self.space.ranked
        k = yield from probe_first_prefix(order)
        kept = [layer.node for layer in order[:k]]  # most sensitive first
        # The last layer of the prefix is needed: the prefix without it failed (in bisect_prefix).
        yield from minimise(kept, list(reversed(kept[:-1])))  # least sensitive first
