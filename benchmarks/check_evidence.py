"""Benchmark: what auto's model-output check decides, and on how much evidence, model by model.

For each calibration set, ``calibrate(..., method="auto", tools=PrecisionTools())`` as ``calib
run`` runs it, and one row of its ``auto_check`` outcome: how many tensors were flagged, the output
error (relative L2 against FP32 on the kept samples) with auto's ranges and with max|x| for the
flagged tensors, the bootstrap confidence that the max set's error is the lower one, what the
pooled error alone would keep, and what the check keeps (max only with the lower error *and*
confidence >= ``CONFIDENCE``). Held-out accuracy is not measured here: ``method_splits.py``,
``in_domain.py`` and ``det_flow.py`` judge the resulting ranges.

Calibration sets: the photo splits of ``method_splits.py`` (``--splits``), the drawn inputs of
``in_domain.py`` (``--own`` seeds; rec, cls, lcnet), and for det (``--det``) the photo splits with
``det_flow.py``'s flip-crop augmentation (36 images, ``auto_samples`` = all, ``auto_fallback
mse``, as its README flow) and 12 drawn pages per ``--det-docs`` seed.

    nice python benchmarks/check_evidence.py --models rec,cls,lcnet,vit --splits 6 --own 5
    nice python benchmarks/check_evidence.py --models det --det-splits peer,methods,random:0,random:3,random:5,random:6,random:7 --det-docs 2,3,4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import methods  # noqa: E402  (benchmarks/methods.py)
from method_splits import split_names, splits  # noqa: E402


def calibration_sets(key: str, args) -> list[tuple[str, list, dict]]:
    """``(label, batches, auto params)`` of every calibration set for ``key`` (module docstring)."""
    out = []
    if key == "det":
        import det_flow
        import documents

        det = {"auto_fallback": "mse"}
        for label in [s for s in args.det_splits.split(",") if s]:
            cal = det_flow._batches(split_names(label)[0], args.det_size, "flip-crop")
            out.append((f"photos {label} + flip-crop", cal, {**det, "auto_samples": len(cal)}))
        for seed in [int(s) for s in args.det_docs.split(",") if s]:
            pages = documents.document_images(12, seed=seed, real=False)
            out.append((f"12 drawn pages, seed {seed}", methods._samples("det", pages, args.det_size), det))
        return out
    for label, cal_files, _ in splits(args.splits):
        out.append((f"photos {label}", methods._batches(key, cal_files, args.det_size), {}))
    if key in ("rec", "cls", "lcnet"):
        import in_domain

        for seed in range(args.own):
            out.append((f"drawn, seed {seed}", in_domain.calibration_set(key, seed), {}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="rec,cls,lcnet,vit")
    ap.add_argument("--splits", type=int, default=6, help="photo splits (method_splits.py's)")
    ap.add_argument("--own", type=int, default=5, help="drawn calibration sets (in_domain.py's seeds)")
    ap.add_argument("--det-splits", default="peer,methods,random:0,random:3,random:5,random:6,random:7")
    ap.add_argument("--det-docs", default="2,3,4", help="seeds of det's drawn calibration pages")
    ap.add_argument("--det-size", type=int, default=640)
    args = ap.parse_args()

    import onnx

    from trtq.calib.auto_check import CONFIDENCE
    from trtq.calib.run import calibrate
    from trtq.precision.builds import PrecisionTools

    rows = []
    for key in [m for m in args.models.split(",") if m]:
        model = onnx.load(str(methods._model(key)))
        for label, cal, params in calibration_sets(key, args):
            c = calibrate(model, cal, method="auto", params=params, tools=PrecisionTools()).check
            rows.append((key, label, c))
            print(key, label, c, flush=True)
    print(
        f"\n| model | calibration | flagged | error auto | error max | confidence | pooled alone | kept (needs {CONFIDENCE:g}) |"
    )
    print("|---|---|---:|---:|---:|---:|---|---|")
    for key, label, c in rows:
        if c is None or c["error_max"] is None:
            print(f"| {key} | {label} | {c['flagged'] if c else 0} | | | | | auto |")
            continue
        pooled = "max" if c["error_max"] < c["error_auto"] else "auto"
        changed = " (changed)" if pooled != c["kept"] else ""
        stopped = c.get("max_stopped_after")  # the max pass stopped: its error is a lower bound
        error_max = f"> {c['error_max']:.4f} ({stopped} samples)" if stopped else f"{c['error_max']:.4f}"
        conf = "" if c["confidence"] is None else f"{c['confidence']:.3f}"
        print(
            f"| {key} | {label} | {c['flagged']} | {c['error_auto']:.4f} | {error_max} | "
            f"{conf} | {pooled} | {c['kept']}{changed} |"
        )


if __name__ == "__main__":
    main()
