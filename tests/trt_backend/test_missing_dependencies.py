"""Without TensorRT, cuda-python or a GPU, every TensorRT entry point fails with one line that
says what is missing and that ``--backend onnxruntime`` works. Runs where TensorRT is absent
(CI, this workplace); the CUDA cases run where cuda-python is installed but no GPU is present."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from trtq._core.errors import MissingDependencyError
from trtq._core.tensors import TensorInfo
from trtq._core.trt_import import import_tensorrt, require_gpu
from trtq.calib.tensorrt import calibrate_with_tensorrt
from trtq.calib.tensorrt.device_buffers import CudaError, DeviceBuffers
from trtq.runtime import get_backend


def _has_real_tensorrt() -> bool:
    try:
        import_tensorrt()
        return True
    except MissingDependencyError:
        return False


def _gpu_present() -> bool:
    if importlib.util.find_spec("cuda") is None:
        return False
    try:
        from cuda.bindings import runtime
    except ImportError:
        return False
    err, count = runtime.cudaGetDeviceCount()
    return int(err) == 0 and count > 0


no_trt = pytest.mark.skipif(_has_real_tensorrt(), reason="TensorRT is installed here")
no_gpu = pytest.mark.skipif(
    _gpu_present() or importlib.util.find_spec("cuda") is None, reason="needs cuda-python without a GPU"
)


@pytest.fixture()
def tiny(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", [x], [y])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


@no_trt
def test_import_names_the_missing_tensorrt_and_the_cpu_backend():
    with pytest.raises(MissingDependencyError) as info:
        import_tensorrt()
    text = _one_line(info.value)
    assert "TensorRT is not available" in text and "--backend onnxruntime" in text
    assert info.value.exit_code == 2


@no_trt
def test_backend_fails_with_one_line(tiny):
    backend_cls = get_backend("tensorrt")  # importing the backend never needs TensorRT
    with pytest.raises(MissingDependencyError) as info:
        backend_cls(tiny, precision="int8")
    assert "--backend onnxruntime" in _one_line(info.value)


@no_trt
def test_calibration_fails_with_one_line_and_writes_nothing(tiny, tmp_path):
    batches = [{"x": np.ones((1, 4), np.float32)}]
    with pytest.raises(MissingDependencyError) as info:
        calibrate_with_tensorrt(tiny, batches, tmp_path / "out.cache", batch_size=1)
    assert "--backend onnxruntime" in _one_line(info.value)
    assert not (tmp_path / "out.cache").exists()


@no_gpu
def test_no_gpu_is_named_with_the_cuda_error():
    with pytest.raises(
        MissingDependencyError, match=r"no usable NVIDIA GPU \(cudaError\w+\).*--backend onnxruntime"
    ):
        require_gpu()


@no_gpu
def test_cuda_failure_becomes_cuda_error_with_its_name():
    with pytest.raises(CudaError, match=r"CUDA error in cudaStreamCreate: cudaError\w+ \(\d+\)") as info:
        DeviceBuffers([TensorInfo("x", (1, 4), np.dtype(np.float32))])
    assert info.value.name.startswith("cudaError") and info.value.code != 0


@no_trt
def test_message_in_a_plain_interpreter():
    """Outside pytest (a bare interpreter, no test paths on sys.path)."""
    import subprocess
    import sys

    code = (
        "from trtq._core.trt_import import import_tensorrt\n"
        "try:\n    import_tensorrt()\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    ).stdout
    assert out.startswith("MissingDependencyError TensorRT is not available (No module named 'tensorrt')")
    assert "--backend onnxruntime" in out
