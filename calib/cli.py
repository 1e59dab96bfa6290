"""``calib``: INT8 calibration from the command line (a thin layer over :mod:`trtq.calib`)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import click

from trtq._core.cli import (
    backend_option,
    common_options,
    echo_json,
    progress_bar,
    run_command,
    setup_logging,
    stderr_console,
)
from trtq._core.config import find_config, model_from, resolve_path, setting
from trtq._core.errors import InputError, TrtqError
from trtq.calib.cache import ALGORITHMS, DEFAULT_TRT_VERSION

EPILOG_RUN = """\b
Examples:
  calib run det.onnx --data imgs/ --shape x:1x3x640x640 --preset paddleocr --cache calib.cache
  calib run --data imgs/ --cache calib.cache            # model named in [tool.trtq] / trtq.toml
  calib run det.onnx --data imgs/ --cache c.cache --method percentile --percentile 99.9
  calib run det.onnx --data more/ --cache c.cache --resume   # add data to saved histograms
  calib run det.onnx --data imgs/ --cache c.cache --backend tensorrt   # needs TensorRT + GPU

The histograms are saved beside the cache (CACHE.hist.npz): `calib compute` re-derives
thresholds with another method and `calib merge` combines shards, without rerunning the model.
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


def _data_options(fn):
    from trtq.datasets.cli_options import data_options

    return data_options(fn)


def _output_option(fn):
    return click.option(
        "-o",
        "--output",
        "output",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="How to print the result on stdout.",
    )(fn)


def _json_flag(fn):
    """``--json``: the same as ``-o json`` (print JSON on stdout), for show / diff / list."""

    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.meta["trtq_json"] = True

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=set_json,
        help="Print JSON on stdout (same as -o json).",
    )(fn)


def _want_json(output: str) -> bool:
    ctx = click.get_current_context(silent=True)
    return output == "json" or bool(ctx and ctx.meta.get("trtq_json"))


@main.command("run", epilog=EPILOG_RUN)
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False), help="Calibration cache to write.")
@click.option("--method", default=None, help="Threshold method: entropy2 (default), minmax, percentile, mse.")
@click.option(
    "--percentile", type=float, default=None, help="Percentile for --method percentile (default 99.99)."
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Images per batch (default: the model's static batch, else 1).",
)
@click.option("--num-bins", type=int, default=None, help="Histogram bins per tensor (default 2048).")
@click.option(
    "--trt-version", default=None, help=f"TensorRT version the cache is for (default {DEFAULT_TRT_VERSION})."
)
@click.option(
    "--cache-algorithm",
    default=None,
    type=click.Choice(list(ALGORITHMS)),
    help="Cache header algorithm: must match the TensorRT calibrator that reads the cache.",
)
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
@backend_option(
    "onnxruntime: CPU (default). tensorrt: TensorRT's own calibrator on a GPU.",
    default=None,
)
@click.option(
    "--calibrator",
    default=None,
    help="TensorRT calibrator name or package.module:Class (--backend tensorrt).",
)
@click.option("--threads", type=int, default=None, help="Histogram threads (default: all cores).")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the full result (docs/SCHEMA.md).",
)
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False), default=None, help="Write an HTML report."
)
@_output_option
@common_options
@_data_options
def run_cmd(**opts: Any) -> None:
    """Calibrate MODEL on a folder of images or tensors and write a TensorRT calibration cache.

    Every float tensor of the model is made an output and streamed into a 2048-bin histogram of
    |x|; the batch is then dropped, so memory does not grow with the number of images.
    """
    setup_logging(opts["debug"], opts["quiet"])
    run_command(lambda: _run(opts), debug=opts["debug"])


def _run(opts: dict[str, Any]) -> None:
    from trtq._core.onnx_model import model_summary
    from trtq.calib.cache import write_cache
    from trtq.calib.histogram import DEFAULT_BINS, HistogramSet
    from trtq.calib.methods import get_method
    from trtq.calib.run import calibrate, histogram_path_for
    from trtq.calib.summary import calib_document
    from trtq.datasets import default_batch_size
    from trtq.datasets.cli_options import dataset_from_options
    from trtq.runtime.onnxruntime import model_inputs as declared_inputs

    config, config_path = find_config()
    model_path = model_from(
        opts.get("model"), config, config_path, "calib run model.onnx --data DIR --cache FILE"
    )
    cache_path = opts.get("cache_path") or resolve_path(config.get("cache"), config_path)
    if not cache_path:
        raise InputError('no cache file given: pass --cache FILE (or set cache = "..." in [tool.trtq])')
    method = setting(opts, config, "method", "entropy2")
    # the method's own parameters (e.g. percentile), from flags or config; unset ones keep its default
    params = {k: v for k in get_method(method).params if (v := setting(opts, config, k)) is not None}
    num_bins = int(setting(opts, config, "num_bins", DEFAULT_BINS))
    trt_version = str(setting(opts, config, "trt_version", DEFAULT_TRT_VERSION))
    backend_name = setting(opts, config, "backend", "onnxruntime")
    hist_path = opts.get("hist_path") or str(histogram_path_for(cache_path))

    from trtq.runtime import get_backend

    native = get_backend(backend_name).native_calibration
    if native:
        _reject_cpu_only_flags(opts, backend_name)

    from trtq._core.onnx_model import load_onnx

    proto = load_onnx(model_path)
    model_inputs = declared_inputs(proto)  # the session is opened once, by calibrate()
    batch_size = int(setting(opts, config, "batch_size", default_batch_size(model_inputs)))
    dataset, specs = dataset_from_options(model_inputs, batch_size, opts, config, config_path=config_path)

    if native:
        _run_tensorrt(opts, model_path, dataset, batch_size, cache_path)
        return

    histograms = None
    skip = 0
    if opts.get("resume") and Path(hist_path).exists():
        histograms = HistogramSet.load(hist_path)
        files = [str(f) for f in getattr(dataset, "files", [])]
        if histograms.sources and files[: len(histograms.sources)] != histograms.sources:
            raise InputError(
                f"{hist_path}: --resume needs the same data in the same order; the saved histograms came from other files"
            )
        skip = histograms.samples // batch_size
    elif opts.get("resume"):
        raise InputError(f"{hist_path}: nothing to resume from (no histogram file)")

    console = stderr_console(opts["quiet"])
    checkpoint_every = 25

    def on_batch(hs: HistogramSet, n: int) -> None:
        if n % checkpoint_every == 0:
            hs.save(hist_path)

    unit = "img" if getattr(dataset, "kind", "images") == "images" else "sample"
    with progress_bar(opts["quiet"] or opts["output"] == "json", unit=unit) as progress:
        progress(0, total=len(dataset), description="calibrating")
        batches = dataset.batches(batch_size, progress=progress)
        if skip:
            progress(0, description=f"skipping {skip * batch_size} samples already collected")
            batches = itertools.islice(batches, skip, None)
        t0 = time.perf_counter()
        try:
            result = calibrate(
                proto,
                batches,
                method=method,
                num_bins=num_bins,
                params=params,
                histograms=histograms,
                threads=opts.get("threads"),
                on_batch=on_batch,
                backend=backend_name,
            )
        except KeyboardInterrupt:
            raise TrtqError("interrupted; rerun with --resume to continue from the last checkpoint") from None
    stats = dataset.stats
    files = [str(f) for f in getattr(dataset, "files", [])]
    result.histograms.sources = files[: result.histograms.samples]
    result.seconds = time.perf_counter() - t0
    cache = result.cache(trt_version, opts.get("cache_algorithm") or config.get("cache_algorithm"))
    write_cache(cache_path, cache)
    result.histograms.save(hist_path)

    settings = {
        "method": method,
        "batch_size": batch_size,
        "trt_version": trt_version,
        "num_bins": num_bins,
        **params,
    }
    doc = calib_document(
        result,
        model=model_summary(
            proto, model_path, shapes={s.name: s.shape for s in specs}, tensors=len(result.sites)
        ),
        data=stats.to_dict(opts.get("data") or config.get("data")),
        settings=settings,
        cache_path=str(cache_path),
        histogram_path=str(hist_path),
        with_all_methods=bool(opts.get("json_path") or opts.get("report_path")),
    )
    if opts.get("json_path"):
        from trtq._core.jsonio import write_json

        write_json(opts["json_path"], doc)
    if opts.get("report_path"):
        _write_report(opts["report_path"], doc, str(hist_path))
    summary = {
        "cache": str(cache_path),
        "histograms": str(hist_path),
        "method": method,
        "images_used": stats.used,
        "images_skipped": len(stats.skipped_files),
        "images_dropped": getattr(stats, "dropped", 0),
        "tensors_calibrated": len(cache.scales),
        "tensors_total": len(result.sites),
        "seconds": round(result.seconds, 3),
        "images_per_s": round(stats.used / result.seconds, 3) if result.seconds > 0 else None,
    }
    if opts["output"] == "json":
        echo_json(summary)
    elif not opts["quiet"]:
        noun = "images" if unit == "img" else "samples"  # a folder of .npy/.npz holds samples
        console.print(
            f"[green]wrote[/green] {cache_path} ({len(cache.scales)} tensors, {cache.header}); "
            f"histograms {hist_path}\n"
            f"{noun} used {stats.used}, skipped {len(stats.skipped_files)}; "
            f"{summary['seconds']} s, {summary['images_per_s']} {noun}/s"
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
    "json_path": "--json",
    "report_path": "--report",
}


def _reject_cpu_only_flags(opts: dict[str, Any], backend: str) -> None:
    given = [flag for key, flag in _CPU_ONLY_FLAGS.items() if opts.get(key) not in (None, False)]
    if given:
        raise InputError(
            f"{', '.join(given)} cannot be used with --backend {backend}: TensorRT's calibrator keeps no "
            "histograms and picks its own thresholds (choose it with --calibrator, print its summary with "
            "-o json); drop them or use --backend onnxruntime"
        )


def _run_tensorrt(opts: dict, model_path: str, dataset: Any, batch_size: int, cache_path: str) -> None:
    from trtq.calib.tensorrt import calibrate_with_tensorrt

    with progress_bar(opts["quiet"], unit="batch") as progress:
        summary = calibrate_with_tensorrt(
            model_path,
            dataset.batches(batch_size),
            cache_path,
            calibrator=opts.get("calibrator") or "entropy2",
            batch_size=batch_size,
            trt_version_hint=opts.get("trt_version"),
            progress=progress,
        )
    if opts["output"] == "json":
        echo_json(summary)
    elif not opts["quiet"]:
        stderr_console().print(f"[green]wrote[/green] {cache_path} with TensorRT's calibrator")


@main.command("show")
@click.argument("cache", type=click.Path(dir_okay=False))
@_output_option
@_json_flag
@common_options
def show_cmd(cache: str, output: str, quiet: bool, debug: bool) -> None:
    """Print the tensors of a calibration CACHE with their scale and amax (= scale * 127).

    \b
    Example:
      calib show calib.cache
      calib show calib.cache -o json | jq '.tensors | length'
    """
    setup_logging(debug, quiet)

    def body() -> None:
        from trtq.calib.cache import read_cache

        c = read_cache(cache)
        rows = [
            {"tensor": n, "scale": s, "amax": s * 127.0, "hex": c._hex.get(n)} for n, s in c.scales.items()
        ]
        if _want_json(output):
            echo_json(
                {"path": cache, "trt_version": c.trt_version, "algorithm": c.algorithm, "tensors": rows}
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
@_output_option
@_json_flag
@common_options
def diff_cmd(a: str, b: str, top: int, output: str, quiet: bool, debug: bool) -> None:
    """Compare two caches tensor by tensor: amax in each and their ratio B/A.

    \b
    Example:
      calib diff cpu.cache gpu.cache --top 20
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
        if _want_json(output):
            echo_json({**summary, "tensors": rows})
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


@main.command("merge")
@click.argument("histograms", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "-O", "--out", "out", required=True, type=click.Path(dir_okay=False), help="Merged histogram file (.npz)."
)
@click.option(
    "--cache",
    "cache_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a cache from the merged histograms.",
)
@click.option("--method", default="entropy2", show_default=True)
@click.option("--percentile", type=float, default=None)
@click.option("--trt-version", default=DEFAULT_TRT_VERSION, show_default=True)
@common_options
def merge_cmd(
    histograms: tuple[str, ...],
    out: str,
    cache_path: str | None,
    method: str,
    percentile: float | None,
    trt_version: str,
    quiet: bool,
    debug: bool,
) -> None:
    """Merge the histograms of dataset shards exactly (counts add; ranges align by powers of two).

    \b
    Example:
      calib merge shard0.cache.hist.npz shard1.cache.hist.npz -O all.npz --cache all.cache
    """
    setup_logging(debug, quiet)

    def body() -> None:
        from trtq.calib.histogram import HistogramSet

        merged = HistogramSet.merged(HistogramSet.load(h) for h in histograms)
        merged.save(out)
        msg = f"merged {len(histograms)} files: {len(merged)} tensors, {merged.samples} samples -> {out}"
        if cache_path:
            _write_cache_from(merged, cache_path, method, percentile, trt_version, None)
            msg += f"; cache {cache_path}"
        if not quiet:
            stderr_console().print(msg)

    run_command(body, debug=debug)


def _write_cache_from(
    hs: Any, cache_path: str, method: str, percentile: float | None, trt_version: str, algorithm: str | None
) -> Any:
    from trtq.calib.cache import write_cache
    from trtq.calib.run import result_from_histograms

    result = result_from_histograms(hs, method=method, percentile=percentile)  # unused by other methods
    cache = result.cache(trt_version, algorithm)
    write_cache(cache_path, cache)
    return cache


@main.command("compute")
@click.argument("histograms", type=click.Path(dir_okay=False))
@click.option("--cache", "cache_path", required=True, type=click.Path(dir_okay=False), help="Cache to write.")
@click.option("--method", default="entropy2", show_default=True, help="entropy2, minmax, percentile or mse.")
@click.option("--percentile", type=float, default=None, help="For --method percentile (default 99.99).")
@click.option("--trt-version", default=DEFAULT_TRT_VERSION, show_default=True)
@click.option("--cache-algorithm", default=None, help="Cache header algorithm (default: the method's).")
@common_options
def compute_cmd(
    histograms: str,
    cache_path: str,
    method: str,
    percentile: float | None,
    trt_version: str,
    cache_algorithm: str | None,
    quiet: bool,
    debug: bool,
) -> None:
    """Write a cache from saved HISTOGRAMS with any method, without running the model again.

    \b
    Example:
      calib compute calib.cache.hist.npz --method percentile --percentile 99.9 --cache p999.cache
    """
    setup_logging(debug, quiet)

    def body() -> None:
        from trtq.calib.histogram import HistogramSet

        cache = _write_cache_from(
            HistogramSet.load(histograms), cache_path, method, percentile, trt_version, cache_algorithm
        )
        if not quiet:
            stderr_console().print(f"wrote {cache_path}: {len(cache.scales)} tensors, {cache.header}")

    run_command(body, debug=debug)


@main.command("list")
@_output_option
@_json_flag
@common_options
def list_cmd(output: str, quiet: bool, debug: bool) -> None:
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
        if _want_json(output):
            echo_json({"methods": methods, "tensorrt_calibrators": calibrators})
            return
        con = _stdout_console()
        con.print("[bold]Threshold methods[/bold] (calib run --method, CPU):")
        for m in methods:
            con.print(
                f"  {m['name']:<12} {m['description']}  [dim](cache header {m['cache_algorithm']})[/dim]"
            )
        con.print("[bold]TensorRT calibrators[/bold] (calib run --backend tensorrt --calibrator):")
        for c in calibrators:
            con.print(
                f"  {c.get('name', '?'):<12} {c.get('description', '')}  [dim]({c.get('source', '')})[/dim]"
            )

    run_command(body, debug=debug)


if __name__ == "__main__":  # pragma: no cover
    main()
