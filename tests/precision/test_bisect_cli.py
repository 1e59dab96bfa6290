"""`precision bisect` and `precision pin` from the command line: outputs, exit codes, messages."""

# ruff: noqa: F811  (the planted-model fixtures are imported from test_bisect_planted)

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from test_bisect_planted import outlier_scale_model, overflow_output_model  # noqa: F401 (fixtures)

from trtq.calib.cache import CalibrationCache, write_cache
from trtq.precision.cli import main


def _invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _setup(tmp_path, fixture) -> tuple:
    model, batches, amax = fixture
    onnx.save(model, tmp_path / "m.onnx")
    data = tmp_path / "data"
    data.mkdir()
    for i, batch in enumerate(batches):
        np.save(data / f"b{i}.npy", batch["x"])
    write_cache(tmp_path / "c.cache", CalibrationCache.from_amax(amax))
    return tmp_path / "m.onnx", data, tmp_path / "c.cache"


def test_bisect_then_pin_end_to_end(tmp_path, outlier_scale_model):
    model, data, cache = _setup(tmp_path, outlier_scale_model)
    pins = tmp_path / "pins.json"
    result = _invoke(
        "bisect", model, "--data", data, "--batch-size", 16, "--precision", "int8", "--cache", cache,
        "-o", pins, "--json", "-", "--report", tmp_path / "r.html",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    stored = json.loads(pins.read_text())
    assert printed == stored
    assert stored["verdict"] == "found" and [p["node"] for p in stored["pins"]] == ["fc3"]
    assert stored["settings"]["cache"] == str(cache.resolve())
    assert stored["data"]["images_used"] == 64 and stored["settings"]["batch_size"] == 16
    html = (tmp_path / "r.html").read_text()
    assert "fc3" in html and "<html" in html.lower()

    out = tmp_path / "pinned.onnx"
    result = _invoke("pin", model, "--pins", pins, "-o", out, "--json", "-")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["passed"] and summary["metric"] > 0.999 and summary["pinned_nodes"] == 2
    assert summary["metric"] == pytest.approx(stored["final_metric"], abs=1e-4)
    applied = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in applied.graph.node)


def test_bisect_prints_the_trace_and_the_pins(tmp_path, overflow_output_model):
    model, data, _ = _setup(tmp_path, overflow_output_model)
    result = _invoke(
        "bisect", model, "--data", data, "--batch-size", 16, "--precision", "fp16", "-o", tmp_path / "p.json"
    )
    assert result.exit_code == 0, result.output
    assert "baseline" in result.output and "all-pinned" in result.output
    assert "head" in result.output and "found" in result.output


def test_cannot_pass_exits_1_and_still_writes_pins(tmp_path, overflow_output_model):
    model, data, _ = _setup(tmp_path, overflow_output_model)
    pins = tmp_path / "p.json"
    result = _invoke(
        "bisect", model, "--data", data, "--precision", "fp16", "--check", "exit 1", "-o", pins, "-q"
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: even with all 4 layers in FP32 the model fails (check 'exit 1' exits 0: n/a): the problem is not precision"
    ]
    assert json.loads(pins.read_text())["verdict"] == "cannot-pass"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--check", "true", "--metric", "cosine"], "either --check CMD or --metric"),
        (["--strategy", "greedy"], "unknown bisect strategy 'greedy'"),
        (["--cache", "missing.cache"], "no such calibration cache"),
    ],
)
def test_bad_flags_are_one_line_errors_with_exit_2(tmp_path, outlier_scale_model, args, message):
    model, data, _ = _setup(tmp_path, outlier_scale_model)
    result = _invoke("bisect", model, "--data", data, "--precision", "int8", "-o", tmp_path / "p.json", *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "p.json").exists()


def test_missing_model_and_missing_output_are_reported(tmp_path, outlier_scale_model):
    _, data, _ = _setup(tmp_path, outlier_scale_model)
    result = _invoke("bisect", tmp_path / "nope.onnx", "--data", data, "-o", tmp_path / "p.json")
    assert result.exit_code == 2 and "nope.onnx: no such file" in result.output
    result = _invoke("bisect", tmp_path / "m.onnx", "--data", data)
    assert result.exit_code == 2 and "-o pins.json" in result.output


def test_pin_rejects_pins_made_for_another_model(tmp_path, outlier_scale_model):
    model, data, cache = _setup(tmp_path, outlier_scale_model)
    pins = tmp_path / "pins.json"
    pins.write_text(
        json.dumps(
            {"kind": "bisect", "schema": 1, "settings": {"precision": "int8"}, "pins": [{"node": "conv_7"}]}
        )
    )
    result = _invoke(
        "pin", model, "--pins", pins, "--data", data, "--cache", cache, "-o", tmp_path / "o.onnx"
    )
    assert result.exit_code == 2 and "'conv_7'" in result.output and "another model" in result.output
    assert not (tmp_path / "o.onnx").exists()


def test_pin_fails_with_exit_1_when_the_applied_model_misses_the_criterion(tmp_path, outlier_scale_model):
    model, data, cache = _setup(tmp_path, outlier_scale_model)
    pins = tmp_path / "pins.json"
    pins.write_text(
        json.dumps({"kind": "bisect", "schema": 1, "settings": {"precision": "int8"}, "pins": []})
    )
    result = _invoke(
        "pin",
        model,
        "--pins",
        pins,
        "--data",
        data,
        "--batch-size",
        16,
        "--cache",
        cache,
        "-o",
        tmp_path / "o.onnx",
    )
    assert result.exit_code == 1 and "fails cosine >= 0.999" in result.output
    assert (tmp_path / "o.onnx").exists()  # written, then judged


def test_help_shows_examples():
    for command in ("bisect", "pin"):
        result = _invoke(command, "--help")
        assert result.exit_code == 0 and "Examples:" in result.output
    assert "{model}" in _invoke("bisect", "--help").output


def test_pins_made_through_the_python_api_replay_in_precision_pin(tmp_path, outlier_scale_model):
    """run_bisect records its own settings (batch size, INT8 ranges): its document, written with
    write_pins and no CLI in between, is enough for `precision pin` with only --data."""
    from trtq.precision.bisect import run_bisect
    from trtq.precision.pins import write_pins
    from trtq.precision.verify_pins import verify_pins

    model_path, data, _cache = _setup(tmp_path, outlier_scale_model)
    model, batches, amax = outlier_scale_model
    result = run_bisect(model, batches, precision="int8", amax=amax)
    doc = result.to_json()
    assert doc["settings"]["batch_size"] == 16
    assert doc["settings"]["amax"]["r2"] == pytest.approx(amax["r2"])
    pins = tmp_path / "api-pins.json"
    write_pins(pins, doc)

    out = tmp_path / "pinned.onnx"
    replay = _invoke("pin", model_path, "--pins", pins, "--data", data, "-o", out, "--json", "-")
    assert replay.exit_code == 0, replay.output
    summary = json.loads(replay.stdout)
    assert summary["passed"] and summary["metric"] == pytest.approx(doc["final_metric"], abs=1e-4)

    # the library call the command makes gives the same answer
    nodes = [m for p in doc["pins"] for m in p["members"]]
    from trtq.precision.evaluate import metric_criterion

    check = verify_pins(model, nodes, batches, metric_criterion("cosine"), precision="int8", amax=amax)
    assert check.passed and check.applied.metric == pytest.approx(summary["metric"], abs=1e-6)
    assert check.emulated.metric == pytest.approx(summary["emulated_metric"], abs=1e-6)


def test_bisect_without_cache_or_method_calibrates_with_auto(tmp_path, monkeypatch, outlier_scale_model):
    """The default calibration method of bisect (no --cache, --method or config): auto, recorded
    in pins.json so that pin replays it."""
    from trtq.calib.run import calibrate

    model, data, _ = _setup(tmp_path, outlier_scale_model)
    monkeypatch.chdir(tmp_path)  # no trtq.toml here
    pins = tmp_path / "p.json"
    result = _invoke("bisect", model, "--data", data, "--batch-size", 16, "--precision", "int8", "-o", pins)
    assert result.exit_code in (0, 1), result.output
    settings = json.loads(pins.read_text())["settings"]
    assert settings["calib_method"] == "auto"
    batches = [{"x": np.load(p)} for p in sorted(data.glob("*.npy"))]
    expected = calibrate(onnx.load(str(model)), batches, method="auto").amax
    entropy2 = calibrate(onnx.load(str(model)), batches, method="entropy2").amax
    assert settings["amax"] == pytest.approx({k: float(v) for k, v in expected.items()}, rel=1e-5)
    assert settings["amax"] != pytest.approx({k: float(v) for k, v in entropy2.items()}, rel=1e-5)


@pytest.mark.parametrize(("flags", "method"), [([], "minmax"), (["--method", "percentile"], "percentile")])
def test_bisect_honours_the_config_method_and_the_flag_beats_it(
    tmp_path, monkeypatch, outlier_scale_model, flags, method
):
    """[tool.trtq] method is the calibration method of bisect too (it was ignored); --method wins."""
    from trtq.calib.run import calibrate

    model, data, _ = _setup(tmp_path, outlier_scale_model)
    (tmp_path / "trtq.toml").write_text('method = "minmax"\n')
    monkeypatch.chdir(tmp_path)
    pins = tmp_path / "p.json"
    result = _invoke(
        "bisect", model, "--data", data, "--batch-size", 16, "--precision", "int8", "-o", pins, *flags
    )
    assert result.exit_code in (0, 1), result.output
    settings = json.loads(pins.read_text())["settings"]
    assert settings["calib_method"] == method and settings["cache"] is None
    batches = [{"x": np.load(p)} for p in sorted(data.glob("*.npy"))]
    expected = calibrate(onnx.load(str(model)), batches, method=method).amax
    assert settings["amax"] == pytest.approx({k: float(v) for k, v in expected.items()}, rel=1e-5)
