"""Error metrics between an emulated (or engine) tensor and its FP32 reference.

All sums are taken in float64 over every element (batches accumulate exactly through
:class:`MetricAccumulator`, so a tensor's metrics do not depend on how the data was batched):

- ``max_abs``  = max |a - r|
- ``mean_abs`` = mean |a - r|
- ``rel_l2``   = ||a - r||_2 / ||r||_2   (0 when both are zero, inf when only r is zero)
- ``cosine``   = <a, r> / (||a|| ||r||)  (1 when both are all zeros, 0 when one is)
- ``sqnr_db``  = 10 log10(||r||^2 / ||a - r||^2)  (inf when a == r)
- ``nonfinite`` = fraction of elements where ``a`` or ``r`` is NaN/Inf and they differ.

A position where both hold the same ±inf is no error, and neither is a *mask fill*: FP32 holds a
finite |r| >= 2^126 (e.g. float32's lowest value in an attention mask) and the candidate the ±inf
of the same sign that FP16 makes of it. Such positions count in ``n`` and nowhere else (the FP16
range check reports the fill itself, see :mod:`trtq.precision.fp16_range`).

Any non-finite element makes the tensor the worst possible: the error metrics become inf and
``cosine``/``sqnr_db`` NaN (written as null in JSON), and :meth:`Metric.badness` ranks it above
every finite error. Non-finite values are never averaged away.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from trtq._core.errors import InputError

try:  # one pass over the data in compiled code; numpy fallback below
    import numba  # noqa: F401
except ImportError:  # pragma: no cover - numba is a dependency of trtq
    njit = None
else:
    from trtq._core.jit import njit  # cached in the per-user folder, not in the package

#: FP32 magnitudes at or above this are mask fills (as in :mod:`trtq.precision.fp16_range`).
MASK_FILL_ABS = 2.0**126

METRIC_KEYS = ("max_abs", "mean_abs", "rel_l2", "cosine", "sqnr_db", "nonfinite")


class MetricAccumulator:
    """Sufficient statistics of (actual, reference) pairs; :meth:`result` gives the metrics."""

    __slots__ = ("n", "bad", "sum_abs", "max_abs", "sum_d2", "sum_r2", "sum_a2", "sum_ar")

    def __init__(self) -> None:
        self.n = self.bad = 0
        self.sum_abs = self.max_abs = self.sum_d2 = self.sum_r2 = self.sum_a2 = self.sum_ar = 0.0

    def update(self, actual: np.ndarray, reference: np.ndarray) -> MetricAccumulator:
        a = np.asarray(actual)
        r = np.asarray(reference)
        if a.shape != r.shape:
            raise InputError(f"shape mismatch: actual {a.shape} vs reference {r.shape}")
        if _stats_kernel is not None and a.dtype == r.dtype and a.dtype in (np.float32, np.float64):
            bad, s_abs, m_abs, s_d2, s_r2, s_a2, s_ar = _stats_kernel(
                np.ascontiguousarray(a).ravel(), np.ascontiguousarray(r).ravel()
            )
            self.n += a.size
            self.bad += bad
            self.sum_abs += s_abs
            self.max_abs = max(self.max_abs, m_abs)
            self.sum_d2 += s_d2
            self.sum_r2 += s_r2
            self.sum_a2 += s_a2
            self.sum_ar += s_ar
            return self
        a = a.astype(np.float64, copy=False).ravel()
        r = r.astype(np.float64, copy=False).ravel()
        self.n += a.size
        finite = np.isfinite(a) & np.isfinite(r)
        if not finite.all():
            with np.errstate(invalid="ignore"):
                same = a == r  # inf == inf counts as a match; NaN never does
                # a mask fill that became the infinity of its sign (FP32 -3.4e38 -> FP16 -inf)
                same |= np.isinf(a) & (np.abs(r) >= MASK_FILL_ABS) & (np.sign(a) == np.sign(r))
            self.bad += int(np.count_nonzero(~finite & ~same))
            a, r = a[finite], r[finite]
        if a.size:
            d = a - r
            ad = np.abs(d)
            self.sum_abs += float(ad.sum())
            self.max_abs = max(self.max_abs, float(ad.max()))
            self.sum_d2 += float(np.dot(d, d))
            self.sum_r2 += float(np.dot(r, r))
            self.sum_a2 += float(np.dot(a, a))
            self.sum_ar += float(np.dot(a, r))
        return self

    def result(self) -> dict[str, float]:
        if self.n == 0:
            return {k: math.nan for k in METRIC_KEYS}
        nonfinite = self.bad / self.n
        if self.bad:
            return {
                "max_abs": math.inf,
                "mean_abs": math.inf,
                "rel_l2": math.inf,
                "cosine": math.nan,
                "sqnr_db": math.nan,
                "nonfinite": nonfinite,
            }
        if self.sum_r2 > 0:
            rel = math.sqrt(self.sum_d2 / self.sum_r2)
        else:
            rel = 0.0 if self.sum_d2 == 0 else math.inf
        if self.sum_a2 > 0 and self.sum_r2 > 0:
            cos = self.sum_ar / math.sqrt(self.sum_a2 * self.sum_r2)
            cos = max(-1.0, min(1.0, cos))
        else:
            cos = 1.0 if self.sum_a2 == self.sum_r2 == 0 else 0.0
        if self.sum_d2 == 0:
            sqnr = math.inf
        elif self.sum_r2 == 0:
            sqnr = -math.inf
        else:
            sqnr = 10.0 * math.log10(self.sum_r2 / self.sum_d2)
        return {
            "max_abs": self.max_abs,
            "mean_abs": self.sum_abs / self.n,
            "rel_l2": rel,
            "cosine": cos,
            "sqnr_db": sqnr,
            "nonfinite": nonfinite,
        }

    def bound(self, rest_r2: float, rest_n: int) -> dict[str, float]:
        """The most favourable final metrics once ``rest_n`` more elements, whose reference has
        energy ``rest_r2`` (sum of r^2, float64), are added, whatever the actual values are.

        Every error metric can only grow (``max_abs``, ``mean_abs`` over the final count, and
        ``rel_l2`` over the final reference energy); ``sqnr_db`` can only fall. For ``cosine``, the
        final actual vector lies in the span of the part seen so far and the unseen coordinates,
        so the cosine is at most the norm of the reference's projection onto that span over the
        reference's norm: ``sqrt((s_ar^2 / s_a2 + R) / (s_r2 + R))`` with ``R = rest_r2``. A
        result that fails a threshold here fails it for every possible rest of the data; this is
        what lets an evaluation stop early. With nothing left, this is :meth:`result` except
        that ``cosine`` is replaced by its absolute value.
        """
        n = self.n + rest_n
        if n == 0:
            return {k: math.nan for k in METRIC_KEYS}
        if self.bad:
            out = self.result()
            out["nonfinite"] = self.bad / n
            return out
        total_r2 = self.sum_r2 + rest_r2
        if total_r2 > 0:
            rel = math.sqrt(self.sum_d2 / total_r2)
            sqnr = math.inf if self.sum_d2 == 0 else 10.0 * math.log10(total_r2 / self.sum_d2)
            seen = self.sum_ar**2 / self.sum_a2 if self.sum_a2 > 0 else 0.0
            cos = min(1.0, math.sqrt(min(seen, self.sum_r2) + rest_r2) / math.sqrt(total_r2))
        else:  # the reference is all zeros: only an all-zero actual matches it
            rel = 0.0 if self.sum_d2 == 0 else math.inf
            sqnr = math.inf if self.sum_d2 == 0 else -math.inf
            cos = 1.0 if self.sum_a2 == 0 else 0.0
        return {
            "max_abs": self.max_abs,
            "mean_abs": self.sum_abs / n,
            "rel_l2": rel,
            "cosine": cos,
            "sqnr_db": sqnr,
            "nonfinite": 0.0,
        }

    def rest(self, reference: np.ndarray) -> tuple[float, float]:
        """What :meth:`bound` needs of a reference batch not seen yet: (sum of r^2, element
        count). Non-finite values are left out of the energy, as :meth:`update` leaves them out
        of its sums (an Inf matched exactly is not an error)."""
        r = np.asarray(reference, np.float64).ravel()
        r = r[np.isfinite(r)]
        return float(np.dot(r, r)), float(np.size(reference))


class OutputAccumulator:
    """The tensor metrics of one output, plus a task metric's accumulator when one is chosen
    (``task``: see :mod:`trtq.precision.task_metrics`); :meth:`result` holds both sets of keys.
    :meth:`bound` is None when the task metric has none (then nothing may stop early)."""

    __slots__ = ("metrics", "task")

    def __init__(self, task: object | None = None) -> None:
        self.metrics = MetricAccumulator()
        self.task = task

    @property
    def n(self) -> int:
        return self.metrics.n

    def update(self, actual: np.ndarray, reference: np.ndarray) -> OutputAccumulator:
        self.metrics.update(actual, reference)
        if self.task is not None:
            self.task.update(actual, reference)
        return self

    def result(self) -> dict[str, float]:
        out = self.metrics.result()
        if self.task is not None:
            out.update(self.task.result())
        return out

    @property
    def has_bound(self) -> bool:
        return self.task is None or callable(getattr(self.task, "bound", None))

    def rest(self, reference: np.ndarray) -> tuple[float, ...]:
        own = self.metrics.rest(reference)
        return own + tuple(self.task.rest(reference)) if self.task is not None and self.has_bound else own

    def bound(self, *rest: float) -> dict[str, float] | None:
        out = self.metrics.bound(rest[0], int(rest[1]))
        if self.task is not None:
            task = self.task.bound(*rest[2:]) if self.has_bound else None
            if task is None:
                return None
            out.update(task)
        return out


def _make_kernel():
    if njit is None:
        return None

    @njit(nogil=True)
    def stats(a, r):  # pragma: no cover - compiled
        bad = 0
        s_abs = 0.0
        m_abs = 0.0
        s_d2 = 0.0
        s_r2 = 0.0
        s_a2 = 0.0
        s_ar = 0.0
        for i in range(a.size):
            x = np.float64(a[i])
            y = np.float64(r[i])
            if not (np.isfinite(x) and np.isfinite(y)):
                fill = np.isinf(x) and abs(y) >= MASK_FILL_ABS and (x > 0) == (y > 0)
                if not (x == y or fill):
                    bad += 1
                continue
            d = x - y
            ad = abs(d)
            s_abs += ad
            if ad > m_abs:
                m_abs = ad
            s_d2 += d * d
            s_r2 += y * y
            s_a2 += x * x
            s_ar += x * y
        return bad, s_abs, m_abs, s_d2, s_r2, s_a2, s_ar

    return stats


_stats_kernel = _make_kernel()


def tensor_metrics(actual: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Metrics of one tensor pair (keys: max_abs, mean_abs, rel_l2, cosine, sqnr_db, nonfinite)."""
    return MetricAccumulator().update(actual, reference).result()


@dataclass(frozen=True)
class Metric:
    """A criterion over :func:`tensor_metrics` results.

    ``key`` is the field read; ``higher_is_better`` its direction. :meth:`badness` maps any
    result to one number where larger is worse, non-finite tensors being +inf.
    """

    name: str
    key: str
    higher_is_better: bool

    def value(self, metrics: Mapping[str, float]) -> float:
        return float(metrics[self.key])

    def badness(self, metrics: Mapping[str, float]) -> float:
        if metrics.get("nonfinite", 0.0) and self.key != "nonfinite":
            return math.inf
        v = self.value(metrics)
        if math.isnan(v):
            return math.inf
        return -v if self.higher_is_better else v

    def passes(self, metrics: Mapping[str, float], threshold: float) -> bool:
        """True when the tensor meets ``threshold`` (cosine >= t, rel_l2 <= t, ...); NaN/Inf fail."""
        if metrics.get("nonfinite", 0.0) and self.key != "nonfinite":
            return False
        v = self.value(metrics)
        if math.isnan(v):
            return False
        return v >= threshold if self.higher_is_better else v <= threshold


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    METRICS[metric.name] = metric
    return metric


for _m in (
    Metric("cosine", "cosine", True),
    Metric("rel-l2", "rel_l2", False),
    Metric("max-abs", "max_abs", False),
    Metric("mean-abs", "mean_abs", False),
    Metric("sqnr", "sqnr_db", True),
    Metric("nonfinite", "nonfinite", False),
):
    register_metric(_m)


ENTRY_POINT_GROUP = "trtq.metrics"
_LOADED: set[str] = set()


def _load_plugins() -> None:
    """Register the built-in task metrics and those of the ``trtq.metrics`` entry-point group
    (each names a :class:`Metric`, e.g. a :class:`~trtq.precision.task_metrics.TaskMetric`)."""
    from importlib.metadata import entry_points

    import trtq.precision.task_metrics  # noqa: F401  (registers top1, mask-iou)

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        key = f"{ep.name}={ep.value}"
        if key in _LOADED:
            continue
        _LOADED.add(key)
        metric = ep.load()
        if not isinstance(metric, Metric):
            raise InputError(
                f"entry point '{ep.name}' ({ep.value}) of {ENTRY_POINT_GROUP} is not a trtq Metric"
            )
        if metric.name != ep.name:
            metric = replace(metric, name=ep.name)
        register_metric(metric)


def available_metrics() -> list[Metric]:
    """Every registered metric: tensor metrics, task metrics, plug-ins."""
    _load_plugins()
    return list(METRICS.values())


def get_metric(name: str) -> Metric:
    """The registered metric ``name``: a tensor metric (``cosine``, ``rel-l2``, ``max-abs``,
    ``mean-abs``, ``sqnr``, ``nonfinite``; the underscore spellings ``rel_l2``, ``sqnr_db`` are
    accepted too), a task metric (``top1``, ``mask-iou``) or a plug-in's (``trtq.metrics`` entry
    points). An unknown name raises :class:`InputError` listing the choices."""
    for m in METRICS.values():
        if name in (m.name, m.key):
            return m
    _load_plugins()
    for m in METRICS.values():
        if name in (m.name, m.key):
            return m
    raise InputError(f"unknown metric '{name}'; choose one of: {', '.join(METRICS)}")


def is_task_metric(name: str) -> bool:
    """True for a metric of a model's outputs only (``top1``, ``mask-iou``, plug-ins)."""
    return get_metric(name).key not in METRIC_KEYS
