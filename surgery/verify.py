"""Prove a rewritten model computes what the original computes, with ONNX Runtime.

Both models run on the same inputs: seeded standard-normal floats, uniform floats in [0, 1),
and zeros; integers uniform in [0, 8); booleans at random. Outputs must be equal exactly for
integer/bool outputs (NaN positions equal for floats) and within a relative error of ``rtol`` for
floats, where the relative error of an output is ``max|a - b| / max|a|`` (``max|a - b|`` when the
original output is all zeros).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from trtq._core.errors import InputError, first_line
from trtq._core.onnx_model import real_inputs

DEFAULT_RTOL = 1e-5
DEFAULT_DIM = 1  # value for a symbolic batch dimension (axis 0)
DEFAULT_SPATIAL = 32  # value for other symbolic dimensions


@dataclass
class OutputDiff:
    name: str
    max_abs: float
    rel: float
    equal: bool


@dataclass
class VerifyResult:
    ok: bool
    trials: int
    outputs: list[OutputDiff] = field(default_factory=list)

    def worst(self) -> OutputDiff | None:
        bad = [o for o in self.outputs if not o.equal]
        return max(bad, key=lambda o: o.rel) if bad else None

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "trials": self.trials,
            "outputs": [
                {"name": o.name, "max_abs": o.max_abs, "rel": o.rel, "equal": o.equal} for o in self.outputs
            ],
        }


def _session(model: onnx.ModelProto, what: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # our one-line error says it; ORT's own log would add lines
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    # Disable ORT's own rewrites so each model is run node for node as written.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InputError(f"{what}: ONNX Runtime cannot load it: {first_line(exc)}") from exc


def input_shapes(
    model: onnx.ModelProto, overrides: Mapping[str, tuple[int, ...]] | None = None
) -> dict[str, tuple[int, ...]]:
    """Concrete input shapes: ``overrides`` first, then static dims; symbolic dims become
    ``DEFAULT_DIM`` on axis 0 and ``DEFAULT_SPATIAL`` elsewhere."""
    overrides = dict(overrides or {})
    feeds = real_inputs(model)
    if "" in overrides and len(feeds) == 1:  # --shape DIMS without a name: the only input
        overrides.setdefault(feeds[0].name, overrides.pop(""))
    shapes = {}
    for inp in feeds:
        if inp.name in overrides:
            shapes[inp.name] = tuple(overrides.pop(inp.name))
            continue
        shapes[inp.name] = tuple(
            d if isinstance(d, int) else DEFAULT_DIM if axis == 0 else DEFAULT_SPATIAL
            for axis, d in enumerate(inp.shape)
        )
    if overrides:
        raise InputError(f"--shape names unknown input(s) {sorted(overrides)}; inputs: {sorted(shapes)}")
    return shapes


def make_inputs(
    model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], trial: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Inputs for one trial: 0 normal, 1 uniform [0, 1), 2 zeros, then normal again with new seeds."""
    rng = np.random.default_rng(seed + trial)
    feeds = {}
    for inp in real_inputs(model):
        if inp.name not in shapes:
            continue
        dtype = inp.dtype
        shape = shapes[inp.name]
        if dtype == np.bool_:
            value = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            value = rng.integers(0, 8, size=shape).astype(dtype)
        elif trial == 1:
            value = rng.random(shape).astype(dtype)
        elif trial == 2:
            value = np.zeros(shape, dtype)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        feeds[inp.name] = value
    return feeds


def run(session, feeds: Mapping[str, np.ndarray], what: str) -> list[np.ndarray]:
    try:
        return session.run(None, dict(feeds))
    except Exception as exc:
        raise InputError(f"{what}: ONNX Runtime cannot run it: {first_line(exc)}") from exc


def check_runs(
    model: onnx.ModelProto, *, shapes: Mapping[str, tuple[int, ...]] | None = None, name: str = "model"
):
    """Load ``model`` in ONNX Runtime and run it once on trial-0 inputs; return the session.

    Raises :class:`InputError` with one line when it cannot load or run, or ``shapes`` names
    unknown inputs (nothing to verify a rewrite against).
    """
    session = _session(model, name)
    run(session, make_inputs(model, input_shapes(model, shapes), 0), name)
    return session


def compare_outputs(name: str, a: np.ndarray, b: np.ndarray, rtol: float = DEFAULT_RTOL) -> OutputDiff:
    """Compare one output; see the module docstring for the convention."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return OutputDiff(name, float("inf"), float("inf"), False)
    if not np.issubdtype(a.dtype, np.floating):
        equal = bool(np.array_equal(a, b))
        return OutputDiff(name, 0.0 if equal else float("inf"), 0.0 if equal else float("inf"), equal)
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    if not np.array_equal(np.isnan(a64), np.isnan(b64)):
        return OutputDiff(name, float("inf"), float("inf"), False)
    finite = np.isfinite(a64) & np.isfinite(b64)
    if not np.array_equal(a64[~finite & ~np.isnan(a64)], b64[~finite & ~np.isnan(b64)]):
        return OutputDiff(name, float("inf"), float("inf"), False)
    if not finite.any():
        return OutputDiff(name, 0.0, 0.0, True)
    diff = float(np.max(np.abs(a64[finite] - b64[finite])))
    scale = float(np.max(np.abs(a64[finite])))
    rel = diff / scale if scale > 0 else diff
    return OutputDiff(name, diff, rel, rel <= rtol)


def verify_models(
    original: onnx.ModelProto,
    rewritten: onnx.ModelProto,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    trials: int = 3,
    seed: int = 0,
    rtol: float = DEFAULT_RTOL,
    name: str = "model",
    feeds_list: list[dict[str, np.ndarray]] | None = None,
    reference=None,
) -> VerifyResult:
    """Run both models on the same inputs and compare every output (by position and name).

    ``reference``: an ONNX Runtime session of ``original`` already open (see :func:`check_runs`).
    """
    ref = _session(original, name) if reference is None else reference
    new = _session(rewritten, f"{name} (rewritten)")
    concrete = input_shapes(original, shapes)
    if feeds_list is None:
        feeds_list = [make_inputs(original, concrete, t, seed) for t in range(trials)]
    names = [o.name for o in ref.get_outputs()]
    worst: dict[str, OutputDiff] = {}
    for feeds in feeds_list:
        a = run(ref, feeds, name)
        b = run(new, feeds, f"{name} (rewritten)")
        for n, x, y in zip(names, a, b, strict=True):
            d = compare_outputs(n, x, y, rtol)
            prev = worst.get(n)
            if prev is None or (prev.equal and (not d.equal or d.rel > prev.rel)):
                worst[n] = d
    outs = [worst[n] for n in names]
    return VerifyResult(all(o.equal for o in outs), len(feeds_list), outs)
