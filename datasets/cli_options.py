"""The data argument group: flags and config keys for choosing data and preprocessing (a CLI module).

:class:`DataArgs` is the ``data`` group of :mod:`trtq._core.args`: ``--data``, ``--batch-size``,
``--shape``, ``--limit``, the preprocessing flags, and the config keys below.

Precedence per setting: defaults < config file (``[tool.trtq]`` in ./pyproject.toml or
./trtq.toml) < flags. A flag left at ``None`` was not given. Config keys::

    [tool.trtq]
    data = "imgs/"                 # relative to the config file's folder
    shape = ["x:1x3x640x640"]      # or "x:1x3x640x640", or {x = [1, 3, 640, 640]}
    limit = 500
    shuffle = true
    seed = 0
    strict = false
    workers = 4

    [tool.trtq.preprocess]
    preset = "paddleocr"           # base values; keys below override it
    resize = "letterbox"           # stretch | letterbox | center-crop
    color = "BGR"                  # RGB | BGR
    scale = "1/255"                # number or fraction
    mean = [0.485, 0.456, 0.406]
    std = [0.229, 0.224, 0.225]
    layout = "NCHW"                # default: inferred from the model input
    dtype = "float32"              # default: the model input's dtype
    pad_value = 114                # letterbox border, 0..255
    crop_fraction = 0.875          # center-crop: crop / resized shorter side

A preset expands at the level where it is given: ``--preset`` overrides every preprocessing
value from the config file (except ``layout``/``dtype``, which presets never set), and explicit
flags override ``--preset``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click

from trtq._core.args import ArgGroup
from trtq._core.config import of_type, resolve_path, setting
from trtq._core.errors import InputError
from trtq._core.tensors import TensorInfo
from trtq.datasets.dataset import Dataset
from trtq.datasets.folder import check_folder, open_dataset, sample_shapes
from trtq.datasets.input_spec import parse_shape_arg, resolve_input_specs
from trtq.datasets.preprocess import COLORS, LAYOUTS, PRESETS, PreprocessSpec, get_preset, parse_number
from trtq.datasets.resize import RESIZERS

PREPROCESS_KEYS = ("resize", "color", "scale", "mean", "std", "layout", "dtype", "pad_value", "crop_fraction")
DATA_KEYS = ("data", "shape", "limit", "shuffle", "seed", "strict", "workers")

logger = logging.getLogger(__name__)


class FloatList(click.ParamType):
    """``a,b,c`` → tuple of floats."""

    name = "A,B,C"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return tuple(float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)


class Number(click.ParamType):
    """A float, also written as a fraction such as ``1/255``."""

    name = "NUMBER"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_number(str(value))
        except (ValueError, ZeroDivisionError):
            self.fail(f"{value!r} is not a number or fraction like 1/255", param, ctx)


def data_options(fn: Callable) -> Callable:
    """Add the data and preprocessing flags to a click command (every default is ``None``)."""
    choice = click.Choice
    opts = [
        click.option(
            "--data",
            metavar="DIR",
            default=None,
            help="Folder of images or .npy/.npz tensors (searched recursively).",
        ),
        click.option(
            "--limit",
            type=click.IntRange(min=1),
            default=None,
            help="Use at most N images (or tensor samples).",
        ),
        click.option(
            "--shuffle/--no-shuffle",
            default=None,
            help="Shuffle the file order (with --seed) before --limit.",
        ),
        click.option("--seed", type=int, default=None, help="Seed for --shuffle (default 0)."),
        click.option(
            "--strict/--no-strict", default=None, help="Fail on the first bad file instead of skipping it."
        ),
        click.option(
            "--shape",
            multiple=True,
            metavar="NAME:DIMS",
            help="Static shape of an input with dynamic dims, batch dim included, e.g. x:1x3x640x640. Repeatable.",
        ),
        click.option(
            "--preset",
            type=choice(list(PRESETS)),
            default=None,
            help="Preprocessing preset: " + "; ".join(f"{p.name}: {p.doc}" for p in PRESETS.values()),
        ),
        click.option(
            "--resize", type=choice(list(RESIZERS)), default=None, help="Resize mode (default stretch)."
        ),
        click.option(
            "--color",
            type=choice(list(COLORS), case_sensitive=False),
            default=None,
            help="Channel order (default RGB).",
        ),
        click.option(
            "--scale", type=Number(), default=None, help="Pixel multiplier before mean/std (default 1/255)."
        ),
        click.option(
            "--mean",
            type=FloatList(),
            default=None,
            help="Per-channel mean, after scale: (x*scale-mean)/std.",
        ),
        click.option("--std", type=FloatList(), default=None, help="Per-channel std, after scale."),
        click.option(
            "--layout",
            type=choice(list(LAYOUTS), case_sensitive=False),
            default=None,
            help="Default: from the model input.",
        ),
        click.option(
            "--pad-value",
            type=float,
            default=None,
            help="Letterbox border in pixel units 0..255 (default 0).",
        ),
        click.option(
            "--crop-fraction",
            type=float,
            default=None,
            help="center-crop: crop size / resized shorter side (default 1).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=0),
            default=None,
            help="Decode threads (default: CPUs, at most 4; 0 = none).",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def shapes_from(values: Any, where: str) -> dict[str, tuple[int, ...]]:
    """``["x:1x3x640x640", ...]``, one such string, or ``{name: dims}`` → ``{name: shape}``."""
    if values is None or values == () or values == []:
        return {}
    if isinstance(values, str):
        values = [values]
    if isinstance(values, Mapping):
        out = {}
        for name, dims in values.items():
            text = dims if isinstance(dims, str) else "x".join(str(d) for d in dims)
            out[str(name)] = parse_shape_arg(f"{name}:{text}")[1]
        return out
    if not isinstance(values, Sequence):
        raise InputError(f"{where} shape must be a list of NAME:DIMS strings, got {values!r}")
    out: dict[str, tuple[int, ...]] = {}
    for v in values:
        name, shape = parse_shape_arg(str(v))
        if name in out and out[name] != shape:
            raise InputError(f"{where} gives input '{name}' two shapes: {out[name]} and {shape}")
        out[name] = shape
    return out


def preprocess_from(
    options: Mapping[str, Any], config_preprocess: Mapping[str, Any]
) -> PreprocessSpec | None:
    """Merge config and flag preprocessing settings (see the module docstring); ``None`` if none set."""
    cfg = {str(k).replace("-", "_"): v for k, v in config_preprocess.items()}
    unknown = sorted(set(cfg) - {*PREPROCESS_KEYS, "preset"})
    if unknown:
        raise InputError(
            f"config file: unknown key(s) {unknown} in the preprocess table; known: preset, "
            f"{', '.join(PREPROCESS_KEYS)}"
        )
    values: dict[str, Any] = {}
    given = False
    for preset, explicit in ((cfg.get("preset"), cfg), (options.get("preset"), options)):
        if preset is not None:
            values.update(get_preset(preset).fields)
            given = True
        for key in PREPROCESS_KEYS:
            if explicit.get(key) is not None:
                values[key] = explicit[key]
                given = True
    return PreprocessSpec(**values) if given else None


@dataclass(frozen=True)
class DataSettings:
    """The data a command reads, resolved: defaults < config file < flags."""

    data: str | None  # folder (a config value is relative to the config file); None = not given
    shapes: Mapping[str, tuple[int, ...]]  # --shape: static input shapes, batch dim included
    preprocess: PreprocessSpec | None  # None: the loader's defaults
    batch_size: int | None  # None: the model's static batch, else 1
    limit: int | None = None
    shuffle: bool = False
    seed: int = 0
    strict: bool = False
    workers: int | None = None
    flags: Mapping[str, Any] = field(default_factory=dict)  # data flags given on the command line

    def batch_size_for(self, model_inputs: Sequence[TensorInfo]) -> int:
        from trtq.datasets import default_batch_size

        return int(self.batch_size if self.batch_size is not None else default_batch_size(model_inputs))

    def open(self, model_inputs: Sequence[TensorInfo], batch_size: int | None = None) -> Dataset:
        """The dataset for a model with ``model_inputs``, batched by ``batch_size`` (default:
        :meth:`batch_size_for`); ``dataset.inputs`` are the resolved static input specs."""
        _quiet_opencv()
        if not self.data:
            raise InputError(
                'no data folder: give --data DIR, or set data = "DIR" under [tool.trtq] in pyproject.toml or trtq.toml'
            )
        batch_size = self.batch_size_for(model_inputs) if batch_size is None else batch_size
        shapes = dict(self.shapes)
        # a folder of .npy/.npz samples tells the dynamic dims it was saved with (e.g. a sequence
        # length), so text and other tensor models need no --shape
        shapes.update(sample_shapes(Path(self.data), model_inputs, shapes))
        try:
            specs = resolve_input_specs(model_inputs, shapes, batch_size)
        except InputError:
            check_folder(Path(self.data))  # a missing or empty folder is the problem to name first
            raise
        return open_dataset(
            self.data,
            specs,
            self.preprocess,
            limit=self.limit,
            shuffle=self.shuffle,
            seed=self.seed,
            strict=self.strict,
            workers=self.workers,
        )


class DataArgs(ArgGroup):
    """``--data``, ``--batch-size`` and the data/preprocessing flags of :func:`data_options`;
    config keys ``data``, ``batch_size``, ``shape``, ``limit``, ... and ``[tool.trtq.preprocess]``."""

    config_keys = (*DATA_KEYS, "batch_size", "preprocess")

    def decorators(self) -> list[Callable[[Callable], Callable]]:
        batch = click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=None,
            help="Samples per batch (default: the model's static batch, else 1).",
        )
        return [batch, data_options]

    def resolve(
        self, opts: Mapping[str, Any], config: Mapping[str, Any], config_path: Path | None
    ) -> DataSettings:
        cfg_pre = config.get("preprocess") or {}
        if not isinstance(cfg_pre, Mapping):
            raise InputError(
                "config file: preprocess must be a table ([tool.trtq.preprocess], or [preprocess] in trtq.toml)"
            )

        def pick(key: str, kind: type, default: Any) -> Any:
            value = opts.get(key)
            if value is None:
                value = _typed(config, key, kind)
            return default if value is None else value

        batch_size = setting(opts, config, "batch_size")
        given = (*DATA_KEYS, "preset", *PREPROCESS_KEYS)
        return DataSettings(
            data=opts.get("data") or resolve_path(_typed(config, "data", str), config_path),
            shapes=shapes_from(opts.get("shape"), "--shape")
            or shapes_from(config.get("shape"), "[tool.trtq]"),
            preprocess=preprocess_from(opts, cfg_pre),
            batch_size=None if batch_size is None else int(batch_size),
            limit=pick("limit", int, None),
            shuffle=pick("shuffle", bool, False),
            seed=_non_negative("seed", pick("seed", int, 0)),
            strict=pick("strict", bool, False),
            workers=pick("workers", int, None),
            flags={k: _plain(opts[k]) for k in given if opts.get(k) not in (None, ())},
        )

    def paths(self, settings: DataSettings) -> tuple[dict[str, str | None], dict[str, Any]]:
        return {}, {"--data": _data_folder(settings.data)}


class EvalDataArgs(ArgGroup):
    """``--eval-data DIR`` (config key ``eval_data``): held-out data, read with the same data and
    preprocessing flags as ``--data`` (shape, preset, limit, batch size, ...). Commands search or
    calibrate on ``--data`` and report the answer on the held-out data beside it; INT8 ranges
    never come from it. Resolves to the ``--data`` settings with the folder replaced, or None."""

    config_keys = ("eval_data",)

    def decorators(self) -> list[Callable[[Callable], Callable]]:
        return [
            click.option(
                "--eval-data",
                metavar="DIR",
                default=None,
                help="Held-out folder: the answer found on --data is also reported on it "
                "(same data and preprocessing flags as --data; never used for INT8 ranges).",
            )
        ]

    def resolve(
        self, opts: Mapping[str, Any], config: Mapping[str, Any], config_path: Path | None
    ) -> DataSettings | None:
        folder = opts.get("eval_data") or resolve_path(_typed(config, "eval_data", str), config_path)
        if not folder:
            return None
        data = DataArgs().resolve(opts, config, config_path)
        if data.data and Path(data.data).resolve() == Path(folder).resolve():
            logger.warning(
                "--eval-data %s is the --data folder: its figures are on the data the answer was fitted "
                "to, not held out",
                folder,
            )
        return replace(data, data=str(folder))

    def paths(self, settings: DataSettings | None) -> tuple[dict[str, str | None], dict[str, Any]]:
        return {}, {"--eval-data": _data_folder(settings.data) if settings is not None else None}


def _data_folder(folder: str | None) -> Any:
    """The data folder as :func:`trtq._core.outputs.check_outputs` protects it: its image and
    tensor files may not be replaced by an output."""
    from trtq._core.outputs import DataFolder
    from trtq.datasets.image_folder import IMAGE_EXTENSIONS
    from trtq.datasets.tensor_folder import TENSOR_EXTENSIONS

    return None if folder is None else DataFolder(folder, IMAGE_EXTENSIONS + TENSOR_EXTENSIONS)


def _non_negative(name: str, value: int) -> int:
    if value < 0:
        raise InputError(f"--{name} must be >= 0, got {value}")
    return value


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def dataset_from_options(
    model_inputs: Sequence[TensorInfo],
    batch_size: int,
    options: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    config_path: Path | None = None,
) -> tuple[Dataset, list[TensorInfo]]:
    """Open the dataset the flags and config describe, for a model with ``model_inputs``
    (:class:`DataArgs` in one call). Returns the dataset and its resolved static input specs."""
    dataset = DataArgs().resolve(options, config, config_path).open(model_inputs, batch_size)
    return dataset, dataset.inputs


def _typed(config: Mapping[str, Any], key: str, kind: type) -> Any:
    return of_type(key, config.get(key), (kind,))


def _quiet_opencv() -> None:
    """OpenCV logs its own lines for every file it cannot decode; the CLI reports one line per
    file itself, so OpenCV's log is silenced for the process (CLI only, never in library code)."""
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # pragma: no cover - very old OpenCV
        pass
