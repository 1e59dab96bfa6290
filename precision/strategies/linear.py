"""``linear``: pin layers one at a time in ranked (worst-first) order until the model passes.

The by-hand procedure, kept for comparison: no binary search and no minimisation, so it costs
``m`` evaluations for a passing prefix of length ``m`` and returns that whole prefix.
"""

from __future__ import annotations

from collections.abc import Generator

from trtq.precision.strategies import register_strategy
from trtq.precision.strategies.base import GeneratorStrategy, prefix


@register_strategy("linear")
class LinearStrategy(GeneratorStrategy):
    """Grow the ranked prefix by one layer per evaluation; stop at the first that passes."""

    needs_ranking = True

    def _search(self) -> Generator[frozenset[str], bool, None]:
        order = self.space.ranked
        for k in range(1, len(order)):
            if (yield prefix(order, k)):
                return
