"""Benchmark: every calibration method calibrated on inputs of the model's own kind, judged on real ones.

``methods.py`` and ``method_splits.py`` calibrate every model on scikit-image photos. The OCR
models are not made for photos (FP32 rec outputs only blanks on them), and judged on their own
inputs the method ranking there partly reflects that mismatch (BENCHMARKS.md, "Issue 12 judged
on more splits"). A user calibrates on their own data; this script does what they would:

- rec: calibrated on 16 drawn text lines (``tests/documents.drawn_line``; height 48, padded right
  with 0 to width 320 as PaddleOCR's batches are), judged on page.png's 20 line crops (``ocr_lines.page_line_variants``):
  character error rate of the greedy-CTC text against FP32's reading, and the share of exact lines;
- cls: calibrated on 16 drawn lines, every other one turned 180 degrees, judged on page.png's 80
  line crops (``ocr_lines.direction_line_variants``): top-1 agreement and cosine against FP32;
- lcnet: calibrated on 4 drawn pages at the 4 rotations (16 inputs, another seed than the
  held-out pages), judged on 12 documents at 4 rotations (``methods._page_lines``).

Each seed draws another calibration set; the held-out inputs never change and never calibrate.
Methods: entropy2, minmax, percentile (99.99), mse from one histogram pass, and auto as ``calib
run`` runs it (its model-output check on, with the precision room's build tools).

    nice python benchmarks/in_domain.py --models rec,cls,lcnet --seeds 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import documents  # noqa: E402  (tests/documents.py)
import methods  # noqa: E402  (benchmarks/methods.py)
import ocr_lines  # noqa: E402  (tests/ocr_lines.py)

METHODS = ("entropy2", "minmax", "percentile", "mse", "auto")
#: The metric each model is judged by, and whether lower is better.
METRIC = {"rec": ("lines CER", True), "cls": ("lines cosine", False), "lcnet": ("docs cosine", False)}


def calibration_set(key: str, seed: int, count: int = 16) -> list[dict[str, np.ndarray]]:
    """``count`` drawn inputs of ``key``'s own kind (module docstring), seeded."""
    rng = np.random.default_rng(1000 + seed)  # the held-out documents use seed 1
    if key == "rec":
        lines = [documents.drawn_line(rng) for _ in range(count)]
        return [
            {"x": ocr_lines.pad_width(ocr_lines.text_line(g, (0, g.shape[0], 0, g.shape[1])))} for g in lines
        ]
    if key == "cls":
        lines = [documents.drawn_line(rng, words=(1, 4)) for _ in range(count)]
        return [ocr_lines.direction_sample(g if i % 2 == 0 else g[::-1, ::-1]) for i, g in enumerate(lines)]
    pages = documents.rotations([documents.synthetic_page(rng) for _ in range(count // 4)])
    return methods._samples("lcnet", [img for img, _ in pages])


def held_out(key: str) -> list[dict[str, np.ndarray]]:
    return methods._page_lines(key, cal_names=None)


def bench(key: str, seed: int, held: list[dict[str, np.ndarray]], ref: list[np.ndarray]) -> dict[str, dict]:
    """The held-out scores of every method calibrated on seed ``seed``'s drawn inputs."""
    import onnx

    from trtq.calib.run import calibrate, compute_amax
    from trtq.precision.builds import PrecisionTools
    from trtq.precision.export import export_qdq

    model = onnx.load(str(methods._model(key)))
    cal = calibration_set(key, seed)
    plain = calibrate(model, cal, method="entropy2")
    auto = calibrate(model, cal, method="auto", tools=PrecisionTools())
    out = {}
    for m in METHODS:
        amax = auto.amax if m == "auto" else compute_amax(plain.histograms, m)
        out[m] = methods._line_scores(ref, methods._outputs(export_qdq(model, amax), held))
    out["auto"]["check"] = auto.check["kept"] if auto.check and auto.check["error_max"] is not None else "-"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="rec,cls,lcnet")
    ap.add_argument("--seeds", type=int, default=5, help="calibration sets drawn (seeds 0..N-1)")
    args = ap.parse_args()
    import onnx

    for key in [m for m in args.models.split(",") if m]:
        metric, lower = METRIC[key]
        held = held_out(key)
        ref = methods._outputs(onnx.load(str(methods._model(key))), held)
        runs = []
        for seed in range(args.seeds):
            runs.append(bench(key, seed, held, ref))
            row = {m: round(runs[-1][m][metric], 4) for m in METHODS}
            print(
                f"{key} seed {seed}: {metric} {row}; auto's check kept {runs[-1]['auto']['check']}",
                flush=True,
            )
        seeds = [f"seed {s}" for s in range(args.seeds)]
        print(f"\n{key}: {metric} on {len(held)} held-out real inputs, calibrated on drawn ones"
              f"{' (lower is better)' if lower else ''}\n")  # fmt: skip
        print("| method | " + " | ".join(seeds) + " | mean | best of seed |")
        print("|---|" + "---:|" * (len(seeds) + 2))
        vals = {m: np.array([r[m][metric] for r in runs]) for m in METHODS}
        sign = -1.0 if lower else 1.0
        best = np.max(np.stack([sign * v for v in vals.values()]), axis=0)
        for m, v in vals.items():
            wins = int(np.sum(np.isclose(sign * v, best)))
            print(
                f"| {m} | " + " | ".join(f"{x:.4f}" for x in v) + f" | {v.mean():.4f} | {wins} of {len(v)} |"
            )
        singles = [m for m in METHODS if m != "auto"]
        top = max(singles, key=lambda m: sign * vals[m].mean())
        for m in singles:
            d, lo, hi = methods.paired_interval(vals["auto"], vals[m])
            mark = " (best single on average)" if m == top else ""
            print(f"{key} {metric}: auto - {m}{mark}: {d:+.4f} [95% over seeds {lo:+.4f}, {hi:+.4f}]")
        other = "lines exact" if key == "rec" else metric.replace("cosine", "top1")
        print(
            f"{key} {other} means: "
            + ", ".join(f"{m} {np.mean([r[m][other] for r in runs]):.3f}" for m in METHODS)
        )


if __name__ == "__main__":
    main()
