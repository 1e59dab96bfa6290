"""``calib``: INT8 calibration from the command line (a thin layer over :mod:`trtq.calib`)."""

from __future__ import annotations

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
from trtq._core.jsonio import write_json
from trtq.calib.cli_options import RangesArgs
from trtq.datasets.cli_options import DataArgs

EPILOG_RUN = """\b
Examples:
  calib run det.onnx --data imgs/ --shape x:1x3x640x640 --preset paddleocr --cache calib.cache
  calib run --data imgs/ --cache calib.cache            # model named in [tool.trtq] / trtq.toml
  calib run det.onnx --data imgs/ --cache c.cache --json run.json   # auto: its choices in JSON
  calib run det.onnx --data imgs/ --cache c.cache --method percentile --percentile 99.9
  calib run det.onnx --data more/ --cache c.cache --resume   # add data to saved histograms
  calib run det.onnx --data imgs/ --cache c.cache --json run.json --report run.html
  calib run det.onnx --data imgs/ --cache c.cache --json - | jq .coverage   # result on stdout
  calib run det.onnx --data imgs/ --cache c.cache --backend tensorrt   # needs TensorRT + GPU

The default method, auto, picks per tensor among the histogram methods' thresholds (entropy2, mse,
percentiles, minmax) the one with the least error measured at the layer that reads the tensor, on
one extra pass over the first 16 samples; tensors no layer quantizes get entropy2's threshold
(auto_fallback = "mse" in [tool.trtq] changes that; see the README). Then it checks its choices at
the model output on those samples: the INT8 model (emulated) with auto's ranges against the same
with max|x| for the tensors auto clipped by more than a third, keeping max|x| only when its
output error is lower and stays lower in 80 % of resamples of those samples (auto_check = 0
turns it off; the summary line and the JSON's auto_check say what it did).
The histograms are saved beside the cache (CACHE.hist.npz): `calib compute` re-derives
thresholds with a histogram method (default entropy2) and `calib merge` combines shards, without
rerunning the model.
"""


@click.group(
    cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(package_name="trtq")
def main() -> None:
    """INT8 calibration for TensorRT: histograms of every tensor, thresholds, calibration caches.

    \b
    Commands:
      run      calibrate a model on images or tensors, write a TensorRT cache
      show     print a cache's tensors, scales and amax
      diff     compare two caches tensor by tensor
      merge    merge histogram files of dataset shards (exact)
      compute  thresholds with another method from saved histograms
      list     calibration methods and TensorRT calibrators
    """


# The argument groups of each command (trtq._core.args): one meaning per flag in every tool.
RUN_GROUPS = (
    ModelArgs("calib run model.onnx --data DIR --cache FILE"),
    RangesArgs(
        "Calibration cache to write.",
        cache_required=True,
        method_help="Threshold method: auto (default: per tensor, the candidate with the least error measured at its consumer layer; one extra pass over the first 16 samples), entropy2, minmax, percentile, mse. --backend tensorrt: TensorRT's own calibrator (--calibrator, default entropy2).",
        cache_format=True,
        num_bins=True,
    ),
    RuntimeArgs(
        "onnxruntime: CPU (default). tensorrt: TensorRT's own calibrator on a GPU.",
        "Histogram threads (default: all cores).",
    ),
    OutputArgs(report=True),
    DataArgs(),  # last: its many flags close the help
)
LISTING = OutputArgs(json="Write JSON to PATH instead of the table; '-' = stdout.")
CACHE_FROM_HISTOGRAMS = RangesArgs(
    "Cache to write.",
    cache_required=True,
    method_help="Threshold method from the histograms alone (default entropy2): entropy2, minmax, percentile, mse; auto needs the model and data (calib run).",
    cache_format=True,
    histograms_only=True,
)


@main.command("run", epilog=EPILOG_RUN)
@click.option(
    "--histograms",
    "hist_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Histogram file (default: CACHE.hist.npz).",
)
@click.option(
    "--resume", is_flag=True, help="Continue from the saved histograms: skip the samples already collected."
)
@click.option(
    "--calibrator",
    default=None,
    help="TensorRT calibrator name or package.module:Class (--backend tensorrt).",
)
@uses(*RUN_GROUPS)
@common_options
def run_cmd(**opts: Any) -> None:
    """Calibrate MODEL on a folder of images or tensors and write a TensorRT calibration cache.

    Every float tensor of the model is made an output and streamed into a 2048-bin histogram of
    |x|; the batch is then dropped, so memory does not grow with the number of images.
    """
    setup_logging(opts["debug"], opts["quiet"])
    run_command(lambda: _run(opts), debug=opts["debug"])


def _run(opts: dict[str, Any]) -> None:
    from trtq._core.onnx_model import has_qdq_nodes, load_onnx, model_summary, real_inputs
    from trtq.calib.histogram import DEFAULT_BINS
    from trtq.calib.resumable import calibrate_dataset
    from trtq.calib.run import histogram_path_for, kept_float
    from trtq.calib.summary import calib_document
    from trtq.precision.builds import PrecisionTools  # the CLI wires the rooms: auto's check
    from trtq.runtime import get_backend

    model, ranges, runtime, out, data = resolve_groups(opts, *RUN_GROUPS)
    cache_path = ranges.cache
    num_bins = ranges.num_bins or DEFAULT_BINS
    hist_path = opts.get("hist_path") or str(histogram_path_for(cache_path))

    native = get_backend(runtime.backend).native_calibration
    if native:
        _reject_cpu_only_flags(opts, runtime.backend)

    proto = load_onnx(model.path)
    if has_qdq_nodes(proto):
        raise InputError(
            f"{model.path} is already quantized (it has Q/DQ nodes): calibrate its float original; "
            "precision compare, bisect and pin take the Q/DQ model itself"
        )
    model_inputs = real_inputs(proto)  # the session is opened once, by calibrate()
    batch_size = data.batch_size_for(model_inputs)
    dataset = data.open(model_inputs, batch_size)
    quiet = opts["quiet"] or out.json_to_stdout

    if native:
        _run_tensorrt(opts, model.path, proto, dataset, batch_size, data.data, cache_path, out, quiet)
        return

    unit = "img" if getattr(dataset, "kind", "images") == "images" else "sample"
    with progress_bar(quiet, unit=unit) as progress:
        run = calibrate_dataset(
            proto,
            dataset,
            cache_path,
            batch_size=batch_size,
            method=ranges.method,
            params=dict(ranges.params),
            num_bins=num_bins,
            trt_version=ranges.trt_version,
            cache_algorithm=ranges.cache_algorithm,
            backend=runtime.backend,
            threads=runtime.threads,
            resume=bool(opts.get("resume")),
            histogram_path=hist_path,
            progress=progress,
            tools=PrecisionTools(),
        )
    result, cache = run.result, run.cache
    stats = dataset.stats
    settings = {
        "method": ranges.method,
        "batch_size": batch_size,
        "trt_version": ranges.trt_version,
        "num_bins": num_bins,
        **ranges.params,
    }
    doc = calib_document(
        result,
        model=model_summary(
            proto, model.path, shapes={s.name: s.shape for s in dataset.inputs}, tensors=len(result.sites)
        ),
        data=stats.to_dict(data.data),
        settings=settings,
        cache_path=str(cache_path),
        histogram_path=str(hist_path),
        with_all_methods=bool(out.json or out.report),
        backend=runtime.backend,
        created_by="calib run",
    )
    out.write_json(doc)
    if out.report:
        _write_report(out.report, doc, str(hist_path))
    if not quiet:
        seconds = round(result.seconds, 3)
        rate = round(stats.used / result.seconds, 3) if result.seconds > 0 else None
        noun = "images" if unit == "img" else "samples"  # a folder of .npy/.npz holds samples
        stderr_console().print(
            f"[green]wrote[/green] {cache_path} ({len(cache.scales)} tensors, {cache.header}); "
            f"histograms {hist_path}\n"
            f"{noun} used {stats.used}, skipped {len(stats.skipped_files)}; "
            f"{seconds} s, {rate} {noun}/s"
        )
        if result.check and result.check["error_max"] is not None:
            c = result.check
            if c.get("max_stopped_after"):
                verdict = (
                    f"> {c['error_max']:.4g} (max|x|, already above after {c['max_stopped_after']} samples)"
                )
            else:
                verdict = (
                    f"{c['error_max']:.4g} (max|x|), max|x| lower in {100 * c['confidence']:.0f} % of "
                    f"resamples (needs {100 * c['confidence_needed']:.0f} %)"
                )
            stderr_console().print(
                f"auto's check: {c['flagged']} tensor(s) clipped below 1/{c['clip_factor']:g} of their range; "
                f"output rel. error on {c['samples']} samples {c['error_auto']:.4g} (auto) vs {verdict}: "
                f"kept {c['kept']}",
                markup=False,
                soft_wrap=True,
            )
        hs = result.histograms
        floats = kept_float(hs)
        if floats:
            inf, filled = (sum(count(n) > 0 for n in floats) for count in (hs.nonfinite, hs.mask_fill))
            stderr_console().print(
                f"{len(floats)} tensor(s) held ±inf/NaN ({inf}) or mask fills (|x| >= 2^126, e.g. "
                f"float32's lowest value; {filled}), as attention masks do "
                f"(first: {floats[0]}): counted, not binned, no scale in the cache (they stay in float; "
                "JSON: nonfinite, mask_fill)",
                markup=False,
            )


def _write_report(path: str, doc: dict, histograms: Any) -> None:
    from trtq.reports import write_report

    write_report(path, [doc], histograms=histograms)


# Flags of the CPU path that a backend calibrating natively (TensorRT's own calibrator) has no
# use for: it keeps no histograms and chooses thresholds itself.
_CPU_ONLY_FLAGS = {
    "method": "--method",
    "percentile": "--percentile",
    "num_bins": "--num-bins",
    "cache_algorithm": "--cache-algorithm",
    "hist_path": "--histograms",
    "resume": "--resume",
    "threads": "--threads",
    "report_path": "--report",
}


def _reject_cpu_only_flags(opts: dict[str, Any], backend: str) -> None:
    given = [flag for key, flag in _CPU_ONLY_FLAGS.items() if opts.get(key) not in (None, False)]
    if given:
        raise InputError(
            f"{', '.join(given)} cannot be used with --backend {backend}: TensorRT's calibrator keeps no "
            "histograms and picks its own thresholds (choose it with --calibrator; --json writes its summary); drop them or use --backend onnxruntime"
        )


def _run_tensorrt(
    opts: dict,
    model_path: str,
    proto: Any,
    dataset: Any,
    batch_size: int,
    data_path: str | None,
    cache_path: str,
    out: Any,
    quiet: bool,
) -> None:
    from trtq._core.onnx_model import model_summary
    from trtq._core.result import result_document
    from trtq.calib.tensorrt import calibrate_with_tensorrt

    with progress_bar(quiet, unit="batch") as progress:
        summary = calibrate_with_tensorrt(
            model_path,
            dataset.batches(batch_size),
            cache_path,
            calibrator=opts.get("calibrator") or "entropy2",
            batch_size=batch_size,
            trt_version_hint=opts.get("trt_version"),
            progress=progress,
        )
    body = {k: v for k, v in summary.items() if k != "backend"}
    model = model_summary(proto, model_path, shapes={s.name: s.shape for s in dataset.inputs})
    out.write_json(
        result_document(
            "calib",
            backend=summary.get("backend") or "tensorrt",
            created_by="calib run",
            model=model,
            data=dataset.stats.to_dict(data_path),
            **body,
        )
    )
    if not quiet:
        stderr_console().print(f"[green]wrote[/green] {cache_path} with TensorRT's calibrator")


@main.command("show")
@click.argument("cache", type=click.Path(dir_okay=False))
@uses(LISTING)
@common_options
def show_cmd(cache: str, json_path: str | None, quiet: bool, debug: bool) -> None:
    """Print the tensors of a calibration CACHE with their scale and amax (= scale * 127).

    \b
    Example:
      calib show calib.cache
      calib show calib.cache --json - | jq '.tensors | length'
    """
    setup_logging(debug, quiet)

    def body() -> None:
        from trtq.calib.cache import read_cache

        c = read_cache(cache)
        rows = [
            {"tensor": n, "scale": s, "amax": s * 127.0, "hex": c._hex.get(n)} for n, s in c.scales.items()
        ]
        if json_path:
            write_json(
                json_path,
                {"path": cache, "trt_version": c.trt_version, "algorithm": c.algorithm, "tensors": rows},
            )
            return
        from rich.table import Table

        table = Table(title=f"{cache}: TensorRT {c.trt_version}, {c.algorithm}, {len(rows)} tensors")
        for col in ("tensor", "scale", "amax", "hex"):
            table.add_column(col, justify="left" if col == "tensor" else "right")
        for r in rows:
            table.add_row(r["tensor"], f"{r['scale']:.6g}", f"{r['amax']:.6g}", r["hex"])
        _stdout_console().print(table)

    run_command(body, debug=debug)


def _stdout_console():
    from rich.console import Console

    return Console(soft_wrap=True)


@main.command("diff")
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option("--top", type=int, default=30, show_default=True, help="Rows to print, largest ratio first.")
@uses(LISTING)
@common_options
def diff_cmd(a: str, b: str, top: int, json_path: str | None, quiet: bool, debug: bool) -> None:
    """Compare two caches tensor by tensor: amax in each and their ratio B/A.

    \b
    Example:
      calib diff cpu.cache gpu.cache --top 20
      calib diff cpu.cache gpu.cache --json diff.json
    """
    setup_logging(debug, quiet)

    def body() -> None:
        import math

        from trtq.calib.cache import read_cache

        ca, cb = read_cache(a), read_cache(b)
        ma, mb = ca.amax(), cb.amax()
        rows = []
        for name in list(ma) + [n for n in mb if n not in ma]:
            x, y = ma.get(name), mb.get(name)
            ratio = (y / x) if (x and y) else None
            rows.append(
                {
                    "tensor": name,
                    "amax_a": x,
                    "amax_b": y,
                    "ratio": ratio,
                    "log2_ratio": abs(math.log2(ratio)) if ratio else None,
                }
            )
        common = [r for r in rows if r["ratio"] is not None]
        summary = {
            "a": a,
            "b": b,
            "headers": [ca.header, cb.header],
            "common": len(common),
            "only_a": [r["tensor"] for r in rows if r["amax_b"] is None],
            "only_b": [r["tensor"] for r in rows if r["amax_a"] is None],
            "identical": sum(1 for r in common if ca._hex.get(r["tensor"]) == cb._hex.get(r["tensor"])),
            "max_abs_log2_ratio": max((r["log2_ratio"] for r in common), default=0.0),
        }
        rows.sort(key=lambda r: -(r["log2_ratio"] if r["log2_ratio"] is not None else math.inf))
        if json_path:
            write_json(json_path, {**summary, "tensors": rows})
            return
        from rich.table import Table

        table = Table(
            title=f"{a} vs {b}: {summary['common']} common tensors, {summary['identical']} identical"
        )
        for col in ("tensor", "amax A", "amax B", "B/A"):
            table.add_column(col, justify="left" if col == "tensor" else "right")
        for r in rows[:top]:
            fmt = lambda v: "-" if v is None else f"{v:.6g}"  # noqa: E731
            table.add_row(r["tensor"], fmt(r["amax_a"]), fmt(r["amax_b"]), fmt(r["ratio"]))
        con = _stdout_console()
        con.print(table)
        if summary["only_a"] or summary["only_b"]:
            con.print(f"only in A: {len(summary['only_a'])}, only in B: {len(summary['only_b'])}")

    run_command(body, debug=debug)


MERGE_GROUPS = (
    OutputArgs("Merged histogram file (.npz) to write.", output_required="merged.npz", json=None),
    RangesArgs(
        "Also write a cache from the merged histograms.",
        method_help="Threshold method for --cache, from the histograms alone (default entropy2; auto needs the model and data: calib run).",
        cache_format=True,
        histograms_only=True,
    ),
)


@main.command("merge")
@click.argument("histograms", nargs=-1, required=True, type=click.Path(dir_okay=False))
@uses(*MERGE_GROUPS)
@common_options
def merge_cmd(histograms: tuple[str, ...], quiet: bool, debug: bool, **opts: Any) -> None:
    """Merge the histograms of dataset shards exactly (counts add; ranges align by powers of two).

    \b
    Example:
      calib merge shard0.cache.hist.npz shard1.cache.hist.npz -o all.npz --cache all.cache
    """
    setup_logging(debug, quiet)

    def body() -> None:
        from trtq.calib.histogram import HistogramSet

        out, ranges = resolve_groups({**opts, "histograms": histograms}, *MERGE_GROUPS)
        merged = HistogramSet.merged(HistogramSet.load(h) for h in histograms)
        merged.save(out.output)
        msg = (
            f"merged {len(histograms)} files: {len(merged)} tensors, {merged.samples} samples -> {out.output}"
        )
        if ranges.cache:
            _write_cache_from(merged, ranges)
            msg += f"; cache {ranges.cache}"
        if not quiet:
            stderr_console().print(msg)

    run_command(body, debug=debug)


def _write_cache_from(hs: Any, ranges: Any) -> Any:
    from trtq.calib.cache import write_cache
    from trtq.calib.run import result_from_histograms

    result = result_from_histograms(hs, method=ranges.method, **ranges.params)
    cache = result.cache(ranges.trt_version, ranges.cache_algorithm)
    write_cache(ranges.cache, cache)
    return cache


@main.command("compute")
@click.argument("histograms", type=click.Path(dir_okay=False))
@uses(CACHE_FROM_HISTOGRAMS)
@common_options
def compute_cmd(histograms: str, quiet: bool, debug: bool, **opts: Any) -> None:
    """Write a cache from saved HISTOGRAMS with any method, without running the model again.

    \b
    Example:
      calib compute calib.cache.hist.npz --method percentile --percentile 99.9 --cache p999.cache
    """
    setup_logging(debug, quiet)

    def body() -> None:
        from trtq.calib.histogram import HistogramSet

        (ranges,) = resolve_groups({**opts, "histograms": histograms}, CACHE_FROM_HISTOGRAMS)
        cache = _write_cache_from(HistogramSet.load(histograms), ranges)
        if not quiet:
            stderr_console().print(f"wrote {ranges.cache}: {len(cache.scales)} tensors, {cache.header}")

    run_command(body, debug=debug)


@main.command("list")
@uses(LISTING)
@common_options
def list_cmd(json_path: str | None, quiet: bool, debug: bool) -> None:
    """List calibration methods (CPU) and TensorRT calibrators (built-in and plugged in)."""
    setup_logging(debug, quiet)

    def body() -> None:
        from trtq.calib.methods import available_methods

        methods = [
            {
                "name": m.name,
                "cache_algorithm": m.algorithm,
                "description": m.description,
                "params": {k: v for k, v in m.params.items()},
            }
            for m in available_methods()
        ]
        from trtq.calib.tensorrt import list_calibrators

        calibrators = list_calibrators()
        if json_path:
            write_json(json_path, {"methods": methods, "tensorrt_calibrators": calibrators})
            return
        con = _stdout_console()
        con.print("[bold]Threshold methods[/bold] (calib run --method, CPU; default auto):")
        for m in methods:
            con.print(
                f"  {m['name']:<12} {m['description']}  [dim](cache header {m['cache_algorithm']})[/dim]"
            )
            if m["params"]:  # flags or config keys: [tool.trtq] auto_samples = 8
                con.print(
                    "  "
                    + " " * 12
                    + " [dim]params: "
                    + ", ".join(f"{k}={v}" for k, v in m["params"].items())
                    + "[/dim]"
                )
        con.print("[bold]TensorRT calibrators[/bold] (calib run --backend tensorrt --calibrator):")
        for c in calibrators:
            con.print(
                f"  {c.get('name', '?'):<12} {c.get('description', '')}  [dim]({c.get('source', '')})[/dim]"
            )

    run_command(body, debug=debug)


if __name__ == "__main__":  # pragma: no cover
    main()
