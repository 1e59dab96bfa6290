"""``reports build``: exit codes, one-line errors, no half-written output, --json, --help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _reportdata import synthetic_bisect, synthetic_calib, synthetic_compare
from _reporthtml import parse


def reports(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trtq.reports.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("saved")
    compare = synthetic_compare(40, seed=2)
    fp16, int8 = dict(compare, runs=compare["runs"][:1]), dict(compare, runs=compare["runs"][1:])
    calib = synthetic_calib(12, d)
    npz = Path(calib["histograms"])
    calib["histograms"] = npz.name  # relative to the JSON file, as a producer in that folder writes it
    paths = {
        "fp16": d / "fp16.json",
        "int8": d / "int8.json",
        "bisect": d / "bisect.json",
        "calib": d / "calib.json",
    }
    for key, obj in (("fp16", fp16), ("int8", int8), ("bisect", synthetic_bisect(compare)), ("calib", calib)):
        paths[key].write_text(json.dumps(obj), encoding="utf-8")
    return paths


def test_build_side_by_side_with_json_output(saved, tmp_path):
    out = tmp_path / "sub" / "r.html"
    proc = reports(
        "build",
        *(str(saved[k]) for k in ("fp16", "int8", "bisect", "calib")),
        "-o",
        str(out),
        "--json",
        "-",
        "--title",
        "det <b>",
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["report"] == str(out) and info["bytes"] == out.stat().st_size
    doc = parse(out.read_text(encoding="utf-8"))
    groups = ["".join(th.text) for th in doc.find("th", cls="grp")]
    assert groups[:4] == [
        "FP16",
        "INT8 implicit",
        "INT8 implicit + 3 pins",
        "FP16",
    ]  # one heatmap for both files
    # the calib histograms were found beside the JSON file (relative path in the result)
    assert sum("histogram" in img.attrs.get("alt", "") for img in doc.find("img")) == 9
    assert "det <b>" in "".join(doc.find("h1")[0].text)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON (line 1"),
        ('{"kind": "compare", "schema": 3}', "schema 3 is not supported"),
        ('{"hello": 1}', "not a trtq result"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    out = tmp_path / "r.html"
    proc = reports("build", str(bad), "-o", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"error: {bad}: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_missing_result_and_histogram_files(saved, tmp_path):
    out = tmp_path / "r.html"
    proc = reports("build", str(tmp_path / "nope.json"), "-o", str(out))
    assert proc.returncode == 2 and "nope.json: no such file" in proc.stderr and not out.exists()
    proc = reports("build", str(saved["calib"]), "--histograms", str(tmp_path / "h.npz"), "-o", str(out))
    assert proc.returncode == 2 and "h.npz: histogram file not found" in proc.stderr and not out.exists()


def test_help_has_examples():
    proc = reports("build", "--help")
    assert proc.returncode == 0
    assert "Examples:" in proc.stdout and "reports build compare.json -o report.html" in proc.stdout


def test_build_refuses_malformed_results_inputs_as_outputs_and_foreign_histograms(saved, tmp_path):
    compare = json.loads(saved["int8"].read_text(encoding="utf-8"))
    cases = {
        "runs-a-string.json": (dict(compare, runs="x"), "'runs' of a compare result must be a list"),
        "runs-of-ints.json": (dict(compare, runs=[5]), "malformed compare result"),
        "model-a-string.json": (dict(compare, model="x"), "malformed compare result"),
        "tensors-a-number.json": (
            dict(compare, kind="calib", tensors=5),
            "'tensors' of a calib result must be a list",
        ),
    }
    out = tmp_path / "r.html"
    for name, (doc, message) in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(doc), encoding="utf-8")
        proc = reports("build", str(path), "-o", str(out))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith(f"error: {path}: {message}"), proc.stderr
        assert not out.exists()

    before = saved["int8"].read_bytes()
    proc = reports("build", str(saved["int8"]), "-o", str(saved["int8"]))
    assert proc.returncode == 2 and "refusing to overwrite the input" in proc.stderr
    assert saved["int8"].read_bytes() == before

    calib = json.loads(saved["calib"].read_text(encoding="utf-8"))
    other = tmp_path / "other.npz"
    import numpy as np

    np.savez(other, format=1, names=np.array(["not_a_tensor"]), counts=np.ones((1, 8)), upper=np.ones(1))
    calib_path = tmp_path / "calib.json"
    calib_path.write_text(json.dumps(dict(calib, histograms=None)), encoding="utf-8")
    proc = reports("build", str(calib_path), "--histograms", str(other), "-o", str(out))
    assert proc.returncode == 2 and "another model's?" in proc.stderr, proc.stderr
