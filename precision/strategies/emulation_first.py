"""``emulation-first``: search on the emulation, confirm the answer with the engine.

With ``--backend tensorrt`` every evaluation is an engine build (tens of seconds to minutes), so
the driver (:func:`trtq.precision.bisect.search`, given an ``engine_evaluate``) runs in two
stages, every row of the trace tagged with its ``stage``:

1. **emulation**: the ``ranked`` search (this class is ``ranked``) on the ONNX Runtime emulation
   of the same build: nothing pinned, everything pinned, prefix, drops; cheap.
2. **engine**: :class:`ConfirmOnEngine` starts from the emulation's answer ``S``:

   - ``S`` passes on the engine, nothing pinned fails, and (when ``|S| > 1``) ``S`` without its
     least sensitive layer fails: the engine agrees; at most 3 engine evaluations. The other
     members' need rests on the emulation's verified drops;
   - ``S`` minus that layer passes: the engine needs less; drop the rest on the engine
     (:func:`~trtq.precision.strategies.base.minimise`);
   - nothing pinned passes on the engine: ``already-passes``, pin nothing;
   - ``S`` fails on the engine: grow it along the emulation's ranking (everything pinned first:
     if that fails, ``cannot-pass``), bisecting the number of layers added to ``S``, then drop
     every member that the engine does not need, ``S``'s included.

Without an engine (``--backend onnxruntime``: the emulation *is* the backend) it is ``ranked``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import ClassVar

from trtq.precision.strategies import register_strategy
from trtq.precision.strategies.base import (
    GeneratorStrategy,
    SearchSpace,
    bisect_prefix,
    minimise,
)
from trtq.precision.strategies.ranked import RankedStrategy


@register_strategy("emulation-first")
class EmulationFirstStrategy(RankedStrategy):
    """``ranked`` on the emulation, then :class:`ConfirmOnEngine` on the engine (driver stages)."""

    #: the driver runs this strategy on the emulation, then :attr:`confirm` on the engine
    confirm_on_engine: ClassVar[bool] = True


class ConfirmOnEngine(GeneratorStrategy):
    """Stage 2 of ``emulation-first``: check the emulation's answer ``start`` on the engine and
    continue the search there when the engine disagrees (see the module docstring).

    Unlike the stage-1 strategies it assumes nothing about the empty and the full set (the
    engine has evaluated neither): it evaluates them itself when it needs them. ``verdict`` is
    ``found``, ``already-passes`` or ``cannot-pass`` once done; ``result()`` is the smallest set
    seen passing on the engine, ``None`` if none did. ``phase`` names the current candidate's
    role for the trace (``confirm``, ``baseline``, ``check-needed``, ``all-pinned``, ``search``).
    """

    name = "engine-confirm"

    def __init__(self, space: SearchSpace, start: frozenset[str]) -> None:
        self.start = frozenset(start)
        super().__init__(space)
        self._best: frozenset[str] | None = None  # type: ignore[assignment]
        self.verdict = "found"
        self.phase = "confirm"

    def result(self) -> frozenset[str] | None:  # type: ignore[override]
        return self._best

    def _note_pass(self, pins: frozenset[str]) -> None:
        if self._best is None or len(pins) < len(self._best):
            self._best = pins

    def _search(self) -> Generator[frozenset[str], bool, None]:
        ranked = self.space.ranked
        rank = {layer.node: i for i, layer in enumerate(ranked)}
        start = sorted(self.start, key=rank.__getitem__)  # most sensitive first
        if start:
            self.phase = "confirm"
            if (yield frozenset(start)):
                self.phase = "baseline"
                if (yield frozenset()):
                    self.verdict = "already-passes"
                    return
                if len(start) > 1:
                    self.phase = "check-needed"
                    if (yield frozenset(start[:-1])):  # the engine needs less: drop on the engine
                        self.phase = "search"
                        kept = start[:-1]
                        yield from minimise(kept, list(reversed(kept)))
                return
        self.phase = "baseline"
        if (yield frozenset()):
            self.verdict = "already-passes"
            return
        # The engine fails with S: grow S along the ranking, then shrink on the engine.
        order = tuple(self.space.by_node[n] for n in start) + tuple(
            layer for layer in ranked if layer.node not in self.start
        )
        self.phase = "all-pinned"
        if len(start) == len(order) or not (yield self.space.all_nodes):
            self.verdict = "cannot-pass"
            return
        self.phase = "search"
        k = yield from bisect_prefix(order, len(start), len(order))
        kept = [layer.node for layer in order[:k]]
        yield from minimise(kept, list(reversed(kept[:-1])))  # order[k-1] is needed: prefix k-1 failed
