"""--data/--shape/preprocessing flags, the config file, and their precedence, through click."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from trtq._core.cli import run_command
from trtq._core.config import find_config
from trtq._core.errors import InputError
from trtq.datasets import PreprocessSpec
from trtq.datasets.cli_options import data_options, dataset_from_options, preprocess_from, shapes_from
from trtq.runtime.runner import TensorInfo

DYNAMIC = [TensorInfo("x", ("N", 3, "H", "W"), np.dtype(np.float32))]


@click.command()
@data_options
@click.option("--batch-size", type=int, default=2)
@click.pass_obj
def show(obj, batch_size, **options):
    """Print what the data options resolve to (a test command)."""

    def body():
        config, path = obj or ({}, None)
        ds, specs = dataset_from_options(DYNAMIC, batch_size, options, config, config_path=path)
        batch = next(ds.batches(batch_size))["x"]
        click.echo(
            json.dumps(
                {
                    "shape": list(specs[0].shape),
                    "files": [p.name for p in ds.files],
                    "first": float(batch[0, 0, 0, 0]),
                    "workers": ds.workers,
                }
            )
        )

    run_command(body)


def invoke(args, obj=None):
    return CliRunner().invoke(show, args, obj=obj)


def test_help_lists_flags_and_presets():
    out = invoke(["--help"]).output
    for flag in (
        "--data",
        "--limit",
        "--shuffle / --no-shuffle",
        "--seed",
        "--strict",
        "--shape",
        "--preset",
        "--resize",
        "--color",
        "--scale",
        "--mean",
        "--std",
        "--layout",
        "--pad-value",
        "--workers",
    ):
        assert flag in out, flag
    assert "imagenet" in out and "paddleocr" in out and "x:1x3x640x640" in out


def test_flags_end_to_end(color_folder):
    res = invoke(
        [
            "--data",
            str(color_folder),
            "--shape",
            "x:1x3x8x8",
            "--scale",
            "1/1",
            "--color",
            "bgr",
            "--mean",
            "5",
            "--std",
            "2",
            "--shuffle",
            "--seed",
            "1",
            "--limit",
            "4",
            "--workers",
            "0",
        ]
    )
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got["shape"] == [2, 3, 8, 8] and len(got["files"]) == 4 and got["workers"] == 0
    assert got["files"] != ["0.png", "1.png", "2.png", "3.png"]
    first_blue = int(Path(got["files"][0]).stem) * 10
    assert got["first"] == pytest.approx((first_blue - 5) / 2)


def test_missing_shape_and_missing_data_are_one_line_exit_2(color_folder, tmp_path):
    res = invoke(["--data", str(color_folder)])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "dynamic dim" in res.output and "--shape x:" in res.output
    res = invoke([])
    assert res.exit_code == 2 and "give --data DIR" in res.output
    (tmp_path / "empty").mkdir()
    res = invoke(["--data", str(tmp_path / "empty"), "--shape", "x:1x3x8x8"])
    assert res.exit_code == 2 and res.output.startswith("error: no images or tensors found in")
    res = invoke(["--data", str(color_folder), "--shape", "x:1x3x8x8", "--mean", "a,b"])
    assert res.exit_code == 2 and "comma-separated" in res.output


def test_config_file_supplies_data_shape_and_preprocessing(tmp_path, color_folder):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "pyproject.toml").write_text(
        f"""
[tool.trtq]
data = "{Path("..") / color_folder.name}"
shape = ["x:1x3x8x8"]
limit = 3
workers = 1

[tool.trtq.preprocess]
scale = "1/1"
color = "BGR"
mean = [1, 1, 1]
"""
    )
    config, path = find_config(tmp_path / "proj")
    # color_folder lives in tmp_path/colors: "../colors" relative to the config file
    assert color_folder.parent == tmp_path
    res = invoke([], obj=(config, path))
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got["files"] == ["0.png", "1.png", "2.png"] and got["first"] == -1.0 and got["workers"] == 1
    # flags beat the config
    res = invoke(["--limit", "5", "--mean", "0", "--shape", "x:1x3x4x4"], obj=(config, path))
    got = json.loads(res.output)
    assert len(got["files"]) == 5 and got["first"] == 0.0 and got["shape"] == [2, 3, 4, 4]


def test_preset_precedence():
    config = {"preset": "imagenet", "mean": [0.1, 0.2, 0.3], "layout": "NHWC"}
    spec = preprocess_from({}, config)
    assert spec.resize == "center-crop" and spec.mean == (0.1, 0.2, 0.3) and spec.layout == "NHWC"
    spec = preprocess_from({"preset": "paddleocr"}, config)  # flag preset beats config values...
    assert spec.mean == PreprocessSpec.preset("paddleocr").mean and spec.color == "BGR"
    assert spec.layout == "NHWC"  # ...except layout/dtype, which presets never set
    spec = preprocess_from({"preset": "paddleocr", "std": (1.0,)}, config)
    assert spec.std == (1.0,)
    assert preprocess_from({}, {}) is None
    assert preprocess_from({"pad_value": 3.0}, {"pad-value": 9}).pad_value == 3.0
    with pytest.raises(InputError, match="unknown key.*'means'"):
        preprocess_from({}, {"means": [1]})
    with pytest.raises(InputError, match="preset 'coco'"):
        preprocess_from({}, {"preset": "coco"})


def test_shapes_from_config_forms():
    assert shapes_from(["x:1x3x8x8"], "cfg") == {"x": (1, 3, 8, 8)}
    assert shapes_from("x:1x3x8x8", "cfg") == {"x": (1, 3, 8, 8)}
    assert shapes_from({"x": [1, 3, 8, 8], "y": "1x2"}, "cfg") == {"x": (1, 3, 8, 8), "y": (1, 2)}
    assert shapes_from((), "--shape") == {}
    with pytest.raises(InputError, match="NAME:DIMS"):
        shapes_from(5, "cfg")


def test_config_type_errors(color_folder):
    with pytest.raises(InputError, match="limit must be an integer"):
        dataset_from_options(
            DYNAMIC, 1, {"shape": ("x:1x3x8x8",)}, {"data": str(color_folder), "limit": "ten"}
        )


def test_trtq_toml_reads_a_copied_tool_trtq_table_and_refuses_a_mix(tmp_path):
    # A [tool.trtq] snippet copied from pyproject.toml into trtq.toml used to be read as the
    # top-level table {"tool": ...}: every setting silently ignored.
    (tmp_path / "trtq.toml").write_text('[tool.trtq]\nlimit = 3\n\n[tool.trtq.preprocess]\ncolor = "BGR"\n')
    config, path = find_config(tmp_path)
    assert path == tmp_path / "trtq.toml"
    assert config == {"limit": 3, "preprocess": {"color": "BGR"}}
    (tmp_path / "trtq.toml").write_text("limit = 5\n")
    assert find_config(tmp_path)[0] == {"limit": 5}
    (tmp_path / "trtq.toml").write_text("limit = 5\n[tool.trtq]\nlimit = 3\n")
    with pytest.raises(InputError, match=r"trtq.toml: has both a \[tool.trtq\] table and other settings"):
        find_config(tmp_path)


def test_repeated_shapes_negative_seeds_and_missing_folders_are_named():
    from pathlib import Path

    from trtq._core.errors import InputError
    from trtq._core.tensors import TensorInfo
    from trtq.datasets.cli_options import DataArgs, shapes_from

    with pytest.raises(InputError, match="gives input 'x' two shapes"):
        shapes_from(["x:1x3x48x192", "x:1x3x32x100"], "--shape")
    assert shapes_from(["x:1x3x4x4", "x:1x3x4x4"], "--shape") == {"x": (1, 3, 4, 4)}
    with pytest.raises(InputError, match="--seed must be >= 0"):
        DataArgs().resolve({"data": "d", "seed": -1, "shuffle": True}, {}, None)
    dynamic = [TensorInfo("x", (None, 3, None, None), np.dtype(np.float32))]
    settings = DataArgs().resolve({"data": str(Path("/nonexistent/trtq-data"))}, {}, None)
    with pytest.raises(InputError, match="no such folder"):  # not "give its shape with --shape"
        settings.open(dynamic)
