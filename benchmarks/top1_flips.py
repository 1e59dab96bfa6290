"""Benchmark: where the classifiers' top-1 differences come from, and how sure they are.

``in_domain.py`` reports the top-1 agreement of PP-OCR cls (80 line crops) and PP-LCNet (48
documents) with FP32, and auto against the best single method with a 95 % interval over the
calibration seeds. That interval treats the held-out inputs as fixed, and they are not
independent: cls's 80 crops are page.png's 4 lines in 20 variants each (5 shifts, whole and half,
upright and turned), PP-LCNet's 48 are 12 documents at 4 rotations. A method can lose a few crops
of one line on every seed and look reliably worse.

This script calibrates as ``in_domain.py`` does (the same drawn calibration sets per seed, the same
held-out inputs, ``calibrate`` and ``export_qdq``), then:

- per seed and method, the held-out inputs whose top-1 differs from FP32's, as
  ``source:input (FP32 margin)``: the source line or document, and FP32's decision margin
  (its class minus the strongest other, softmax probability; ``methods._margin``);
- per method, the flips summed over the seeds by source;
- auto − each method on top-1 and on the margin error (``methods._line_scores``: how far the
  decision margin moves, root mean square over the inputs; lower is better), with two 95 %
  intervals: over the seeds alone (``in_domain.py``'s) and over the seeds and the sources
  resampled together (a two-level bootstrap: each draw takes seeds with replacement, and for each
  of them sources with replacement, and averages the difference over those sources' inputs).

    nice python benchmarks/top1_flips.py --models cls,lcnet --seeds 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import in_domain  # noqa: E402  (benchmarks/in_domain.py: calibration_set, held_out, METHODS)
import methods  # noqa: E402  (benchmarks/methods.py: _model, _outputs, _margin, paired_interval)

#: Held-out inputs per source, in order: cls, a page.png line's 20 variants; lcnet, a document's 4
#: rotations (``ocr_lines.direction_line_variants``, ``documents.rotations``).
PER_SOURCE = {"cls": 20, "lcnet": 4}


def per_input(ref: list[np.ndarray], out: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per held-out input: top-1 agreement with FP32 (0/1), and how far the decision margin moved."""
    agree, moved = [], []
    for r, o in zip(ref, out, strict=True):
        top = int(r.argmax())
        agree.append(float(int(o.argmax()) == top))
        moved.append(methods._margin(o, top) - methods._margin(r, top))
    return np.array(agree), np.array(moved)


def run_seeds(key: str, seeds: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(agree, moved)``: per method, arrays [seed, input] (:func:`per_input`); prints each
    seed's flipped inputs with FP32's margin."""
    import onnx

    from trtq.calib.run import calibrate, compute_amax
    from trtq.precision.builds import PrecisionTools
    from trtq.precision.export import export_qdq

    model = onnx.load(str(methods._model(key)))
    held = in_domain.held_out(key)
    ref = methods._outputs(model, held)
    margin = np.array([methods._margin(r, int(r.argmax())) for r in ref])
    agree: dict[str, list] = {m: [] for m in in_domain.METHODS}
    moved: dict[str, list] = {m: [] for m in in_domain.METHODS}
    for seed in range(seeds):
        cal = in_domain.calibration_set(key, seed)
        plain = calibrate(model, cal, method="entropy2")
        auto = calibrate(model, cal, method="auto", tools=PrecisionTools())
        for m in in_domain.METHODS:
            amax = auto.amax if m == "auto" else compute_amax(plain.histograms, m)
            a, d = per_input(ref, methods._outputs(export_qdq(model, amax), held))
            agree[m].append(a)
            moved[m].append(d)
            flips = np.nonzero(a == 0)[0]
            size = PER_SOURCE[key]
            cells = ", ".join(f"{i // size}:{i} ({margin[i]:.3f})" for i in flips)
            print(f"{key} seed {seed} {m:>10}: {len(flips)} flipped: {cells}", flush=True)
    return {m: np.array(v) for m, v in agree.items()}, {m: np.array(v) for m, v in moved.items()}


def two_level(
    a: np.ndarray, b: np.ndarray, size: int, rms: bool = False, draws: int = 4000, seed: int = 0
) -> tuple[float, float, float]:
    """``stat(a) - stat(b)`` over arrays [seed, input] and its 95 % interval with the seeds and,
    within each drawn seed, the sources (``size`` consecutive inputs each) resampled.
    ``stat``: the mean, or with ``rms`` the root mean square."""
    seeds, n = a.shape
    sources = n // size
    ga = a.reshape(seeds, sources, size)
    gb = b.reshape(seeds, sources, size)

    def stat(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean(x**2))) if rms else float(np.mean(x))

    rng = np.random.default_rng(seed)
    out = np.empty(draws)
    for k in range(draws):
        s = rng.integers(0, seeds, seeds)
        g = rng.integers(0, sources, (seeds, sources))
        out[k] = stat(ga[s[:, None], g]) - stat(gb[s[:, None], g])
    return stat(a) - stat(b), float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))


def report(key: str, agree: dict[str, np.ndarray], moved: dict[str, np.ndarray]) -> None:
    size = PER_SOURCE[key]
    print(f"\n{key}: flips summed over {len(agree['auto'])} seeds, by source ({size} inputs each)\n")
    sources = agree["auto"].shape[1] // size
    print("| method | " + " | ".join(f"source {s}" for s in range(sources)) + " | all |")
    print("|---|" + "---:|" * (sources + 1))
    for m, a in agree.items():
        by = (1 - a).reshape(len(a), sources, size).sum(axis=(0, 2)).astype(int)
        print(f"| {m} | " + " | ".join(str(v) for v in by) + f" | {int(by.sum())} |")
    print()
    for m in in_domain.METHODS:
        if m == "auto":
            continue
        for name, a, b, rms in (
            ("top-1", agree["auto"], agree[m], False),
            ("margin error", moved["auto"], moved[m], True),
        ):
            per_seed_a = np.sqrt(np.mean(a**2, axis=1)) if rms else a.mean(axis=1)
            per_seed_b = np.sqrt(np.mean(b**2, axis=1)) if rms else b.mean(axis=1)
            d, lo, hi = methods.paired_interval(per_seed_a, per_seed_b)
            _, lo2, hi2 = two_level(a, b, size, rms=rms)
            print(f"{key} {name}: auto - {m}: {d:+.4f} [seeds {lo:+.4f}, {hi:+.4f}] "
                  f"[seeds and sources {lo2:+.4f}, {hi2:+.4f}]", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="cls,lcnet", help="of cls, lcnet")
    ap.add_argument("--seeds", type=int, default=5, help="calibration sets drawn (seeds 0..N-1)")
    args = ap.parse_args()
    for key in args.models.split(","):
        if key not in PER_SOURCE:
            raise SystemExit(f"--models: {key} is not one of {', '.join(PER_SOURCE)}")
        agree, moved = run_seeds(key, args.seeds)
        report(key, agree, moved)


if __name__ == "__main__":
    main()
