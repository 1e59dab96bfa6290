"""The metric argument group of the ``precision`` commands (a CLI module).

:class:`MetricArgs` owns ``--metric NAME`` and the task metrics' parameters (``--binarize T``).
Names resolve through the one metric registry (:func:`trtq.precision.metrics.get_metric`):
tensor metrics, task metrics (``top1``, ``mask-iou``) and ``trtq.metrics`` entry points; an
unknown name lists the choices, and a parameter given to a metric that takes none is one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from trtq._core.args import ArgGroup

# The task metrics' parameters, one flag each: (flag, option name, help).
PARAM_FLAGS = (
    (
        "--binarize",
        "binarize",
        "mask-iou: binarise the outputs at T (candidate > T vs FP32 > T), e.g. 0.3 for a text map.",
    ),
)


@dataclass(frozen=True)
class MetricSettings:
    name: str | None  # None: not given (the command's default applies)
    params: Mapping[str, float] = field(default_factory=dict)  # the flags given, e.g. {"binarize": 0.3}

    def criterion(self, threshold: float | None, default: str = "cosine"):
        """The :class:`~trtq.precision.evaluate.MetricCriterion` of these settings."""
        from trtq.precision.evaluate import metric_criterion

        return metric_criterion(self.name or default, threshold, self.params)


class MetricArgs(ArgGroup):
    """``--metric NAME`` (``help``; ``default`` None = the command decides) and ``--binarize T``."""

    def __init__(self, help: str, default: str | None = None) -> None:
        self.help, self.default = help, default

    def decorators(self) -> list[Callable[[Callable], Callable]]:
        decos = [
            click.option(
                "--metric",
                metavar="NAME",
                default=self.default,
                show_default=bool(self.default),
                help=self.help,
            )
        ]
        for flag, name, text in PARAM_FLAGS:
            decos.append(click.option(flag, name, type=float, metavar="T", default=None, help=text))
        return decos

    def resolve(
        self, opts: Mapping[str, Any], config: Mapping[str, Any], config_path: Path | None
    ) -> MetricSettings:
        from trtq.precision.metrics import get_metric
        from trtq.precision.task_metrics import metric_params

        params = {name: opts[name] for _, name, _ in PARAM_FLAGS if opts.get(name) is not None}
        name = opts.get("metric")
        if name is not None:
            metric_params(get_metric(name), params)  # unknown names and stray parameters fail here
        return MetricSettings(name, params)


@dataclass(frozen=True)
class ReferenceSettings:
    path: str | None  # the float original of a Q/DQ MODEL; None: recovered from MODEL itself


class ReferenceArgs(ArgGroup):
    """``--reference FILE``: the float model a Q/DQ MODEL (ModelOpt, ONNX Runtime's quantizer,
    trtq export) was made from. A Q/DQ MODEL is detected by its Q/DQ nodes; without
    ``--reference`` its float original is recovered from it
    (:func:`trtq.precision.qdq_model.float_original`)."""

    HELP = (
        "For a Q/DQ MODEL (ModelOpt, ONNX Runtime's quantizer, trtq export): its float original, "
        "tensors matched by name. Default: recovered from MODEL (weights dequantized)."
    )

    def decorators(self) -> list[Callable[[Callable], Callable]]:
        return [
            click.option(
                "--reference",
                "reference",
                type=click.Path(dir_okay=False),
                default=None,
                metavar="FILE",
                help=self.HELP,
            )
        ]

    def resolve(
        self, opts: Mapping[str, Any], config: Mapping[str, Any], config_path: Path | None
    ) -> ReferenceSettings:
        return ReferenceSettings(opts.get("reference"))

    def paths(self, settings: ReferenceSettings) -> tuple[dict[str, str | None], dict[str, str | None]]:
        return {}, {"--reference": settings.path}
