"""Benchmark: the calibration methods over several calibration / held-out splits.

``methods.py`` judges each method on one split (12 calibration, 12 held-out images), and the
peer benchmark on another; the ranking of the methods flips between the two (BENCHMARKS.md,
"Issue 12, first target re-measured"): 12 held-out images cannot separate methods whose
difference is a few thousandths of cosine. This script repeats ``methods.bench`` over several
splits of the same 24 scikit-image photos and reports, per model and method, the mean held-out
metric over the splits, how often each method is the best of its split, and auto's mean
difference to each single method with a 95 % bootstrap interval over the splits.

Splits: ``methods`` (the first 12 / next 12 of methods.py's images), ``peer`` (peer_modelopt.py's
alternate images by name), then ``random:K``, seeded partitions of the 24 natural photos of
peer_modelopt.py into 12 + 12. BERT (token samples, not images) uses fresh token seeds per split.

    nice python benchmarks/method_splits.py --models cls,lcnet,rec --splits 6
    nice python benchmarks/method_splits.py --models vit,bert --splits 6 --json out.json

Every metric of methods.py gets its own table (cosine, top-1, IoU@0.3; for rec also the page
lines' character error rate, on the splits where page.png is held out). Top-1 and exact text move
in steps of one image = 0.083.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import methods  # noqa: E402  (benchmarks/methods.py: bench, _images)

# The sample photos of scikit-image 0.26 (skimage/data/*.png|jpg) without the two synthetic
# chessboards, sorted by name: the peer split (peer_modelopt.py's) alternates them, the random
# splits partition them.
PHOTOS = [
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
    "coffee.png", "coins.png", "color.png", "grass.png", "gravel.png", "horse.png",
    "hubble_deep_field.jpg", "ihc.png", "logo.png", "microaneurysms.png", "moon.png",
    "motorcycle_left.png", "motorcycle_right.png", "page.png", "phantom.png", "retina.jpg",
    "rocket.jpg", "text.png",
]  # fmt: skip


def splits(count: int, seed: int = 0) -> list[tuple[str, list[Path], list[Path]]]:
    """``(label, calibration files, held-out files)`` for the first ``count`` splits."""
    import skimage

    data = Path(skimage.__file__).parent / "data"
    first = methods._images()
    out = [("methods", first[:12], first[12:24])]
    out.append(("peer", [data / n for n in PHOTOS[0::2]], [data / n for n in PHOTOS[1::2]]))
    rng = np.random.default_rng(seed)
    k = 0
    while len(out) < count:
        perm = rng.permutation(len(PHOTOS))
        out.append(
            (f"random:{k}", [data / PHOTOS[i] for i in perm[:12]], [data / PHOTOS[i] for i in perm[12:]])
        )
        k += 1
    return out[:count]


def split_names(label: str, seed: int = 0) -> tuple[list[str], list[str]]:
    """The file names (in scikit-image's data folder) of the split ``label`` (``methods``,
    ``peer`` or ``random:K``), for scripts that take names."""
    labels = ["methods", "peer"] + [f"random:{k}" for k in range(64)]
    if label not in labels:
        raise SystemExit(f"unknown split '{label}' (methods, peer, random:K)")
    _, cal, held = splits(labels.index(label) + 1, seed)[-1]
    return [p.name for p in cal], [p.name for p in held]


SKIP = frozenset({"model", "type", "mha", "method", "bc", "wc", "calib_s", "split"})
LOWER_IS_BETTER = frozenset({"lines CER", "margin error", "lines margin error", "docs margin error"})


def _print_metric(key: str, metric: str, labels: list[str], vals: dict[str, np.ndarray]) -> None:
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    stacked = np.stack([sign * v for v in vals.values()])
    print(f"\n{key}: held-out {metric} per split{' (lower is better)' if sign < 0 else ''}\n")
    print("| method | " + " | ".join(labels) + " | mean | best of split |")
    print("|---|" + "---:|" * (len(labels) + 2))
    for m, v in vals.items():
        wins = int(np.sum(np.isclose(sign * v, stacked.max(axis=0))))
        print(
            f"| {m} | " + " | ".join(f"{x:.4f}" for x in v) + f" | {v.mean():.4f} | {wins} of {len(labels)} |"
        )
    if "auto" not in vals or len(vals) < 2:
        return
    singles = [m for m in vals if m != "auto"]
    best = max(singles, key=lambda m: sign * vals[m].mean())
    for m in singles:
        d, lo, hi = methods.paired_interval(vals["auto"], vals[m])  # resampling the splits
        mark = " (best single on average)" if m == best else ""
        print(f"{key} {metric}: auto - {m}{mark}: {d:+.4f} [95% over splits {lo:+.4f}, {hi:+.4f}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="rec,cls,lcnet,vit,bert")
    ap.add_argument("--splits", type=int, default=6, help="number of splits (methods, peer, then random)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random splits")
    ap.add_argument("--methods", default=",".join(methods.METHODS))
    ap.add_argument("--det-size", type=int, default=640)
    ap.add_argument("--auto-params", default="", help="auto's parameters, e.g. auto_fallback=mse")
    ap.add_argument("--json", type=Path, default=None, help="write every row here")
    args = ap.parse_args()
    meths = tuple(args.methods.split(","))
    auto_params = dict(kv.split("=", 1) for kv in args.auto_params.split(",") if kv)
    all_rows: list[dict] = []
    summary = []
    for key in args.models.split(","):
        table: dict[str, dict[str, dict[str, float]]] = {}  # metric -> method -> split -> value
        labels = []
        for k, (label, cal, held) in enumerate(splits(args.splits, args.seed)):
            rows = methods.bench(
                key, args.det_size, None, meths, auto_params=auto_params or None,
                split=(cal, held), bert_seeds=(1 + 2 * k, 2 + 2 * k),
            )  # fmt: skip
            labels.append(label)
            for r in rows:
                r["split"] = label
                for metric, v in r.items():
                    if metric not in SKIP and isinstance(v, float):
                        table.setdefault(metric, {}).setdefault(r["method"], {})[label] = v
            all_rows += rows
        summary.append((key, labels, table))
    print()
    for key, labels, table in summary:
        for metric, per_method in table.items():
            # the splits where every method has it (page lines: not where page.png is a calibration image)
            have = [lab for lab in labels if all(lab in v for v in per_method.values())]
            vals = {m: np.array([v[lab] for lab in have]) for m, v in per_method.items()}
            _print_metric(key, metric, have, vals)
    if args.json:
        args.json.write_text(json.dumps(all_rows, indent=1, default=float))


if __name__ == "__main__":
    main()
