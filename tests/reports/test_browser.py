"""Render reports in a real browser: Debian's chromium, headless, offline.

Skipped when /usr/bin/chromium is absent (CI installs it: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _reportdata import synthetic_bisect, synthetic_calib, synthetic_compare
from _reporthtml import parse
from PIL import Image

from trtq.reports import write_report

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


def dump_dom(page: Path, tmp: Path) -> tuple[str, str]:
    proc = chromium(page, tmp, "--dump-dom")
    return proc.stdout, proc.stderr


def screenshot(page: Path, tmp: Path) -> np.ndarray:
    png = tmp / (page.stem + ".png")
    chromium(page, tmp, f"--screenshot={png}", "--window-size=1400,2000")
    return np.asarray(Image.open(png).convert("RGB"), dtype=np.int32)


def _heat_rows(dom: str) -> int:
    table = dom.split('id="heatmap-table"', 1)[1].split("</table>", 1)[0]
    return table.split("<tbody>", 1)[1].count("<tr")


def _check_rendering(page: Path, tmp: Path, n_layers: int) -> np.ndarray:
    dom, log = dump_dom(page, tmp)
    doc = parse(dom)
    assert _heat_rows(dom) == n_layers
    (worst,) = doc.find("table", cls="worst-table")
    assert worst.attrs.get("data-sort-ready") == "1", "the sorting script did not run (CSP hash?)"
    assert doc.find("div", cls="heatmap-strip")
    assert "Content Security Policy" not in log and "Refused to" not in log, log[-2000:]
    shot = screenshot(page, tmp)
    assert shot.shape[:2] == (2000, 1400)
    assert shot.std() > 20, "blank screenshot"
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    warm = (r > 180) & (g < 170) & (b < 120)  # the yellow-red error scale of heatmap and tables
    assert warm.sum() > 5000, f"only {warm.sum()} heatmap-coloured pixels on screen"
    return shot


def test_real_model_report_renders_in_chromium(real_results, tmp_path):
    page = tmp_path / "cls.html"
    write_report(page, [real_results["compare"], real_results["bisect"], real_results["calib"]])
    _check_rendering(page, tmp_path, len(real_results["compare"]["runs"][0]["layers"]))


def test_3000_layer_report_renders_in_chromium(tmp_path):
    compare = synthetic_compare(3000, seed=11)
    page = tmp_path / "big.html"
    write_report(page, [compare, synthetic_bisect(compare, n_pins=20), synthetic_calib(200, tmp_path)])
    _check_rendering(page, tmp_path, 3000)


def test_table_sorting_works_in_chromium(tmp_path):
    """Click headers from a test script (allowed by adding its hash to the page's CSP) and read
    the row order back from the DOM."""
    compare = synthetic_compare(80, seed=5)
    page = tmp_path / "sort.html"
    write_report(page, [compare])
    html = page.read_text(encoding="utf-8")
    probe = (
        "var t=document.querySelector('table.worst-table');"
        "t.querySelector('th[data-col=\"7\"]').click();"  # INT8 implicit, rel L2: worst first
        "var h=document.getElementById('heatmap-table');"
        "h.querySelector('th[data-col=\"1\"]').click();"  # op, alphabetical
    )
    digest = base64.b64encode(hashlib.sha256(probe.encode()).digest()).decode()
    assert "script-src &#39;sha256-" in html  # the policy is an attribute value: quotes escaped
    html = html.replace("script-src &#39;sha256-", f"script-src &#39;sha256-{digest}&#39; &#39;sha256-", 1)
    html = html.replace("</body>", f"<script>{probe}</script></body>", 1)
    page.write_text(html, encoding="utf-8")
    dom, log = dump_dom(page, tmp_path)
    assert "Content Security Policy" not in log and "Refused to" not in log, log[-2000:]
    worst = dom.split("worst-table", 1)[1].split("</table>", 1)[0]
    values = []
    for row in worst.split("<tbody>", 1)[1].split("<tr")[1:]:
        cells = re.findall(r'<td[^>]*data-v="([^"]*)"', row)
        values.append(float(cells[5]))  # data-v of: rank, #, FP16 x3, then INT8 implicit rel L2
    assert values == sorted(values, reverse=True) and len(values) == 40
    heat = dom.split('id="heatmap-table"', 1)[1].split("</table>", 1)[0]
    ops = re.findall(r'<td class="op">([^<]*)</td>', heat)
    assert len(ops) == 80 and ops == sorted(ops)
    assert 'aria-sort="ascending"' in heat


def test_quantize_report_renders_in_chromium(real_models, image_dir, tmp_path):
    """The "quantize" section of a real ``precision quantize`` run: both judgements and the pins."""
    import json

    from click.testing import CliRunner

    from trtq.precision.cli import main as precision

    res = CliRunner().invoke(
        precision,
        ["quantize", str(real_models["cls"]), "--data", str(image_dir), "--eval-data", str(image_dir),
         "--limit", "4", "--shape", "x:1x3x48x192", "--preset", "paddleocr-rec", "--pin-worst", "2",
         "--metric", "top1", "-o", str(tmp_path / "q.onnx"), "--json", str(tmp_path / "q.json")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "q.json").read_text())
    page = tmp_path / "q.html"
    write_report(page, [doc])
    dom, log = dump_dom(page, tmp_path)
    assert "Content Security Policy" not in log and "Refused to" not in log, log[-2000:]
    html = parse(dom)
    assert any("Quantized model" in "".join(h.text) for h in html.find("h2"))
    (pins,) = html.find("table", cls="pin-table")
    cells = [t.strip() for t in pins.text if t.strip()]
    assert [c for c in cells if c in doc["pins"]] == doc["pins"]  # worst first, as in the document
    assert "top1, held out (4)" in dom and "cosine, calibration (4)" in dom
