"""Benchmark: AdaRound's INT8 weights (``precision export --adaround``) against nearest rounding,
with and without least-squares weight correction, and ModelOpt's ONNX PTQ beside them, judged on
held-out data over several calibration / held-out splits.

Per model and split (``method_splits.py``: 12 calibration and 12 held-out scikit-image photos),
one ``auto`` calibration (``calib run``), then the same ranges exported as Q/DQ five ways:

- ``auto``: ``precision export --int8`` (weights rounded to the nearest step);
- ``+ adaround``: ``--adaround`` (the original weights rounded up or down, biases kept);
- ``+ wc own``: ``--weight-correction own`` (the ridge refit, nearest rounding), and
  ``+ wc own + adaround``;
- ``+ wc seq``: ``--weight-correction sequential --weight-correction-alpha 0.1`` (the best
  variant of BENCHMARKS.md's weight-correction sections; ``--seq``, slow on ViT-S), and
  ``+ wc seq + adaround``;

and, with ``--modelopt``, ModelOpt 0.47's ONNX PTQ (entropy and max) on the same calibration
arrays (peer_modelopt.py's private venv). Every Q/DQ model runs in ONNX Runtime CPU, optimisations
off, against FP32 on the held-out photos (methods.py's metrics) and on the model's own kind of
held-out input where there is one (rec: page.png's text lines, CER; cls: those lines' direction;
PP-LCNet: documents at 4 rotations; det: 10 drawn pages + page.png / text.png when held out,
IoU@0.3). The correction's seconds are printed per split (median in the table).

``--in-domain``: calibrated on the model's own kind of input instead (``in_domain.py``'s drawn
sets: rec 16 drawn text lines, cls 16 drawn lines half turned, PP-LCNet 4 drawn pages at 4
rotations, det 12 drawn pages; seed = the split's index) and judged on its held-out inputs of
that kind only (page.png's lines, the documents), by ``in_domain.scores``.

    nice python benchmarks/adaround.py --models cls,lcnet,rec --splits 4 --modelopt
    nice python benchmarks/adaround.py --models det --splits 4 --modelopt
    nice python benchmarks/adaround.py --models vit --splits 2
    nice python benchmarks/adaround.py --models rec,cls,lcnet,det --splits 4 --in-domain --modelopt
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import method_splits  # noqa: E402  (splits)
import methods  # noqa: E402  (_model, _batches, _outputs, _score, _page_lines, _line_scores)

INF = float("inf")
#: label -> (weight correction mode, alpha, rounding)
VARIANTS = {
    "auto": None,
    "+ adaround": ("own", INF, "adaround"),
    "+ wc own": ("own", 0.01, "nearest"),
    "+ wc own + adaround": ("own", 0.01, "adaround"),
    "+ wc seq": ("sequential", 0.1, "nearest"),
    "+ wc seq + adaround": ("sequential", 0.1, "adaround"),
}


def _own_kind(key: str, cal_names: list[str], det_size: int) -> list[dict[str, np.ndarray]]:
    if key == "det":
        import det_flow

        held = [n for n in method_splits.PHOTOS if n not in cal_names]
        return det_flow._documents(det_size, 10, held)
    return methods._page_lines(key, cal_names)


def _scores(key: str, q, held, ref, own, ref_own) -> dict[str, float]:
    s = methods._score(key, ref, methods._outputs(q, held), held)
    if own:
        out = methods._outputs(q, own)
        if key == "det":
            s["docs iou@0.3"] = methods._score(key, ref_own, out, own)["iou@0.3"]
        else:
            s.update(methods._line_scores(ref_own, out))
    return s


def _splits(key: str, args):
    """(label, calibration feeds, held-out feeds, own-kind held-out feeds, scorer) per split."""
    if args.in_domain:
        import in_domain

        held = in_domain.held_out(key, args.det_size)
        for seed in range(args.splits):
            cal = in_domain.calibration_set(key, seed, det_size=args.det_size)

            def score(q, held, ref, own, ref_own):
                return in_domain.scores(key, ref, methods._outputs(q, held))

            yield f"seed {seed}", cal, held, [], score
        return
    for label, cal_files, held_files in method_splits.splits(args.splits):
        cal_names = [p.name for p in cal_files]
        cal = methods._batches(key, cal_files, args.det_size)
        held = methods._batches(key, held_files, args.det_size)

        def score(q, held, ref, own, ref_own):
            return _scores(key, q, held, ref, own, ref_own)

        yield label, cal, held, _own_kind(key, cal_names, args.det_size), score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="cls,lcnet,rec")
    ap.add_argument("--splits", type=int, default=4)
    ap.add_argument("--det-size", type=int, default=640)
    ap.add_argument("--seq", action="store_true", help="also the sequential weight-correction variants")
    ap.add_argument("--modelopt", action="store_true", help="ModelOpt entropy and max on the same arrays")
    ap.add_argument("--in-domain", action="store_true", help="calibrate and judge on the model's own kind")
    args = ap.parse_args()
    import onnx

    from trtq.calib.run import calibrate
    from trtq.precision.builds import PrecisionTools
    from trtq.precision.export import export_qdq
    from trtq.precision.weight_correction import correct_weights

    variants = {k: v for k, v in VARIANTS.items() if args.seq or v is None or v[0] != "sequential"}
    work = Path(tempfile.mkdtemp(prefix="trtq-adaround-"))
    if args.modelopt:
        import peer_modelopt

        py = peer_modelopt.modelopt_python()
    try:
        for key in args.models.split(","):
            model = onnx.load(str(methods._model(key)))
            if args.modelopt:  # a private copy: ModelOpt writes files beside the model it quantizes
                shutil.copy(methods._model(key), work / "model.onnx")
            per: dict[str, dict[str, list[float]]] = {}
            secs: dict[str, list[float]] = {}
            labels = []
            for k, (label, cal, held, own, score) in enumerate(_splits(key, args)):
                labels.append(label)
                ref, ref_own = methods._outputs(model, held), methods._outputs(model, own) if own else []
                amax = calibrate(model, cal, method="auto", tools=PrecisionTools()).amax
                models = {}
                for name, v in variants.items():
                    t0 = time.perf_counter()
                    m = model
                    if v is not None:
                        m, _ = correct_weights(model, cal, amax, mode=v[0], alpha=v[1], rounding=v[2])
                    secs.setdefault(name, []).append(time.perf_counter() - t0)
                    models[name] = export_qdq(m, amax)
                if args.modelopt:
                    stacked = {n: np.concatenate([c[n] for c in cal]) for n in cal[0]}
                    np.savez(work / "cal.npz", **stacked)
                    shapes = peer_modelopt.calibration_shapes(stacked)
                    for method in ("entropy", "max"):
                        out = work / f"modelopt-{method}-{k}.qdq.onnx"
                        res = peer_modelopt.modelopt_quantize(
                            py, work / "model.onnx", work / "cal.npz", shapes, method, out
                        )
                        if res.code != 0:
                            print(f"{key} {label} ModelOpt {method}: failed ({res.error})", flush=True)
                            continue
                        models[f"ModelOpt {method}"] = onnx.load(str(out))
                for name, q in models.items():
                    s = score(q, held, ref, own, ref_own)
                    for metric, val in s.items():
                        per.setdefault(name, {}).setdefault(metric, []).append(val)
                    print(
                        f"{key} {label} {name}: " + ", ".join(f"{m} {x:.4f}" for m, x in s.items()),
                        flush=True,
                    )
                print(
                    f"{key} {label} seconds: " + ", ".join(f"{n} {t[-1]:.1f}" for n, t in secs.items()),
                    flush=True,
                )
            metrics = list(dict.fromkeys(m for d in per.values() for m in d))
            print(f"\n{key}, held out, mean over {len(labels)} splits ({', '.join(labels)})\n")
            print("| variant | " + " | ".join(metrics) + " | correction s (median) |")
            print("|---|" + "---:|" * (len(metrics) + 1))
            for name, d in per.items():
                cells = [f"{np.mean(d[m]):.4f}" if d.get(m) else "" for m in metrics]
                t = f"{np.median(secs[name]):.1f}" if name in secs else ""
                print(f"| {name} | " + " | ".join(cells) + f" | {t} |")
            for a, b in (
                ("+ adaround", "auto"),
                ("+ wc own + adaround", "+ wc own"),
                ("+ wc seq + adaround", "+ wc seq"),
            ):
                for m in metrics:
                    x, y = per.get(a, {}).get(m), per.get(b, {}).get(m)
                    if x and y and len(x) == len(y) and len(x) > 1:
                        d, lo, hi = methods.paired_interval(np.array(x), np.array(y))
                        print(f"{key} {m}: {a} - {b} {d:+.4f} [95% over splits {lo:+.4f}, {hi:+.4f}]")
            print(flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
