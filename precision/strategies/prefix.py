"""``prefix``: ``ranked`` without its drop phase: the shortest passing prefix of the ranking.

For when the search must be quick: the same prefix search as ``ranked`` (the worst layer alone,
then bisection over the prefix lengths, :func:`probe_first_prefix`), so at most
``1 + ceil(log2 N)`` evaluations after the driver's two, whatever the number of layers that
need FP32. The answer is the whole prefix: it was evaluated and passes, and its last layer is
needed (the prefix without it failed), but the other layers are not tested one by one, so some
may not be needed. ``ranked`` tests each of them, at one evaluation per layer.
"""

from __future__ import annotations

from collections.abc import Generator

from trtq.precision.strategies import register_strategy
from trtq.precision.strategies.base import GeneratorStrategy, probe_first_prefix


@register_strategy("prefix")
class PrefixStrategy(GeneratorStrategy):
    """Shortest passing prefix of the sensitivity ranking, not minimised."""

    needs_ranking = True

    def _search(self) -> Generator[frozenset[str], bool, None]:
        yield from probe_first_prefix(self.space.ranked)
