"""Output paths are checked before any work (trtq._core.outputs) and a failed write is one line
(trtq._core.atomic): no traceback, no half-written set of outputs, no input overwritten."""

from __future__ import annotations

import json
import os

import onnx
import pytest
from click.testing import CliRunner
from precision_tiny_models import WIDE, two_conv_workspace

from trtq._core.atomic import atomic_write_text
from trtq._core.errors import InputError
from trtq._core.outputs import check_outputs


def test_check_outputs_refuses_inputs_duplicates_and_unwritable_places(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    os.symlink(model, tmp_path / "link.onnx")
    cases = [
        ({"-o": model}, "refusing to overwrite the input (MODEL) with -o"),
        ({"-o": tmp_path / "link.onnx"}, "refusing to overwrite the input"),  # the same file
        ({"-o": tmp_path / "sub" / ".." / "m.onnx"}, "refusing to overwrite the input"),
        ({"-o": tmp_path / "a.onnx", "--json": tmp_path / "a.onnx"}, "given as both -o and --json"),
        ({"--json": afile / "doc.json"}, "file.txt is not a folder"),
        ({"--report": tmp_path}, "is a folder"),
        (
            {"--pins-out": tmp_path / ("p" * 300 + ".json")},
            "cannot write --pins-out there: File name too long",
        ),
        ({"-o": tmp_path / "a.onnx", "--report": tmp_path / ("r" * 300) / "r.html"}, "cannot write --report"),
    ]
    for outputs, message in cases:
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_outputs(outputs, {"MODEL": model})
    # fine: stdout, nothing given, a folder still to be made, an output that is no input
    check_outputs(
        {"--json": "-", "--report": None, "-o": tmp_path / "new" / "deep" / "o.onnx"}, {"MODEL": model}
    )
    assert not (tmp_path / "new").exists()  # checking makes nothing


def test_a_failed_write_is_one_line_naming_the_file_and_leaves_nothing(tmp_path):
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(InputError, match="file.txt/out.json: cannot write it"):
        atomic_write_text(afile / "out.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def _run(tool, *args):
    return CliRunner().invoke(tool, [str(a) for a in args], catch_exceptions=False)


def test_commands_refuse_bad_outputs_before_any_work(tmp_path):
    from trtq.calib.cli import main as calib
    from trtq.precision.cli import main as precision

    tmp, model, data, cache = two_conv_workspace(tmp_path, **WIDE)
    original = model.read_bytes()
    blocker = tmp / "blocker"
    blocker.write_text("a file, not a folder")
    fresh = tmp / "fresh.cache"
    runs = [
        (precision, ["export", model, "--int8", "--cache", cache, "-o", model], "refusing to overwrite"),
        (precision, ["export", model, "--int8", "--cache", cache, "-o", tmp / "q.onnx", "--json", tmp / "q.onnx"],
         "given as both"),
        (calib, ["run", model, "--data", data, "--cache", model], "refusing to overwrite the input (MODEL)"),
        (calib, ["run", model, "--data", data, "--cache", fresh, "--json", model], "refusing to overwrite"),
        # the histograms could not be written: the cache must not be written first either
        (calib, ["run", model, "--data", data, "--cache", fresh, "--histograms", blocker / "h.npz"],
         "blocker is not a folder"),
        (calib, ["run", model, "--data", data, "--cache", fresh, "--report", blocker / "r.html"],
         "blocker is not a folder"),
    ]  # fmt: skip
    for tool, args, message in runs:
        res = _run(tool, *args)
        assert res.exit_code == 2, res.output
        assert message in res.output and "Traceback" not in res.output, res.output
    assert model.read_bytes() == original
    assert not fresh.exists() and not (tmp / "fresh.cache.hist.npz").exists()
    assert not (tmp / "q.onnx").exists()


def test_export_refuses_a_cache_of_another_model_and_calib_a_qdq_model(tmp_path):
    from trtq.calib.cli import main as calib
    from trtq.precision.cli import main as precision

    tmp, model, data, cache = two_conv_workspace(tmp_path, **WIDE)
    other = tmp / "other.cache"
    other.write_text("TRT-8600-EntropyCalibration2\nnot_a_tensor_here: 3c000000\n")
    out = tmp / "q.onnx"
    res = _run(precision, "export", model, "--int8", "--cache", other, "-o", out)
    assert res.exit_code == 2 and "a cache of another model?" in res.output and not out.exists(), res.output

    res = _run(precision, "export", model, "--int8", "--cache", cache, "-o", out, "-q")
    assert res.exit_code == 0, res.output
    res = _run(calib, "run", out, "--data", data, "--cache", tmp / "again.cache")
    assert res.exit_code == 2 and "already quantized" in res.output and "q.onnx" in res.output, res.output


def test_fp8_export_reads_its_cache_even_with_histograms_beside_it(tmp_path):
    """The FP8 ranges come from the .hist.npz beside the cache, but a cache that is not one is an
    error, as it is for INT8."""
    from trtq.calib.cli import main as calib
    from trtq.precision.cli import main as precision

    tmp, model, data, _ = two_conv_workspace(tmp_path, **WIDE)
    cache = tmp / "c.cache"
    assert _run(calib, "run", model, "--data", data, "--cache", cache, "-q").exit_code == 0
    broken = tmp / "broken.cache"
    broken.write_text("hello world\n")
    (tmp / "broken.cache.hist.npz").write_bytes((tmp / "c.cache.hist.npz").read_bytes())
    out = tmp / "q.onnx"
    res = _run(precision, "export", model, "--fp8", "--cache", broken, "-o", out)
    assert res.exit_code == 2 and "broken.cache" in res.output and not out.exists(), res.output
    assert "Traceback" not in res.output


def test_compare_labels_an_fp8_qdq_model_and_checks_its_reference(tmp_path):
    from trtq.calib.cli import main as calib
    from trtq.precision.cli import main as precision

    tmp, model, data, _ = two_conv_workspace(tmp_path, **WIDE)
    cache, fp8 = tmp / "c.cache", tmp / "m.fp8.onnx"
    assert _run(calib, "run", model, "--data", data, "--cache", cache, "-q").exit_code == 0
    assert _run(precision, "export", model, "--fp8", "--cache", cache, "-o", fp8, "-q").exit_code == 0
    doc = tmp / "cmp.json"
    res = _run(
        precision, "compare", fp8, "--reference", model, "--data", data, "--cache", cache, "--json", doc
    )
    assert res.exit_code == 0, res.output
    assert "--cache is not used" in res.output
    assert [r["precision"] for r in json.loads(doc.read_text())["runs"]] == ["fp8"]

    relu = tmp / "relu.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, WIDE["cin"], 6, 6])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, WIDE["cin"], 6, 6])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), relu)
    res = _run(precision, "compare", fp8, "--reference", relu, "--data", data)
    assert res.exit_code == 2 and "is not the float original" in res.output and "relu.onnx" in res.output
    res = _run(precision, "compare", fp8, "--reference", fp8, "--data", data)
    assert res.exit_code == 2 and "has Q/DQ nodes" in res.output, res.output


def test_pin_reads_fp8_ranges_from_the_cache_as_export_does(tmp_path):
    """``precision pin --cache C`` of an FP8 pins.json quantizes with the largest |x| from the
    histograms beside C, as ``precision export --fp8 --cache C`` does, not with the cache's own
    (INT8 method) thresholds nor the method bisect recorded."""
    from onnx import numpy_helper

    from trtq.calib.cli import main as calib
    from trtq.precision.cli import main as precision

    tmp, model, data, _ = two_conv_workspace(tmp_path, **WIDE)
    cache, pins = tmp / "c.cache", tmp / "pins.json"
    assert _run(calib, "run", model, "--data", data, "--cache", cache, "-q").exit_code == 0
    # bisect without a cache calibrates FP8 itself (minmax) and records that method in pins.json
    res = _run(
        precision,
        "bisect",
        model,
        "--data",
        data,
        "--precision",
        "fp8",
        "--threshold",
        "0.5",
        "-o",
        pins,
        "-q",
    )
    assert res.exit_code == 0 and json.loads(pins.read_text())["settings"]["calib_method"], res.output
    pinned, exported = tmp / "pinned.onnx", tmp / "exported.onnx"
    res = _run(precision, "pin", model, "--pins", pins, "--cache", cache, "--data", data,
               "--weight-scales", "weights", "-o", pinned, "-q")  # fmt: skip
    assert res.exit_code in (0, 1), res.output  # 1: the criterion's verdict
    res = _run(precision, "export", model, "--fp8", "--cache", cache, "-o", exported, "-q")
    assert res.exit_code == 0, res.output

    def act_scales(path):
        m = onnx.load(str(path))
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        return sorted(float(inits[n.input[1]]) for n in m.graph.node if n.op_type == "QuantizeLinear")

    assert act_scales(pinned) == act_scales(exported) and act_scales(pinned)


def test_thresholds_and_timeouts_outside_their_range_are_refused():
    from trtq.precision.evaluate import CheckCommand, metric_criterion

    for name, threshold in (("cosine", 2.0), ("rel-l2", -0.5), ("top1", 1.5), ("mask-iou", -0.1)):
        params = {"binarize": 0.3} if name == "mask-iou" else None
        with pytest.raises(InputError, match="outside"):
            metric_criterion(name, threshold, params)
    assert metric_criterion("cosine", 1.0).threshold == 1.0
    for timeout in (float("nan"), 0.0, -1.0, float("inf")):
        with pytest.raises(InputError, match="--check-timeout must be a positive number"):
            CheckCommand("true", timeout)
    assert CheckCommand("true", 2.5).timeout_s == 2.5


def test_outputs_never_replace_a_data_file_and_equalize_takes_float32_models_only(tmp_path):
    from trtq.calib.cli import main as calib
    from trtq.precision.cli import main as precision

    tmp, model, data, cache = two_conv_workspace(tmp_path, **WIDE)
    sample = sorted(data.glob("*.npy"))[0]
    before = sample.read_bytes()
    res = _run(calib, "run", model, "--data", data, "--cache", sample)
    assert res.exit_code == 2 and "refusing to overwrite the input (--data)" in res.output, res.output
    assert sample.read_bytes() == before
    res = _run(calib, "run", model, "--data", data, "--cache", data / "new.cache", "-q")
    assert res.exit_code == 0, res.output  # a new file in the data folder is fine
    res = _run(calib, "run", model, "--data", data, "--cache", data / "new.cache", "-q")
    assert res.exit_code == 0, res.output  # and so is replacing it: the data loader never reads a .cache

    qdq = tmp / "q.onnx"
    assert _run(precision, "export", model, "--int8", "--cache", cache, "-o", qdq, "-q").exit_code == 0
    half = tmp / "half.onnx"
    assert _run(precision, "export", model, "--fp16", "-o", half, "-q").exit_code == 0
    for path, message in ((qdq, "already quantized"), (half, "FP16 weights")):
        out = tmp / "eq.onnx"
        res = _run(precision, "equalize", path, "-o", out)
        assert res.exit_code == 2 and message in res.output and not out.exists(), res.output


def test_a_model_onnx_runtime_cannot_load_is_named_by_its_file(tmp_path):
    from trtq.precision.cli import main as precision

    _, _, data, _ = two_conv_workspace(tmp_path, **WIDE)
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, WIDE["cin"], 6, 6])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, WIDE["cin"], 6, 6])
    graph = onnx.helper.make_graph([onnx.helper.make_node("NoSuchOp", ["x"], ["y"])], "g", [x], [y])
    bad = tmp_path / "badop.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), bad)
    for args in (
        ["compare", bad, "--data", data],
        ["bisect", bad, "--data", data, "-o", tmp_path / "p.json"],
    ):
        res = _run(precision, *args)
        assert res.exit_code == 2 and f"error: {bad}: ONNX Runtime cannot load it" in res.output, res.output
