"""Benchmark: what ``auto`` and its model-output check cost against a plain calibration, by the size
of the calibration set.

auto's extra work is bounded: one more pass over ``auto_samples`` (16) samples, and the check's
two INT8 runs over the same samples plus one emulated build (started in a thread during that
pass). The plain run's work grows with the data. This script times, per model and calibration
size, ``calibrate`` with entropy2 (plain), with auto without the check (``auto_check=0``, stage
1) and with auto as ``calib run`` runs it (the check on, with the precision room's build tools),
and prints the ratios. Sizes above 24 reuse the 24 scikit-image photos flipped and turned (4
variants each: up to 96).

``--cli`` times what the issue's bar names instead: the whole ``calib run`` command (a new
process: imports, model load, reading the samples, the passes, the cache), plain entropy2 against
``--method auto``, with and without its check (``auto_check = 0`` in a ``trtq.toml``), on the
same samples written as ``.npy`` tensors (as ``peer_modelopt.py`` feeds trtq), with each
process's peak RSS.

    nice python benchmarks/auto_cost.py --models cls,lcnet,rec,vit --sizes 12,96 --repeat 2
    nice python benchmarks/auto_cost.py --cli --models cls,lcnet,rec,vit,det --sizes 12,32,96 --repeat 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import methods  # noqa: E402  (benchmarks/methods.py: _model, _batches, _images)


def variants(batches: list[dict[str, np.ndarray]], count: int) -> list[dict[str, np.ndarray]]:
    """``count`` samples: the batches, then flipped left-right, upside down and turned 180°."""
    flips = [(), (-1,), (-2,), (-2, -1)]
    out = []
    for axes in flips:
        for b in batches:
            out.append({k: np.ascontiguousarray(np.flip(v, axes) if axes else v) for k, v in b.items()})
            if len(out) == count:
                return out
    raise SystemExit(f"at most {len(batches) * len(flips)} samples")


def cli_rows(args, keys: list[str]) -> None:
    """``--cli``: the ``calib run`` command end to end, plain against auto (module docstring)."""
    import tempfile

    import peer_modelopt as peer  # benchmarks/peer_modelopt.py: timed, _cli

    rows = []
    for key in keys:
        model = methods._model(key)
        photos = methods._batches(key, methods._images(), args.det_size)
        for size in [int(s) for s in args.sizes.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                data = Path(tmp) / "cal"
                data.mkdir()
                for i, sample in enumerate(variants(photos, size)):
                    ((name, x),) = sample.items()
                    np.save(data / f"{i:03d}.npy", x[0])
                shape = peer.calibration_shapes({name: x})
                off = Path(tmp) / "check_off"  # a working folder whose trtq.toml turns the check off
                off.mkdir()
                (off / "trtq.toml").write_text("[tool.trtq]\nauto_check = 0\n")
                res = {}
                for label, method, cwd in (
                    ("entropy2", "entropy2", tmp),
                    ("auto", "auto", tmp),
                    ("off", "auto", off),
                ):
                    cmd = peer._cli("trtq.calib.cli", "calib") + [
                        "run", str(model), "--data", str(data), "--shape", shape, "--method", method,
                        "--cache", str(Path(tmp) / f"{label}.cache"), "--batch-size", "1", "-q",
                    ]  # fmt: skip
                    runs = [peer.timed(cmd, cwd=Path(cwd)) for _ in range(args.repeat)]
                    bad = [r.error for r in runs if r.code != 0]
                    if bad:
                        raise SystemExit(f"{key} {label}: calib run failed: {bad[0]}")
                    res[label] = (float(np.median([r.wall for r in runs])), max(r.rss_mb for r in runs))
            rows.append((key, size, res))
            print(key, size, res, flush=True)
    print(
        "\n| model | samples | `calib run` entropy2 s | `calib run --method auto` s | **auto / plain** "
        "| auto, check off (`auto_check = 0`) s | / plain | peak RSS MB plain / auto |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for key, size, r in rows:
        (tp, mp), (ta, ma), (to, _) = r["entropy2"], r["auto"], r["off"]
        print(
            f"| {key} | {size} | {tp:.2f} | {ta:.2f} | {ta / tp:.2f}x | {to:.2f} | {to / tp:.2f}x "
            f"| {mp:.0f} / {ma:.0f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="cls,lcnet,rec,vit")
    ap.add_argument("--sizes", default="12,96", help="calibration samples per run")
    ap.add_argument("--repeat", type=int, default=2, help="timed calls per configuration (median)")
    ap.add_argument("--det-size", type=int, default=640)
    ap.add_argument("--cli", action="store_true", help="time the whole `calib run` command (docstring)")
    args = ap.parse_args()
    if args.cli:
        cli_rows(args, [m for m in args.models.split(",") if m])
        return

    import onnx

    from trtq.calib.run import calibrate
    from trtq.precision.builds import PrecisionTools

    rows = []
    for key in [m for m in args.models.split(",") if m]:
        model = onnx.load(str(methods._model(key)))
        photos = methods._batches(key, methods._images(), args.det_size)
        calibrate(model, photos[:1], method="entropy2")  # warm-up
        for size in [int(s) for s in args.sizes.split(",")]:
            data = variants(photos, size)
            runs = {
                "plain": {"method": "entropy2"},
                "auto, no check": {"method": "auto", "params": {"auto_check": 0}},
                "auto": {"method": "auto", "tools": PrecisionTools},  # a fresh one per call, as calib run
            }
            times, check = {}, None
            for label, kw in runs.items():
                ts = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    tools = kw["tools"]() if "tools" in kw else None
                    result = calibrate(model, data, method=kw["method"], params=kw.get("params"), tools=tools)
                    ts.append(time.perf_counter() - t0)
                times[label] = float(np.median(ts))
                check = result.check if label == "auto" else check
            rows.append((key, size, times, check))
            print(key, size, {k: round(v, 2) for k, v in times.items()}, check, flush=True)

    print(
        "\n| model | samples | plain s | auto, no check s | auto s | auto, no check / plain | auto / plain | check: flagged, kept |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for key, size, t, check in rows:
        kept = f"{check['flagged']}, {check['kept']}" if check else "-"
        print(
            f"| {key} | {size} | {t['plain']:.2f} | {t['auto, no check']:.2f} | {t['auto']:.2f} | "
            f"{t['auto, no check'] / t['plain']:.2f}x | {t['auto'] / t['plain']:.2f}x | {kept} |"
        )


if __name__ == "__main__":
    main()
