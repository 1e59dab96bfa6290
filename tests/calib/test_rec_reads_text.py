"""The INT8 text recogniser must still read text: judged on real text lines, not on photos.

PP-OCRv4 rec calibrated on photos (what the benchmarks' splits give it) and judged on the photos
looks best with entropy2 ranges, yet that model reads nothing from real text lines: FP32's output
on a photo is mostly blanks, and so is a model whose activations entropy2 clipped away.
"""

from __future__ import annotations

import numpy as np
import pytest
from ocr_lines import char_error_rate, edit_distance, page_line_variants, read_text, rec_chars, rec_photos

from trtq._core.onnx_model import load_onnx
from trtq.calib.run import calibrate
from trtq.precision.export import export_qdq


def test_edit_distance_and_character_error_rate():
    assert edit_distance("kitten", "sitting") == 3  # two substitutions and one insertion
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0
    assert char_error_rate(["abd", "xy"], ["abc", "xyz"]) == pytest.approx(2 / 6)


def test_default_ranges_from_photos_read_the_page_entropy2_ranges_do_not(real_models):
    model = load_onnx(real_models["rec"])
    chars = rec_chars(model)
    photos = rec_photos()
    lines = page_line_variants(shifts=(0,))
    want = read_text(model, lines, chars)
    assert want[0] == "Region-based segmentation"  # FP32 reads the page

    default = export_qdq(model, calibrate(model, photos).amax)  # method auto
    entropy2 = export_qdq(model, calibrate(model, photos, method="entropy2").amax)

    assert char_error_rate(read_text(default, lines, chars), want) <= 0.05
    assert char_error_rate(read_text(entropy2, lines, chars), want) >= 0.5


def test_calibrated_on_drawn_lines_auto_and_its_check_read_the_page(real_models):
    """Calibrated on text lines drawn with OpenCV (the model's own kind of input) as `calib run`
    calibrates (auto, its model-output check on): the INT8 model reads page.png's lines nearly
    as FP32 does; entropy2's reads nothing. The drawn lines are padded to width 320 as
    PaddleOCR's batches are."""
    from documents import drawn_line
    from ocr_lines import pad_width, text_line

    from trtq.precision.builds import PrecisionTools

    model = load_onnx(real_models["rec"])
    chars = rec_chars(model)
    rng = np.random.default_rng(1000)
    lines_drawn = [drawn_line(rng) for _ in range(16)]
    cal = [{"x": pad_width(text_line(g, (0, g.shape[0], 0, g.shape[1])))} for g in lines_drawn]
    lines = page_line_variants()
    want = read_text(model, lines, chars)

    result = calibrate(model, cal, tools=PrecisionTools())
    assert result.check is not None and result.check["samples"] == 16
    assert char_error_rate(read_text(export_qdq(model, result.amax), lines, chars), want) <= 0.02
    entropy2 = export_qdq(model, calibrate(model, cal, method="entropy2").amax)
    assert char_error_rate(read_text(entropy2, lines, chars), want) >= 0.5
