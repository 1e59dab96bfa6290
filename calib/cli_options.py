"""The ranges argument group: INT8 ranges from a calibration cache, or how to calibrate them
(a CLI module: uses click). Part of the groups of :mod:`trtq._core.args`.

``--cache FILE`` is always the TensorRT calibration cache: ``calib run``, ``calib compute`` and
``calib merge`` write it; ``precision compare/export/bisect/pin`` read their INT8 ranges from it.
``--method`` is always the calibration (threshold) method, with its parameters (``--percentile``):
the one ``calib`` writes the cache with, or the one ``precision`` calibrates with when no cache is
given. Where the command has the model and the data (``calib run``, ``precision compare/bisect/pin``
without a cache) the default is :data:`DEFAULT_METHOD`, ``auto``; commands that derive thresholds
from saved histograms alone (``calib compute``, ``calib merge``) default to
:data:`HISTOGRAM_DEFAULT_METHOD`, ``entropy2``, since ``auto`` measures on the data. Config keys::

    [tool.trtq]
    cache = "calib.cache"          # relative to the config file's folder
    method = "percentile"          # auto | entropy2 | minmax | percentile | mse (+ registered ones)
    percentile = 99.9              # any parameter of the method, by name
    num_bins = 2048
    trt_version = "10.16.1"
    cache_algorithm = "EntropyCalibration2"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from trtq._core.args import ArgGroup
from trtq._core.config import checked, resolve_path, setting
from trtq._core.errors import InputError
from trtq.calib.cache import ALGORITHMS, DEFAULT_TRT_VERSION

#: The default where ranges are calibrated from data: measured per tensor at its consumer layer
#: (:mod:`trtq.calib.auto`); held-out accuracy above entropy2 on 5 of 6 benchmark settings within
#: 2x a plain run's time (BENCHMARKS.md, "auto becomes the default").
DEFAULT_METHOD = "auto"
#: The default of commands with histograms alone (``auto`` needs the model and the data).
HISTOGRAM_DEFAULT_METHOD = "entropy2"


@dataclass(frozen=True)
class RangesSettings:
    """INT8 ranges: the cache, and the method (with parameters) to calibrate with."""

    cache: str | None  # the TensorRT calibration cache
    method: str = DEFAULT_METHOD  # threshold method name (registry of trtq.calib.methods)
    params: Mapping[str, Any] = field(default_factory=dict)  # the method's parameters that were set
    num_bins: int | None = None  # histogram bins (None: the histogram's default)
    trt_version: str = DEFAULT_TRT_VERSION  # TensorRT version the written cache is for
    cache_algorithm: str | None = None  # cache header algorithm (None: the method's)
    method_given: bool = False  # True when --method or the config chose the method


def _warn_unused(opts: Mapping[str, Any], method: str, cache_read: str | None) -> None:
    """A warning when ``--percentile`` is given on the command line and has no effect: the ranges
    are read from ``--cache``, or the method is not ``percentile``. (``--method`` with a cache
    read is not warned about: for FP8 it picks the cache's thresholds over the histograms' max.)
    Config values are shared by every command, so only the flag is checked."""
    import logging

    if opts.get("percentile") is None:
        return
    if cache_read:
        logging.getLogger(__name__).warning(
            "--percentile not used: the ranges are read from --cache %s", cache_read
        )
    elif method != "percentile":
        logging.getLogger(__name__).warning(
            "--percentile not used: it is a parameter of --method percentile, not of %s", method
        )


class RangesArgs(ArgGroup):
    """``--cache`` and, as the command needs them: ``--method``/``--percentile`` (``calibrate``),
    ``--trt-version``/``--cache-algorithm`` (``cache_format``: commands that write a cache),
    ``--num-bins`` (``num_bins``: commands that build histograms). ``histograms_only``: the
    command has saved histograms, not the model and data: default :data:`HISTOGRAM_DEFAULT_METHOD`,
    and a method that needs data (``auto``) is refused before any work."""

    def __init__(
        self,
        cache_help: str = "TensorRT INT8 calibration cache to read the ranges from.",
        *,
        cache_required: bool = False,
        calibrate: bool = True,
        method_help: str = (
            "Without --cache: calibrate with this method (default auto: per tensor, the candidate "
            "threshold with the least measured error at its consumer layer; entropy2, minmax, "
            "percentile, mse: from the histograms alone)."
        ),
        cache_format: bool = False,
        num_bins: bool = False,
        histograms_only: bool = False,
    ) -> None:
        self.cache_help, self.cache_required = cache_help, cache_required
        self.calibrate, self.method_help = calibrate, method_help
        self.histograms_only = histograms_only
        self.default_method = HISTOGRAM_DEFAULT_METHOD if histograms_only else DEFAULT_METHOD
        self.cache_format, self.num_bins = cache_format, num_bins

    @property
    def config_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        keys = ["cache"]
        if self.calibrate:
            keys += ["method", "percentile"]
        if self.num_bins:
            keys += ["num_bins"]
        if self.cache_format:
            keys += ["trt_version", "cache_algorithm"]
        return tuple(keys)

    @classmethod
    def known_keys(cls) -> tuple[str, ...]:
        return ("cache", "method", "percentile", "num_bins", "trt_version", "cache_algorithm")

    @classmethod
    def registry_keys(cls) -> tuple[str, ...]:
        """Every registered calibration method's parameters (plug-ins too)."""
        from trtq.calib.methods import available_methods

        return tuple(k for m in available_methods() for k in m.params)

    def decorators(self) -> list[Callable[[Callable], Callable]]:
        decos = [click.option("--cache", type=click.Path(dir_okay=False), default=None, help=self.cache_help)]
        if self.calibrate:
            decos += [
                click.option("--method", default=None, help=self.method_help),
                click.option(
                    "--percentile", type=float, default=None, help="For --method percentile (default 99.99)."
                ),
            ]
        if self.num_bins:
            decos.append(
                click.option(
                    "--num-bins", type=int, default=None, help="Histogram bins per tensor (default 2048)."
                )
            )
        if self.cache_format:
            decos += [
                click.option(
                    "--trt-version",
                    default=None,
                    help=f"TensorRT version the cache is for (default {DEFAULT_TRT_VERSION}).",
                ),
                click.option(
                    "--cache-algorithm",
                    default=None,
                    type=click.Choice(list(ALGORITHMS)),
                    help="Cache header algorithm (default: the method's); must match the calibrator reading it.",
                ),
            ]
        return decos

    def resolve(
        self, opts: Mapping[str, Any], config: Mapping[str, Any], config_path: Path | None
    ) -> RangesSettings:
        cache = opts.get("cache") or resolve_path(checked("cache", config.get("cache")), config_path)
        if self.cache_required and not cache:
            raise InputError('no cache file given: pass --cache FILE (or set cache = "..." in [tool.trtq])')
        method, params = self.default_method, {}
        method_given = self.calibrate and setting(opts, config, "method") is not None
        if self.calibrate:
            from trtq.calib.methods import get_method

            method = str(setting(opts, config, "method", self.default_method))
            if self.histograms_only and get_method(method).needs_data:
                from trtq.calib.methods.auto import NEEDS_DATA

                if opts.get("method") is None:  # from the config file, which calib run shares
                    raise InputError(
                        f"config file: method = '{method}' needs the model and the data, not histograms "
                        "alone: pass --method entropy2 (or another histogram method) to this command"
                    )
                raise InputError(NEEDS_DATA)
            # the method's own parameters (e.g. percentile) from flags or config; unset ones keep its default
            params = {k: v for k in get_method(method).params if (v := setting(opts, config, k)) is not None}
            _warn_unused(opts, method, cache if not self.cache_format else None)
        num_bins = setting(opts, config, "num_bins") if self.num_bins else None
        trt_version, algorithm = DEFAULT_TRT_VERSION, None
        if self.cache_format:
            trt_version = str(setting(opts, config, "trt_version", DEFAULT_TRT_VERSION))
            algorithm = setting(opts, config, "cache_algorithm")
        return RangesSettings(
            cache=None if cache is None else str(cache),
            method=method,
            params=params,
            num_bins=None if num_bins is None else int(num_bins),
            trt_version=trt_version,
            cache_algorithm=algorithm,
            method_given=method_given,
        )

    def paths(self, settings: RangesSettings) -> tuple[dict[str, str | None], dict[str, str | None]]:
        """A command that writes a cache (``cache_format``) writes ``--cache``; the others read it."""
        return ({"--cache": settings.cache}, {}) if self.cache_format else ({}, {"--cache": settings.cache})
