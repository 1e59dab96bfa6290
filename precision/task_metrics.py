"""Task metrics: what a model's *outputs* mean, beside the tensor metrics of :mod:`.metrics`.

A task metric compares a model's final output with the FP32 output the way its task reads it,
and is chosen like any metric: ``--metric top1``, ``--metric mask-iou --binarize 0.3``. It is a
:class:`TaskMetric` in the one metric registry (:func:`trtq.precision.metrics.get_metric`);
built-ins are registered here, plug-ins through the ``trtq.metrics`` entry-point group (the entry
point names a :class:`TaskMetric` instance, or any :class:`~trtq.precision.metrics.Metric`).

Built-ins:

- ``top1``: the fraction of positions where the argmax over the **last axis** agrees with
  FP32's: one position per sample for ``[N, C]`` logits, one per time step for ``[N, T, C]``
  sequence outputs (PP-OCR rec). Ties take the first maximum (``numpy.argmax``). A position
  where the candidate holds NaN/Inf (and FP32 does not) counts as a disagreement.
- ``mask-iou`` (parameter ``binarize`` = T, required): ``|A ∩ B| / |A ∪ B|`` with
  ``A = candidate > T`` and ``B = FP32 > T``, **pooled** over every element of every batch
  (the counts are summed, not the per-image IoUs averaged). Both masks empty: 1.0, with a warning
  (a T above everything the model outputs passes every candidate; the commands show an identical
  warning once). A NaN in the
  candidate counts as a wrong pixel (in the union, never in the intersection).

An accumulator (what :meth:`TaskMetric.make` returns) is the same small protocol as
:class:`~trtq.precision.metrics.MetricAccumulator`:

- ``update(actual, reference) -> self``: add one batch (integer or float64 sums, so the result
  does not depend on how the data was batched);
- ``result() -> {key: value}``;
- ``rest(reference) -> tuple[float, ...]``: additive statistics of a reference batch not seen yet;
- ``bound(*rest) -> {key: value} | None``: the most favourable final result once data with those
  summed statistics is added, whatever the candidate gives there (what lets a bisect evaluation
  stop early); ``None``, or no ``bound`` method at all, means the metric has no bound and every
  evaluation runs all batches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trtq._core.errors import InputError
from trtq.precision.metrics import Metric, register_metric

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskMetric(Metric):
    """A registered task metric: ``key`` is the field its accumulator's result holds.

    ``params`` maps each parameter (a flag of the same name, e.g. ``binarize`` = ``--binarize``)
    to its default; ``None`` marks a required one. ``default_threshold`` is the bisect criterion's
    threshold when ``--threshold`` is not given (None: it must be given).
    """

    accumulator: Callable[..., Any] = None  # type: ignore[assignment]
    params: Mapping[str, float | None] = field(default_factory=dict)
    default_threshold: float | None = None
    description: str = ""

    def resolve_params(self, given: Mapping[str, Any] | None) -> dict[str, float]:
        """``given`` checked against :attr:`params`, defaults filled in."""
        given = {k: v for k, v in (given or {}).items() if v is not None}
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            return _reject(self.name, unknown[0], self.params)
        out = {}
        for name, default in self.params.items():
            value = given.get(name, default)
            if value is None:
                raise InputError(f"metric '{self.name}' needs --{name.replace('_', '-')} T")
            if not math.isfinite(float(value)):
                raise InputError(
                    f"--{name.replace('_', '-')} {value}: metric '{self.name}' needs a finite number"
                )
            out[name] = float(value)
        return out

    def make(self, **params: Any) -> Any:
        """A fresh accumulator for this metric with ``params`` (see :meth:`resolve_params`)."""
        return self.accumulator(**self.resolve_params(params))


def metric_params(metric: Metric, given: Mapping[str, Any] | None) -> dict[str, float]:
    """The parameters of ``metric`` from ``given`` (flag values, None = not given): a tensor
    metric takes none, so any given one is an :class:`InputError` (one line)."""
    if isinstance(metric, TaskMetric):
        return metric.resolve_params(given)
    given = {k: v for k, v in (given or {}).items() if v is not None}
    if given:
        _reject(metric.name, sorted(given)[0], {})
    return {}


def _reject(metric: str, param: str, params: Mapping[str, Any]) -> dict[str, float]:
    flag = "--" + param.replace("_", "-")
    takes = ", ".join("--" + p.replace("_", "-") for p in params) or "no parameter"
    owners = [m.name for m in _task_metrics() if param in m.params]
    where = f" (a parameter of {', '.join(owners)})" if owners else ""
    raise InputError(f"{flag}{where} does not apply to metric '{metric}', which takes {takes}")


def _task_metrics() -> list[TaskMetric]:
    from trtq.precision.metrics import available_metrics

    return [m for m in available_metrics() if isinstance(m, TaskMetric)]


def register_task_metric(
    name: str,
    *,
    key: str | None = None,
    higher_is_better: bool = True,
    params: Mapping[str, float | None] | None = None,
    default_threshold: float | None = None,
    description: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering an accumulator class (or factory taking ``**params``) as ``name``."""

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        register_metric(
            TaskMetric(
                name,
                key or name.replace("-", "_"),
                higher_is_better,
                factory,
                dict(params or {}),
                default_threshold,
                description,
            )
        )
        return factory

    return deco


# -- top1 -----------------------------------------------------------------------------------------


def _positions(a: np.ndarray) -> int:
    return int(a.size // a.shape[-1]) if a.ndim and a.shape[-1] else 0


@register_task_metric(
    "top1",
    default_threshold=0.99,
    description="argmax over the last axis agrees with FP32 ([N, C] logits, [N, T, C] sequences)",
)
class Top1Accumulator:
    """Agreement of the argmax over the last axis (see the module docstring)."""

    __slots__ = ("agree", "positions")

    def __init__(self) -> None:
        self.agree = 0
        self.positions = 0

    def update(self, actual: np.ndarray, reference: np.ndarray) -> Top1Accumulator:
        a, r = np.asarray(actual), np.asarray(reference)
        if a.shape != r.shape:
            raise InputError(f"shape mismatch: actual {a.shape} vs reference {r.shape}")
        if a.ndim == 0 or a.shape[-1] == 0:
            return self
        same = np.argmax(a, axis=-1) == np.argmax(r, axis=-1)
        if np.issubdtype(a.dtype, np.floating):
            bad = ~np.isfinite(a).all(axis=-1) & np.isfinite(r).all(axis=-1)
            same &= ~bad
        self.agree += int(np.count_nonzero(same))
        self.positions += int(same.size)
        return self

    def result(self) -> dict[str, float]:
        return {"top1": self.agree / self.positions if self.positions else math.nan}

    def rest(self, reference: np.ndarray) -> tuple[float, ...]:
        return (float(_positions(np.asarray(reference))),)

    def bound(self, rest_positions: float) -> dict[str, float]:
        """At best every position still to come agrees."""
        total = self.positions + rest_positions
        return {"top1": (self.agree + rest_positions) / total if total else math.nan}


# -- mask-iou -------------------------------------------------------------------------------------


@register_task_metric(
    "mask-iou",
    params={"binarize": None},
    default_threshold=0.95,
    description="IoU of the outputs binarised at --binarize T, pooled over the data (segmentation, text maps)",
)
class MaskIoUAccumulator:
    """Pooled IoU of ``actual > T`` and ``reference > T`` (see the module docstring)."""

    __slots__ = ("binarize", "intersection", "union", "seen")

    def __init__(self, binarize: float) -> None:
        self.binarize = float(binarize)
        self.intersection = 0
        self.union = 0
        self.seen = False

    def update(self, actual: np.ndarray, reference: np.ndarray) -> MaskIoUAccumulator:
        a, r = np.asarray(actual), np.asarray(reference)
        if a.shape != r.shape:
            raise InputError(f"shape mismatch: actual {a.shape} vs reference {r.shape}")
        t = self.binarize
        b = r > t
        with np.errstate(invalid="ignore"):
            wrong = np.isnan(a) if np.issubdtype(a.dtype, np.floating) else np.zeros(a.shape, bool)
            m = (a > t) & ~wrong
        self.intersection += int(np.count_nonzero(m & b))
        self.union += int(np.count_nonzero(m | b | wrong))
        self.seen = self.seen or r.size > 0
        return self

    def result(self) -> dict[str, float]:
        if not self.union and self.seen:
            logger.warning(
                "mask-iou: no output value above --binarize %g, in FP32 or in the candidate, on this data: "
                "IoU counts as 1.0 (is %g within the output's range?)",
                self.binarize,
                self.binarize,
            )
        return {"mask_iou": self.intersection / self.union if self.union else 1.0}

    def rest(self, reference: np.ndarray) -> tuple[float, ...]:
        return (float(np.count_nonzero(np.asarray(reference) > self.binarize)),)

    def bound(self, rest_positive: float) -> dict[str, float]:
        """Every FP32-positive element still to come joins the union; at best it joins the
        intersection too, and no other element joins either: (I + P) / (U + P)."""
        union = self.union + rest_positive
        return {"mask_iou": (self.intersection + rest_positive) / union if union else 1.0}
