"""``precision bisect`` and ``precision pin``: find the FP32 pin set, then apply it (click commands).

Thin layer over :func:`trtq.precision.bisect.run_bisect` and :mod:`trtq.precision.pins`; the
``precision`` group in :mod:`trtq.precision.cli` adds these two commands with
:func:`add_commands`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from trtq._core.args import ModelArgs, OutputArgs, RuntimeArgs, resolve_groups, uses
from trtq._core.cli import (
    common_options,
    progress_bar,
    run_command,
    setup_logging,
    stderr_console,
)
from trtq._core.config import checked, find_config
from trtq._core.errors import CheckFailed, InputError
from trtq.calib.cli_options import RangesArgs
from trtq.datasets.cli_options import DataArgs, EvalDataArgs
from trtq.precision.cli_common import (
    choose_scales,
    mha_choice,
    mha_option,
    scales_by_output,
    weight_scales_option,
)
from trtq.precision.cli_options import MetricArgs, ReferenceArgs
from trtq.runtime.build import needs_ranges

EPILOG_BISECT = """\b
Examples:
  precision bisect det.onnx --data imgs/ --shape x:1x3x640x640 --preset paddleocr \\
      --precision int8 --cache calib.cache -o pins.json
  precision bisect rec.onnx --data crops/ --shape x:1x3x48x320 --preset paddleocr-rec \\
      --precision int8 --check 'python check_text.py {model}' -o pins.json --report bisect.html
  precision bisect model.onnx --data tensors/ --precision fp16 --metric rel-l2 --threshold 0.01 \\
      --strategy contiguous --max-evals 30 -o pins.json --json bisect.json
  precision bisect model.onnx --data imgs/ --precision int8 --method percentile -o pins.json
  precision bisect det.onnx --data imgs/ --eval-data held/ --shape x:1x3x640x640 --preset paddleocr \\
      --precision int8 --metric mask-iou --binarize 0.3 --threshold 0.97 -o pins.json

\b
Criterion: --metric cosine|rel-l2|max-abs|sqnr, or a task metric: top1 (argmax over the last
axis agrees with FP32), mask-iou (outputs binarised at --binarize T, IoU pooled over the data),
plug-ins (trtq.metrics entry points); with --threshold (default cosine >= 0.999 on
every final output, against FP32 on ONNX Runtime), or --check CMD: a shell command that exits 0
when the model is good. In CMD, {model} is the candidate ONNX (also $TRTQ_MODEL) and {pins} a
JSON file listing the pinned node names (also $TRTQ_PINS). The candidate is TensorRT's build
emulated in ONNX: run it with ONNX Runtime's graph optimisations off (ORT_DISABLE_ALL), as
ONNX Runtime's own Q/DQ fusions change its numbers.

\b
--eval-data DIR: the search runs on --data; the answer and the no-pins baseline are then judged
on the held-out data too (printed, "held_out" in pins.json). INT8 ranges come from --cache or
--data, never from the held-out data.

\b
A Q/DQ MODEL (ModelOpt, ONNX Runtime's quantize_static, precision export) is searched over its
own Q/DQ groups: a candidate takes the Q/DQ off a layer's inputs (that layer runs in float), judged
against --reference FILE (else the float model recovered from MODEL); --cache/--precision unused:
  precision bisect model.qdq.onnx --reference model.onnx --data tensors/ -o pins.json
  precision pin model.qdq.onnx --pins pins.json --data tensors/ -o fixed.onnx

\b
Exit codes: 0 a passing set was found (or nothing needs pinning); 1 even all layers in FP32 fail,
or the --max-evals budget ran out (pins.json then holds the smallest passing set seen); 2 bad
input.
"""

EPILOG_PIN = """\b
Examples:
  precision pin det.onnx --pins pins.json -o det_pinned.onnx
  precision pin det.onnx --pins pins.json --cache calib.cache --data imgs/ -o det_pinned.onnx
  precision pin det.onnx --pins pins.json -o det_pinned.onnx --json pin.json

\b
Writes a Q/DQ (INT8) / Cast (FP16) ONNX with the pinned layers left in FP32 (ONNX Runtime,
TensorRT 11), then runs it on the data against FP32 with the criterion bisect used, and the
same pins through the TensorRT emulation, and prints both results. For TensorRT 10 the pins are
build-time precision constraints instead: the TensorRT backend sets the layers of the pinned
nodes (pins.json "members") to FP32 with OBEY_PRECISION_CONSTRAINTS. Data, cache and settings
default to those recorded in pins.json (flags > pins.json > config file). With --eval-data (or
the held-out folder recorded in pins.json) both are judged on the held-out data as well. Exit
code 1 when any result fails the criterion.
"""


_METRIC_HELP = (
    "Criterion on every final output vs FP32 (default cosine): cosine, rel-l2, max-abs, sqnr, "
    "top1, mask-iou (with --binarize T), or a plug-in's (trtq.metrics entry points)."
)

BISECT_GROUPS = (
    ModelArgs("precision bisect model.onnx --data DIR -o pins.json"),
    ReferenceArgs(),
    RangesArgs(),
    RuntimeArgs(
        "onnxruntime: TensorRT emulated on CPU (default); tensorrt: real engines (TensorRT + GPU).",
        "ONNX Runtime threads.",
    ),
    OutputArgs("pins.json to write.", output_required="pins.json", report=True),
    MetricArgs(_METRIC_HELP),
    EvalDataArgs(),
    DataArgs(),  # last: its many flags close the help
)
PIN_GROUPS = (
    ModelArgs("precision pin model.onnx --pins pins.json -o pinned.onnx"),
    ReferenceArgs(),
    RangesArgs(method_help="Without a cache: calibrate on the data (default: as in pins.json, else auto)."),
    RuntimeArgs(None, "ONNX Runtime threads."),
    OutputArgs("Pinned ONNX to write.", output_required="pinned.onnx"),
    MetricArgs(_METRIC_HELP + " Default: as in pins.json."),
    EvalDataArgs(),
    DataArgs(),  # last: its many flags close the help
)


def _criterion_options(fn):
    opts = [
        click.option(
            "--threshold",
            type=float,
            default=None,
            help="Pass when metric >= T (cosine, sqnr, top1, mask-iou) or <= T (rel-l2, max-abs). "
            "Defaults: cosine 0.999, rel-l2 0.01, max-abs 0.01, sqnr 30 dB, top1 0.99, mask-iou 0.95.",
        ),
        click.option(
            "--check",
            "check_cmd",
            metavar="CMD",
            default=None,
            help="Shell command deciding pass (exit 0) / fail; {model} and {pins} are substituted.",
        ),
        click.option(
            "--check-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="Seconds before a --check run counts as a failure.",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


@click.command("bisect", epilog=EPILOG_BISECT)
@click.option(
    "--precision",
    "precision_name",
    type=click.Choice(["fp16", "int8", "fp16+int8", "fp8", "fp8+fp16"]),
    default=None,
    help="Reduced precision to repair (default int8).",
)
@click.option(
    "--placement",
    type=click.Choice(["explicit", "implicit"]),
    default=None,
    help="INT8 placement emulated: explicit (TensorRT 11 / Q-DQ, default) or implicit (TensorRT 10, pessimistic).",
)
@mha_option
@click.option(
    "--strategy",
    default=None,
    help="Search strategy: ranked (default), prefix (ranked without minimising: quick), contiguous, linear, "
    "emulation-first (with --backend tensorrt: search on the emulation, confirm with the engine).",
)
@_criterion_options
@click.option("--max-evals", type=click.IntRange(min=2), default=None, help="Evaluation budget (default 64).")
@click.option(
    "--full-evals",
    is_flag=True,
    default=None,
    help="Run every batch even when an evaluation can no longer pass (default: stop it early; "
    "the trace then shows the best metric it could still reach).",
)
@uses(*BISECT_GROUPS)
@common_options
def bisect_command(**opts: Any) -> None:
    """Find the smallest set of layers to keep in FP32 so MODEL passes in FP16/INT8.

    Evaluates nothing pinned, everything pinned, then the strategy's candidates (each one emulated
    build + run on --data, cached by pin set), and writes pins.json.
    """
    setup_logging(opts["debug"], opts["quiet"])
    run_command(lambda: _bisect(opts), debug=opts["debug"])


@click.command("pin", epilog=EPILOG_PIN)
@click.option(
    "--pins", "pins_file", type=click.Path(dir_okay=False), required=True, help="pins.json from bisect."
)
@click.option(
    "--precision",
    "precision_name",
    type=click.Choice(["fp16", "int8", "fp16+int8", "fp8", "fp8+fp16"]),
    default=None,
    help="Default: the precision pins.json was made for.",
)
@mha_option
@weight_scales_option
@_criterion_options
@uses(*PIN_GROUPS)
@common_options
def pin_command(**opts: Any) -> None:
    """Apply pins.json to MODEL: write the ONNX with those layers in FP32, evaluate it once more."""
    setup_logging(opts["debug"], opts["quiet"])
    run_command(lambda: _pin(opts), debug=opts["debug"])


EPILOG_MODELOPT = """\b
Examples:
  precision modelopt-args pins.json
  eval "python -m modelopt.onnx.quantization --onnx_path model.onnx --quantize_mode int8 \\
      --calibration_cache_path calib.cache $(precision modelopt-args pins.json --tool ptq)"
  eval "python -m modelopt.onnx.autocast --onnx_path model.onnx \\
      $(precision modelopt-args pins.json --tool autocast)"
  precision modelopt-args pins.json --json - | jq -r '.ptq[]'

\b
Each pinned ONNX node (pins.json "members") is one exact-match regex ^name$ (re.escape), as both
ModelOpt tools match --nodes_to_exclude with re.match; the line is shell-quoted (hence eval).
A 'calib run' cache is ModelOpt's
--calibration_cache_path input as it is (TensorRT's text format).
"""


@click.command("modelopt-args", epilog=EPILOG_MODELOPT)
@click.argument("pins_file", type=click.Path(dir_okay=False))
@click.option(
    "--tool",
    type=click.Choice(["ptq", "autocast", "both"]),
    default="both",
    show_default=True,
    help="ptq: one line for modelopt.onnx.quantization; autocast: for modelopt.onnx.autocast; "
    "both: one labelled line each.",
)
@uses(
    OutputArgs(
        "Write the arguments to FILE instead of stdout.",
        json="Write the pinned nodes and both argument lists as JSON to PATH; '-' = stdout (then no text).",
    )
)
@common_options
def modelopt_args_command(**opts: Any) -> None:
    """Print pins.json as NVIDIA ModelOpt arguments (--nodes_to_exclude REGEX...)."""
    setup_logging(opts["debug"], opts["quiet"])
    run_command(lambda: _modelopt_args(opts), debug=opts["debug"])


def _modelopt_args(opts: dict[str, Any]) -> None:
    import shlex

    from trtq._core.atomic import atomic_write_text
    from trtq._core.result import result_document
    from trtq.precision.pins import modelopt_args, pinned_nodes, read_pins

    (out,) = resolve_groups(opts, OutputArgs(""))
    doc = read_pins(opts["pins_file"])
    args = modelopt_args(doc)
    if opts["tool"] == "both":
        text = "".join(f"# {tool}\n{shlex.join(args[tool])}\n" for tool in ("ptq", "autocast"))
    else:
        text = shlex.join(args[opts["tool"]]) + "\n"
    if out.output:
        atomic_write_text(out.output, text)
    elif not out.json_to_stdout:
        click.echo(text, nl=False)
    out.write_json(
        result_document(
            "modelopt-args",
            backend=None,
            created_by="precision modelopt-args",
            pins=str(opts["pins_file"]),
            nodes=pinned_nodes(doc),
            **{tool: args[tool] for tool in ("ptq", "autocast")},
        )
    )


def add_commands(group: click.Group) -> None:
    """Add ``bisect``, ``pin`` and ``modelopt-args`` to the ``precision`` click group."""
    group.add_command(bisect_command)
    group.add_command(pin_command)
    group.add_command(modelopt_args_command)


# -- bodies ---------------------------------------------------------------------------------------


def _load_data(proto, data, quiet: bool, batch_size: int | None = None, source: str | None = None):
    """Open the data for the model and read every batch into memory (bisect runs them many times);
    ``batch_size``: that of the search data, for held-out data; ``source``: the model's file."""
    from trtq.precision.cli_common import open_data

    dataset, batch_size = open_data(proto, data, batch_size, source)
    with progress_bar(quiet, unit="img") as progress:
        batches = list(dataset.batches(batch_size, progress=progress))
    return batches, dataset.stats.to_dict(data.data), batch_size


def _amax(proto, batches, precision: str, ranges, quiet: bool):
    if not needs_ranges(precision):
        return None
    from trtq.precision.cli_common import ranges_method, read_or_calibrate

    method, params = ranges_method(precision, ranges)
    total = sum(len(next(iter(b.values()))) for b in batches)
    return read_or_calibrate(
        proto,
        ranges.cache,
        method,
        quiet,
        total,
        batches,
        params,
        precision=precision,
        method_given=ranges.method_given,
    )


def _criterion(opts: dict, metric, settings: dict | None = None):
    """The criterion of the flags (``metric``: the :class:`MetricArgs` settings), else the one
    recorded in pins.json ``settings`` (its metric parameters too), else cosine >= 0.999."""
    from trtq.precision.evaluate import CheckCommand, metric_criterion

    settings = settings or {}
    if opts.get("check_cmd"):
        if metric.name or metric.params or opts.get("threshold") is not None:
            raise InputError("give either --check CMD or --metric/--threshold, not both")
        return CheckCommand(opts["check_cmd"], opts.get("check_timeout"))
    recorded = settings.get("metric")
    flags = metric.name or metric.params or opts.get("threshold") is not None
    if not flags and recorded == "check" and settings.get("check"):
        return CheckCommand(settings["check"], opts.get("check_timeout"))
    name = metric.name or (recorded if recorded not in (None, "check") else "cosine")
    same = name == recorded
    params = {**(settings.get("metric_params") or {}), **metric.params} if same else dict(metric.params)
    threshold = opts.get("threshold")
    if threshold is None and same:
        threshold = settings.get("threshold")
    return metric_criterion(name, threshold, params)


def _write_report(path: str, doc: dict) -> None:
    from trtq.reports import write_report

    write_report(path, [doc])


# The data flags recorded in pins.json so that `precision pin` reads the same data (not workers,
# which only sets decode threads, nor dtype, which the model decides).
_NOT_RECORDED = ("workers", "dtype")


def _bisect(opts: dict[str, Any]) -> None:
    from trtq._core.onnx_model import load_onnx, model_summary
    from trtq.precision.bisect import DEFAULT_MAX_EVALS, run_bisect
    from trtq.precision.cli_common import ranges_method
    from trtq.precision.pins import write_pins
    from trtq.precision.strategies import get_strategy

    config = find_config()
    model, reference, ranges, runtime, out, metric, eval_data, data = resolve_groups(
        opts, *BISECT_GROUPS, config=config
    )
    precision = opts.get("precision_name") or checked("precision", config[0].get("precision")) or "int8"
    strategy = opts.get("strategy") or "ranked"
    get_strategy(strategy)  # unknown names fail before any work
    criterion = _criterion(opts, metric)
    if eval_data is not None and not criterion.needs_outputs:
        raise InputError(
            "--eval-data needs a metric criterion: a --check command judges the model on its own data"
        )
    quiet = opts["quiet"] or out.json_to_stdout
    proto = load_onnx(model.path)
    batches, data_block, batch_size = _load_data(proto, data, quiet, source=model.path)
    held, held_block = (None, None)
    if eval_data is not None:
        held, held_block, _ = _load_data(proto, eval_data, quiet, batch_size)
    from trtq.precision.qdq_model import is_qdq_model, run_bisect_qdq

    qdq_input = is_qdq_model(proto)
    if reference.path and not qdq_input:
        raise InputError(
            f"--reference is for Q/DQ models: {model.path} has no QuantizeLinear/DequantizeLinear"
        )
    if qdq_input and held is not None:
        raise InputError("--eval-data is not supported yet for a Q/DQ MODEL")
    amax = None if qdq_input else _amax(proto, batches, precision, ranges, quiet)  # never --eval-data
    if qdq_input:
        from trtq.precision.cli import _reference_model

        ref = _reference_model(proto, reference, quiet)
        with progress_bar(quiet, unit="eval") as progress:
            result = run_bisect_qdq(
                proto,
                batches,
                reference=ref if reference.path else None,
                criterion=criterion,
                strategy=strategy,
                max_evals=opts.get("max_evals") or DEFAULT_MAX_EVALS,
                threads=runtime.threads,
                early_stop=not opts.get("full_evals"),
                progress=progress,
                sources={
                    "reference": str(Path(reference.path).resolve()) if reference.path else None,
                    "data_options": {k: v for k, v in data.flags.items() if k not in _NOT_RECORDED},
                },
            )
    else:
        with progress_bar(quiet, unit="eval") as progress:
            result = run_bisect(
                proto,
                batches,
                precision=precision,
                criterion=criterion,
                strategy=strategy,
                max_evals=opts.get("max_evals") or DEFAULT_MAX_EVALS,
                amax=amax,
                placement=opts.get("placement") or "explicit",
                mha=mha_choice(opts),
                backend=runtime.backend,
                threads=runtime.threads,
                early_stop=not opts.get("full_evals"),
                progress=progress,
                sources={
                    "cache": str(Path(ranges.cache).resolve()) if ranges.cache else None,
                    "calib_method": None
                    if ranges.cache or not needs_ranges(precision)
                    else ranges_method(precision, ranges)[0],
                    "data_options": {k: v for k, v in data.flags.items() if k not in _NOT_RECORDED},
                    "eval_data": eval_data.data if eval_data is not None else None,
                },
                held_out=held,
            )
    if result.held_out is not None:
        result.held_out["data"] = held_block
    shapes = {name: tuple(a.shape) for name, a in batches[0].items()} if batches else None
    doc = result.to_json(
        model=model_summary(proto, model.path, shapes=shapes), data=data_block, created_by="precision bisect"
    )
    write_pins(out.output, doc)
    out.write_json(doc)
    if out.report:
        _write_report(out.report, doc)
    if not quiet:
        _print_result(result, out.output)
    if result.verdict in ("cannot-pass", "budget-exhausted"):
        raise CheckFailed(result.summary())


def _print_result(result, pins_path: str) -> None:
    from rich.table import Table

    console = stderr_console()
    trace = Table(title="evaluations", title_justify="left", show_edge=False)
    staged = any(t.stage for t in result.trace)  # emulation-first: emulation rows, then engine rows
    for column in ("#", *(("stage",) if staged else ()), "phase", "pinned", "metric", "result", "time s"):
        trace.add_column(column, justify="right" if column not in ("stage", "phase", "result") else "left")
    bound = ""  # a stopped-early row shows the best metric it could still have reached
    if result.settings.get("metric") not in (None, "check"):
        from trtq.precision.metrics import get_metric

        bound = "≤ " if get_metric(result.settings["metric"]).higher_is_better else "≥ "
    for t in result.trace:
        metric = "n/a" if t.metric is None or math.isnan(t.metric) else f"{t.metric:.6g}"
        if t.stopped_early:
            metric = bound + metric
        verdict = ("[green]pass[/green]" if t.passed else "[red]fail[/red]") + (
            " (cached)" if t.cached else " (stopped early)" if t.stopped_early else ""
        )
        stage = (t.stage or "",) if staged else ()
        trace.add_row(str(t.eval), *stage, t.phase, str(t.set_size), metric, verdict, f"{t.time_s:.2f}")
    console.print(trace)
    if result.pins:
        pins = Table(
            title=f"layers kept in FP32 ({len(result.pins)} of {result.layers})", title_justify="left"
        )
        for column in ("node", "op", "output tensor", "layerwise error"):
            pins.add_column(column)
        for layer in result.pins:
            error = "n/a" if layer.error is None else f"{layer.error:.4g}"
            pins.add_row(layer.node, layer.op_type, layer.tensor, error)
        console.print(pins)
    colour = "green" if result.verdict in ("found", "already-passes") else "red"
    console.print(f"[{colour}]{result.verdict}[/{colour}]: {result.summary()}")
    if result.held_out is not None:
        console.print(_held_out_line(result.held_out, result.criterion))
    engine = (
        f", {result.engine_evaluations} of them engine builds"
        if result.engine_evaluations is not None
        else ""
    )
    console.print(f"wrote {pins_path} ({result.evaluations} evaluations{engine}, {result.wall_s:.1f} s)")


def _held_out_line(held: dict[str, Any], criterion: str) -> str:
    """One line: the answer and the no-pins baseline on the held-out data."""

    def verdict(passed: bool) -> str:
        return "[green]pass[/green]" if passed else "[red]fail[/red]"

    data = held.get("data") or {}
    where = f"{data.get('path')}, {data.get('images_used')} samples" if data else "held-out data"
    return (
        f"held-out ({where}): {criterion}: {_num(held['metric'])} {verdict(held['passed'])} with these pins; "
        f"{_num(held['baseline_metric'])} {verdict(held['baseline_passed'])} without pins"
    )


def _num(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.6g}"


def _pin_document(backend, proto, model_path, batches, data_block, pins_file, out_path, doc, check, **extra):
    """The ``kind = "pin"`` document of ``precision pin`` (float and Q/DQ models alike)."""
    from trtq._core.onnx_model import model_summary
    from trtq._core.result import result_document

    shapes = {n: tuple(a.shape) for n, a in batches[0].items()} if batches else None
    return result_document(
        "pin",
        backend=backend,
        created_by="precision pin",
        model=model_summary(proto, model_path, shapes=shapes),
        data=data_block,
        pins=str(pins_file),
        output=str(out_path),
        pinned_layers=len(doc.get("pins") or []),
        **{k: v for k, v in extra.items() if k != "held_out"},
        **check.to_dict(),
        bisect_metric=doc.get("final_metric"),
        **({"held_out": extra["held_out"]} if "held_out" in extra else {}),
    )


def _pin(opts: dict[str, Any]) -> None:
    from trtq._core.onnx_model import load_onnx, save_onnx
    from trtq.precision.bisect import _fmt
    from trtq.precision.pins import pinned_nodes, read_pins
    from trtq.precision.verify_pins import verify_pins

    doc = read_pins(opts["pins_file"])
    settings = doc.get("settings") or {}
    precision = opts.get("precision_name") or settings.get("precision") or "int8"
    given = {k: v for k, v in opts.items() if v not in (None, ())}
    # what pins.json records stands between the config file and the flags
    recorded = {
        **(settings.get("data_options") or {}),
        "batch_size": settings.get("batch_size"),
        "cache": settings.get("cache"),
        "method": settings.get("calib_method"),
        "eval_data": settings.get("eval_data"),
        "reference": settings.get("reference"),
    }
    merged = {**{k: v for k, v in recorded.items() if v is not None}, **given}
    if "shape" in merged:
        merged["shape"] = tuple(merged["shape"])
    config = find_config()
    model, reference, ranges, runtime, out, metric, eval_data, data = resolve_groups(
        merged, *PIN_GROUPS, config=config
    )
    if ranges.cache and not opts.get("method") and "method" not in config[0]:
        import dataclasses

        # the method pins.json records is how bisect calibrated; a cache's ranges are read as
        # export reads them (FP8: each tensor's largest |x| from the histograms beside it)
        ranges = dataclasses.replace(ranges, method_given=False)
    out_path = out.output
    if not data.data:
        raise InputError(
            f"no data to evaluate the pinned model on: give --data DIR ({opts['pins_file']} records none)"
        )
    recorded_cache = settings.get("cache")
    if recorded_cache and not opts.get("cache") and not Path(recorded_cache).is_file():
        raise InputError(
            f"{opts['pins_file']} names the calibration cache {recorded_cache}, which is gone: give --cache"
        )
    quiet = opts["quiet"] or out.json_to_stdout
    proto = load_onnx(model.path)
    nodes = pinned_nodes(doc)
    batches, data_block, batch_size = _load_data(proto, data, quiet, source=model.path)
    from trtq.precision.qdq_model import is_qdq_model

    if settings.get("qdq_model") or is_qdq_model(proto):
        return _pin_qdq(
            opts,
            doc,
            proto,
            model,
            reference,
            runtime,
            out,
            metric,
            settings,
            nodes,
            batches,
            data_block,
            quiet,
        )
    if not ranges.cache and needs_ranges(precision) and settings.get("amax") and not opts.get("method"):
        amax = settings["amax"]  # the ranges the bisect ran with, recorded in pins.json
    else:
        amax = _amax(proto, batches, precision, ranges, quiet)
    criterion = _criterion(opts, metric, settings)
    if eval_data is not None and not criterion.needs_outputs:
        raise InputError(
            "--eval-data needs a metric criterion: a --check command judges the model on its own data"
        )

    scales, scales_doc = _pin_weight_scales(opts, proto, batches, amax, precision, nodes, quiet)

    def verify(on_batches):  # the ranges and the weight scales always come from --cache / --data / pins.json
        return verify_pins(
            proto,
            nodes,
            on_batches,
            criterion,
            precision=precision,
            placement=settings.get("placement") or "explicit",
            mha=mha_choice(opts, settings),
            amax=amax,
            threads=runtime.threads,
            source=str(opts["pins_file"]),
            weight_scales=scales,
        )

    check = verify(batches)
    held = None
    if eval_data is not None:
        held_batches, held_block, _ = _load_data(proto, eval_data, quiet, batch_size)
        held_check = verify(held_batches)
        held = {"data": held_block, **held_check.to_dict()}
    save_onnx(check.model, out_path)
    result, emulated, passed = check.applied, check.emulated, check.passed
    out.write_json(
        _pin_document(
            "onnxruntime",  # the written model and the emulation both run on ONNX Runtime
            proto,
            model.path,
            batches,
            data_block,
            opts["pins_file"],
            out_path,
            doc,
            check,
            **({"held_out": held} if held is not None else {}),
            **scales_doc,
        )
    )
    if not quiet:
        console = stderr_console()
        console.print(f"wrote {out_path}: {len(nodes)} node(s) in FP32, the rest {precision}")
        for label, r in (("written model on ONNX Runtime", result), ("TensorRT emulation", emulated)):
            value = "n/a" if r.metric is None else f"{r.metric:.6g}"
            colour = "green" if r.passed else "red"
            verdict = "pass" if r.passed else "fail"
            note = f" [{r.note}]" if r.note else ""
            console.print(f"[{colour}]{verdict}[/{colour}] {label}: {criterion.describe()}: {value}{note}")
        if held is not None:
            for label, key in (("written model", ""), ("TensorRT emulation", "emulated_")):
                ok = held["applied_passed"] if not key else held["emulated_passed"]
                colour, verdict = ("green", "pass") if ok else ("red", "fail")
                console.print(
                    f"[{colour}]{verdict}[/{colour}] held-out data ({held['data'].get('path')}), {label}: "
                    f"{_num(held[key + 'metric'])}"
                )
    if not passed:
        raise CheckFailed(
            f"the pinned model fails {criterion.describe()} "
            f"(written model: {_fmt(result.metric)}, emulation: {_fmt(emulated.metric)})"
        )
    if held is not None and not held["passed"]:
        raise CheckFailed(
            f"the pinned model fails {criterion.describe()} on the held-out data "
            f"(written model: {_fmt(held['metric'])}, emulation: {_fmt(held['emulated_metric'])})"
        )


def _pin_weight_scales(opts, proto, batches, amax, precision: str, nodes, quiet: bool):
    """``--weight-scales`` for ``pin``: ``(scales or None, {"weight_scales": report} or {})``,
    chosen on the --data batches (never the held-out ones), the pins left out."""
    if not scales_by_output(opts.get("weight_scales") or "auto", precision, True):
        return None, {}
    if "int8" not in precision and "fp8" not in precision:
        raise InputError(
            f"--weight-scales output chooses INT8 or FP8 weight scales; the precision is {precision}"
        )
    qtype = "fp8" if "fp8" in precision else "int8"
    scales, report = choose_scales(proto, batches, amax, qtype, nodes, quiet)
    return scales, {"weight_scales": report}


def _pin_qdq(
    opts, doc, proto, model, reference, runtime, out, metric, settings, nodes, batches, data_block, quiet
):
    """``precision pin`` of a Q/DQ model: take the pinned groups' Q/DQ off, write the repaired
    model atomically, judge it against the float original (--reference, else recovered)."""
    from trtq._core.onnx_model import load_onnx, save_onnx
    from trtq.precision.bisect import _fmt
    from trtq.precision.qdq_model import verify_qdq_pins

    if reference.path and not Path(reference.path).is_file():
        raise InputError(f"the reference model {reference.path} is gone: give --reference FILE")
    if reference.path:
        ref = load_onnx(reference.path)
    else:
        from trtq.precision.cli import _reference_model

        ref = _reference_model(proto, reference, quiet)
    criterion = _criterion(opts, metric, settings)
    check = verify_qdq_pins(
        proto,
        nodes,
        batches,
        criterion,
        reference=ref,
        threads=runtime.threads,
        source=str(opts["pins_file"]),
    )
    save_onnx(check.model, out.output)
    r = check.applied
    out.write_json(
        _pin_document(
            "onnxruntime (Q/DQ model)",
            proto,
            model.path,
            batches,
            data_block,
            opts["pins_file"],
            out.output,
            doc,
            check,
            qdq_model=True,
            reference=str(reference.path) if reference.path else None,
        )
    )
    if not quiet:
        console = stderr_console()
        console.print(f"wrote {out.output}: Q/DQ taken off {len(nodes)} layer(s), the rest as given")
        colour, verdict = ("green", "pass") if r.passed else ("red", "fail")
        console.print(
            f"[{colour}]{verdict}[/{colour}] repaired model on ONNX Runtime: {criterion.describe()}: {_num(r.metric)}"
        )
    if not r.passed:
        raise CheckFailed(f"the repaired model fails {criterion.describe()} ({_fmt(r.metric)})")
