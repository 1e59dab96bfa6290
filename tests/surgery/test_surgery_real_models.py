"""Acceptance: the real PP-OCR / PP-LCNet models pass through ``check`` and ``fix`` unchanged in output."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from trtq.surgery.cli import main

SHAPES = {"det": (1, 3, 160, 160), "rec": (1, 3, 48, 160), "cls": (1, 3, 48, 192), "lcnet": (1, 3, 224, 224)}


def _images(image_dir, shape) -> list[np.ndarray]:
    """Real photographs resized to the model's input, scaled to [-1, 1] as PaddleOCR does."""
    out = []
    for path in sorted(image_dir.iterdir())[:3]:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        img = cv2.resize(img, (shape[3], shape[2])).astype(np.float32) / 127.5 - 1.0
        out.append(img.transpose(2, 0, 1)[None])
    return out


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


@pytest.mark.parametrize("key", ["det", "rec", "cls", "lcnet"])
def test_real_model_check_and_fix(key, real_models, image_dir, tmp_path):
    model = real_models[key]
    runner = CliRunner()
    checked = runner.invoke(main, ["check", str(model), "--json", str(tmp_path / "check.json")])
    assert checked.exit_code == 0, checked.output
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["errors"] == 0 and (report["kind"], report["schema"]) == ("surgery-check", 1)

    out = tmp_path / f"{key}.fixed.onnx"
    shape = "x:" + "x".join(map(str, SHAPES[key]))
    fixed = runner.invoke(
        main, ["fix", str(model), "-o", str(out), "--shape", shape, "--json", str(tmp_path / "fix.json")]
    )
    assert fixed.exit_code == 0, fixed.output
    summary = json.loads((tmp_path / "fix.json").read_text())
    assert summary["written"] and out.exists()
    if summary["changes"]:
        assert summary["verify"]["ok"]

    for x in _images(image_dir, SHAPES[key]):
        for a, b in zip(_run(model, x), _run(out, x), strict=True):
            scale = float(np.max(np.abs(a))) or 1.0
            assert a.shape == b.shape
            assert float(np.max(np.abs(a - b))) / scale <= 1e-5

    again = runner.invoke(main, ["check", str(out), "--json", "-"])
    assert again.exit_code == 0
    assert json.loads(again.stdout)["errors"] == 0


def test_rec_model_pow_squares_are_rewritten(real_models, tmp_path):
    """The SVTR rec model squares with Pow(x, 2) in its LayerNorms; fix turns them into Mul."""
    runner = CliRunner()
    out = tmp_path / "rec.onnx"
    res = runner.invoke(
        main, ["fix", str(real_models["rec"]), "-o", str(out), "--shape", "x:1x3x48x160", "--json", "-"]
    )
    assert res.exit_code == 0, res.output
    changes = json.loads(res.stdout)["changes"]
    assert changes["pow_square_to_mul"]["count"] == 5


def test_folding_paddle_constant_nodes_keeps_outputs(real_models, image_dir):
    """PaddleOCR keeps weights in Constant nodes: folding turns all 342 of det's into
    initializers, and the model still computes the same maps on real images."""
    import onnx

    from trtq._core.onnx_fold import fold_constants
    from trtq.surgery.fix import export_model, import_graph, validate

    original = onnx.load(str(real_models["det"]))
    assert sum(n.op_type == "Constant" for n in original.graph.node) == 342
    folded = export_model(fold_constants(import_graph(original)), original)
    validate(folded)
    assert not [n for n in folded.graph.node if n.op_type == "Constant"]
    assert len(folded.graph.initializer) == 342
    ref = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
    new = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"])
    for x in _images(image_dir, SHAPES["det"]):
        (a,), (b,) = ref.run(None, {"x": x}), new.run(None, {"x": x})
        assert np.array_equal(a, b)
