"""Benchmark: per-channel weight scales from the weights alone against scales chosen by each
layer's output error (``precision export --weight-scales output``), judged on held-out data.

For every model and calibration / held-out split of the 24 scikit-image photos
(``method_splits.split_names``: methods, peer, random:K), in one process: ``calibrate`` with
``auto`` (all calibration samples measured), the ranges ``calib run`` + ``precision export`` use
(INT8: auto's; FP8: each tensor's largest |x| from the same histograms, ``FP8_RANGES``), then per type (``--qtypes``, FP8 and INT8) the Q/DQ
export twice from the same ranges: data-free weight scales (the export's default) and
:func:`trtq.precision.weight_scales.choose_weight_scales` on the calibration samples. Each Q/DQ
model runs in ONNX Runtime CPU (optimisations off) against FP32 on the held-out samples, with
``peer_modelopt.py``'s metrics: det IoU@0.3 pooled and cosine pooled; rec exact texts and cosine
on the photos, plus CER on page.png's 20 text lines when page.png is held out; cls top-1 and
cosine, plus its 80 direction lines likewise; PP-LCNet cosine, plus 12 documents at 4 rotations
when neither page.png nor text.png calibrates; ViT-S cosine; the BERT-style encoder's cosine over
real tokens (its 16 + 16 token samples do not depend on the split). ``selection s``: seconds to
choose the scales (one FP32 pass and the per-channel scoring).

``--activation-offsets T`` (FP8 only; measured, not in the library) adds a third export: the
output-chosen weight scales on top of FP8 activation ranges moved per tensor within one octave,
``amax * 2**(j/8)`` for ``j`` in 0..7 (never clipping: only where E4M3's grid falls moves), each
tensor's ``j`` the one whose quantized consumers' summed relative output error on the calibration
samples (:func:`activation_offsets`) is smallest, kept only when it is at least ``T`` (a fraction)
below ``j = 0``'s; the weight scales are then chosen again at those ranges.

The last table sums up each metric over the splits: mean with data-free scales, mean with
output-chosen ones, and on how many splits the chosen ones are better / level / worse (the
offsets row against the output-chosen scales).

    nice python benchmarks/weight_scales.py --models rec,cls,lcnet,vit,det,bert --splits 6
    nice python benchmarks/weight_scales.py --models rec --qtypes fp8 --splits 2
    nice python benchmarks/weight_scales.py --models rec,cls,lcnet,det,vit --qtypes fp8 --splits 6 --activation-offsets 0.1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_modelopt as pm  # noqa: E402
from method_splits import LOWER_IS_BETTER, split_names  # noqa: E402

LABELS = ["methods", "peer"] + [f"random:{k}" for k in range(64)]
OFFSET_STEPS = 8


def activation_offsets(
    model, batches, amax: dict[str, float], threshold: float
) -> tuple[dict[str, float], int]:
    """``(ranges, moved)``: FP8 ``amax`` with each consumer-measured tensor's range multiplied by
    the ``2**(j/8)`` whose summed relative output error (data-free FP8 weights, FP8 input at that
    range, against FP32) is smallest, when it is ``threshold`` below ``j = 0``'s; ``moved``
    counts the tensors that moved. One :func:`own_equations` pass per candidate."""
    from trtq.precision import qdq
    from trtq.precision.emulate import EmulationConfig
    from trtq.precision.weight_correction import channel_errors, own_equations, weight_of

    config = EmulationConfig("fp8", "explicit", frozenset())
    factors = 2.0 ** (np.arange(OFFSET_STEPS) / OFFSET_STEPS)
    errors: dict[str, np.ndarray] = {}
    for j, factor in enumerate(factors):
        fits, _ = own_equations(model, batches, {t: a * factor for t, a in amax.items()}, config)
        for f in fits:
            w = weight_of(f).astype(np.float32)
            sse = float(np.sum(channel_errors(f, [qdq.fake_quantize_weight(w, f.axis, "fp8")])))
            errors.setdefault(f.input_fp32, np.zeros(OFFSET_STEPS))[j] += sse / max(
                float(np.sum(f.power)), 1e-30
            )
    out, moved = dict(amax), 0
    for tensor, e in errors.items():
        j = int(np.argmin(e))
        if tensor in out and j and e[j] <= (1.0 - threshold) * e[0]:
            out[tensor] = amax[tensor] * float(factors[j])
            moved += 1
    return out, moved


def run_case(
    key: str, split: str, qtypes: list[str], det_size: int, offsets: float | None = None
) -> list[tuple[str, str, dict, float]]:
    """``(qtype, scales, metrics, selection seconds)`` rows of one model on one split."""
    import onnx

    from trtq.calib.run import calibrate, compute_amax
    from trtq.precision.builds import PrecisionTools
    from trtq.precision.cli_common import FP8_RANGES
    from trtq.precision.export import export_qdq
    from trtq.precision.weight_scales import choose_weight_scales

    case = pm.model_cases(det_size)[key]
    case.path = pm.model_path(key)
    cal_names, held_names = split_names(split)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if key != "bert":
            pm.copy_images(cal_names, work / "images" / "cal")
            pm.copy_images(held_names, work / "images" / "held")
        cal, held = pm.case_data(case, work)
        model = onnx.load(str(case.path))
        count = len(next(iter(cal.values())))
        batches = [{k: v[i : i + 1] for k, v in cal.items()} for i in range(count)]
        result = calibrate(
            model, batches, method="auto", params={"auto_samples": count}, tools=PrecisionTools()
        )
        ranges = {"int8": result.amax, "fp8": compute_amax(result.histograms, FP8_RANGES)}
        fp32 = work / "fp32.onnx"
        onnx.save(model, fp32)
        judge = pm.Judge(case, fp32, held, cal_names, work)
        for qtype in qtypes:
            t0 = time.perf_counter()
            amax = ranges[qtype]
            scales, _ = choose_weight_scales(model, batches, amax, qtype=qtype)
            secs = time.perf_counter() - t0
            exports = [("weights", amax, None, 0.0), ("output", amax, scales, secs)]
            if qtype == "fp8" and offsets is not None:
                t0 = time.perf_counter()
                moved_amax, moved = activation_offsets(model, batches, amax, offsets)
                moved_scales, _ = choose_weight_scales(model, batches, moved_amax, qtype=qtype)
                print(f"{key} {split}: {moved} FP8 ranges moved", flush=True)
                exports.append(("offsets", moved_amax, moved_scales, time.perf_counter() - t0))
            for label, ranges_used, given, took in exports:
                path = work / f"{qtype}-{label}.onnx"
                onnx.save(export_qdq(model, ranges_used, fp8=qtype == "fp8", weight_scales=given), path)
                got = judge(path)
                got = {
                    k: v
                    for k, v in got.items()
                    if k not in ("imgs with text", "IoU@0.3 mean, imgs with text")
                }
                rows.append((qtype, label, got, took))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="rec,cls,lcnet,vit,det,bert")
    ap.add_argument("--qtypes", default="fp8,int8")
    ap.add_argument("--splits", type=int, default=6, help="the first N of methods, peer, random:0, ...")
    ap.add_argument("--det-size", type=int, default=640)
    ap.add_argument("--activation-offsets", type=float, default=None, metavar="T")
    args = ap.parse_args()
    qtypes = args.qtypes.split(",")
    results: dict[tuple[str, str, str], list[tuple[dict, dict]]] = {}  # (model, qtype, metric) -> per split
    for key in args.models.split(","):
        for split in LABELS[: 1 if key == "bert" else args.splits]:
            rows = run_case(key, split, qtypes, args.det_size, args.activation_offsets)
            print(
                f"\n{key}, split {split}\n\n| type | weight scales | "
                + " | ".join(rows[0][2])
                + " | selection s |"
            )
            print("|---|---|" + "---:|" * (len(rows[0][2]) + 1))
            for qtype, label, got, secs in rows:
                vals = " | ".join(f"{v:.5f}" for v in got.values())
                print(
                    f"| {qtype} | {label} | {vals} | {secs:.1f} |"
                    if secs
                    else f"| {qtype} | {label} | {vals} | |"
                )
            got = {(q, lab): g for q, lab, g, _ in rows}
            for qtype, new, old in [(q, "output", "weights") for q in qtypes] + [
                ("fp8", "offsets", "output")
            ]:
                if (qtype, new) in got:
                    for metric, v in got[qtype, old].items():
                        results.setdefault((key, f"{qtype} {new}", metric), []).append(
                            (v, got[qtype, new][metric])
                        )
            sys.stdout.flush()
    print(
        "\nSummary over splits: mean with data-free scales -> with output-chosen scales; splits where "
        "the chosen scales are better / level / worse (offsets: against the output-chosen scales)\n\n"
        "| model | type, variant | metric | splits | before | after | better / level / worse |"
        "\n|---|---|---|---:|---:|---:|---|"
    )
    for (key, qtype, metric), pairs in results.items():
        a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        d = sign * (b - a)
        tally = f"{int(np.sum(d > 1e-9))} / {int(np.sum(np.abs(d) <= 1e-9))} / {int(np.sum(d < -1e-9))}"
        print(f"| {key} | {qtype} | {metric} | {len(pairs)} | {a.mean():.5f} | {b.mean():.5f} | {tally} |")


if __name__ == "__main__":
    main()
