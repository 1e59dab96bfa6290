"""End to end on a BERT-style masked text encoder (tests/bert_encoder.py), as a new user runs it:
``.npz`` folders of padded token ids, no ``--shape``, every calibration method, compare in FP16 and
INT8, the FP16 range check, and the exported INT8 model on held-out samples.

The expectations come from the data, not from trtq: a sample with ``p`` padding tokens puts ``p``
masked keys into the mask and ``heads x seq x p`` into each layer's attention scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from trtq.calib.cache import read_cache
from trtq.calib.cli import main as calib_main
from trtq.precision.cli import main as precision_main
from trtq.precision.fp16_range import MASK_NOTE_HARMLESS, MASK_NOTE_WHOLE_ROW

pytestmark = pytest.mark.slow

METHODS = ["entropy2", "minmax", "percentile", "mse", "auto"]
HEADS, SEQ = 4, 32
LOWEST = float(np.finfo(np.float32).min)


def _cli(main, *args) -> tuple[str, int]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return " ".join(r.output.split()), r.exit_code  # the console wraps long lines


def _padding(folder: Path) -> list[int]:
    return [SEQ - int(np.load(f)["attention_mask"].sum()) for f in sorted(folder.glob("*.npz"))]


def _score_adds(model: Path) -> list[str]:
    """The tensors read by each layer's Softmax: attention scores plus the mask."""
    graph = onnx.load(model).graph
    return [n.input[0] for n in graph.node if n.op_type == "Softmax"]


def _mask_add_input(model: Path, scores: str) -> str:
    """The scores that ``scores`` (= scores + mask) adds the mask to."""
    graph = onnx.load(model).graph
    add = next(n for n in graph.node if n.output[0] == scores)
    mask = next(n.output[0] for n in graph.node if n.op_type == "Where")
    return next(i for i in add.input if i != mask)


def _attention_output(model: Path, scores: str) -> str:
    """The output of the second MatMul of the attention block whose Softmax reads ``scores``."""
    graph = onnx.load(model).graph
    probs = next(n.output[0] for n in graph.node if n.op_type == "Softmax" and n.input[0] == scores)
    return next(n.output[0] for n in graph.node if n.op_type == "MatMul" and n.input[0] == probs)


def _calibrate(
    bert, tmp_path: Path, method: str = "entropy2", model: str = "model"
) -> tuple[dict, Path, str]:
    cache, doc = tmp_path / f"{method}.cache", tmp_path / f"{method}.json"
    said, code = _cli(
        calib_main,
        "run",
        bert[model],
        "--data",
        bert["cal"],
        "--method",
        method,
        "--cache",
        cache,
        "--json",
        doc,
    )
    assert code == 0, said
    return json.loads(doc.read_text()), cache, said


@pytest.mark.parametrize("method", METHODS)
def test_every_method_calibrates_and_the_minus_inf_mask_stays_in_float(bert_encoder, tmp_path, method):
    doc, cache, said = _calibrate(bert_encoder, tmp_path, method)
    masked = sum(_padding(bert_encoder["cal"]))
    assert masked > 0
    rows = {t["name"]: t for t in doc["tensors"]}
    scores = _score_adds(bert_encoder["model"])
    assert len(scores) == 2
    # -inf counted where the data puts it, never binned
    assert all(rows[s]["nonfinite"] == HEADS * SEQ * masked for s in scores)
    (mask,) = [n for n, t in rows.items() if t["op_type"] == "Where"]
    assert rows[mask]["nonfinite"] == masked
    holding = {n for n, t in rows.items() if t["nonfinite"] or t["mask_fill"]}
    assert holding == {mask, *scores}
    # ... and those tensors get no scale; every other tensor does, finite and positive
    amax = read_cache(cache).amax()
    assert set(amax) == set(rows) - holding
    assert all(np.isfinite(v) and v > 0 for v in amax.values())
    assert all(rows[n]["amax"] is None for n in holding)
    assert "3 tensor(s) held ±inf/NaN" in said and "no scale in the cache" in said
    # the sequence length comes from the samples (no --shape), and the summary counts samples
    assert [i["shape"] for i in doc["model"]["inputs"]] == [[1, SEQ]] * 3
    assert "samples used 16" in said and "images" not in said


def test_float32_lowest_mask_fills_are_counted_not_binned(bert_encoder, tmp_path):
    doc, cache, said = _calibrate(bert_encoder, tmp_path, model="model_lowest")
    masked = sum(_padding(bert_encoder["cal"]))
    rows = {t["name"]: t for t in doc["tensors"]}
    for s in _score_adds(bert_encoder["model_lowest"]):
        assert rows[s]["mask_fill"] == HEADS * SEQ * masked and rows[s]["nonfinite"] == 0
        assert rows[s]["max_abs"] < 10  # the real scores, not 3.4e38
    holding = {n for n, t in rows.items() if t["mask_fill"]}
    assert holding and not holding & set(read_cache(cache).amax())
    assert "mask fills" in said


def test_sequence_length_follows_the_samples(bert_encoder, tmp_path):
    import bert_encoder as bert

    short = tmp_path / "short"
    short.mkdir()
    samples = bert.make_samples(3, seed=7, seq=24)
    for i in range(3):
        np.savez(short / f"{i}.npz", **{k: v[i] for k, v in samples.items()})
    doc = tmp_path / "c.json"
    said, code = _cli(
        calib_main,
        "run",
        bert_encoder["model"],
        "--data",
        short,
        "--cache",
        tmp_path / "c.cache",
        "--json",
        doc,
    )
    assert code == 0, said
    assert [i["shape"] for i in json.loads(doc.read_text())["model"]["inputs"]] == [[1, 24]] * 3


def _fp32(model: Path, folder: Path, names: list[str]) -> dict[str, np.ndarray]:
    """FP32 values of ``names`` on every sample of ``folder`` (ONNX Runtime, batch 1)."""
    import onnxruntime as ort
    from onnx import helper

    proto = onnx.load(model)
    proto.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    runs = [
        session.run(names, {k: v[None] for k, v in np.load(f).items()}) for f in sorted(folder.glob("*.npz"))
    ]
    return {n: np.concatenate([r[i] for r in runs]) for i, n in enumerate(names)}


def test_compare_reports_no_nonfinite_that_fp32_shares(bert_encoder, tmp_path):
    _, cache, _ = _calibrate(bert_encoder, tmp_path)
    doc_path = tmp_path / "cmp.json"
    said, code = _cli(
        precision_main, "compare", bert_encoder["model"], "--data", bert_encoder["cal"], "--cache", cache,
        "--precision", "both", "--mode", "both", "--eval-data", bert_encoder["held"], "--json", doc_path,
    )  # fmt: skip
    assert code == 0, said
    doc = json.loads(doc_path.read_text())
    scores = _score_adds(bert_encoder["model"])
    # FP32 really holds -inf in the masked scores, exactly where the data has padding
    fp32 = _fp32(bert_encoder["model"], bert_encoder["cal"], scores)
    for s in scores:
        assert np.isneginf(fp32[s]).sum() == HEADS * SEQ * sum(_padding(bert_encoder["cal"]))
    runs = doc["runs"] + doc["held_out"]["runs"]
    assert {(r["precision"], r["mode"]) for r in doc["runs"]} == {
        ("fp16", "graphwise"), ("fp16", "layerwise"), ("int8", "graphwise"), ("int8", "layerwise"),
    }  # fmt: skip
    for run in runs:
        records = run["layers"] + run["outputs"]
        # no non-finite record: the reduced models hold the same -inf where FP32 does
        assert all(r["nonfinite"] == 0 for r in records), run["precision"]
        assert all(r["rel_l2"] is not None and np.isfinite(r["rel_l2"]) for r in records)
        # the masked scores live inside the fused attention layer (TensorRT never materialises
        # them, so they are not compared); the mask adds no error of its own: the attention
        # output errs no more than the scores did before the mask
        layers = {r["tensor"]: r for r in run["layers"]}
        for s in scores:
            assert s not in layers and _mask_add_input(bert_encoder["model"], s) not in layers
            out = layers.get(_attention_output(bert_encoder["model"], s))
            if out is None:  # layerwise INT8: the attention layer is not quantized (--mha fp16)
                assert (run["precision"], run["mode"]) == ("int8", "layerwise")
                continue
            assert out["rel_l2"] < (0.005 if run["precision"] == "fp16" else 0.1), (run["precision"], s)
    # the -inf constant is told apart: not beyond 65504, already -inf in FP32
    assert doc["fp16_range"] == []
    (const,) = doc["fp16_range_fp32_nonfinite"]
    assert const["node"] == "/Where" and "-inf in FP32" in const["note"] and "Softmax mask" in const["note"]
    assert "not findings" in said and "beyond 65504" not in said
    assert "held, 8 samples" in said


def _compare_fp16(model: Path, data: Path, doc_path: Path) -> tuple[dict, str]:
    said, code = _cli(
        precision_main, "compare", model, "--data", data, "--precision", "fp16", "--json", doc_path
    )
    assert code == 0, said
    return json.loads(doc_path.read_text()), said


def test_fp16_range_names_float32_lowest_fills_as_harmless_mask_fills(bert_encoder, tmp_path):
    doc, _ = _compare_fp16(bert_encoder["model_lowest"], bert_encoder["cal"], tmp_path / "cmp.json")
    issues = {i["tensor"]: i for i in doc["fp16_range"]}
    scores = _score_adds(bert_encoder["model_lowest"])
    assert set(scores) <= set(issues)
    # no sample of this data masks a whole row (every sample has real tokens): harmless here
    assert all(
        i["note"] == MASK_NOTE_HARMLESS and i["max_abs"] == pytest.approx(-LOWEST) for i in issues.values()
    )
    assert doc["fp16_range_fp32_nonfinite"] == []
    # FP32 -3.4e38 vs FP16 -inf at the masked positions is no error
    (run,) = doc["runs"]
    assert all(r["nonfinite"] == 0 for r in run["layers"] + run["outputs"])


def test_fp16_range_says_when_the_data_masks_a_whole_row(bert_encoder, tmp_path):
    """A sample with no real token: FP32 adds float32's lowest value to every score of the row and
    gets a uniform Softmax row; FP16 gets -inf everywhere and NaN."""
    data = tmp_path / "data"
    data.mkdir()
    for f in sorted(bert_encoder["cal"].glob("*.npz"))[:3]:
        (data / f.name).write_bytes(f.read_bytes())
    empty = dict(np.load(data / "001.npz"))
    empty["attention_mask"] = np.zeros(SEQ, np.int64)
    np.savez(data / "zz_empty.npz", **empty)
    doc, said = _compare_fp16(bert_encoder["model_lowest"], data, tmp_path / "cmp.json")
    graph = onnx.load(bert_encoder["model_lowest"]).graph
    # each Softmax lives inside its fused attention layer: its NaN shows in the layer's output
    records = {r["tensor"]: r for r in doc["runs"][0]["layers"]}
    outs = {
        _attention_output(bert_encoder["model_lowest"], n.input[0])
        for n in graph.node
        if n.op_type == "Softmax"
    }
    assert len(outs) == 2 and all(records[o]["nonfinite"] > 0 for o in outs)
    issues = {i["tensor"]: i for i in doc["fp16_range"]}
    for node in (n for n in graph.node if n.op_type == "Softmax"):  # each layer's scores name their Softmax
        note = issues[node.input[0]]["note"]
        assert note.startswith(MASK_NOTE_WHOLE_ROW.split("({")[0]) and node.output[0] in note
    assert "whole rows are masked" in said


def _hidden_cosine(model: Path, reference: Path, folder: Path) -> float:
    """Mean cosine over samples and real (non-padded) tokens of the hidden states vs ``reference``."""
    import bert_encoder as bert
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    got, ref = (
        ort.InferenceSession(str(m), opts, providers=["CPUExecutionProvider"]) for m in (model, reference)
    )
    feeds = [{k: v[None] for k, v in np.load(f).items()} for f in sorted(folder.glob("*.npz"))]
    return bert.token_cosine(
        [ref.run(None, f)[0] for f in feeds],
        [got.run(None, f)[0] for f in feeds],
        [f["attention_mask"] for f in feeds],
    )


def test_int8_export_keeps_the_mask_and_holds_on_held_out_samples(bert_encoder, tmp_path):
    _, cache, _ = _calibrate(bert_encoder, tmp_path)
    qdq = tmp_path / "bert.qdq.onnx"
    said, code = _cli(precision_main, "export", bert_encoder["model"], "--int8", "--cache", cache, "-o", qdq)
    assert code == 0, said
    graph = onnx.load(qdq).graph
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    mask = next(n.output[0] for n in graph.node if n.op_type == "Where")
    assert quantized and mask not in quantized and not quantized & set(_score_adds(bert_encoder["model"]))
    assert _hidden_cosine(qdq, bert_encoder["model"], bert_encoder["held"]) > 0.99
