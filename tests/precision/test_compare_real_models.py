"""The emulation and comparison on the real PP-OCRv4 det/rec, PP-OCR cls and PP-LCNet models with
scikit-image photographs and document images (DESIGN.md §6)."""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import onnx
import pytest

from trtq._core.onnx_model import float_tensors
from trtq._core.tensors import TensorInfo
from trtq._core.transformer_patterns import find_attention, find_layernorms
from trtq.datasets.folder import open_dataset
from trtq.datasets.preprocess import PRESETS, PreprocessSpec
from trtq.precision.compare import compare_runs
from trtq.precision.emulate import EmulationConfig, emulate, folded
from trtq.precision.fp16_range import fp16_range_check

# model key -> (input shape, preprocessing preset)
SETUP = {
    "det": ((1, 3, 160, 160), "paddleocr"),
    "rec": ((1, 3, 48, 320), "paddleocr-rec"),
    "cls": ((1, 3, 48, 192), "paddleocr-rec"),
    "lcnet": ((1, 3, 224, 224), "imagenet"),
}


def _batches(image_dir: Path, key: str, limit: int = 4) -> list[dict[str, np.ndarray]]:
    shape, preset = SETUP[key]
    spec = PreprocessSpec(**PRESETS[preset].fields)
    ds = open_dataset(image_dir, [TensorInfo("x", shape, np.float32)], spec, limit=limit, workers=0)
    return list(ds.batches(1))


def _minmax_amax(model: onnx.ModelProto, batches) -> dict[str, float]:
    from trtq.calib.run import calibrate

    return dict(calibrate(model, batches, method="minmax", threads=1).amax)


def test_det_batchnorm_variance_is_no_fp16_overflow(real_models):
    model = onnx.load(real_models["det"])
    naive = fp16_range_check(model, fold=False)
    # a naive FP16 cast sees the BatchNorm running_var (up to 9.8e7) ...
    assert naive and naive[0].kind == "initializer" and naive[0].max_abs > 9e7
    assert all(i.node.startswith("p2o.BatchNormalization") for i in naive)
    # ... that TensorRT folds into the Conv in FP32 before choosing FP16: nothing is out of range
    assert fp16_range_check(model) == []


@pytest.mark.parametrize("key", ["det", "rec", "cls", "lcnet"])  # 3-12 s each
def test_graphwise_and_layerwise_on_real_models(real_models, image_dir, key):
    model = onnx.load(real_models[key])
    batches = _batches(image_dir, key, limit=3)
    amax = _minmax_amax(model, batches)
    configs = [EmulationConfig("fp16"), EmulationConfig("int8")]
    runs, observed = compare_runs(
        model, batches, configs, amax=amax, modes=("graphwise", "layerwise"), threads=1
    )
    base = folded(model)
    # tensors inside a LayerNorm or attention pattern (rec's SVTR blocks) are never materialised
    patterns = find_layernorms(base.graph) + find_attention(base.graph)
    hidden = {o for p in patterns for i in p.nodes for o in base.graph.node[i].output if o != p.output}
    assert (key == "rec") == bool(hidden)
    sites = [s.name for s in float_tensors(base) if s.producer is not None and s.name not in hidden]
    for run in runs:
        if run.mode == "graphwise":
            assert run.outputs, f"{key} {run.precision}: no output metrics"
            # every other float activation of the folded model is matched by name
            assert [r.tensor for r in run.layers] == sites
        else:
            ranked = run.scores()
            assert len(ranked) >= 5
            errors = [s.error for s in ranked]
            assert errors == sorted(errors, reverse=True)
            assert all(s.nodes and s.node in s.nodes for s in ranked)
        for rec in run.layers:
            assert rec.metrics["nonfinite"] == 0.0, f"{key}: {rec.tensor} non-finite in {run.precision}"
    fp16_out = runs[0].outputs[0].metrics
    int8_out = runs[2].outputs[0].metrics
    # FP16 is close to FP32 on these models; INT8 (per-tensor minmax ranges) is further away
    assert fp16_out["cosine"] > 0.99 or fp16_out["max_abs"] < 1e-3
    assert int8_out["rel_l2"] > fp16_out["rel_l2"]
    assert fp16_range_check(model, amax, observed) == []


# Lines of skimage's page.png (rows), each cropped and resized to height 48 for PP-OCRv4 rec.
PAGE_LINES = [(9, 38), (46, 66), (63, 86), (82, 101), (100, 119), (118, 137), (170, 191)]


def _rec_crops(image_dir: Path) -> list[dict[str, np.ndarray]]:
    import cv2

    page = cv2.imread(str(image_dir / "page.png"))
    out = []
    for top, bottom in PAGE_LINES:
        crop = page[top:bottom]
        width = int(round(48 * crop.shape[1] / crop.shape[0]))
        x = cv2.resize(crop, (width, 48)).astype(np.float32) / 255.0
        out.append({"x": ((x - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32)})
    return out


def _ctc_text(model: onnx.ModelProto, probs: np.ndarray) -> str:
    chars = next(p.value for p in model.metadata_props if p.key == "character").split("\n")
    table = ["", *chars, " "]  # index 0 is the CTC blank; the last class is the space
    idx = probs[0].argmax(-1)
    keep = [i for k, i in enumerate(idx) if i != 0 and (k == 0 or i != idx[k - 1])]
    return "".join(table[i] for i in keep)


@pytest.mark.slow
def test_rec_int8_worst_layers_pinned_restore_the_text(real_models, image_dir):
    from trtq.calib.run import calibrate
    from trtq.precision.compare import layerwise_sensitivity
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    model = folded(onnx.load(real_models["rec"]))
    crops = _rec_crops(image_dir)
    amax = calibrate(model, crops, method="entropy2", threads=1).amax
    out_name = model.graph.output[0].name

    def texts(m: onnx.ModelProto) -> list[str]:
        with OnnxRuntimeRunner(m, optimize=False, threads=1) as b:
            return [_ctc_text(model, b.run(c)[out_name]) for c in crops]

    def match(got: list[str]) -> float:
        return float(
            np.mean(
                [difflib.SequenceMatcher(None, a, b).ratio() for a, b in zip(got, reference, strict=True)]
            )
        )

    reference = texts(model)
    assert reference[1] == "Let us first determine markers of the coins and the"
    config = EmulationConfig("int8")
    assert match(texts(emulate(model, config, amax))) < 0.2  # INT8 ruins the text
    ranked = layerwise_sensitivity(model, crops, config, amax=amax, threads=1)
    pins = frozenset(n for s in ranked[:5] for n in s.nodes)
    assert match(texts(emulate(model, EmulationConfig("int8", pins=pins), amax))) > 0.9
