"""Fine-tuning a Q/DQ model's INT8 weights against FP32 (``precision quantize --finetune``).

The PyTorch graph is held to ONNX Runtime on the real models; the training to a planted weight
error whose fix is known; the command to the rule that a fine-tuned model is kept only where it
helps on held-back samples, and to the model it writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from precision_tiny_models import IR_VERSION  # what every ONNX Runtime the project supports reads

torch = pytest.importorskip("torch")

from trtq._core.errors import InputError  # noqa: E402
from trtq.precision.cli import main as precision_main  # noqa: E402
from trtq.precision.finetune import FinetuneSettings, finetune, holdout_indices  # noqa: E402
from trtq.precision.torch_graph import TorchGraph  # noqa: E402

DATA = ["--shape", "x:1x3x48x192", "--preset", "paddleocr-rec"]


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        None, feeds
    )


def _torch(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in TorchGraph(model)({k: torch.from_numpy(v) for k, v in feeds.items()})]


def _images(image_dir: Path, shape: str, preset: str) -> np.ndarray:
    from trtq.datasets import PreprocessSpec, TensorInfo, open_dataset

    dims = tuple(int(d) for d in shape.split("x"))
    ds = open_dataset(image_dir, [TensorInfo("x", dims, np.dtype(np.float32))], PreprocessSpec.preset(preset))
    return np.concatenate([b["x"] for b in ds.batches(1)])


@pytest.fixture(scope="module")
def split(image_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ft-split")
    for i, f in enumerate(sorted(image_dir.iterdir())):
        folder = root / ("cal" if i % 2 == 0 else "held")
        folder.mkdir(exist_ok=True)
        shutil.copy(f, folder / f.name)
    return root / "cal", root / "held"


# ------------------------------------------------------------------ the PyTorch graph


@pytest.mark.parametrize(
    ("key", "shape", "preset"),
    [
        ("det", "1x3x160x160", "paddleocr"),
        ("rec", "1x3x48x320", "paddleocr-rec"),
        ("cls", "1x3x48x192", "paddleocr-rec"),
    ],
)
def test_the_fp32_models_run_in_pytorch_as_in_onnx_runtime(real_models, image_dir, key, shape, preset):
    model = onnx.load(str(real_models[key]))
    x = _images(image_dir, shape, preset)[:3]
    for i in range(len(x)):
        want, got = _ort(model, {"x": x[i : i + 1]}), _torch(model, {"x": x[i : i + 1]})
        for w, g in zip(want, got, strict=True):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-5)  # probabilities in [0, 1]


def test_a_qdq_model_runs_in_pytorch_as_in_onnx_runtime(real_models, image_dir, tmp_path):
    """trtq's Q/DQ export of PP-OCR cls: every activation rounded as ONNX Runtime rounds it, up to
    the odd value on a rounding boundary (the two runtimes sum in other orders; one such value then
    moves the tensors after it), and the same outputs."""
    from trtq.calib.run import calibrate
    from trtq.precision.export import export_qdq

    model = onnx.load(str(real_models["cls"]))
    x = _images(image_dir, "1x3x48x192", "paddleocr-rec")
    amax = calibrate(model, [{"x": x[:4]}], method="minmax").amax
    qdq = export_qdq(model, amax, [])
    dq = [n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear" and "QDQ" in n.name]
    assert len(dq) > 20
    marked = onnx.ModelProto()
    marked.CopyFrom(qdq)
    marked.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in dq)
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    step = {n.output[0]: float(inits[n.input[1]]) for n in qdq.graph.node if n.output[0] in set(dq)}
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    step = {n.output[0]: float(inits[n.input[1]]) for n in qdq.graph.node if n.output[0] in set(dq)}
    graph = TorchGraph(qdq)
    identical = 0
    for i in range(len(x)):
        want = _ort(marked, {"x": x[i : i + 1]})
        with torch.no_grad():
            got = [
                t.numpy()
                for t in graph({"x": torch.from_numpy(x[i : i + 1])}, [qdq.graph.output[0].name, *dq])
            ]
        pairs = zip(dq, got[1:], want[1:], strict=True)
        first = next(((n, g, w) for n, g, w in pairs if not np.array_equal(g, w)), None)
        if first is None:
            identical += 1
        else:  # one or two values a step apart, where the first difference appears
            n, g, w = first
            assert int((g != w).sum()) <= 2 and np.abs(g - w).max() <= 1.01 * step[n]
        np.testing.assert_allclose(got[0], want[0], atol=0.05)  # one flipped value moves it by up to 0.023
        if np.ptp(want[0]) > 0.1:
            assert got[0].argmax() == want[0].argmax()
    assert identical >= len(x) // 2
    # nothing trained: the model written back is the model read, byte for byte
    assert graph.to_onnx().SerializeToString() == qdq.SerializeToString()


def _one_node(op: str, inputs: list, attrs: dict, outputs: int = 1, opset: int = 13) -> tuple:
    """A one-node model of ``op`` over float input ``x`` [2, 3, 4, 5] and constant ``inputs``
    (numpy arrays as initializers, None for an omitted input); its input feed."""
    names, inits = ["x"], []
    for i, value in enumerate(inputs):
        if value is None:
            names.append("")
        else:
            names.append(f"c{i}")
            inits.append(numpy_helper.from_array(np.asarray(value), f"c{i}"))
    outs = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
        [helper.make_empty_tensor_value_info(o) for o in outs],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    feed = {"x": np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)}
    return model, feed


I64 = np.int64


@pytest.mark.parametrize(
    ("op", "inputs", "attrs", "outputs", "opset"),
    [
        ("Flatten", [], {"axis": 4}, 1, 13),  # axis == rank: (N, 1)
        ("Flatten", [], {"axis": -1}, 1, 13),
        ("Split", [], {"axis": 2}, 2, 13),  # no split sizes before opset 18: equal parts per output
        ("Split", [np.array([1, 3], I64)], {"axis": 2}, 2, 13),
        (
            "Slice",
            [
                np.array([-100], I64),
                np.array([np.iinfo(I64).min], I64),
                np.array([3], I64),
                np.array([-1], I64),
            ],
            {},
            1,
            13,
        ),
        (
            "Slice",
            [np.array([4], I64), np.array([0], I64), np.array([3], I64), np.array([-2], I64)],
            {},
            1,
            13,
        ),
        ("Slice", [np.array([1, -3], I64), np.array([100, -1], I64), np.array([1, 3], I64)], {}, 1, 13),
        ("QuantizeLinear", [np.array(0.02, np.float32)], {}, 1, 13),  # no zero point: uint8
        ("ReduceMean", [], {"keepdims": 0}, 1, 13),
        ("ReduceSum", [None], {"noop_with_empty_axes": 1}, 1, 13),
        ("ReduceMax", [np.array([1, -1], I64)], {}, 1, 18),
        ("Squeeze", [], {}, 1, 13),
        ("Transpose", [], {"perm": [0, 3, 1, 2]}, 1, 13),
        ("Softmax", [], {"axis": 1}, 1, 13),
        ("Softmax", [], {"axis": 2}, 1, 12),  # before opset 13: over the flattened trailing axes
        ("Clip", [np.array(-0.5, np.float32), None], {}, 1, 13),
        ("Gather", [np.array([[-1, 0]], I64)], {"axis": 2}, 1, 13),
        ("Expand", [np.array([3, 2, 1, 1, 1], I64)], {}, 1, 13),
    ],
)
def test_an_operator_runs_as_in_onnx_runtime(op, inputs, attrs, outputs, opset):
    model, feed = _one_node(op, inputs, attrs, outputs, opset)
    want = _ort(model, feed)
    if op == "QuantizeLinear":  # the graph passes a quantized tensor on as (value, zero point)
        from trtq.precision.torch_graph import _quantize

        q = _quantize([torch.from_numpy(feed["x"]), torch.tensor(0.02)], {})
        np.testing.assert_array_equal(q.q.numpy().astype(np.uint8), want[0])
        return
    got = _torch(model, feed)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_a_weight_with_a_zero_point_or_an_old_opset_is_refused():
    fp32, qdq, _, _ = _planted(None)
    zp = next(t for t in qdq.graph.initializer if t.name == "wzp")
    zp.CopyFrom(numpy_helper.from_array(np.ones(16, np.int8), "wzp"))
    with pytest.raises(InputError, match="non-zero zero point"):
        TorchGraph(qdq)
    fp32.opset_import[0].version = 10
    with pytest.raises(InputError, match="opset 10"):
        TorchGraph(fp32)


def test_an_operator_it_cannot_run_is_one_error_naming_the_node():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"], name="hm")], "g", [x], [y])
    )
    with pytest.raises(InputError, match="node 'hm': operator Hardmax is not supported"):
        TorchGraph(model)


# ------------------------------------------------------------------ the training


def _planted(
    steps_off: np.ndarray | None, seed: int = 0
) -> tuple[onnx.ModelProto, onnx.ModelProto, np.ndarray, float]:
    """An FP32 1x1 Conv (8 -> 16 channels) and its Q/DQ model with per-channel INT8 weights whose
    integers are the FP32 weights' rounding plus ``steps_off`` (the planted error, in steps);
    input and output in [1, 8, 4, 4] and [1, 16, 4, 4]; the input's scale ``act`` (inputs on its
    grid, :func:`_batches`, are not changed by their rounding)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((16, 8, 1, 1)).astype(np.float32)
    scale = (np.abs(w).reshape(16, -1).max(1) / 127).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None, None, None]), -127, 127)
    if steps_off is not None:
        q = np.clip(q + steps_off, -127, 127)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16, 4, 4])
    fp32 = helper.make_model(
        helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"])], "g", [x], [y], [numpy_helper.from_array(w, "w")]
        ),
        opset_imports=[helper.make_opsetid("", 13)],
        ir_version=IR_VERSION,
    )
    act = np.float32(ACT)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "zp"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(act, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
        numpy_helper.from_array(q.astype(np.int8), "wq"),
        numpy_helper.from_array(scale, "ws"),
        numpy_helper.from_array(np.zeros(16, np.int8), "wzp"),
    ]
    qdq = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], inits),
        opset_imports=[helper.make_opsetid("", 13)],
        ir_version=IR_VERSION,
    )
    return fp32, qdq, q, float(act)


ACT = 2.0 / 127  # the planted models' input scale


def _batches(count: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """Inputs on the planted models' input grid, in [-2, 2]."""
    rng = np.random.default_rng(seed)
    return [
        {"x": (rng.integers(-127, 128, (1, 8, 4, 4)) * np.float32(ACT)).astype(np.float32)}
        for _ in range(count)
    ]


def test_finetuning_removes_a_planted_weight_error():
    """A one-step error planted in a third of the weights: the training moves most of those weights
    back to the FP32 weights' rounding, and the output error on samples it never saw falls most of
    the way to that of the FP32 weights' rounding. (That rounding is not the best for the output,
    AdaRound's point: the training also moves some weights that were not planted.)"""
    rng = np.random.default_rng(3)
    off = np.where(rng.random((16, 8, 1, 1)) < 1 / 3, rng.choice([-1.0, 1.0], (16, 8, 1, 1)), 0.0)
    fp32, qdq, planted, _ = _planted(off)
    truth = planted - off  # the FP32 weights' rounding
    result = finetune(fp32, qdq, _batches(32), FinetuneSettings(steps=150, lr=0.05, batch=8, holdout=0.25))
    assert result.kept and result.best_step > 0
    tuned = numpy_helper.to_array(next(t for t in result.model.graph.initializer if t.name == "wq")).astype(
        float
    )
    fixed = (tuned == truth)[off != 0].mean()
    disturbed = (tuned != truth)[off == 0].mean()
    assert fixed > 0.8, fixed
    assert disturbed < 0.3, disturbed
    assert np.abs(tuned - planted).max() <= 1  # within the bound
    unseen = _batches(8, seed=7)
    err = lambda m: np.mean([np.mean((_ort(m, b)[0] - _ort(fp32, b)[0]) ** 2) for b in unseen])  # noqa: E731
    nearest = _planted(None)[1]
    assert err(result.model) < 0.35 * err(qdq)
    assert err(result.model) < 1.5 * err(nearest)
    # only the INT8 weights changed
    same = [t for t in qdq.graph.initializer if t.name != "wq"]
    assert all(
        t.SerializeToString() == u.SerializeToString()
        for t, u in zip(same, [u for u in result.model.graph.initializer if u.name != "wq"], strict=True)
    )
    assert [n.SerializeToString() for n in result.model.graph.node] == [
        n.SerializeToString() for n in qdq.graph.node
    ]


def test_the_bound_keeps_every_weight_within_its_steps():
    off = np.full((16, 8, 1, 1), 3.0)  # every weight three steps off: a bound of 1 lets each move one
    fp32, qdq, planted, _ = _planted(off)
    result = finetune(fp32, qdq, _batches(16), FinetuneSettings(steps=120, lr=0.05, batch=8, bound=1.0))
    tuned = numpy_helper.to_array(next(t for t in result.model.graph.initializer if t.name == "wq")).astype(
        float
    )
    assert result.kept
    assert np.abs(tuned - planted).max() == 1
    assert (tuned == planted - 1).mean() > 0.8  # the way back, as far as the bound allows


def test_nothing_to_gain_on_held_back_samples_leaves_the_model_as_it_was():
    """Weights exactly on their INT8 grid and an input that the activation rounding keeps: the Q/DQ
    model already computes FP32's outputs, no step lowers the held-back loss, and the model is
    returned unchanged (not kept)."""
    fp32, qdq, q, act = _planted(None)
    scale = numpy_helper.to_array(next(t for t in qdq.graph.initializer if t.name == "ws"))
    exact = (q * scale[:, None, None, None]).astype(np.float32)
    fp32.graph.initializer[0].CopyFrom(numpy_helper.from_array(exact, "w"))
    rng = np.random.default_rng(0)
    grid = [{"x": (rng.integers(-60, 60, (1, 8, 4, 4)) * act).astype(np.float32)} for _ in range(12)]
    result = finetune(fp32, qdq, grid, FinetuneSettings(steps=30, lr=0.05, batch=4))
    assert not result.kept and result.changed == 0 and result.best_step == 0
    assert result.model is qdq
    assert result.holdout_loss[0][1] < 1e-10


def test_holdout_spreads_over_the_samples():
    assert holdout_indices(12, 0.25) == [3, 7, 11]
    assert holdout_indices(3, 0.25) == [2]
    assert holdout_indices(12, 0) == [] and holdout_indices(1, 0.5) == []


def test_bad_settings_are_refused():
    for kw, words in (
        ({"steps": 0}, "steps must be >= 1"),
        ({"lr": 0.0}, "learning rate must be a finite number > 0"),
        ({"lr": float("nan")}, "learning rate"),
        ({"holdout": 1.0}, "holdout must be in [0, 1)"),
        ({"crop": 0.0}, "crop must be in (0, 1]"),
    ):
        with pytest.raises(
            InputError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
        ):
            FinetuneSettings(**kw)
    fp32, qdq, _, _ = _planted(None)
    with pytest.raises(InputError, match="PyTorch sees no CUDA GPU"):
        if torch.cuda.is_available():
            pytest.skip("a GPU is here")
        finetune(fp32, qdq, _batches(4), FinetuneSettings(steps=1, device="cuda"))


# ------------------------------------------------------------------ the command


def test_quantize_finetune_on_a_real_model(real_models, split, tmp_path):
    """PP-OCR cls on real images: ``--finetune`` writes the model it reports (same nodes and
    scales, INT8 weights within one step of the plain export's), and its JSON and summary say
    whether the fine-tuned weights were kept and what they did on the held-back samples."""
    cls, (cal, held) = real_models["cls"], split
    common = [cls, "--data", cal, "--eval-data", held, *DATA, "--pin-worst", 1, "--metric", "top1"]
    plain = CliRunner().invoke(
        precision_main, ["quantize", *map(str, [*common, "-o", tmp_path / "p.onnx", "-q"])]
    )
    assert plain.exit_code == 0, plain.output
    res = CliRunner().invoke(
        precision_main,
        [
            "quantize",
            *map(
                str,
                [
                    *common,
                    "--finetune",
                    20,
                    "--finetune-lr",
                    0.05,
                    "-o",
                    tmp_path / "f.onnx",
                    "--json",
                    tmp_path / "f.json",
                ],
            ),
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "f.json").read_text())
    ft = doc["finetune"]
    assert ft["settings"]["steps"] == 20 and ft["holdout_samples"] >= 1 and ft["device"] == "cpu"
    assert len(ft["holdout_loss"]) == 11 and ft["holdout_loss"][0][0] == 0
    assert "fine-tuning:" in res.stderr
    a, b = onnx.load(str(tmp_path / "p.onnx")), onnx.load(str(tmp_path / "f.onnx"))
    assert [n.SerializeToString() for n in a.graph.node] == [n.SerializeToString() for n in b.graph.node]
    wa = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    wb = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    moved = 0
    for name, v in wa.items():
        if v.dtype == np.int8 and v.ndim > 0:
            d = np.abs(v.astype(int) - wb[name].astype(int))
            assert d.max() <= 1
            moved += int(d.sum())
        else:
            np.testing.assert_array_equal(v, wb[name])
    assert moved == ft["changed"]
    if ft["kept"]:
        best = min(v for _, v in ft["holdout_loss"])
        assert best < ft["holdout_loss"][0][1] and moved > 0
        assert f"kept step {ft['best_step']} of 20" in res.stderr
    else:
        assert moved == 0 and "not kept" in res.stderr


def test_finetune_flags_are_refused_where_they_do_not_apply(real_models, split, tmp_path):
    cls, (cal, _) = real_models["cls"], split
    for args, words in (
        (["--fp8", "--finetune", 5], "--finetune trains INT8 weights: not with --fp8"),
        (["--finetune-lr", 0.1], "--finetune-lr needs --finetune STEPS"),
        (["--finetune", 5, "--finetune-lr", 0], "learning rate must be a finite number > 0"),
        (["--finetune", 0], "--finetune"),
    ):
        res = CliRunner().invoke(
            precision_main,
            ["quantize", *map(str, [cls, "--data", cal, *DATA, "-o", tmp_path / "x.onnx", *args])],
        )
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and words in lines[0], res.output
        assert not (tmp_path / "x.onnx").exists()


@pytest.mark.gpu
def test_finetuning_on_the_gpu_makes_the_cpu_s_fix():
    """The planted error fixed on CUDA as on the CPU (skipped without a GPU PyTorch can see):
    the same graph and training, each weight's latent on the device."""
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA GPU")
    rng = np.random.default_rng(3)
    off = np.where(rng.random((16, 8, 1, 1)) < 1 / 3, rng.choice([-1.0, 1.0], (16, 8, 1, 1)), 0.0)
    fp32, qdq, planted, _ = _planted(off)
    result = finetune(fp32, qdq, _batches(32), FinetuneSettings(steps=150, lr=0.05, batch=8, device="cuda"))
    assert result.kept and result.device.startswith("cuda")
    tuned = numpy_helper.to_array(next(t for t in result.model.graph.initializer if t.name == "wq")).astype(
        float
    )
    assert (tuned == planted - off)[off != 0].mean() > 0.8


def test_finetune_on_one_sample_is_refused_before_any_work(real_models, split, tmp_path):
    """Nothing could be held back to decide whether to keep the tuned weights: one line, exit 2, no
    model written, and no calibration run first."""
    cls, (cal, _) = real_models["cls"], split
    one = tmp_path / "one"
    one.mkdir()
    first = sorted(cal.iterdir())[0]
    shutil.copy(first, one / first.name)
    res = CliRunner().invoke(
        precision_main,
        ["quantize", *map(str, [cls, "--data", one, *DATA, "--finetune", 5, "-o", tmp_path / "x.onnx"])],
    )
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "1 sample(s) (give at least 2)" in lines[0] and "calibrating" not in res.output
    assert not (tmp_path / "x.onnx").exists()
