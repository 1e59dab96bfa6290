"""``emulation-first``: search on the emulation, confirm on the engine.

Disagreement model. The "engine" is the emulation standing in for TensorRT, plus a planted
error the emulation does not model: at one layer L (``planted``) the engine's kernel is worse
than the emulated one (here: L's weight matrix is perturbed by +-30 % elementwise, a fixed
pattern) unless L is pinned to FP32, where engine and emulation are the same FP32 layer. So:

- ``planted=None``: engine == emulation (they agree);
- ``planted=L``: the engine needs L pinned on top of whatever the emulation needs.

On oracles (rules over pin sets, as in test_bisect_search.py) the same model reads: the engine's
rule is the emulation's rule and ``L in pins``.
"""

# ruff: noqa: F811  (the planted-model fixtures are imported from test_bisect_planted)

from __future__ import annotations

import numpy as np
import onnx
import pytest
from test_bisect_planted import outlier_scale_model  # noqa: F401 (fixture)
from test_bisect_search import Oracle, make_space, needs

from trtq.precision.bisect import run_bisect, search
from trtq.precision.evaluate import metric_criterion
from trtq.runtime import register_backend
from trtq.runtime.onnxruntime import OnnxRuntimeRunner

# -- the driver's logic, on oracles ---------------------------------------------------------------


def engine_rows(result):
    return [t for t in result.trace if t.stage == "engine" and not t.cached]


@pytest.mark.parametrize("culprits", [("n3",), ("n3", "n17"), ("n3", "n17", "n5")])
def test_agreeing_engine_costs_at_most_three_builds_and_gives_the_engine_answer(culprits):
    space = make_space(40, [3, 17, 5, 0, 1, 2])
    emulation, engine = Oracle(needs(*culprits)), Oracle(needs(*culprits))
    result = search(space, emulation, "emulation-first", engine_evaluate=engine)
    direct = search(make_space(40, [3, 17, 5, 0, 1, 2]), Oracle(needs(*culprits)), "ranked")
    assert result.verdict == "found"
    assert result.pin_nodes == direct.pin_nodes == sorted(culprits, key=lambda n: int(n[1:]))
    assert result.engine_evaluations == len(engine.calls) == len(engine_rows(result)) <= 3
    assert result.evaluations == len(emulation.calls) + len(engine.calls)
    assert result.emulation["pins"] == result.pin_nodes


def test_engine_needing_more_continues_the_search_on_the_engine():
    space = make_space(40, [3, 17, 0, 1, 2])
    emulation = Oracle(needs("n3", "n17"))
    engine = Oracle(needs("n3", "n17", "n30"))  # the planted layer, ranked low by the emulation
    result = search(space, emulation, "emulation-first", engine_evaluate=engine)
    assert result.verdict == "found"
    assert result.pin_nodes == ["n3", "n17", "n30"]
    assert engine.rule(frozenset(result.pin_nodes))
    assert result.emulation == {
        "verdict": "found",
        "pins": ["n3", "n17"],
        "evaluations": len(emulation.calls),
    }
    assert result.engine_evaluations == len(engine.calls) > 3
    assert [t.phase for t in engine_rows(result)][:3] == ["confirm", "baseline", "all-pinned"]
    # growing from the emulation's answer costs no more than starting over on the engine
    assert result.engine_evaluations <= search(make_space(40, [3, 17, 0, 1, 2]), engine, "ranked").evaluations


def test_engine_needing_less_drops_on_the_engine():
    space = make_space(20, [3, 17, 5])
    result = search(
        space, Oracle(needs("n3", "n17", "n5")), "emulation-first", engine_evaluate=Oracle(needs("n3"))
    )
    assert result.verdict == "found" and result.pin_nodes == ["n3"]


def test_engine_passing_unpinned_pins_nothing():
    space = make_space(10, [3])
    result = search(space, Oracle(needs("n3")), "emulation-first", engine_evaluate=Oracle(lambda pins: True))
    assert result.verdict == "already-passes" and result.pins == []
    assert result.engine_evaluations == 2  # the answer, then nothing pinned


def test_emulation_that_cannot_pass_hands_the_whole_search_to_the_engine():
    space = make_space(10, [4])
    result = search(space, Oracle(lambda pins: False), "emulation-first", engine_evaluate=Oracle(needs("n4")))
    assert result.emulation["verdict"] == "cannot-pass"
    assert result.verdict == "found" and result.pin_nodes == ["n4"]
    both_fail = search(
        space, Oracle(lambda pins: False), "emulation-first", engine_evaluate=Oracle(lambda p: False)
    )
    assert both_fail.verdict == "cannot-pass" and both_fail.engine_evaluations == 2


def test_without_an_engine_it_is_ranked():
    space = make_space(40, [3, 17])
    plain = search(space, Oracle(needs("n3", "n17")), "ranked")
    alone = search(space, Oracle(needs("n3", "n17")), "emulation-first")
    assert alone.pin_nodes == plain.pin_nodes and alone.evaluations == plain.evaluations
    assert alone.engine_evaluations is None and {t.stage for t in alone.trace} == {None}


# -- run_bisect on a planted model, the engine a stand-in backend ---------------------------------


def perturbed(model: onnx.ModelProto, layer: str) -> onnx.ModelProto:
    """``model`` with ``layer``'s weight (its second input) multiplied by 1 +- 0.3 elementwise."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    node = next(n for n in model.graph.node if n.name == layer)
    for init in model.graph.initializer:
        if init.name == node.input[1]:
            w = onnx.numpy_helper.to_array(init)
            signs = np.where(np.random.default_rng(0).random(w.shape) < 0.5, -1.0, 1.0)
            init.CopyFrom(onnx.numpy_helper.from_array((w * (1 + 0.3 * signs)).astype(w.dtype), init.name))
    return model


class StandInEngine(OnnxRuntimeRunner):
    """A natively-building backend (as TensorRT is to bisect) that is the emulation plus the
    planted disagreement: ``planted``'s weights perturbed unless ``planted`` is pinned."""

    emulated_precision = False
    planted: str | None = None
    builds = 0
    _perturbed: dict[int, onnx.ModelProto] = {}

    @classmethod
    def build(cls, model, spec=None, tools=None, *, mark=(), threads=None):
        cls.builds += 1
        if cls.planted is not None and cls.planted not in spec.pins:
            model = cls._perturbed.setdefault(id(model), perturbed(model, cls.planted))
        return cls(tools.emulate(model, spec), mark=mark, threads=threads, optimize=False)


@pytest.fixture
def stand_in_engine():
    register_backend("stand-in-engine")(StandInEngine)
    StandInEngine.builds, StandInEngine._perturbed = 0, {}
    yield StandInEngine
    StandInEngine.planted = None


def bisect(model, batches, amax, backend, strategy="emulation-first"):
    return run_bisect(
        model,
        batches,
        precision="int8",
        amax=amax,
        criterion=metric_criterion("cosine", 0.999),
        strategy=strategy,
        backend=backend,
        threads=1,
    )


def test_planted_model_agreeing_engine(outlier_scale_model, stand_in_engine):
    model, batches, amax = outlier_scale_model
    result = bisect(model, batches, amax, "stand-in-engine")
    assert result.verdict == "found" and result.pin_nodes == ["fc3"]
    assert result.engine_evaluations == stand_in_engine.builds <= 3
    stand_in_engine.builds = 0
    direct = bisect(model, batches, amax, "stand-in-engine", strategy="ranked")
    assert direct.pin_nodes == result.pin_nodes and direct.engine_evaluations is None
    assert stand_in_engine.builds == direct.evaluations > result.engine_evaluations


def test_planted_model_disagreeing_engine(outlier_scale_model, stand_in_engine):
    model, batches, amax = outlier_scale_model
    stand_in_engine.planted = "head"
    result = bisect(model, batches, amax, "stand-in-engine")
    assert result.emulation["pins"] == ["fc3"]
    assert result.verdict == "found" and result.pin_nodes == ["fc3", "head"]
    assert result.engine_evaluations == stand_in_engine.builds > 3
    doc = result.to_json()
    assert doc["engine_evaluations"] == result.engine_evaluations
    assert doc["backend"] == "stand-in-engine"
    stages = [row["stage"] for row in doc["trace"]]
    assert stages == sorted(stages, key=["emulation", "engine"].index)  # emulation rows, then engine rows
    engine = [row for row in doc["trace"] if row["stage"] == "engine"]
    assert sum(not row["cached"] for row in engine) == doc["engine_evaluations"]
    assert engine[0]["phase"] == "confirm" and not engine[0]["passed"]
    assert doc["emulation"]["verdict"] == "found"
    assert doc["evaluations"] == doc["emulation"]["evaluations"] + doc["engine_evaluations"]


def test_emulation_first_on_the_emulation_is_ranked(outlier_scale_model):
    model, batches, amax = outlier_scale_model
    result = bisect(model, batches, amax, "onnxruntime")
    assert result.pin_nodes == ["fc3"] and result.engine_evaluations is None
    assert result.to_json()["settings"]["strategy"] == "emulation-first"


def test_cli_prints_stages_and_engine_builds(tmp_path, outlier_scale_model, stand_in_engine):
    import json

    from click.testing import CliRunner
    from test_bisect_cli import _setup

    from trtq.precision.cli import main

    model, data, cache = _setup(tmp_path, outlier_scale_model)
    stand_in_engine.planted = "head"
    args = ["bisect", model, "--data", data, "--batch-size", 16, "--precision", "int8", "--cache", cache]
    args += ["--strategy", "emulation-first", "--backend", "stand-in-engine", "-o", tmp_path / "pins.json"]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "engine builds" in result.output and "emulation" in result.output
    doc = json.loads((tmp_path / "pins.json").read_text())
    assert [p["node"] for p in doc["pins"]] == ["fc3", "head"] and doc["engine_evaluations"] > 3
