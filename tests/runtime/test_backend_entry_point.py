"""A backend installed by another package, through the ``trtq.backends`` entry-point group, is used
by every command that takes ``--backend``: no edit of trtq needed.

The test installs a real (tiny) distribution on ``sys.path``: a ``.dist-info`` with an
``entry_points.txt`` and the module it names. Its backend is ONNX Runtime with one intra-op
thread, counting its builds, so the test can tell that compare, bisect and calib ran on it.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

PLUGIN = textwrap.dedent(
    '''
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    class SingleThreadRunner(OnnxRuntimeRunner):
        """ONNX Runtime on one thread: a third-party backend for the entry-point test."""

        name = "single-thread"
        builds = []

        @classmethod
        def build(cls, model, spec=None, tools=None, *, mark=(), threads=None):
            cls.builds.append(spec.precision if spec else "fp32")
            return super().build(model, spec, tools, mark=mark, threads=1)
    '''
)


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "trtq_single_thread-1.0.dist-info").mkdir(parents=True)
    (site / "trtq_single_thread.py").write_text(PLUGIN)
    info = site / "trtq_single_thread-1.0.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: trtq-single-thread\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[trtq.backends]\nsingle-thread = trtq_single_thread:SingleThreadRunner\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("trtq_single_thread", None)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "precision"))
    from precision_tiny_models import two_conv_workspace

    return two_conv_workspace(tmp_path)


def test_entry_point_backend_is_listed_and_runs_compare_bisect_and_calib(plugin, workspace):
    from trtq.calib.cli import main as calib_main
    from trtq.precision.cli import main as precision_main
    from trtq.runtime import available_backends, get_backend

    assert "single-thread" in available_backends()
    runner_cls = get_backend("single-thread")
    tmp, model, data, cache = workspace

    res = CliRunner().invoke(
        precision_main,
        ["compare", str(model), "--data", str(data), "--cache", str(cache), "--precision", "int8",
         "--backend", "single-thread", "--json", "-", "-q"],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["backend"] == "single-thread (emulated)"
    assert runner_cls.builds == ["int8"]
    assert doc["runs"][0]["outputs"][0]["cosine"] > 0.9

    res = CliRunner().invoke(
        precision_main,
        ["bisect", str(model), "--data", str(data), "--cache", str(cache), "--precision", "int8",
         "--backend", "single-thread", "-o", str(tmp / "pins.json"), "-q"],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code in (0, 1), res.output
    assert json.loads((tmp / "pins.json").read_text())["backend"] == "single-thread (emulated)"
    assert len(runner_cls.builds) > 1 and set(runner_cls.builds) == {"int8"}

    before = len(runner_cls.builds)
    res = CliRunner().invoke(
        calib_main,
        ["run", str(model), "--data", str(data), "--cache", str(tmp / "c.cache"), "--backend", "single-thread",
         "--json", str(tmp / "calib.json"), "-q"],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert runner_cls.builds[before:] == ["fp32"]
    doc = json.loads((tmp / "calib.json").read_text())
    assert doc["backend"] == "single-thread" and doc["created_by"] == "calib run"  # the backend run


def test_unknown_backend_names_the_choices(workspace):
    from trtq.precision.cli import main as precision_main

    _, model, data, _ = workspace
    res = CliRunner().invoke(
        precision_main, ["compare", str(model), "--data", str(data), "--backend", "nope"]
    )
    assert res.exit_code == 2
    assert "unknown backend 'nope'" in res.output and "onnxruntime" in res.output and "tensorrt" in res.output
