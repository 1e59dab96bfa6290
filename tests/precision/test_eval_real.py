"""Held-out evaluation and task metrics on real pretrained models with real images.

PP-OCRv4 det (a text probability map): ``precision bisect --metric mask-iou --binarize 0.3``
searches on 6 images and reports the answer on 6 other images; the reported held-out mask IoU is
recomputed here from ONNX Runtime runs of the FP32 model and of the pinned Q/DQ model that
``precision pin`` writes. PP-LCNet (4 classes) and PP-OCRv4 rec ([N, T, C] sequences) check
``top1`` against argmax counted here.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from trtq._core.onnx_model import load_onnx
from trtq.calib.run import calibrate
from trtq.datasets import PRESETS, PreprocessSpec, open_dataset, resolve_input_specs
from trtq.precision.builds import ModelBuild
from trtq.precision.cli import main
from trtq.precision.evaluate import Evaluator, metric_criterion
from trtq.runtime.build import BuildSpec
from trtq.runtime.onnxruntime import OnnxRuntimeRunner

pytestmark = pytest.mark.slow


# PP-OCRv4 det at 320x320 finds text (FP32 map > 0.3) on page.png and coffee.png in the search
# set, and on horse.png (its silhouette) in the held-out set.
SEARCH = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "page.png", "text.png"]
HELD = ["camera.png", "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg", "coins.png", "horse.png"]


def _split(image_dir, tmp_path):
    """The 12 sample images as two folders of 6: search data and held-out data."""
    folders = []
    for label, part in (("search", SEARCH), ("held", HELD)):
        folder = tmp_path / label
        folder.mkdir()
        for name in part:
            shutil.copy(image_dir / name, folder / name)
        folders.append(folder)
    return folders


def _batches(model_path, folder, shape, preset):
    model = load_onnx(model_path)
    with OnnxRuntimeRunner(model) as probe:
        specs = resolve_input_specs(probe.inputs(), {"x": shape}, 1)
    dataset = open_dataset(folder, specs, PreprocessSpec(**PRESETS[preset].fields))
    return list(dataset.batches(1))


def _ort(path, batches) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [session.run(None, b)[0] for b in batches]


def test_det_bisect_mask_iou_held_out_is_the_iou_of_the_pinned_model(real_models, image_dir, tmp_path):
    search, held = _split(image_dir, tmp_path)
    det = real_models["det"]
    pins = tmp_path / "pins.json"
    common = ["--shape", "x:1x3x320x320", "--preset", "paddleocr"]
    res = CliRunner().invoke(
        main,
        ["bisect", str(det), "--data", str(search), "--eval-data", str(held), *common, "--precision", "int8",
         "--metric", "mask-iou", "--binarize", "0.3", "--threshold", "0.9", "--threads", "1",
         "-o", str(pins), "--report", str(tmp_path / "b.html")],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(pins.read_text())
    assert doc["verdict"] in ("found", "already-passes")
    assert doc["settings"]["metric"] == "mask-iou" and doc["settings"]["metric_params"] == {"binarize": 0.3}
    held_out = doc["held_out"]
    assert held_out["data"]["images_used"] == 6 and held_out["data"]["path"] == str(held)

    pinned = tmp_path / "pinned.onnx"
    res = CliRunner().invoke(
        main, ["pin", str(det), "--pins", str(pins), "-o", str(pinned), "--json", str(tmp_path / "pin.json")],
        catch_exceptions=False,
    )  # fmt: skip
    summary = json.loads((tmp_path / "pin.json").read_text())
    assert res.exit_code == (0 if summary["passed"] and summary["held_out"]["passed"] else 1), res.output

    held_batches = _batches(det, held, (1, 3, 320, 320), "paddleocr")
    fp32 = _ort(det, held_batches)
    qdq = _ort(pinned, held_batches)
    a = np.concatenate([q.ravel() for q in qdq]) > 0.3
    b = np.concatenate([f.ravel() for f in fp32]) > 0.3
    iou = float((a & b).sum() / (a | b).sum())
    assert 0.0 < iou < 1.0 and b.sum() > 1000  # FP32 finds text on the held-out photos
    assert summary["held_out"]["metric"] == pytest.approx(iou, abs=1e-9)  # the written model
    assert held_out["metric"] == pytest.approx(iou, abs=2e-3)  # the emulation bisect judged with
    assert held_out["passed"] == (held_out["metric"] >= 0.9)
    assert summary["held_out"]["passed"] == (iou >= 0.9 and summary["held_out"]["emulated_passed"])
    if not summary["held_out"]["passed"]:  # 6 images overfit: pin says so, with exit code 1
        assert res.exit_code == 1 and "on the held-out data" in res.output.strip().splitlines()[-1]
    assert "held-out data" in (tmp_path / "b.html").read_text()


@pytest.mark.parametrize(
    ("key", "shape", "preset"),
    [
        ("lcnet", (1, 3, 224, 224), "imagenet"),
        ("rec", (1, 3, 48, 320), "paddleocr-rec"),
        ("cls", (1, 3, 48, 192), "paddleocr-rec"),
    ],
)
def test_top1_on_real_classifiers_and_sequences_matches_argmax(
    real_models, image_dir, tmp_path, key, shape, preset
):
    search, held = _split(image_dir, tmp_path)
    model = load_onnx(real_models[key])
    batches = _batches(real_models[key], search, shape, preset)
    held_batches = _batches(real_models[key], held, shape, preset)
    amax = calibrate(model, batches, method="entropy2").amax  # ranges from the search data only
    build = ModelBuild("onnxruntime", model, BuildSpec("int8", amax=amax))
    result = Evaluator(build, held_batches, metric_criterion("top1", 0.5), model=model, early_stop=False)(
        frozenset()
    )
    candidate = build(frozenset())
    try:
        int8 = [candidate.run(b) for b in held_batches]
    finally:
        candidate.close()
    fp32 = _ort(real_models[key], held_batches)
    agree = positions = 0
    for got, ref in zip(int8, fp32, strict=True):
        out = next(iter(got.values()))
        agree += int((np.argmax(out, -1) == np.argmax(ref, -1)).sum())
        positions += ref.size // ref.shape[-1]
    assert positions == 6 * (40 if key == "rec" else 1)  # rec: one position per time step
    (name,) = result.outputs
    assert result.outputs[name]["top1"] == pytest.approx(agree / positions, abs=0)
