"""Argument groups (trtq._core.args) and the result-document base (trtq._core.result).

Every command of every tool resolves its flags through the groups: for each command and each
config key its groups read, the config value is used without the flag, and the flag wins over it.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import trtq
from trtq._core.args import OutputArgs, resolve_groups
from trtq._core.result import SCHEMA_VERSION, result_document
from trtq.calib.cli import main as calib_main
from trtq.precision.cli import main as precision_main
from trtq.reports.cli import main as reports_main
from trtq.surgery.cli import main as surgery_main

TOOLS = {"calib": calib_main, "precision": precision_main, "surgery": surgery_main, "reports": reports_main}
# arguments a command needs before it parses at all (required positionals and options)
BASE_ARGS = {
    "precision pin": ["--pins", "p.json"],
    "calib merge": ["a.npz"],
    "calib compute": ["h.npz"],
    "calib show": ["c.cache"],
    "calib diff": ["a.cache", "b.cache"],
    "reports build": ["r.json"],
}
HERE = Path("/cfg")  # the config file's folder: config paths resolve against it

# config key -> (flag arguments, config table, settings -> value, value from config, value from flag)
SAMPLES = {
    "model": (["flag.onnx"], {"model": "cfg.onnx"}, lambda s: s.path, str(HERE / "cfg.onnx"), "flag.onnx"),
    "data": (["--data", "flag/"], {"data": "cfg/"}, lambda s: s.data, str(HERE / "cfg/"), "flag/"),
    "eval_data": (
        ["--eval-data", "flag/"],
        {"eval_data": "cfg/"},
        lambda s: s.data,
        str(HERE / "cfg/"),
        "flag/",
    ),
    "batch_size": (["--batch-size", "3"], {"batch_size": 5}, lambda s: s.batch_size, 5, 3),
    "shape": (
        ["--shape", "x:2x3"],
        {"shape": ["x:1x3"]},
        lambda s: dict(s.shapes),
        {"x": (1, 3)},
        {"x": (2, 3)},
    ),
    "limit": (["--limit", "3"], {"limit": 5}, lambda s: s.limit, 5, 3),
    "shuffle": (["--no-shuffle"], {"shuffle": True}, lambda s: s.shuffle, True, False),
    "seed": (["--seed", "3"], {"seed": 5}, lambda s: s.seed, 5, 3),
    "strict": (["--no-strict"], {"strict": True}, lambda s: s.strict, True, False),
    "workers": (["--workers", "3"], {"workers": 5}, lambda s: s.workers, 5, 3),
    "preprocess": (
        ["--resize", "letterbox"],
        {"preprocess": {"resize": "center-crop"}},
        lambda s: s.preprocess.resize,
        "center-crop",
        "letterbox",
    ),
    "cache": (
        ["--cache", "flag.cache"],
        {"cache": "cfg.cache"},
        lambda s: s.cache,
        str(HERE / "cfg.cache"),
        "flag.cache",
    ),
    "method": (["--method", "minmax"], {"method": "percentile"}, lambda s: s.method, "percentile", "minmax"),
    "percentile": (
        ["--percentile", "99.5"],
        {"method": "percentile", "percentile": 99.0},
        lambda s: s.params["percentile"],
        99.0,
        99.5,
    ),
    "num_bins": (["--num-bins", "64"], {"num_bins": 128}, lambda s: s.num_bins, 128, 64),
    "trt_version": (
        ["--trt-version", "10.1.0"],
        {"trt-version": "10.2.0"},
        lambda s: s.trt_version,
        "10.2.0",
        "10.1.0",
    ),
    "cache_algorithm": (
        ["--cache-algorithm", "MinMaxCalibration"],
        {"cache_algorithm": "EntropyCalibration2"},
        lambda s: s.cache_algorithm,
        "EntropyCalibration2",
        "MinMaxCalibration",
    ),
    "backend": (
        ["--backend", "onnxruntime"],
        {"backend": "tensorrt"},
        lambda s: s.backend,
        "tensorrt",
        "onnxruntime",
    ),
    "threads": (["--threads", "3"], {"threads": 5}, lambda s: s.threads, 5, 3),
}


def _commands():
    for tool, group in TOOLS.items():
        for name, command in group.commands.items():
            yield f"{tool} {name}", command


def _cases():
    for label, command in _commands():
        for group in getattr(command.callback, "trtq_groups", ()):
            for key in group.config_keys:
                yield pytest.param(label, command, group, key, id=f"{label}:{key}")


def test_every_command_resolves_through_groups():
    missing = [label for label, command in _commands() if not getattr(command.callback, "trtq_groups", ())]
    assert missing == []


@pytest.mark.parametrize(("label", "command", "group", "key"), list(_cases()))
def test_flag_beats_config_for_every_group_of_every_command(label, command, group, key):
    flag_args, table, read, from_config, from_flag = SAMPLES[key]
    base = BASE_ARGS.get(label, [])
    if key == "model":  # the positional comes first
        with_flag, without = [*flag_args, *base], base
    else:
        with_flag, without = [*base, *flag_args], base
    if key != "cache":  # calib run/compute need a cache to write
        table = {"cache": "base.cache", **table}
    config = (table, HERE / "trtq.toml")
    without_opts = command.make_context(label, list(without)).params
    with_opts = command.make_context(label, list(with_flag)).params
    (settings,) = resolve_groups(without_opts, group, config=config)
    assert read(settings) == from_config  # defaults < config
    (settings,) = resolve_groups(with_opts, group, config=config)
    assert read(settings) == from_flag  # config < flags


@pytest.mark.parametrize("tool", list(TOOLS))
def test_flags_have_one_meaning_across_commands(tool):
    """-o is a file the command makes, --json takes PATH|-, --cache a file: never a format switch."""
    for label, command in _commands():
        for param in command.params:
            if "-o" in param.opts or "--json" in param.opts or "--cache" in param.opts:
                assert isinstance(param, click.Option) and not param.is_flag, (label, param.opts)
                assert not isinstance(param.type, click.Choice), (label, param.opts)
            if "-o" in param.opts:
                assert param.opts == ["-o", "--output"], label
        assert "-O" not in {o for p in command.params for o in p.opts}, label


def test_output_args_one_meaning(tmp_path):
    group = OutputArgs("the file", output_required="x.onnx", report=True)
    (out,) = resolve_groups({"output": "a.onnx", "json_path": "-", "report_path": None}, group)
    assert out.output == "a.onnx" and out.json_to_stdout and out.report is None
    from trtq._core.errors import InputError

    with pytest.raises(InputError, match="give -o x.onnx"):
        resolve_groups({"json_path": None}, group)
    (out,) = resolve_groups({"output": "a", "json_path": str(tmp_path / "r.json")}, group)
    out.write_json({"kind": "k"})
    assert json.loads((tmp_path / "r.json").read_text()) == {"kind": "k"}


def test_unknown_backend_in_config_names_the_choices():
    from trtq._core.args import RuntimeArgs
    from trtq._core.errors import InputError

    with pytest.raises(InputError, match="backend 'nope' is unknown.*onnxruntime"):
        resolve_groups({}, RuntimeArgs("b"), config=({"backend": "nope"}, None))


def test_result_document_envelope():
    doc = result_document(
        "compare", backend="onnxruntime (emulated)", created_by="precision compare", runs=[]
    )
    assert list(doc)[:5] == ["kind", "schema", "trtq_version", "created_by", "backend"]
    assert doc["schema"] == SCHEMA_VERSION and doc["trtq_version"] == trtq.__version__
    assert result_document("bisect", backend=None)["created_by"] == "python"


def test_surgery_documents_carry_the_envelope(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "m.onnx")
    res = CliRunner().invoke(
        surgery_main, ["check", str(tmp_path / "m.onnx"), "--tensorrt", "no", "--json", "-"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["kind"] == "surgery-check" and doc["trtq_version"] == trtq.__version__
    assert doc["created_by"] == "surgery check" and doc["backend"] is None
    out = tmp_path / "o.onnx"
    res = CliRunner().invoke(surgery_main, ["fix", str(tmp_path / "m.onnx"), "-o", str(out), "--json", "-"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["kind"] == "surgery-fix" and doc["created_by"] == "surgery fix"
    assert doc["backend"] == ("onnxruntime" if doc["verify"] is not None else None)


def test_config_values_of_the_wrong_type_are_one_line_errors():
    from trtq._core.config import checked, model_from, setting
    from trtq._core.errors import InputError

    for key, value, message in (
        ("model", 5, "model must be a string, got 5"),
        ("batch_size", "two", "batch_size must be an integer"),
        ("threads", True, "threads must be an integer"),
        ("percentile", "high", "percentile must be a number"),
        ("threads", 0, "threads must be at least 1"),
    ):
        with pytest.raises(InputError, match=message):
            checked(key, value)
    with pytest.raises(InputError, match="model must be a string"):
        model_from(None, {"model": ["m.onnx"]}, None, "usage")
    with pytest.raises(InputError, match="threads must be an integer"):
        setting({}, {"threads": "many"}, "threads")
    assert setting({"threads": 3}, {"threads": "many"}, "threads") == 3  # a flag wins, unchecked config
    assert setting({}, {"percentile": 99}, "percentile") == 99 and checked("unknown", object()) is not None


def _tiny_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_unknown_config_keys_are_named_once_with_the_nearest_key(tmp_path, monkeypatch):
    _tiny_model(tmp_path / "m.onnx")
    (tmp_path / "trtq.toml").write_text(
        'model = "m.onnx"\nmetod = "mse"\nbatchsize = 2\nzzz_unrelated = 1\n'
        # known: a method parameter (either spelling), eval_data, precision, the preprocess table
        'auto-samples = 8\npercentile = 99.9\neval_data = "held"\nprecision = "int8"\n'
        '[preprocess]\nresize = "stretch"\n'
    )
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(surgery_main, ["check"])
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if "unknown key" in line]
    assert len(warnings) == 1, res.stderr
    assert "'metod' (did you mean 'method'?)" in warnings[0]
    assert "'batchsize' (did you mean 'batch_size'?)" in warnings[0] and "'zzz_unrelated'" in warnings[0]
    for known in ("auto-samples", "percentile", "eval_data", "precision", "preprocess", "model"):
        assert f"'{known}'" not in warnings[0]


def test_every_config_key_a_command_reads_is_known():
    from trtq._core.args import known_config_keys
    from trtq.calib.methods import available_methods

    known = known_config_keys()
    for label, command in _commands():
        for group in getattr(command.callback, "trtq_groups", ()):
            assert set(group.config_keys) <= known, (label, group)
    assert {k for m in available_methods() for k in m.params} <= known
    assert {"data", "shape", "batch_size", "eval_data", "preprocess", "precision"} <= known


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_usage_errors_are_one_line_like_every_other_error(tool):
    group = TOOLS[tool]
    command = sorted(group.commands)[0]
    for args, words in (
        ([command, "--no-such-flag"], "No such option '--no-such-flag'"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ):
        res = CliRunner().invoke(group, args, prog_name=tool)
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 2 and len(lines) == 1, res.output
        assert lines[0].startswith("error: ") and words in lines[0] and "--help')" in lines[0]
    helped = CliRunner().invoke(group, [command, "--help"], prog_name=tool)
    assert helped.exit_code == 0 and helped.output.startswith("Usage: ")


def test_an_option_missing_its_value_points_to_the_command_help():
    """click raises this one before the command has a context: the hint is still the command's."""
    res = CliRunner().invoke(precision_main, ["quantize", "m.onnx", "--pin-worst"], prog_name="precision")
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert (
        res.output == "error: Option '--pin-worst' requires an argument. (see 'precision quantize --help')\n"
    )


def test_a_click_value_error_names_the_flag_in_one_line():
    res = CliRunner().invoke(calib_main, ["run", "m.onnx", "--batch-size", "0"], prog_name="calib")
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert (
        res.output.startswith("error: Invalid value for '--batch-size'")
        and "(see 'calib run --help')" in res.output
    )
