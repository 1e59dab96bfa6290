"""``precision quantize``: the accuracy-first flow in one command, on a real model and real images.

The command is the library calls of ``calib run``, ``compare --mode layerwise --pin-worst``,
``export`` and ``compare --reference`` in a row; these tests hold it to exactly what those
commands make one by one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from trtq.calib.cli import main as calib_main
from trtq.precision.cli import main as precision_main
from trtq.precision.qdq_model import qdq_precision
from trtq.reports.cli import main as reports_main

DATA = ["--shape", "x:1x3x48x192", "--preset", "paddleocr-rec"]


def _run(main, *args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def split(image_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The real images, half for calibration, half held out."""
    root = tmp_path_factory.mktemp("split")
    files = sorted(image_dir.iterdir())
    for i, f in enumerate(files):
        folder = root / ("cal" if i % 2 == 0 else "held")
        folder.mkdir(exist_ok=True)
        shutil.copy(f, folder / f.name)
    return root / "cal", root / "held"


def test_quantize_makes_what_the_commands_make_one_by_one(real_models, split, tmp_path):
    cls = real_models["cls"]
    cal, held = split
    res = _run(
        precision_main, "quantize", cls, "--data", cal, "--eval-data", held, *DATA, "--pin-worst", 2,
        "--metric", "top1", "-o", tmp_path / "q.onnx", "--pins-out", tmp_path / "q.pins.json",
        "--json", tmp_path / "q.json", "--report", tmp_path / "q.html",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "held-out data (6 samples) vs FP32" in res.stderr and "top1" in res.stderr
    doc = json.loads((tmp_path / "q.json").read_text())

    # the same flow, command by command
    assert (
        _run(calib_main, "run", cls, "--data", cal, *DATA, "--cache", tmp_path / "c.cache", "-q").exit_code
        == 0
    )
    ranked = _run(
        precision_main, "compare", cls, "--data", cal, *DATA, "--precision", "int8", "--cache",
        tmp_path / "c.cache", "--mode", "layerwise", "--pin-worst", 2, "--pins-out", tmp_path / "p.json", "-q",
    )  # fmt: skip
    assert ranked.exit_code == 0, ranked.output
    exported = _run(
        precision_main, "export", cls, "--int8", "--cache", tmp_path / "c.cache", "--pins", tmp_path / "p.json",
        "-o", tmp_path / "c.onnx", "-q",
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    judged = _run(
        precision_main, "compare", tmp_path / "c.onnx", "--reference", cls, "--data", held, *DATA,
        "--metric", "top1", "--json", "-", "-q",
    )  # fmt: skip
    (output,) = json.loads(judged.stdout)["runs"][0]["outputs"]

    assert (
        json.loads((tmp_path / "p.json").read_text())
        == doc["pins"]
        == json.loads((tmp_path / "q.pins.json").read_text())
    )
    assert len(doc["pins"]) == 2 and [r["node"] for r in doc["ranking"]] == doc["pins"]
    assert doc["ranking"][0]["error"] >= doc["ranking"][1]["error"] > 0  # worst first
    assert (tmp_path / "q.onnx").read_bytes() == (tmp_path / "c.onnx").read_bytes()
    held_out = doc["held_out"]["outputs"][output["tensor"]]
    assert held_out["top1"] == output["top1"] and held_out["cosine"] == pytest.approx(output["cosine"], abs=0)
    assert doc["held_out"]["data"]["images_used"] == 6 and doc["data"]["images_used"] == 6
    assert doc["kind"] == "quantize" and doc["ranges"]["method"] == "auto" and doc["qdq_pairs"] > 0
    # judged on data it never saw, INT8 stays close to FP32 (a broken flow gives far less)
    assert held_out["cosine"] > 0.95
    # the report draws the document: the pins, and both judgements side by side
    html = (tmp_path / "q.html").read_text()
    assert "Quantized model (precision quantize)" in html and all(p in html for p in doc["pins"])
    assert "top1, held out (6)" in html and f"{held_out['cosine']:.5g}" in html
    rebuilt = _run(reports_main, "build", tmp_path / "q.json", "-o", tmp_path / "r.html")
    assert rebuilt.exit_code == 0, (
        rebuilt.output and "INT8 Q/DQ, 2 layers in FP32" in (tmp_path / "r.html").read_text()
    )


def test_quantize_fp8_from_a_cache_and_json_on_stdout(real_models, split, tmp_path):
    cls = real_models["cls"]
    cal, _ = split
    assert (
        _run(calib_main, "run", cls, "--data", cal, *DATA, "--cache", tmp_path / "c.cache", "-q").exit_code
        == 0
    )
    res = _run(
        precision_main, "quantize", cls, "--data", cal, *DATA, "--fp8", "--cache", tmp_path / "c.cache",
        "-o", tmp_path / "f.onnx", "--json", "-",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # stdout holds the document alone
    assert doc["qtype"] == "fp8" and doc["ranges"]["cache"] == str(tmp_path / "c.cache")
    assert doc["held_out"] is None and doc["weight_scales"] is not None  # FP8 + data: by output error
    assert qdq_precision(onnx.load(tmp_path / "f.onnx")) == "fp8"
    exported = _run(
        precision_main, "export", cls, "--fp8", "--cache", tmp_path / "c.cache", "--data", cal, *DATA,
        "-o", tmp_path / "e.onnx", "-q",
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "e.onnx").read_bytes() == (tmp_path / "f.onnx").read_bytes()


def test_quantize_bad_input_is_one_line_and_writes_nothing(real_models, split, tmp_path):
    cls = real_models["cls"]
    cal, _ = split
    qdq = tmp_path / "q.onnx"
    assert _run(precision_main, "quantize", cls, "--data", cal, *DATA, "-o", qdq, "-q").exit_code == 0
    other, empty = tmp_path / "other.cache", tmp_path / "empty.cache"  # the input is called x here too
    other.write_text("TRT-100001-EntropyCalibration2\nx: 3c010a14\nfoo: 3c010a14\nbar: 3c010a14\n")
    empty.write_text("TRT-100001-EntropyCalibration2\n")
    out = ["-o", tmp_path / "x.onnx"]
    for args, words in (
        (
            [qdq, "--data", cal, *DATA, *out],
            "is already quantized (it has Q/DQ nodes): quantize its float original",
        ),
        ([cls, *DATA, *out], "--data"),
        ([cls, "--data", cal, *DATA, "-o", cls], "refusing to overwrite"),
        ([cls, "--data", cal, *DATA, *out, "--pin-worst", -1], "--pin-worst"),
        ([cls, "--data", cal, *DATA, *out, "--pin-worst", 10000], "the model has 54 layers that run in INT8"),
        ([cls, "--data", cal, *DATA, *out, "--cache", other], "other.cache: 2 of its 3 tensors are not in"),
        ([cls, "--data", cal, *DATA, *out, "--cache", empty], "empty.cache: no tensor scales"),
        ([cls, "--data", cal, *DATA, "-o", "-"], "only --json can write to stdout"),
        ([cls, "--data", cal, *DATA, *out, "--report", "-"], "give --report a file name"),
        (
            [cls, "--data", cal, *DATA, *out, "--metric", "mask-iou", "--binarize", "nan"],
            "needs a finite number",
        ),
    ):
        res = CliRunner().invoke(precision_main, ["quantize", *map(str, args)])
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and words in lines[0], res.output
        assert not (tmp_path / "x.onnx").exists()


def test_a_warning_about_the_data_comes_once_though_the_data_is_read_four_times(real_models, split, tmp_path):
    cal, held = split  # 6 images each: a batch of 4 leaves 2 out
    res = _run(
        precision_main, "quantize", real_models["cls"], "--data", cal, "--eval-data", held, *DATA,
        "--batch-size", 4, "--pin-worst", 1, "-o", tmp_path / "q.onnx",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.stderr.count(f"dropped the last 2 sample(s) of {cal}") == 1, res.stderr
    assert res.stderr.count(f"dropped the last 2 sample(s) of {held}") == 1, res.stderr


def test_held_out_data_that_is_the_calibration_data_is_named(real_models, split, tmp_path):
    cal, _ = split
    same = _run(
        precision_main, "quantize", real_models["cls"], "--data", cal, "--eval-data", f"{cal}/", *DATA,
        "-o", tmp_path / "q.onnx",
    )  # fmt: skip
    assert same.exit_code == 0 and "is the --data folder" in same.stderr, same.output


def test_threshold_pins_the_fewest_of_the_worst_layers_that_pass(real_models, split, tmp_path):
    cal, _ = split

    def run(threshold: float) -> dict:
        res = _run(
            precision_main, "quantize", real_models["cls"], "--data", cal, *DATA, "--pin-worst", 4,
            "--threshold", threshold, "-o", tmp_path / "q.onnx", "--json", "-",
        )  # fmt: skip
        doc = json.loads(res.stdout)
        # exit 1 when even the K worst layers in FP32 do not pass (everything written): scripts see it
        assert res.exit_code == (0 if doc["search"]["passed"] else 1), res.output
        return doc

    easy, hard = run(0.0), run(1.0)  # cosine >= 0 passes unpinned; cosine >= 1 never passes
    assert easy["pins"] == [] and easy["search"]["passed"] and len(easy["search"]["tried"]) == 1
    assert len(hard["pins"]) == 4 and not hard["search"]["passed"] and (tmp_path / "q.onnx").exists()
    assert [t["pins"] for t in hard["search"]["tried"]] == [0, 4]
    unpinned, all_four = (t["metric"] for t in hard["search"]["tried"])
    assert all_four > unpinned  # the worst layers in FP32 help here; the search has room
    doc = run((unpinned + all_four) / 2)
    k, tried = len(doc["pins"]), {t["pins"]: t["passed"] for t in doc["search"]["tried"]}
    assert 0 < k <= 4 and tried[k] and not tried[k - 1] and doc["search"]["passed"]
    assert doc["pins"] == hard["pins"][:k]  # a prefix of the same ranking
    assert doc["calibration"]["outputs"]  # the model written is judged as always
    refused = CliRunner().invoke(precision_main, ["quantize", str(real_models["cls"]), "--data", str(cal), *DATA,
                                                  "--threshold", "0.9", "-o", str(tmp_path / "x.onnx")])  # fmt: skip
    assert refused.exit_code == 2 and "--threshold needs --pin-worst K" in refused.output


def test_threshold_search_judges_the_model_it_writes_fp8(real_models, split, tmp_path):
    """FP8 chooses weight scales by output error: the search must judge with them (it judged with
    the weights' own scales, passed a model it did not write, and reported 'passed' for 0 pins)."""
    cal, _ = split
    res = _run(
        precision_main, "quantize", real_models["cls"], "--data", cal, *DATA, "--fp8", "--pin-worst", 4,
        "--threshold", 0.0, "-o", tmp_path / "q.onnx", "--json", "-",
    )  # fmt: skip
    doc = json.loads(res.stdout)
    unpinned = doc["search"]["tried"][0]
    (output,) = doc["calibration"]["outputs"].values()
    assert doc["pins"] == [] and unpinned["pins"] == 0 and unpinned["passed"] and res.exit_code == 0
    assert unpinned["metric"] == pytest.approx(output["cosine"], abs=1e-12)  # the same model


def test_quantize_with_recoveries_and_fp16_makes_what_export_makes(real_models, split, tmp_path):
    """The recoveries run with the pins in place, on --data, as ``precision export`` runs them; the
    float rest in FP16 is export's --fp16: the same bytes, and the document says what ran."""
    cls = real_models["cls"]
    cal, held = split
    flags = ["--weight-correction", "own", "--weight-correction-alpha", 0.1, "--bias-correction", "--fp16"]
    res = _run(
        precision_main, "quantize", cls, "--data", cal, "--eval-data", held, *DATA, "--pin-worst", 2, *flags,
        "-o", tmp_path / "q.onnx", "--pins-out", tmp_path / "p.json", "--json", tmp_path / "q.json",
        "--report", tmp_path / "q.html",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    html = (tmp_path / "q.html").read_text()
    assert "recovery: <b>--weight-correction own --weight-correction-alpha 0.1 --bias-correction</b>" in html
    assert "other float layers: <b>FP16</b>" in html
    assert "weight correction (own, alpha 0.1)" in res.stderr and "bias correction:" in res.stderr
    assert "the other float layers in FP16" in res.stderr
    doc = json.loads((tmp_path / "q.json").read_text())
    assert (
        _run(calib_main, "run", cls, "--data", cal, *DATA, "--cache", tmp_path / "c.cache", "-q").exit_code
        == 0
    )
    exported = _run(
        precision_main, "export", cls, "--int8", "--cache", tmp_path / "c.cache", "--pins", tmp_path / "p.json",
        "--data", cal, *DATA, *flags, "-o", tmp_path / "e.onnx", "-q",
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "q.onnx").read_bytes() == (tmp_path / "e.onnx").read_bytes()
    rec = doc["recovery"]
    assert rec["flags"] == [
        "--weight-correction own", "--weight-correction-alpha 0.1", "--bias-correction"
    ]  # fmt: skip
    wc = rec["weight_correction"]
    assert wc["mode"] == "own" and wc["alpha"] == 0.1 and len(wc["layers"]) > 10
    assert not {f["node"] for f in wc["layers"]} & set(doc["pins"])  # pinned layers are not refitted
    # the refit lowers the layers' summed output error on the data it was fitted to
    assert sum(f["mse_after"] for f in wc["layers"]) < sum(f["mse_before"] for f in wc["layers"])
    assert rec["bias_correction"]["layers"] and doc["fp16"] is True
    written = onnx.load(tmp_path / "q.onnx")
    assert qdq_precision(written) == "int8"
    to_half = [
        n for n in written.graph.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT16
    ]
    assert to_half  # the FP16 islands' boundaries
    (held_out,) = doc["held_out"]["outputs"].values()
    assert held_out["cosine"] > 0.95


def test_threshold_search_with_a_recovery_judges_recovered_models(real_models, split, tmp_path):
    """Each prefix the search tries is recovered with its own pins before it is judged: the
    figure that passed is the written model's own on --data."""
    cal, _ = split
    base = [real_models["cls"], "--data", cal, *DATA, "--pin-worst", 4, "--weight-correction", "own"]
    hard = json.loads(
        _run(
            precision_main, "quantize", *base, "--threshold", 1.0, "-o", tmp_path / "h.onnx", "--json", "-"
        ).stdout
    )
    unpinned, all_four = (t["metric"] for t in hard["search"]["tried"])
    res = _run(
        precision_main, "quantize", *base, "--threshold", (unpinned + all_four) / 2, "-o", tmp_path / "q.onnx",
        "--json", "-",
    )  # fmt: skip
    doc = json.loads(res.stdout)
    k = len(doc["pins"])
    passing = [t for t in doc["search"]["tried"] if t["pins"] == k]
    assert res.exit_code == 0 and doc["search"]["passed"] and passing and passing[0]["passed"]
    (output,) = doc["calibration"]["outputs"].values()
    assert passing[0]["metric"] == pytest.approx(output["cosine"], abs=1e-12)
    judged = _run(
        precision_main, "compare", tmp_path / "q.onnx", "--reference", real_models["cls"], "--data", cal, *DATA,
        "--json", "-", "-q",
    )  # fmt: skip
    (again,) = json.loads(judged.stdout)["runs"][0]["outputs"]
    assert again["cosine"] == pytest.approx(output["cosine"], abs=1e-9)
    assert {f["node"] for f in doc["recovery"]["weight_correction"]["layers"]}.isdisjoint(doc["pins"])


def test_a_search_that_fails_writes_the_all_k_model_it_judged_without_recovering_it_again(
    real_models, split, tmp_path, monkeypatch
):
    from trtq.precision.recovery import Recovery

    calls: list[int] = []
    apply = Recovery.apply

    def counted(self, model, batches, amax, pins=(), **kw):
        calls.append(len(list(pins)))
        return apply(self, model, batches, amax, pins, **kw)

    monkeypatch.setattr(Recovery, "apply", counted)
    cal, _ = split
    res = _run(
        precision_main, "quantize", real_models["cls"], "--data", cal, *DATA, "--pin-worst", 3,
        "--weight-correction", "own", "--threshold", 1.0, "-o", tmp_path / "q.onnx", "--json", "-",
    )  # fmt: skip
    doc = json.loads(res.stdout)
    assert res.exit_code == 1 and not doc["search"]["passed"] and len(doc["pins"]) == 3
    assert calls == [0, 3]  # each model tried recovered once; the all-3 one is the one written
    (output,) = doc["calibration"]["outputs"].values()
    assert doc["search"]["tried"][-1]["metric"] == pytest.approx(output["cosine"], abs=1e-12)


def test_recoveries_are_refused_where_they_do_not_apply(real_models, split, tmp_path):
    cls, (cal, _) = real_models["cls"], split
    out = ["-o", tmp_path / "x.onnx"]
    for args, words in (
        (["--fp8", "--weight-correction", "own"], "--weight-correction corrects INT8 layers: not with --fp8"),
        (["--adaround", "--weight-scales", "output"], "--weight-scales output is not combined with"),
        (["--weight-correction-alpha", 0.1], "--weight-correction-alpha needs --weight-correction"),
        (
            ["--weight-correction", "own", "--weight-correction-alpha", 0],
            "must be a finite number > 0 (got 0)",
        ),
        (["--weight-correction", "own", "--weight-correction-alpha", "inf"], "must be a finite number > 0"),
        (["--adaround", "--bias-correction"], "--bias-correction after --adaround has nothing to fold"),
    ):
        res = CliRunner().invoke(
            precision_main, ["quantize", *map(str, [cls, "--data", cal, *DATA, *out, *args])]
        )
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and words in lines[0], res.output
        assert not (tmp_path / "x.onnx").exists()


def test_a_binarize_threshold_above_the_outputs_is_named_once(real_models, split, tmp_path):
    """cls outputs softmax probabilities: no value exceeds 2, so every map is empty and mask-iou
    is 1.0 by convention on both data sets: said once, not per judging pass."""
    cal, held = split
    res = _run(
        precision_main, "quantize", real_models["cls"], "--data", cal, "--eval-data", held, *DATA,
        "--metric", "mask-iou", "--binarize", 2, "-o", tmp_path / "q.onnx",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.stderr.count("no output value above --binarize 2") == 1, res.stderr
