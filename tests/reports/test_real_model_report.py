"""End to end on the real PP-OCR cls model: measured compare/bisect/calib results -> one report."""

from __future__ import annotations

import math
import os

import numpy as np
from _reporthtml import decode_image, parse

from trtq.reports import build_report, write_report


def _rank_key(layer: dict) -> float:
    if layer["nonfinite"]:
        return math.inf
    return layer["rel_l2"] if layer["rel_l2"] is not None else -math.inf


def test_real_report_shows_measured_results(real_results, tmp_path):
    compare, bisect, calib = real_results["compare"], real_results["bisect"], real_results["calib"]
    out = tmp_path / "cls.html"
    write_report(out, [compare, bisect, calib], title="PP-OCR cls")
    if os.environ.get("TRTQ_KEEP_REPORT"):
        import shutil

        shutil.copy(out, os.environ["TRTQ_KEEP_REPORT"])
    html = out.read_text(encoding="utf-8")
    doc = parse(html)

    # heatmap: one row per layer, in topological order
    heat = doc.find("table", id="heatmap-table")
    assert len(heat) == 1
    rows = [e for e in doc.elements if e.tag == "tr"]
    layers = compare["runs"][0]["layers"]
    node_cells = [e for e in doc.find("td", cls="name") if e.attrs.get("title", "").startswith("tensor ")]
    heat_nodes = ["".join(e.text) for e in node_cells][-len(layers) :]
    assert heat_nodes == [layer["node"] for layer in sorted(layers, key=lambda r: r["index"])]
    assert rows

    # worst table: rank 1 is the layer with the largest rel L2 over all runs (NaN/Inf first)
    worst_rows = doc.find("table", cls="worst-table")
    assert worst_rows
    scores: dict[str, float] = {}
    for run in compare["runs"]:
        for layer in run["layers"]:
            scores[layer["node"]] = max(scores.get(layer["node"], -math.inf), _rank_key(layer))
    expected_first = max(scores, key=lambda n: scores[n])
    worst_nodes = [e for e in node_cells][: min(40, len(layers))]
    assert "".join(worst_nodes[0].text) == expected_first

    # pins found by the bisect are marked on the heatmap rows
    pinned_rows = [e for e in doc.find("tr", cls="pinned")]
    assert len(pinned_rows) >= len(bisect["pins"]) > 0

    # the calibration histograms: one image per worst tensor, each a real PNG, and the note about
    # histograms absent (the .npz the result names was found)
    hist_imgs = [e for e in doc.find("img") if "histogram" in e.attrs.get("alt", "")]
    assert len(hist_imgs) == min(9, len(calib["tensors"]))
    for img in doc.find("img"):
        im = decode_image(img.attrs["src"])
        px = np.asarray(im.convert("L"), dtype=np.float64)
        assert px.std() > 5, "a figure is blank"
    assert "No histograms drawn" not in html

    # bisect trace and numbers
    assert len(doc.find("img", cls=None)) >= 3
    assert any("search trace" in e.attrs.get("alt", "") for e in doc.find("img"))
    text = " ".join(doc.text)
    assert f"{bisect['baseline_metric']:.5g}" in text
    assert f"Layers to keep in FP32 ({len(bisect['pins'])})" in text


def test_histogram_argument_overrides_result_path(real_results):
    calib = dict(real_results["calib"], histograms="/nonexistent/h.npz")
    html = build_report([calib])
    assert "No histograms drawn" in html and "histogram file not found" in html
    html2 = build_report([calib], histograms=real_results["npz"])
    assert "No histograms drawn" not in html2
    assert html2.count('alt="|x| histogram') == 9
