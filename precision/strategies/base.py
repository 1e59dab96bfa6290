"""What every bisect search strategy shares: the search space and the strategy protocol.

A strategy proposes pin sets one at a time through :meth:`Strategy.next_candidate` and is told
each verdict through :meth:`Strategy.record`. A pin set is a set of layer ids (:attr:`Layer.node`);
the driver expands it to every member ONNX node before evaluating. The driver
(:mod:`trtq.precision.bisect`) owns everything else, once: the evaluation cache keyed by pin set,
the trace, the budget and the verdict. Conventions a strategy may rely on:

- before the first ``next_candidate`` the driver has evaluated the empty set (it failed) and the
  set of all layers (it passed); a strategy takes both as given facts;
- ``next_candidate`` returns ``None`` when the strategy is done; :meth:`Strategy.result` is then
  the pin set it stands behind, which is always a set it saw pass (never an untested guess).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, Protocol


@dataclass(frozen=True)
class Layer:
    """A pinnable layer: one TensorRT layer, i.e. one ONNX node or a group fused into one kernel.

    ``node`` names the layer (its anchor Conv/Gemm/MatMul, else its last node) and is its id in
    pin sets; ``members`` are all the ONNX nodes that are kept in FP32 together when the layer is
    pinned (a Conv with its fused bias Add and activation; defaults to ``(node,)``). ``tensor`` is
    its first output tensor (ONNX name = TensorRT tensor name), ``outputs`` all its float outputs,
    ``index`` its topological position, ``error`` its layerwise sensitivity (larger is worse;
    ``None`` if not measured).
    """

    node: str
    tensor: str
    op_type: str
    index: int
    outputs: tuple[str, ...] = ()
    error: float | None = None
    members: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.members:
            object.__setattr__(self, "members", (self.node,))
        if not self.outputs:
            object.__setattr__(self, "outputs", (self.tensor,))


@dataclass(frozen=True)
class SearchSpace:
    """The candidate layers, in topological order and in ranked (worst-first) order."""

    layers: tuple[Layer, ...]
    ranked: tuple[Layer, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.ranked:
            object.__setattr__(self, "ranked", self.layers)

    @property
    def all_nodes(self) -> frozenset[str]:
        return frozenset(layer.node for layer in self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @cached_property
    def by_node(self) -> dict[str, Layer]:
        """Layer id -> layer."""
        return {layer.node: layer for layer in self.layers}

    def nodes_of(self, layer_ids: frozenset[str]) -> frozenset[str]:
        """The ONNX node names to keep in FP32 for a set of layer ids."""
        by_id = self.by_node
        return frozenset(member for lid in layer_ids for member in by_id[lid].members)


class Outcome(Protocol):
    """What a strategy learns from one evaluation (an :class:`~trtq.precision.evaluate.EvalResult`)."""

    pins: frozenset[str]
    passed: bool


class Strategy:
    """Base class of search strategies. Subclasses implement ``next_candidate`` and ``record``.

    ``needs_ranking`` tells the driver whether to compute the layerwise sensitivity ranking
    (one extra comparison run) before the search starts.
    """

    name: ClassVar[str] = "base"
    needs_ranking: ClassVar[bool] = False

    def __init__(self, space: SearchSpace) -> None:
        if len(space) == 0:
            raise ValueError("the search space has no layers")
        self.space = space
        self._best: frozenset[str] = space.all_nodes  # passes by the driver's precondition

    def next_candidate(self) -> frozenset[str] | None:
        raise NotImplementedError

    def record(self, result: Outcome) -> None:
        raise NotImplementedError

    def result(self) -> frozenset[str]:
        """The smallest pin set this strategy saw pass (all layers until something smaller passes)."""
        return self._best

    def _note_pass(self, pins: frozenset[str]) -> None:
        if len(pins) < len(self._best):
            self._best = pins


class GeneratorStrategy(Strategy):
    """A strategy written as a generator: ``_search`` yields pin sets and receives ``passed``.

    This keeps a search (binary search, then a drop pass, ...) readable as straight-line code
    while the driver sees only ``next_candidate`` / ``record``.
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        self._gen = self._search()
        self._pending: frozenset[str] | None = None
        self._answer: bool | None = None
        self._started = False
        self._done = False

    def _search(self) -> Generator[frozenset[str], bool, None]:
        raise NotImplementedError

    def next_candidate(self) -> frozenset[str] | None:
        if self._done:
            return None
        if self._started and self._answer is None:
            raise RuntimeError(f"{self.name}: record() the result of {sorted(self._pending or ())} first")
        try:
            if not self._started:
                self._started = True
                candidate = next(self._gen)
            else:
                answer, self._answer = self._answer, None
                candidate = self._gen.send(bool(answer))
        except StopIteration:
            self._done = True
            self._pending = None
            return None
        self._pending = frozenset(candidate)
        return self._pending

    def record(self, result: Outcome) -> None:
        if self._pending is None or frozenset(result.pins) != self._pending:
            raise RuntimeError(f"{self.name}: got a result for a pin set it did not propose")
        self._answer = bool(result.passed)
        if result.passed:
            self._note_pass(self._pending)


def bisect_prefix(
    order: Sequence[Layer], lo: int = 0, hi: int | None = None
) -> Generator[frozenset[str], bool, int]:
    """Binary-search the shortest passing prefix of ``order``; return its length ``k``.

    Invariant: the prefix of length ``lo`` fails and the one of length ``hi`` passes (``lo = 0``
    and ``hi = len(order)`` are the driver's two given facts). The loop ends with ``hi = lo + 1``,
    so the answer is backed by two evaluations: prefix ``k`` passes and prefix ``k - 1`` fails.
    This holds whether or not the pass/fail pattern is monotone in ``k``; monotonicity only
    decides whether ``k`` is the *shortest* passing prefix or just *a* boundary. Costs at most
    ``ceil(log2(len(order)))`` evaluations. ``lo`` and ``hi`` narrow the search to prefixes
    already known to fail and to pass.
    """
    if hi is None:
        hi = len(order)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (yield prefix(order, mid)):
            hi = mid
        else:
            lo = mid
    return hi


def probe_first_prefix(order: Sequence[Layer]) -> Generator[frozenset[str], bool, int]:
    """Like :func:`bisect_prefix`, after first trying the prefix of length 1 alone.

    Meant for a ranking that puts the culprits first: one evaluation answers the common case of
    a single culprit ranked worst; otherwise plain bisection over lengths 1..N follows, so the
    cost is at most ``1 + ceil(log2(N - 1))`` whatever the answer. (Exponential search, probing
    1, 2, 4, ..., costs about ``2 log2 m`` for a prefix of length ``m``: cheaper for m of 2-4
    but over the bisection's ``log2 N`` once m passes about sqrt(N), which happened on real
    models, where the passing prefix held 10-60 layers.) Same invariant and result as
    :func:`bisect_prefix`: prefix ``k`` passes, prefix ``k - 1`` fails, both evaluated.
    """
    if len(order) > 1 and (yield prefix(order, 1)):
        return 1
    return (yield from bisect_prefix(order, 1 if len(order) > 1 else 0, len(order)))


def prefix(order: Sequence[Layer], k: int) -> frozenset[str]:
    """The node names of the first ``k`` layers of ``order``."""
    return frozenset(layer.node for layer in order[:k])


def minimise(kept: list[str], pending: list[str]) -> Generator[frozenset[str], bool, list[str]]:
    """Drop the layers of ``pending`` from the passing set ``kept`` where the smaller set still
    passes; return what is left (``kept`` is changed in place, its order kept).

    ``pending`` is tried in order (give it least sensitive first), one layer at a time; after two
    drops in a row, gallop: drop 2, 4, ... layers at once while the smaller set keeps passing;
    after a failed group go back to single layers. A drop is kept only if the smaller set passes
    (evaluated, never inferred); a layer is kept only when unpinning it alone, from the set as it
    stood then, failed. A run of ``r`` unneeded layers costs about ``log2 r + 2`` evaluations, a
    needed layer 1 (plus 1 when it ends a run of drops, for the failed group).
    """
    chunk, streak, i = 1, 0, 0
    while i < len(pending):
        group = pending[i : i + chunk]
        if (yield frozenset(kept) - set(group)):
            for node in group:
                kept.remove(node)
            i += len(group)
            streak += 1
            if streak >= 2:  # gallop only inside a run of unneeded layers
                chunk *= 2
        else:
            streak = 0
            if len(group) == 1:
                i += 1  # needed: unpinning it alone failed
            chunk = 1
    return kept
