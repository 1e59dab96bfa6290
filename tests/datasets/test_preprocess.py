"""PreprocessSpec validation, presets, and the numeric result of each step of the transform."""

from __future__ import annotations

import numpy as np
import pytest

from trtq._core.errors import InputError
from trtq.datasets import PRESETS, PreprocessSpec
from trtq.datasets.preprocess import to_sample

RAW1 = PreprocessSpec(scale=1.0)  # pixel units out, to check resizing exactly


def test_defaults_are_the_raw_preset():
    assert PreprocessSpec() == PreprocessSpec.preset("raw")
    assert PreprocessSpec().scale == pytest.approx(1 / 255)


def test_presets_documented_values():
    imagenet = PreprocessSpec.preset("imagenet")
    assert (imagenet.color, imagenet.mean, imagenet.std) == (
        "RGB",
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
    )
    paddle = PreprocessSpec.preset("paddleocr")
    assert (paddle.color, paddle.mean, paddle.std, paddle.resize) == (
        "BGR",
        imagenet.mean,
        imagenet.std,
        "stretch",
    )
    assert PreprocessSpec.preset("yolo", pad_value=0).pad_value == 0.0  # overrides win
    assert {"raw", "imagenet", "paddleocr"} <= set(PRESETS)
    assert all(p.doc for p in PRESETS.values())
    assert all("layout" not in p.fields and "dtype" not in p.fields for p in PRESETS.values())


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"resize": "squash"}, ["squash", "stretch", "letterbox", "center-crop"]),
        ({"color": "RGBA"}, ["RGBA", "RGB or BGR"]),
        ({"layout": "CHW"}, ["CHW", "NCHW"]),
        ({"std": (1, 0, 1)}, ["std", "0"]),
        ({"pad_value": 300}, ["pad_value", "0..255"]),
        ({"crop_fraction": 0}, ["crop_fraction"]),
        ({"scale": "abc"}, ["scale", "abc"]),
        ({"dtype": "floaty"}, ["floaty"]),
    ],
)
def test_bad_settings_name_the_setting(kwargs, words):
    with pytest.raises(InputError) as err:
        PreprocessSpec(**kwargs)
    assert all(w in str(err.value) for w in words)


def test_unknown_preset_lists_choices():
    with pytest.raises(InputError, match="imagenet"):
        PreprocessSpec.preset("nope")


def test_normalisation_of_values():
    spec = PreprocessSpec(scale="1/255", mean=[0.5, 0.5, 0.5], color="bgr", layout="nhwc", dtype="float16")
    assert spec.scale == pytest.approx(1 / 255) and spec.mean == (0.5, 0.5, 0.5)
    assert (spec.color, spec.layout, spec.dtype) == ("BGR", "NHWC", "float16")
    with pytest.raises(InputError, match="3 channel"):
        PreprocessSpec(mean=(1, 2)).check_channels(3, "input 'x'")
    PreprocessSpec(mean=(1,)).check_channels(3, "input 'x'")  # one value broadcasts


def test_stretch_keeps_halves():
    img = np.zeros((10, 20), np.uint8)
    img[:, 10:] = 200
    out = to_sample(img, 20, 20, "NCHW", np.dtype(np.float32), RAW1)[0]
    assert out.shape == (20, 20)
    assert np.all(out[:, :9] == 0) and np.all(out[:, 11:] == 200)


def test_letterbox_pads_and_keeps_aspect_ratio():
    img = np.full((100, 200, 3), 255, np.uint8)  # 1:2 aspect
    spec = PreprocessSpec(resize="letterbox", pad_value=114, scale=1.0)
    out = to_sample(img, 64, 64, "NHWC", np.dtype(np.float32), spec)
    assert out.shape == (64, 64, 3)
    content_rows = np.where((out != 114).any(axis=(1, 2)))[0]
    content_cols = np.where((out != 114).any(axis=(0, 2)))[0]
    assert (content_rows[0], content_rows[-1]) == (16, 47)  # 32 rows, centred
    assert (content_cols[0], content_cols[-1]) == (0, 63)  # 64 cols: ratio 2 kept
    assert np.all(out[:16] == 114) and np.all(out[48:] == 114) and np.all(out[16:48] == 255)


def test_center_crop_takes_the_middle_after_shorter_side_resize():
    img = np.zeros((100, 300), np.uint8)
    img[:, 100:200] = 20  # three vertical stripes 0 | 20 | 0
    out = to_sample(
        img, 50, 50, "NCHW", np.dtype(np.float32), PreprocessSpec(resize="center-crop", scale=1.0)
    )
    assert out.shape == (1, 50, 50) and np.all(out == 20)


def test_center_crop_fraction_crops_without_resizing_when_scale_is_one():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (100, 300, 3), dtype=np.uint8)
    spec = PreprocessSpec(resize="center-crop", crop_fraction=0.5, scale=1.0, color="BGR")
    out = to_sample(img, 50, 50, "NHWC", np.dtype(np.float32), spec)
    np.testing.assert_array_equal(out, img[25:75, 125:175].astype(np.float32))


def test_scale_mean_std_color_and_layout():
    img = np.empty((4, 6, 3), np.uint8)
    img[...] = (10, 20, 30)  # B, G, R
    spec = PreprocessSpec(scale=0.5, mean=(1, 2, 3), std=(2, 4, 8), color="RGB")
    out = to_sample(img, 4, 6, "NCHW", np.dtype(np.float32), spec)
    assert out.shape == (3, 4, 6) and out.flags.c_contiguous
    # RGB order: R=30, G=20, B=10 ; (x*0.5 - mean)/std
    expected = [(30 * 0.5 - 1) / 2, (20 * 0.5 - 2) / 4, (10 * 0.5 - 3) / 8]
    np.testing.assert_allclose(out.reshape(3, -1).mean(axis=1), expected, rtol=1e-6)
    assert np.ptp(out.reshape(3, -1), axis=1).max() == 0
    bgr = to_sample(img, 4, 6, "NHWC", np.dtype(np.float32), spec.replace(color="BGR"))
    assert bgr.shape == (4, 6, 3)
    np.testing.assert_allclose(bgr[0, 0], [(10 * 0.5 - 1) / 2, (20 * 0.5 - 2) / 4, (30 * 0.5 - 3) / 8])


def test_dtypes():
    img = np.full((2, 2, 3), 200, np.uint8)
    half = to_sample(img, 2, 2, "NCHW", np.dtype(np.float16), PreprocessSpec())
    assert half.dtype == np.float16 and np.allclose(half, 200 / 255, atol=1e-3)
    u8 = to_sample(img, 2, 2, "NCHW", np.dtype(np.uint8), PreprocessSpec(scale=1.0))
    assert u8.dtype == np.uint8 and np.all(u8 == 200)
    clipped = to_sample(img, 2, 2, "NCHW", np.dtype(np.int8), PreprocessSpec(scale=1.0))
    assert np.all(clipped == 127)


def test_center_crop_of_a_strip_cuts_the_middle_without_resizing_the_whole_strip():
    """A 1 x 3000 strip cut to 48 x 192 with a small crop fraction would need a resize of
    gigabytes (4800 x 14.4M pixels); the window is cut from the source first, and it is the
    strip's middle."""
    strip = np.zeros((1, 3000, 3), np.uint8)
    strip[:, 1000:2000] = 100  # left 0 | middle 100 | right 0
    spec = PreprocessSpec(resize="center-crop", crop_fraction=0.01, scale=1.0, color="BGR")
    out = to_sample(strip, 48, 192, "NCHW", np.dtype(np.float32), spec)
    assert out.shape == (3, 48, 192) and np.all(out == 100)


def test_scale_zero_is_refused():
    with pytest.raises(InputError, match="scale 0"):
        PreprocessSpec(scale=0.0)
