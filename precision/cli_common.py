"""Steps and options shared by the ``precision`` commands: open the data for a model, read the
INT8 ranges from a calibration cache or calibrate them, and the options of the weight-scale
choice and the recoveries (``export``, ``quantize``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import onnx

from trtq._core.cli import progress_bar
from trtq._core.errors import InputError
from trtq.precision.qdq import FP8_RANGES  # noqa: F401  (FP8's default ranges; re-exported)

if TYPE_CHECKING:
    from trtq.precision.recovery import Recovery

log = logging.getLogger(__name__)

MHA_HELP = (
    "Attention blocks (MatMul -> [scale, mask] -> Softmax -> MatMul): fp16 keeps their two matrix "
    "products unquantized (FP16, or FP32 with int8 alone), int8 quantizes Q, K, the probabilities "
    "and V. Default fp16."
)


def mha_option(fn: Callable) -> Callable:
    """``--mha fp16|int8`` (None when not given: the command's default, or the replayed setting)."""
    import click

    return click.option("--mha", type=click.Choice(["fp16", "int8"]), default=None, help=MHA_HELP)(fn)


def mha_choice(opts: Mapping[str, Any], recorded: Mapping[str, Any] | None = None) -> str:
    """The ``--mha`` given, else the ``recorded`` setting (a bisect document's), else the default."""
    from trtq.precision.emulate import DEFAULT_MHA

    return opts.get("mha") or (recorded or {}).get("mha") or DEFAULT_MHA


WEIGHT_SCALES_HELP = (
    "Per-channel weight scales from the weights alone, or chosen by each layer's output error on "
    "--data (FP8: among the eight E4M3 grids; INT8: among clipping ratios 1.0-0.74). auto: output "
    "for FP8 when --data is given, else weights."
)


def weight_scales_option(fn: Callable) -> Callable:
    """``--weight-scales auto|weights|output`` (:mod:`trtq.precision.weight_scales`)."""
    import click

    choice = click.Choice(["auto", "weights", "output"])
    return click.option(
        "--weight-scales",
        "weight_scales",
        type=choice,
        default="auto",
        show_default=True,
        help=WEIGHT_SCALES_HELP,
    )(fn)


def scales_by_output(choice: str, precision: str, has_data: bool) -> bool:
    """Whether ``--weight-scales choice`` picks the scales by output error for ``precision``
    (``auto``: FP8 with data)."""
    return choice == "output" or (choice == "auto" and "fp8" in precision and has_data)


def choose_scales(
    proto: onnx.ModelProto,
    batches: list,
    amax: Mapping[str, float],
    qtype: str,
    pins: Iterable[str],
    quiet: bool,
) -> tuple[dict, dict]:
    """Weight scales by output error for ``export`` and ``pin``
    (:func:`trtq.precision.weight_scales.choose_weight_scales` on the decoded --data ``batches``,
    with a progress bar): ``(scales, report dict)``, and a one-line summary on stderr."""
    from trtq._core.cli import stderr_console
    from trtq.precision.weight_scales import choose_weight_scales

    with progress_bar(quiet, unit="batch") as progress:
        scales, report = choose_weight_scales(proto, batches, amax, qtype=qtype, pins=pins, progress=progress)
    if not quiet:
        changed = sum(f.changed for f in report.layers)
        channels = sum(f.channels for f in report.layers)
        before = sum(f.error_before for f in report.layers)
        after = sum(f.error_after for f in report.layers)
        stderr_console().print(
            f"weight scales by output error ({qtype.upper()}): {changed} of {channels} channel(s) in "
            f"{len(report.layers)} layer(s) moved off the data-free scale, {len(report.skipped)} layer(s) "
            f"skipped; summed layer output error {before:.4g} -> {after:.4g} on {report.samples} batch(es)"
        )
    return scales, report.to_dict()


def recovery_options(fn: Callable) -> Callable:
    """``--bias-correction``, ``--weight-correction own|sequential``, ``--weight-correction-alpha``
    and ``--adaround`` (:mod:`trtq.precision.recovery`), for ``export`` and ``quantize``."""
    import click

    options = [
        click.option(
            "--bias-correction/--no-bias-correction",
            "bias_correction",
            default=False,
            show_default=True,
            help="INT8: fold each quantized layer's per-channel mean shift from weight rounding into its "
            "bias, measured on --data (calibration data).",
        ),
        click.option(
            "--weight-correction",
            "weight_correction",
            type=click.Choice(["own", "sequential"]),
            default=None,
            help="INT8: refit each quantized layer's weights and bias by least squares to its FP32 output "
            "on its quantized input, on --data (calibration data). Off by default.",
        ),
        click.option(
            "--weight-correction-alpha",
            "weight_correction_alpha",
            type=float,
            default=None,
            help="With --weight-correction: its ridge strength relative to the mean input power, a finite "
            "number > 0 (default 0.01; larger = weights change less).",
        ),
        click.option(
            "--adaround/--no-adaround",
            "adaround",
            default=False,
            show_default=True,
            help="INT8: round each quantized layer's weights up or down (AdaRound) so that its output on "
            "--data is closest to FP32; after --weight-correction's refit when given, else on the original "
            "weights. Not with --bias-correction (nothing left to fold).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def finetune_options(fn: Callable) -> Callable:
    """``--finetune STEPS``, ``--finetune-lr`` and ``--finetune-device``
    (:mod:`trtq.precision.finetune`)."""
    import click

    options = [
        click.option(
            "--finetune",
            "finetune_steps",
            type=click.IntRange(min=1),
            default=None,
            metavar="STEPS",
            help="INT8, experimental: then train the written model's INT8 weights against FP32 on --data for STEPS steps "
            "(each weight within one quantization step of its exported value; kept only if the loss on "
            "held-back --data samples goes down). Needs PyTorch: pip install 'trtq[finetune]'. Off by default.",
        ),
        click.option(
            "--finetune-lr",
            "finetune_lr",
            type=float,
            default=None,
            help="With --finetune: Adam's step in quantization steps of each weight (default 0.01).",
        ),
        click.option(
            "--finetune-device",
            "finetune_device",
            default=None,
            help="With --finetune: auto (CUDA when PyTorch sees a GPU; default), cpu or cuda[:N].",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def finetune_choice(opts: Mapping[str, Any], int8: bool) -> Any:
    """The :class:`~trtq.precision.finetune.FinetuneSettings` the flags of :func:`finetune_options`
    ask for, or None when ``--finetune`` is not given; :class:`InputError` for a learning rate or
    device without it, for ``--finetune`` on a model that is not INT8 (``int8``) and when PyTorch
    is not installed: before any work."""
    from trtq.precision.finetune import FinetuneSettings

    steps = opts.get("finetune_steps")
    if steps is None:
        for flag, key in (("--finetune-lr", "finetune_lr"), ("--finetune-device", "finetune_device")):
            if opts.get(key) is not None:
                raise InputError(f"{flag} needs --finetune STEPS")
        return None
    if not int8:
        raise InputError("--finetune trains INT8 weights: not with --fp8")
    import importlib.util

    from trtq.precision.finetune import INSTALL_HINT

    if importlib.util.find_spec("torch") is None:
        raise InputError(f"--finetune: {INSTALL_HINT}")
    lr = opts.get("finetune_lr")
    return FinetuneSettings(
        steps=steps,
        lr=FinetuneSettings.lr if lr is None else lr,
        device=opts.get("finetune_device") or "auto",
    )


def recovery_choice(opts: Mapping[str, Any], int8: bool, refusal: str = "give --int8 too") -> Recovery:
    """The :class:`~trtq.precision.recovery.Recovery` the flags of :func:`recovery_options` ask
    for; :class:`InputError` ending in ``refusal`` when one is given and the command does not
    write INT8 (``int8``)."""
    from trtq.precision.recovery import Recovery

    recovery = Recovery(
        weight_correction=opts.get("weight_correction"),
        alpha=opts.get("weight_correction_alpha"),
        adaround=bool(opts.get("adaround")),
        bias_correction=bool(opts.get("bias_correction")),
    )
    recovery.require_int8(int8, refusal)
    return recovery


def apply_recovery(
    recovery: Recovery,
    proto: onnx.ModelProto,
    batches: list,
    amax: Mapping[str, float],
    pins: Iterable[str],
    quiet: bool,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """``recovery.apply`` with a progress bar, its summary on stderr: ``(model, report dicts)``."""
    from trtq._core.cli import stderr_console
    from trtq.precision.recovery import report_dicts, summary_lines

    with progress_bar(quiet, unit="batch") as progress:
        proto, reports = recovery.apply(proto, batches, amax, pins, progress=progress)
    reports = report_dicts(reports)
    if not quiet:
        for line in summary_lines(recovery, reports):
            stderr_console().print(line, markup=False)
    return proto, reports


def open_data(proto: onnx.ModelProto, data: Any, batch_size: int | None = None, source: str | None = None):
    """The dataset of ``data`` (:class:`~trtq.datasets.cli_options.DataSettings`) for the model,
    and its batch size (``batch_size``, else the data's, else the model's default). ``source``:
    the model's file, named in the error when ONNX Runtime cannot load it."""
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    # A session, not just the declared inputs: a model ONNX Runtime cannot load fails here, before any work.
    try:
        with OnnxRuntimeRunner(proto, optimize=False) as probe:
            inputs = probe.inputs()
    except InputError as exc:
        if source and str(exc).startswith("model: "):
            raise InputError(f"{source}: {str(exc).removeprefix('model: ')}") from exc
        raise
    batch_size = int(batch_size) if batch_size is not None else data.batch_size_for(inputs)
    return data.open(inputs, batch_size), batch_size


def ranges_method(precision: str, ranges: Any) -> tuple[str, Mapping[str, Any]]:
    """The calibration method and parameters for ``precision``: the one chosen with ``--method``
    (or the config), else :data:`FP8_RANGES` for FP8 and the ranges' default for INT8."""
    if "fp8" in precision and not ranges.method_given:
        return FP8_RANGES, {}
    return ranges.method, ranges.params


def cache_ranges(
    cache_path: str,
    precision: str,
    method_given: bool = False,
    model: onnx.ModelProto | None = None,
    model_path: str | None = None,
) -> dict[str, float]:
    """amax per tensor from a TensorRT cache. For FP8 without a chosen method, the largest |x| of
    each tensor from the histograms saved beside the cache (``CACHE.hist.npz``) when they are
    there (the cache itself holds only its method's thresholds). A cache with no tensor entry is
    an :class:`InputError`; with ``model``, so is one whose tensors are mostly not the model's
    (:func:`check_cache_names`)."""
    from trtq.calib.cache import read_cache

    amax = read_cache(cache_path).amax()  # read first: a missing or broken cache is an error either way
    if not amax:
        raise InputError(f"{cache_path}: no tensor scales in this cache (a header alone)")
    if model is not None:
        check_cache_names(amax, model, cache_path, model_path)
    if "fp8" in precision and not method_given:
        from trtq.calib.histogram import HistogramSet
        from trtq.calib.run import compute_amax, histogram_path_for

        hist = histogram_path_for(cache_path)
        if hist.is_file():
            return compute_amax(HistogramSet.load(hist), FP8_RANGES)
        log.warning(
            "%s: no histograms beside the cache (%s): FP8 uses the cache's thresholds; FP8 is most "
            "accurate with each tensor's largest |x| (keep the .hist.npz, or calibrate with --method minmax)",
            cache_path,
            hist.name,
        )
    return amax


def check_cache_names(
    amax: Mapping[str, float], model: onnx.ModelProto, cache_path: str, model_path: str | None = None
) -> None:
    """:class:`InputError` when fewer than half of the cache's tensors are tensors of ``model``:
    a cache of another model, which would quantize the few tensors whose names happen to match
    (an input called ``x``) and leave the rest in float. TensorRT's own unnamed layers
    (``(Unnamed Layer* N) ...``) are not counted: a TensorRT calibrator writes them."""
    from trtq._core.onnx_model import tensor_names

    names = [n for n in amax if not n.startswith("(Unnamed Layer")]
    known = tensor_names(model)
    foreign = [n for n in names if n not in known]
    if names and 2 * len(foreign) > len(names):
        raise InputError(
            f"{cache_path}: {len(foreign)} of its {len(names)} tensors are not in "
            f"{model_path or 'the model'} (e.g. '{foreign[0]}'): a cache of another model?"
        )


def read_or_calibrate(
    proto: onnx.ModelProto,
    cache_path: str | None,
    method: str,
    quiet: bool,
    total: int | None,
    batches: Iterable[Any] | Callable[[Any], Iterable[Any]],
    params: Mapping[str, Any] | None = None,
    *,
    precision: str = "int8",
    method_given: bool = True,
) -> dict[str, float]:
    """The amax per tensor from ``cache_path`` (:func:`cache_ranges`), else calibrated with
    ``method`` (and its ``params``) under a progress bar.

    ``batches`` is the data, or a callable ``progress -> batches`` whose batches report the
    progress themselves (a data loader).
    """
    if cache_path:
        return cache_ranges(cache_path, precision, method_given, model=proto)
    from trtq.calib.run import calibrate
    from trtq.precision.builds import PrecisionTools

    tools = PrecisionTools()  # auto's model-output check runs on the emulation
    with progress_bar(quiet, unit="img") as progress:
        progress(0, total=total, description=f"calibrating ({method})")
        if callable(batches):
            return dict(calibrate(proto, batches(progress), method=method, params=params, tools=tools).amax)
        return dict(
            calibrate(proto, batches, method=method, params=params, progress=progress, tools=tools).amax
        )


def require_float32(proto: onnx.ModelProto, path: str, doing: str) -> None:
    """Commands that rewrite a model's FP32 weights (``equalize``, ``quantize``) refuse, with one
    line, a Q/DQ model, one with FP16 weights, or one that fails onnx.checker. ``doing``: the
    verb for the message ("equalise", "quantize")."""
    from trtq._core.onnx_model import checker_error, has_qdq_nodes

    if has_qdq_nodes(proto):
        raise InputError(f"{path} is already quantized (it has Q/DQ nodes): {doing} its float original")
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
        raise InputError(f"{path} has FP16 weights: {doing} the FP32 model, then convert it")
    why = checker_error(proto)
    if why is not None:
        raise InputError(f"{path} fails onnx.checker: {why}")
