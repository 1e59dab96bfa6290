"""``precision``: per-layer FP16/INT8 error (compare), Q/DQ export, and (from cli_bisect) bisect/pin.

Commands are thin: parse flags, build an :class:`~trtq.precision.emulate.EmulationConfig`, call
:mod:`trtq.precision.compare` / :mod:`trtq.precision.export`, render the result.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import click

from trtq._core.cli import (
    backend_option,
    common_options,
    progress_bar,
    run_command,
    setup_logging,
    stderr_console,
)
from trtq._core.config import find_config
from trtq._core.errors import InputError
from trtq._core.jsonio import to_jsonable, write_json
from trtq.datasets.cli_options import data_options
from trtq.precision.cli_bisect import add_commands

logger = logging.getLogger(__name__)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  precision compare det.onnx --data imgs/ --precision both --top 15
  precision compare rec.onnx --data crops/ --precision int8 --cache calib.cache --mode layerwise
  precision export det.onnx --int8 --cache calib.cache --pins pins.json -o det.qdq.onnx
  precision bisect rec.onnx --data crops/ --precision int8 --cache calib.cache -o pins.json
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

\b
--precision both = fp16 and int8, each against FP32, in one pass over the data.
Without --cache, INT8 ranges are calibrated on the same data first (entropy2).
"""


@main.command("compare", epilog=COMPARE_EPILOG)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--precision",
    "precision_name",
    type=click.Choice(["fp16", "int8", "fp16+int8", "both"]),
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
@click.option(
    "--mode",
    type=click.Choice(["graphwise", "layerwise", "both"]),
    default="graphwise",
    show_default=True,
    help="graphwise: whole model reduced (errors accumulate); layerwise: each layer alone with FP32 inputs.",
)
@click.option(
    "--cache",
    "cache_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TensorRT INT8 calibration cache.",
)
@click.option(
    "--calib-method", default="entropy2", show_default=True, help="Without --cache: method to calibrate with."
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
    "--metric",
    default="rel-l2",
    show_default=True,
    help="Ranking metric: rel-l2, cosine, max-abs, mean-abs, sqnr.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Samples per batch (default: the model's static batch, else 1).",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime threads.")
@backend_option("onnxruntime: TensorRT emulated on CPU; tensorrt: real engines (needs TensorRT and a GPU).")
@click.option(
    "--json",
    "json_path",
    default=None,
    help="Write the full result (docs/SCHEMA.md, kind compare) here; '-' = stdout.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write an HTML report here.",
)
@common_options
@data_options
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
"""


@main.command("export", epilog=EXPORT_EPILOG)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--int8", "int8", is_flag=True, help="Insert Q/DQ (TensorRT 11 explicit quantization).")
@click.option(
    "--fp16", "fp16", is_flag=True, help="Compute the unpinned rest in FP16 (Casts at FP32 boundaries)."
)
@click.option(
    "--cache",
    "cache_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TensorRT calibration cache (required with --int8).",
)
@click.option(
    "--pins",
    "pins_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="pins.json or a JSON list of node names kept in FP32.",
)
@click.option(
    "-o", "--output", "out_path", type=click.Path(dir_okay=False), required=True, help="ONNX file to write."
)
@common_options
def export_command(**opts: Any) -> None:
    """Write MODEL as a Q/DQ ONNX (zero-point 0, per-channel weights, per-tensor activations).

    The result passes onnx.checker, runs in ONNX Runtime and builds strongly typed in TensorRT 11.
    """
    setup_logging(opts["debug"], opts["quiet"])
    run_command(lambda: _export(opts), debug=opts["debug"])


add_commands(main)


# -- bodies -----------------------------------------------------------------------------------


def load_pins(path: str | None) -> frozenset[str]:
    """Node names from a pins.json (the "bisect" document) or a plain JSON list of names."""
    from trtq.precision.pins import read_pin_nodes

    return frozenset(read_pin_nodes(path)) if path else frozenset()


def _configs(precision: str, placement: str, pins: frozenset[str]):
    from trtq.precision.emulate import EmulationConfig

    names = ["fp16", "int8"] if precision == "both" else [precision]
    return [EmulationConfig(n, placement, pins) for n in names]


def _amax_for(opts: dict[str, Any], proto, dataset, batch_size: int, need: bool, quiet: bool):
    if not need:
        return None
    from trtq.precision.cli_common import read_or_calibrate

    return read_or_calibrate(
        proto,
        opts.get("cache_path"),
        opts.get("calib_method") or "entropy2",
        quiet,
        len(dataset),
        lambda progress: dataset.batches(batch_size, progress=progress),
    )


def _compare(opts: dict[str, Any]) -> None:
    from trtq._core.onnx_model import load_onnx, model_summary
    from trtq.precision.builds import describe_backend
    from trtq.precision.cli_common import open_data
    from trtq.precision.compare import CompareResult, compare_runs
    from trtq.precision.emulate import folded
    from trtq.precision.fp16_range import fp16_range_check
    from trtq.precision.metrics import get_metric
    from trtq.runtime import get_backend

    quiet = opts["quiet"] or opts.get("json_path") == "-"
    get_metric(opts["metric"])
    pins = load_pins(opts.get("pins_path"))
    config, config_path = find_config()
    proto = load_onnx(opts["model"])
    dataset, batch_size, data_path = open_data(proto, opts, config, config_path, opts.get("batch_size"))
    configs = _configs(opts["precision_name"], opts["placement"], pins)
    amax = _amax_for(opts, proto, dataset, batch_size, any(c.int8 for c in configs), quiet)
    modes = ("graphwise", "layerwise") if opts["mode"] == "both" else (opts["mode"],)
    backend_label = describe_backend(opts["backend"])
    if not get_backend(opts["backend"]).emulated_precision and modes != ("graphwise",):
        raise InputError(f"--backend {opts['backend']} compares whole builds: use --mode graphwise")
    t0 = time.perf_counter()
    base = folded(proto)  # folded once: compare_runs and the FP16 range check take it as it is
    with progress_bar(quiet, unit="batch") as progress:
        runs, observed = compare_runs(
            base,
            dataset.batches(batch_size),
            configs,
            amax=amax,
            modes=modes,
            progress=progress,
            threads=opts.get("threads"),
            backend=opts["backend"],
            cache_path=opts.get("cache_path"),
        )
    elapsed = time.perf_counter() - t0
    stats = dataset.stats
    data = stats.to_dict(data_path)
    fp16 = (
        [i.to_dict() for i in fp16_range_check(base, amax, observed)] if any(c.fp16 for c in configs) else []
    )
    result = CompareResult(
        model_summary(proto, opts["model"], shapes={i.name: i.shape for i in dataset.inputs}),
        data,
        backend_label,
        runs,
        fp16,
        round(elapsed, 3),
    )
    doc = to_jsonable(result.to_dict())
    if opts.get("json_path"):
        write_json(opts["json_path"], doc)
    if opts.get("report_path"):
        from trtq.reports import write_report

        write_report(opts["report_path"], [doc])
    if not quiet:
        _print_tables(result, opts["top"], opts["metric"])


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


def _print_tables(result, top: int, metric: str) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    from trtq.precision.metrics import METRIC_KEYS as keys

    console = Console(width=None if sys.stdout.isatty() else 200)
    for run in result.runs:
        where = f", {run.placement} placement" if run.placement else ""
        title = f"{run.precision} {run.mode}{where}: worst {min(top, len(run.layers))} of {len(run.layers)} by {metric}"
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
            m = out.metrics
            console.print(
                f"  output {out.tensor}: cosine {_fmt(m['cosine'], 'cosine')}, rel_l2 {_fmt(m['rel_l2'], 'rel_l2')}, "
                f"max_abs {_fmt(m['max_abs'], 'max_abs')}, NaN/Inf {_fmt(m['nonfinite'], 'nonfinite')}"
            )
        if run.missing_amax:
            console.print(f"  {len(run.missing_amax)} tensor(s) had no INT8 range and stayed in float")
    err = stderr_console()
    if any(r.precision != "int8" for r in result.runs):
        if result.fp16_range:
            err.print(f"[bold red]FP16 range: {len(result.fp16_range)} tensor(s) beyond 65504[/]")
            for issue in result.fp16_range[:10]:
                err.print(
                    f"  {issue['kind']} {issue['tensor']} (node {issue['node']}): max |x| {issue['max_abs']:.4g}"
                )
        else:
            err.print("FP16 range: every weight (after folding) and activation fits in FP16")


def _export(opts: dict[str, Any]) -> None:
    from trtq._core.onnx_model import load_onnx, save_onnx
    from trtq.calib.cache import read_cache
    from trtq.precision.export import export_qdq

    if not opts["int8"] and not opts["fp16"]:
        raise InputError("nothing to export: give --int8 (with --cache) and/or --fp16")
    if opts["int8"] and not opts.get("cache_path"):
        raise InputError("--int8 needs --cache FILE (a TensorRT calibration cache, e.g. from 'calib run')")
    pins = load_pins(opts.get("pins_path"))
    proto = load_onnx(opts["model"])
    amax = read_cache(opts["cache_path"]).amax() if opts["int8"] else {}
    out = export_qdq(proto, amax, pins, fp16=opts["fp16"])
    save_onnx(out, opts["out_path"])
    if not opts["quiet"]:
        q = sum(n.op_type == "QuantizeLinear" for n in out.graph.node)
        dq = sum(n.op_type == "DequantizeLinear" for n in out.graph.node)
        stderr_console().print(
            f"wrote {opts['out_path']}: {q} activation Q/DQ pairs, {dq - q} weight DequantizeLinear, "
            f"{len(pins)} pinned node(s) in FP32{', rest FP16' if opts['fp16'] else ''}"
        )
