"""The bisect driver and its strategies, against oracles whose answers are known by construction.

An oracle here is a pass/fail rule over pin sets (monotone or deliberately not); the driver and
strategies must find a set the oracle passes, in which every member is needed according to the
same oracle, within the evaluation bounds of issue 5. The emulation-backed tests are in
test_bisect_models.py.
"""

from __future__ import annotations

import math
import random

import pytest

from trtq._core.errors import InputError
from trtq.precision.bisect import CachedEvaluations, search
from trtq.precision.evaluate import EvalResult
from trtq.precision.strategies import Layer, SearchSpace, available_strategies, get_strategy


def make_space(n: int, ranking: list[int] | None = None) -> SearchSpace:
    layers = tuple(Layer(f"n{i}", f"t{i}", "Conv", i, (f"t{i}",), None) for i in range(n))
    ranked = tuple(layers[i] for i in ranking) if ranking is not None else layers
    if ranking is not None:
        rest = [lay for lay in layers if lay not in ranked]
        ranked = ranked + tuple(rest)
    return SearchSpace(layers, ranked)


class Oracle:
    """Counts calls; ``rule(pins) -> bool``. metric = fraction of culprits pinned (informative only)."""

    def __init__(self, rule):
        self.rule = rule
        self.calls: list[frozenset[str]] = []

    def __call__(self, pins: frozenset[str]) -> EvalResult:
        self.calls.append(pins)
        passed = bool(self.rule(pins))
        return EvalResult(pins, passed, 1.0 if passed else 0.0, 0.001)


def needs(*culprits: str):
    want = set(culprits)
    return lambda pins: want <= pins


def bound(n: int, k: int) -> int:
    return math.ceil(math.log2(n)) + 2 * k + 2


@pytest.mark.parametrize("ranking", [[3, 17, 0, 1, 2], [0, 1, 2, 3, 17], list(range(40))[::-1]])
def test_ranked_finds_planted_culprits_exactly(ranking):
    space = make_space(40, ranking)
    oracle = Oracle(needs("n3", "n17"))
    result = search(space, oracle, "ranked")
    assert result.verdict == "found"
    assert result.pin_nodes == ["n3", "n17"]
    assert result.evaluations == len(oracle.calls)
    if ranking[:2] == [3, 17]:  # a good ranking meets issue 5's bound
        assert result.evaluations <= bound(40, 2)
    assert oracle.rule(frozenset(result.pin_nodes))


def test_ranked_prefix_search_costs_one_probe_plus_a_bisection():
    """2 (nothing, everything) + the worst layer alone (fails) + bisection over lengths 1..N
    (ceil(log2(N - 1)) evaluations) + (k - 1) failed drops: within issue 5's bound."""
    for n in (16, 49, 1000):
        space = make_space(n, [10, 2, 7])
        oracle = Oracle(needs("n10", "n2", "n7"))
        result = search(space, oracle, "ranked")
        assert result.evaluations == 2 + 1 + math.ceil(math.log2(n - 1)) + 2
        assert result.evaluations <= bound(n, 3)
        assert result.pin_nodes == ["n2", "n7", "n10"]
    result = search(make_space(1000, [5]), Oracle(needs("n5")), "ranked")
    assert result.evaluations == 3  # the worst layer alone passes: one evaluation after the driver's two


def _random_rule(rng: random.Random, names: list[str]):
    """A non-monotone rule: needs a core set, and is broken by one 'spoiler' pinned without its partner."""
    core = set(rng.sample(names, rng.randint(1, 4)))
    spoiler, partner = rng.sample([n for n in names if n not in core], 2)

    def rule(pins: frozenset[str]) -> bool:
        return core <= pins and not (spoiler in pins and partner not in pins)

    return rule


@pytest.mark.parametrize("strategy", ["ranked", "contiguous", "linear", "prefix"])
@pytest.mark.parametrize("seed", range(12))
def test_every_claim_is_verified_even_without_monotonicity(strategy, seed):
    rng = random.Random(seed)
    n = rng.randint(3, 30)
    space = make_space(n, rng.sample(range(n), n))
    names = [lay.node for lay in space.layers]
    oracle = Oracle(_random_rule(rng, names))
    if oracle.rule(frozenset()) or not oracle.rule(frozenset(names)):
        pytest.skip("rule gives a trivial verdict")
    result = search(space, oracle, strategy, max_evals=500)
    final = frozenset(result.pin_nodes)
    assert result.verdict == "found"
    assert final in oracle.calls or final == frozenset(names)  # the answer itself was evaluated
    assert oracle.rule(final)
    if strategy == "ranked":  # each kept layer failed when unpinned alone from a superset of the answer
        for node in final:
            witnesses = [
                c for c in oracle.calls if node not in c and final - {node} <= c and not oracle.rule(c)
            ]
            assert witnesses or final - {node} == frozenset()  # the empty set: the driver's baseline


def test_contiguous_takes_the_smaller_block_from_either_end():
    space = make_space(20)
    oracle = Oracle(needs("n15"))
    result = search(space, oracle, "contiguous")
    assert result.pin_nodes == [f"n{i}" for i in range(15, 20)]  # last 5, not first 16
    assert result.evaluations <= 2 + 2 * math.ceil(math.log2(20))


def test_linear_returns_the_first_passing_ranked_prefix():
    space = make_space(10, [4, 7, 2, 9])
    oracle = Oracle(needs("n4", "n2"))
    result = search(space, oracle, "linear")
    assert result.pin_nodes == ["n2", "n4", "n7"]  # prefix of length 3 of the ranking, topological order
    assert result.evaluations == 2 + 3


def test_already_passes_pins_nothing_after_one_evaluation():
    oracle = Oracle(lambda pins: True)
    result = search(make_space(8), oracle, "ranked")
    assert (result.verdict, result.pins, result.evaluations) == ("already-passes", [], 1)
    assert "pin nothing" in result.summary()


def test_cannot_pass_says_the_problem_is_not_precision():
    oracle = Oracle(lambda pins: False)
    result = search(make_space(8), oracle, "ranked")
    assert (result.verdict, result.pins, result.evaluations) == ("cannot-pass", [], 2)
    assert "not precision" in result.summary()


def test_budget_exhausted_reports_the_smallest_passing_set_seen():
    space = make_space(64, list(range(64)))
    oracle = Oracle(needs("n1", "n40"))
    result = search(space, oracle, "ranked", max_evals=4)
    assert result.verdict == "budget-exhausted"
    assert result.evaluations == 4 == len(oracle.calls)
    passing_seen = [c for c in oracle.calls if oracle.rule(c)] + [space.all_nodes]
    assert len(result.pins) == min(len(c) for c in passing_seen)
    assert oracle.rule(frozenset(result.pin_nodes))


def test_max_evals_below_two_is_a_user_error():
    with pytest.raises(InputError, match="at least 2"):
        search(make_space(4), Oracle(lambda p: True), "ranked", max_evals=1)


def test_cache_evaluates_each_pin_set_once_and_logs_repeats():
    oracle = Oracle(needs("a"))
    evals = CachedEvaluations(oracle, max_evals=5)
    first = evals(frozenset({"a", "b"}))
    again = evals(frozenset({"b", "a"}))
    assert first is again and len(oracle.calls) == 1 and evals.count == 1
    assert [(t.eval, t.set_size, t.cached, t.passed) for t in evals.trace] == [
        (1, 2, False, True),
        (2, 2, True, True),
    ]
    assert evals.trace[1].time_s == 0.0


def test_trace_rows_match_the_evaluations():
    space = make_space(16, [5])
    oracle = Oracle(needs("n5"))
    result = search(space, oracle, "ranked")
    assert [t.set_size for t in result.trace if not t.cached] == [len(c) for c in oracle.calls]
    assert [t.phase for t in result.trace[:2]] == ["baseline", "all-pinned"]
    doc = result.to_json()
    assert doc["kind"] == "bisect" and doc["verdict"] == "found"
    assert [p["node"] for p in doc["pins"]] == ["n5"]
    assert len(doc["trace"]) == len(result.trace)


def test_prefix_is_ranked_without_the_drop_phase():
    """prefix returns ranked's passing prefix as it is: the same evaluations up to there, and
    never more than 2 + 1 + ceil(log2(N - 1)) in all, however many layers the prefix holds."""
    for n in (16, 49, 1000):
        space = make_space(n, [10, 2, 30 % n, 7])  # n30 (n16: n14) is not needed
        oracle = Oracle(needs("n10", "n2", "n7"))
        quick = search(space, oracle, "prefix")
        assert quick.pin_nodes == sorted(["n2", "n7", "n10", f"n{30 % n}"], key=lambda s: int(s[1:]))
        assert quick.evaluations == len(oracle.calls) <= 2 + 1 + math.ceil(math.log2(n - 1))
        full = search(space, Oracle(needs("n10", "n2", "n7")), "ranked")
        assert full.pin_nodes == ["n2", "n7", "n10"] and full.evaluations > quick.evaluations


def test_registry_lists_strategies_and_rejects_unknown_names():
    assert {"ranked", "contiguous", "linear", "prefix"} <= set(available_strategies())
    with pytest.raises(InputError, match="ranked"):
        get_strategy("nope")


def test_strategy_rejects_a_result_for_a_set_it_did_not_propose():
    strategy = get_strategy("ranked")(make_space(8))
    candidate = strategy.next_candidate()
    with pytest.raises(RuntimeError):
        strategy.record(EvalResult(frozenset({"zzz"}), True, 1.0, 0.0))
    strategy.record(EvalResult(candidate, False, 0.0, 0.0))
    assert strategy.next_candidate() is not None


def test_ranked_drops_runs_of_unneeded_layers_in_galloping_groups():
    # a poor ranking: the second culprit ranks 41st, so the passing prefix holds 39 unneeded layers
    space = make_space(64, list(range(64)))
    oracle = Oracle(needs("n0", "n40"))
    result = search(space, oracle, "ranked")
    assert result.pin_nodes == ["n0", "n40"]
    single_drops = 2 + math.ceil(math.log2(64)) + 40  # what one drop per layer would cost
    assert result.evaluations < single_drops - 20


def test_progress_announces_the_budget_then_advances_once_per_evaluation():
    calls = []

    def progress(advance=1, *, total=None, description=None):
        calls.append((advance, total, description))

    oracle = Oracle(needs("n3"))
    result = search(make_space(16, [3]), oracle, "ranked", max_evals=20, progress=progress)
    assert calls[0] == (0, 20, "bisect (ranked)")
    assert sum(a for a, _, _ in calls[1:]) == result.evaluations == len(oracle.calls)


def test_early_stop_with_matched_infinities_in_the_reference():
    """A reference Inf that the candidate matches exactly is not an error (the metrics leave it
    out of their sums), so the bound on the data still to come leaves it out too: a candidate
    that matches passes, and one already hopeless after its first batch still stops early."""
    import numpy as np

    from trtq.precision.evaluate import Evaluator, metric_criterion

    reference = [{"y": np.array([3.0, 4.0], np.float32)}, {"y": np.array([1.0, np.inf, 2.0], np.float32)}]

    class ReplayCandidate:  # named fake: returns the given outputs, batch by batch
        def __init__(self, outputs):
            self.outputs = outputs

        def run(self, feeds):
            return self.outputs[int(feeds["i"][0])]

        def close(self):
            pass

    wrong_first = [{"y": np.array([4.0, -3.0], np.float32)}, reference[1]]  # cosine 0 on batch 0
    batches = [{"i": np.array([0])}, {"i": np.array([1])}]
    criterion = metric_criterion("cosine", 0.999)
    same = Evaluator(lambda pins: ReplayCandidate(reference), batches, criterion, reference=reference)
    result = same(frozenset())
    assert result.passed and not result.stopped_early and result.metric == 1.0
    bad = Evaluator(lambda pins: ReplayCandidate(wrong_first), batches, criterion, reference=reference)
    result = bad(frozenset())
    assert not result.passed and result.stopped_early
    assert 0.0 <= result.metric < 0.999  # the best still possible: batch 1 could add at most 5^2
