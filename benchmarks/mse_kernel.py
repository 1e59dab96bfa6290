"""Benchmark: the ``mse`` method's kernel against a full evaluation of every candidate.

``calib/methods/mse.py`` stops each candidate's error sum once it exceeds the best total so far
(after 32 evenly spaced candidates evaluated in full). This script builds the real histograms
of the benchmark models (entropy2 calibration on 12 scikit-image photos), then per tensor times
the shipped kernel and a full evaluation (every candidate summed over every bin, the same
arithmetic without the cuts), and checks that both pick the same threshold.

    nice python benchmarks/mse_kernel.py --models cls,lcnet,det,rec,vit
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import methods  # noqa: E402  (_model, _batches, _images)


@functools.cache
def _full_kernel():
    from trtq._core.jit import njit
    from trtq.calib.methods.mse import _candidate_error

    @njit(nogil=True)
    def run(counts, edges):  # pragma: no cover - compiled
        filled = np.flatnonzero(counts)
        out = np.empty(counts.shape[0])
        for i in range(counts.shape[0], 0, -1):
            out[i - 1] = _candidate_error(counts, edges, filled, i, np.inf)
        return out

    return run


def full_errors(counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Every candidate's whole error (no cut), with the shipped kernel's per-candidate sum."""
    return _full_kernel()(counts, edges)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="cls,lcnet,det,rec,vit")
    ap.add_argument("--det-size", type=int, default=640)
    args = ap.parse_args()
    import onnx

    from trtq.calib.methods.mse import squared_errors
    from trtq.calib.run import calibrate

    rows = []
    for key in args.models.split(","):
        model = onnx.load(str(methods._model(key)))
        hs = calibrate(
            model, methods._batches(key, methods._images()[:12], args.det_size), method="entropy2"
        ).histograms
        fast_s, full_s, same, n = 0.0, 0.0, 0, 0
        for name in hs.names:
            h = hs[name]
            if np.count_nonzero(h.counts) < 2:
                continue  # degenerate: the method answers without the kernel
            c, e = h.counts.astype(np.float64), h.edges.astype(np.float64)
            squared_errors(c, e), full_errors(c, e)  # compiled / loaded before timing
            t0 = time.perf_counter()
            fast = squared_errors(c, e)
            fast_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            full = full_errors(c, e)
            full_s += time.perf_counter() - t0
            same += int(np.argmin(fast) == np.argmin(full))
            n += 1
        rows.append((key, n, 1e3 * full_s / n, 1e3 * fast_s / n, full_s / fast_s, same))
        print(rows[-1], flush=True)
    print("\n| model | tensors | full evaluation ms/tensor | kernel ms/tensor | speed-up | same threshold |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, n, full_ms, fast_ms, x, same in rows:
        print(f"| {key} | {n} | {full_ms:.2f} | {fast_ms:.2f} | {x:.1f}x | {same} of {n} |")


if __name__ == "__main__":
    main()
