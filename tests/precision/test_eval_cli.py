"""`--eval-data` (held-out evaluation) and task metrics (`--metric top1|mask-iou --binarize T`) in
`precision compare`, `bisect` and `pin`, on a tiny planted model; every reported held-out number
is recomputed here from ONNX Runtime runs of FP32 and of the written (pinned) model."""

# ruff: noqa: F811  (the planted-model fixtures are imported from test_bisect_planted)

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from test_bisect_planted import outlier_scale_model  # noqa: F401 (fixture)

from trtq.calib.cache import CalibrationCache, write_cache
from trtq.precision.cli import main


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _run(model, batches) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model),
        options,
        providers=["CPUExecutionProvider"],
    )
    return [session.run(None, b)[0] for b in batches]


def _top1(cands, refs) -> float:
    agree = sum(int((np.argmax(a, -1) == np.argmax(r, -1)).sum()) for a, r in zip(cands, refs, strict=True))
    return agree / sum(r.shape[0] for r in refs)


def _iou(cands, refs, t) -> float:
    a = np.concatenate([c.ravel() for c in cands]) > t
    b = np.concatenate([r.ravel() for r in refs]) > t
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture
def setup(tmp_path, outlier_scale_model):
    model, batches, amax = outlier_scale_model
    onnx.save(model, tmp_path / "m.onnx")
    for folder, data in (("data", batches), ("held", _held_out(len(batches)))):
        (tmp_path / folder).mkdir()
        for i, batch in enumerate(data):
            np.save(tmp_path / folder / f"b{i}.npy", batch["x"])
    write_cache(tmp_path / "c.cache", CalibrationCache.from_amax(amax))
    return tmp_path, model, _held_out(len(batches))


def _held_out(count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(99)  # other samples than the search data's
    return [{"x": rng.normal(size=(16, 16)).astype(np.float32)} for _ in range(count)]


def test_bisect_top1_with_held_out_data_then_pin_replays_it(setup):
    tmp, model, held = setup
    pins = tmp / "pins.json"
    res = _invoke(
        "bisect", tmp / "m.onnx", "--data", tmp / "data", "--eval-data", tmp / "held", "--batch-size", 16,
        "--precision", "int8", "--cache", tmp / "c.cache", "--metric", "top1", "--threshold", 0.9,
        "-o", pins, "--report", tmp / "b.html",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "held-out" in res.output and "without pins" in res.output
    doc = json.loads(pins.read_text())
    assert doc["verdict"] == "found" and [p["node"] for p in doc["pins"]] == ["fc3"]
    assert doc["settings"]["metric"] == "top1" and doc["settings"]["metric_params"] == {}
    assert doc["settings"]["eval_data"] == str(tmp / "held")
    held_out = doc["held_out"]
    assert held_out["data"]["images_used"] == 64 and held_out["data"]["path"] == str(tmp / "held")
    assert held_out["passed"] and not held_out["baseline_passed"]

    out = tmp / "pinned.onnx"
    res = _invoke("pin", tmp / "m.onnx", "--pins", pins, "-o", out, "--json", "-")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["criterion"] == "top1 >= 0.9 on every output"
    assert summary["held_out"]["data"]["path"] == str(tmp / "held")  # replayed from pins.json
    fp32 = _run(model, held)
    expected = _top1(_run(out, held), fp32)  # independent: argmax of ORT runs, counted here
    assert summary["held_out"]["metric"] == pytest.approx(expected, abs=1e-12)
    assert held_out["metric"] == pytest.approx(expected, abs=1e-12)  # the emulation is that Q/DQ model
    assert summary["held_out"]["outputs"]["y"]["top1"] == pytest.approx(expected, abs=1e-12)
    assert held_out["baseline_metric"] < 0.9

    html = (tmp / "b.html").read_text()
    assert "held-out" in html and f"{held_out['metric']:.5g}" in html


def test_bisect_mask_iou_held_out_number_is_the_independent_iou(setup):
    tmp, model, held = setup
    pins = tmp / "pins.json"
    res = _invoke(
        "bisect", tmp / "m.onnx", "--data", tmp / "data", "--eval-data", tmp / "held", "--batch-size", 16,
        "--precision", "int8", "--cache", tmp / "c.cache", "--metric", "mask-iou", "--binarize", 0.2,
        "--threshold", 0.9, "-o", pins, "-q",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(pins.read_text())
    assert doc["settings"]["metric_params"] == {"binarize": 0.2}
    out = tmp / "pinned.onnx"
    res = _invoke("pin", tmp / "m.onnx", "--pins", pins, "-o", out, "--json", "-")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert "(binarize 0.2)" in summary["criterion"]
    expected = _iou(_run(out, held), _run(model, held), 0.2)
    assert doc["held_out"]["metric"] == pytest.approx(expected, abs=1e-12)
    assert summary["held_out"]["metric"] == pytest.approx(expected, abs=1e-12)
    # pin's own result on --data is the IoU on the search data
    data = [{"x": np.load(tmp / "data" / f"b{i}.npy")} for i in range(4)]
    assert summary["metric"] == pytest.approx(_iou(_run(out, data), _run(model, data), 0.2), abs=1e-12)


def test_pin_fails_with_exit_1_when_the_held_out_data_fails(setup):
    tmp, _, _ = setup
    pins = tmp / "pins.json"
    res = _invoke(
        "bisect", tmp / "m.onnx", "--data", tmp / "data", "--batch-size", 16, "--precision", "int8",
        "--cache", tmp / "c.cache", "--metric", "top1", "--threshold", 0.9, "-o", pins, "-q",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "held_out" not in json.loads(pins.read_text())
    # held-out data far outside the calibrated range: the pinned INT8 model saturates there
    far = tmp / "far"
    far.mkdir()
    rng = np.random.default_rng(7)
    np.save(far / "b0.npy", (rng.normal(size=(16, 16)) * 40).astype(np.float32))
    res = _invoke(
        "pin", tmp / "m.onnx", "--pins", pins, "--eval-data", far, "--threshold", 0.999, "-o", tmp / "o.onnx"
    )
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1, res.output
    assert "on the held-out data" in lines[-1]


def test_compare_with_a_task_metric_and_held_out_data(setup):
    tmp, model, held = setup
    res = _invoke(
        "compare", tmp / "m.onnx", "--data", tmp / "data", "--eval-data", tmp / "held", "--batch-size", 16,
        "--precision", "int8", "--cache", tmp / "c.cache", "--metric", "top1",
        "--json", tmp / "c.json", "--report", tmp / "c.html",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "held-out data" in res.output and "top1" in res.output
    doc = json.loads((tmp / "c.json").read_text())
    assert doc["task_metric"] == {"name": "top1", "key": "top1", "params": {}}
    assert "top1" in doc["runs"][0]["outputs"][0]
    assert all("top1" not in layer for layer in doc["runs"][0]["layers"] if layer["tensor"] != "y")
    held_doc = doc["held_out"]
    assert held_doc["data"]["path"] == str(tmp / "held") and held_doc["data"]["images_used"] == 64
    # independent: the INT8 Q/DQ model with nothing pinned, run by ORT, against FP32 on held-out data
    qdq = tmp / "qdq.onnx"
    assert _invoke("export", tmp / "m.onnx", "--int8", "--cache", tmp / "c.cache", "-o", qdq).exit_code == 0
    expected = _top1(_run(qdq, held), _run(model, held))
    assert held_doc["runs"][0]["outputs"][0]["top1"] == pytest.approx(expected, abs=1e-12)
    assert held_doc["runs"][0]["outputs"][0]["top1"] != doc["runs"][0]["outputs"][0]["top1"]
    html = (tmp / "c.html").read_text()
    assert "held-out" in html.lower() and "top1" in html


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metric", "cosine", "--binarize", "0.3"], "--binarize (a parameter of mask-iou) does not apply"),
        (["--metric", "mask-iou"], "metric 'mask-iou' needs --binarize T"),
        (["--metric", "iou"], "unknown metric 'iou'; choose one of: cosine"),
        (["--check", "true", "--eval-data", "."], "--eval-data needs a metric criterion"),
    ],
)
def test_bad_metric_flags_are_one_line_errors(setup, args, message):
    tmp, _, _ = setup
    res = _invoke(
        "bisect",
        tmp / "m.onnx",
        "--data",
        tmp / "data",
        "--cache",
        tmp / "c.cache",
        "-o",
        tmp / "p.json",
        *args,
    )
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and message in lines[0], res.output
    if "--check" not in args:
        res = _invoke("compare", tmp / "m.onnx", "--data", tmp / "data", "--cache", tmp / "c.cache", *args)
        lines = res.output.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and message in lines[0], res.output
