"""The calibrator registry: built-ins, ``package.module:Class`` specs, the ``trtq.calibrators``
entry-point group (through a real installed-distribution layout on sys.path) and registration.
Nothing here needs TensorRT."""

from __future__ import annotations

import textwrap

import pytest

from trtq._core.errors import InputError
from trtq.calib.tensorrt import CalibratorAdapter, get_calibrator, list_calibrators, register_calibrator
from trtq.calib.tensorrt.builtin import BUILTIN
from trtq.calib.tensorrt.registry import _REGISTERED, calibrator_for_algorithm

PLUGIN = textwrap.dedent(
    """
    from trtq.calib.tensorrt import CalibratorAdapter

    class Mine(CalibratorAdapter):
        name = "mine"
        trt_base = "IInt8MinMaxCalibrator"
        algorithm = "MinMaxCalibration"
        description = "a user's calibrator"

    class NotOne:
        pass
    """
)


@pytest.fixture()
def plugin_dist(tmp_path, monkeypatch):
    """An installed distribution 'mypkg' declaring ``mine = mypkg:Mine`` in trtq.calibrators."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text(PLUGIN)
    info = tmp_path / "mypkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[trtq.calibrators]\nmine = mypkg:Mine\nbroken = mypkg:NotOne\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path


def test_builtins_are_listed_with_their_tensorrt_bases():
    rows = {r["name"]: r for r in list_calibrators()}
    assert {n: rows[n]["base"] for n in ("entropy2", "entropy", "minmax", "legacy")} == {
        "entropy2": "IInt8EntropyCalibrator2",
        "entropy": "IInt8EntropyCalibrator",
        "minmax": "IInt8MinMaxCalibrator",
        "legacy": "IInt8LegacyCalibrator",
    }
    assert all(rows[c.name]["source"] == "builtin" and rows[c.name]["description"] for c in BUILTIN)
    assert list_calibrators()[0]["name"] == "entropy2"  # the default comes first


def test_unknown_name_lists_the_choices():
    with pytest.raises(InputError, match="unknown calibrator 'kl'; choose one of: .*entropy2.*minmax"):
        get_calibrator("kl")


def test_module_class_spec(plugin_dist):
    cls = get_calibrator("mypkg:Mine")
    assert issubclass(cls, CalibratorAdapter) and cls.trt_base == "IInt8MinMaxCalibrator"
    with pytest.raises(InputError, match="not a subclass"):
        get_calibrator("mypkg:NotOne")
    with pytest.raises(InputError, match="has no attribute Nope"):
        get_calibrator("mypkg:Nope")
    with pytest.raises(InputError, match="cannot import nopkg"):
        get_calibrator("nopkg.sub:X")


def test_entry_point_group(plugin_dist):
    rows = {r["name"]: r for r in list_calibrators()}
    assert rows["mine"] == {
        "name": "mine",
        "base": "IInt8MinMaxCalibrator",
        "description": "a user's calibrator",
        "source": "entry point (mypkg)",
    }
    assert rows["broken"]["description"].startswith("failed to load")  # listing survives a bad plugin
    assert get_calibrator("mine").__name__ == "Mine"
    with pytest.raises(InputError, match="not a subclass"):
        get_calibrator("broken")


def test_register_decorator(monkeypatch):
    monkeypatch.setattr("trtq.calib.tensorrt.registry._REGISTERED", dict(_REGISTERED))

    @register_calibrator
    class Local(CalibratorAdapter):
        name = "local"
        trt_base = "IInt8EntropyCalibrator2"
        algorithm = "EntropyCalibration2"

    assert get_calibrator("local") is Local
    assert any(r["name"] == "local" and r["source"] == "registered" for r in list_calibrators())
    with pytest.raises(InputError, match="does not set trt_base"):

        @register_calibrator
        class NoBase(CalibratorAdapter):
            name = "nobase"


def test_cache_algorithm_maps_back_to_a_calibrator():
    assert calibrator_for_algorithm("MinMaxCalibration").name == "minmax"
    with pytest.raises(InputError):
        calibrator_for_algorithm("Percentile")
