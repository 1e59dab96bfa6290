"""auto's model-output check (trtq.calib.auto_check), against an independent computation: the Q/DQ
model that ``precision export`` writes, run in ONNX Runtime against FP32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_auto import _independent_errors  # the exported Q/DQ model against FP32, in ONNX Runtime

from trtq.calib.auto_check import CLIP_FACTOR, CONFIDENCE, confidence, int8_scale
from trtq.calib.run import calibrate, compute_amax
from trtq.precision.builds import PrecisionTools

TOKENS = 128


def _gain_model(w: np.ndarray, gain: np.ndarray) -> onnx.ModelProto:
    """x [N, 128, 32] -> MatMul(W) -> z [N, 128, 8] -> Mul(gain) -> y: the matrix product is the
    quantized consumer; the per-channel gain after it (kept in float by the export) makes
    output channel 0 matter 30x more at the model output than at the product's."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["z"], name="matmul"),
        helper.make_node("Mul", ["z", "gain"], ["y"], name="gain"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, TOKENS, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, TOKENS, 8])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(gain, "gain")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _weights(seed: int = 1) -> np.ndarray:
    """Features 0-31 drive output channels 1-7 strongly (rounding them is expensive), except
    feature 5, which drives channel 0 alone."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((32, 8)) * 3.0).astype(np.float32)
    w[:, 0] = rng.standard_normal(32) * 0.1
    w[5] = 0.0
    w[5, 0] = 1.0
    return w


def _outliers(samples: int = 8, seed: int = 0) -> np.ndarray:
    """Tokens uniform in [-1, 1]; in each sample one token carries a large value in feature 5."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (samples, TOKENS, 32)).astype(np.float32)
    for s in range(samples):
        x[s, rng.integers(TOKENS), 5] = rng.uniform(15, 20)
    return x


GAIN = np.array([30, 1, 1, 1, 1, 1, 1, 1], np.float32)


def _output_error(model: onnx.ModelProto, amax: dict[str, float], x: np.ndarray) -> float:
    """Relative L2 of the exported Q/DQ model's output against FP32 (ONNX Runtime, no fusions)."""
    return float(np.sqrt(_independent_errors(model, x, [amax["x"]])[0]))


def test_check_gives_max_to_the_tensor_whose_clipping_costs_at_the_model_output():
    model, x = _gain_model(_weights(), GAIN), _outliers()
    batches = [{"x": x[i : i + 2]} for i in range(0, 8, 2)]
    checked = calibrate(model, batches, method="auto", threads=1, tools=PrecisionTools())
    stage1 = calibrate(
        model, batches, method="auto", threads=1, tools=PrecisionTools(), params={"auto_check": 0}
    )
    assert stage1.check is None
    # stage 1 clips the outliers (cheap at the MatMul's output); the check flags the tensor ...
    auto_amax, max_abs = stage1.amax["x"], stage1.histograms["x"].max_abs
    assert max_abs > CLIP_FACTOR * auto_amax
    check = checked.check
    assert check["flagged"] == 1 and check["samples"] == 8
    # ... and gives it max|x|, because the exported model's output error says so
    assert check["kept"] == "max" and checked.amax["x"] == max_abs
    independent_auto = _output_error(model, {"x": auto_amax}, x)
    independent_max = _output_error(model, {"x": max_abs}, x)
    assert independent_max < 0.5 * independent_auto
    assert check["error_auto"] == pytest.approx(independent_auto, rel=1e-3)
    assert check["error_max"] == pytest.approx(independent_max, rel=1e-3)
    choice = checked.choices["x"]
    assert choice["check"] == "max" and choice["method"] == "minmax" and choice["auto_amax"] == auto_amax


def test_check_keeps_auto_when_the_consumer_is_the_output():
    """Without the gain the MatMul's output is the model's: auto's clipping, measured right there,
    is also what the model output prefers, and the check keeps it."""
    model, x = _gain_model(_weights(), np.ones(8, np.float32)), _outliers()
    result = calibrate(model, [{"x": x}], method="auto", threads=1, tools=PrecisionTools())
    assert result.check["flagged"] == 1
    assert result.check["kept"] == "auto" and result.check["error_auto"] <= result.check["error_max"]
    assert result.amax["x"] < result.histograms["x"].max_abs / CLIP_FACTOR
    assert "check" not in result.choices["x"]


def test_check_does_not_swap_on_one_sample():
    """The outlier in 1 of 12 samples: max|x| lowers the pooled output error a lot (that sample's
    clipping error dominates it) while the 11 others lose a little resolution. Resampling the 12,
    max's pooled error is the lower exactly when the outlier sample is drawn at least once,
    probability 1 - (11/12)^12 = 0.648 < CONFIDENCE: the evidence is one sample, auto is kept."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (12, TOKENS, 32)).astype(np.float32)
    x[0, 3, 5] = 20.0
    batches = [{"x": x[i : i + 1]} for i in range(12)]
    result = calibrate(
        _gain_model(_weights(), GAIN), batches, method="auto", threads=1, tools=PrecisionTools()
    )
    check = result.check
    assert check["flagged"] == 1 and check["error_max"] < 0.5 * check["error_auto"]
    assert check["confidence"] == pytest.approx(1 - (11 / 12) ** 12, abs=0.035)
    assert check["confidence_needed"] == CONFIDENCE > check["confidence"]
    assert check["kept"] == "auto" and result.amax["x"] < 20.0 / CLIP_FACTOR
    assert "check" not in result.choices["x"]


def test_confidence_is_the_bootstrap_share_of_resamples_where_max_wins():
    """One batch gains 10, eleven lose 1 each: a resample favours max when it draws the gaining
    batch at least twice (k = 1 leaves -10 + 11 > 0), P = 1 - B(0) - B(1) with B ~ Binomial(12,
    1/12); no gain at all gives 0, gains everywhere 1."""
    sse_auto = np.full(12, 20.0)
    sse_max = sse_auto + np.array([-10.0] + [1.0] * 11)
    exact = 1 - (11 / 12) ** 12 - 12 * (1 / 12) * (11 / 12) ** 11
    assert confidence(sse_auto, sse_max) == pytest.approx(exact, abs=0.035)
    assert confidence(sse_auto, sse_auto + 1.0) == 0.0
    assert confidence(sse_auto, sse_auto - 1.0) == 1.0
    assert confidence(sse_auto, np.where(np.arange(12) == 3, np.inf, sse_auto - 1.0)) == 0.0


def test_check_in_the_calib_document(tmp_path, monkeypatch):
    """`calib run --json` reports what the check did; `auto_check = 0` in the config turns it off."""
    import json

    from click.testing import CliRunner

    from trtq.calib.cli import main

    model_path = tmp_path / "m.onnx"
    onnx.save(_gain_model(_weights(), GAIN), model_path)
    data = tmp_path / "data"
    data.mkdir()
    for i, sample in enumerate(_outliers()):
        np.save(data / f"{i}.npy", sample[None])
    monkeypatch.chdir(tmp_path)
    docs = []
    for config in ("", "[tool.trtq]\nauto_check = 0\n"):
        (tmp_path / "trtq.toml").write_text(config)
        out = tmp_path / f"run{len(docs)}.json"
        args = ["run", str(model_path), "--data", str(data), "--cache", str(tmp_path / "c.cache")]
        res = CliRunner().invoke(main, [*args, "--json", str(out), "--quiet"])
        assert res.exit_code == 0, res.output
        docs.append(json.loads(out.read_text()))
    assert docs[0]["auto_check"]["kept"] == "max" and docs[0]["auto_check"]["flagged"] == 1
    tensor = next(t for t in docs[0]["tensors"] if t["name"] == "x")
    assert tensor["auto_choice"]["check"] == "max" and tensor["amax"] == tensor["max_abs"]
    assert "auto_check" not in docs[1]
    # without --quiet, one line says what the check did
    (tmp_path / "trtq.toml").write_text("")
    res = CliRunner().invoke(
        main, ["run", str(model_path), "--data", str(data), "--cache", str(tmp_path / "d.cache")]
    )
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("auto's check:"))
    assert "1 tensor(s)" in line and "100 % of resamples" in line and line.endswith("kept max")


@pytest.mark.parametrize("value", ["yes", 2])
def test_a_bad_auto_check_is_one_line(tmp_path, monkeypatch, value):
    """`auto_check = "yes"` (or 2) in the config: one line naming the key, exit code 2, no cache."""
    from click.testing import CliRunner

    from trtq.calib.cli import main

    model_path = tmp_path / "m.onnx"
    onnx.save(_gain_model(_weights(), GAIN), model_path)
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "0.npy", _outliers(1)[0][None])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "trtq.toml").write_text(f"[tool.trtq]\nauto_check = {value!r}\n".replace("'", '"'))
    res = CliRunner().invoke(main, ["run", str(model_path), "--data", str(data), "--cache", "c.cache"])
    assert res.exit_code == 2, res.output
    assert "auto_check" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "c.cache").exists()


@pytest.mark.parametrize("fallback", ["entropy2", "mse"])
def test_the_document_reuses_what_auto_computed(fallback):
    """amax_by_method takes auto's fallback, mse and minmax amax from its memo: every method's
    values equal a fresh compute_amax on the same histograms."""
    from trtq.calib.run import compute_amax

    model, x = _gain_model(_weights(), GAIN), _outliers()
    result = calibrate(model, [{"x": x}], method="auto", threads=1, params={"auto_fallback": fallback})
    assert {"mse", "minmax", fallback} <= set(result._known)
    for method, amax in result.amax_by_method().items():
        if method != "auto":
            assert amax == compute_amax(result.histograms, method, **result.params), method


def _stage1(model: onnx.ModelProto, x: np.ndarray):
    """auto without the check, the FP32 outputs of the samples, and a recording INT8 builder (the
    one ``calib run`` uses) whose runners remember being closed."""
    import threading

    from trtq.calib.run import _int8_builder
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    batches = [{"x": x[i : i + 1]} for i in range(len(x))]
    stage1 = calibrate(model, batches, method="auto", threads=1, params={"auto_check": 0})
    with OnnxRuntimeRunner(model) as fp32:
        reference = [fp32.run(b) for b in batches]
    inner, calls = _int8_builder(OnnxRuntimeRunner, model, PrecisionTools(), 1), []

    def build(amax, variable=()):
        runner = inner(amax, variable)
        calls.append({"thread": threading.current_thread().name, "variable": list(variable), "closed": False})
        record, close = calls[-1], runner.close
        runner.close = lambda: (record.update(closed=True), close())
        return runner

    return stage1, batches, reference, build, calls


def _check(stage1, batches, reference, build, early=None, amax=None):
    from trtq.calib.auto_check import check_ranges

    amax = dict(stage1.amax if amax is None else amax)
    choices = {t: dict(c) for t, c in stage1.choices.items()}
    max_abs = {"x": stage1.histograms["x"].max_abs}
    return check_ranges(amax, choices, max_abs, ["x"], batches, reference, build, early)


def test_the_early_build_gives_the_check_what_a_late_build_gives():
    """The check's build starts in a thread before auto's choices exist, with the fallback's ranges
    and every tensor that may be flagged taking its scale from an input: the errors, and so the
    decision, are those of a build made after the choices, with auto's ranges baked in."""
    from trtq.calib.auto_check import EarlyBuild

    stage1, batches, reference, build, calls = _stage1(_gain_model(_weights(), GAIN), _outliers())
    fallback = {t: 1.0 for t in stage1.amax}  # any ranges of the same tensors
    _, late = _check(stage1, batches, reference, build)
    _, early = _check(stage1, batches, reference, build, EarlyBuild(build, fallback, ["x"]))
    assert late.kept == early.kept == "max"
    assert early.error_auto == pytest.approx(late.error_auto, rel=1e-6)
    assert early.error_max == pytest.approx(late.error_max, rel=1e-6)
    assert [c["thread"].startswith("trtq-auto-check-build") for c in calls] == [False, True]
    assert all(c["closed"] for c in calls)


def test_an_early_build_that_does_not_fit_is_closed_and_the_check_builds_anew():
    """Early ranges that leave a tensor unquantized (amax 0) build another model: the check makes
    its own; a check with nothing flagged closes the early build unused."""
    from trtq.calib.auto_check import EarlyBuild

    stage1, batches, reference, build, calls = _stage1(_gain_model(_weights(), GAIN), _outliers())
    _, outcome = _check(
        stage1, batches, reference, build, EarlyBuild(build, {**stage1.amax, "x": 0.0}, ["x"])
    )
    assert outcome.kept == "max" and len(calls) == 2 and all(c["closed"] for c in calls)
    assert calls[1]["variable"] == ["x"] and not calls[1]["thread"].startswith("trtq-auto-check-build")
    calls.clear()
    wide = {**stage1.amax, "x": stage1.histograms["x"].max_abs}  # nothing clipped: nothing flagged
    _, outcome = _check(stage1, batches, reference, build, EarlyBuild(build, wide, ["x"]), amax=wide)
    assert outcome.flagged == [] and outcome.error_auto is None
    assert len(calls) == 1 and calls[0]["closed"]


def test_an_early_build_that_fails_fails_the_check():
    from trtq._core.errors import InputError
    from trtq.calib.auto_check import EarlyBuild

    stage1, batches, reference, _, _ = _stage1(_gain_model(_weights(), GAIN), _outliers())

    def broken(amax, variable=()):
        raise InputError("model.onnx: ONNX Runtime cannot load it")

    with pytest.raises(InputError, match="cannot load it"):
        _check(stage1, batches, reference, broken, EarlyBuild(broken, stage1.amax, ["x"]))


def test_the_max_pass_stops_once_it_cannot_win_and_decides_as_the_whole_pass():
    """Without the gain, max|x| is the worse set by far: its pass stops once its squared errors
    exceed auto's whole pass, which is the whole pass's decision (errors are >= 0); the error it
    reports is a lower bound of the whole pass's, and the CLI's line says it stopped."""
    from trtq.calib.auto_check import output_error, reference_energy, relative_l2, scale_input

    stage1, batches, reference, build, _ = _stage1(
        _gain_model(_weights(), np.ones(8, np.float32)), _outliers(12)
    )
    _, outcome = _check(stage1, batches, reference, build)
    assert outcome.kept == "auto" and outcome.confidence is None
    assert (
        1 <= outcome.max_stopped_after < 12
        and outcome.to_dict()["max_stopped_after"] == outcome.max_stopped_after
    )
    max_abs = stage1.histograms["x"].max_abs
    with build(stage1.amax, ["x"]) as runner:
        whole = {
            a: output_error(runner, {scale_input("x"): int8_scale(a)}, batches, reference)
            for a in (stage1.amax["x"], max_abs)
        }
    energy = reference_energy(reference)
    full_max, full_auto = relative_l2(whole[max_abs], energy), relative_l2(whole[stage1.amax["x"]], energy)
    assert full_auto == pytest.approx(outcome.error_auto, rel=1e-6) and full_max > full_auto
    assert outcome.error_auto < outcome.error_max <= full_max
    partial = whole[max_abs][: outcome.max_stopped_after]
    assert partial.sum() > whole[stage1.amax["x"]].sum() >= partial[:-1].sum()


def test_calib_run_says_when_the_max_pass_stopped(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from trtq.calib.cli import main

    model_path, data = tmp_path / "m.onnx", tmp_path / "data"
    onnx.save(_gain_model(_weights(), np.ones(8, np.float32)), model_path)
    data.mkdir()
    for i, sample in enumerate(_outliers(12)):
        np.save(data / f"{i:02d}.npy", sample[None])
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["run", str(model_path), "--data", str(data), "--cache", "c.cache"])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("auto's check:"))
    assert "on 12 samples" in line and "(max|x|, already above after" in line and line.endswith("kept auto")


def test_the_early_build_measures_auto_s_own_ranges_on_a_real_model(real_models):
    """PP-OCR cls on page.png's line crops: auto chooses other thresholds than the fallback's for
    tensors it does not flag, so the early build (fallback ranges baked in) must take every
    measured tensor's scale from an input. The check's error for auto's set equals that of a build
    made after the choices, with auto's ranges baked in and no scale inputs."""
    import ocr_lines

    from trtq.calib.auto_check import output_error, reference_energy, relative_l2
    from trtq.calib.run import _int8_builder
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    model = onnx.load(str(real_models["cls"]))
    batches = ocr_lines.direction_line_variants(shifts=(0,))[:8]
    result = calibrate(model, batches, method="auto", threads=1, tools=PrecisionTools())
    auto_amax = {t: c.get("auto_amax", result.amax[t]) for t, c in result.choices.items()}  # before any swap
    fallback = compute_amax(result.histograms, "mse")  # auto's default fallback
    not_flagged = [t for t in auto_amax if result.histograms[t].max_abs <= CLIP_FACTOR * auto_amax[t]]
    assert result.check["flagged"] >= 1
    assert any(auto_amax[t] != fallback[t] for t in not_flagged)  # the case the early build must get right
    with OnnxRuntimeRunner(model) as fp32:
        reference = [fp32.run(b) for b in batches]
    with _int8_builder(OnnxRuntimeRunner, model, PrecisionTools(), 1)(auto_amax, ()) as late:
        sse = output_error(late, {}, batches, reference)
    assert relative_l2(sse, reference_energy(reference)) == pytest.approx(
        result.check["error_auto"], rel=1e-5
    )
