"""`precision compare --mode layerwise --pin-worst K --pins-out FILE` on PP-OCR cls: the pins are
the K distinct layers with the largest own error in the same run's JSON, and `precision export
--pins` keeps exactly those layers out of INT8."""

from __future__ import annotations

import json

import onnx
from click.testing import CliRunner

from trtq.precision.cli import main

FLAGS = ["--shape", "x:1x3x48x192", "--preset", "paddleocr-rec", "--limit", "4"]


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_pin_worst_writes_the_worst_layers_and_export_keeps_them_float(real_models, image_dir, tmp_path):
    path = real_models["cls"]
    pins, doc = tmp_path / "pins.json", tmp_path / "cmp.json"
    res = _invoke(
        "compare", path, "--data", image_dir, *FLAGS, "--precision", "int8", "--mode", "layerwise",
        "--method", "entropy2", "--pin-worst", 3, "--pins-out", pins, "--json", doc, "--quiet",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    (run,) = json.loads(doc.read_text())["runs"]
    ranked = sorted(run["layers"], key=lambda r: -(r["rel_l2"] if r["rel_l2"] is not None else float("inf")))
    expected = list(dict.fromkeys(r["node"] for r in ranked))[:3]
    written = json.loads(pins.read_text())
    assert written == expected and len(written) == 3

    cache = tmp_path / "c.cache"
    from trtq.calib.cli import main as calib_main

    res = CliRunner().invoke(
        calib_main,
        ["run", str(path), "--data", str(image_dir), *FLAGS, "--method", "entropy2", "--cache", str(cache)],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "pinned.onnx"
    res = _invoke("export", path, "--int8", "--cache", cache, "--pins", pins, "-o", out)
    assert res.exit_code == 0, res.output
    graph = onnx.load(str(out)).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    by_name = {n.name: n for n in graph.node}
    for node in written:
        assert not dq_outputs & set(by_name[node].input), node  # pinned: no quantized input
    quantized = [n.name for n in graph.node if n.op_type == "Conv" and dq_outputs & set(n.input)]
    assert quantized and not set(quantized) & set(written)


def test_pin_worst_refuses_what_it_cannot_rank(real_models, image_dir, tmp_path):
    path = real_models["cls"]
    base = ["compare", path, "--data", image_dir, *FLAGS, "--precision", "int8"]
    for extra, message in (
        (["--pin-worst", 2], "--pin-worst K and --pins-out FILE go together"),
        (["--pin-worst", 2, "--pins-out", tmp_path / "p.json"], "add --mode layerwise"),
    ):
        res = _invoke(*base, *extra)
        assert res.exit_code == 2 and message in res.output, res.output
        assert "Traceback" not in res.output
    res = _invoke(
        *base[:-1], "both", "--mode", "layerwise", "--pin-worst", 2, "--pins-out", tmp_path / "p.json"
    )
    assert res.exit_code == 2 and "not both" in res.output
    assert not (tmp_path / "p.json").exists()
