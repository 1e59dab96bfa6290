"""Benchmark: cross-layer equalisation (issue 12, item 2's "consider") on PP-OCRv4 det, measured
before anything is built into trtq.

For every pair ``Conv1 -> [Relu] -> Conv2`` of the folded model (BatchNorm already in the weights;
the tensor between read by Conv2 alone; Relu is positive-homogeneous, so ``relu(x / s) = relu(x)
/ s`` for ``s > 0``), output channel ``c`` of Conv1 (weights and bias) is divided by ``s_c`` and
the weights that read channel ``c`` in Conv2 are multiplied by it: the FP32 function does not
change, the ranges do. Two choices of ``s``:

- ``weights`` (Nagel et al. 2019, data-free): ``s_c = sqrt(r1_c / r2_c)`` with ``r1_c`` the
  largest |weight| of Conv1's output channel c and ``r2_c`` that of Conv2's input channel c, which
  equalises the two weight ranges. TensorRT quantizes weights per output channel, so what it
  changes for INT8 is the activation between: channel c's values are divided by ``s_c``.
- ``activations``: ``s_c = (a_c / mean_c a)^alpha`` with ``a_c`` the largest value of channel c
  of the tensor between over the calibration images: channels of a per-tensor-quantized
  activation are brought towards one range (alpha 0.5: half-way, in the log), moving the spread
  into Conv2's per-channel weights.

Each variant is calibrated with ``auto`` (the default, check on) on the split's 12 photos, exported
as Q/DQ, and judged held out against the *original* FP32 model (IoU of the text map at 0.3 and
cosine), nothing pinned; the split's drawn documents too (det_flow's held-out documents).

    nice python benchmarks/equalize.py --splits 8 --modelopt   # ModelOpt's PTQ beside, same inputs
    nice python benchmarks/equalize.py --splits 5 --cal-docs   # calibrated on drawn pages
    nice python benchmarks/equalize.py --model cls --splits 8  # and --model rec

``--model cls|rec``: PP-OCR cls (6 pairs) or PP-OCRv4 rec (3), judged by the photos' cosine and
page.png's text lines (cls: cosine of the direction; rec: character error rate), where page.png
is held out.

``--cal-docs``: each split's calibration set is 12 drawn pages (``det_flow.cal_documents``, seed
2 + the split's index) instead of its photos; the split's photos are still judged held out.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import method_splits  # noqa: E402  (splits)
import methods  # noqa: E402  (_model, _batches, _outputs, _score)


def activation_rule(act_max: dict[str, np.ndarray], alpha: float = 0.5):
    """The ``activations`` variant's factors (module docstring): ``(a_c / mean a)^alpha`` from the
    channel maxima ``a_c`` of the tensor between the pair, for :func:`trtq.precision.equalize.equalize`."""

    def rule(conv1, relu, conv2, r1, r2):
        a = np.maximum(act_max[(relu or conv1).output[0]], 1e-12)
        return (a / a.mean()) ** alpha

    return rule


def channel_max(model, names: list[str], batches) -> dict[str, np.ndarray]:
    """Per channel (axis 1) the largest |x| of each tensor over the batches."""
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    out: dict[str, np.ndarray] = {}
    with OnnxRuntimeRunner(model, mark=names) as r:
        for b in batches:
            for n, v in r.run(b, names).items():
                m = np.abs(v).max(axis=tuple(i for i in range(v.ndim) if i != 1))
                out[n] = np.maximum(out.get(n, m), m)
    return out


#: Per model: the held-out photos' metric, and the own-kind inputs' metric (det: 10 drawn
#: documents; cls, rec: page.png's text lines, where page.png is held out).
METRICS = {"det": ("iou@0.3", "iou@0.3"), "cls": ("cosine", "lines cosine"), "rec": ("cosine", "lines CER")}


def _own_metric(key: str, q, own: list, ref_own: list, metric: str) -> float:
    """The Q/DQ model ``q`` on the own-kind inputs (nan where there are none)."""
    if not own:
        return float("nan")
    if key == "det":
        return methods._score(key, ref_own, methods._outputs(q, own), own)[metric]
    return methods._line_scores(ref_own, methods._outputs(q, own))[metric]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="det", choices=sorted(METRICS))
    ap.add_argument("--splits", type=int, default=4)
    ap.add_argument("--det-size", type=int, default=640)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument(
        "--modelopt",
        action="store_true",
        help="also ModelOpt's ONNX PTQ (entropy, its default) on the same calibration inputs (peer_modelopt's venv)",
    )
    ap.add_argument(
        "--cal-docs",
        action="store_true",
        help="det: calibrate on 12 drawn pages (seed 2 + split index) instead of photos",
    )
    args = ap.parse_args()
    import det_flow
    import onnx

    from trtq.calib.run import calibrate
    from trtq.precision.builds import PrecisionTools
    from trtq.precision.emulate import folded
    from trtq.precision.equalize import equalize, find_pairs
    from trtq.precision.export import export_qdq

    key = args.model
    photo_metric, own_metric = METRICS[key]
    original = onnx.load(str(methods._model(key)))
    base = folded(original)
    found = find_pairs(base)
    print(
        f"{key}: {len(found)} Conv -> [Relu] -> Conv pairs ({sum(r is not None for _, r, _ in found)} with a Relu)"
    )
    docs = det_flow._documents(args.det_size, 10, []) if key == "det" else []  # 10 drawn pages
    work = Path(tempfile.mkdtemp(prefix="trtq-equalize-"))
    if args.modelopt:  # a private copy: ModelOpt writes files beside the model it quantizes
        import peer_modelopt

        py = peer_modelopt.modelopt_python()
        shutil.copy(methods._model(key), work / "model.onnx")
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for k, (label, cal_files, held_files) in enumerate(method_splits.splits(args.splits)):
        cal = methods._batches(key, cal_files, args.det_size)
        if args.cal_docs and key == "det":
            cal, label = det_flow.cal_documents(args.det_size, 12, 2 + k), f"pages seed {2 + k}"
        held = methods._batches(key, held_files, args.det_size)
        own = docs or methods._page_lines(key, [p.name for p in cal_files])
        ref, ref_own = methods._outputs(original, held), methods._outputs(original, own) if own else []
        between = [(r or c1).output[0] for c1, r, _ in found]
        variants = {
            "none": base,
            "weights (DFQ)": equalize(original)[0],
            f"activations, alpha {args.alpha:g}": equalize(
                original, activation_rule(channel_max(base, between, cal), args.alpha)
            )[0],
        }
        if args.modelopt:  # the peer, calibrated on the very same inputs
            stacked = {n: np.concatenate([c[n] for c in cal]) for n in cal[0]}
            np.savez(work / "cal.npz", **stacked)
            shapes = peer_modelopt.calibration_shapes(stacked)
            variants["ModelOpt entropy"] = work / f"modelopt-{k}.qdq.onnx"
        for name, m in variants.items():
            if isinstance(m, Path):  # ModelOpt's Q/DQ model, judged as trtq's are
                res = peer_modelopt.modelopt_quantize(
                    py, work / "model.onnx", work / "cal.npz", shapes, "entropy", m
                )
                if res.code != 0:
                    print(f"{key} {label} {name}: failed ({res.error})", flush=True)
                    continue
                q, drift = onnx.load(str(m)), float("nan")
                photos = methods._score(key, ref, methods._outputs(q, held), held)[photo_metric]
                mine = _own_metric(key, q, own, ref_own, own_metric)
                rows.setdefault(name, []).append((photos, mine, drift))
                print(
                    f"{key} {label} {name}: photos {photo_metric} {photos:.4f}, own kind {own_metric} {mine:.4f}",
                    flush=True,
                )
                continue
            fp32 = methods._outputs(m, held[:2])  # equalisation must not change the FP32 function
            drift = max(float(np.abs(a - b).max()) for a, b in zip(fp32, ref[:2], strict=True))
            res = calibrate(m, cal, method="auto", tools=PrecisionTools())
            q = export_qdq(m, res.amax)
            photos = methods._score(key, ref, methods._outputs(q, held), held)[photo_metric]
            mine = _own_metric(key, q, own, ref_own, own_metric)
            rows.setdefault(name, []).append((photos, mine, drift))
            print(
                f"{key} {label} {name}: photos {photo_metric} {photos:.4f}, own kind {own_metric} {mine:.4f}, "
                f"FP32 drift {drift:.2g}",
                flush=True,
            )
    shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n| {key}, nothing pinned, auto | photos {photo_metric} (mean) | own kind {own_metric} (mean) | FP32 max drift |"
    )
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        a = np.array(r)
        print(f"| {name} | {a[:, 0].mean():.4f} | {np.nanmean(a[:, 1]):.4f} | {a[:, 2].max():.2g} |")
    for name, r in rows.items():
        if name != "none":
            d, lo, hi = methods.paired_interval(np.array(r)[:, 0], np.array(rows["none"])[:, 0])
            print(f"{name} - none, photos {photo_metric} {d:+.4f} [95% over splits {lo:+.4f}, {hi:+.4f}]")


if __name__ == "__main__":
    main()
