"""Debug-tensor logic on a named fake of TensorRT (``FakeTensorRT``): the version switch, the
network marking calls, and the listener filling the results, with the device copy simulated by
an injected host copy. That every TensorRT attribute used exists in the real 10.16 and 11.4
bindings is checked by test_api_conformance.py; no engine runs here."""

from __future__ import annotations

import ctypes
import types

import numpy as np
import pytest
from test_network_logic_fake import DataType, FakeNetwork, LayerType, _network

from trtq._core.errors import InputError, TrtqError
from trtq.runtime.tensorrt_debug import DebugTensors, fetch_mode
from trtq.runtime.tensorrt_network import mark_debug_tensors


class FakeDebugListenerBase:
    def __init__(self):
        pass


class FakeNetworkDefinition:  # only hasattr() is asked of the class
    def mark_unfused_tensors_as_debug_tensors(self):
        raise NotImplementedError


def FakeTensorRT(version="10.16.1.11", *, debug_api=True):  # noqa: N802
    trt = types.ModuleType("FakeTensorRT")
    trt.__version__ = version
    trt.LayerType, trt.DataType, trt.float32 = LayerType, DataType, DataType.FLOAT
    trt.INetworkDefinition = FakeNetworkDefinition if debug_api else object
    trt.IDebugListener = FakeDebugListenerBase
    trt.TensorLocation = types.SimpleNamespace(DEVICE="DEVICE", HOST="HOST")
    trt.nptype = lambda t: {DataType.FLOAT: np.float32, DataType.HALF: np.float16}[t]
    return trt


class FakeTensorRTNetwork(FakeNetwork):
    def __init__(self, layers):
        super().__init__(layers)
        self.unfused_marked = 0

    def mark_unfused_tensors_as_debug_tensors(self):
        self.unfused_marked += 1
        return True


class FakeTensorRTContext:
    def __init__(self):
        self.listener, self.all_state, self.unfused_tensors_debug_state = None, None, False

    def set_debug_listener(self, listener):
        self.listener = listener
        return True

    def set_all_tensors_debug_state(self, flag):
        self.all_state = flag
        return True


@pytest.mark.parametrize(
    ("version", "requested", "mode"),
    [
        ("10.11.0.33", "auto", "outputs"),
        ("10.12.0.36", "auto", "debug"),
        ("10.16.1.11", "auto", "debug"),
        ("11.4.0.106", "auto", "debug"),
        ("11.4.0.106", "outputs", "outputs"),
        ("10.8.0.43", "outputs", "outputs"),
    ],
)
def test_fetch_mode_is_chosen_from_the_version_and_overridable(version, requested, mode):
    assert fetch_mode(FakeTensorRT(version), requested) == mode


def test_debug_fetch_on_an_old_tensorrt_or_a_bad_mode_is_an_error():
    with pytest.raises(
        InputError, match=r"TensorRT 10.8.0.43 has no unfused debug tensors \(needs >= 10.12\)"
    ):
        fetch_mode(FakeTensorRT("10.8.0.43"), "debug")
    with pytest.raises(InputError, match="unknown fetch mode 'all'"):
        fetch_mode(FakeTensorRT(), "all")
    assert fetch_mode(FakeTensorRT("10.12.0.36", debug_api=False)) == "outputs"  # trust the API, too


def test_debug_marking_keeps_fusions_no_output_is_marked():
    net = FakeTensorRTNetwork(_network().layers)
    result = mark_debug_tensors(FakeTensorRT(), net, ["relu_out", "half_out", "y"])
    assert net.unfused_marked == 1 and net.marked == []  # no mark_output: fusions unchanged
    assert result.marked == ["relu_out", "half_out"]  # "y" is an output already
    everything = mark_debug_tensors(FakeTensorRT(), FakeTensorRTNetwork(_network().layers), "all")
    assert everything.marked == ["conv_out", "relu_out", "loop_res", "half_out"]
    with pytest.raises(InputError, match="'body_out'.*inside a loop or conditional body"):
        mark_debug_tensors(FakeTensorRT(), FakeTensorRTNetwork(_network().layers), ["body_out"])


def _engine(listener, survivors, copies):
    """A fake engine run: reports each surviving tensor on the device, returns the output."""
    keep = []
    for name, value in survivors.items():
        keep.append(value)  # the "device" buffer lives for the callback
        listener.process_debug_tensor(value.ctypes.data, "DEVICE", DataType.FLOAT, value.shape, name, 7)
    return {"y": np.ones((1, 2), np.float32)}


def test_listener_fills_results_and_leaves_fused_away_tensors_out():
    trt = FakeTensorRT()
    copies = []

    def fake_device_copy(dst, src, on_device, stream):  # what cudaMemcpyAsync + sync would do
        copies.append((on_device, stream))
        ctypes.memmove(dst.ctypes.data, src, dst.nbytes)

    debug = DebugTensors(trt, ["conv_out", "relu_out", "half_out"], copy=fake_device_copy)
    context = FakeTensorRTContext()
    debug.attach(context)
    assert context.listener is debug.listener and context.all_state is True
    assert context.unfused_tensors_debug_state is True
    assert debug.marked == ["conv_out", "relu_out", "half_out"]  # before a run: the candidates

    conv = np.arange(6, dtype=np.float32).reshape(2, 3)
    relu = np.maximum(conv - 2, 0)
    survivors = {"conv_out": conv, "relu_out": relu, "not_asked": conv}  # half_out fused away

    got = debug.run(
        lambda: _engine(debug.listener, survivors, copies), ["conv_out", "relu_out", "half_out", "y"]
    )
    assert list(got) == ["conv_out", "relu_out", "y"]
    assert np.array_equal(got["conv_out"], conv) and np.array_equal(got["relu_out"], relu)
    assert got["conv_out"].dtype == np.float32 and got["conv_out"].ctypes.data != conv.ctypes.data
    assert copies == [(True, 7), (True, 7)]  # on the device, on TensorRT's stream; "not_asked" skipped
    assert debug.marked == ["conv_out", "relu_out"]  # compare compares the survivors only

    got2 = debug.run(lambda: _engine(debug.listener, {"conv_out": conv}, copies), ["relu_out", "y"])
    assert list(got2) == ["y"]  # each run starts empty: nothing stale from the last batch


def test_a_failed_copy_is_raised_after_the_run():
    def broken_copy(dst, src, on_device, stream):
        raise RuntimeError("cudaErrorIllegalAddress")

    debug = DebugTensors(FakeTensorRT(), ["conv_out"], copy=broken_copy)
    value = np.zeros(3, np.float32)
    with pytest.raises(TrtqError, match="reading debug tensors failed: cudaErrorIllegalAddress"):
        debug.run(lambda: _engine(debug.listener, {"conv_out": value}, []), ["conv_out"])
