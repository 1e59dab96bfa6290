"""Benchmark: trtq's streaming CPU calibration vs ONNX Runtime's calibrator, on PP-OCRv4 det.

Every measurement runs in its own Python process (so peak RSS is that job's alone) on the same
preprocessed 640x640 images, saved once as .npy files. Prints one table.

    python benchmarks/calib.py                      # full run (ORT on 8 images takes minutes)
    python benchmarks/calib.py --sizes 8,16 --skip-ort   # quick check

Rows:
- plain FP32 inference, and inference with every float tensor marked as an output (s/image);
- trtq calibration (`trtq.calib.calibrate`, entropy2) at each size: steady-state s/image (from
  the end of the first batch to the end of the last), total s (with model setup and thresholds),
  peak RSS;
- entropy2 thresholds for all tensors from the histograms (s, total);
- the histogram pass alone on one image's tensors: trtq's kernel vs numpy abs + bincount;
- ONNX Runtime's create_calibrator(Entropy, num_bins=2048) + collect_data + compute_data on 8.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def make_images(folder: Path, count: int, size: int = 640) -> list[Path]:
    """``count`` distinct preprocessed images (PaddleOCR normalisation) from scikit-image's
    samples: random crops, flips and scales of the real photos, saved as (1,3,H,W) .npy."""
    import cv2
    import skimage

    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.npy"))
    if len(existing) >= count:
        return existing[:count]
    src = sorted(
        p for p in (Path(skimage.__file__).parent / "data").iterdir() if p.suffix in (".png", ".jpg")
    )
    rng = np.random.default_rng(0)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    out = []
    for i in range(count):
        img = cv2.imread(str(src[i % len(src)]), cv2.IMREAD_COLOR)
        if img is None:
            img = np.zeros((size, size, 3), np.uint8)
        h, w = img.shape[:2]
        s = rng.uniform(0.6, 1.0)
        ch, cw = max(8, int(h * s)), max(8, int(w * s))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = img[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
        arr = ((crop - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
        p = folder / f"img{i:04d}.npy"
        np.save(p, arr)
        out.append(p)
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---- workers (each runs in a fresh process) ------------------------------------------------
def worker_infer(model: str, files: list[str], mark_all: bool) -> dict:
    from trtq._core.onnx_model import float_tensors, load_onnx
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    proto = load_onnx(model)
    names = [t.name for t in float_tensors(proto) if t.producer] if mark_all else None
    with OnnxRuntimeRunner(proto, mark=names or ()) as be:
        be.run({"x": np.load(files[0])}, names)  # warm-up
        t0 = time.perf_counter()
        for f in files:
            outs = be.run({"x": np.load(f)}, names)
            del outs
        dt = time.perf_counter() - t0
    return {"s_per_image": dt / len(files), "peak_rss_mb": peak_rss_mb()}


def worker_trtq(model: str, files: list[str]) -> dict:
    from trtq.calib import calibrate
    from trtq.calib.run import compute_amax

    def batches():
        for f in files:
            yield {"x": np.load(f)}

    # warm the JIT cache and ORT once on one image, outside the timing
    calibrate(model, batches_one(files[0]), method="entropy2")
    stamps: list[float] = []
    t0 = time.perf_counter()
    result = calibrate(
        model, batches(), method="entropy2", on_batch=lambda hs, n: stamps.append(time.perf_counter())
    )
    dt = time.perf_counter() - t0
    # steady state: from the end of the first batch to the end of the last (no setup, no thresholds)
    steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else dt
    t1 = time.perf_counter()
    compute_amax(result.histograms, "entropy2")
    t_entropy = time.perf_counter() - t1
    return {
        "s_per_image": steady,
        "total_s": dt,
        "entropy2_s": t_entropy,
        "tensors": len(result.amax),
        "peak_rss_mb": peak_rss_mb(),
    }


def batches_one(f: str):
    yield {"x": np.load(f)}


def worker_ort(model: str, files: list[str]) -> dict:
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(files)

        def get_next(self):
            f = next(self.it, None)
            return None if f is None else {"x": np.load(f)}

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cal = create_calibrator(
            model,
            augmented_model_path=str(Path(tmp) / "aug.onnx"),
            calibrate_method=CalibrationMethod.Entropy,
            extra_options={"num_bins": 2048},
        )
        cal.collect_data(Reader())
        ranges = cal.compute_data()
        dt = time.perf_counter() - t0
    return {
        "s_per_image": dt / len(files),
        "total_s": dt,
        "tensors": len(ranges.data),
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_hist(model: str, files: list[str]) -> dict:
    """The histogram pass alone on one image's tensors (every float tensor, as calibrate sees
    them), best of 5: trtq's kernel on a pool of one thread per core vs numpy (``abs`` + ``bincount`` with the
    same bin index), the baseline the issue measured."""
    from concurrent.futures import ThreadPoolExecutor

    from trtq._core.onnx_model import float_tensors, load_onnx
    from trtq.calib.histogram import HistogramSet
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    proto = load_onnx(model)
    names = [t.name for t in float_tensors(proto) if t.producer]
    with OnnxRuntimeRunner(proto, mark=names) as be:
        outs = be.run({"x": np.load(files[0])}, names)
    values = sum(a.size for a in outs.values())

    def numpy_pass() -> None:
        for a in outs.values():
            x = np.abs(a.ravel())
            top = float(x.max())
            upper = 2.0 ** np.floor(np.log2(top)) * 2 if top > 0 else 1.0
            np.bincount((x * (2048 / upper)).astype(np.int64), minlength=2048)

    def best(fn, reps: int = 5) -> float:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        HistogramSet(names).collect(outs, executor=pool)  # JIT warm-up
        ours = best(lambda: HistogramSet(names).collect(outs, executor=pool))
    theirs = best(numpy_pass, reps=2)
    return {"values": values, "trtq_s": ours, "numpy_s": theirs, "peak_rss_mb": peak_rss_mb()}


WORKERS = {"infer": worker_infer, "trtq": worker_trtq, "ort": worker_ort, "hist": worker_hist}


def run_worker(kind: str, model: str, files: list[Path], **kw) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--model",
        model,
        "--files",
        json.dumps([str(f) for f in files]),
        "--kw",
        json.dumps(kw),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"worker {kind} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker")
    ap.add_argument("--model")
    ap.add_argument("--files")
    ap.add_argument("--kw", default="{}")
    ap.add_argument("--sizes", default="8,16,256", help="numbers of images for trtq runs")
    ap.add_argument("--ort-images", type=int, default=8)
    ap.add_argument("--skip-ort", action="store_true")
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "trtq-bench-calib"))
    a = ap.parse_args()
    if a.worker:
        out = WORKERS[a.worker](a.model, json.loads(a.files), **json.loads(a.kw))
        print(json.dumps(out))
        return

    from conftest import real_model_path

    model = str(real_model_path("det"))
    sizes = [int(s) for s in a.sizes.split(",")]
    files = make_images(Path(a.workdir), max(sizes + [a.ort_images]))
    rows = []
    plain = run_worker("infer", model, files[:8], mark_all=False)
    rows.append(("plain FP32 inference", 8, plain["s_per_image"], None, plain["peak_rss_mb"], ""))
    marked = run_worker("infer", model, files[:8], mark_all=True)
    rows.append(
        ("inference, every tensor an output", 8, marked["s_per_image"], None, marked["peak_rss_mb"], "")
    )
    hist = run_worker("hist", model, files[:1])
    rows.append(
        (
            "histogram pass alone: trtq kernel, thread pool",
            1,
            hist["trtq_s"],
            None,
            hist["peak_rss_mb"],
            f"{hist['values'] / hist['trtq_s'] / 1e9:.2f} G values/s; {hist['values'] / 1e6:.0f} M values/image",
        )
    )
    rows.append(
        (
            "histogram pass alone: numpy abs + bincount",
            1,
            hist["numpy_s"],
            None,
            hist["peak_rss_mb"],
            f"{hist['values'] / hist['numpy_s'] / 1e9:.2f} G values/s; trtq {hist['numpy_s'] / hist['trtq_s']:.1f}x faster",
        )
    )
    ours = {}
    for n in sizes:
        r = run_worker("trtq", model, files[:n])
        ours[n] = r
        rows.append(
            (
                "trtq calibrate (entropy2)",
                n,
                r["s_per_image"],
                r["total_s"],
                r["peak_rss_mb"],
                f"{r['s_per_image'] / marked['s_per_image']:.2f}x mark-all; entropy2 for {r['tensors']} tensors {r['entropy2_s']:.2f} s",
            )
        )
    if not a.skip_ort:
        o = run_worker("ort", model, files[: a.ort_images])
        n = a.ort_images
        mine = ours.get(n) or run_worker("trtq", model, files[:n])
        rows.append(
            (
                "onnxruntime create_calibrator(Entropy, 2048 bins)",
                n,
                o["s_per_image"],
                o["total_s"],
                o["peak_rss_mb"],
                f"trtq is {o['total_s'] / mine['total_s']:.1f}x faster, {mine['peak_rss_mb'] / o['peak_rss_mb']:.2f}x the RSS",
            )
        )
    print(
        f"PP-OCRv4 det, 640x640, batch 1, {os.cpu_count()} cores, onnxruntime {__import__('onnxruntime').__version__}"
    )
    print(f"| {'job':<52} | {'images':>6} | {'s/image':>8} | {'total s':>8} | {'peak RSS MB':>11} | note")
    print(f"|{'-' * 54}|{'-' * 8}|{'-' * 10}|{'-' * 10}|{'-' * 13}|------")
    for job, n, spi, tot, rss, note in rows:
        tot_s = f"{tot:8.2f}" if tot is not None else f"{'':>8}"
        print(f"| {job:<52} | {n:>6} | {spi:8.3f} | {tot_s} | {rss:11.0f} | {note}")
    if len(sizes) >= 2 and sizes[0] != sizes[-1]:
        lo, hi = ours[sorted(sizes)[1] if len(sizes) > 2 else sizes[0]], ours[max(sizes)]
        print(
            f"peak RSS growth {sorted(sizes)[1] if len(sizes) > 2 else sizes[0]} -> {max(sizes)} images: "
            f"{(hi['peak_rss_mb'] / lo['peak_rss_mb'] - 1) * 100:+.1f}%"
        )


if __name__ == "__main__":
    main()
