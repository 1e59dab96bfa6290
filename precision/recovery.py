"""Accuracy recovered in the weights before the INT8 Q/DQ export: the user's choice of techniques
and the order they run in, shared by ``precision export`` and ``precision quantize``.

Each technique is its own module and is off by default (BENCHMARKS.md measures where each pays):

- least-squares weight correction (:mod:`trtq.precision.weight_correction`, ``own`` or
  ``sequential``, ridge strength ``alpha`` relative to the mean input power);
- AdaRound (the same module's ``rounding="adaround"``): each INT8 weight rounded up or down so
  that the layer's output on the calibration data is closest to FP32; alone it rounds the
  original weights (mode ``own``, no refit: ``alpha`` infinite);
- bias correction (:mod:`trtq.precision.bias_correction`): each layer's mean output shift from
  weight rounding folded into its bias.

Weight correction (and AdaRound) run first, bias correction after them; AdaRound with bias
correction is refused, since AdaRound leaves no rounding shift to fold. All of them fit the
unpinned INT8 layers only: the result is the FP32 model to export with the same ranges and pins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from trtq._core.errors import InputError
from trtq._core.progress import ProgressFn, null_progress

WEIGHT_CORRECTION_MODES = ("own", "sequential")

#: Why weight scales by output error and the recoveries are exclusive: each recovery fits the
#: weights or biases to the data-free rounding that the chosen scales would replace.
WITH_OUTPUT_SCALES = (
    "--weight-scales output is not combined with --weight-correction, --adaround or --bias-correction"
)


@dataclass(frozen=True)
class Recovery:
    """Which recoveries to run. ``alpha``: weight correction's ridge strength (None: its default);
    it needs ``weight_correction``."""

    weight_correction: str | None = None
    alpha: float | None = None
    adaround: bool = False
    bias_correction: bool = False

    def __post_init__(self) -> None:
        if self.weight_correction is not None and self.weight_correction not in WEIGHT_CORRECTION_MODES:
            raise InputError(
                f"unknown weight correction mode '{self.weight_correction}'; choose one of: "
                + ", ".join(WEIGHT_CORRECTION_MODES)
            )
        if self.alpha is not None and not self.weight_correction:
            raise InputError("--weight-correction-alpha needs --weight-correction own|sequential")
        if self.alpha is not None and not 0 < self.alpha < float("inf"):  # also rejects NaN
            # 0 is plain least squares: on a few images it can blow a layer's weights up (seen: output
            # MSE 0.03 -> 1e16 on PP-OCR cls); infinite changes nothing
            raise InputError(f"--weight-correction-alpha must be a finite number > 0 (got {self.alpha:g})")
        if self.adaround and self.bias_correction:
            raise InputError(
                "--bias-correction after --adaround has nothing to fold: AdaRound writes weights already on "
                "the INT8 grid, so their rounding shift is zero; give one of them"
            )

    @property
    def active(self) -> bool:
        """Whether any recovery runs."""
        return bool(self.weight_correction or self.adaround or self.bias_correction)

    def require_int8(self, int8: bool, refusal: str) -> None:
        """:class:`InputError` naming the first flag given, ending in ``refusal``, when a recovery
        is asked for and the model written is not INT8 (``int8``)."""
        if self.active and not int8:
            raise InputError(f"{self.flags()[0].split()[0]} corrects INT8 layers: {refusal}")

    def flags(self) -> list[str]:
        """The command-line flags that ask for this recovery (for messages and documents)."""
        out = []
        if self.weight_correction:
            out.append(f"--weight-correction {self.weight_correction}")
        if self.alpha is not None:
            out.append(f"--weight-correction-alpha {self.alpha:g}")
        if self.adaround:
            out.append("--adaround")
        if self.bias_correction:
            out.append("--bias-correction")
        return out

    def settings(self) -> tuple[str, float, str]:
        """``(mode, alpha, rounding)`` of the weight pass: AdaRound alone rounds the original
        weights (``own``, alpha infinite)."""
        from trtq.precision.weight_correction import DEFAULT_ALPHA

        mode = self.weight_correction or "own"
        if not self.weight_correction:
            alpha = float("inf")
        else:
            alpha = DEFAULT_ALPHA if self.alpha is None else float(self.alpha)
        return mode, alpha, "adaround" if self.adaround else "nearest"

    def apply(
        self,
        model: onnx.ModelProto,
        batches: Sequence[Mapping[str, np.ndarray]],
        amax: Mapping[str, float],
        pins: Iterable[str] = (),
        *,
        threads: int | None = None,
        progress: ProgressFn = null_progress,
    ) -> tuple[onnx.ModelProto, dict[str, Any]]:
        """``(model, reports)``: the FP32 ``model`` (folded) with the recoveries applied on the
        calibration ``batches`` for the INT8 ranges ``amax`` (tensor -> amax) and the FP32
        ``pins``; ``reports`` maps ``weight_correction`` / ``bias_correction`` to each technique's
        report object (``to_dict()`` for JSON). Export the result with the same ranges and pins.
        The model is returned as given when nothing is asked for."""
        reports: dict[str, Any] = {}
        if not self.active:
            return model, reports
        pins = list(pins)
        if self.weight_correction or self.adaround:
            from trtq.precision.weight_correction import correct_weights

            mode, alpha, rounding = self.settings()
            model, reports["weight_correction"] = correct_weights(
                model, batches, amax, mode=mode, alpha=alpha, rounding=rounding, pins=pins,
                threads=threads, progress=progress,
            )  # fmt: skip
        if self.bias_correction:
            from trtq.precision.bias_correction import correct_biases

            model, reports["bias_correction"] = correct_biases(
                model, batches, amax, pins=pins, threads=threads
            )
        return model, reports


def report_dicts(reports: Mapping[str, Any]) -> dict[str, Any]:
    """The reports of :meth:`Recovery.apply` as JSON-ready dicts."""
    return {k: v.to_dict() for k, v in reports.items()}


def summary_lines(recovery: Recovery, reports: Mapping[str, Mapping[str, Any]], worst: int = 5) -> list[str]:
    """Lines for people from the report dicts (:func:`report_dicts`): what each recovery did on the
    calibration data and, for weight correction / AdaRound, the ``worst`` layers by output error
    relative to the layer's output power after it."""
    lines = []
    wc = reports.get("weight_correction")
    if wc is not None:
        layers = wc["layers"]
        mode, alpha, _ = recovery.settings()
        before = sum(f["mse_before"] for f in layers)
        after = sum(f["mse_after"] for f in layers)
        if recovery.weight_correction:
            what = "weight correction"
            how = f"{mode}, alpha {alpha:g}" + (", adaround" if recovery.adaround else "")
        else:
            what, how = "adaround", "the original weights"
        flipped = sum(f["flipped"] for f in layers)
        lines.append(
            f"{what} ({how}): {len(layers)} layer(s) on {wc['samples']} batch(es), {len(wc['skipped'])} "
            f"skipped; summed layer output MSE {before:.4g} -> {after:.4g} (INT8 weights, calibration data)"
            + (f"; {flipped} weight(s) rounded away from their nearest step" if recovery.adaround else "")
        )
        for f in sorted(layers, key=lambda f: -f["mse_after"] / max(f["output_power"], 1e-30))[:worst]:
            lines.append(
                f"  {f['node']} ({f['op_type']}): output MSE {f['mse_before']:.3g} -> {f['mse_after']:.3g}, "
                f"mean |dW|/|W| {f['rel_weight_change']:.3g}"
            )
    bc = reports.get("bias_correction")
    if bc is not None:
        shift = max((c["mean_abs_shift"] for c in bc["layers"]), default=0.0)
        lines.append(
            f"bias correction: {len(bc['layers'])} layer(s) on {bc['samples']} batch(es), "
            f"largest mean |shift| {shift:.3g}"
        )
    return lines
