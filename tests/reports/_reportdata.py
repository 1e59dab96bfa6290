"""Result fixtures for the report tests, produced the way trtq's producers will produce them.

``real_results`` runs the real PP-OCR cls model (566 nodes) on real images with ONNX Runtime:
FP32 reference with every float activation fetched; a crude FP16 emulation (weights rounded to
FP16, a Cast round trip after every activation); a crude implicit INT8 emulation (a Q/DQ pair
with the FP32 min/max scale after every activation); and a ranked bisect over the INT8 layers
whose trace is real evaluations. From the same activations trtq's own calibration
(:class:`trtq.calib.histogram.HistogramSet`, :mod:`trtq.calib.run`, :mod:`trtq.calib.summary`)
collects the 2048-bin |x| histograms, saves them as ``.npz`` and computes four thresholds per
tensor (entropy2, minmax, percentile, mse). The emulations are deliberately naive (they are test
inputs for the report, not trtq's emulator), but every number in them was measured.

``synthetic_compare`` builds a compare result of any size from a seeded random generator, for
the size test of a 3,000-layer model.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtq._core.jsonio import to_jsonable
from trtq._core.onnx_model import float_tensors, load_onnx, model_summary
from trtq._core.tensors import Producer, TensorInfo
from trtq.calib.histogram import HistogramSet
from trtq.calib.run import CalibrationResult, result_from_histograms
from trtq.calib.summary import calib_document
from trtq.precision.metrics import tensor_metrics
from trtq.runtime.onnxruntime import OnnxRuntimeRunner

NUM_BINS = 2048
HTML_BAD = "<img src=x onerror=alert(1)>"


# ----------------------------------------------------------------------------- metrics
def layer_metrics(ref: np.ndarray, out: np.ndarray) -> dict[str, float | None]:
    """SCHEMA.md's per-tensor metrics of ``out`` against the FP32 ``ref`` (null = not finite)."""
    return to_jsonable(tensor_metrics(out, ref))


# ----------------------------------------------------------------------------- emulations
def _round_weights_fp16(model: onnx.ModelProto) -> None:
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(init).astype(np.float16).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                    arr = numpy_helper.to_array(attr.t).astype(np.float16).astype(np.float32)
                    attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))


def emulate(model: onnx.ModelProto, wrap, sites: set[str]) -> onnx.ModelProto:
    """Copy of ``model`` where each output ``t`` in ``sites`` is produced as ``wrap(t_raw) -> t``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    extra_inits = []
    for node in out.graph.node:
        nodes.append(node)
        for k, name in enumerate(node.output):
            if name in sites:
                raw = name + "__raw"
                node.output[k] = raw
                new_nodes, inits = wrap(raw, name)
                nodes.extend(new_nodes)
                extra_inits.extend(inits)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(extra_inits)
    return out


def fp16_model(model: onnx.ModelProto, sites: set[str]) -> onnx.ModelProto:
    def wrap(raw: str, name: str):
        return [
            helper.make_node("Cast", [raw], [name + "__h"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", [name + "__h"], [name], to=TensorProto.FLOAT),
        ], []

    m = emulate(model, wrap, sites)
    _round_weights_fp16(m)
    return m


def int8_model(model: onnx.ModelProto, amax: dict[str, float], sites: set[str]) -> onnx.ModelProto:
    def wrap(raw: str, name: str):
        s = numpy_helper.from_array(np.array(max(amax[name], 1e-8) / 127.0, np.float32), name + "__s")
        z = numpy_helper.from_array(np.array(0, np.int8), name + "__z")
        return [
            helper.make_node("QuantizeLinear", [raw, s.name, z.name], [name + "__q"]),
            helper.make_node("DequantizeLinear", [name + "__q", s.name, z.name], [name]),
        ], [s, z]

    return emulate(model, wrap, sites)


def run_all(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    with OnnxRuntimeRunner(model, mark=names, threads=1, optimize=False) as backend:
        return backend.run(feeds, names)


# ----------------------------------------------------------------------------- calibration
CALIB_SETTINGS = {"method": "entropy2", "trt_version": "10.16.1", "num_bins": NUM_BINS, "percentile": 99.99}


def calib_result(
    hs: HistogramSet, sites: list[TensorInfo], by_method: dict[str, dict[str, float]], seconds: float
) -> CalibrationResult:
    """trtq's calibration result for histograms ``hs`` whose every-method thresholds are known
    (given as the result's cache of :meth:`CalibrationResult.amax_by_method`, so that repeated
    tensors are not computed again)."""
    method = CALIB_SETTINGS["method"]
    return CalibrationResult(
        hs, sites, method, {"percentile": 99.99}, by_method[method], seconds, _by_method=by_method
    )


# ----------------------------------------------------------------------------- producers
def load_images(image_dir: Path, hw: tuple[int, int], n: int = 4) -> np.ndarray:
    files = sorted(p for p in image_dir.iterdir() if p.suffix in (".png", ".jpg"))[:n]
    batch = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        img = cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        batch.append(((img / 255.0 - 0.5) / 0.5).transpose(2, 0, 1))
    return np.stack(batch)


def synthetic_compare(n_layers: int, *, seed: int = 0, names: str = "/blocks.{b}/{op}_{i}") -> dict:
    """A compare result for an ``n_layers`` model: FP16, INT8 and INT8 with pins, seeded random
    errors that grow with depth, two FP16 layers with NaN/Inf, an output per run."""
    rng = np.random.default_rng(seed)
    ops = ["Conv", "Relu", "Add", "MatMul", "Softmax", "LayerNormalization", "Concat", "Resize"]
    layers = [(i, names.format(b=i // 12, op=ops[i % 8].lower(), i=i), ops[i % 8]) for i in range(n_layers)]
    pins = [layers[k][1] for k in sorted({n_layers // 7, n_layers // 2, n_layers - 3})]
    runs = []
    for precision, base, run_pins in (("fp16", 1e-3, []), ("int8", 3e-2, []), ("int8", 3e-2, pins)):
        rows = []
        for i, node, op in layers:
            e = float(base * math.exp(rng.normal(0, 0.8)) * (1 + 3 * i / n_layers))
            pinned = node in run_pins
            if pinned:
                e *= 1e-3
            row = {
                "index": i,
                "node": node,
                "op_type": op,
                "tensor": node + ":0",
                "pinned": pinned,
                "max_abs": e * 40,
                "mean_abs": e / 2,
                "rel_l2": e,
                "cosine": 1 - e * e / 2,
                "sqnr_db": -20 * math.log10(e),
                "nonfinite": 0.0,
            }
            if precision == "fp16" and i in (n_layers // 3, n_layers // 3 + 1):
                row.update(
                    {k: None for k in ("max_abs", "mean_abs", "rel_l2", "cosine", "sqnr_db")}, nonfinite=0.125
                )
            rows.append(row)
        runs.append(
            {
                "precision": precision,
                "mode": "graphwise",
                "placement": None if precision == "fp16" else "implicit",
                "pins": run_pins,
                "layers": rows,
                "outputs": [
                    {
                        "tensor": "logits",
                        "max_abs": base * 9,
                        "mean_abs": base,
                        "rel_l2": base * 2,
                        "cosine": 1 - base * base * 2,
                        "sqnr_db": -20 * math.log10(base * 2),
                        "nonfinite": 0.0,
                    }
                ],
            }
        )
    return {
        "kind": "compare",
        "schema": 1,
        "model": {
            "path": f"models/synthetic_{n_layers}.onnx",
            "inputs": [{"name": "x", "shape": [1, 3, 224, 224], "dtype": "float32"}],
            "nodes": n_layers,
            "tensors": n_layers + 1,
        },
        "data": {
            "path": "images/",
            "images_used": 16,
            "images_skipped": 1,
            "skipped": [{"file": "notes.txt", "reason": "not an image"}],
        },
        "backend": "onnxruntime (emulated)",
        "runs": runs,
        "fp16_range": [{"kind": "initializer", "tensor": "bn.running_var", "node": None, "max_abs": 9.8e7}],
    }


def synthetic_bisect(compare: dict, n_pins: int = 3, *, seed: int = 0) -> dict:
    """A ranked bisect over ``compare``'s INT8 run: pins its ``n_pins`` worst layers; the trace is
    a binary search whose metric (output cosine) improves with the set size plus seeded noise."""
    rng = np.random.default_rng(seed)
    int8 = next(r for r in compare["runs"] if r["precision"] == "int8")
    ranked = sorted(int8["layers"], key=lambda r: -(r["rel_l2"] or 0.0))
    n = len(ranked)

    def metric(k: int) -> float:
        return float(0.95 + 0.049 * min(1.0, k / max(n_pins, 1)) ** 0.5 - (0.0 if k >= n_pins else 0.004))

    trace, seen = [], {}
    sizes = [0, n]
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        sizes.append(mid)
        if metric(mid) >= 0.99:
            hi = mid
        else:
            lo = mid
    sizes.append(hi)
    for i, k in enumerate(sizes, start=1):
        cached = k in seen
        seen[k] = metric(k)
        trace.append(
            {
                "eval": i,
                "set_size": k,
                "metric": seen[k],
                "passed": seen[k] >= 0.99,
                "time_s": 0.0 if cached else round(float(rng.uniform(0.5, 2.0)), 3),
                "cached": cached,
            }
        )
    return {
        "kind": "bisect",
        "schema": 1,
        "model": compare["model"],
        "data": compare["data"],
        "backend": compare["backend"],
        "settings": {
            "precision": "int8",
            "strategy": "ranked",
            "metric": "cosine",
            "threshold": 0.99,
            "max_evals": 64,
        },
        "verdict": "found",
        "pins": [
            {
                "node": r["node"],
                "tensor": r["tensor"],
                "op_type": r["op_type"],
                "layerwise_error": r["rel_l2"],
            }
            for r in ranked[:hi]
        ],
        "final_metric": metric(hi),
        "baseline_metric": metric(0),
        "all_pinned_metric": metric(n),
        "trace": trace,
    }


def synthetic_calib(
    n_tensors: int, out_dir: Path, *, seed: int = 0, names: str = "t{i}", distinct: int = 64
) -> dict:
    """A calib result with its histogram .npz: per tensor 4096 draws from a Laplace (heavy tail)
    or rectified Gaussian of random scale; thresholds computed by trtq from the 2048-bin histogram.
    Only ``distinct`` tensors are drawn; the rest repeat them under their own names."""
    rng = np.random.default_rng(seed)
    draws = []
    for i in range(min(n_tensors, distinct)):
        scale = float(np.exp(rng.normal(0, 1.5)))
        draws.append(rng.laplace(0, scale, 4096) if i % 2 else np.maximum(rng.normal(0, scale, 4096), 0))
    # thresholds of the distinct draws, computed once; the repeats share them
    drawn = HistogramSet([f"d{i}" for i in range(len(draws))], NUM_BINS)
    drawn.collect({f"d{i}": x for i, x in enumerate(draws)})
    drawn_amax = result_from_histograms(
        drawn, method=CALIB_SETTINGS["method"], percentile=99.99
    ).amax_by_method()
    tensor_names = [names.format(i=i) for i in range(n_tensors)]
    hs = HistogramSet(tensor_names, NUM_BINS)
    hs.collect({name: draws[i % len(draws)] for i, name in enumerate(tensor_names)}, samples=16)
    by_method = {
        m: {name: v[f"d{i % len(draws)}"] for i, name in enumerate(tensor_names)}
        for m, v in drawn_amax.items()
    }
    sites = [
        TensorInfo(name, producer=Producer(f"node_{i}", "Relu" if i % 2 == 0 else "Conv", i))
        for i, name in enumerate(tensor_names)
    ]
    npz = out_dir / f"hist_{n_tensors}_{seed}.npz"
    hs.save(npz)
    return calib_document(
        calib_result(hs, sites, by_method, seconds=2.5),
        model={
            "path": f"models/synthetic_{n_tensors}.onnx",
            "inputs": [{"name": "x", "shape": [1, 3, 224, 224], "dtype": "float32"}],
            "nodes": n_tensors,
            "tensors": n_tensors + 1,
        },
        data={"path": "images/", "images_used": 16, "images_skipped": 0, "skipped": []},
        settings={**CALIB_SETTINGS, "batch_size": 8},
        cache_path=str(out_dir / "calib.cache"),
        histogram_path=str(npz),
    )


def real_results_for(path: Path, image_dir: Path, out_dir: Path) -> dict:
    """compare, bisect and calib results (plus the histogram .npz) for the real cls model."""
    model = load_onnx(path)
    x = load_images(image_dir, (48, 192))
    feeds = {model.graph.input[0].name: x}
    sites = [s for s in float_tensors(model) if s.producer is not None]
    names = [s.name for s in sites]
    outputs = [o.name for o in model.graph.output]
    ref = run_all(model, feeds, names)

    # calibration statistics from the FP32 activations, by trtq's own calibration
    hs = HistogramSet(names, NUM_BINS)
    hs.collect({n: ref[n] for n in names}, samples=int(x.shape[0]))
    npz = out_dir / "calib_hist.npz"
    hs.save(npz)
    calib_run = result_from_histograms(hs, model, method=CALIB_SETTINGS["method"], percentile=99.99)
    calib_run.seconds = 1.0
    model_block = model_summary(model, path, shapes={model.graph.input[0].name: x.shape})
    data_block = {
        "path": "skimage samples",
        "images_used": int(x.shape[0]),
        "images_skipped": 0,
        "skipped": [],
    }
    calib = calib_document(
        calib_run,
        model=model_block,
        data=data_block,
        settings={**CALIB_SETTINGS, "batch_size": 4},
        cache_path=str(out_dir / "calib.cache"),
        histogram_path=str(npz),
    )

    def layers_of(values: dict[str, np.ndarray], pins: set[str]) -> list[dict]:
        return [
            {
                "index": s.producer.index,
                "node": s.producer.node,
                "op_type": s.producer.op_type,
                "tensor": s.name,
                "pinned": s.producer.node in pins,
                **layer_metrics(ref[s.name], values[s.name]),
            }
            for s in sites
        ]

    def outputs_of(values: dict[str, np.ndarray]) -> list[dict]:
        return [{"tensor": o, **layer_metrics(ref[o], values[o])} for o in outputs]

    minmax = {n: hs.max_abs(n) for n in names}
    fp16 = run_all(fp16_model(model, set(names)), feeds, names)
    int8 = run_all(int8_model(model, minmax, set(names)), feeds, names)
    int8_layers = layers_of(int8, set())

    # ranked bisect on output cosine: pin the k worst INT8 layers (binary search on k)
    ranked = sorted(int8_layers, key=lambda r: -(r["rel_l2"] if r["rel_l2"] is not None else math.inf))
    node_tensors = {
        s.producer.node: [t.name for t in sites if t.producer.node == s.producer.node] for s in sites
    }
    cache: dict[int, float] = {}
    trace = []

    def evaluate(k: int) -> float:
        cached = k in cache
        t0 = time.perf_counter()
        if not cached:
            pinned = {t for r in ranked[:k] for t in node_tensors[r["node"]]}
            vals = run_all(int8_model(model, minmax, set(names) - pinned), feeds, outputs)
            cache[k] = min(layer_metrics(ref[o], vals[o])["cosine"] or -1.0 for o in outputs)
        trace.append(
            {
                "eval": len(trace) + 1,
                "set_size": k,
                "metric": cache[k],
                "passed": cache[k] >= threshold,
                "time_s": round(time.perf_counter() - t0, 3),
                "cached": cached,
            }
        )
        return cache[k]

    threshold = 1.0  # replaced below once baseline and all-pinned are known
    baseline = evaluate(0)
    all_pinned = evaluate(len(ranked))
    threshold = round(baseline + 0.5 * (all_pinned - baseline), 6)
    for t in trace:
        t["passed"] = t["metric"] >= threshold
    lo, hi = 0, len(ranked)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if evaluate(mid) >= threshold:
            hi = mid
        else:
            lo = mid
    evaluate(hi)  # confirm (answered from the cache)
    pins = ranked[:hi]
    pin_nodes = {r["node"] for r in pins}
    pinned_tensors = {t for n in pin_nodes for t in node_tensors[n]}
    int8_pinned = run_all(int8_model(model, minmax, set(names) - pinned_tensors), feeds, names)

    backend = "onnxruntime (emulated)"
    compare = {
        "kind": "compare",
        "schema": 1,
        "model": model_block,
        "data": data_block,
        "backend": backend,
        "runs": [
            {
                "precision": "fp16",
                "mode": "graphwise",
                "placement": None,
                "pins": [],
                "layers": layers_of(fp16, set()),
                "outputs": outputs_of(fp16),
            },
            {
                "precision": "int8",
                "mode": "graphwise",
                "placement": "implicit",
                "pins": [],
                "layers": int8_layers,
                "outputs": outputs_of(int8),
            },
            {
                "precision": "int8",
                "mode": "graphwise",
                "placement": "implicit",
                "pins": sorted(pin_nodes),
                "layers": layers_of(int8_pinned, pin_nodes),
                "outputs": outputs_of(int8_pinned),
            },
        ],
        "fp16_range": [],
    }
    bisect = {
        "kind": "bisect",
        "schema": 1,
        "model": model_block,
        "data": data_block,
        "backend": backend,
        "settings": {
            "precision": "int8",
            "strategy": "ranked",
            "metric": "cosine",
            "threshold": threshold,
            "max_evals": 32,
        },
        "verdict": "found",
        "pins": [
            {
                "node": r["node"],
                "tensor": r["tensor"],
                "op_type": r["op_type"],
                "layerwise_error": r["rel_l2"],
            }
            for r in pins
        ],
        "final_metric": cache[hi],
        "baseline_metric": baseline,
        "all_pinned_metric": all_pinned,
        "trace": trace,
    }
    return {"compare": compare, "bisect": bisect, "calib": calib, "npz": npz, "dir": out_dir}
