"""Reading printed text with the PP-OCRv4 rec model: the user-visible check of INT8 accuracy.

Shared by the real-model tests and ``benchmarks/bisect.py``. The page is scikit-image's
``page.png``; its text lines are cropped, resized to height 48 and normalised as PaddleOCR does;
the model's CTC output is decoded greedily with the dictionary stored in its metadata.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

# The peer benchmark's calibration photos (scikit-image samples): no printed text among them, and
# not page.png, whose lines the tests read.
PHOTOS = (
    "astronaut.png", "camera.png", "chelsea.png", "coffee.png", "color.png", "gravel.png",
    "hubble_deep_field.jpg", "logo.png", "moon.png", "motorcycle_right.png", "phantom.png", "rocket.jpg",
)  # fmt: skip


def rec_photos(names: tuple[str, ...] = PHOTOS) -> list[dict[str, np.ndarray]]:
    """scikit-image photos as rec's input (``paddleocr-rec`` preprocessing at 48x320), one batch each."""
    import cv2
    import skimage

    from trtq.datasets.preprocess import PRESETS, PreprocessSpec, to_sample

    spec = PreprocessSpec(**PRESETS["paddleocr-rec"].fields)
    src = Path(skimage.__file__).parent / "data"
    return [
        {"x": to_sample(cv2.imread(str(src / f), cv2.IMREAD_COLOR), 48, 320, "NCHW", np.float32, spec)[None]}
        for f in names
    ]


# Text lines of skimage's page.png: (first row, last row, first column, last column).
PAGE_LINES = [(5, 42, 0, 300), (45, 66, 0, 384), (64, 86, 0, 384), (82, 103, 0, 384)]


def rec_chars(model: onnx.ModelProto) -> list[str]:
    """The OCR dictionary in the rec model's metadata ("character", one entry per line)."""
    return {p.key: p.value for p in model.metadata_props}["character"].splitlines()


def ctc_decode(prob: np.ndarray, chars: list[str]) -> str:
    """Greedy CTC: argmax per time step, collapse repeats, drop the blank (class 0); the class
    after the dictionary is a space."""
    out, prev = [], -1
    for i in prob.argmax(-1)[0]:
        if i != prev and i != 0:
            out.append(chars[i - 1] if i - 1 < len(chars) else " ")
        prev = i
    return "".join(out)


def read_text(model, batches: list[dict[str, np.ndarray]], chars: list[str]) -> list[str]:
    """Greedy-CTC text of every batch: ``model`` an ONNX model (run on ONNX Runtime with its
    optimisations off, so Q/DQ rounding points stay) or an open trtq ``Candidate``."""
    from trtq.precision.builds import Candidate, onnx_candidate

    candidate = model if isinstance(model, Candidate) else onnx_candidate(model)
    try:
        return [ctc_decode(next(iter(candidate.run(b).values())), chars) for b in batches]
    finally:
        candidate.close()


def text_line(page: np.ndarray, box: tuple[int, int, int, int], max_width: int | None = None) -> np.ndarray:
    """A grayscale page crop resized to height 48 (width by aspect, squeezed to ``max_width`` where
    wider, as PaddleOCR's rec resizes for a fixed input width), BGR, (x/255 - 0.5) / 0.5, NCHW."""
    import cv2  # here, not at the top: the check script imports this module once per evaluation

    r0, r1, c0, c1 = box
    crop = page[r0:r1, c0:c1]
    width = int(round(crop.shape[1] * 48 / crop.shape[0]))
    width = width if max_width is None else min(width, max_width)
    bgr = cv2.cvtColor(cv2.resize(crop, (width, 48), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR)
    return ((bgr.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].copy()


def pad_width(x: np.ndarray, width: int = 320) -> np.ndarray:
    """A normalised line (NCHW) padded right with 0 to at least ``width`` columns, as PaddleOCR's
    rec batches are (at least 48 x 320; page.png's lines are wider and stay as they are)."""
    if x.shape[-1] >= width:
        return x
    out = np.zeros((*x.shape[:-1], width), x.dtype)
    out[..., : x.shape[-1]] = x
    return out


def page_batches(lines: int = len(PAGE_LINES)) -> list[dict[str, np.ndarray]]:
    """One batch per text line of skimage's page.png, for the rec model's input ``x``."""
    from skimage import data

    page = data.page()
    return [{"x": text_line(page, box)} for box in PAGE_LINES[:lines]]


def page_line_variants(shifts: tuple[int, ...] = (-2, -1, 0, 1, 2)) -> list[dict[str, np.ndarray]]:
    """Each text line of page.png cropped at every vertical ``shifts`` (pixels) of its box: 20 real
    rec inputs by default (the crops of one line differ, as a detector's boxes do)."""
    from skimage import data

    page = data.page()
    return [{"x": text_line(page, box)} for box in shifted_boxes(page.shape[0], shifts)]


def shifted_boxes(height: int, shifts: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """:data:`PAGE_LINES`' boxes moved down by each of ``shifts`` (pixels), those that stay on a
    page ``height`` rows tall; line by line, shift by shift."""
    return [
        (r0 + d, r1 + d, c0, c1)
        for r0, r1, c0, c1 in PAGE_LINES
        for d in shifts
        if r0 + d >= 0 and r1 + d <= height
    ]


def direction_sample(crop: np.ndarray) -> dict[str, np.ndarray]:
    """The direction classifier's input (48x192) from a grayscale line crop: resized to height 48
    (width at most 192), BGR, (x/255 - 0.5) / 0.5, padded right with 0 as PaddleOCR does."""
    import cv2

    h, w = crop.shape
    width = min(192, int(np.ceil(48 * w / h)))
    bgr = cv2.cvtColor(cv2.resize(np.ascontiguousarray(crop), (width, 48)), cv2.COLOR_GRAY2BGR)
    x = np.zeros((1, 3, 48, 192), np.float32)
    x[0, :, :, :width] = ((bgr.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    return {"x": x}


def direction_line_variants(shifts: tuple[int, ...] = (-2, -1, 0, 1, 2)) -> list[dict[str, np.ndarray]]:
    """Inputs of the PP-OCR direction classifier (48x192): each page.png line at every vertical
    shift, whole and its first half (a word group, as a detector cuts lines), upright and turned
    180 degrees; 80 by default (:func:`direction_sample`)."""
    from skimage import data

    page = data.page()
    out = []
    for r0, r1, c0, c1 in shifted_boxes(page.shape[0], shifts):
        crop = page[r0:r1, c0:c1]
        for c in (crop, crop[::-1, ::-1]):
            out += [direction_sample(c), direction_sample(c[:, : c.shape[1] // 2])]
    return out


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions of one character each)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_error_rate(got: list[str], ref: list[str]) -> float:
    """Summed edit distance over summed reference length (0: every text as the reference)."""
    return sum(edit_distance(g, r) for g, r in zip(got, ref, strict=True)) / max(1, sum(len(r) for r in ref))


# A stand-alone check for `precision bisect --check`: exit 0 when the candidate reads every line
# exactly as FP32 did. ONNX Runtime's optimisations are off to keep the Q/DQ rounding points.
# It decodes with this module's ctc_decode (its folder is put on sys.path by write_text_check).
CHECK_SCRIPT = """\
import json, sys
sys.path.insert(0, {tests_dir!r})
import numpy as np, onnxruntime as ort
from ocr_lines import ctc_decode
model, folder = sys.argv[1], sys.argv[2]
ref = json.load(open(folder + "/expected.json", encoding="utf-8"))
opts = ort.SessionOptions(); opts.intra_op_num_threads = 2
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
got = [ctc_decode(session.run(None, {{"x": np.load(f"{{folder}}/line{{i}}.npy")}})[0], ref["chars"])
       for i in range(len(ref["texts"]))]
sys.exit(0 if got == ref["texts"] else 1)
"""


def write_text_check(
    folder: Path, batches: list[dict[str, np.ndarray]], chars: list[str], texts: list[str]
) -> str:
    """Write the check script and its data into ``folder``; return the --check command line."""
    for i, b in enumerate(batches):
        np.save(folder / f"line{i}.npy", b["x"])
    (folder / "expected.json").write_text(json.dumps({"chars": chars, "texts": texts}), encoding="utf-8")
    script = CHECK_SCRIPT.format(tests_dir=str(Path(__file__).resolve().parent))
    (folder / "check.py").write_text(script, encoding="utf-8")
    return f"{sys.executable} {folder / 'check.py'} {{model}} {folder}"
