"""Static input shapes from the model, --shape and the batch size; real PP-OCRv4 det and PP-LCNet."""

from __future__ import annotations

import numpy as np
import pytest

from trtq._core.errors import InputError
from trtq.datasets import TensorInfo, image_geometry, parse_shape_arg, resolve_input_specs
from trtq.runtime.onnxruntime import OnnxRuntimeRunner

F32 = np.dtype(np.float32)


def info(name, *shape):
    return TensorInfo(name, tuple(shape), F32)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("x:1x3x640x640", ("x", (1, 3, 640, 640))),
        ("input:0:2,3,224,224", ("input:0", (2, 3, 224, 224))),
        ("1x3x32x32", ("", (1, 3, 32, 32))),
    ],
)
def test_parse_shape_arg(text, expected):
    assert parse_shape_arg(text) == expected


@pytest.mark.parametrize("text", ["x:", "x:1x3xHx640", "x:1x0x4", "x:1x-3"])
def test_parse_shape_arg_errors_show_syntax(text):
    with pytest.raises(InputError) as err:
        parse_shape_arg(text)
    assert text in str(err.value) and "x:1x3x640x640" in str(err.value)


def test_static_model_needs_nothing_and_dynamic_batch_takes_batch_size():
    specs = resolve_input_specs([info("x", "N", 3, 224, 224)], None, 8)
    assert specs == [TensorInfo("x", (8, 3, 224, 224), F32)]
    assert resolve_input_specs([info("x", None, 3, 224, 224)], None, None)[0].shape == (1, 3, 224, 224)


def test_dynamic_spatial_dims_require_shape_naming_input_and_dims():
    with pytest.raises(InputError) as err:
        resolve_input_specs([info("img", "N", 3, "H", "W")], None, 2)
    msg = str(err.value)
    assert "'img'" in msg and "2 (H)" in msg and "3 (W)" in msg and "--shape img:2x3xD2xD3" in msg


def test_shape_fills_dynamic_dims_and_batch_size_wins_for_dynamic_batch():
    specs = resolve_input_specs([info("x", "N", 3, "H", "W")], {"x": (1, 3, 64, 96)}, 4)
    assert specs[0].shape == (4, 3, 64, 96)
    assert resolve_input_specs([info("x", "N", 3, "H", "W")], {"": (2, 3, 8, 8)}, None)[0].shape == (
        2,
        3,
        8,
        8,
    )


@pytest.mark.parametrize(
    "inputs, shapes, batch, words",
    [
        ([info("x", "N", 3, "H", "W")], {"y": (1, 3, 8, 8)}, 1, ["'y'", "['x']"]),
        ([info("x", "N", 3, "H", "W")], {"x": (1, 3, 8)}, 1, ["3 dims", "4"]),
        ([info("x", "N", 3, "H", "W")], {"x": (1, 1, 8, 8)}, 1, ["dim 1", "fixes it at 3"]),
        ([info("x", 1, 3, 8, 8)], None, 4, ["fixed batch dim of 1", "4"]),
        ([info("a", "N", 2), info("b", "N", 2)], {"": (1, 2)}, 1, ["single-input"]),
        ([info("x", "N", 3)], None, 0, ["at least 1"]),
    ],
)
def test_shape_errors(inputs, shapes, batch, words):
    with pytest.raises(InputError) as err:
        resolve_input_specs(inputs, shapes, batch)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_image_geometry_infers_layout():
    g = image_geometry(TensorInfo("x", (1, 3, 48, 192), F32))
    assert (g.height, g.width, g.channels, g.layout) == (48, 192, 3, "NCHW")
    g = image_geometry(TensorInfo("x", (1, 48, 192, 1), F32))
    assert (g.height, g.width, g.channels, g.layout) == (48, 192, 1, "NHWC")
    with pytest.raises(InputError, match="channel"):
        image_geometry(TensorInfo("x", (1, 5, 48, 48), F32))
    with pytest.raises(InputError, match="4-D"):
        image_geometry(TensorInfo("x", (1, 10), F32))


def test_real_det_model_needs_shape(real_models):
    with OnnxRuntimeRunner(real_models["det"], threads=1) as backend:
        inputs = backend.inputs()
    with pytest.raises(InputError) as err:
        resolve_input_specs(inputs, None, 1)
    msg = str(err.value)
    assert "'x'" in msg and "dim(s) 2" in msg and ", 3 (" in msg and "--shape x:1x3xD2xD3" in msg
    specs = resolve_input_specs(inputs, dict([parse_shape_arg("x:1x3x640x640")]), 4)
    assert specs == [TensorInfo("x", (4, 3, 640, 640), F32)]


def test_real_lcnet_shape_is_inferred(real_models):
    with OnnxRuntimeRunner(real_models["lcnet"], threads=1) as backend:
        specs = resolve_input_specs(backend.inputs(), None, 3)
    assert specs == [TensorInfo("x", (3, 3, 224, 224), F32)]
