"""Benchmark: auto against each method on the OCR models' own held-out inputs, with an interval
that counts where those inputs come from.

``in_domain.py`` and ``method_splits.py`` give auto − each method with a 95 % interval over the
calibration seeds or splits. That interval treats the held-out inputs as fixed, and they are not
independent: PP-OCR cls's 80 crops are page.png's 4 lines in 20 variants each (5 shifts, whole
and half, upright and turned), rec's 20 are the same 4 lines at 5 shifts, PP-LCNet's 48 are 12
documents at 4 rotations. A method can lose a few crops of one line on every calibration and look
reliably worse. This script scores each held-out input on its own and gives, per model and
method:

- the held-out inputs where the method departs from FP32: for the classifiers, those whose top-1
  flips, as ``source:input (FP32 margin)`` (FP32's class minus the strongest other, softmax
  probability; ``methods._margin``); for rec, the lines whose text differs, with their character
  errors; and the same summed over the runs, by source;
- auto − each method on the model's figures (classifiers: top-1 and the margin error, the root
  mean square of how far the decision margin moves, ``methods._classifier_scores``; rec: the
  character error rate against FP32's reading), with two 95 % intervals: over the runs alone,
  and over the runs and the sources resampled together (a two-level bootstrap: each draw takes
  runs with replacement and, within each, sources with replacement, and pools the figure over
  those sources' inputs).

Runs: ``--calibration drawn`` (default), ``in_domain.py``'s drawn calibration sets of the
model's own kind, seeds 0..N-1 (``--runs N``); ``--calibration photos``, ``method_splits.py``'s
splits of the scikit-image photos, those of the first N that leave the held-out source images
(page.png; for PP-LCNet also text.png) out of the calibration. Calibration and export as those
scripts do (``calibrate`` with the precision room's build tools for auto; ``export_qdq``).

    nice python benchmarks/heldout_sources.py --models cls,lcnet,rec --runs 5
    nice python benchmarks/heldout_sources.py --models cls,lcnet,rec --calibration photos --runs 6
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import in_domain  # noqa: E402  (benchmarks/in_domain.py: calibration_set, held_out, METHODS)
import method_splits  # noqa: E402  (benchmarks/method_splits.py: splits)
import methods  # noqa: E402  (benchmarks/methods.py: _model, _outputs, _decisions, _rec_texts, _batches, ...)

#: Held-out inputs per source, in order: a page.png line's 20 variants (cls) or 5 shifts (rec); a
#: document's 4 rotations (lcnet) (``ocr_lines.direction_line_variants``, ``page_line_variants``,
#: ``documents.rotations``).
PER_SOURCE = {"cls": 20, "rec": 5, "lcnet": 4}


@dataclass
class Figure:
    """A figure pooled over inputs as ``f(sum(num) / sum(den))``: per input a numerator and a
    denominator (top-1: agreement / 1; margin error: squared move / 1, then the root; CER:
    character errors / FP32's characters)."""

    name: str
    root: bool = False
    lower_is_better: bool = False

    def pool(self, num: np.ndarray, den: np.ndarray) -> float:
        value = float(num.sum() / max(den.sum(), 1e-30))
        return float(np.sqrt(value)) if self.root else value


FIGURES = {
    "cls": [Figure("top-1"), Figure("margin error", root=True, lower_is_better=True)],
    "lcnet": [Figure("top-1"), Figure("margin error", root=True, lower_is_better=True)],
    "rec": [Figure("CER", lower_is_better=True)],
}


def per_input(
    key: str, ref: list[np.ndarray], out: list[np.ndarray]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per held-out input, each figure's ``(numerator, denominator)`` (:class:`Figure`)."""
    if key == "rec":
        import ocr_lines

        want, got = methods._rec_texts(ref, out)
        edits = np.array([ocr_lines.edit_distance(g, w) for g, w in zip(got, want, strict=True)], float)
        return {"CER": (edits, np.array([max(len(w), 1) for w in want], float))}
    agree, moved = methods._decisions(ref, out)
    ones = np.ones(len(ref))
    return {"top-1": (agree, ones), "margin error": (moved**2, ones)}


def _runs(key: str, calibration: str, count: int) -> list[tuple[str, list[dict], list[dict]]]:
    """``(label, calibration samples, held-out inputs)`` per run."""
    if calibration == "drawn":
        held = in_domain.held_out(key)
        return [(f"seed {s}", in_domain.calibration_set(key, s), held) for s in range(count)]
    out = []
    for label, cal, _ in method_splits.splits(count):
        held = methods._page_lines(key, [p.name for p in cal])
        if held:  # the source images are not among the calibration photos
            out.append((label, methods._batches(key, cal, 640), held))
    return out


def run(key: str, calibration: str, count: int) -> tuple[list[str], dict[str, dict[str, list]]]:
    """Per method and figure, one ``(num, den)`` per run; prints where each run departs from FP32."""
    import onnx

    from trtq.calib.run import calibrate, compute_amax
    from trtq.precision.builds import PrecisionTools
    from trtq.precision.export import export_qdq

    model = onnx.load(str(methods._model(key)))
    size = PER_SOURCE[key]
    labels: list[str] = []
    scores: dict[str, dict[str, list]] = {m: {f.name: [] for f in FIGURES[key]} for m in in_domain.METHODS}
    ref: list[np.ndarray] = []
    margin: list[float] = []
    for label, cal, held in _runs(key, calibration, count):
        labels.append(label)
        if not ref:  # every run holds out the same inputs (page.png's lines, the documents)
            ref = methods._outputs(model, held)
            margin = [] if key == "rec" else [methods._margin(r, int(r.argmax())) for r in ref]
        plain = calibrate(model, cal, method="entropy2")
        auto = calibrate(model, cal, method="auto", tools=PrecisionTools())
        for m in in_domain.METHODS:
            amax = auto.amax if m == "auto" else compute_amax(plain.histograms, m)
            got = per_input(key, ref, methods._outputs(export_qdq(model, amax), held))
            for name, pair in got.items():
                scores[m][name].append(pair)
            if key == "rec":
                edits = got["CER"][0]
                cells = ", ".join(f"{i // size}:{i} ({int(edits[i])})" for i in np.nonzero(edits)[0])
                print(f"{key} {label} {m:>10}: {int(edits.sum())} character error(s): {cells}", flush=True)
            else:
                flips = np.nonzero(got["top-1"][0] == 0)[0]
                cells = ", ".join(f"{i // size}:{i} ({margin[i]:.3f})" for i in flips)
                print(f"{key} {label} {m:>10}: {len(flips)} flipped: {cells}", flush=True)
    return labels, scores


def two_level(
    fig: Figure, a: list[tuple], b: list[tuple], size: int, draws: int = 4000, seed: int = 0
) -> tuple[float, float]:
    """95 % interval of ``pool(a) - pool(b)`` with the runs and, within each drawn run, the
    sources (``size`` consecutive inputs each) resampled."""
    na, da = (np.stack([p[i] for p in a]) for i in (0, 1))  # [run, input]
    nb, db = (np.stack([p[i] for p in b]) for i in (0, 1))
    runs, n = na.shape
    sources = n // size

    def grouped(x: np.ndarray) -> np.ndarray:
        return x.reshape(runs, sources, size).sum(axis=2)  # [run, source]

    ga, gda, gb, gdb = grouped(na), grouped(da), grouped(nb), grouped(db)
    rng = np.random.default_rng(seed)
    out = np.empty(draws)
    for k in range(draws):
        r = rng.integers(0, runs, runs)[:, None]
        s = rng.integers(0, sources, (runs, sources))
        out[k] = fig.pool(ga[r, s], gda[r, s]) - fig.pool(gb[r, s], gdb[r, s])
    return float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))


def report(key: str, labels: list[str], scores: dict[str, dict[str, list]]) -> None:
    size = PER_SOURCE[key]
    first = FIGURES[key][0]
    nums = {m: np.stack([p[0] for p in s[first.name]]) for m, s in scores.items()}
    sources = next(iter(nums.values())).shape[1] // size
    what = "character errors" if key == "rec" else "flips"
    print(
        f"\n{key}: {what} summed over {len(labels)} runs ({', '.join(labels)}), by source ({size} inputs each)\n"
    )
    print("| method | " + " | ".join(f"source {s}" for s in range(sources)) + " | all |")
    print("|---|" + "---:|" * (sources + 1))
    for m, x in nums.items():
        by = (x if key == "rec" else 1 - x).reshape(len(x), sources, size).sum(axis=(0, 2)).astype(int)
        print(f"| {m} | " + " | ".join(str(v) for v in by) + f" | {int(by.sum())} |")
    print()
    for fig in FIGURES[key]:
        per_run = {m: np.array([fig.pool(n, d) for n, d in s[fig.name]]) for m, s in scores.items()}
        means = ", ".join(f"{m} {v.mean():.4f}" for m, v in per_run.items())
        print(f"{key} {fig.name} per-run mean{' (lower is better)' if fig.lower_is_better else ''}: {means}")
        for m in in_domain.METHODS:
            if m == "auto":
                continue
            d, lo, hi = methods.paired_interval(per_run["auto"], per_run[m])
            lo2, hi2 = two_level(fig, scores["auto"][fig.name], scores[m][fig.name], size)
            print(f"{key} {fig.name}: auto - {m}: {d:+.4f} [runs {lo:+.4f}, {hi:+.4f}] "
                  f"[runs and sources {lo2:+.4f}, {hi2:+.4f}]", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="cls,lcnet,rec", help="of cls, lcnet, rec")
    ap.add_argument("--calibration", choices=("drawn", "photos"), default="drawn",
                    help="drawn inputs of the model's own kind (in_domain.py) or photo splits (method_splits.py)")  # fmt: skip
    ap.add_argument("--runs", type=int, default=5, help="drawn: seeds 0..N-1; photos: the first N splits")
    args = ap.parse_args()
    for key in args.models.split(","):
        if key not in PER_SOURCE:
            raise SystemExit(f"--models: {key} is not one of {', '.join(PER_SOURCE)}")
        labels, scores = run(key, args.calibration, args.runs)
        report(key, labels, scores)


if __name__ == "__main__":
    main()
