"""Benchmark: ``auto``'s fallback method (the ranges of the tensors no quantized layer reads),
entropy2 against mse, judged where the fallback matters and where it does not.

TensorRT 10 builds INT8 from a calibration cache with implicit placement: every tensor with a
scale may run in INT8, the fallback's tensors too. The Q/DQ export (TensorRT 11, ONNX Runtime)
quantizes almost none of them. So each cache is judged twice on the held-out images: through
the implicit emulation (``EmulationConfig("int8", placement="implicit")``, pessimistic: every
layer-boundary tensor quantized) and through the Q/DQ export, against FP32, over the splits of
``method_splits.py``; plus the time of each ``calibrate`` call (auto with the precision room's
tools, as ``calib run`` runs it). entropy2 and mse alone are shown for reference.

    nice python benchmarks/fallback.py --models det,cls,lcnet,rec,vit --splits 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import method_splits  # noqa: E402  (splits)
import methods  # noqa: E402  (_model, _batches, _outputs, _score, _page_lines, _line_scores)

VARIANTS = ("auto, fallback entropy2", "auto, fallback mse", "entropy2", "mse")
PLACEMENTS = ("implicit", "explicit")


def one_split(key: str, cal_files: list[Path], held_files: list[Path], det_size: int) -> tuple[dict, dict]:
    """``(scores, seconds)``: scores[(variant, placement)] = the held-out metrics; seconds per
    calibrate call."""
    import onnx

    from trtq.calib.run import calibrate, compute_amax
    from trtq.precision.builds import PrecisionTools
    from trtq.precision.emulate import EmulationConfig, emulate
    from trtq.precision.export import export_qdq

    model = onnx.load(str(methods._model(key)))
    cal = methods._batches(key, cal_files, det_size)
    held = methods._batches(key, held_files, det_size)
    ref = methods._outputs(model, held)
    lines = methods._page_lines(key, cal_names=[p.name for p in cal_files])
    ref_lines = methods._outputs(model, lines) if lines else None
    seconds, ranges = {}, {}
    t0 = time.perf_counter()
    plain = calibrate(model, cal, method="entropy2")
    seconds["entropy2"] = time.perf_counter() - t0
    for fb in ("entropy2", "mse"):
        t0 = time.perf_counter()
        res = calibrate(model, cal, method="auto", params={"auto_fallback": fb}, tools=PrecisionTools())
        seconds[f"auto, fallback {fb}"] = time.perf_counter() - t0
        ranges[f"auto, fallback {fb}"] = res.amax
    ranges["entropy2"] = plain.amax
    ranges["mse"] = compute_amax(plain.histograms, "mse")
    scores = {}
    for variant, amax in ranges.items():
        for placement in PLACEMENTS:
            if placement == "implicit":
                q = emulate(model, EmulationConfig("int8", placement="implicit"), amax)
            else:
                q = export_qdq(model, amax)
            s = methods._score(key, ref, methods._outputs(q, held), held)
            if lines:
                s.update(methods._line_scores(ref_lines, methods._outputs(q, lines)))
            scores[(variant, placement)] = s
    return scores, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="det,cls,lcnet,rec,vit")
    ap.add_argument("--splits", type=int, default=4)
    ap.add_argument("--det-size", type=int, default=640)
    args = ap.parse_args()
    for key in args.models.split(","):
        per: dict[tuple[str, str, str], list[float]] = {}  # (variant, placement, metric) -> per split
        secs: dict[str, list[float]] = {}
        labels = []
        for label, cal, held in method_splits.splits(args.splits):
            scores, seconds = one_split(key, cal, held, args.det_size)
            labels.append(label)
            for (variant, placement), s in scores.items():
                for metric, v in s.items():
                    per.setdefault((variant, placement, metric), []).append(v)
            for k, v in seconds.items():
                secs.setdefault(k, []).append(v)
            print(f"{key} {label}: " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()), flush=True)
        metrics = list(dict.fromkeys(m for _, _, m in per))
        print(
            f"\n{key}, held-out, mean over {len(labels)} splits ({', '.join(labels)}); calibrate s median\n"
        )
        print(
            "| variant | " + " | ".join(f"{m} {p}" for p in PLACEMENTS for m in metrics) + " | calibrate s |"
        )
        print("|---|" + "---:|" * (len(PLACEMENTS) * len(metrics) + 1))
        for variant in VARIANTS:
            cells = []
            for p in PLACEMENTS:
                for m in metrics:
                    vals = per.get((variant, p, m), [])
                    # a metric missing on some splits (page lines where page.png calibrates)
                    cells.append(f"{np.mean(vals):.4f}" if vals else "")
            t = secs.get(variant)
            tail = f"{np.median(t):.2f}" if t else "(from the histograms)"
            print(f"| {variant} | " + " | ".join(cells) + f" | {tail} |")
        for p in PLACEMENTS:
            for m in metrics:
                a = per.get(("auto, fallback mse", p, m))
                b = per.get(("auto, fallback entropy2", p, m))
                if a and b and len(a) == len(b):
                    d, lo, hi = methods.paired_interval(np.array(a), np.array(b))
                    print(
                        f"{key} {p} {m}: fallback mse - entropy2 {d:+.4f} [95% over splits {lo:+.4f}, {hi:+.4f}]"
                    )
        print(flush=True)


if __name__ == "__main__":
    main()
