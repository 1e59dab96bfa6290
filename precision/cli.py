"""``precision``: per-layer FP16/INT8 error (compare), Q/DQ export, and (from cli_bisect) bisect/pin.

Commands are thin: parse flags, build an :class:`~trtq.precision.emulate.EmulationConfig`, call
:mod:`trtq.precision.compare` / :mod:`trtq.precision.export`, render the result.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import click

from trtq._core.args import ModelArgs, OutputArgs, RuntimeArgs, resolve_groups, uses
from trtq._core.cli import (
    OneLineErrors,
    common_options,
    progress_bar,
    run_command,
    setup_logging,
    stderr_console,
)
from trtq._core.errors import InputError
from trtq._core.jsonio import to_jsonable
from trtq.calib.cli_options import RangesArgs
from trtq.datasets.cli_options import DataArgs, EvalDataArgs
from trtq.precision.cli_bisect import add_commands
from trtq.precision.cli_common import (
    apply_recovery,
    choose_scales,
    mha_choice,
    mha_option,
    recovery_choice,
    recovery_options,
    require_float32,
    scales_by_output,
    weight_scales_option,
)
from trtq.precision.cli_options import MetricArgs, ReferenceArgs
from trtq.precision.cli_quantize import quantize_command
from trtq.precision.recovery import WITH_OUTPUT_SCALES

logger = logging.getLogger(__name__)


@click.group(
    cls=OneLineErrors,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  precision compare det.onnx --data imgs/ --precision both --top 15
  precision compare rec.onnx --data crops/ --precision int8 --cache calib.cache --mode layerwise
  precision export det.onnx --int8 --cache calib.cache --pins pins.json -o det.qdq.onnx
  precision bisect rec.onnx --data crops/ --precision int8 --cache calib.cache -o pins.json
  precision quantize det.onnx --data cal/ --eval-data held/ --pin-worst 8 -o det.int8.onnx

\b
Flags mean the same in every command: -o FILE is the file the command makes, --json PATH|- the
result document (docs/SCHEMA.md; - = stdout), --report FILE an HTML report, --cache the TensorRT
calibration cache, --method the calibration method used without a cache.
""",
)
def main() -> None:
    """Find which layers lose accuracy in FP16/INT8, and keep them in FP32.

    Runs on CPU by emulating TensorRT on ONNX Runtime (folding, fusion boundaries, FP16 rounding,
    INT8 Q/DQ with TensorRT's placement); with TensorRT and a GPU, --backend tensorrt compares real
    engines.
    """


COMPARE_EPILOG = """\b
Examples:
  precision compare det.onnx --data imgs/ --shape x:1x3x640x640 --preset paddleocr --precision both
  precision compare rec.onnx --data crops/ --shape x:1x3x48x320 --precision int8 --cache calib.cache \\
      --mode both --top 10 --json rec.json --report rec.html
  precision compare model.onnx --data tensors/ --precision int8 --placement implicit --pins pins.json
  precision compare det.onnx --data imgs/ --eval-data held/ --preset paddleocr --precision int8 \\
      --metric mask-iou --binarize 0.3

\b
--precision both = fp16 and int8, each against FP32, in one pass over the data. fp8 / fp8+fp16:
FP8 E4M3 Q/DQ where INT8 would be (scale = amax / 112, from the same ranges); compare its JSON with
an int8 run's in one report (reports build int8.json fp8.json).
Without --cache, INT8 ranges are calibrated on the same data first (--method, default auto; FP8: minmax).
--eval-data DIR: the whole comparison again on held-out data (same ranges and data flags).
--pin-worst K --pins-out pins.json (with --mode layerwise): the K layers whose own error is largest
(ranked by --metric) as a pins list; measured on PP-OCRv4 det as good per pinned layer as bisect's
search, which overfits a small calibration set (README, "Getting INT8 accurate").

\b
A Q/DQ MODEL (ModelOpt, ONNX Runtime's quantize_static, precision export) is compared as it is
against its float original (--reference FILE, else recovered from MODEL), tensors matched by name:
  precision compare model.qdq.onnx --reference model.onnx --data tensors/ --top 10
"""

COMPARE_GROUPS = (
    ModelArgs("precision compare model.onnx --data DIR"),
    ReferenceArgs(),
    RangesArgs(),
    RuntimeArgs(
        "onnxruntime: TensorRT emulated on CPU (default); tensorrt: real engines (needs TensorRT and a GPU).",
        "ONNX Runtime threads.",
    ),
    OutputArgs(report=True),
    MetricArgs(
        "Ranking metric: rel-l2, cosine, max-abs, mean-abs, sqnr; or a task metric (top1, mask-iou, "
        "plug-ins), added to every model output's metrics (layers are then ranked by rel-l2).",
        default="rel-l2",
    ),
    EvalDataArgs(),
    DataArgs(),  # last: its many flags close the help
)
EXPORT_GROUPS = (
    ModelArgs("precision export model.onnx --int8 --cache calib.cache -o out.onnx"),
    RangesArgs("TensorRT calibration cache (required with --int8).", calibrate=False),
    OutputArgs(
        "ONNX file to write.",
        output_required="out.onnx",
        json="Write the export summary (with the corrections' per-layer figures) as JSON to PATH; '-' = stdout.",
    ),
    DataArgs(),  # calibration data for --bias-correction / --weight-correction (never held-out data)
)


@main.command("compare", epilog=COMPARE_EPILOG)
@click.option(
    "--precision",
    "precision_name",
    type=click.Choice(["fp16", "int8", "fp16+int8", "fp8", "fp8+fp16", "both"]),
    default="both",
    show_default=True,
    help="Reduced precision(s) to compare against FP32.",
)
@click.option(
    "--placement",
    type=click.Choice(["explicit", "implicit"]),
    default="explicit",
    show_default=True,
    help="INT8 placement: explicit (TensorRT 11 / Q-DQ rules) or implicit (TensorRT 10 calibrator, pessimistic).",
)
@mha_option
@click.option(
    "--mode",
    type=click.Choice(["graphwise", "layerwise", "both"]),
    default="graphwise",
    show_default=True,
    help="graphwise: whole model reduced (errors accumulate); layerwise: each layer alone with FP32 inputs.",
)
@click.option(
    "--pins",
    "pins_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="pins.json (bisect) or a JSON list of node names kept in FP32.",
)
@click.option(
    "--top", type=click.IntRange(min=0), default=10, show_default=True, help="Worst tensors shown per run."
)
@click.option(
    "--pin-worst",
    type=click.IntRange(min=1),
    default=None,
    metavar="K",
    help="With --mode layerwise and --pins-out: write the K layers with the largest own error as pins.",
)
@click.option(
    "--pins-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSON list of the --pin-worst layers' nodes, for --pins of export, compare, bisect.",
)
@uses(*COMPARE_GROUPS)
@common_options
def compare_command(**opts: Any) -> None:
    """Per-layer error of MODEL in FP16/INT8 against FP32, every float tensor matched by name.

    Prints the worst tensors (op type, node, max/mean abs error, relative L2, cosine, SQNR, share
    of NaN/Inf) and the FP16 range pre-check.
    """
    setup_logging(opts["debug"], opts["quiet"])
    run_command(lambda: _compare(opts), debug=opts["debug"])


EXPORT_EPILOG = """\b
Examples:
  precision export det.onnx --int8 --cache calib.cache -o det.qdq.onnx
  precision export rec.onnx --int8 --cache calib.cache --pins pins.json -o rec.qdq.onnx
  precision export rec.onnx --int8 --fp16 --cache calib.cache -o rec.mixed.onnx
  precision export vit.onnx --fp8 --cache calib.cache -o vit.fp8.onnx
  precision export cls.onnx --int8 --cache calib.cache --bias-correction --data calib_imgs/ \\
      --shape x:1x3x48x192 --preset paddleocr-rec -o cls.qdq.onnx

\b
--bias-correction folds each INT8 Conv/Gemm/MatMul's mean output shift from weight rounding into
its bias (measured on --data, the calibration data); the cache does not change. Off by default:
it helps some calibrations and hurts others (BENCHMARKS.md), so measure it on held-out data.

\b
--weight-correction own|sequential refits each INT8 Conv/Gemm/MatMul's FP32 weights and bias by
ridge regression so that, on its quantized input, it reproduces its FP32 output on --data (own:
the input rounded per tensor, one FP32 pass; sequential: the input in the INT8 emulation with the
earlier layers corrected). --weight-correction-alpha sets the pull towards the original weights.
Runs before --bias-correction when both are given. Off by default (BENCHMARKS.md).

\b
--adaround chooses, for every INT8 weight, the step below or above it (instead of the nearest) so
that the layer's output on its quantized --data input is closest to FP32's (Nagel et al. 2020);
the per-channel weight scales and the biases do not change. Alone it rounds the original weights;
with --weight-correction it rounds the refitted ones. Off by default: it paid on convolutional
models whose --data looks like the deployment's inputs, with little pinned, and lost on ViT-S
(BENCHMARKS.md, "AdaRound").

\b
--weight-scales output chooses each weight channel's scale by its layer's output error on --data
(one FP32 pass): FP8 among E4M3's eight grids (data-free: the grid with the least rounding error),
INT8 among clipping ratios of max|W|. The default (auto) does so for --fp8 whenever --data is
given: over 6 splits it was better or level on each model's own metric (PP-OCRv4 rec's real text
lines: CER 0.017 -> 0.003). INT8 is mixed (ViT-S loses), so it is opt-in there (BENCHMARKS.md, "Weight
scales by output error").
  precision export rec.onnx --fp8 --cache calib.cache --weight-scales output --data calib_imgs/ \\
      --shape x:1x3x48x320 --preset paddleocr-rec -o rec.fp8.onnx
"""


@main.command("export", epilog=EXPORT_EPILOG)
@click.option("--int8", "int8", is_flag=True, help="Insert Q/DQ (TensorRT 11 explicit quantization).")
@click.option(
    "--fp8",
    "fp8",
    is_flag=True,
    help="Insert FP8 E4M3 Q/DQ instead (scale = amax / 112, per-channel weights, opset 19; depthwise/grouped, "
    ">32-element-kernel and <=16-channel Convs and ConvTranspose stay float); not with --int8.",
)
@click.option(
    "--fp16", "fp16", is_flag=True, help="Compute the unpinned rest in FP16 (Casts at FP32 boundaries)."
)
@click.option(
    "--pins",
    "pins_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="pins.json or a JSON list of node names kept in FP32.",
)
@recovery_options
@weight_scales_option
@mha_option
@uses(*EXPORT_GROUPS)
@common_options
def export_command(**opts: Any) -> None:
    """Write MODEL as a Q/DQ ONNX (zero-point 0, per-channel weights, per-tensor activations).

    The result passes onnx.checker, runs in ONNX Runtime and builds strongly typed in TensorRT 11.
    """
    setup_logging(opts["debug"], opts["quiet"])
    run_command(lambda: _export(opts), debug=opts["debug"])


EQUALIZE_EPILOG = """\b
Examples:
  precision equalize det.onnx -o det.eq.onnx
  calib run det.eq.onnx --data imgs/ --shape x:1x3x640x640 --preset paddleocr --cache det.eq.cache

\b
Cross-layer equalisation rescales the channels between Conv -> [Relu] -> Conv pairs so that the
FP32 function stays the same and INT8 ranges fit better. The result is the folded FP32 model
(BatchNorms in the weights, as TensorRT builds it): calibrate, compare, bisect, export and build
from it. PP-OCRv4 det, held out: with nothing pinned photos IoU +0.05, drawn documents level;
with the 8 worst layers pinned -0.013 (BENCHMARKS.md). For models that run fully in INT8;
measure it on your held-out data before you keep it.
"""


EQUALIZE_GROUPS = (
    ModelArgs("precision equalize model.onnx -o model.eq.onnx"),
    OutputArgs("The equalised ONNX (folded FP32).", output_required="model.eq.onnx"),
)


@main.command("equalize", epilog=EQUALIZE_EPILOG)
@uses(*EQUALIZE_GROUPS)
@common_options
def equalize_command(**opts: Any) -> None:
    """Equalise the channels between Conv -> [Relu] -> Conv pairs (FP32 function unchanged)."""
    setup_logging(opts["debug"], opts["quiet"])
    run_command(lambda: _equalize(opts), debug=opts["debug"])


add_commands(main)
main.add_command(quantize_command)


# -- bodies -----------------------------------------------------------------------------------


def load_pins(path: str | None) -> frozenset[str]:
    """Node names from a pins.json (the "bisect" document) or a plain JSON list of names."""
    from trtq.precision.pins import read_pin_nodes

    return frozenset(read_pin_nodes(path)) if path else frozenset()


def _configs(precision: str, placement: str, pins: frozenset[str], mha: str):
    from trtq.precision.emulate import EmulationConfig

    names = ["fp16", "int8"] if precision == "both" else [precision]
    return [EmulationConfig(n, placement, pins, mha) for n in names]


def _compare(opts: dict[str, Any]) -> None:
    from trtq._core.onnx_model import load_onnx, model_summary
    from trtq.precision.builds import describe_backend
    from trtq.precision.cli_common import open_data, ranges_method, read_or_calibrate
    from trtq.precision.compare import CompareHeldOut, CompareResult, compare_runs
    from trtq.precision.emulate import folded
    from trtq.precision.fp16_range import fp16_range_check, fp32_nonfinite_constants
    from trtq.precision.metrics import get_metric, is_task_metric
    from trtq.runtime import get_backend

    model, reference, ranges, runtime, out, metric, eval_data, data = resolve_groups(opts, *COMPARE_GROUPS)
    quiet = opts["quiet"] or out.json_to_stdout
    metric_name = get_metric(metric.name or "rel-l2").name
    task = None  # the task metric added to the outputs, when --metric names one
    if is_task_metric(metric_name):
        criterion = metric.criterion(threshold=0.0)  # the threshold is not used: compare only measures
        task = {"name": metric_name, "key": get_metric(metric_name).key, "params": dict(criterion.params)}
    pins = load_pins(opts.get("pins_path"))
    worst = _worst_pins_request(opts)
    proto = load_onnx(model.path)
    dataset, batch_size = open_data(proto, data, source=model.path)
    held = open_data(proto, eval_data, batch_size)[0] if eval_data is not None else None
    from trtq.precision.qdq_model import is_qdq_model

    if is_qdq_model(proto):
        if worst:
            raise InputError("--pin-worst ranks the layers of a float model; for a Q/DQ model use bisect")
        inputs = _CompareInputs(dataset, batch_size, held, data, eval_data, metric_name, task, quiet)
        return _compare_qdq(opts, proto, model, reference, runtime, out, inputs, criterion if task else None)
    if reference.path:
        raise InputError(
            f"--reference is for Q/DQ models: {model.path} has no QuantizeLinear/DequantizeLinear"
        )
    configs = _configs(opts["precision_name"], opts["placement"], pins, mha_choice(opts))
    amax = None
    if any(c.quantized for c in configs):  # from --cache or --data, never from --eval-data
        method, params = ranges_method(opts["precision_name"], ranges)
        amax = read_or_calibrate(
            proto,
            ranges.cache,
            method,
            quiet,
            len(dataset),
            lambda progress: dataset.batches(batch_size, progress=progress),
            params,
            precision=opts["precision_name"],
            method_given=ranges.method_given,
        )
    modes = ("graphwise", "layerwise") if opts["mode"] == "both" else (opts["mode"],)
    backend_label = describe_backend(runtime.backend)
    if not get_backend(runtime.backend).emulated_precision and modes != ("graphwise",):
        raise InputError(f"--backend {runtime.backend} compares whole builds: use --mode graphwise")
    t0 = time.perf_counter()
    base = folded(proto)  # folded once: compare_runs and the FP16 range check take it as it is

    def run(batches):
        with progress_bar(quiet, unit="batch") as progress:
            return compare_runs(
                base,
                batches,
                configs,
                amax=amax,
                modes=modes,
                progress=progress,
                threads=runtime.threads,
                backend=runtime.backend,
                cache_path=ranges.cache,
                output_accumulator=criterion.accumulator if task else None,
            )

    runs, observed = run(dataset.batches(batch_size))
    elapsed = time.perf_counter() - t0
    held_out = None
    if held is not None:
        t1 = time.perf_counter()
        held_runs, _ = run(held.batches(batch_size))
        held_out = CompareHeldOut(
            held.stats.to_dict(eval_data.data), held_runs, round(time.perf_counter() - t1, 3)
        )
    checks_fp16 = any(c.fp16 for c in configs)
    fp16_nonfinite = {  # tells a harmless mask fill from a wholly masked Softmax row
        r.tensor: r.metrics.get("nonfinite", 0.0)
        for run in runs
        if run.precision == "fp16" and run.mode == "graphwise"
        for r in run.layers
    }
    fp16 = (
        [i.to_dict() for i in fp16_range_check(base, amax, observed, fp16_nonfinite=fp16_nonfinite or None)]
        if checks_fp16
        else []
    )
    fp32_nonfinite = [i.to_dict() for i in fp32_nonfinite_constants(base, fold=False)] if checks_fp16 else []
    result = CompareResult(
        model_summary(proto, model.path, shapes={i.name: i.shape for i in dataset.inputs}),
        dataset.stats.to_dict(data.data),
        backend_label,
        runs,
        fp16,
        round(elapsed, 3),
        task_metric=task,
        held_out=held_out,
        fp16_range_fp32_nonfinite=fp32_nonfinite,
    )
    doc = to_jsonable(result.to_dict(created_by="precision compare"))
    if worst:
        _write_worst_pins(runs, *worst, metric_name, quiet)
    out.write_json(doc)
    if out.report:
        from trtq.reports import write_report

        write_report(out.report, [doc])
    if not quiet:
        _print_tables(result, opts["top"], metric_name)


def _reference_model(proto, reference, quiet: bool):
    """The float original of the Q/DQ ``proto``: ``--reference``, else recovered (one note line)."""
    from trtq._core.onnx_model import has_qdq_nodes, load_onnx
    from trtq.precision.qdq_model import float_original, recovery_note

    if reference.path:
        ref = load_onnx(reference.path)
        if has_qdq_nodes(ref):
            raise InputError(
                f"--reference {reference.path} has Q/DQ nodes: give the float model it was made from"
            )
        mine, theirs = _declared_outputs(proto), _declared_outputs(ref)
        clash = set(mine) != set(theirs) or any(
            mine[n]  # an output without a declared shape is not compared
            and theirs[n]
            and (
                len(mine[n]) != len(theirs[n])
                or any(a and b and a != b for a, b in zip(mine[n], theirs[n], strict=True))
            )
            for n in mine
        )
        if clash:
            raise InputError(
                f"{reference.path} is not the float original of the Q/DQ model: its outputs "
                f"{_shapes(theirs)} are not the model's {_shapes(mine)}"
            )
        return ref
    if not quiet:
        stderr_console().print(recovery_note(proto))
    return float_original(proto)


def _declared_outputs(proto) -> dict[str, list[int]]:
    """Output name -> declared dims (0 where a dim is symbolic or unknown)."""
    return {
        o.name: [d.dim_value if d.HasField("dim_value") else 0 for d in o.type.tensor_type.shape.dim]
        for o in proto.graph.output
    }


def _shapes(outputs: dict[str, list[int]]) -> str:
    return ", ".join(f"{n} [{'x'.join(str(d) if d else '?' for d in dims)}]" for n, dims in outputs.items())


def _worst_pins_request(opts: dict[str, Any]) -> tuple[int, str] | None:
    """``(K, path)`` of --pin-worst/--pins-out, checked before any work is done."""
    k, path = opts.get("pin_worst"), opts.get("pins_out")
    if k is None and path is None:
        return None
    if k is None or path is None:
        raise InputError("--pin-worst K and --pins-out FILE go together")
    if opts["mode"] == "graphwise":
        raise InputError("--pin-worst ranks each layer's own error: add --mode layerwise (or both)")
    if opts["precision_name"] == "both":
        raise InputError("--pin-worst needs one --precision (int8, fp16, ...), not both")
    return k, path


def _write_worst_pins(runs, k: int, path: str, metric: str, quiet: bool) -> None:
    from trtq._core.jsonio import write_json

    (run,) = [r for r in runs if r.mode == "layerwise"]
    nodes = list(dict.fromkeys(score.node for score in run.scores(metric)))[:k]
    write_json(path, nodes)
    if not quiet:
        click.echo(f"wrote {len(nodes)} pins (the worst layers by {metric}, layerwise) to {path}", err=True)


@dataclass(frozen=True)
class _CompareInputs:
    """What ``precision compare`` resolved before choosing the float or the Q/DQ path."""

    dataset: Any  # the --data dataset (trtq.datasets)
    batch_size: int
    held: Any  # the --eval-data dataset, or None
    data: Any  # DataArgs settings of --data
    eval_data: Any  # EvalDataArgs settings, or None
    metric_name: str
    task: dict[str, Any] | None  # the task metric block of the document, or None
    quiet: bool


def _compare_qdq(opts, proto, model, reference, runtime, out, inputs: _CompareInputs, criterion) -> None:
    """``precision compare`` of a Q/DQ model against its float original (see qdq_model)."""
    from trtq._core.onnx_model import model_summary
    from trtq.precision.compare import CompareHeldOut, CompareResult
    from trtq.precision.qdq_model import compare_qdq, qdq_precision

    dataset, batch_size, held, quiet = inputs.dataset, inputs.batch_size, inputs.held, inputs.quiet
    kind = qdq_precision(proto)
    if opts.get("cache"):
        logger.warning("--cache is not used: %s is a Q/DQ model and carries its own scales", model.path)
    if opts["precision_name"] not in ("both", kind):
        logger.warning(
            "--precision %s is not used: %s is a Q/DQ model in %s, compared as it is",
            opts["precision_name"], model.path, kind.upper(),
        )  # fmt: skip
    ref = _reference_model(proto, reference, quiet)
    acc = criterion.accumulator if criterion is not None else None
    t0 = time.perf_counter()
    with progress_bar(quiet, unit="batch") as progress:
        run = compare_qdq(
            proto,
            ref,
            dataset.batches(batch_size, progress=progress),
            threads=runtime.threads,
            output_accumulator=acc,
        )
    elapsed = time.perf_counter() - t0
    held_out = None
    if held is not None:
        t1 = time.perf_counter()
        held_run = compare_qdq(
            proto, ref, held.batches(batch_size), threads=runtime.threads, output_accumulator=acc
        )
        held_out = CompareHeldOut(
            held.stats.to_dict(inputs.eval_data.data), [held_run], round(time.perf_counter() - t1, 3)
        )
    result = CompareResult(
        model_summary(proto, model.path, shapes={i.name: i.shape for i in dataset.inputs}),
        dataset.stats.to_dict(inputs.data.data),
        "onnxruntime (Q/DQ model)",
        [run],
        [],
        round(elapsed, 3),
        task_metric=inputs.task,
        held_out=held_out,
    )
    doc = to_jsonable(result.to_dict(created_by="precision compare"))
    doc["qdq_model"] = {"reference": str(reference.path) if reference.path else None}
    if not reference.path:
        from trtq.precision.qdq_model import recovery_kind

        doc["qdq_model"]["recovered"] = recovery_kind(proto)
    out.write_json(doc)
    if out.report:
        from trtq.reports import write_report

        write_report(out.report, [doc])
    if not quiet:
        _print_tables(result, opts["top"], inputs.metric_name)


def _fmt(value: float, key: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if key == "nonfinite":
        return f"{value:.1%}" if value else "0"
    if key == "cosine":
        return f"{value:.6f}"
    if key == "sqnr_db":
        return f"{value:.1f}"
    return f"{value:.3g}"


def _output_line(m, task: dict[str, Any] | None) -> str:
    line = (
        f"cosine {_fmt(m['cosine'], 'cosine')}, rel_l2 {_fmt(m['rel_l2'], 'rel_l2')}, "
        f"max_abs {_fmt(m['max_abs'], 'max_abs')}, NaN/Inf {_fmt(m['nonfinite'], 'nonfinite')}"
    )
    if task and task["key"] in m:
        line = f"{task['name']} {_fmt(m[task['key']], 'cosine')}, " + line
    return line


def _print_tables(result, top: int, metric: str) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    from trtq.precision.metrics import METRIC_KEYS as keys

    console = Console(width=None if sys.stdout.isatty() else 200)
    for run in result.runs:
        where = _where(run)
        rank = "rel-l2" if result.task_metric else metric
        title = f"{run.precision} {run.mode}{where}: worst {min(top, len(run.layers))} of {len(run.layers)} by {rank}"
        table = Table(title=title, title_justify="left")
        for col in ("#", "op type", "node", "tensor", *keys):
            table.add_column(
                col, justify="right" if col in keys or col == "#" else "left", no_wrap=col != "node"
            )
        for rec in run.worst(top, metric):
            style = "bold red" if rec.metrics["nonfinite"] else None
            table.add_row(
                str(rec.index),
                rec.op_type,
                rec.node,
                rec.tensor,
                *(_fmt(rec.metrics[k], k) for k in keys),
                style=style,
            )
        console.print(table)
        for out in run.outputs:
            console.print(f"  output {out.tensor}: {_output_line(out.metrics, result.task_metric)}")
        if run.missing_amax:
            console.print(f"  {len(run.missing_amax)} tensor(s) had no INT8 range and stayed in float")
    if result.held_out is not None:
        used = result.held_out.data.get("images_used")
        console.print(
            f"held-out data ({result.held_out.data.get('path')}, {used} samples): model outputs vs FP32"
        )
        for run in result.held_out.runs:
            where = _where(run)
            for out in run.outputs:
                line = _output_line(out.metrics, result.task_metric)
                console.print(f"  {run.precision} {run.mode}{where}, output {out.tensor}: {line}")
    err = stderr_console()
    if any("fp16" in r.precision for r in result.runs):
        if result.fp16_range:
            err.print(f"[bold red]FP16 range: {len(result.fp16_range)} tensor(s) beyond 65504[/]")
            for issue in result.fp16_range[:10]:
                note = f" [{issue['note']}]" if issue.get("note") else ""
                err.print(
                    f"  {issue['kind']} {issue['tensor']} (node {issue['node']}): max |x| {issue['max_abs']:.4g}{note}",
                    markup=False,
                )
        else:
            err.print("FP16 range: every weight (after folding) and activation fits in FP16")
        if result.fp16_range_fp32_nonfinite:
            first = result.fp16_range_fp32_nonfinite[0]
            err.print(
                f"FP16 range: {len(result.fp16_range_fp32_nonfinite)} constant(s) already ±inf/NaN in FP32: "
                f"not findings (e.g. {first['tensor']} read by {first['node']}: {first['note']})",
                markup=False,
            )


def _where(run) -> str:
    """``, explicit placement`` (and ``, attention int8`` when the attention products are quantized)."""
    where = f", {run.placement} placement" if run.placement else ""
    return where + (", attention int8" if run.mha == "int8" else "")


def _equalize(opts: dict[str, Any]) -> None:
    from trtq._core.onnx_model import load_onnx, save_onnx
    from trtq.precision.equalize import equalize

    model, out = resolve_groups(opts, *EQUALIZE_GROUPS)
    source = load_onnx(model.path)
    require_float32(source, model.path, "equalise")
    result_model, result = equalize(source)
    save_onnx(result_model, out.output)
    if out.json:
        from trtq._core.onnx_model import model_summary
        from trtq._core.result import result_document

        doc = result_document(
            "equalize",
            backend=None,
            created_by="precision equalize",
            model=model_summary(source, model.path),
            output=str(out.output),
            **result.to_dict(),
        )
        out.write_json(doc)
    if not (opts["quiet"] or out.json_to_stdout):
        what = (
            f"{len(result.pairs)} Conv -> [Relu] -> Conv pair(s) equalised"
            if result.pairs
            else "no pair to equalise"
        )
        click.echo(f"{what}; wrote {out.output} (folded FP32: calibrate and build from it)")


def _export(opts: dict[str, Any]) -> None:
    from trtq._core.onnx_model import load_onnx, save_onnx, tensor_names
    from trtq.precision.cli_common import cache_ranges
    from trtq.precision.export import export_qdq

    if opts["int8"] and opts["fp8"]:
        raise InputError("--int8 and --fp8 are exclusive: choose one quantized type")
    if not opts["int8"] and not opts["fp8"] and not opts["fp16"]:
        raise InputError("nothing to export: give --int8 or --fp8 (with --cache) and/or --fp16")
    model, ranges, out, data = resolve_groups(opts, *EXPORT_GROUPS)
    flag = "--fp8" if opts["fp8"] else "--int8"
    if (opts["int8"] or opts["fp8"]) and not ranges.cache:
        raise InputError(f"{flag} needs --cache FILE (a TensorRT calibration cache, e.g. from 'calib run')")
    refusal = "not with --fp8" if opts["fp8"] else "give --int8 too"
    recovery = recovery_choice(opts, int8=opts["int8"], refusal=refusal)
    by_output = scales_by_output(opts["weight_scales"], "fp8" if opts["fp8"] else "int8", bool(data.data))
    if by_output and not (opts["int8"] or opts["fp8"]):
        raise InputError("--weight-scales output chooses INT8 or FP8 weight scales: give --int8 or --fp8")
    if by_output and recovery.active:
        raise InputError(WITH_OUTPUT_SCALES)
    pins = load_pins(opts.get("pins_path"))
    proto = source = load_onnx(model.path)
    qtype = "fp8" if opts["fp8"] else "int8"
    amax = (
        cache_ranges(ranges.cache, qtype, model=proto, model_path=model.path)
        if opts["int8"] or opts["fp8"]
        else {}
    )
    corrections: dict[str, Any] = {}
    batches: list = []  # the calibration data, decoded once for the corrections that read it
    needs_data = recovery.active
    if needs_data or by_output:
        from trtq.precision.cli_common import open_data

        try:
            dataset, batch_size = open_data(proto, data, source=model.path)
            with progress_bar(opts["quiet"], unit="img") as progress:
                progress(0, total=len(dataset), description="reading --data")
                batches = list(dataset.batches(batch_size, progress=progress))
        except InputError as exc:
            if needs_data or opts["weight_scales"] == "output" or opts.get("data"):
                raise
            # --weight-scales auto took a config file's data for FP8: not worth failing the export
            by_output = False
            logger.warning("FP8 weight scales from the weights alone: the data could not be read (%s)", exc)
    if recovery.active:
        proto, recovered = apply_recovery(recovery, proto, batches, amax, pins, opts["quiet"])
        corrections.update(recovered)
    scales = None
    if by_output:
        scales, corrections["weight_scales"] = choose_scales(proto, batches, amax, qtype, pins, opts["quiet"])
    try:
        qdq = export_qdq(
            proto, amax, pins, fp16=opts["fp16"], fp8=opts["fp8"], mha=mha_choice(opts), weight_scales=scales
        )
    except InputError as exc:
        if pins and "pinned node" in str(exc):  # the plan checks names on the folded model; name the file
            raise InputError(f"{opts['pins_path']}: {exc}") from exc
        raise
    q = sum(n.op_type == "QuantizeLinear" for n in qdq.graph.node)
    if (opts["int8"] or opts["fp8"]) and not q:
        foreign = sorted(set(amax) - tensor_names(proto))
        why = (
            f"{ranges.cache} names tensors it does not have ('{foreign[0]}'): a cache of another model?"
            if foreign
            else f"no layer runs in {'FP8' if opts['fp8'] else 'INT8'}"
            + (" (or every such layer is pinned)" if pins else "")
        )
        raise InputError(f"{out.output} not written: nothing to quantize in {model.path}: {why}")
    save_onnx(qdq, out.output)
    if not opts["quiet"]:
        dq = sum(n.op_type == "DequantizeLinear" for n in qdq.graph.node)
        stderr_console().print(
            f"wrote {out.output}: {q} {'FP8' if opts['fp8'] else 'INT8'} activation Q/DQ pairs, "
            f"{dq - q} weight DequantizeLinear, "
            f"{len(pins)} pinned node(s) in FP32{', rest FP16' if opts['fp16'] else ''}"
        )
    if out.json:
        from trtq._core.jsonio import to_jsonable
        from trtq._core.onnx_model import model_summary
        from trtq._core.result import result_document

        doc = result_document(
            "export",
            backend="onnxruntime" if corrections else None,
            created_by="precision export",
            model=model_summary(source, model.path),
            output=str(out.output),
            pins=sorted(pins),
            **corrections,
        )
        out.write_json(to_jsonable(doc))
