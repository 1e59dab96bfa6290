"""Reading the engine inspector's JSON. The layer records below are written in the documented
format of ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` at DETAILED
verbosity (no engine can be built here, so no real inspector output is available)."""

from __future__ import annotations

import json

import pytest

from trtq._core.errors import TrtqError
from trtq.runtime.tensorrt_inspect import datatype_of, parse_engine_information


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Row major linear FP32", "fp32"),
        ("Channel major FP16 format where channel % 8 == 0", "fp16"),
        ("Thirty-two wide channel vectorized row major Int8 format", "int8"),
        ("Row major linear BF16 format", "bf16"),
        ("Row major linear Int32", "int32"),
        ("Row major linear FP8 format", "fp8"),
        ("something else", None),
    ],
)
def test_datatype_of_format_strings(text, want):
    assert datatype_of(text) == want


def _io(name, fmt):
    return {"Name": name, "Location": "Device", "Dimensions": [1, 8, 4, 4], "Format/Datatype": fmt}


def test_detailed_layers_give_precision_and_onnx_nodes():
    info = {
        "Layers": [
            {
                "Name": "/conv1/Conv + /relu1/Relu",
                "LayerType": "CaskConvolution",
                "Inputs": [_io("x", "Four wide channel vectorized row major Int8 format")],
                "Outputs": [_io("r1", "Thirty-two wide channel vectorized row major Int8 format")],
                "Metadata": "[ONNX Layer: /conv1/Conv]\x1e[ONNX Layer: /relu1/Relu]",
            },
            {
                "Name": "/head/Softmax",
                "LayerType": "CaskSoftmax",
                "Inputs": [_io("r1", "Row major linear FP32")],
                "Outputs": [_io("y", "Row major linear FP16 format")],
                "Metadata": "[ONNX Layer: /head/Softmax]",
            },
        ],
        "Bindings": ["x", "y"],
    }
    layers = parse_engine_information(json.dumps(info))
    assert [(lp.name, lp.precision, lp.output_types) for lp in layers] == [
        ("/conv1/Conv + /relu1/Relu", "int8", ("int8",)),
        ("/head/Softmax", "fp32", ("fp16",)),
    ]
    assert layers[0].onnx_nodes == ("/conv1/Conv", "/relu1/Relu")
    assert layers[1].as_dict()["layer_type"] == "CaskSoftmax"


def test_names_only_verbosity_has_no_precision():
    layers = parse_engine_information(json.dumps({"Layers": ["conv1", "relu1"], "Bindings": []}))
    assert [(lp.name, lp.precision) for lp in layers] == [("conv1", None), ("relu1", None)]


def test_invalid_json_is_one_line_error():
    with pytest.raises(TrtqError, match="invalid JSON"):
        parse_engine_information("{not json")
