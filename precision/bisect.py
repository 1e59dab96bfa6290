"""``precision bisect``: the smallest set of layers to keep in FP32 so the model passes.

The driver is written once for every strategy (:mod:`trtq.precision.strategies`):

1. evaluate the model with nothing pinned: if it passes, the verdict is ``already-passes`` and
   nothing is pinned;
2. evaluate it with every candidate layer pinned: if that fails, the verdict is ``cannot-pass``:
   the error does not come from reduced precision (or the criterion is too strict);
3. otherwise ask the strategy for pin sets until it is done (verdict ``found``) or the budget of
   ``max_evals`` evaluations is spent (verdict ``budget-exhausted``, reporting the smallest set
   seen passing so far: every layer, if nothing smaller passed).

Evaluations are cached by pin set: a set proposed twice is evaluated once and the repeat is
logged with ``cached: true`` (it does not count against the budget). Every row of the trace holds
the set size, the criterion's metric, pass/fail and the wall time in seconds. The two evaluations
of steps 1-2 count against the budget, so a run costs at least 2 evaluations.

Two evaluators (``search(..., engine_evaluate=...)``, strategy ``emulation-first``): steps 1-3
run on the cheap one (the ONNX Runtime emulation), then
:class:`~trtq.precision.strategies.emulation_first.ConfirmOnEngine` checks the answer on the
expensive one (the engine) and continues the search there if the engine disagrees. Each has its
own cache and a budget of ``max_evals``; the trace is one list whose rows carry their ``stage``
(``emulation`` / ``engine``), and ``engine_evaluations`` counts the engine's builds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import onnx

from trtq._core.errors import InputError
from trtq._core.progress import ProgressFn, null_progress
from trtq.precision.evaluate import (
    CheckCommand,
    Criterion,
    EvalResult,
    Evaluator,
    metric_criterion,
)
from trtq.precision.strategies import Layer, SearchSpace, get_strategy
from trtq.runtime.build import needs_ranges

log = logging.getLogger(__name__)

DEFAULT_MAX_EVALS = 64

EvaluateFn = Callable[[frozenset[str]], EvalResult]


@dataclass(frozen=True)
class TraceEntry:
    """One row of the search trace. ``eval`` counts rows from 1; ``time_s`` is wall seconds
    (0 for a cached repeat); ``phase`` is ``baseline``, ``all-pinned`` or ``search`` (on the
    engine stage of ``emulation-first`` also ``confirm`` and ``check-needed``); ``stage`` is
    ``emulation`` or ``engine`` with two evaluators, ``None`` with one."""

    eval: int
    set_size: int
    metric: float | None
    passed: bool
    time_s: float
    cached: bool
    phase: str = "search"
    stopped_early: bool = False
    stage: str | None = None


@dataclass
class BisectResult:
    """What a bisect run found. ``pins`` are in topological order; ``evaluations`` counts real
    (uncached) evaluations; ``layers`` is N, the number of candidate layers."""

    verdict: str
    pins: list[Layer]
    final_metric: float | None
    baseline_metric: float | None
    all_pinned_metric: float | None
    trace: list[TraceEntry]
    evaluations: int
    layers: int
    settings: dict[str, Any] = field(default_factory=dict)
    criterion: str = ""
    wall_s: float = 0.0
    ranking_s: float = 0.0
    backend: str = "onnxruntime (emulated)"
    held_out: dict[str, Any] | None = None  # the answer judged on held-out data (run_bisect(held_out=...))
    engine_evaluations: int | None = None  # emulation-first with an engine: its uncached builds
    emulation: dict[str, Any] | None = None  # emulation-first with an engine: stage 1's verdict and pins

    @property
    def pin_nodes(self) -> list[str]:
        return [layer.node for layer in self.pins]

    def summary(self) -> str:
        """One line for people, naming the verdict and the numbers behind it."""
        n, k = self.layers, len(self.pins)
        if self.verdict == "already-passes":
            return f"the model already passes with nothing pinned ({self.criterion}: {_fmt(self.baseline_metric)}); pin nothing"
        if self.verdict == "cannot-pass":
            return (
                f"even with all {n} layers in FP32 the model fails ({self.criterion}: {_fmt(self.all_pinned_metric)}): "
                "the problem is not precision"
            )
        if self.verdict == "budget-exhausted":
            return (
                f"budget spent after {self.evaluations} evaluations; smallest passing set seen: {k} of {n} layers "
                f"({_fmt(self.final_metric)})"
            )
        return f"{k} of {n} layers in FP32 pass ({self.criterion}: {_fmt(self.final_metric)}) after {self.evaluations} evaluations"

    def to_json(
        self,
        *,
        model: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        created_by: str | None = None,
    ) -> dict[str, Any]:
        """The ``kind = "bisect"`` document of docs/SCHEMA.md (also the pins.json format);
        ``created_by`` names the command (default: the API)."""
        from trtq._core.result import result_document

        return result_document(
            "bisect",
            backend=self.backend,
            created_by=created_by,
            model=dict(model or {}),
            data=dict(data or {}),
            settings=dict(self.settings),
            verdict=self.verdict,
            summary=self.summary(),
            pins=[
                {
                    "node": layer.node,
                    "tensor": layer.tensor,
                    "outputs": list(layer.outputs or (layer.tensor,)),
                    "op_type": layer.op_type,
                    "members": list(layer.members),
                    "layerwise_error": layer.error,
                }
                for layer in self.pins
            ],
            final_metric=self.final_metric,
            baseline_metric=self.baseline_metric,
            all_pinned_metric=self.all_pinned_metric,
            evaluations=self.evaluations,
            engine_evaluations=self.engine_evaluations,
            layers=self.layers,
            **({"emulation": dict(self.emulation)} if self.emulation is not None else {}),
            **({"held_out": dict(self.held_out)} if self.held_out is not None else {}),
            wall_s=self.wall_s,
            ranking_s=self.ranking_s,
            trace=[
                {
                    "eval": t.eval,
                    "set_size": t.set_size,
                    "metric": t.metric,
                    "passed": t.passed,
                    "time_s": t.time_s,
                    "cached": t.cached,
                    "phase": t.phase,
                    "stopped_early": t.stopped_early,
                    "stage": t.stage,
                }
                for t in self.trace
            ],
        )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


class BudgetExhausted(Exception):
    """Raised inside the driver when an uncached evaluation would exceed ``max_evals``."""


class CachedEvaluations:
    """Evaluations cached by pin set, with the trace, the budget and progress reporting."""

    def __init__(
        self,
        evaluate: EvaluateFn,
        max_evals: int,
        progress: ProgressFn = null_progress,
        *,
        stage: str | None = None,
        trace: list[TraceEntry] | None = None,
    ) -> None:
        self.evaluate = evaluate
        self.max_evals = max_evals
        self.progress = progress
        self.stage = stage  # tags the trace rows (two evaluators share one ``trace``)
        self.cache: dict[frozenset[str], EvalResult] = {}
        self.trace: list[TraceEntry] = [] if trace is None else trace
        self.count = 0

    def __call__(self, pins: frozenset[str], phase: str = "search") -> EvalResult:
        pins = frozenset(pins)
        cached = pins in self.cache
        if not cached:
            if self.count >= self.max_evals:
                raise BudgetExhausted
            self.cache[pins] = self.evaluate(pins)
            self.count += 1
            self.progress(1)
        result = self.cache[pins]
        entry = TraceEntry(
            eval=len(self.trace) + 1,
            set_size=len(pins),
            metric=result.metric,
            passed=result.passed,
            time_s=0.0 if cached else result.time_s,
            cached=cached,
            phase=phase,
            stopped_early=result.stopped_early,
            stage=self.stage,
        )
        self.trace.append(entry)
        log.info(
            "eval %d (%s%s): %d pinned, metric %s, %s, %.2f s%s",
            entry.eval,
            f"{self.stage} " if self.stage else "",
            phase,
            entry.set_size,
            _fmt(entry.metric),
            "pass" if entry.passed else ("fail (stopped early)" if entry.stopped_early else "fail"),
            entry.time_s,
            " (cached)" if cached else "",
        )
        return result


def _drive(runner: Any, evals: CachedEvaluations) -> str:
    """Ask ``runner`` for candidates until it is done (``found``) or the budget is spent
    (``budget-exhausted``). The trace row's phase is the runner's ``phase`` where it has one."""
    try:
        while (candidate := runner.next_candidate()) is not None:
            runner.record(evals(candidate, getattr(runner, "phase", "search")))
        return "found"
    except BudgetExhausted:
        return "budget-exhausted"


def search(
    space: SearchSpace,
    evaluate: EvaluateFn,
    strategy: str = "ranked",
    *,
    max_evals: int = DEFAULT_MAX_EVALS,
    progress: ProgressFn = null_progress,
    engine_evaluate: EvaluateFn | None = None,
) -> BisectResult:
    """Run the driver with the strategy called ``strategy`` over ``space``.

    ``evaluate(pins) -> EvalResult`` is one (uncached) evaluation; the driver caches it.
    ``max_evals`` counts uncached evaluations and must be at least 2.

    ``engine_evaluate``: the expensive evaluator, used by strategies with ``confirm_on_engine``
    (``emulation-first``): ``evaluate`` is then the cheap one (the emulation) and the engine
    stage follows the search (module docstring); ``max_evals`` applies to each stage. Other
    strategies, or no ``engine_evaluate``, search on ``evaluate`` alone.
    """
    if max_evals < 2:
        raise InputError(
            f"--max-evals must be at least 2 (nothing pinned, everything pinned), got {max_evals}"
        )
    if len(space) == 0:
        raise InputError("the model has no layers producing float activations: nothing to pin")
    strategy_cls = get_strategy(strategy)
    two_stage = engine_evaluate is not None and getattr(strategy_cls, "confirm_on_engine", False)
    start = time.perf_counter()

    def on_layers(fn: EvaluateFn) -> EvaluateFn:
        return lambda layer_ids: replace(fn(space.nodes_of(layer_ids)), pins=frozenset(layer_ids))

    evals = CachedEvaluations(
        on_layers(evaluate), max_evals, progress, stage="emulation" if two_stage else None
    )
    progress(0, total=2 * max_evals if two_stage else max_evals, description=f"bisect ({strategy})")
    everything = space.all_nodes
    baseline = evals(frozenset(), "baseline")
    all_pinned: EvalResult | None = None
    best: frozenset[str] = frozenset()
    if baseline.passed:
        verdict = "already-passes"
    else:
        all_pinned = evals(everything, "all-pinned")  # within budget: max_evals >= 2
        if not all_pinned.passed:
            verdict = "cannot-pass"
        else:
            runner = strategy_cls(space)
            verdict = _drive(runner, evals)
            best = runner.result()
    final = evals.cache.get(best)
    baseline_metric = baseline.metric
    all_pinned_metric = all_pinned.metric if all_pinned is not None else None
    engine_count: int | None = None
    emulation: dict[str, Any] | None = None
    if two_stage:
        from trtq.precision.strategies.emulation_first import ConfirmOnEngine

        assert engine_evaluate is not None
        emulation = {"verdict": verdict, "pins": sorted(best, key=lambda n: space.by_node[n].index)}
        emulation["evaluations"] = evals.count
        engine = CachedEvaluations(
            on_layers(engine_evaluate), max_evals, progress, stage="engine", trace=evals.trace
        )
        # a cannot-pass or exhausted emulation has no answer to confirm: grow from nothing
        confirm = ConfirmOnEngine(space, best if best != everything else frozenset())
        stage_verdict = _drive(confirm, engine)
        verdict = confirm.verdict if stage_verdict == "found" else stage_verdict
        found = confirm.result()
        best = found if found is not None else everything
        final = engine.cache.get(best)
        # the engine's numbers (None where it did not evaluate the set); the emulation's are in the trace
        baseline_metric = engine.cache[frozenset()].metric if frozenset() in engine.cache else None
        all_pinned_metric = engine.cache[everything].metric if everything in engine.cache else None
        engine_count = engine.count
    by_node = space.by_node
    return BisectResult(
        verdict=verdict,
        pins=sorted((by_node[n] for n in best), key=lambda layer: layer.index),
        final_metric=final.metric if final is not None else None,
        baseline_metric=baseline_metric,
        all_pinned_metric=all_pinned_metric,
        trace=evals.trace,
        evaluations=evals.count + (engine_count or 0),
        layers=len(space),
        settings={"strategy": strategy, "max_evals": max_evals},
        wall_s=time.perf_counter() - start,
        engine_evaluations=engine_count,
        emulation=emulation,
    )


# -- the search space of a model ------------------------------------------------------------------


def model_layers(model: onnx.ModelProto) -> list[Layer]:
    """The layers bisect may pin, in topological order: TensorRT's layers as the emulation sees them.

    The model is folded as TensorRT's builder folds it (constants, BatchNorm into Conv; a model
    already folded is taken as it is) and its nodes grouped into fused layers
    (:func:`trtq.precision.emulation_fusion.find_layers`): a Conv with its bias Add and activation
    is one layer, pinned as a whole.
    """
    from trtq.precision.emulate import folded
    from trtq.precision.emulation_fusion import find_layers

    model = folded(model)
    layers = []
    found = find_layers(model)
    names = found.node_names
    for fused in found.layers:
        if not fused.outputs:
            continue
        members = tuple(names[i] for i in fused.nodes)
        layers.append(
            Layer(
                names[fused.head],
                fused.outputs[0],
                model.graph.node[fused.head].op_type,
                max(fused.nodes),
                fused.outputs,
                None,
                members,
            )
        )
    return layers


def rank_layers(layers: Sequence[Layer], scores: Sequence[Any]) -> SearchSpace:
    """Attach layerwise errors to ``layers`` and order them as ``scores`` does (worst first).

    ``scores`` is the worst-first list of :class:`~trtq.precision.compare.LayerScore` (anything
    with ``.node``, ``.tensor`` and ``.error``). A score belongs to the layer that outputs its
    tensor, else to the layer holding its node; a layer scored several times takes the rank and
    error of its first, i.e. worst, entry. Unscored layers follow in topological order.
    """
    by_tensor = {t: lay.node for lay in layers for t in lay.outputs}
    by_member = {m: lay.node for lay in layers for m in lay.members}
    rank: dict[str, int] = {}
    error: dict[str, float] = {}
    for position, score in enumerate(scores):
        lid = by_tensor.get(getattr(score, "tensor", None)) or by_member.get(score.node)
        if lid is not None and lid not in rank:
            rank[lid] = position
            error[lid] = float(score.error)
    scored = [replace(lay, error=error.get(lay.node)) for lay in layers]
    ranked = sorted(scored, key=lambda lay: (rank.get(lay.node, len(rank)), lay.index))
    return SearchSpace(tuple(scored), tuple(ranked))


# -- the whole run --------------------------------------------------------------------------------


def replay_settings(
    criterion: Criterion,
    batches: Sequence[Mapping[str, Any]],
    *,
    strategy: str,
    max_evals: int,
    sources: Mapping[str, Any] | None = None,
    **recorded: Any,
) -> dict[str, Any]:
    """The ``settings`` block of a bisect document: what ``precision pin`` needs to replay the
    answer (``recorded`` first: precision, placement, ranges...; then the search and criterion,
    the batch size, and the caller's ``sources``)."""
    settings: dict[str, Any] = {
        **recorded,
        "strategy": strategy,
        "metric": criterion.name,
        "threshold": criterion.threshold,
        "max_evals": max_evals,
    }
    if isinstance(criterion, CheckCommand):
        settings["check"] = criterion.command
    else:
        settings["metric_params"] = dict(getattr(criterion, "params", ()))
    first = next(iter(batches[0].values()), None) if batches else None
    settings["batch_size"] = int(first.shape[0]) if first is not None and first.ndim else None
    settings.update(sources or {})
    return settings


def run_bisect(
    model: onnx.ModelProto,
    batches: Sequence[Mapping[str, Any]],
    *,
    precision: str,
    criterion: Criterion | None = None,
    strategy: str = "ranked",
    max_evals: int = DEFAULT_MAX_EVALS,
    amax: Mapping[str, float] | None = None,
    placement: str = "explicit",
    backend: str = "onnxruntime",
    threads: int | None = None,
    early_stop: bool = True,
    mha: str = "fp16",  # emulate.DEFAULT_MHA (emulate is imported lazily here)
    progress: ProgressFn = null_progress,
    sources: Mapping[str, Any] | None = None,
    held_out: Sequence[Mapping[str, Any]] | None = None,
) -> BisectResult:
    """Find the smallest set of layers of ``model`` to keep in FP32 so it passes ``criterion``.

    ``precision`` is ``fp16``, ``int8`` or ``fp16+int8``; ``amax`` the calibrated ranges for INT8
    (``scale = amax / 127``); ``criterion`` defaults to cosine >= 0.999 on every output. The
    ``ranked`` and ``linear`` strategies first compute the layerwise sensitivity ranking
    (:func:`trtq.precision.compare.layerwise_sensitivity`) with the same settings; its wall time
    is ``ranking_s`` (included in ``wall_s``). ``early_stop`` lets an evaluation that can no
    longer pass skip its remaining batches (:class:`~trtq.precision.evaluate.Evaluator`); the
    answers do not change, failing rows of the trace then show the best metric still possible.

    The result's ``settings`` record everything ``precision pin`` needs to replay the search's
    answer: precision, placement, ``mha``, criterion, batch size, the INT8 ranges (``amax``) and
    ``sources`` (where the caller got its data and ranges, e.g. ``cache``, ``calib_method``,
    ``data_options``; recorded as given).

    ``held_out``: other batches (e.g. ``--eval-data``). The search runs on ``batches`` only; then
    the answer (the pins' member nodes) and the no-pins baseline are evaluated on ``held_out``
    with the same build, ranges and criterion, every batch (no early stop), and the result's
    ``held_out`` holds ``{metric, passed, baseline_metric, baseline_passed, criterion, outputs,
    time_s}``. It needs a metric criterion (a ``--check`` command judges its own data).

    ``strategy="emulation-first"`` with a backend that builds natively (``tensorrt``): the search
    runs on ``ModelBuild("onnxruntime", ...)``, the emulation of the same spec, and its answer is
    confirmed (and, if the engine disagrees, the search continued) on ``ModelBuild(backend, ...)``;
    ``engine_evaluations`` counts the backend's builds. With ``onnxruntime`` it is ``ranked``.
    """
    start = time.perf_counter()
    if needs_ranges(precision) and not amax:
        raise InputError(
            "INT8 needs calibrated ranges: give --cache calib.cache or let bisect calibrate on --data"
        )
    criterion = criterion or metric_criterion("cosine")
    if held_out is not None and not criterion.needs_outputs:
        raise InputError(
            "held-out data needs a metric criterion (--metric): a --check command judges the model on its own data"
        )
    batches = list(batches)
    from trtq.precision.builds import ModelBuild
    from trtq.precision.emulate import folded
    from trtq.runtime.build import BuildSpec

    base = folded(model)  # folded once; the FP32 reference runs the model as given
    spec = BuildSpec(precision, placement, amax=amax, mha=mha)
    build = ModelBuild(backend, model, spec, threads=threads)
    evaluator = Evaluator(build, batches, criterion, model=model, threads=threads, early_stop=early_stop)
    search_on, engine = evaluator, None
    if getattr(get_strategy(strategy), "confirm_on_engine", False):
        from trtq.runtime import get_backend

        if get_backend(backend).emulated_precision:
            log.info("%s: the backend is the emulation; searching as 'ranked' (no engine stage)", strategy)
        else:  # search on the emulation of the same build, confirm on the backend
            emulation = ModelBuild("onnxruntime", model, spec, threads=threads)
            search_on = Evaluator(
                emulation,
                batches,
                criterion,
                reference=evaluator.reference,
                model=model,
                threads=threads,
                early_stop=early_stop,
            )
            engine = evaluator
    layers = model_layers(base)
    ranking_s = 0.0
    if get_strategy(strategy).needs_ranking:
        from trtq.precision.compare import layerwise_sensitivity
        from trtq.precision.emulate import EmulationConfig

        t0 = time.perf_counter()
        scores = layerwise_sensitivity(
            base, batches, EmulationConfig(precision, placement, mha=mha), amax=amax, progress=progress
        )
        space = rank_layers(layers, scores)
        ranking_s = time.perf_counter() - t0
    else:
        space = SearchSpace(tuple(layers))
    result = search(
        space, search_on, strategy, max_evals=max_evals, progress=progress, engine_evaluate=engine
    )
    result.settings = replay_settings(
        criterion,
        batches,
        strategy=strategy,
        max_evals=max_evals,
        sources=sources,
        precision=precision,
        placement=placement,
        mha=mha,
        amax={k: float(v) for k, v in amax.items()} if amax and needs_ranges(precision) else None,
    )
    if held_out is not None:
        result.held_out = evaluate_held_out(
            build, model, held_out, criterion, [m for layer in result.pins for m in layer.members], threads
        )
    result.criterion = criterion.describe()
    result.backend = evaluator.backend_label
    result.ranking_s = ranking_s
    result.wall_s = time.perf_counter() - start
    return result


def evaluate_held_out(
    build: Callable[[frozenset[str]], Any],
    model: onnx.ModelProto,
    batches: Sequence[Mapping[str, Any]],
    criterion: Criterion,
    nodes: Sequence[str],
    threads: int | None = None,
) -> dict[str, Any]:
    """The pin set ``nodes`` and the no-pins baseline judged on ``batches`` (held-out data) with
    ``build`` and ``criterion``, every batch run (the metrics are exact, never bounds)."""
    t0 = time.perf_counter()
    batches = list(batches)
    if not batches:
        raise InputError("the held-out data (--eval-data) yielded no batches")
    evaluate = Evaluator(build, batches, criterion, model=model, threads=threads, early_stop=False)
    found = evaluate(frozenset(nodes))
    baseline = evaluate(frozenset()) if nodes else found
    return {
        "criterion": criterion.describe(),
        "metric": found.metric,
        "passed": found.passed,
        "baseline_metric": baseline.metric,
        "baseline_passed": baseline.passed,
        "outputs": {k: dict(v) for k, v in found.outputs.items()},
        "time_s": time.perf_counter() - t0,
    }
