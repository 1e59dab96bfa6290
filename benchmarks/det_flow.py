"""Benchmark: the accuracy-first INT8 flow on PP-OCRv4 det, judged on held-out images.

The flow a user runs (README, "Getting INT8 accurate"), here as the same library calls:

1. ``calib run det.onnx --data cal/ --method M --cache c`` (:func:`trtq.calib.run.calibrate`);
2. ``precision bisect det.onnx --data cal/ --eval-data held/ --cache c --metric mask-iou
   --binarize 0.3 --threshold T -o pins.json`` (:func:`trtq.precision.bisect.run_bisect`), for
   every ``T`` of ``--thresholds``;
3. ``precision export det.onnx --int8 --cache c --pins pins.json -o det.qdq.onnx``
   (:func:`trtq.precision.export.export_qdq` with the pins' member nodes).

Besides bisect's answers, the *sensitivity prefixes*: the ``k`` layers with the largest layerwise
INT8 error on the calibration images (each layer alone in INT8 with FP32 inputs, what bisect's
``ranked`` strategy orders by) pinned, for every ``k`` of ``--prefixes``: a Pareto curve that
does not search on the calibration images' IoU, so it cannot overfit it.

Images: scikit-image 0.26's samples without the two chessboards, alternately calibration /
held-out (the peer benchmark's split: 12 / 12; the held-out half holds page.png and text.png, the
two images with most text). Preprocessing ``paddleocr`` at SxS (``--det-size``). Every exported
Q/DQ model runs in ONNX Runtime CPU with graph optimisations off against the FP32 model on the
held-out images: IoU of the text map binarised at 0.3, pooled over the images (intersections
and unions summed, what ``--metric mask-iou`` computes), and the cosine of all maps together.
``layers``: the fused layers of the emulation (what bisect pins and TensorRT would build).

Calibration set (``--augment``; the held-out images are never augmented, nor used for
calibration): ``flip-crop`` adds each photo's mirror image and centre half, ``-quadrants`` its
quadrants; ``text`` adds a copy of each photo with synthetic printed text drawn on it
(:func:`draw_text`: ``cv2.putText``, seeded by file name, so every run draws the same),
``text-x2`` two such copies, ``flip-crop-text`` the flip-crop set plus one text copy,
``flip-crop-text-all`` text drawn on the photo, its mirror and its centre half as well,
``flip-crop-soft-all`` the same with smaller, paler text (``TEXT_KINDS``). The run
prints the share of pixels where FP32's text map is above 0.3 on each kind of calibration image
(does the detector see the drawn text?); ``--per-image`` prints each held-out image's IoU per row.
``--rank-augment A``: the ranking (layerwise, graphwise, insitu) runs on augmentation ``A`` of
the calibration photos, the ranges still come from ``--augment``'s set. ``--pin-order N1,N2,..``:
these layers (head node names) come first in the ranking, e.g. the head of another run's.
``--no-text F1,F2``: these calibration photos get no text copies. ``--ranking oracle`` is not a
flow: it pins, one at a time, the layer that raises the *held-out* IoU most (every layer tried at
every step), the upper bound of what any choice of pins reaches with the run's ranges;
``--cross`` first chooses them on half the held-out images and judges them on the other half.

Levers (each off by default; BENCHMARKS.md, "Levers for the det target"): ``--residual-add``
(the Q/DQ of an Add fused into a Conv layer, patched into the emulation's rules),
``--ranking graphwise|graphwise-gain|insitu`` (sensitivities that see earlier layers' errors),
``--auto-samples`` (how many calibration images auto measures on), ``--auto-fallback`` (the figures
in BENCHMARKS.md's det sections before auto became the default were measured with ``mse``),
``--weight-correction own|sequential`` (+ ``--weight-correction-alpha``: the least-squares weight
refit of :mod:`trtq.precision.weight_correction` on the calibration images; ``--weight-correction-stage``
``per-pins`` (default: the ranking on the plain model, then each row's export corrected with its
pins, as ``precision export --pins P --weight-correction`` does) or ``before-ranking`` (corrected
once without pins, the ranking and every row on the corrected model).

    nice python benchmarks/det_flow.py --det-size 320
    nice python benchmarks/det_flow.py --det-size 640 --thresholds 0.95,0.97 --prefixes 0,4,8
    nice python benchmarks/det_flow.py --det-size 640 --auto-fallback mse --augment flip-crop-text \
        --thresholds "" --prefixes 0,2,4,6,8
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import documents  # noqa: E402  (tests/documents.py: drawn pages of printed lines)
import methods  # noqa: E402  (benchmarks/methods.py: _samples)

RANKINGS = ("layerwise", "output", "greedy", "suffix", "graphwise", "graphwise-gain", "insitu", "oracle")
THRESHOLD = 0.3  # text-map binarisation (PP-OCR's DB post-processing default)


#: Calibration-set augmentations (the held-out images are never augmented): each calibration
#: photo, plus its mirror image, its centre half (h/2 x w/2 from h/4, w/4) and its four quadrants;
#: ``text``: a copy with synthetic printed text drawn on it (:func:`draw_text`; ``text-b`` another
#: copy with other text); ``flip+text``: text drawn on the mirror image, and so on.
AUGMENT = {
    "none": ("o",),
    "flip-crop": ("o", "flip", "centre"),
    "flip-crop-quadrants": ("o", "flip", "centre", "q0", "q1", "q2", "q3"),
    "text": ("o", "text"),
    "text-x2": ("o", "text", "text-b"),
    "flip-crop-text": ("o", "flip", "centre", "text"),
    "flip-crop-text-all": ("o", "flip", "centre", "text", "flip+text", "centre+text"),
    "flip-crop-soft-all": ("o", "flip", "centre", "soft", "flip+soft", "centre+soft"),
}

#: :func:`draw_text`'s settings per kind of text copy: ``soft`` is smaller (capitals at most
#: 24 px) and paler (contrast 0.5) than ``text``.
TEXT_KINDS = {"text": {}, "text-b": {}, "soft": {"max_size": 24.0, "contrast": 0.5}}

#: Words for :func:`draw_text` (besides random letter strings and numbers).
_WORDS = (
    "the of and to in is for on with by from at total page date name price order invoice "
    "amount number street road city phone email open closed sale new free exit north south "
    "station ticket receipt address report table figure section chapter note item qty unit "
    "tax cash card paid due account service hours monday friday january march december"
).split()
_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)


def _word(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.6:
        w = str(rng.choice(_WORDS))
    elif r < 0.8:
        letters = rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=int(rng.integers(2, 10)))
        w = "".join(letters)
    else:
        w = f"{rng.integers(0, 10000)}" if rng.random() < 0.5 else f"{rng.uniform(0, 999):.2f}"
    case = rng.random()
    return w.upper() if case < 0.2 else w.capitalize() if case < 0.5 else w


def _text_block(rng: np.random.Generator, size: float, max_w: int, lines: int, pad: int):
    """Lines of random words in one Hershey font whose capitals are ``size`` px tall, at most
    ``max_w`` px wide (padding included): (ink mask uint8 0..255, block h, block w)."""
    font = int(rng.choice(_FONTS)) | (cv2.FONT_ITALIC if rng.random() < 0.15 else 0)
    cap = cv2.getTextSize("H", font, 1.0, 1)[0][1]
    scale = size / cap
    thick = max(1, int(round(size / rng.uniform(9.0, 16.0))))
    texts, widths = [], []
    for _ in range(lines):
        line, width = "", 0
        for _ in range(int(rng.integers(1, 9))):
            cand = f"{line} {_word(rng)}" if line else _word(rng)
            cw = cv2.getTextSize(cand, font, scale, thick)[0][0]
            if cw + 2 * pad > max_w:
                break
            line, width = cand, cw
        if line:
            texts.append(line)
            widths.append(width)
    if not texts:
        return None
    step = int(round(size * rng.uniform(1.5, 2.0)))
    bh, bw = 2 * pad + step * (len(texts) - 1) + int(round(size * 1.5)), 2 * pad + max(widths)
    ink = np.zeros((bh, bw), np.uint8)
    for i, t in enumerate(texts):
        org = (pad, pad + int(round(size)) + i * step)
        cv2.putText(ink, t, org, font, scale, 255, thick, cv2.LINE_AA)
    return ink


def draw_text(
    img: np.ndarray, rng: np.random.Generator, *, max_size: float = 60.0, contrast: float = 1.0
) -> np.ndarray:
    """A copy of ``img`` (uint8 H x W x 3, BGR, at the model's input size: sizes are in pixels
    of it) with synthetic printed text drawn on it, OpenCV only (``cv2.putText`` with the
    ``FONT_HERSHEY_*`` faces, which OpenCV 5 draws as sans-serif outline fonts, regular and
    bold; OpenCV 4 as Hershey stroke fonts), deterministic for a given ``rng`` state.

    One white paper-like panel with 4-12 lines of small dark text (capitals 8-20 px) and 3-6
    blocks of 1-3 lines with capitals 8 to ``max_size`` px (log-uniform), each dark on a light
    panel, light on a dark panel, or straight on the photo in black or white, whichever contrasts
    with the photo there. A quarter of the blocks are rotated by 2-12 degrees either way
    (``cv2.warpAffine``). Panels are solid, with a random grey level; text is anti-aliased.
    ``contrast`` < 1 pulls the panel and text grey levels towards mid-grey (128) by that factor.
    For calibrating a text detector on photos that hold no text."""
    out = img.copy()
    h, w = out.shape[:2]
    taken = np.zeros((h, w), bool)
    blocks = [("paper", float(rng.uniform(8, 20)), int(rng.integers(4, 13)))]
    for _ in range(int(rng.integers(3, 7))):
        style = str(rng.choice(["dark-on-light", "light-on-dark", "on-photo"]))
        blocks.append(
            (style, float(np.exp(rng.uniform(np.log(8), np.log(max_size)))), int(rng.integers(1, 4)))
        )
    for style, size, lines in blocks:
        pad = int(round(size * rng.uniform(0.4, 1.2))) if style != "on-photo" else 2
        max_w = int(w * (rng.uniform(0.35, 0.7) if style == "paper" else rng.uniform(0.2, 0.9)))
        ink = _text_block(rng, size, max_w, lines, pad)
        if ink is None:
            continue
        rotate = rng.random() < 0.25
        if rotate:  # room for the rotated block's corners
            m = int(np.ceil(0.25 * max(ink.shape)))
            ink = cv2.copyMakeBorder(ink, m, m, m, m, cv2.BORDER_CONSTANT, value=0)
        bh, bw = ink.shape
        if bh >= h or bw >= w:
            continue
        for _ in range(30):  # a place that overlaps no earlier block (their boxes)
            y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
            if not taken[y : y + bh, x : x + bw].any():
                break
        else:
            continue
        taken[y : y + bh, x : x + bw] = True
        if style == "paper":
            panel, fg = float(rng.uniform(215, 255)), float(rng.uniform(0, 60))
        elif style == "dark-on-light":
            panel, fg = float(rng.uniform(170, 255)), float(rng.uniform(0, 80))
        elif style == "light-on-dark":
            panel, fg = float(rng.uniform(0, 90)), float(rng.uniform(190, 255))
        else:
            panel, fg = None, 0.0 if out[y : y + bh, x : x + bw].mean() > 127 else 255.0
        fg = 128 + (fg - 128) * contrast
        panel = None if panel is None else 128 + (panel - 128) * contrast
        cover = ink  # what hides the photo: the panel, or the ink alone
        if panel is not None:
            cover = np.zeros((bh, bw), np.uint8)
            b = m if rotate else 0
            cover[b : bh - b, b : bw - b] = 255
        if rotate:  # the block (panel and ink) about its centre
            angle = float(rng.uniform(2, 12) * rng.choice([-1, 1]))
            rot = cv2.getRotationMatrix2D((bw / 2, bh / 2), angle, 1.0)
            cover = cv2.warpAffine(cover, rot, (bw, bh), flags=cv2.INTER_LINEAR)
            ink = cv2.warpAffine(ink, rot, (bw, bh), flags=cv2.INTER_LINEAR)
        a_cover = cover.astype(np.float32)[..., None] / 255
        a_ink = ink.astype(np.float32)[..., None] / 255
        region = out[y : y + bh, x : x + bw].astype(np.float32)
        if panel is not None:
            region = region * (1 - a_cover) + panel * a_cover
        region = region * (1 - a_ink) + fg * a_ink
        out[y : y + bh, x : x + bw] = np.clip(np.rint(region), 0, 255).astype(np.uint8)
    return out


def _variant(img: np.ndarray, kind: str) -> np.ndarray:
    kind = kind.split("+")[0]
    h, w = img.shape[:2]
    if kind == "flip":
        return img[:, ::-1]
    if kind == "centre":
        return img[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2]
    if kind.startswith("q"):  # q0 q1 / q2 q3
        r, c = divmod(int(kind[1]), 2)
        return img[r * (h // 2) : (r + 1) * (h // 2), c * (w // 2) : (c + 1) * (w // 2)]
    return img


def _images(files: list[str], augment: str, no_text: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(file, kind) of every image of the set; no text copies of the photos in ``no_text``."""
    kinds = AUGMENT[augment]
    return [(f, k) for f in files for k in kinds if f not in no_text or k.split("+")[-1] not in TEXT_KINDS]


def _batches(
    files: list[str],
    size: int,
    augment: str = "none",
    no_text: frozenset[str] = frozenset(),
    perturb: Callable[[str, np.ndarray], np.ndarray] | None = None,
) -> list[dict[str, np.ndarray]]:
    """One input batch per image of the set; ``perturb(file, bgr)`` is applied to each loaded photo
    before anything else (``det_noise_floor.py``'s perturbations)."""
    import skimage

    from trtq.datasets.preprocess import PRESETS, PreprocessSpec, to_sample
    from trtq.datasets.resize import RESIZERS

    spec = PreprocessSpec(**PRESETS["paddleocr"].fields)
    src = Path(skimage.__file__).parent / "data"
    out, images = [], {}
    for f, kind in _images(files, augment, no_text):
        img = images.get(f)
        if img is None:
            img = images[f] = cv2.imread(str(src / f), cv2.IMREAD_COLOR)
            img = images[f] = img if perturb is None else perturb(f, img)
        x = np.ascontiguousarray(_variant(img, kind))
        text = TEXT_KINDS.get(kind.split("+")[-1])
        if text is not None:  # drawn at the input size, so that text sizes are model pixels
            rng = np.random.default_rng(zlib.crc32(f"{f}/{kind}".encode()))
            x = draw_text(RESIZERS[spec.resize](x, size, size, spec), rng, **text)
        out.append({"x": to_sample(x, size, size, "NCHW", np.float32, spec)[None]})
    return out


def _documents(
    size: int,
    count: int,
    held_images: list[str],
    perturb: Callable[[str, np.ndarray], np.ndarray] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Held-out inputs of the detector's own kind: ``count`` pages of printed lines drawn by
    ``tests/documents.py`` (seeded: every run draws the same), plus page.png and text.png where
    they are held out (never when they calibrate); ``perturb(name, bgr)`` as in :func:`_batches`."""
    real = zip(("page.png", "text.png"), documents.document_images(0), strict=True)
    named = [(f"drawn{i}", img) for i, img in enumerate(documents.document_images(count, real=False))]
    named += [(n, img) for n, img in real if n in held_images]
    images = [img if perturb is None else perturb(n, np.ascontiguousarray(img)) for n, img in named]
    return methods._samples("det", images, size)


def cal_documents(size: int, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Calibration inputs of the detector's own kind: ``count`` pages of printed lines drawn by
    ``tests/documents.py`` with ``seed`` (another than the held-out pages' 1), at SxS."""
    return methods._samples("det", documents.document_images(count, seed=seed, real=False), size)


def _maps(model, batches) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return [s.run(None, b)[0].astype(np.float64) for b in batches]


def overlap(ref: list[np.ndarray], out: list[np.ndarray]) -> tuple[int, int]:
    """Intersection and union (pixel counts) of the maps binarised at 0.3, summed over the images."""
    inter = sum(
        int(np.logical_and(r > THRESHOLD, o > THRESHOLD).sum()) for r, o in zip(ref, out, strict=True)
    )
    union = sum(int(np.logical_or(r > THRESHOLD, o > THRESHOLD).sum()) for r, o in zip(ref, out, strict=True))
    return inter, union


def score(ref: list[np.ndarray], out: list[np.ndarray]) -> dict[str, float]:
    """Pooled IoU of the maps binarised at 0.3, and the cosine of all maps together."""
    inter, union = overlap(ref, out)
    a, b = np.concatenate([r.ravel() for r in ref]), np.concatenate([o.ravel() for o in out])
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))
    return {"iou": inter / union if union else 1.0, "cosine": cos}


def output_ranking(model, amax, layers, cal, ref_cal) -> list:
    """Layers worst first by the relative L2 error of the *final output* on the calibration
    images when that layer alone runs in INT8 (every other layer pinned to FP32)."""
    from trtq.precision.export import export_qdq

    ref = np.concatenate([r.ravel() for r in ref_cal])
    errs = []
    for lay in layers:
        others = [m for other in layers if other is not lay for m in other.members]
        out = np.concatenate([o.ravel() for o in _maps(export_qdq(model, amax, sorted(others)), cal)])
        errs.append(float(np.linalg.norm(out - ref) / (np.linalg.norm(ref) + 1e-30)))
    order = np.argsort(-np.asarray(errs), kind="stable")
    return [layers[i] for i in order]


def _pinned(model, amax, pins):
    """The Q/DQ export of ``model`` at ``amax`` with the layers ``pins`` (their member nodes) in FP32."""
    from trtq.precision.export import export_qdq

    return export_qdq(model, amax, sorted(m for lay in pins for m in lay.members))


def _forward_selection(model, amax, pool, k: int, value, label: str) -> list:
    """``k`` times, pin the layer of ``pool`` whose pinning (with the ones chosen so far) gives the
    Q/DQ model the highest ``value(model)``; the chosen layers first, then the rest of ``pool``."""
    chosen: list = []
    for _ in range(k):
        rest = [lay for lay in pool if lay not in chosen]
        vals = [value(_pinned(model, amax, [*chosen, c])) for c in rest]
        chosen.append(rest[int(np.argmax(vals))])
        print(f"{label}: {len(chosen)} pinned, {max(vals):+.4f} ({chosen[-1].node})", flush=True)
    return chosen + [lay for lay in pool if lay not in chosen]


def greedy_pins(model, amax, pool, cal, ref_cal, k: int) -> list:
    """Forward selection: ``k`` times, pin the layer of ``pool`` (the layerwise ranking's head)
    that lowers the relative L2 error of the final output on the calibration images most (printed
    negated)."""
    ref = np.concatenate([r.ravel() for r in ref_cal])

    def neg_err(q) -> float:
        out = np.concatenate([o.ravel() for o in _maps(q, cal)])
        return -float(np.linalg.norm(out - ref) / (np.linalg.norm(ref) + 1e-30))

    return _forward_selection(model, amax, pool, k, neg_err, "greedy, -error")


def oracle_pins(model, amax, pool, held, ref_held, k: int) -> list:
    """Forward selection scored on the *held-out* images: ``k`` times, pin the layer of ``pool``
    that raises the held-out IoU most. No flow can do this (it chooses on the images it is judged
    on); it is the upper bound of what any choice of ``k`` pins can reach with these ranges."""
    return _forward_selection(
        model, amax, pool, k, lambda q: score(ref_held, _maps(q, held))["iou"], "oracle, held-out IoU"
    )


def oracle_cross(model, amax, ranked, held, ref_held, k: int) -> None:
    """How much of the oracle's bound is fitting the judged images: the oracle's ``k`` pins chosen
    on the even-numbered held-out images judged on the odd-numbered ones, and the other way round.
    Prints, pooled over both halves: each half with its own oracle pins, with the other half's, and
    with the layerwise ranking's first ``k``."""
    halves = (list(range(0, len(held), 2)), list(range(1, len(held), 2)))
    totals = {"oracle, own half": [0, 0], "oracle, other half's pins": [0, 0], f"layerwise {k}": [0, 0]}
    for h, mine in enumerate(halves):
        other = halves[1 - h]
        pins = oracle_pins(model, amax, ranked, [held[i] for i in mine], [ref_held[i] for i in mine], k)[:k]
        for key, chosen, judged in (
            ("oracle, own half", pins, mine),
            ("oracle, other half's pins", pins, other),
            (f"layerwise {k}", ranked[:k], other),
        ):
            q = _pinned(model, amax, chosen)
            i, u = overlap([ref_held[j] for j in judged], _maps(q, [held[j] for j in judged]))
            totals[key][0] += i
            totals[key][1] += u
            print(
                f"cross: half {h}'s pins ({', '.join(p.node for p in pins)}) as '{key}': {i / u:.4f}",
                flush=True,
            )
    for key, (i, u) in totals.items():
        print(f"cross-fitted oracle, pooled over both halves, {key}: {i / u:.4f}", flush=True)


def graphwise_ranking(model, amax, layers, cal, *, gain: bool, threads=None) -> list:
    """Layers worst first by the rel-l2 of their output tensor in the *graphwise* INT8 run on the
    calibration images (everything quantized at once: errors of earlier layers included), or with
    ``gain`` by how much the layer adds to it: its output's rel-l2 minus the largest rel-l2 of the
    tensors it reads (0 for graph inputs). Intermediate tensors only, never the task output."""
    from trtq.precision.compare import compare
    from trtq.precision.emulate import EmulationConfig, folded
    from trtq.precision.emulation_fusion import find_layers

    run = compare(folded(model), cal, EmulationConfig("int8"), amax=amax, mode="graphwise", threads=threads)
    err = {r.tensor: float(r.metrics["rel_l2"]) for r in run.layers}
    fl = find_layers(folded(model))
    inputs = {fl.node_names[f.head]: f.inputs for f in fl.layers}

    def badness(lay) -> float:
        out = max((err.get(t, 0.0) for t in lay.outputs), default=0.0)
        if not gain:
            return out
        return out - max((err.get(t, 0.0) for t in inputs.get(lay.node, ())), default=0.0)

    scores = [badness(lay) for lay in layers]
    order = np.argsort(-np.asarray(scores), kind="stable")
    return [layers[i] for i in order]


def insitu_ranking(model, amax, layers, cal) -> list:
    """Layers worst first by their own INT8 error *in place*: in the graphwise INT8 run on the
    calibration images, each INT8 layer's output against an FP32 copy of that layer fed the same
    (already quantized upstream) inputs, ||int8 - fp32 copy|| / ||fp32 copy|| pooled over the
    images. Like the layerwise error, but on the input distribution the deployed model sees."""
    import onnx
    import onnxruntime as ort

    from trtq.precision.emulate import EmulationConfig, apply_plan, folded, plan_emulation

    plan = plan_emulation(folded(model), EmulationConfig("int8"), amax)
    emu = apply_plan(plan)
    have = {i.name for i in emu.graph.initializer}
    originals = {i.name: i for i in plan.model.graph.initializer}
    pairs: dict[str, list[tuple[str, str]]] = {}
    for lp in plan.layers:
        if not lp.int8:
            continue
        sfx = f"__fp32copy{lp.layer.id}"
        for idx in lp.layer.nodes:
            node = onnx.NodeProto()
            node.CopyFrom(plan.model.graph.node[idx])
            node.name += sfx
            for pos, t in enumerate(node.input):
                if t in lp.layer.internal:
                    node.input[pos] = t + sfx
                elif t in originals and t not in have:
                    emu.graph.initializer.append(originals[t])
                    have.add(t)
            for j, o in enumerate(node.output):
                if o:
                    node.output[j] = o + sfx
            emu.graph.node.append(node)
        pairs[plan.graph.node_names[lp.layer.head]] = [(o, o + sfx) for o in lp.layer.outputs]
    fetch = sorted({n for v in pairs.values() for pair in v for n in pair})
    outs = {o.name for o in emu.graph.output}
    emu.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in fetch if n not in outs)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(emu.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    num: dict[str, float] = dict.fromkeys(fetch, 0.0)
    den: dict[str, float] = dict.fromkeys(fetch, 0.0)
    for b in cal:
        got = dict(zip(fetch, sess.run(fetch, b), strict=True))
        for v in pairs.values():
            for o, c in v:
                num[o] += float(np.sum((got[o].astype(np.float64) - got[c]) ** 2))
                den[o] += float(np.sum(got[c].astype(np.float64) ** 2))
    err = {node: max(np.sqrt(num[o] / den[o]) if den[o] else 0.0 for o, _ in v) for node, v in pairs.items()}
    scores = [err.get(lay.node, -1.0) for lay in layers]
    order = np.argsort(-np.asarray(scores), kind="stable")
    return [layers[i] for i in order]


#: ``--residual-add``: the Q/DQ on an Add fused into a Conv layer (residual / FPN sums).
RESIDUAL_ADD = ("quantize", "branch", "float")


def patch_residual_add(mode: str) -> None:
    """Measure a placement of the Add fused into a Conv layer by patching the emulation's rules
    (export and ranking plan through them): ``quantize`` (as shipped: its outside input),
    ``branch`` (only the input computed inside the layer, in FP32 before its Q/DQ, as for a
    transformer's residual) or ``float`` (neither: the Add runs in float)."""
    from trtq.precision import emulate

    if mode == "quantize":
        return
    orig_branch, orig_wants = emulate._residual_branch, emulate._wants_int8

    def conv_add(node, layer, anchor_op) -> bool:
        return node.op_type == "Add" and not layer.kind and anchor_op in ("Conv", "ConvTranspose")

    def branch(node, layer, activations, anchor_op):
        if mode == "branch" and conv_add(node, layer, anchor_op):
            acts = [t for t in node.input if t in activations]
            inside = [t for t in acts if t in layer.internal]
            return inside[0] if len(acts) == 2 and len(inside) == 1 else None
        return orig_branch(node, layer, activations, anchor_op)

    def wants(node, pos, layer, config, anchor_op, inside):
        if conv_add(node, layer, anchor_op) and config.placement == "explicit":
            return mode == "branch" and inside
        return orig_wants(node, pos, layer, config, anchor_op, inside)

    emulate._residual_branch, emulate._wants_int8 = branch, wants


def main() -> None:
    import onnx
    from method_splits import split_names

    from trtq.calib.run import calibrate
    from trtq.precision.bisect import model_layers, rank_layers, run_bisect
    from trtq.precision.builds import PrecisionTools
    from trtq.precision.compare import layerwise_sensitivity
    from trtq.precision.emulate import EmulationConfig, folded
    from trtq.precision.evaluate import metric_criterion
    from trtq.precision.export import export_qdq

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--det-size", type=int, default=320)
    ap.add_argument("--method", default="auto", help="calibration method (calib run --method)")
    ap.add_argument("--thresholds", default="0.95,0.97,0.99", help="bisect's mask-iou thresholds")
    ap.add_argument("--prefixes", default="0,2,4,6,8,12,16,24", help="k: the k most sensitive layers pinned")
    ap.add_argument(
        "--ranking",
        default="layerwise",
        choices=RANKINGS,
        help="order of the prefixes: layerwise error, or the output error of each layer alone in INT8; "
        "oracle: greedy on the held-out IoU itself over every layer (an upper bound, not a flow)",
    )
    ap.add_argument(
        "--pool", type=int, default=None,
        help="greedy / oracle: choose among the first N of the layerwise ranking (0: every layer; "
        "default: greedy 3 x the largest prefix, oracle every layer)",
    )  # fmt: skip
    ap.add_argument(
        "--cross", action="store_true",
        help="with --ranking oracle: first the cross-fitted oracle (pins chosen on half the held-out "
        "images, judged on the other half)",
    )  # fmt: skip
    ap.add_argument("--augment", default="none", choices=tuple(AUGMENT), help="calibration-set augmentation")
    ap.add_argument(
        "--rank-augment",
        default="",
        choices=("", *AUGMENT),
        help="rank on this augmentation of the calibration photos instead (ranges still from --augment)",
    )
    ap.add_argument(
        "--no-text", default="", help="calibration photos (file names, comma-separated) given no text copies"
    )
    ap.add_argument(
        "--pin-order",
        default="",
        help="layers (head node names, comma-separated) pinned first, in this order, before the ranking's",
    )
    ap.add_argument(
        "--bias-correction", action="store_true", help="precision export --bias-correction (1 pass)"
    )
    ap.add_argument(
        "--weight-correction",
        default="",
        choices=("", "own", "sequential"),
        help="precision export --weight-correction MODE (before --bias-correction when both)",
    )
    ap.add_argument(
        "--weight-correction-alpha",
        type=float,
        default=None,
        help="--weight-correction-alpha (default: the library's)",
    )
    ap.add_argument(
        "--weight-rounding",
        default="nearest",
        choices=("nearest", "adaround"),
        help="with --weight-correction: INT8 steps to the nearest, or chosen by AdaRound (precision export "
        "--adaround); --weight-correction own --weight-correction-alpha inf is --adaround alone",
    )
    ap.add_argument(
        "--weight-correction-stage",
        default="per-pins",
        choices=("per-pins", "before-ranking"),
        help="per-pins: rank on the plain model, then correct with each row's pins (precision export "
        "--pins P --weight-correction); before-ranking: correct once without pins, rank the corrected model",
    )
    ap.add_argument(
        "--residual-add", default="quantize", choices=RESIDUAL_ADD, help="Q/DQ of an Add fused into a Conv"
    )
    ap.add_argument(
        "--auto-samples", type=int, default=0, help="auto's auto_samples (0: all calibration images)"
    )
    ap.add_argument("--auto-fallback", default="", help="auto's auto_fallback (default: the library's, mse)")
    ap.add_argument("--per-image", action="store_true", help="print every held-out image's IoU per row")
    ap.add_argument(
        "--cal-docs", type=int, default=0,
        help="calibrate on N drawn document pages instead of the split's photos",
    )  # fmt: skip
    ap.add_argument("--cal-docs-seed", type=int, default=2, help="their seed (the held-out pages' is 1)")
    ap.add_argument(
        "--docs", type=int, default=10,
        help="also judge on N drawn document pages (+ page.png, text.png where held out): docs IoU",
    )  # fmt: skip
    ap.add_argument(
        "--equalize",
        action="store_true",
        help="cross-layer equalisation first (precision equalize); FP32 references unchanged",
    )
    ap.add_argument("--max-evals", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--split", default="peer", help="calibration / held-out images: peer (default), methods or random:K"
    )
    args = ap.parse_args()
    cal_images, held_images = split_names(args.split)
    print(f"split {args.split}: calibration {', '.join(cal_images)}; held out {', '.join(held_images)}")

    from conftest import real_model_path

    patch_residual_add(args.residual_add)
    model = onnx.load(str(real_model_path("det")))
    no_text = frozenset(f for f in args.no_text.split(",") if f)
    cal = _batches(cal_images, args.det_size, args.augment, no_text)
    if args.cal_docs:  # calibrate on drawn pages instead (another seed than the held-out pages)
        cal = cal_documents(args.det_size, args.cal_docs, args.cal_docs_seed)
        cal_images, args.augment = [f"page{i}" for i in range(len(cal))], "none"
    held = _batches(held_images, args.det_size)
    ref_cal, ref_held = _maps(model, cal), _maps(model, held)
    docs = _documents(args.det_size, args.docs, held_images) if args.docs else []
    ref_docs = _maps(model, docs)
    if args.equalize:  # every INT8 model below comes from the equalised one, judged against the original
        from trtq.precision.equalize import equalize

        model, done = equalize(model)
        print(f"cross-layer equalisation: {len(done.pairs)} Conv -> [Relu] -> Conv pairs")
    if docs:
        on = [float((r > THRESHOLD).mean()) for r in ref_docs]
        print(
            f"FP32 map > {THRESHOLD} on {len(docs)} held-out documents: {100 * np.mean(on):.2f} % of pixels"
        )
    kinds = [k for _, k in _images(cal_images, args.augment, no_text)]
    for kind in AUGMENT[args.augment]:  # does FP32's text map fire on the drawn text?
        on = [float((r > THRESHOLD).mean()) for r, k in zip(ref_cal, kinds, strict=True) if k == kind]
        print(f"FP32 map > {THRESHOLD} on calibration '{kind}': {100 * np.mean(on):.2f} % of pixels"
              f" (per image {min(on) * 100:.2f}-{max(on) * 100:.2f} %)", flush=True)  # fmt: skip
    on = [float((r > THRESHOLD).mean()) for r in ref_held]
    print(f"FP32 map > {THRESHOLD} on held-out: {100 * np.mean(on):.2f} % of pixels", flush=True)
    t0 = time.perf_counter()
    params = {"auto_samples": args.auto_samples or len(cal)} if args.method == "auto" else {}
    if args.method == "auto" and args.auto_fallback:
        params["auto_fallback"] = args.auto_fallback
    calibrated = calibrate(
        model, cal, method=args.method, params=params, threads=args.threads, tools=PrecisionTools()
    )
    amax = calibrated.amax
    print(
        f"calib {args.method}: {time.perf_counter() - t0:.1f} s; auto's check {calibrated.check}", flush=True
    )

    def corrected(model, pins=()):
        if not args.weight_correction:
            return model
        from trtq.precision.weight_correction import DEFAULT_ALPHA, correct_weights

        t0 = time.perf_counter()
        alpha = DEFAULT_ALPHA if args.weight_correction_alpha is None else args.weight_correction_alpha
        out, rep = correct_weights(
            model, cal, amax, mode=args.weight_correction, alpha=alpha, rounding=args.weight_rounding,
            pins=pins, threads=args.threads,
        )  # fmt: skip
        before, after = sum(f.mse_before for f in rep.layers), sum(f.mse_after for f in rep.layers)
        print(f"weight correction {args.weight_correction} alpha {alpha:g} {args.weight_rounding}, "
              f"{sum(f.flipped for f in rep.layers)} weights flipped, {len(pins)} pinned nodes: "
              f"{len(rep.layers)} layers, summed layer MSE {before:.4g} -> {after:.4g}, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip
        return out

    per_pins = bool(args.weight_correction) and args.weight_correction_stage == "per-pins"
    if not per_pins:
        model = corrected(model)
    if args.bias_correction:
        from trtq.precision.bias_correction import correct_biases

        model, _ = correct_biases(model, cal, amax, passes=1, threads=args.threads)
    layers = model_layers(folded(model))
    n = len(layers)
    rows = []

    def row(label: str, members: list[str], n_pins: int, evals: int | str = "", secs: float | None = None):
        q = export_qdq(corrected(model, sorted(members)) if per_pins else model, amax, sorted(members))
        out_held = _maps(q, held)
        c, h = score(ref_cal, _maps(q, cal)), score(ref_held, out_held)
        out_docs = _maps(q, docs)
        h["docs"] = score(ref_docs, out_docs)["iou"] if docs else None
        rows.append((label, n_pins, evals, c, h, secs))
        print(rows[-1], flush=True)
        if args.per_image:
            per = (
                f"{f.split('.')[0]} {score([r], [o])['iou']:.3f}"
                for f, r, o in zip(held_images, ref_held, out_held, strict=True)
            )
            print(f"  held-out IoU per image: {', '.join(per)}", flush=True)
            per = (f"{score([r], [o])['iou']:.3f}" for r, o in zip(ref_docs, out_docs, strict=True))
            print(f"  held-out documents IoU (drawn pages, then page/text if held out): {', '.join(per)}")

    rank_cal = _batches(cal_images, args.det_size, args.rank_augment, no_text) if args.rank_augment else cal
    t0 = time.perf_counter()
    ranked = rank_layers(
        layers,
        layerwise_sensitivity(
            folded(model), rank_cal, EmulationConfig("int8"), amax=amax, threads=args.threads
        ),
    ).ranked
    if args.ranking == "output":
        ranked = output_ranking(model, amax, layers, cal, ref_cal)
    elif args.ranking.startswith("graphwise"):
        ranked = graphwise_ranking(model, amax, layers, rank_cal, gain=args.ranking == "graphwise-gain",
                                   threads=args.threads)  # fmt: skip
    elif args.ranking == "insitu":
        ranked = insitu_ranking(model, amax, layers, rank_cal)
    elif args.ranking == "suffix":
        ranked = list(reversed(layers))  # the last layers first (the head before the sigmoid)
    elif args.ranking == "greedy":
        k_max = max(int(v) for v in args.prefixes.split(",") if v)
        pool = ranked[: args.pool or len(ranked)] if args.pool is not None else ranked[: 3 * k_max]
        ranked = greedy_pins(model, amax, pool, cal, ref_cal, k_max)
    elif args.ranking == "oracle":
        k_max = max(int(v) for v in args.prefixes.split(",") if v)
        pool = ranked[: args.pool or len(ranked)]
        if args.cross:
            oracle_cross(model, amax, pool, held, ref_held, k_max)
        ranked = oracle_pins(model, amax, pool, held, ref_held, k_max)
    if args.pin_order:  # these layers first, in this order, then the ranking's
        first = [next(lay for lay in layers if lay.node == n) for n in args.pin_order.split(",")]
        ranked = first + [lay for lay in ranked if lay not in first]
    t_rank = time.perf_counter() - t0
    k_top = max((int(v) for v in args.prefixes.split(",") if v), default=0)
    print(
        f"{args.ranking} ranking, first {k_top}: {', '.join(lay.node for lay in ranked[:k_top])}", flush=True
    )
    for k in (int(v) for v in args.prefixes.split(",") if v):
        pins = ranked[:k]
        row(
            f"sensitivity prefix k={k}",
            [m for lay in pins for m in lay.members],
            k,
            "",
            t_rank if k else None,
        )
    for t in (float(v) for v in args.thresholds.split(",") if v):
        crit = metric_criterion("mask-iou", t, {"binarize": THRESHOLD})
        res = run_bisect(model, cal, precision="int8", criterion=crit, amax=amax, max_evals=args.max_evals,
                         threads=args.threads)  # fmt: skip
        members = [m for lay in res.pins for m in lay.members]
        row(f"bisect mask-iou >= {t:g} ({res.verdict})", members, len(res.pins), res.evaluations, res.wall_s)

    print(
        f"\nPP-OCRv4 det {args.det_size}x{args.det_size}, ranges: {args.method}, {len(cal)} calibration images"
        f" (augment: {args.augment}); {n} layers; residual Add: {args.residual_add}; ranking: {args.ranking}"
        f"; weight correction: {args.weight_correction or 'off'}"
        f"{f' ({args.weight_correction_stage})' if args.weight_correction else ''}"
        f"{'' if args.weight_correction_alpha is None else f' alpha {args.weight_correction_alpha:g}'}"
        "\n\n| pins from | layers in FP32 | % of layers | evaluations | calibration IoU | held-out IoU"
        " | held-out cosine | docs IoU | search s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for label, k, evals, c, h, secs in rows:
        s = "" if secs is None else f"{secs:.1f}"
        d = "" if h["docs"] is None else f"{h['docs']:.3f}"
        print(
            f"| {label} | {k} | {100 * k / n:.1f} | {evals} | {c['iou']:.3f} | {h['iou']:.3f} | {h['cosine']:.3f} | {d} | {s} |"
        )


if __name__ == "__main__":
    main()
