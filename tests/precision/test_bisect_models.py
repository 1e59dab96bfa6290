"""Bisect on tiny ONNX models with a planted culprit, through the real emulation on ONNX Runtime.

The culprit of each model (conftest.py) is known by construction; the ranked search must return
exactly it, and every set it reports must really pass when evaluated again from scratch.
"""

# ruff: noqa: F811  (the planted-model fixtures are imported from test_bisect_planted)

from __future__ import annotations

import inspect
import math
import sys

import numpy as np
import pytest
from test_bisect_planted import (  # noqa: F401 (fixtures)
    concat_ranges_model,
    outlier_scale_model,
    overflow_inner_model,
    overflow_output_model,
)

from trtq._core.errors import InputError
from trtq.precision.bisect import model_layers, run_bisect
from trtq.precision.builds import ModelBuild
from trtq.precision.evaluate import (
    CheckCommand,
    Evaluator,
    metric_criterion,
)
from trtq.runtime.build import BuildSpec


def emulated(model, precision, placement="explicit", amax=None):
    return ModelBuild("onnxruntime", model, BuildSpec(precision, placement, amax=amax))


PLANTED = [
    # fixture, precision, placement, the exact minimal pin set
    ("overflow_output_model", "fp16", "explicit", ["head"]),
    ("overflow_inner_model", "fp16", "explicit", ["expand", "norm", "rescale"]),
    ("outlier_scale_model", "int8", "explicit", ["fc3"]),
    ("concat_ranges_model", "int8", "implicit", ["take_scores"]),
]


def _bound(n: int, k: int) -> int:
    return math.ceil(math.log2(n)) + 2 * k + 2


@pytest.mark.parametrize(("fixture", "precision", "placement", "culprits"), PLANTED)
def test_ranked_finds_the_planted_culprit_exactly(request, fixture, precision, placement, culprits):
    model, batches, amax = request.getfixturevalue(fixture)
    result = run_bisect(model, batches, precision=precision, amax=amax, placement=placement)
    assert result.verdict == "found"
    assert result.pin_nodes == culprits
    assert result.evaluations <= _bound(result.layers, len(culprits))
    # The claim holds when checked independently: the set passes, and unpinning any member fails.
    evaluate = Evaluator(
        emulated(model, precision, placement=placement, amax=amax),
        batches,
        metric_criterion("cosine"),
        model=model,
    )
    layers = {layer.node: layer for layer in result.pins}
    members = frozenset(m for layer in result.pins for m in layer.members)
    assert evaluate(members).passed
    for node in culprits:
        assert not evaluate(members - set(layers[node].members)).passed
    assert not evaluate(frozenset()).passed


@pytest.mark.parametrize("strategy", ["contiguous", "linear"])
@pytest.mark.parametrize(("fixture", "precision", "placement", "culprits"), PLANTED)
def test_other_strategies_return_a_passing_superset(
    request, strategy, fixture, precision, placement, culprits
):
    model, batches, amax = request.getfixturevalue(fixture)
    ranked = run_bisect(model, batches, precision=precision, amax=amax, placement=placement)
    other = run_bisect(model, batches, precision=precision, amax=amax, placement=placement, strategy=strategy)
    assert other.verdict == "found"
    assert set(culprits) <= set(other.pin_nodes)
    assert len(ranked.pins) <= len(other.pins)
    assert other.final_metric >= 0.999


def test_layers_are_fused_groups_pinned_as_a_whole(outlier_scale_model):
    model, _, _ = outlier_scale_model
    layers = {layer.node: layer for layer in model_layers(model)}
    assert layers["fc3"].members == ("fc3", "act3")  # MatMul + its fused Relu
    assert layers["fc3"].tensor == "r3"  # the layer's output is the Relu's
    assert layers["head"].members == ("head",)


def test_a_model_that_already_passes_pins_nothing(outlier_scale_model):
    model, batches, _ = outlier_scale_model  # harmless in FP16
    result = run_bisect(model, batches, precision="fp16")
    assert (result.verdict, result.pins, result.evaluations) == ("already-passes", [], 1)
    assert result.baseline_metric > 0.999


def test_check_command_decides_and_receives_the_model(tmp_path, overflow_output_model):
    """A user check that runs the candidate ONNX itself: finite outputs within 1% of FP32."""
    model, batches, _ = overflow_output_model
    np.save(tmp_path / "x.npy", batches[0]["x"])
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    with OnnxRuntimeRunner(model) as backend:
        np.save(tmp_path / "y.npy", backend.run(batches[0])["y"])
    script = tmp_path / "check.py"
    script.write_text(
        "import json, os, sys, numpy as np, onnxruntime as ort\n"
        "d = sys.argv[2]\n"
        "assert os.environ['TRTQ_MODEL'] == sys.argv[1]\n"
        "pins = json.load(open(os.environ['TRTQ_PINS']))\n"
        "o = ort.SessionOptions(); o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL\n"
        "s = ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])\n"
        "y = s.run(None, {'x': np.load(d + '/x.npy')})[0]\n"
        "ref = np.load(d + '/y.npy')\n"
        "ok = np.isfinite(y).all() and np.abs(y - ref).max() <= 0.01 * np.abs(ref).max()\n"
        "print('pins', pins, 'ok', ok)\n"
        "sys.exit(0 if ok else 3)\n"
    )
    check = CheckCommand(f"{sys.executable} {script} {{model}} {tmp_path}")
    result = run_bisect(model, batches, precision="fp16", criterion=check)
    assert result.pin_nodes == ["head"]
    assert result.settings["metric"] == "check" and result.settings["check"] == check.command
    assert all(t.metric is None for t in result.trace)
    evaluate = Evaluator(emulated(model, "fp16"), batches, check)
    failed = evaluate(frozenset())
    assert not failed.passed and failed.note.startswith("exit 3")


def test_check_that_never_passes_means_the_problem_is_not_precision(overflow_output_model):
    model, batches, _ = overflow_output_model
    result = run_bisect(model, batches, precision="fp16", criterion=CheckCommand("exit 1"))
    assert result.verdict == "cannot-pass"
    assert result.evaluations == 2 and result.pins == []


@pytest.mark.parametrize(
    ("metric", "threshold", "passes"),
    [("cosine", 0.999, True), ("cosine", 0.99999, False), ("rel-l2", 0.05, True), ("rel-l2", 1e-4, False),
     ("sqnr", 25.0, True), ("sqnr", 60.0, False), ("max-abs", 10.0, True), ("max-abs", 1e-6, False)],
)  # fmt: skip
def test_metric_criteria_judge_the_worst_output_in_the_right_direction(
    outlier_scale_model, metric, threshold, passes
):
    model, batches, amax = outlier_scale_model
    evaluate = Evaluator(
        emulated(model, "int8", amax=amax), batches, metric_criterion(metric, threshold), model=model
    )
    result = evaluate(frozenset({"fc3", "act3"}))
    assert result.passed is passes
    assert result.metric == pytest.approx(
        result.outputs["y"][
            {"cosine": "cosine", "rel-l2": "rel_l2", "sqnr": "sqnr_db", "max-abs": "max_abs"}[metric]
        ]
    )


def test_nonfinite_outputs_fail_every_metric(overflow_output_model):
    model, batches, _ = overflow_output_model
    for metric in ("cosine", "rel-l2", "max-abs", "sqnr"):
        result = Evaluator(
            emulated(model, "fp16"),
            batches,
            metric_criterion(metric, 1e9 if metric != "cosine" else -1.0),
            model=model,
        )(frozenset())
        assert result.outputs["y"]["nonfinite"] > 0
        if metric in ("cosine", "sqnr"):
            assert not result.passed and result.metric == -math.inf
        else:
            assert not result.passed and result.metric == math.inf


def test_unknown_metric_and_int8_without_ranges_are_user_errors(overflow_output_model):
    model, batches, _ = overflow_output_model
    with pytest.raises(InputError, match="cosine"):
        metric_criterion("psnr")
    with pytest.raises(InputError, match="calib"):
        run_bisect(model, batches, precision="int8")
    with pytest.raises(InputError, match="onnxruntime"):
        ModelBuild("nope", model, BuildSpec("fp16"))


def test_tensorrt_build_passes_pins_to_the_tensorrt_backend(monkeypatch, outlier_scale_model):
    """A named fake of the TensorRT runner's constructor records what the build asks for; the real
    constructor is checked to accept exactly those keywords (API shape only: no engine here)."""
    from trtq.calib.cache import read_cache
    from trtq.runtime.tensorrt import TensorRTRunner

    model, batches, amax = outlier_scale_model
    accepted = inspect.signature(TensorRTRunner.__init__).parameters
    created = []

    def fake_tensorrt_init(self, model, **kwargs):
        # the build's temporary cache exists only while the engine is built: read it now
        created.append({**kwargs, "cache_amax": read_cache(kwargs["int8_cache"]).amax()})
        self._inputs, self._outputs = [], []

    monkeypatch.setattr(TensorRTRunner, "__init__", fake_tensorrt_init)
    monkeypatch.setattr(TensorRTRunner, "require", classmethod(lambda cls: None))
    monkeypatch.setattr(
        TensorRTRunner, "run", lambda self, feeds: {"y": np.zeros((feeds["x"].shape[0], 8), np.float32)}
    )
    monkeypatch.setattr(TensorRTRunner, "_close_impl", lambda self: None)
    build = ModelBuild("tensorrt", model, BuildSpec("int8", amax=amax))
    candidate = build(frozenset({"fc3", "act3"}))
    assert candidate.run(batches[0])["y"].shape == (16, 8)
    kwargs = created[0]
    assert (
        kwargs["pins"] == ("act3", "fc3")
        and kwargs["precision"] == "int8"
        and kwargs["constraints"] == "obey"
    )
    assert kwargs["cache_amax"]["r2"] == pytest.approx(amax["r2"], rel=1e-6)
    assert set(kwargs) - {"cache_amax"} <= set(accepted)


def test_tensorrt_build_without_tensorrt_fails_at_once_with_one_line(outlier_scale_model):
    from trtq._core.errors import MissingDependencyError

    model, _, amax = outlier_scale_model
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - a machine with TensorRT
        pytest.skip("TensorRT is installed here")
    with pytest.raises(MissingDependencyError, match="--backend onnxruntime") as info:
        ModelBuild("tensorrt", model, BuildSpec("int8", amax=amax))
    assert "\n" not in str(info.value)
