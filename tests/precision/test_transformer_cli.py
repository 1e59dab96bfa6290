"""``--mha fp16|int8`` through the CLI on a synthetic transformer block: export places the
attention Q/DQ only with int8, compare and bisect record the choice, pin replays it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from precision_tiny_models import write_workspace
from transformer_tiny_blocks import block_inputs, encoder_block

from trtq.precision.cli import main


@pytest.fixture(scope="module")
def block_workspace(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("block")
    rs = np.random.RandomState(0)
    return (tmp, *write_workspace(tmp, encoder_block(), [block_inputs(rs) for _ in range(4)]))


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _qdq_consumers(path) -> set[str]:
    m = onnx.load(path)
    producer = {o: n for n in m.graph.node for o in n.output}
    return {
        n.name
        for n in m.graph.node
        if n.op_type != "QuantizeLinear"
        and any(t in producer and producer[t].op_type == "DequantizeLinear" for t in n.input)
    }


def test_export_mha_choice(block_workspace):
    tmp, model, _data, cache = block_workspace
    for mha in ("fp16", "int8"):
        out = tmp / f"{mha}.onnx"
        args = ["export", model, "--int8", "--cache", cache, "-o", out] + (
            ["--mha", mha] if mha == "int8" else []
        )
        res = _invoke(*args)
        assert res.exit_code == 0, res.output
        assert ({"bmm1", "bmm2"} <= _qdq_consumers(out)) == (mha == "int8")
        assert not {"softmax", "ln1/mean", "ln2/sub"} & _qdq_consumers(out)


def test_compare_records_mha(block_workspace):
    tmp, model, data, cache = block_workspace
    out = tmp / "c.json"
    res = _invoke("compare", model, "--data", data, "--cache", cache, "--precision", "both", "--mha", "int8",
                  "--json", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    runs = json.loads(out.read_text())["runs"]
    assert [(r["precision"], r["mha"]) for r in runs] == [("fp16", None), ("int8", "int8")]
    assert not {"probs", "scores", "ln1.d2"} & {la["tensor"] for la in runs[1]["layers"]}


def test_bisect_records_mha_and_pin_replays_it(block_workspace):
    tmp, model, data, cache = block_workspace
    pins = tmp / "pins.json"
    res = _invoke("bisect", model, "--data", data, "--cache", cache, "--precision", "int8", "--mha", "int8",
                  "--threshold", "0.9999", "-o", pins)  # fmt: skip
    assert res.exit_code in (0, 1), res.output
    assert json.loads(pins.read_text())["settings"]["mha"] == "int8"
    written = tmp / "pinned.onnx"
    res = _invoke("pin", model, "--pins", pins, "--data", data, "-o", written)
    assert res.exit_code in (0, 1), res.output
    assert {"bmm1", "bmm2"} & _qdq_consumers(written)  # int8 attention replayed from pins.json


def test_unknown_mha_is_rejected_by_click(block_workspace):
    _tmp, model, _data, cache = block_workspace
    res = _invoke("export", model, "--int8", "--cache", cache, "--mha", "fp8", "-o", "x.onnx")
    assert res.exit_code == 2 and "fp8" in res.output


def test_report_names_the_mha_choice(block_workspace):
    """The HTML report tells an ``--mha int8`` run from the default one (compare and bisect)."""
    from trtq.reports.cli import main as reports_main

    tmp, model, data, cache = block_workspace
    docs = []
    for mha in ("fp16", "int8"):
        out = tmp / f"cmp-{mha}.json"
        res = _invoke("compare", model, "--data", data, "--cache", cache, "--precision", "int8", "--mha", mha,
                      "--json", out)  # fmt: skip
        assert res.exit_code == 0, res.output
        docs.append(out)
    pins = tmp / "pins-report.json"
    res = _invoke("bisect", model, "--data", data, "--cache", cache, "--precision", "int8", "--mha", "int8",
                  "--threshold", "0.9999", "-o", pins)  # fmt: skip
    assert res.exit_code in (0, 1), res.output
    html = tmp / "r.html"
    res = CliRunner().invoke(reports_main, ["build", *map(str, docs), str(pins), "-o", str(html)])
    assert res.exit_code == 0, res.output
    text = html.read_text()
    assert "MHA INT8" in text  # the int8 run's column label
    assert "attention products INT8" in text  # the bisect section's settings line
    assert text.count("MHA INT8") < text.count("INT8 explicit")  # the fp16 run is labelled without it
