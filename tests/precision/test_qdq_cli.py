"""Q/DQ models on the command line (compare, bisect, pin with and without --reference) and the
ModelOpt hand-off (modelopt-args, the calibration cache as ModelOpt's --calibration_cache_path)."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from test_bisect_planted import make_outlier_scale

from trtq.calib.cache import CalibrationCache, write_cache
from trtq.precision.cli import main
from trtq.precision.export import export_qdq
from trtq.precision.qdq_model import find_groups

MODELOPT_PYTHON = Path.home() / ".cache/trtq-bench/modelopt-venv/bin/python"


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _setup(tmp_path):
    model, batches, amax = make_outlier_scale()
    onnx.save(model, tmp_path / "m.onnx")
    onnx.save(export_qdq(model, amax), tmp_path / "m.qdq.onnx")
    data = tmp_path / "data"
    data.mkdir()
    for i, batch in enumerate(batches):
        np.save(data / f"b{i}.npy", batch["x"])
    return tmp_path / "m.onnx", tmp_path / "m.qdq.onnx", data


def test_compare_a_qdq_model_against_its_reference(tmp_path):
    model, qdq, data = _setup(tmp_path)
    result = _invoke("compare", qdq, "--reference", model, "--data", data, "--batch-size", 16, "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output[result.output.index("{") :])
    (run,) = doc["runs"]
    assert run["placement"] == "qdq-model"
    worst = max(run["layers"], key=lambda r: r["rel_l2"])
    assert worst["tensor"] == "h3"  # the output of fc3, whose input scale was ruined
    assert doc["qdq_model"]["reference"] == str(model)


def test_compare_without_reference_says_how_the_float_model_was_recovered(tmp_path):
    _, qdq, data = _setup(tmp_path)
    result = _invoke("compare", qdq, "--data", data, "--batch-size", 16)
    assert result.exit_code == 0, result.output
    assert "weights dequantized" in result.output


def test_reference_on_a_float_model_is_one_line(tmp_path):
    model, _, data = _setup(tmp_path)
    result = CliRunner().invoke(main, ["compare", str(model), "--reference", str(model), "--data", str(data)])
    assert result.exit_code == 2
    assert "--reference is for Q/DQ models" in result.output


def test_bisect_then_pin_a_qdq_model_end_to_end(tmp_path):
    model, qdq, data = _setup(tmp_path)
    pins = tmp_path / "pins.json"
    result = _invoke("bisect", qdq, "--reference", model, "--data", data, "--batch-size", 16, "-o", pins)
    assert result.exit_code == 0, result.output
    doc = json.loads(pins.read_text())
    assert [p["node"] for p in doc["pins"]] == ["fc3"]
    assert doc["settings"]["qdq_model"] is True
    assert doc["settings"]["reference"] == str(model.resolve())
    fixed = tmp_path / "fixed.onnx"
    result = _invoke("pin", qdq, "--pins", pins, "-o", fixed)  # data and reference from pins.json
    assert result.exit_code == 0, result.output
    repaired = onnx.load(fixed)
    assert "fc3" not in {g.node for g in find_groups(repaired)}
    assert {"fc1", "fc2", "head"} <= {g.node for g in find_groups(repaired)}


def test_bisect_a_qdq_model_without_reference(tmp_path):
    _, qdq, data = _setup(tmp_path)
    pins = tmp_path / "pins.json"
    result = _invoke(
        "bisect", qdq, "--data", data, "--batch-size", 16, "--strategy", "contiguous", "-o", pins
    )
    assert result.exit_code == 0, result.output
    assert "fc3" in [p["node"] for p in json.loads(pins.read_text())["pins"]]


def _pins_doc(tmp_path, nodes):
    doc = {
        "kind": "bisect",
        "schema": 1,
        "pins": [{"node": n, "members": [n]} for n in nodes],
        "settings": {"precision": "int8"},
    }
    path = tmp_path / "pins.json"
    path.write_text(json.dumps(doc))
    return path


def test_modelopt_args_are_exact_match_regexes(tmp_path):
    pins = _pins_doc(tmp_path, ["/blocks.0/attn/MatMul", "fc3"])
    result = _invoke("modelopt-args", pins, "--tool", "ptq")
    assert result.exit_code == 0, result.output
    import shlex

    args = shlex.split(result.output)
    assert args[0] == "--nodes_to_exclude"
    regexes = args[1:]
    assert all(re.match(r, "/blocks.0/attn/MatMul") for r in regexes[:1])
    assert not re.match(regexes[0], "/blocks.0/attn/MatMul_1")
    assert not re.match(regexes[0], "/blocksX0/attn/MatMul")
    assert re.match(regexes[1], "fc3") and not re.match(regexes[1], "fc30")
    both = _invoke("modelopt-args", pins).output
    assert "# ptq" in both and "# autocast" in both


def test_modelopt_args_json_lists_the_same_arguments(tmp_path):
    pins = _pins_doc(tmp_path, ["/blocks.0/attn/MatMul", "fc3"])
    text = _invoke("modelopt-args", pins, "--tool", "ptq").output
    printed = _invoke("modelopt-args", pins, "--json", "-")
    assert printed.exit_code == 0, printed.output
    doc = json.loads(printed.output)  # stdout holds the document alone
    assert doc["kind"] == "modelopt-args" and doc["nodes"] == ["/blocks.0/attn/MatMul", "fc3"]
    import shlex

    assert doc["ptq"] == shlex.split(text) == doc["autocast"]
    _invoke("modelopt-args", pins, "--json", tmp_path / "a.json", "-o", tmp_path / "a.txt")
    assert json.loads((tmp_path / "a.json").read_text())["ptq"] == doc["ptq"]
    assert "# ptq" in (tmp_path / "a.txt").read_text()
    refused = _invoke("modelopt-args", pins, "--json", pins)
    assert refused.exit_code == 2 and json.loads(pins.read_text())["kind"] == "bisect"


def test_calib_cache_is_the_tensorrt_text_format(tmp_path):
    path = tmp_path / "c.cache"
    r2 = struct.unpack(">f", bytes.fromhex("3c010a14"))[0] * 127  # DESIGN.md 4: amax ~1.0002
    write_cache(path, CalibrationCache.from_amax({"r2": r2, "x": 127.0}))
    lines = path.read_text().splitlines()
    assert re.fullmatch(r"TRT-\d+-EntropyCalibration2", lines[0])
    entries = dict(line.split(": ") for line in lines[1:])  # ModelOpt splits at ": "
    assert entries["r2"] == "3c010a14"
    assert struct.unpack("!f", bytes.fromhex(entries["x"]))[0] == 1.0


@pytest.mark.skipif(not MODELOPT_PYTHON.exists(), reason="no ModelOpt venv (benchmarks/peer_modelopt.py)")
def test_calib_cache_reads_in_modelopt_own_parser(tmp_path):
    amax = {"r2": 1.0002, "/model/conv1/Conv_output_0": 6.5, "x": 127.0}
    path = tmp_path / "c.cache"
    write_cache(path, CalibrationCache.from_amax(amax))
    code = (
        "import json, sys\n"
        "from modelopt.onnx.quantization.calib_utils import import_scales_from_calib_cache\n"
        "print(json.dumps(import_scales_from_calib_cache(sys.argv[1])))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(MODELOPT_PYTHON), "-c", code, str(path)], capture_output=True, text=True, env=env, timeout=300
    )
    if done.returncode != 0 and "ModuleNotFoundError" in done.stderr:
        pytest.skip(f"ModelOpt not importable: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    scales = json.loads(done.stdout.strip().splitlines()[-1])
    # ModelOpt names each scale <tensor>_scale; the values are our float32 scales, amax / 127
    assert set(scales) == {f"{k}_scale" for k in amax}
    for k, a in amax.items():
        assert scales[f"{k}_scale"] == pytest.approx(np.float32(a / 127.0), rel=1e-7)
