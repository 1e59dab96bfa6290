"""``precision quantize``: the accuracy-first flow in one command (:mod:`trtq.precision.quantize`)."""

from __future__ import annotations

import logging
import math
from typing import Any

import click

from trtq._core.args import ModelArgs, OutputArgs, RuntimeArgs, resolve_groups, uses
from trtq._core.cli import common_options, progress_bar, run_command, setup_logging
from trtq._core.errors import CheckFailed, InputError
from trtq.calib.cli_options import RangesArgs
from trtq.datasets.cli_options import DataArgs, EvalDataArgs
from trtq.precision.cli_common import (
    finetune_choice,
    finetune_options,
    mha_choice,
    mha_option,
    recovery_choice,
    recovery_options,
    weight_scales_option,
)
from trtq.precision.cli_options import MetricArgs
from trtq.precision.recovery import WITH_OUTPUT_SCALES

EPILOG = """\b
Examples:
  precision quantize det.onnx --data cal/ --eval-data held/ --shape x:1x3x640x640 \\
      --preset paddleocr --pin-worst 8 --metric mask-iou --binarize 0.3 -o det.int8.onnx
  precision quantize vit.onnx --data cal/ --eval-data held/ --fp8 -o vit.fp8.onnx --json q.json
  precision quantize rec.onnx --data lines/ --cache rec.cache -o rec.int8.onnx   # ranges from a cache
  precision quantize det.onnx --data cal/ --eval-data held/ --shape x:1x3x640x640 --preset paddleocr \\
      --pin-worst 8 --metric mask-iou --binarize 0.3 --threshold 0.97 -o det.int8.onnx   # fewest of 8
  precision quantize vit.onnx --data cal/ --eval-data held/ --pin-worst 4 --fp16 \\
      --weight-correction sequential --weight-correction-alpha 0.1 -o vit.int8.onnx
  precision quantize det.onnx --data cal/ --eval-data held/ --shape x:1x3x640x640 --preset paddleocr \\
      --pin-worst 8 --finetune 200 -o det.int8.onnx   # INT8 weights trained against FP32 (PyTorch)

\b
The steps, each the library call of one command (README, "Getting INT8 accurate"):
ranges on --data (INT8: auto; FP8: each tensor's largest |x|; or --cache) -> with --pin-worst K,
the K layers with the largest own error (compare --mode layerwise) kept in FP32 (with --threshold:
the fewest of them whose model passes it on --data, bisect's prefix search) -> FP8 weight
scales by output error, or the opt-in INT8 recoveries (--weight-correction, --adaround,
--bias-correction: off by default, fitted to --data with the pins in place) -> the Q/DQ model
(precision export; --fp16: the float layers but the pins in FP16) -> with --finetune, its INT8
weights trained against FP32 on --data (PyTorch; kept only where held-back --data improves) ->
that model run in ONNX
Runtime against FP32 on --data and on --eval-data. With --threshold every model tried is the one
that would be written, recoveries included. Judge by the held-out figure: every step was fitted
to --data. Calibrate on the inputs the model is for.
"""

QUANTIZE_GROUPS = (
    ModelArgs("precision quantize model.onnx --data DIR -o out.onnx"),
    RangesArgs(
        "TensorRT calibration cache to take the ranges from instead of calibrating on --data.",
        method_help="Calibration method (default: INT8 auto, FP8 minmax).",
    ),
    RuntimeArgs(None, "ONNX Runtime threads."),
    OutputArgs(
        "The Q/DQ ONNX to write.",
        output_required="out.onnx",
        json="Write the result (ranges, pins, both judgements) as JSON to PATH; '-' = stdout.",
        report=True,
    ),
    MetricArgs(
        "The judging metric besides the tensor metrics: a task metric (top1, mask-iou with --binarize, "
        "plug-ins) or a tensor metric (default cosine).",
    ),
    EvalDataArgs(),
    DataArgs(),
)


@click.command("quantize", epilog=EPILOG)
@click.option("--fp8", "fp8", is_flag=True, help="FP8 E4M3 instead of INT8 (TensorRT 11).")
@click.option(
    "--pin-worst",
    "pin_worst",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Keep the K layers with the largest own error (layerwise, on --data) in FP32.",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Make --pin-worst K a budget: pin the fewest of those K layers whose model passes --metric "
    ">= T (<= T for rel-l2, max-abs) on --data; all K when none does.",
)
@click.option(
    "--pins-out",
    "pins_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the pinned nodes as a JSON list (what --pins of export, compare and pin read).",
)
@click.option(
    "--fp16",
    "fp16",
    is_flag=True,
    help="Compute the float layers other than the pins in FP16 (Casts at FP32 boundaries), as "
    "precision export --fp16 writes them.",
)
@recovery_options
@finetune_options
@weight_scales_option
@mha_option
@uses(*QUANTIZE_GROUPS)
@common_options
def quantize_command(**opts: Any) -> None:
    """Quantize MODEL for TensorRT 11 / ONNX Runtime and judge it: ranges, pins, Q/DQ export,
    accuracy against FP32 on the calibration and held-out data, in one command."""
    setup_logging(opts["debug"], opts["quiet"])
    run_command(lambda: _quantize(opts), debug=opts["debug"])


def _quantize(opts: dict[str, Any]) -> None:
    from trtq._core.jsonio import to_jsonable, write_json
    from trtq._core.onnx_model import load_onnx, model_summary, save_onnx
    from trtq._core.result import result_document
    from trtq.precision.cli_common import cache_ranges, open_data, require_float32
    from trtq.precision.metrics import get_metric, is_task_metric
    from trtq.precision.quantize import quantize

    model, ranges, runtime, out, metric, eval_data, data = resolve_groups(opts, *QUANTIZE_GROUPS)
    quiet = opts["quiet"] or out.json_to_stdout
    qtype = "fp8" if opts["fp8"] else "int8"
    recovery = recovery_choice(opts, int8=not opts["fp8"], refusal="not with --fp8")
    if recovery.active and opts["weight_scales"] == "output":
        raise InputError(WITH_OUTPUT_SCALES)
    tuning = finetune_choice(opts, int8=not opts["fp8"])
    name = get_metric(metric.name or "cosine").name
    criterion = metric.criterion(threshold=0.0, default=name)  # judging: every metric, no threshold
    task = is_task_metric(name)
    target = None
    if opts["threshold"] is not None:
        if not opts["pin_worst"]:
            raise InputError("--threshold needs --pin-worst K: the most layers it may keep in FP32")
        target = metric.criterion(threshold=opts["threshold"], default=name)
    if ranges.cache and opts.get("method") and not opts["fp8"]:
        logging.getLogger(__name__).warning(
            "--method not used: the INT8 ranges are read from --cache %s", ranges.cache
        )
    proto = load_onnx(model.path)
    require_float32(proto, model.path, "quantize")
    if tuning is not None:  # an operator the fine-tuning cannot run: said now, not after the calibration
        from trtq.precision.torch_graph import check_graph

        try:
            check_graph(proto)
        except InputError as exc:
            raise InputError(f"--finetune: {model.path}: {exc}") from exc
    if not data.data:
        raise InputError(
            "no calibration data: give --data DIR (the ranges, pins and weight scales are fitted to it)"
        )
    dataset, batch_size = open_data(proto, data, source=model.path)
    if tuning is not None:  # too few samples to hold any back: said now, not after calibrating
        from trtq.precision.finetune import require_holdout

        require_holdout(len(dataset), tuning, f"--finetune: {data.data}")
    held = open_data(proto, eval_data, batch_size)[0] if eval_data is not None else None
    amax = cache_ranges(ranges.cache, qtype, ranges.method_given, proto, model.path) if ranges.cache else None
    with progress_bar(quiet, unit="img") as progress:
        result = quantize(
            proto,
            lambda: dataset.batches(batch_size),
            fp8=opts["fp8"],
            amax=amax,
            method=ranges.method if ranges.method_given else None,
            params=ranges.params if ranges.method_given else None,
            pin_worst=opts["pin_worst"],
            weight_scales=opts["weight_scales"],
            fp16=opts["fp16"],
            recovery=recovery,
            finetune=tuning,
            mha=mha_choice(opts),
            eval_batches=(lambda: held.batches(batch_size)) if held is not None else None,
            output_accumulator=criterion.accumulator if task else None,
            criterion=target,
            threads=runtime.threads,
            samples=len(dataset),
            progress=progress,
        )
    save_onnx(result.model, out.output)
    if opts.get("pins_out"):
        write_json(opts["pins_out"], result.pins)  # the same file as compare --pin-worst writes

    def judged(run: Any) -> dict[str, Any]:
        return {o.tensor: dict(o.metrics) for o in run.outputs}

    doc = result_document(
        "quantize",
        backend="onnxruntime",
        created_by="precision quantize",
        model=model_summary(proto, model.path, shapes={i.name: i.shape for i in dataset.inputs}),
        data=dataset.stats.to_dict(data.data),
        output=str(out.output),
        qtype=qtype,
        ranges={**result.ranges, "cache": ranges.cache},
        pins=result.pins,
        ranking=result.ranking,
        search=(
            {
                "criterion": target.describe(),
                "budget": opts["pin_worst"],
                "tried": result.search,
                "passed": result.passed,
            }
            if target is not None
            else None
        ),  # fmt: skip
        qdq_pairs=result.qdq_pairs,
        fp16=result.fp16,
        weight_scales=result.weight_scales,
        recovery=result.recovery,
        finetune=result.finetune,
        metric={"name": name, "params": dict(metric.params)},
        calibration={"outputs": judged(result.calibration)},
        held_out=(
            {"data": held.stats.to_dict(eval_data.data), "outputs": judged(result.held_out)}
            if held is not None
            else None
        ),
        timings=result.timings,
    )
    doc = to_jsonable(doc)
    out.write_json(doc)
    if out.report:
        from trtq.reports import write_report

        write_report(out.report, [doc])
    if not quiet:
        _print_summary(doc, get_metric(name).key if task else name, recovery, result.recovery)
    if target is not None and not result.passed:  # written, and the scripts told: exit 1
        raise CheckFailed(
            f"{out.output}: fails {target.describe()} on --data even with the {len(result.pins)} worst "
            "layers in FP32 (written; a larger --pin-worst, or calibration data of the model's own kind?)"
        )


def _print_summary(doc: dict[str, Any], key: str, recovery: Any, recovered: dict[str, Any] | None) -> None:
    """The summary on stderr; ``recovered``: the recovery reports as computed (the document's
    copy has non-finite figures as null)."""

    def say(line: str) -> None:
        click.echo(line, err=True)

    r = doc["ranges"]
    how = f"from {r['cache']}" if r["cache"] else f"{r['method']} on --data ({r['seconds']:.1f} s)"
    check = r.get("auto_check")
    if check and check.get("flagged"):
        how += f"; auto's check kept {check['kept']} ({check['flagged']} tensor(s) flagged)"
    say(f"ranges: {how}")
    search = doc.get("search")
    if search:
        verdict = "passes" if search["passed"] else "fails"
        say(
            f"pins: {len(doc['pins'])} of the {search['budget']} worst layers ({len(search['tried'])} "
            f"model(s) tried): {verdict} {search['criterion']} on --data"
        )
    if doc["pins"]:
        say(f"FP32 pins: {len(doc['pins'])} worst layer(s) layerwise: {', '.join(doc['pins'])}")
    if recovered:
        from trtq.precision.recovery import summary_lines

        for line in summary_lines(recovery, recovered, worst=0):
            say(line)
    tuned = doc.get("finetune")
    if tuned:
        losses = [v for _, v in tuned["holdout_loss"] if v is not None]  # non-finite losses are null
        start, best = (losses[0], min(losses)) if losses else (None, None)
        if tuned["kept"]:
            say(
                f"fine-tuning: kept step {tuned['best_step']} of {tuned['settings']['steps']} "
                f"({tuned['changed']} of {tuned['weights']} INT8 weights moved one step; held-back loss "
                f"{_fmt(start)} -> {_fmt(best)}, {tuned['seconds']:.1f} s on {tuned['device']})"
            )
        elif tuned.get("reverted"):
            say(f"fine-tuning: not kept: the tuned model {tuned['reverted']} ({tuned['seconds']:.1f} s)")
        else:
            say(
                f"fine-tuning: not kept: no step lowered the loss on the {tuned['holdout_samples']} held-back "
                f"sample(s) ({_fmt(start)}); the model is the exported one ({tuned['seconds']:.1f} s)"
            )
    say(
        f"wrote {doc['output']}: {doc['qdq_pairs']} {doc['qtype'].upper()} activation Q/DQ pairs, "
        f"{len(doc['pins'])} pinned node(s) in FP32"
        + (", the other float layers in FP16" if doc.get("fp16") else "")
    )
    for label, block, data in (
        ("calibration data", doc["calibration"], doc["data"]),
        ("held-out data", doc["held_out"], (doc["held_out"] or {}).get("data")),
    ):
        if block is None:
            continue
        figures = []
        for tensor, metrics in block["outputs"].items():
            shown = {k: metrics.get(k) for k in dict.fromkeys((key, "cosine")) if metrics.get(k) is not None}
            text = ", ".join(f"{k} {_fmt(v)}" for k, v in shown.items())
            figures.append(f"{tensor}: {text}")
        say(
            f"{label} ({data.get('images_used', '?')} samples) vs FP32: " + "; ".join(figures),
        )
    if doc["held_out"] is None:
        say("no --eval-data: these figures are on the data the ranges and pins were fitted to")


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    return "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.4g}"
