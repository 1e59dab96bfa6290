"""Bisect on real pretrained models (PP-OCRv4 rec/det, PP-OCR cls, PP-LCNet) with real images.

The rec test is the user-visible one: in emulated INT8 the model reads garbage from a page of
printed text; bisect, judged by a check command that compares the decoded text with FP32's,
must find pins after which the deployed Q/DQ model reads the text exactly as FP32 does.
"""

from __future__ import annotations

import pytest
from ocr_lines import page_batches, read_text, rec_chars, write_text_check

from trtq._core.onnx_model import load_onnx
from trtq.calib.run import calibrate
from trtq.datasets import PRESETS, PreprocessSpec, open_dataset, resolve_input_specs
from trtq.precision.bisect import run_bisect
from trtq.precision.builds import ModelBuild
from trtq.precision.evaluate import CheckCommand, Evaluator, metric_criterion
from trtq.precision.pins import apply_pins
from trtq.runtime.build import BuildSpec
from trtq.runtime.onnxruntime import OnnxRuntimeRunner

pytestmark = pytest.mark.slow


def test_rec_int8_text_restored_by_bisect_with_a_text_check(real_models, tmp_path):
    model = load_onnx(real_models["rec"])
    chars = rec_chars(model)
    batches = page_batches(lines=3)
    texts = read_text(model, batches, chars)
    assert texts[0] == "Region-based segmentation"  # the FP32 model reads the page
    amax = calibrate(model, batches, method="entropy2").amax
    broken = read_text(
        ModelBuild("onnxruntime", model, BuildSpec("int8", amax=amax))(frozenset()), batches, chars
    )
    assert broken != texts  # INT8 as TensorRT would run it loses the text

    check = CheckCommand(write_text_check(tmp_path, batches, chars, texts))
    result = run_bisect(model, batches, precision="int8", criterion=check, amax=amax, threads=1)

    assert result.verdict == "found"
    k, n = len(result.pins), result.layers
    assert 0 < k < n // 4
    nodes = [m for layer in result.pins for m in layer.members]
    assert (
        read_text(
            ModelBuild("onnxruntime", model, BuildSpec("int8", amax=amax))(frozenset(nodes)), batches, chars
        )
        == texts
    )
    # The deployable Q/DQ model with those layers in FP32 reads the same text as FP32.
    assert read_text(apply_pins(model, nodes, precision="int8", amax=amax), batches, chars) == texts


def _image_batches(path, image_dir, shape, preset, limit=4):
    model = load_onnx(path)
    with OnnxRuntimeRunner(model) as probe:
        specs = resolve_input_specs(probe.inputs(), {"x": shape}, 1)
    dataset = open_dataset(image_dir, specs, PreprocessSpec(**PRESETS[preset].fields), limit=limit)
    return model, list(dataset.batches(1))


@pytest.mark.parametrize(
    ("key", "shape", "preset", "threshold"),
    [
        ("cls", (1, 3, 48, 192), "paddleocr-rec", 0.999),
        ("lcnet", (1, 3, 224, 224), "imagenet", 0.999),
        ("det", (1, 3, 320, 320), "paddleocr", 0.99),
    ],
)
def test_bisect_reaches_the_cosine_criterion_on_real_models(
    real_models, image_dir, key, shape, preset, threshold
):
    model, batches = _image_batches(real_models[key], image_dir, shape, preset)
    amax = calibrate(model, batches, method="entropy2").amax
    criterion = metric_criterion("cosine", threshold)
    result = run_bisect(
        model, batches, precision="int8", criterion=criterion, amax=amax, max_evals=200, threads=1
    )
    assert result.verdict == "found"
    assert result.baseline_metric < threshold <= result.final_metric
    assert len(result.pins) < result.layers
    # Re-evaluated from scratch, the reported set passes and nothing pinned fails.
    evaluate = Evaluator(
        ModelBuild("onnxruntime", model, BuildSpec("int8", amax=amax)), batches, criterion, model=model
    )
    nodes = frozenset(m for layer in result.pins for m in layer.members)
    assert evaluate(nodes).passed and not evaluate(frozenset()).passed


def test_early_stop_gives_the_same_answers_on_a_real_model(real_models, image_dir):
    """An evaluation that stops once no rest of the data can make it pass answers like a full
    one, runs fewer batches, and reports a metric no worse than the one the full run measures."""
    from trtq.precision.bisect import model_layers
    from trtq.precision.emulate import folded

    model, batches = _image_batches(real_models["lcnet"], image_dir, (1, 3, 224, 224), "imagenet", limit=8)
    amax = calibrate(model, batches, method="entropy2").amax
    layers = [layer.node for layer in model_layers(folded(model))]
    criterion = metric_criterion("cosine", 0.995)
    build = ModelBuild("onnxruntime", model, BuildSpec("int8", amax=amax))
    full = Evaluator(build, batches, criterion, model=model, early_stop=False)
    early = Evaluator(build, batches, criterion, reference=full.reference, early_stop=True)
    stopped = 0
    for pins in (frozenset(), frozenset(layers[:5]), frozenset(layers[-5:]), frozenset(layers)):
        a, b = full(pins), early(pins)
        assert a.passed == b.passed
        assert not a.stopped_early
        if b.stopped_early:
            stopped += 1
            assert not b.passed and b.metric >= a.metric  # the best still possible, and failing
            assert b.metric < 0.995
        else:
            assert b.metric == a.metric
    assert stopped >= 1
