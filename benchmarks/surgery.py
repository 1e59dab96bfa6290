"""Benchmark: `surgery fix` vs Polygraphy's `surgeon sanitize --fold-constants` on the real models.

Both are run as command-line tools in fresh processes on the same model; wall time and peak RSS
come from the child's resource usage. `surgery fix` does more work (every rule to a fixed point,
then ONNX Runtime verification of the outputs); Polygraphy folds constants only.

    python benchmarks/surgery.py                  # all four models
    python benchmarks/surgery.py --models cls,lcnet
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SHAPES = {"det": "x:1x3x640x640", "rec": "x:1x3x48x320", "cls": "x:1x3x48x192", "lcnet": "x:1x3x224x224"}


def timed(cmd: list[str]) -> tuple[float, float, int]:
    """Run ``cmd``; return (wall seconds, the child's own peak RSS in MB, exit code)."""
    with tempfile.TemporaryFile() as err_file:  # a pipe nobody reads would block a chatty child
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage, not a maximum over all children
        wall = time.perf_counter() - t0
        proc.returncode = code = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait
        if code not in (0, 1):
            err_file.seek(0)
            err = err_file.read().decode(errors="replace").strip().splitlines()
            print(f"  {cmd[0]} failed ({code}): {err[-1:]}", file=sys.stderr)
    return wall, usage.ru_maxrss / 1024.0, code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="det,rec,cls,lcnet")
    args = ap.parse_args()
    from conftest import real_model_path

    surgery = shutil.which("surgery") or "surgery"
    polygraphy = shutil.which("polygraphy") or "polygraphy"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models.split(","):
            model = str(real_model_path(key))
            ours = timed(
                [surgery, "fix", model, "-o", f"{tmp}/{key}.fixed.onnx", "-q", "--shape", SHAPES[key]]
            )
            peer = timed(
                [polygraphy, "surgeon", "sanitize", model, "--fold-constants", "-o", f"{tmp}/{key}.poly.onnx"]
            )
            rows.append((key, ours, peer))
    print(f"{os.cpu_count()} cores; wall s and peak RSS MB of each command")
    print(
        "| model | trtq `surgery fix` (all rules + ORT verification) | polygraphy `surgeon sanitize --fold-constants` |"
    )
    print("|---|---|---|")
    for key, ours, peer in rows:
        print(f"| {key} | {ours[0]:.1f} s, {ours[1]:.0f} MB | {peer[0]:.1f} s, {peer[1]:.0f} MB |")


if __name__ == "__main__":
    main()
