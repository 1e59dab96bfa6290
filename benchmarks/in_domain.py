"""Benchmark: every calibration method calibrated on inputs of the model's own kind, judged on real ones.

``methods.py`` and ``method_splits.py`` calibrate every model on scikit-image photos. The OCR
models are not made for photos (FP32 rec outputs only blanks on them), and judged on their own
inputs the method ranking there partly reflects that mismatch (BENCHMARKS.md, "Issue 12 judged
on more splits"). A user calibrates on their own data; this script does what they would:

- rec: calibrated on 16 drawn text lines (``tests/documents.drawn_line``; height 48, padded right
  with 0 to width 320 as PaddleOCR's batches are, and lines wider than 320 squeezed to 320 as
  PaddleOCR resizes for a fixed 48x320 input: one shape, ``x:1x3x48x320``, the peer benchmark's),
  judged on page.png's 20 line crops (``ocr_lines.page_line_variants``, at their own widths):
  character error rate of the greedy-CTC text against FP32's reading, and the share of exact lines;
- cls: calibrated on 16 drawn lines, every other one turned 180 degrees, judged on page.png's 80
  line crops (``ocr_lines.direction_line_variants``): top-1 agreement, cosine and the margin error
  (how far the decision margin moves, root mean square; ``methods._line_scores``) against FP32;
- lcnet: calibrated on 4 drawn pages at the 4 rotations (16 inputs, another seed than the
  held-out pages), judged on 12 documents at 4 rotations (``methods._page_lines``), the same three;
- det (PP-OCRv4 det at SxS, ``--det-size``, 640 by default): calibrated on 12 drawn pages
  (``det_flow.cal_documents``; seed s draws with ``det_flow.py --cal-docs-seed`` s + 2), judged on
  det_flow's held-out documents (10 drawn pages of seed 1, page.png, text.png): the IoU of the text
  map binarised at 0.3 against FP32's, pooled over the documents (det_flow's ``docs IoU``), and
  the cosine of all maps together. No layers pinned. ``--det-seeds`` seeds (2 by default: slow).

Each seed draws another calibration set; the held-out inputs never change and never calibrate.
Methods: entropy2, minmax, percentile (99.99), mse from one histogram pass, and auto as ``calib
run`` runs it (its model-output check on, with the precision room's build tools).

ModelOpt (on unless ``--no-modelopt``, when ``peer_modelopt.modelopt_python`` can make its venv):
``modelopt entropy`` and ``modelopt max``, ``python -m modelopt.onnx.quantization --quantize_mode
int8 --calibration_eps cpu --high_precision_dtype fp32`` (``peer_modelopt.modelopt_quantize``)
calibrated on the very samples trtq gets for the seed, stacked in one ``.npz``, its Q/DQ model
judged on the same held-out inputs by the same metric functions (ONNX Runtime CPU, optimisations
off). Its wall time and peak RSS are the process's (python start and imports included); trtq's
``calibrate`` times are in-process. A ModelOpt run that fails is a row saying why.
``--quantize-mode fp8``: every column in FP8 E4M3 instead (trtq's methods' ranges through
``export_qdq(fp8=True)``: minmax is what ``precision export --fp8`` uses; ModelOpt
``--quantize_mode fp8``).

``--modelopt-initializers``: also ModelOpt on a copy of the model whose ``Constant`` nodes are
initializers (``peer_modelopt.constants_as_initializers``). paddle2onnx writes the weights of rec,
cls and det as ``Constant`` nodes, and ModelOpt 0.47 (ORT's ``quantize_static``) quantizes such
weights per tensor, as activations; initializers it quantizes per output channel.

``--finetune STEPS``: one more column, auto's INT8 export (nothing pinned) with its weights
fine-tuned against FP32 on the same calibration set (``precision quantize --finetune``'s library
call, :func:`trtq.precision.finetune.finetune`, default settings).

``--weight-scales``: one more column, ``precision export --weight-scales output`` on the ranges
``calib run`` gives it (INT8: auto's; FP8: each tensor's largest |x|), scales chosen on the
same calibration set.

    nice python benchmarks/in_domain.py --models rec,cls,lcnet --seeds 5
    nice python benchmarks/in_domain.py --models rec,cls,lcnet --seeds 5 --quantize-mode fp8 --weight-scales
    nice python benchmarks/in_domain.py --models det --det-seeds 2
    nice python benchmarks/in_domain.py --models rec,cls,lcnet,det --modelopt-initializers
    nice python benchmarks/in_domain.py --models rec,cls,lcnet --seeds 3 --finetune 200
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import det_flow  # noqa: E402  (benchmarks/det_flow.py: det's drawn pages, held-out documents, IoU)
import documents  # noqa: E402  (tests/documents.py)
import methods  # noqa: E402  (benchmarks/methods.py)
import ocr_lines  # noqa: E402  (tests/ocr_lines.py)
import peer_modelopt  # noqa: E402  (benchmarks/peer_modelopt.py: ModelOpt's venv and its runs)

METHODS = ("entropy2", "minmax", "percentile", "mse", "auto")
#: ``--weight-scales``'s column: ``precision export --weight-scales output`` on ``calib run``'s ranges.
WS = "export, scales by output"
#: ``--finetune``'s column: auto's INT8 export with its weights fine-tuned on the calibration set.
FT = "auto + finetune"
MODELOPT = ("modelopt entropy", "modelopt max")
INIT = " (initializers)"  # --modelopt-initializers' columns: the model's Constant nodes as initializers
#: The metric each model is judged by, and whether lower is better.
METRIC = {
    "rec": ("lines CER", True),
    "cls": ("lines cosine", False),
    "lcnet": ("docs cosine", False),
    "det": ("docs IoU", False),
}
#: The other figures reported per model (their means over the seeds, and auto against the best
#: single method on each), and whether lower is better. The classifiers' margin error is top-1's
#: decision measured on every input (``methods._line_scores``).
OTHER = {
    "rec": [("lines exact", False)],
    "cls": [("lines top1", False), ("lines margin error", True)],
    "lcnet": [("docs top1", False), ("docs margin error", True)],
    "det": [("docs cosine", False)],
}
REC_WIDTH = 320  # rec's calibration lines: 48 x 320, one shape for ModelOpt's --calibration_shapes
DET_PAGES, DET_DOCS = 12, 10  # det: drawn calibration pages; held-out drawn pages (+ page.png, text.png)


def calibration_set(key: str, seed: int, count: int = 16, det_size: int = 640) -> list[dict[str, np.ndarray]]:
    """``count`` drawn inputs of ``key``'s own kind (module docstring), seeded; det: 12 pages."""
    if key == "det":
        return det_flow.cal_documents(det_size, DET_PAGES, seed + 2)
    rng = np.random.default_rng(1000 + seed)  # the held-out documents use seed 1
    if key == "rec":
        lines = [documents.drawn_line(rng) for _ in range(count)]
        return [
            {
                "x": ocr_lines.pad_width(
                    ocr_lines.text_line(g, (0, g.shape[0], 0, g.shape[1]), REC_WIDTH), REC_WIDTH
                )
            }
            for g in lines
        ]
    if key == "cls":
        lines = [documents.drawn_line(rng, words=(1, 4)) for _ in range(count)]
        return [ocr_lines.direction_sample(g if i % 2 == 0 else g[::-1, ::-1]) for i, g in enumerate(lines)]
    pages = documents.rotations([documents.synthetic_page(rng) for _ in range(count // 4)])
    return methods._samples("lcnet", [img for img, _ in pages])


def held_out(key: str, det_size: int = 640) -> list[dict[str, np.ndarray]]:
    if key == "det":
        return det_flow._documents(det_size, DET_DOCS, ["page.png", "text.png"])
    return methods._page_lines(key, cal_names=None)


def scores(key: str, ref: list[np.ndarray], out: list[np.ndarray]) -> dict[str, float]:
    """A Q/DQ model's outputs on the held-out inputs against FP32's (every tool's, the same way)."""
    if key == "det":
        s = det_flow.score(ref, out)
        return {"docs IoU": s["iou"], "docs cosine": s["cosine"]}
    return methods._line_scores(ref, out)


def bench(
    key: str,
    cal: list[dict],
    held: list[dict],
    ref: list[np.ndarray],
    mode: str = "int8",
    weight_scales: bool = False,
    finetune: int = 0,
) -> dict[str, dict]:
    """The held-out scores of every trtq method calibrated on ``cal`` (``s``: calibrate's seconds),
    exported in ``mode`` (``int8``, or ``fp8``: each method's ranges as FP8 E4M3 Q/DQ).
    ``weight_scales``: also :data:`WS`, the ranges ``precision export`` takes from ``calib run``'s
    cache (INT8: auto's; FP8: minmax) with weight scales chosen by output error on ``cal``."""
    import onnx

    from trtq.calib.run import calibrate, compute_amax
    from trtq.precision.builds import PrecisionTools
    from trtq.precision.export import export_qdq

    model = onnx.load(str(methods._model(key)))
    t0 = time.perf_counter()
    plain = calibrate(model, cal, method="entropy2")
    t1 = time.perf_counter()
    auto = calibrate(model, cal, method="auto", tools=PrecisionTools())
    t2 = time.perf_counter()
    out = {}
    for m in METHODS:
        amax = auto.amax if m == "auto" else compute_amax(plain.histograms, m)
        out[m] = scores(key, ref, methods._outputs(export_qdq(model, amax, fp8=mode == "fp8"), held))
    out["entropy2"]["s"], out["auto"]["s"] = t1 - t0, t2 - t1
    if weight_scales:
        from trtq.precision.weight_scales import choose_weight_scales

        amax = compute_amax(auto.histograms, "minmax") if mode == "fp8" else auto.amax
        t3 = time.perf_counter()
        chosen, _ = choose_weight_scales(model, cal, amax, qtype=mode)
        t4 = time.perf_counter()
        q = export_qdq(model, amax, fp8=mode == "fp8", weight_scales=chosen)
        out[WS] = scores(key, ref, methods._outputs(q, held))
        out[WS]["s"] = t4 - t3
    if finetune:
        from trtq.precision.finetune import FinetuneSettings
        from trtq.precision.finetune import finetune as run_finetune

        tuned = run_finetune(model, export_qdq(model, auto.amax), cal, FinetuneSettings(steps=finetune))
        out[FT] = {**scores(key, ref, methods._outputs(tuned.model, held)), "s": tuned.seconds}
        print(
            f"{key}: fine-tuning kept {tuned.kept} (step {tuned.best_step}, {tuned.changed} weights moved; "
            f"held-back loss {tuned.holdout_loss[0][1]:.4g} -> {min(v for _, v in tuned.holdout_loss):.4g})"
        )
    out["auto"]["check"] = auto.check["kept"] if auto.check and auto.check["error_max"] is not None else "-"
    return out


def bench_modelopt(
    key: str, seed: int, cal: list[dict], held: list[dict], ref: list[np.ndarray], py: Path, work: Path,
    timeout: float | None = None, initializers: bool = False, mode: str = "int8",
) -> dict[str, dict]:  # fmt: skip
    """ModelOpt's entropy and max Q/DQ models calibrated on ``cal`` (trtq's samples of the seed,
    stacked in one ``.npz``), judged as trtq's are; ``s`` / ``rss``: its process's wall seconds
    and peak RSS (MB); ``{"error": one line}`` where it fails. ``initializers``: also ModelOpt on
    a copy of the model whose ``Constant`` nodes are initializers (columns ``... (initializers)``)."""
    import onnx

    model = work / methods._model(key).name  # a private copy: ModelOpt writes files beside it
    if not model.exists():
        shutil.copy(methods._model(key), model)
    models = {"": model}
    if initializers:
        models[INIT] = model.with_name(f"{model.stem}-initializers.onnx")
        if not models[INIT].exists():
            onnx.save(peer_modelopt.constants_as_initializers(onnx.load(str(model))), models[INIT])
    cols = [(c + tag, c.split()[1], tag) for tag in models for c in MODELOPT]
    shapes = {k: {c[k].shape for c in cal} for k in cal[0]}
    if any(len(v) > 1 for v in shapes.values()):
        return {col: {"error": f"calibration samples of several shapes {shapes}"} for col, _, _ in cols}
    stacked = {k: np.concatenate([c[k] for c in cal]) for k in cal[0]}
    npz = work / f"{key}-cal-seed{seed}.npz"
    np.savez(npz, **stacked)
    out = {}
    for col, method, tag in cols:
        qdq = work / f"{key}-modelopt-{mode}-{method}{'-init' if tag else ''}-seed{seed}.qdq.onnx"
        res = peer_modelopt.modelopt_quantize(
            py, models[tag], npz, peer_modelopt.calibration_shapes(stacked), method, qdq, timeout, mode
        )
        if res.code != 0:
            out[col] = {"error": f"ModelOpt failed after {res.wall:.0f} s: {res.error}"}
            continue
        try:
            got = methods._outputs(onnx.load(str(qdq)), held)
        except Exception as exc:  # a model ORT cannot load or run is a row, not a crash
            out[col] = {"error": f"ORT: {str(exc).splitlines()[0][:160]}"}
            continue
        out[col] = {**scores(key, ref, got), "s": res.wall, "rss": res.rss_mb}
    return out


def _value(run: dict, metric: str) -> float:
    return float("nan") if "error" in run else run[metric]


def report(key: str, runs: list[dict[str, dict]], columns: tuple[str, ...], held: int) -> None:
    """The per-seed table of ``key``'s metric, auto against every other column, the other metric."""
    metric, lower = METRIC[key]
    seeds = [f"seed {s}" for s in range(len(runs))]
    print(f"\n{key}: {metric} on {held} held-out real inputs, calibrated on drawn ones"
          f"{' (lower is better)' if lower else ''}\n")  # fmt: skip
    print("| method | " + " | ".join(seeds) + " | mean | best of seed | calib s (mean) | note |")
    print("|---|" + "---:|" * (len(seeds) + 3) + "---|")
    vals = {c: np.array([_value(r[c], metric) for r in runs]) for c in columns}
    sign = -1.0 if lower else 1.0
    best = np.nanmax(np.stack([sign * v for v in vals.values()]), axis=0)
    for c, v in vals.items():
        ok = np.isfinite(v)
        wins = int(np.sum(np.isclose(sign * v, best)))
        secs = [r[c]["s"] for r in runs if "s" in r[c]]
        note = "; ".join(sorted({r[c]["error"] for r in runs if "error" in r[c]}))
        if c.startswith("modelopt") and ok.any():
            rss = max(r[c]["rss"] for r in runs if "rss" in r[c])
            note = f"process wall time, peak RSS {rss:.0f} MB" + (f"; {note}" if note else "")
        elif c in ("minmax", "percentile", "mse"):
            note = "entropy2's histograms"
        cells = [f"{x:.4f}" if np.isfinite(x) else "failed" for x in v]
        mean = f"{v[ok].mean():.4f}" + ("" if ok.all() else f" ({ok.sum()} seeds)") if ok.any() else "-"
        print(f"| {c} | " + " | ".join(cells) + f" | {mean} | {wins} of {len(v)} | "
              f"{f'{np.mean(secs):.1f}' if secs else ''} | {note} |")  # fmt: skip
    others = [c for c in columns if c != "auto" and np.isfinite(vals[c]).all()]
    top = max([c for c in others if c in METHODS], key=lambda c: sign * vals[c].mean())
    for c in others:
        d, lo, hi = methods.paired_interval(vals["auto"], vals[c])
        mark = " (best single trtq method on average)" if c == top else ""
        print(f"{key} {metric}: auto - {c}{mark}: {d:+.4f} [95% over seeds {lo:+.4f}, {hi:+.4f}]")
    for other, lower_other in OTHER[key]:
        per = {c: np.array([_value(r[c], other) for r in runs]) for c in columns}
        means = (f"{c} {np.nanmean(per[c]):.3f}" for c in columns if np.isfinite(vals[c]).any())
        print(f"{key} {other} means: " + ", ".join(means), flush=True)
        rivals = [c for c in others if c in METHODS and np.isfinite(per[c]).all()]
        if rivals and np.isfinite(per["auto"]).all():
            better = -1.0 if lower_other else 1.0
            top = max(rivals, key=lambda c: better * per[c].mean())
            d, lo, hi = methods.paired_interval(per["auto"], per[top])
            cells = ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(per["auto"], per[top], strict=True))
            print(f"{key} {other}: auto - {top} (best single on average): {d:+.4f} "
                  f"[95% over seeds {lo:+.4f}, {hi:+.4f}]; per seed auto/{top} {cells}", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="rec,cls,lcnet", help="of rec, cls, lcnet, det")
    ap.add_argument("--seeds", type=int, default=5, help="calibration sets drawn (seeds 0..N-1)")
    ap.add_argument("--det-seeds", type=int, default=2, help="det's calibration sets (det is slow)")
    ap.add_argument("--det-size", type=int, default=640, help="det's input is SxS")
    ap.add_argument("--no-modelopt", action="store_true", help="trtq's methods only (no ModelOpt venv)")
    ap.add_argument(
        "--modelopt-initializers", action="store_true",
        help="also ModelOpt on the model with its Constant nodes as initializers (so per-channel weights)",
    )  # fmt: skip
    ap.add_argument("--modelopt-timeout", type=float, default=1800.0, help="seconds per ModelOpt run")
    ap.add_argument(
        "--quantize-mode", choices=("int8", "fp8"), default="int8",
        help="fp8: every column FP8 E4M3 (trtq: export_qdq(fp8=True) with each method's ranges; FP8's "
        "default, as precision export --fp8 takes it, is minmax; ModelOpt --quantize_mode fp8)",
    )  # fmt: skip
    ap.add_argument("--work", type=Path, help="keep ModelOpt's inputs, models and logs here (default: temp)")
    ap.add_argument(
        "--weight-scales", action="store_true",
        help=f"add the column '{WS}': the ranges precision export uses (INT8 auto, FP8 minmax) with "
        "--weight-scales output on the calibration set (its s: the selection's seconds)",
    )  # fmt: skip
    ap.add_argument(
        "--finetune", type=int, default=0, metavar="STEPS",
        help=f"add the column '{FT}': auto's INT8 export, its weights fine-tuned for STEPS steps on the "
        "calibration set (precision quantize --finetune's library call; its s: the fine-tuning's seconds)",
    )  # fmt: skip
    args = ap.parse_args()
    keys = [m for m in args.models.split(",") if m]
    unknown = [k for k in keys if k not in METRIC]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {list(METRIC)}")
    import onnx

    py = None
    if not args.no_modelopt:
        try:
            py = peer_modelopt.modelopt_python()
            print(f"ModelOpt venv {peer_modelopt.MODELOPT_VENV}: {peer_modelopt.modelopt_versions(py)}")
        except (subprocess.CalledProcessError, OSError) as exc:
            print(f"ModelOpt off: its venv could not be made ({exc})")
    tags = ("", INIT) if args.modelopt_initializers else ("",)
    trtq_columns = METHODS + ((WS,) if args.weight_scales else ()) + ((FT,) if args.finetune else ())
    columns = trtq_columns + tuple(c + t for t in tags for c in MODELOPT) if py else trtq_columns
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.1f}, "
          f"quantize mode {args.quantize_mode}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="trtq-in-domain-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for key in keys:
            metric = METRIC[key][0]
            held = held_out(key, args.det_size)
            ref = methods._outputs(onnx.load(str(methods._model(key))), held)
            runs = []
            for seed in range(args.det_seeds if key == "det" else args.seeds):
                cal = calibration_set(key, seed, det_size=args.det_size)
                runs.append(bench(key, cal, held, ref, args.quantize_mode, args.weight_scales, args.finetune))
                if py:
                    runs[-1].update(
                        bench_modelopt(
                            key,
                            seed,
                            cal,
                            held,
                            ref,
                            py,
                            work,
                            args.modelopt_timeout,
                            args.modelopt_initializers,
                            args.quantize_mode,
                        )
                    )
                row = {c: round(_value(runs[-1][c], metric), 4) for c in columns}
                secs = ", ".join(f"{c} {runs[-1][c]['s']:.1f}" for c in columns if "s" in runs[-1][c])
                print(f"{key} seed {seed}: {metric} {row}; auto's check kept {runs[-1]['auto']['check']}; "
                      f"seconds {secs}", flush=True)  # fmt: skip
                for c in columns:
                    if "error" in runs[-1][c]:
                        print(f"{key} seed {seed}: {c}: {runs[-1][c]['error']}", flush=True)
            report(key, runs, columns, len(held))
            print(f"({time.strftime('%H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
