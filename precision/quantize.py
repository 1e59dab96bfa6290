"""The whole accuracy-first flow in one call: ranges, pins, the Q/DQ model, judged held out.

What ``precision quantize`` runs, in the order the README's "Getting INT8 accurate" walks it:

1. **Ranges** on the calibration data (or a cache's): INT8 ``auto`` (per tensor, the threshold
   with the least error at its consumer layer, then its model-output check); FP8 each tensor's
   largest |x| (:data:`~trtq.precision.qdq.FP8_RANGES`).
2. **Pins** (optional, ``pin_worst`` K): the K layers with the largest own error when each runs
   alone in INT8/FP8 with FP32 inputs (the layerwise ranking of ``precision compare``), on the
   calibration data, kept in FP32. With a ``criterion`` (``--threshold``), K is a budget: the
   shortest prefix of those K that passes it on the calibration data (``bisect``'s prefix search,
   :func:`~trtq.precision.strategies.base.bisect_prefix`, each candidate the exported Q/DQ model
   run against FP32), all K when none does. Neither looks at the held-out data.
3. **Weight scales** by each layer's output error on the calibration data where
   ``precision export --weight-scales auto`` picks them (FP8; INT8 only with ``"output"``); or,
   INT8, the opt-in **recoveries** (:class:`~trtq.precision.recovery.Recovery`: weight
   correction, AdaRound, bias correction), fitted on the calibration data with the pins in place.
4. **The Q/DQ model** (:func:`~trtq.precision.export.export_qdq`): what TensorRT 11 builds and
   ONNX Runtime runs; with ``fp16`` the layers left in float other than the pins compute in FP16
   (Casts at the FP32 boundaries, as ``precision export --fp16`` writes).
5. **Fine-tuning** (optional, INT8, :mod:`trtq.precision.finetune`): the written model's INT8
   weights trained against FP32 on the calibration data, each within one quantization step of its
   exported value, kept only when the loss on held-back calibration samples goes down. With a
   ``criterion`` it runs once, on the model the search chose, and is not kept when the tuned
   model fails the criterion that model passes.
6. **Judged** against the FP32 model: the Q/DQ model itself run in ONNX Runtime on the calibration
   data and, when given, on held-out data (the figure to trust: every step above was fitted to the
   calibration data).

Nothing here is new arithmetic: each step is the library call of one ``precision`` or ``calib``
command, so the result is the model those commands make one by one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from trtq._core.errors import InputError
from trtq._core.progress import ProgressFn, null_progress
from trtq.precision.qdq import FP8_RANGES
from trtq.precision.recovery import WITH_OUTPUT_SCALES, Recovery, report_dicts

Batches = Callable[[], Iterable[Mapping[str, np.ndarray]]]


@dataclass
class QuantizeResult:
    """What :func:`quantize` made and measured."""

    model: onnx.ModelProto  # the Q/DQ model
    qtype: str  # "int8" | "fp8"
    amax: dict[str, float]  # activation ranges: amax per tensor (INT8 scale = amax / 127)
    ranges: dict[str, Any]  # how: {"method" (None: given), "seconds", "auto_check"}
    pins: list[str]  # ONNX nodes kept in FP32, worst first
    ranking: list[dict[str, Any]]  # the pinned head of the ranking: {"node", "op", "metric", "error"}
    qdq_pairs: int  # activation QuantizeLinear nodes in the model
    weight_scales: dict[str, Any] | None  # the weight-scale choice's report, when it ran
    fp16: bool = False  # the float layers other than the pins compute in FP16
    recovery: dict[str, Any] | None = None  # {"flags": [...], <technique>: report dict}, when one ran
    finetune: dict[str, Any] | None = None  # FinetuneResult.to_dict(), when it ran
    # with a criterion: the prefixes tried ({"pins", "metric", "passed"}) and whether the model
    # written passes it on the calibration data
    search: list[dict[str, Any]] = field(default_factory=list)
    passed: bool | None = None
    calibration: Any = None  # CompareRun of the Q/DQ model against FP32 on the calibration data
    held_out: Any = None  # the same on the held-out data, when given
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step


def quantize(
    model: onnx.ModelProto,
    batches: Batches,
    *,
    fp8: bool = False,
    amax: Mapping[str, float] | None = None,
    method: str | None = None,
    params: Mapping[str, Any] | None = None,
    pin_worst: int = 0,
    rank_metric: str = "rel-l2",
    weight_scales: str = "auto",
    fp16: bool = False,
    recovery: Recovery | None = None,
    finetune: Any = None,
    mha: str | None = None,
    eval_batches: Batches | None = None,
    output_accumulator: Callable[[], Any] | None = None,
    criterion: Any = None,
    threads: int | None = None,
    samples: int | None = None,
    progress: ProgressFn = null_progress,
) -> QuantizeResult:
    """Quantize ``model`` (FP32) and judge it (module docstring).

    ``batches`` / ``eval_batches``: callables returning a fresh pass over the calibration /
    held-out batches (dicts of input name -> array, batch dimension first); the calibration data is
    read up to four times (ranges, ranking, weight scales or recoveries, judging; a ``criterion``
    search reads it once more per prefix it judges), held whole in memory only for the
    weight-scale choice and the recoveries. ``amax``: ranges to use instead
    of calibrating (a cache's); ``method``/``params``: the calibration method (default INT8
    ``auto``, FP8 ``minmax``).
    ``pin_worst``: how many of the layerwise ranking's worst layers (by ``rank_metric``) stay FP32.
    ``weight_scales``: ``auto`` (by output error for FP8), ``weights`` or ``output``.
    ``fp16``: the float layers other than the pins in FP16. ``recovery``: INT8 recoveries run on
    the calibration data before the export, with the pins of the model being written (in a
    ``criterion`` search, of each prefix tried: every candidate is judged as it would be written).
    ``finetune``: :class:`~trtq.precision.finetune.FinetuneSettings` to fine-tune the written
    model's INT8 weights (needs PyTorch), or None.
    ``output_accumulator``: a factory of the model outputs' accumulators (a task metric's, e.g.
    mask-iou), else the tensor metrics. ``criterion``: a
    :class:`~trtq.precision.evaluate.MetricCriterion` that makes ``pin_worst`` a budget (module
    docstring, step 2). ``progress``: calibration advances it per sample
    (``samples``: their number, for the bar); each later step is announced as one unit of work.
    """
    from trtq.precision.emulate import DEFAULT_MHA, folded
    from trtq.precision.export import export_qdq

    if pin_worst < 0:
        raise InputError(f"pin_worst must be >= 0, not {pin_worst}")
    if weight_scales not in ("auto", "weights", "output"):
        raise InputError(f"weight_scales must be auto, weights or output, not {weight_scales!r}")
    recovery = recovery or Recovery()
    recovery.require_int8(not fp8, "not with --fp8")
    if recovery.active and weight_scales == "output":
        raise InputError(WITH_OUTPUT_SCALES)
    if finetune is not None and fp8:
        raise InputError("fine-tuning trains INT8 weights: not with --fp8")
    qtype = "fp8" if fp8 else "int8"
    mha = mha or DEFAULT_MHA
    base = folded(model)  # folded once: the ranking, the weight scales and the export take it
    timings: dict[str, float] = {}

    @contextmanager
    def step(name: str, description: str, total: int | None = 1) -> Iterator[None]:
        """Announce the step on the progress bar and record its wall seconds as ``timings[name]``."""
        progress(0, total=total, description=description)
        t0 = time.perf_counter()
        yield
        timings[name] = round(time.perf_counter() - t0, 3)

    if amax is not None:
        ranges: dict[str, Any] = {"method": None, "seconds": 0.0, "auto_check": None}
        amax = dict(amax)
    else:
        method = method or (FP8_RANGES if fp8 else "auto")
        with step("ranges", f"calibrating ({method})", samples):
            amax, check = _calibrate(model, batches, method, params, threads, progress)
        ranges = {"method": method, "seconds": timings["ranges"], "auto_check": check}

    ranking: list[dict[str, Any]] = []
    if pin_worst:
        with step("ranking", "ranking the layers"):
            ranking = _worst_layers(base, batches, amax, qtype, mha, pin_worst, rank_metric, threads)
        progress(1)
    pins = [r["node"] for r in ranking]
    searching = criterion is not None and bool(ranking)
    scales, scales_report = None, None
    by_output = weight_scales == "output" or (weight_scales == "auto" and fp8)
    # read whole, once
    calibration = list(batches()) if by_output or recovery.active or finetune is not None else []
    if by_output:
        from trtq.precision.weight_scales import choose_weight_scales

        # each layer's scales are chosen on its own FP32 input, whatever else is pinned: chosen once
        # with no pins, they serve every prefix the search tries (a pinned layer's go unused)
        with step("weight_scales", "weight scales"):
            scales, report = choose_weight_scales(
                base, calibration, amax, qtype=qtype, pins=[] if searching else pins, threads=threads
            )
        progress(1)
        scales_report = report.to_dict()

    def written(pins: list[str], progress: ProgressFn = null_progress) -> tuple[onnx.ModelProto, dict]:
        """The Q/DQ model with ``pins`` as it is written (recovered first), and the recovery's reports."""
        recovered, reports = recovery.apply(base, calibration, amax, pins, threads=threads, progress=progress)
        qdq = export_qdq(recovered, amax, pins, fp16=fp16, fp8=fp8, mha=mha, weight_scales=scales)
        return qdq, reports

    search: list[dict[str, Any]] = []
    # the shortest passing prefix tried: its length -> (model, run on --data, recovery reports)
    judged: dict[int, tuple[onnx.ModelProto, Any, dict]] = {}
    if searching:

        def passes(pins: list[str]) -> bool:
            """The Q/DQ model with ``pins``, as it would be written, against the criterion."""
            qdq, reports = written(pins)
            run = _judge(qdq, model, batches, criterion.accumulator, threads)
            value, ok = _verdict(criterion, run)
            search.append({"pins": len(pins), "metric": value, "passed": ok})
            # one model held: the shortest passing prefix tried, or all K when they fail (then the
            # search stops and that model is the one written: not recovered and judged again)
            if (ok and (not judged or len(pins) < min(judged))) or (not ok and len(pins) == len(ranking)):
                judged.clear()
                judged[len(pins)] = (qdq, run, reports)
            progress(1)
            return ok

        with step("search", f"pins passing {criterion.describe()}", None):
            ranking = ranking[: _shortest_passing_prefix(ranking, passes)]
    pins = [r["node"] for r in ranking]

    # after a search that passed, the model written is the shortest passing prefix it judged on --data
    qdq, on_calibration, reports = judged.get(len(pins), (None, None, {}))
    if qdq is None and recovery.active:
        with step("recovery", "recovering accuracy", None):  # the recoveries announce their own totals
            qdq, reports = written(pins, progress)
    elif qdq is None:
        qdq, reports = written(pins)
    pairs = sum(n.op_type == "QuantizeLinear" for n in qdq.graph.node)
    if not pairs:
        raise InputError(f"nothing to quantize: no layer of the model runs in {qtype.upper()}")
    tuned = None
    if finetune is not None:
        from trtq.precision.finetune import finetune as run_finetune

        with step("finetune", "fine-tuning", None):
            done = run_finetune(model, qdq, calibration, finetune, progress=progress)
        tuned = done.to_dict()
        if done.kept and criterion is not None:
            # a tuned model that fails the criterion the untuned one passes is not kept
            if on_calibration is None:
                on_calibration = _judge(qdq, model, batches, criterion.accumulator, threads)
            after = _judge(done.model, model, batches, criterion.accumulator, threads)
            if _verdict(criterion, on_calibration)[1] and not _verdict(criterion, after)[1]:
                tuned.update(kept=False, changed=0, reverted=f"fails {criterion.describe()} on the data")
            else:
                qdq, on_calibration = done.model, after
        elif done.kept:  # judged below: a run on --data from the search is the untuned model's
            qdq, on_calibration = done.model, None

    with step("judging", "judging against FP32"):
        accumulator = criterion.accumulator if criterion is not None else output_accumulator
        if on_calibration is None:
            on_calibration = _judge(qdq, model, batches, accumulator, threads)
        held = _judge(qdq, model, eval_batches, accumulator, threads) if eval_batches else None
    progress(1)
    passed = None  # the model written (weight scales included) against the criterion, on the calibration data
    if criterion is not None:
        passed = _verdict(criterion, on_calibration)[1]
    recovered = {"flags": recovery.flags(), **report_dicts(reports)} if recovery.active else None
    return QuantizeResult(
        qdq, qtype, amax, ranges, pins, ranking, pairs, scales_report, fp16, recovered, tuned, search,
        passed, on_calibration, held, timings,
    )  # fmt: skip


def _verdict(criterion: Any, run: Any) -> tuple[Any, bool]:
    """``(metric value, passes)`` of a :func:`_judge` run against the criterion."""
    return criterion.judge({o.tensor: o.metrics for o in run.outputs})


def _shortest_passing_prefix(ranking: list[dict[str, Any]], passes: Callable[[list[str]], bool]) -> int:
    """How many of ``ranking``'s layers to pin: 0 when nothing pinned passes, all of them when
    even that fails, else the boundary :func:`~trtq.precision.strategies.base.bisect_prefix` finds
    between a failing and a passing prefix (``passes`` called once per prefix tried)."""
    from trtq.precision.strategies.base import Layer, bisect_prefix

    nodes = [r["node"] for r in ranking]
    if passes([]):
        return 0
    if len(nodes) == 1 or not passes(nodes):
        return len(nodes)
    order = [Layer(n, "", r["op"], i) for i, (n, r) in enumerate(zip(nodes, ranking, strict=True))]
    search = bisect_prefix(order, 0, len(order))
    try:
        tried = next(search)
        while True:
            tried = search.send(passes([n for n in nodes if n in tried]))
    except StopIteration as done:
        return int(done.value)


def _calibrate(model, batches: Batches, method: str, params, threads, progress) -> tuple[dict, Any]:
    """``(amax, auto's check outcome or None)``: ``calib run``'s calibration, the emulation lent to
    auto's model-output check."""
    from trtq.calib.run import calibrate
    from trtq.precision.builds import PrecisionTools

    result = calibrate(
        model,
        batches(),
        method=method,
        params=params,
        threads=threads,
        progress=progress,
        tools=PrecisionTools(),
    )
    return dict(result.amax), result.check


def _worst_layers(
    base, batches: Batches, amax, qtype: str, mha: str, k: int, metric: str, threads
) -> list[dict]:
    """The ``k`` worst layers of ``compare --mode layerwise`` (each layer alone in ``qtype`` with
    FP32 inputs) as ``{"node", "op", "metric", "error"}``, worst first; :class:`InputError` when
    ``k`` would pin every layer."""
    from trtq.precision.compare import layerwise_sensitivity
    from trtq.precision.emulate import EmulationConfig

    config = EmulationConfig(qtype, "explicit", frozenset(), mha)
    scores = layerwise_sensitivity(base, batches(), config, amax=amax, metric=metric, threads=threads)
    layers = list(dict.fromkeys(s.node for s in scores))
    if k >= len(layers):
        raise InputError(
            f"--pin-worst {k}: the model has {len(layers)} layers that run in {qtype.upper()}; "
            "pinning every one leaves nothing to quantize"
        )
    first = {}
    for s in scores:
        first.setdefault(s.node, s)
    return [
        {"node": n, "op": first[n].op_type, "metric": metric, "error": first[n].error} for n in layers[:k]
    ]


def _judge(qdq, model, batches: Batches, output_accumulator, threads) -> Any:
    """The Q/DQ model against FP32 at the outputs (``compare --reference``'s comparison)."""
    from trtq.precision.qdq_model import compare_qdq

    return compare_qdq(
        qdq, model, batches(), threads=threads, output_accumulator=output_accumulator, layers=False
    )
