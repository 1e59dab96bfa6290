"""``reports``: build the HTML report from saved JSON results.

Thin layer over :func:`trtq.reports.write_report`: read and check the JSON files, resolve a calib
result's histogram path relative to its JSON file, write the HTML atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from trtq._core.args import OutputArgs, resolve_groups, uses
from trtq._core.cli import OneLineErrors, common_options, run_command, setup_logging
from trtq._core.errors import InputError


def load_result(path: Path) -> dict[str, Any]:
    """Read one result JSON file; :class:`InputError` naming the file if it is not one."""
    from trtq.reports.build import validate_result

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a UTF-8 text file") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    result = validate_result(obj, str(path))
    hist = result.get("histograms")
    if isinstance(hist, str) and hist and not Path(hist).is_absolute() and not Path(hist).exists():
        beside = path.parent / hist
        if beside.exists():
            result = {**result, "histograms": str(beside)}
    return result


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Self-contained HTML reports of trtq results (calib, compare, bisect)."""


BUILD_OUTPUT = OutputArgs(
    "HTML file to write.",
    output_required="report.html",
    json="Write what was written as JSON to PATH; '-' = stdout.",
)


@main.command("build")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--histograms",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Calibration histogram .npz (default: the one a calib result names).",
)
@click.option("--title", default=None, help="Report title (default: 'trtq report — <model names>').")
@uses(BUILD_OUTPUT)
@common_options
def build_cmd(
    results: tuple[Path, ...],
    histograms: Path | None,
    title: str | None,
    quiet: bool,
    debug: bool,
    **opts: Any,
) -> None:
    """Build one HTML report from one or more saved JSON results.

    Results of several runs appear side by side: compare results of the same model share one
    heatmap (e.g. an FP16 and an INT8 run), and a bisect result of that model marks its pins.
    The file opens offline in any browser: no network access, no script needed to read it.

    \b
    Examples:
      reports build compare.json -o report.html
      reports build fp16.json int8.json bisect.json -o det.html --title "PP-OCRv4 det"
      reports build calib.json --histograms calib_hist.npz -o calib.html
    """
    setup_logging(debug, quiet)

    def body() -> None:
        from trtq.reports.build import write_report

        given = {**opts, "results": results, "histograms": histograms}
        (out,) = resolve_groups(given, BUILD_OUTPUT)
        output = Path(out.output)
        loaded = [load_result(p) for p in results]
        write_report(output, loaded, histograms=histograms, title=title, sources=[str(p) for p in results])
        info = {"report": str(output), "bytes": output.stat().st_size, "results": [str(p) for p in results]}
        out.write_json(info)
        if not quiet and not out.json_to_stdout:
            click.echo(
                f"wrote {output} ({info['bytes'] / 1e6:.2f} MB) from {len(results)} result(s)", err=True
            )

    run_command(body, debug=debug)


if __name__ == "__main__":  # pragma: no cover
    main()
