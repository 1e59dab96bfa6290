"""API-shape checks run *inside* a subprocess where the real TensorRT bindings of one version
import on top of stub native libraries (see conftest.py). ``test_api_conformance.py`` runs this
file once per version; collected directly without the bindings, every test here is skipped.

These tests prove API shape only: that our code names classes, enums, methods and signatures
that exist in the real bindings, and that our calibrators subclass and satisfy the real bases.
No engine is built (the stubs make ``trt.Builder`` fail), so nothing here shows TensorRT's
numerical behaviour.
"""

from __future__ import annotations

import ast
import ctypes
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

trt = pytest.importorskip(
    "tensorrt_bindings", reason="run through test_api_conformance.py (needs the stubbed bindings)"
)

from trtq._core.errors import InputError, MissingDependencyError  # noqa: E402
from trtq._core.tensors import TensorInfo  # noqa: E402
from trtq.calib.cache import CalibrationCache, parse_cache, write_cache  # noqa: E402
from trtq.calib.tensorrt import calibrate_with_tensorrt  # noqa: E402
from trtq.calib.tensorrt.adapter import CalibrationBatchError  # noqa: E402
from trtq.calib.tensorrt.builtin import BUILTIN, Entropy2Calibrator, LegacyCalibrator  # noqa: E402
from trtq.calib.tensorrt.factory import calibrator_class, make_calibrator  # noqa: E402
from trtq.runtime import tensorrt_build  # noqa: E402
from trtq.runtime.tensorrt_debug import capsule_pointer, fetch_mode, make_listener  # noqa: E402
from trtq.runtime.tensorrt_network import make_logger  # noqa: E402

MAJOR = int(os.environ.get("TRTQ_TRT_MAJOR", "0"))
REPO = Path(__file__).resolve().parents[2]
SOURCES = [
    REPO / "trtq" / "_core" / "trt_import.py",
    *sorted((REPO / "calib" / "tensorrt").glob("*.py")),
    *sorted((REPO / "trtq" / "runtime").glob("tensorrt*.py")),
    REPO / "precision" / "builds.py",
]  # surgery/trt_capability.py picks the parser API by hasattr: tests/surgery/test_check.py checks both
# Local variable names that hold TensorRT objects, and their classes (the code keeps to them).
TYPED_NAMES = {
    "builder": "Builder",
    "config": "IBuilderConfig",
    "network": "INetworkDefinition",
    "parser": "OnnxParser",
    "parser_error": "ParserError",
    "layer": "ILayer",
    "tensor": "ITensor",
    "profile": "IOptimizationProfile",
    "engine": "ICudaEngine",
    "inspector": "EngineInspector",
    "runtime": "Runtime",
    "timing": "ITimingCache",
    "context": "IExecutionContext",
}
ALGO_ENUM = {
    "EntropyCalibration2": "ENTROPY_CALIBRATION_2",
    "EntropyCalibration": "ENTROPY_CALIBRATION",
    "MinMaxCalibration": "MINMAX_CALIBRATION",
    "LegacyCalibration": "LEGACY_CALIBRATION",
}
needs10 = pytest.mark.skipif(MAJOR != 10, reason="TensorRT 10 bindings only")
needs11 = pytest.mark.skipif(MAJOR != 11, reason="TensorRT 11 bindings only")


# -- the AST walk --------------------------------------------------------------------------------
def _chain(node: ast.AST) -> tuple[str, list[str]] | None:
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and attrs:
        return node.id, attrs[::-1]
    return None


def _targets(fn: ast.AST) -> set[int] | None:
    for dec in getattr(fn, "decorator_list", []):
        if isinstance(dec, ast.Call) and getattr(dec.func, "id", None) == "targets":
            return {int(a.value) for a in dec.args}
    return None


def _functions(tree: ast.Module):
    """(qualified name, node, target majors) for every function; nested ones inherit."""

    def walk(node, prefix, inherited):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                majors = _targets(child) or inherited
                yield f"{prefix}{child.name}", child, majors
                yield from walk(child, f"{prefix}{child.name}.", majors)
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.", inherited)

    yield from walk(tree, "", {10, 11})


def api_uses():
    """Every ``trt.X.Y`` chain and every ``<typed var>.method`` in our TensorRT code."""
    uses = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for qual, fn, majors in _functions(tree):
            for node in ast.walk(fn):
                found = _chain(node) if isinstance(node, ast.Attribute) else None
                if found is None:
                    continue
                root, attrs = found
                if root == "trt":
                    uses.append((path.name, qual, majors, None, attrs, node.lineno))
                elif root in TYPED_NAMES:
                    uses.append((path.name, qual, majors, TYPED_NAMES[root], attrs[:1], node.lineno))
    return uses


def _resolve(cls_name: str | None, attrs: list[str]) -> bool:
    obj = trt if cls_name is None else getattr(trt, cls_name, None)
    for a in attrs:
        if obj is None or not hasattr(obj, a):
            return False
        obj = getattr(obj, a)
    return True


def test_ast_walk_finds_the_api_we_use():
    uses = api_uses()
    chains = {(c, tuple(a)) for _, _, _, c, a, _ in uses}
    # a few we know are there, so that an empty walk cannot pass
    assert (None, ("BuilderFlag", "INT8")) in chains
    assert ("IBuilderConfig", ("set_calibration_profile",)) in chains
    assert ("ParserError", ("node_name",)) in chains
    assert ("INetworkDefinition", ("mark_unfused_tensors_as_debug_tensors",)) in chains
    assert ("IExecutionContext", ("set_debug_listener",)) in chains
    assert ("IExecutionContext", ("unfused_tensors_debug_state",)) in chains
    assert (None, ("TensorLocation", "DEVICE")) in chains
    assert len(uses) > 40


def test_every_tensorrt_attribute_exists_in_the_targeted_version():
    missing = [
        f"{f}:{line} {qual}: {'trt' if c is None else c}.{'.'.join(a)}"
        for f, qual, majors, c, a, line in api_uses()
        if MAJOR in majors and not _resolve(c, a)
    ]
    assert not missing, f"not in TensorRT {trt.__version__}: " + "; ".join(missing)


def _split_params(text: str) -> list[str]:
    params, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "," and depth == 0:
            params.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        params.append(cur.strip())
    return params


def _signatures(func, name: str) -> list[list[str]] | None:
    """Parameter lists (without ``self``) of every overload in a pybind11 docstring; ``None``
    when the signature is generic (``*args``)."""
    doc = getattr(func, "__doc__", None) or ""
    sigs = []
    for text in re.findall(rf"^\s*(?:\d+\.\s*)?{re.escape(name)}\((.*)\)\s*->", doc, re.M):
        params = [p for p in _split_params(text) if not p.startswith("self")]
        if any(p.startswith("*") for p in params):
            continue
        sigs.append(params)
    return sigs or None


def _fits(params: list[str], n_pos: int, kws: list[str]) -> bool:
    names = [p.split(":")[0].strip() for p in params]
    required = sum("=" not in p for p in params)
    return n_pos <= len(params) and set(kws) <= set(names[n_pos:]) and n_pos + len(kws) >= required


def api_calls():
    """Calls ``<typed var>.method(...)`` and ``trt.X(...)`` with their argument shapes."""
    calls = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for qual, fn, majors in _functions(tree):
            for node in ast.walk(fn):
                if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                    continue
                found = _chain(node.func)
                if found is None or any(isinstance(a, ast.Starred) for a in node.args):
                    continue
                root, attrs = found
                kws = [k.arg for k in node.keywords]
                if None in kws:
                    continue
                if root in TYPED_NAMES and len(attrs) == 1:
                    target = (TYPED_NAMES[root], attrs[0])
                elif root == "trt" and len(attrs) == 1:
                    target = (None, attrs[0])
                else:
                    continue
                calls.append((path.name, qual, majors, target, len(node.args), kws, node.lineno))
    return calls


def test_calls_match_the_real_signatures():
    checked, bad = 0, []
    for fname, qual, majors, (cls_name, attr), n_pos, kws, line in api_calls():
        if MAJOR not in majors:
            continue
        owner = trt if cls_name is None else getattr(trt, cls_name)
        obj = getattr(owner, attr)
        if isinstance(obj, type):  # a constructor
            sigs = _signatures(obj.__init__, "__init__")
        else:
            sigs = _signatures(obj, attr)
        if sigs is None:
            continue
        checked += 1
        if not any(_fits(params, n_pos, kws) for params in sigs):
            bad.append(
                f"{fname}:{line} {qual}: {cls_name or 'trt'}.{attr} called with {n_pos} positional {kws}; real: {sigs}"
            )
    assert checked >= 20, checked
    assert not bad, "; ".join(bad)


@needs11
def test_the_check_has_teeth_apis_of_the_10_path_are_absent_in_11():
    only10 = {(c, tuple(a)) for _, _, majors, c, a, _ in api_uses() if majors == {10} and not _resolve(c, a)}
    assert (None, ("BuilderFlag", "INT8")) in only10
    assert ("ILayer", ("precision",)) in only10
    assert ("IBuilderConfig", ("int8_calibrator",)) in only10


def test_functions_on_the_11_path_call_no_10_only_function():
    only10 = set()
    trees = {p: ast.parse(p.read_text()) for p in SOURCES}
    for tree in trees.values():
        only10 |= {qual.split(".")[-1] for qual, _, majors in _functions(tree) if 11 not in majors}
    bad = []
    for path, tree in trees.items():
        for qual, fn, majors in _functions(tree):
            if 11 not in majors:
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) in only10:
                    bad.append(f"{path.name}:{node.lineno} {qual} calls {node.func.id}")
    assert not bad, bad


# -- calibrators on the real bases (TensorRT 10) -------------------------------------------------
class HostBuffersFake:
    """A named fake of DeviceBuffers in host memory, for these API-shape tests only. The real
    DeviceBuffers is checked on a GPU in test_device_buffers_gpu.py."""

    def __init__(self, specs):
        self.specs = {s.name: s for s in specs}
        self.arrays = {}
        self.closed = False

    def upload(self, batch, names):
        for n in names:
            self.arrays[n] = np.ascontiguousarray(batch[n], dtype=self.specs[n].dtype)
        return [self.arrays[n].ctypes.data for n in names]

    def close(self):
        self.closed = True


SPECS = [TensorInfo("x", (2, 3, 4, 4), np.dtype(np.float32)), TensorInfo("mask", (2, 4), np.dtype(np.int32))]


def _batches(n, fail_at=None):
    rng = np.random.default_rng(0)
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"corrupt image at batch {i}")
        # float64 and a transposed (non-contiguous) view: the adapter must convert and pack
        x = rng.normal(size=(2, 4, 4, 3)).transpose(0, 3, 1, 2)
        yield {"x": x, "mask": np.arange(8, dtype=np.int64).reshape(2, 4) + i}


def _make(cls=Entropy2Calibrator, batches=None, **kw):
    kw.setdefault("batch_size", 2)
    kw.setdefault("inputs", SPECS)
    kw.setdefault("buffers_factory", HostBuffersFake)
    return make_calibrator(trt, cls, batches, **kw)


def _signature_return(cls, method):
    first = getattr(cls, method).__doc__.strip().splitlines()[0]
    return first.rsplit("->", 1)[1].strip()


RETURN_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "list[int]": lambda v: isinstance(v, list) and all(isinstance(p, int) for p in v),
    "typing_extensions.Buffer": lambda v: memoryview(v) is not None,
    "None": lambda v: v is None,
}


@needs10
@pytest.mark.parametrize("adapter", BUILTIN, ids=lambda c: c.name)
def test_calibrator_subclasses_real_base_and_instantiates(adapter):
    cls = calibrator_class(trt, adapter)
    base = getattr(trt, adapter.trt_base)
    assert issubclass(cls, base) and issubclass(cls, trt.IInt8Calibrator)
    calib = _make(adapter, _batches(1))
    assert isinstance(calib, base)
    # get_algorithm is the real base's C++ method: it must name the algorithm our cache expects
    assert calib.get_algorithm() == getattr(trt.CalibrationAlgoType, ALGO_ENUM[adapter.algorithm])


@needs10
@pytest.mark.parametrize("adapter", BUILTIN, ids=lambda c: c.name)
def test_every_pure_virtual_of_the_trampoline_is_implemented(adapter):
    strings = Path(os.environ["TRTQ_TRT_SO"]).read_bytes()
    pure = set(re.findall(rb'Tried to call pure virtual function "(\w+)::(\w+)"', strings))
    wanted = sorted(m.decode() for owner, m in pure if owner.decode() in (adapter.trt_base, "Derived"))
    assert "get_batch_size" in wanted
    cls = calibrator_class(trt, adapter)
    python_defined = {
        name for k in cls.__mro__ if not k.__module__.startswith("tensorrt") for name in vars(k)
    }
    assert set(wanted) <= python_defined, set(wanted) - python_defined
    if adapter is LegacyCalibrator:
        assert {
            "get_quantile",
            "get_regression_cutoff",
            "read_histogram_cache",
            "write_histogram_cache",
        } <= set(wanted)


@needs10
def test_return_values_match_the_real_signatures(tmp_path):
    cache_file = tmp_path / "c.cache"
    write_cache(cache_file, CalibrationCache.from_amax({"x": 1.0}, trt_version="10.16.1"))
    calib = _make(batches=_batches(1), cache_path=cache_file, read_cache=True)
    base = trt.IInt8EntropyCalibrator2
    values = {
        "get_batch_size": calib.get_batch_size(),
        "get_batch": calib.get_batch(["x", "mask"]),
        "read_calibration_cache": calib.read_calibration_cache(),
        "write_calibration_cache": calib.write_calibration_cache(
            memoryview(b"TRT-101601-EntropyCalibration2\n")
        ),
    }
    for method, value in values.items():
        promised = _signature_return(base, method)
        assert promised in RETURN_CHECKS, f"{method}: the bindings now promise {promised}"
        assert RETURN_CHECKS[promised](value), f"{method} returned {value!r}, bindings promise {promised}"


@needs10
def test_get_batch_returns_pointers_to_the_converted_bytes_in_names_order():
    calib = _make(batches=_batches(2))
    source = list(_batches(2))
    for i in range(2):
        ptrs = calib.get_batch(["mask", "x"])  # TensorRT's order, not the specs'
        assert len(ptrs) == 2
        want_mask = np.ascontiguousarray(source[i]["mask"], dtype=np.int32)
        want_x = np.ascontiguousarray(source[i]["x"], dtype=np.float32)
        assert ctypes.string_at(ptrs[0], want_mask.nbytes) == want_mask.tobytes()
        assert ctypes.string_at(ptrs[1], want_x.nbytes) == want_x.tobytes()
    assert calib.get_batch(["mask", "x"]) is None  # data exhausted ends calibration
    assert calib.batches_fed == 2
    calib.raise_if_failed()


@needs10
def test_exception_in_get_batch_is_kept_and_reraised_with_batch_index():
    calib = _make(batches=_batches(5, fail_at=2))
    assert calib.get_batch(["x", "mask"]) and calib.get_batch(["x", "mask"])
    assert calib.get_batch(["x", "mask"]) is None  # what TensorRT would see: end of data
    assert calib.get_batch(["x", "mask"]) is None  # and it stays ended
    with pytest.raises(CalibrationBatchError, match="batch 2 failed: corrupt image at batch 2") as info:
        calib.raise_if_failed()
    assert info.value.batch_index == 2 and isinstance(info.value.__cause__, ValueError)


@needs10
def test_wrong_sample_count_is_an_input_error_after_the_build():
    bad = iter([{"x": np.zeros((3, 3, 4, 4)), "mask": np.zeros((3, 4))}])
    calib = _make(batches=bad)
    assert calib.get_batch(["x", "mask"]) is None
    with pytest.raises(CalibrationBatchError, match="batch 0 failed: input 'x': batch has") as info:
        calib.raise_if_failed()
    assert info.value.exit_code == 2


@needs10
def test_write_calibration_cache_takes_a_memoryview_and_writes_atomically(tmp_path, monkeypatch):
    target = tmp_path / "model.cache"
    calib = _make(cache_path=target)
    text = b"TRT-101601-EntropyCalibration2\nx: 3c010a14\n"
    calib.write_calibration_cache(memoryview(text))
    assert target.read_bytes() == text and calib.cache_written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.cache"]

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(InputError, match="model.cache: cannot write it: disk full"):  # one line, no traceback
        calib.write_calibration_cache(memoryview(b"TRT-101601-EntropyCalibration2\nx: 00000000\n"))
    assert target.read_bytes() == text  # the old cache is intact, no temp file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.cache"]


@needs10
def test_read_calibration_cache_returns_a_cache_made_on_cpu(tmp_path):
    made = CalibrationCache.from_amax({"x": 1.0002, "conv1_out": 6.5}, trt_version="10.16.1")
    path = tmp_path / "cpu.cache"
    write_cache(path, made)
    calib = _make(cache_path=path, read_cache=True)
    got = calib.read_calibration_cache()
    assert bytes(memoryview(got)) == path.read_bytes() and calib.cache_read
    assert _make(cache_path=path, read_cache=False).read_calibration_cache() is None
    assert _make(cache_path=tmp_path / "absent.cache", read_cache=True).read_calibration_cache() is None


@needs10
def test_cache_made_for_another_version_is_retargeted_to_the_running_one(tmp_path):
    path = tmp_path / "old.cache"
    write_cache(path, CalibrationCache.from_amax({"x": 2.0}, trt_version="10.8.0"))
    got = parse_cache(_make(cache_path=path, read_cache=True).read_calibration_cache())
    assert got.header == "TRT-101601-EntropyCalibration2"  # the bindings are 10.16.1
    assert got.scales == parse_cache(path.read_bytes()).scales


@needs10
def test_legacy_calibrator_parameters():
    calib = _make(LegacyCalibrator, quantile=0.99, regression_cutoff=0.5)
    assert calib.get_quantile() == 0.99 and calib.get_regression_cutoff() == 0.5
    with pytest.raises(InputError, match="quantile must be in"):
        _make(LegacyCalibrator, quantile=0.0)


def test_our_logger_is_accepted_by_the_real_builder_signature():
    # A wrong argument type gives pybind11's "incompatible function arguments"; the stub's NULL
    # gives "factory function returned nullptr": the latter proves the call shape is right.
    with pytest.raises(TypeError, match="nullptr"):
        trt.Builder(make_logger(trt))
    with pytest.raises(TypeError, match="nullptr"):
        trt.Runtime(make_logger(trt))


def _tiny_model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_build_path_is_picked_from_the_version(tmp_path):
    expected = {10: tensorrt_build.build_trt10, 11: tensorrt_build.build_trt11}[MAJOR]
    assert tensorrt_build.build_path_for(trt) is expected
    with pytest.raises(MissingDependencyError, match="could not create a builder.*--backend onnxruntime"):
        tensorrt_build.build_engine(trt, _tiny_model(tmp_path / "m.onnx"), tensorrt_build.BuildSettings())


@needs11
def test_tensorrt11_has_no_calibrators_and_says_so(tmp_path):
    with pytest.raises(MissingDependencyError, match="TensorRT 11.4.0.106 has no calibrator base"):
        calibrator_class(trt, Entropy2Calibrator)
    with pytest.raises(InputError, match="no INT8 calibrators.*--backend onnxruntime"):
        calibrate_with_tensorrt(_tiny_model(tmp_path / "m.onnx"), [], tmp_path / "c.cache", batch_size=1)
    model = _tiny_model(tmp_path / "m.onnx")
    with pytest.raises(InputError, match="needs a calibration cache"):
        tensorrt_build.build_engine(trt, model, tensorrt_build.BuildSettings(int8=True))
    # FP16 goes through the typed ONNX export, then reaches the real (stubbed) Builder
    from trtq.precision.builds import TOOLS

    with pytest.raises(MissingDependencyError, match="could not create a builder"):
        tensorrt_build.build_engine(trt, model, tensorrt_build.BuildSettings(fp16=True), tools=TOOLS)


def _gpu_present() -> bool:
    try:
        from cuda.bindings import runtime
    except ImportError:
        return False
    err, count = runtime.cudaGetDeviceCount()
    return int(err) == 0 and count > 0


@needs10
@pytest.mark.skipif(_gpu_present(), reason="checks the no-GPU message")
def test_with_tensorrt10_but_no_gpu_commands_say_so(tmp_path):
    from trtq.runtime.tensorrt import TensorRTRunner

    model = _tiny_model(tmp_path / "m.onnx")
    batches = [{"x": np.ones((2, 3), np.float32)}]
    with pytest.raises(MissingDependencyError, match="--backend onnxruntime") as info:
        calibrate_with_tensorrt(model, batches, tmp_path / "c.cache", batch_size=2)
    assert "\n" not in str(info.value) and not (tmp_path / "c.cache").exists()
    with pytest.raises(MissingDependencyError, match="--backend onnxruntime"):
        TensorRTRunner(model, precision="int8", int8_cache=tmp_path / "c.cache")


# -- debug tensors (TensorRT >= 10.12: both bindings) -------------------------------------------
def test_these_bindings_read_compared_tensors_as_debug_tensors():
    assert fetch_mode(trt) == "debug" and fetch_mode(trt, "outputs") == "outputs"
    from trtq.runtime.tensorrt import TensorRTRunner

    assert TensorRTRunner.label() == "tensorrt (debug tensors)"


def test_debug_listener_subclasses_the_real_base_with_the_real_callback_signature():
    import inspect

    listener = make_listener(trt, ["a"])
    assert isinstance(listener, trt.IDebugListener)
    (real,) = _signatures(trt.IDebugListener.process_debug_tensor, "process_debug_tensor")
    ours = list(inspect.signature(type(listener).process_debug_tensor).parameters)[1:]
    assert (
        [p.split(":")[0].strip() for p in real]
        == ours
        == ["addr", "location", "type", "shape", "name", "stream"]
    )
    assert "CapsuleType" in real[0]  # the address comes as a capsule, not an int


def _capsule(address: int):
    new = ctypes.pythonapi.PyCapsule_New
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    return new(address, None, None)


def test_listener_copies_a_host_buffer_given_as_a_capsule_with_real_enums():
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    listener = make_listener(trt, ["a", "h"])
    assert capsule_pointer(_capsule(data.ctypes.data)) == data.ctypes.data
    listener.process_debug_tensor(
        _capsule(data.ctypes.data), trt.TensorLocation.HOST, trt.DataType.FLOAT, trt.Dims((2, 3)), "a", 0
    )
    listener.process_debug_tensor(  # not asked for: not copied
        _capsule(data.ctypes.data), trt.TensorLocation.HOST, trt.DataType.FLOAT, trt.Dims((2, 3)), "b", 0
    )
    listener.process_debug_tensor(  # no numpy type: reported as unreadable
        _capsule(data.ctypes.data), trt.TensorLocation.HOST, trt.DataType.BF16, trt.Dims((2, 3)), "h", 0
    )
    listener.raise_if_failed()
    assert list(listener.tensors) == ["a"] and np.array_equal(listener.tensors["a"], data)
    assert "no numpy type" in listener.unreadable["h"]
