"""``surgery``: find ONNX nodes TensorRT's parser rejects, and rewrite them with proven equivalents.

Commands: ``check`` (report), ``fix`` (rewrite + verify + save), ``rules`` (list the rules),
``ops`` (per rejected operator: its rule, or why none can exist).
"""

from __future__ import annotations

import logging

import click

from trtq._core.args import ModelArgs, OutputArgs, resolve_groups, uses
from trtq._core.cli import (
    OneLineErrors,
    common_options,
    progress_bar,
    run_command,
    setup_logging,
    stderr_console,
)
from trtq._core.errors import CheckFailed, InputError, MissingDependencyError

CHECK_GROUPS = (ModelArgs("surgery check model.onnx"), OutputArgs())
FIX_GROUPS = (
    ModelArgs("surgery fix model.onnx -o fixed.onnx"),
    OutputArgs("Where to write the fixed model.", json="Write what changed as JSON to PATH ('-' = stdout)."),
)
RULES_OUTPUT = OutputArgs(json="Write the list as JSON to PATH ('-' = stdout).")
OPS_OUTPUT = OutputArgs(json="Write the table as JSON to PATH ('-' = stdout).")


def _trt_major(version: str) -> str:
    major = version.split(".")[0]
    if major != "10":
        raise InputError(
            f"--trt-version {version}: the built-in support table is TensorRT 10.x's; "
            "for other versions install that TensorRT and use --tensorrt yes"
        )
    return version


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Find ONNX nodes TensorRT cannot parse, and rewrite them with proven equivalents.

    \b
    Examples:
      surgery check model.onnx
      surgery fix model.onnx -o model.trt.onnx
      surgery rules
      surgery ops
    """


@main.command()
@click.option(
    "--trt-version", default="10.16", show_default=True, help="TensorRT version to check against (10.x)."
)
@click.option(
    "--tensorrt",
    "use_trt",
    type=click.Choice(["auto", "yes", "no"]),
    default="auto",
    show_default=True,
    help="Also ask an installed TensorRT parser (supports_model): auto = when importable.",
)
@uses(*CHECK_GROUPS)
@common_options
def check(trt_version: str, use_trt: str, quiet: bool, debug: bool, **opts) -> None:
    """List every node TensorRT's ONNX parser would reject or restrict, with the rule that fixes it.

    Exit code 0 when nothing is rejected (warnings allowed), 1 when some node is, 2 on bad input.

    \b
    Examples:
      surgery check model.onnx
      surgery check model.onnx --json findings.json
      surgery check model.onnx --tensorrt yes      # use the installed parser too
    """
    setup_logging(debug, quiet)

    def body() -> None:
        from trtq._core.onnx_model import load_onnx
        from trtq.surgery.check import check_model

        _trt_major(trt_version)
        model_args, out = resolve_groups(opts, *CHECK_GROUPS)
        model = model_args.path
        proto = load_onnx(model)
        use = use_trt == "yes" or (use_trt == "auto" and _tensorrt_importable())
        try:
            report = check_model(proto, name=model, use_tensorrt=use, model_path=model)
        except MissingDependencyError as exc:
            if use_trt == "yes":
                raise
            logging.getLogger(__name__).warning("%s; using the built-in support table only", exc)
            use = False
            report = check_model(proto, name=model, use_tensorrt=False, model_path=model)
        report.trt_version = report.trt_version if use else f"{trt_version} (table of {report.trt_version})"
        out.write_json(report.to_dict(created_by="surgery check"))
        if not out.json_to_stdout and not quiet:
            _print_findings(report)
        if report.errors:
            raise CheckFailed(f"{model}: {len(report.errors)} node(s) TensorRT's ONNX parser rejects")

    run_command(body, debug=debug)


def _tensorrt_importable() -> bool:
    try:
        from trtq._core.trt_import import import_tensorrt

        return hasattr(import_tensorrt(), "OnnxParser")
    except Exception:
        return False


def _print_findings(report) -> None:
    from rich.table import Table

    console = stderr_console()
    console.print(f"[bold]{report.model}[/] (opset {report.opset}) against {report.support_source}")
    if not report.findings:
        console.print("no findings: every node is supported")
        return
    table = Table(show_lines=False)
    for col in ("severity", "op", "node", "where", "reason", "fix rule"):
        table.add_column(col, overflow="fold")
    for f in report.findings:
        colour = "red" if f.severity == "error" else "yellow"
        table.add_row(f"[{colour}]{f.severity}[/]", f.op_type, f.node, f.location, f.reason, f.rule or "-")
    console.print(table)
    console.print(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")


@main.command()
@click.option("--inplace", is_flag=True, help="Overwrite MODEL itself (atomically).")
@click.option(
    "--rules",
    "rule_list",
    metavar="A,B",
    help="Comma-separated rules to apply (default: all; see `surgery rules`).",
)
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="OP=PLUGIN[:VER]",
    help="Map an op type to a TensorRT plugin (repeatable).",
)
@click.option("--no-verify", is_flag=True, help="Skip the ONNX Runtime comparison with the original.")
@click.option(
    "--shape",
    "shapes",
    multiple=True,
    metavar="NAME:1x3x224x224",
    help="Input shape for verification (repeatable).",
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Random input sets used for verification.",
)
@click.option("--dry-run", is_flag=True, help="Rewrite and verify, write nothing.")
@click.option(
    "--allow-unfixed",
    is_flag=True,
    help="Exit 0 even when nodes the parser rejects remain (they are still listed).",
)
@uses(*FIX_GROUPS)
@common_options
def fix(
    inplace: bool,
    rule_list: str | None,
    plugins: tuple[str, ...],
    no_verify: bool,
    shapes: tuple[str, ...],
    trials: int,
    dry_run: bool,
    allow_unfixed: bool,
    quiet: bool,
    debug: bool,
    **opts,
) -> None:
    """Rewrite MODEL with the rules until nothing changes, verify it, and write it.

    The output passes onnx.checker and shape inference, and gives the same outputs as MODEL in
    ONNX Runtime on random inputs (integers exactly, floats within relative error 1e-5);
    otherwise nothing is written. MODEL is never overwritten unless --inplace.

    \b
    Exit codes:
      0  written, and no node the parser rejects remains (or --allow-unfixed)
      1  written, but nodes the parser rejects remain (each listed with why no
         rule applies; JSON "remaining"); or a rewrite changed the outputs
         (nothing written)
      2  bad input or flags (nothing written)

    \b
    Examples:
      surgery fix model.onnx -o fixed.onnx
      surgery fix model.onnx -o fixed.onnx --rules fold_constants,topk_split
      surgery fix model.onnx -o fixed.onnx --plugin Det=DetPlugin_TRT:1
      surgery fix model.onnx -o fixed.onnx --shape x:1x3x48x320 --json changes.json
    """
    setup_logging(debug, quiet)

    def body() -> None:
        from trtq._core.outputs import check_outputs
        from trtq.surgery.pipeline import fix_file
        from trtq.surgery.rules.plugin_mapping import parse_plugin_specs

        # -o naming MODEL is fix_file's to refuse (its message points at --inplace); the rest here
        model_args, out = resolve_groups(opts, *FIX_GROUPS, check_paths=False)
        check_outputs({"--json": out.json}, {"MODEL": model_args.path, "-o": out.output})
        if out.output and not inplace:
            check_outputs({"-o": out.output})
        names = [r.strip() for r in rule_list.split(",") if r.strip()] if rule_list else None
        mapping = parse_plugin_specs(plugins)
        shape_map = {}
        if shapes:  # trtq.datasets imports OpenCV: load it only when --shape is given
            from trtq.datasets.cli_options import shapes_from

            shape_map = shapes_from(shapes, "--shape")
        with progress_bar(quiet, unit="passes") as progress:
            report = fix_file(
                model_args.path,
                out.output,
                rules=names,
                plugins=mapping,
                verify=not no_verify,
                shapes=shape_map,
                trials=trials,
                inplace=inplace,
                dry_run=dry_run,
                progress=progress,
            )
        out.write_json(report.to_dict(created_by="surgery fix"))
        if not out.json_to_stdout and not quiet:
            _print_fix(report)
        if report.remaining and not allow_unfixed:
            where = "written" if report.written else "not written (--dry-run)"
            raise CheckFailed(
                f"{model_args.path}: {len(report.remaining)} node(s) TensorRT's ONNX parser rejects remain "
                f"(fixed model {where}; --allow-unfixed to accept)"
            )

    run_command(body, debug=debug)


def _print_fix(report) -> None:
    console = stderr_console()
    changed = {r: n for r, n in report.fix.changes.items() if n}
    if not changed:
        console.print(f"{report.model}: no rule applies; model unchanged")
    for rule, nodes in changed.items():
        shown = ", ".join(nodes[:5]) + (f", ... ({len(nodes) - 5} more)" if len(nodes) > 5 else "")
        console.print(f"{rule}: {len(nodes)} rewrite(s): {shown}")
    if report.verify is not None:
        worst = max((o.rel for o in report.verify.outputs), default=0.0)
        console.print(
            f"verified with ONNX Runtime on {report.verify.trials} input sets: max relative error {worst:.3g}"
        )
    for note in report.notes:
        console.print(note)
    if report.written:
        console.print(f"wrote {report.output}")
    for r in report.remaining:
        op = f"{r['domain']}.{r['op']}" if r["domain"] else r["op"]
        where = "" if r["location"] == "graph" else f" in {r['location']}"
        console.print(
            f"still rejected: {r['node']} ({op}){where}: {r['reason']}; {r['why']}",
            markup=False,
            soft_wrap=True,
        )


@main.command("rules")
@uses(RULES_OUTPUT)
def list_rules(**opts) -> None:
    """List the rewrite rules in the order `fix` applies them.

    \b
    Examples:
      surgery rules
      surgery rules --json -
    """
    from trtq.surgery.rule import rule_class, rule_names

    items = [
        {"name": n, "summary": rule_class(n).summary, "verified": rule_class(n).verifiable}
        for n in rule_names()
    ]

    def body() -> None:
        (out,) = resolve_groups(opts, RULES_OUTPUT)
        out.write_json({"rules": items})
        if not out.json_to_stdout:
            for item in items:
                click.echo(f"{item['name']:<24} {item['summary']}")

    run_command(body)


@main.command("ops")
@click.option(
    "--markdown", is_flag=True, help="Print the table as Markdown (docs/SURGERY_OPS.md is this output)."
)
@uses(OPS_OUTPUT)
def list_ops(markdown: bool, **opts) -> None:
    """For every operator TensorRT's parser rejects: the rule that rewrites it, or why none can.

    Status per operator: rule (and its conditions), plugin, open (rewrite possible, not written),
    none (no exact rewrite, with the reason), no rule yet. Also ONNX Runtime's contrib QOperator
    ops and the restrictions of supported operators that rules lift.

    \b
    Examples:
      surgery ops
      surgery ops --markdown > docs/SURGERY_OPS.md
      surgery ops --json -
    """
    from trtq._core.result import result_document
    from trtq.surgery import rewrite_status

    if markdown:
        click.echo(rewrite_status.markdown(), nl=False)
        return
    table = rewrite_status.status_table()

    def body() -> None:
        (out,) = resolve_groups(opts, OPS_OUTPUT)
        out.write_json(
            result_document(
                "surgery-ops",
                backend=None,
                created_by="surgery ops",
                **{k: [s.to_dict() for s in rows] for k, rows in table.items()},
            )
        )
        if not out.json_to_stdout:
            for rows in table.values():
                for s in rows:
                    op = f"{s.domain}.{s.op}" if s.domain else s.op
                    rules = ",".join(s.rules) or "-"
                    click.echo(f"{op:<36} {s.status:<12} {rules:<30} {s.note}")

    run_command(body)


if __name__ == "__main__":  # pragma: no cover
    main()
