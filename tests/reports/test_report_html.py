"""HTML structure of reports: self-contained, escaped, deterministic, small, correct content."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from _reportdata import HTML_BAD, synthetic_bisect, synthetic_calib, synthetic_compare
from _reporthtml import URL_ATTRS, decode_image, parse

from trtq._core.errors import InputError
from trtq.reports import build_report, write_report
from trtq.reports.colours import NONFINITE_COLOUR

EVIL = [HTML_BAD, '"><script>alert(2)</script>', "$\\alpha$ {{7*7}} &amp; </td>", "javascript:alert(3)"]


@pytest.fixture(scope="module")
def three_kinds(tmp_path_factory):
    compare = synthetic_compare(60, seed=1)
    return [compare, synthetic_bisect(compare), synthetic_calib(30, tmp_path_factory.mktemp("calib"))]


@pytest.fixture(scope="module")
def three_kinds_html(three_kinds):
    return build_report(three_kinds)


def _strip_data_uris(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", html)


def test_self_contained_every_image_decodes(three_kinds_html):
    html = three_kinds_html
    doc = parse(html)
    imgs = doc.find("img")
    assert len(imgs) == 1 + 1 + 9  # overview strip, bisect trace, 9 histograms
    for img in imgs:
        im = decode_image(img.attrs["src"])
        assert np.asarray(im.convert("L")).std() > 5
    for el in doc.elements:
        for name, value in el.attrs.items():
            assert not name.startswith("on"), f"event handler attribute on <{el.tag}>"
            if name in URL_ATTRS:
                assert value.startswith("data:image/png;base64,") or value.startswith("#"), (
                    el.tag,
                    name,
                    value[:60],
                )
        assert el.tag not in ("link", "iframe", "object", "embed", "base", "form")
    text = _strip_data_uris(html)
    assert not re.search(r"(?i)\b(?:https?|ftp|wss?|file):", text)
    assert "//" not in text
    assert "@import" not in text and "url(" not in text
    assert len(doc.find("script")) == 1


def test_csp_forbids_network_and_allows_exactly_our_script(three_kinds_html):
    doc = parse(three_kinds_html)
    (meta,) = [m for m in doc.find("meta") if m.attrs.get("http-equiv") == "Content-Security-Policy"]
    csp = meta.attrs["content"]
    assert "default-src 'none'" in csp and "img-src data:" in csp
    (script,) = doc.scripts
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]


def test_model_names_are_escaped(tmp_path):
    compare = synthetic_compare(24, seed=3)
    for k, layer in enumerate(compare["runs"][1]["layers"][:4]):
        for run in compare["runs"]:
            run["layers"][k]["node"] = EVIL[k]
            run["layers"][k]["tensor"] = EVIL[(k + 1) % 4]
            run["layers"][k]["op_type"] = EVIL[(k + 2) % 4]
        layer["rel_l2"] = 10.0 + k  # make them the worst layers: they reach every table
    compare["model"]["path"] = HTML_BAD
    compare["data"]["path"] = EVIL[1]
    compare["data"]["skipped"] = [{"file": EVIL[0], "reason": EVIL[1]}]
    compare["runs"][0]["outputs"][0]["tensor"] = EVIL[2]
    compare["runs"][0]["precision"] = EVIL[2]  # also reaches the matplotlib run labels
    compare["fp16_range"][0]["tensor"] = EVIL[0]
    bisect = synthetic_bisect(compare)
    bisect["pins"][0]["node"] = EVIL[0]
    calib = synthetic_calib(4, tmp_path, names="<img src=x onerror=alert({i})>")
    html = build_report([compare, bisect, calib], title=EVIL[1])
    doc = parse(html)
    assert all(img.attrs["src"].startswith("data:image/png;base64,") for img in doc.find("img"))
    assert len(doc.find("script")) == 1
    assert not any(k.startswith("on") for el in doc.elements for k in el.attrs)
    assert "<img src=x" not in html and "<script>alert" not in html
    text = "".join(doc.text)
    for evil in EVIL:
        assert evil in text, f"{evil!r} not shown as text"
    assert "<img src=x onerror=alert(3)>" in text  # a calib tensor name, in a histogram caption


def test_same_input_same_bytes_across_processes(tmp_path, three_kinds, three_kinds_html):
    first = three_kinds_html
    paths = []
    for i, r in enumerate(three_kinds):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(r))
        paths.append(str(p))
    out = tmp_path / "again.html"
    code = (
        "import json,sys; from trtq.reports import write_report; "
        "write_report(sys.argv[1], [json.load(open(p)) for p in sys.argv[2:]])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(out), *paths],
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    )
    assert out.read_bytes() == first.encode("utf-8")


def test_3000_layer_model_fits_in_20_mb(tmp_path):
    compare = synthetic_compare(3000, seed=7)
    bisect = synthetic_bisect(compare, n_pins=40)
    calib = synthetic_calib(3000, tmp_path)
    out = tmp_path / "big.html"
    write_report(out, [compare, bisect, calib])
    size = out.stat().st_size
    assert size < 20_000_000, f"{size / 1e6:.1f} MB"
    doc = parse(out.read_text(encoding="utf-8"))
    heat_rows = [td for td in doc.find("td", cls="name") if td.attrs.get("title", "").startswith("tensor ")]
    assert len(heat_rows) == 3000 + 40  # every layer in the heatmap, plus the worst-40 table
    strip = decode_image(doc.find("img")[0].attrs["src"])
    assert strip.width <= 1400 and strip.height < 400  # compact: not one pixel row per layer
    # the two FP16 NaN layers are in there, as NaN cells, despite 3,000 neighbours
    assert len(doc.find("td", cls="nf")) >= 2 * 2


def test_worst_table_is_ranked_nonfinite_first(small_compare):
    doc = parse(build_report([small_compare]))
    table_rows = []
    in_worst = False
    for el in doc.elements:
        if el.tag == "table":
            in_worst = "worst-table" in el.attrs.get("class", "")
        elif in_worst and el.tag == "td" and "name" in el.attrs.get("class", ""):
            table_rows.append("".join(el.text).replace("FP32", "").strip())
    scores = {}
    for run in small_compare["runs"]:
        for layer in run["layers"]:
            s = math.inf if layer["nonfinite"] else layer["rel_l2"]
            scores[layer["node"]] = max(scores.get(layer["node"], -math.inf), s)
    expected = sorted(scores, key=lambda n: -scores[n])[: len(table_rows)]
    assert table_rows == expected
    assert scores[table_rows[0]] == math.inf and scores[table_rows[1]] == math.inf


def test_nan_layers_are_marked_in_the_overview_strip(small_compare):
    doc = parse(build_report([small_compare]))
    strip = np.asarray(decode_image(doc.find("img")[0].attrs["src"]).convert("RGB")).reshape(-1, 3)
    purple = np.array([int(NONFINITE_COLOUR[i : i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(strip.astype(int) - purple).sum(axis=1) < 6).sum() > 50
    clean = synthetic_compare(60, seed=1)
    for run in clean["runs"]:
        for layer in run["layers"]:
            if layer["nonfinite"]:
                layer.update(
                    nonfinite=0.0, rel_l2=0.01, cosine=0.9999, max_abs=0.1, mean_abs=0.01, sqnr_db=40.0
                )
    strip2 = np.asarray(
        decode_image(parse(build_report([clean])).find("img")[0].attrs["src"]).convert("RGB")
    ).reshape(-1, 3)
    assert (np.abs(strip2.astype(int) - purple).sum(axis=1) < 6).sum() == 0


def test_runs_of_one_model_share_a_heatmap_and_bisect_pins_are_marked():
    fp16 = synthetic_compare(30, seed=2)
    int8 = synthetic_compare(30, seed=2)
    fp16["runs"] = fp16["runs"][:1]
    int8["runs"] = int8["runs"][1:2]
    other = synthetic_compare(12, seed=4, names="other_{op}_{i}")
    bisect = synthetic_bisect(int8, n_pins=2)
    html = build_report([fp16, int8, other, bisect])
    doc = parse(html)
    groups = [("".join(th.text)) for th in doc.find("th", cls="grp")]
    # model 1: FP16 and INT8 side by side in the worst table and the heatmap; model 2: its 3 runs
    assert groups[:2] == ["FP16", "INT8 implicit"] and groups[2:4] == ["FP16", "INT8 implicit"]
    assert len(groups) == 4 + 2 * 3
    assert len(doc.find("section", id="compare")) == 1 and len(doc.find("section", id="compare-2")) == 1
    pinned = set(re.findall(r'<tr class=pinned>.*?<td class="name" title="tensor [^"]*">([^<]*)</td>', html))
    # model 1 has no pinned run: its marked rows are exactly the bisect's pins; model 2 its own
    assert pinned == {p["node"] for p in bisect["pins"]} | set(other["runs"][2]["pins"])
    assert not {p["node"] for p in bisect["pins"]} & set(other["runs"][2]["pins"])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "no results"),
        (["text"], "result 1: expected a JSON object"),
        ([{"schema": 1}], "result 1: not a trtq result"),
        ([{"kind": "nonsense", "schema": 1}], "unknown result kind 'nonsense'"),
        ([{"kind": "compare", "schema": 2}], "schema 2 is not supported"),
    ],
)
def test_bad_results_raise_one_line_input_errors(bad, message):
    with pytest.raises(InputError, match=re.escape(message)) as info:
        build_report(bad)
    assert "\n" not in str(info.value)


def test_write_report_is_atomic_on_failure(tmp_path, small_compare):
    out = tmp_path / "r.html"
    write_report(out, [small_compare])
    before = out.read_bytes()
    with pytest.raises(InputError):
        write_report(out, [small_compare, {"kind": "compare", "schema": 9}])
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_sparse_results_still_render():
    """Producers may omit optional blocks: the report shows "—" instead of failing."""
    html = build_report(
        [
            {"kind": "compare", "schema": 1},
            {
                "kind": "compare",
                "schema": 1,
                "model": {"path": "m.onnx"},
                "runs": [{"precision": "int8", "layers": [], "outputs": []}],
            },
            {
                "kind": "bisect",
                "schema": 1,
                "settings": {"metric": "rel-l2", "threshold": 0.1},
                "trace": [
                    {"eval": 1, "set_size": 0, "metric": None, "passed": False},
                    {"eval": 2, "set_size": 5, "metric": 0.05, "passed": True},
                ],
            },
            {"kind": "calib", "schema": 1},
        ]
    )
    doc = parse(html)
    assert len(doc.find("section", cls="block")) == 1 + 2 + 1 + 1
    (trace,) = [img for img in doc.find("img") if "trace" in img.attrs.get("alt", "")]
    decode_image(trace.attrs["src"])
    assert "this result names no histogram file" in html
