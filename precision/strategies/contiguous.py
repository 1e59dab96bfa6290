"""``contiguous``: Polygraphy ``debug precision`` style search over contiguous blocks.

Pin the first K layers in topological order and bisect K (the shortest passing K, at most
``ceil(log2 N)`` evaluations); then the same from the end (the last K layers). The smaller passing
block wins. It needs no sensitivity ranking, but a culprit deep in the network drags every layer
before it (or after it) into the pin set.
"""

from __future__ import annotations

from collections.abc import Generator

from trtq.precision.strategies import register_strategy
from trtq.precision.strategies.base import GeneratorStrategy, bisect_prefix


@register_strategy("contiguous")
class ContiguousStrategy(GeneratorStrategy):
    """First-K, then last-K layers in topological order, K bisected each way."""

    def _search(self) -> Generator[frozenset[str], bool, None]:
        forward = self.space.layers
        yield from bisect_prefix(forward)
        yield from bisect_prefix(tuple(reversed(forward)))
