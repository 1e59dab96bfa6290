"""Argument groups: the flags every command-line tool shares, with one meaning each (a CLI module).

A group owns a few flags, the ``[tool.trtq]`` config keys that mirror them, and the precedence
defaults < config file < flags, applied once in :meth:`ArgGroup.resolve`, which returns a frozen
settings dataclass. A command composes the groups it needs with :func:`uses`, resolves them with
:func:`resolve_groups`, calls the public API and renders the result.

========================  =====================  =============================================
group                     flags (config keys)    meaning, in every command that has it
========================  =====================  =============================================
:class:`ModelArgs`        ``MODEL`` (``model``)  the ONNX model, else ``model`` of the config
``DataArgs`` (datasets)   ``--data``,            the data and its preprocessing, batched by
                          ``--batch-size``, ...  ``--batch-size`` (``trtq.datasets.cli_options``)
``EvalDataArgs``          ``--eval-data``        held-out data, read like ``--data`` (its flags);
(datasets)                (``eval_data``)        answers found on ``--data`` reported on it too
``MetricArgs``            ``--metric``,          the metric (tensor or task metric, plug-ins) and
(precision)               ``--binarize``         its parameters (``trtq.precision.cli_options``)
``RangesArgs`` (calib)    ``--cache``,           the TensorRT calibration cache (read, or
                          ``--method``, ...      written by ``calib``), the calibration method
:class:`RuntimeArgs`      ``--backend``,         the backend that runs the model, its threads
                          ``--threads``
:class:`OutputArgs`       ``-o``, ``--json``,    ``-o FILE``: the file the command makes;
                          ``--report``           ``--json PATH|-``: the result document
                                                 (``-`` = stdout); ``--report``: HTML report
========================  =====================  =============================================

Output paths have no config keys: they name what one run writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from trtq._core.cli import BackendName
from trtq._core.config import find_config, model_from, setting
from trtq._core.errors import InputError

Options = Mapping[str, Any]
GROUP_CLASSES: list[type[ArgGroup]] = []  # every ArgGroup subclass, in definition order


class ArgGroup:
    """A group of flags. Subclasses list their click decorators in :meth:`decorators`, the config
    keys they read in ``config_keys``, and turn (flags, config) into settings in :meth:`resolve`.
    Every subclass is recorded (:data:`GROUP_CLASSES`); :meth:`known_keys` lists every key the
    group can read whatever its constructor's options, for the unknown-key warning."""

    config_keys: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        GROUP_CLASSES.append(cls)

    @classmethod
    def known_keys(cls) -> tuple[str, ...]:
        """Every config key an instance of this group may read (default: ``config_keys``)."""
        keys = cls.config_keys
        return keys if isinstance(keys, tuple) else ()

    @classmethod
    def registry_keys(cls) -> tuple[str, ...]:
        """Config keys that come from a registry (e.g. calibration methods' parameters): looked up
        only when a config key is not among the :meth:`known_keys`, since loading the registry
        costs start-up time."""
        return ()

    def decorators(self) -> list[Callable[[Callable], Callable]]:
        raise NotImplementedError

    def resolve(self, opts: Options, config: Mapping[str, Any], config_path: Path | None) -> Any:
        raise NotImplementedError

    def paths(self, settings: Any) -> tuple[dict[str, str | None], dict[str, str | None]]:
        """``(outputs, inputs)``: flag -> path of the files the resolved ``settings`` write and
        read, checked by :func:`resolve_groups` before any work (none by default)."""
        return {}, {}

    def __call__(self, fn: Callable) -> Callable:
        """Add the group's flags to a click command (help lists them in declaration order)."""
        for deco in reversed(self.decorators()):
            fn = deco(fn)
        return fn


def uses(*groups: ArgGroup) -> Callable[[Callable], Callable]:
    """Add the flags of ``groups`` to a click command and record the groups on it
    (``command.callback.trtq_groups``), so that tests can check every command's precedence."""

    def decorate(fn: Callable) -> Callable:
        for group in reversed(groups):
            fn = group(fn)
        fn.trtq_groups = (*groups, *getattr(fn, "trtq_groups", ()))  # type: ignore[attr-defined]
        return fn

    return decorate


#: Flags outside the groups that name files, by their click parameter name: outputs and inputs.
EXTRA_OUTPUTS = {"hist_path": "--histograms", "pins_out": "--pins-out"}
EXTRA_INPUTS = {
    "pins_path": "--pins",
    "pins_file": "--pins",
    "histograms": "HISTOGRAMS",
    "results": "RESULTS",
}


#: How an error about a config value starts (``config.of_type``, the preprocess table): replaced by
#: the file's name once :func:`resolve_groups` knows it.
CONFIG_ERROR = "config file: "
#: Config keys read by one command outside the argument groups.
COMMAND_CONFIG_KEYS = ("precision",)  # precision bisect / pin: the precision searched
#: The modules whose argument groups read config keys (imported to list every known key).
GROUP_MODULES = ("trtq.datasets.cli_options", "trtq.calib.cli_options", "trtq.precision.cli_options")
_warned: set[Path] = set()


def known_config_keys(registries: bool = True) -> frozenset[str]:
    """Every top-level config key some command reads: the argument groups' keys and
    :data:`COMMAND_CONFIG_KEYS`, and with ``registries`` the keys from registries (the calibration
    methods' parameters, plug-ins too: :meth:`ArgGroup.registry_keys`)."""
    import importlib

    for module in GROUP_MODULES:
        importlib.import_module(module)
    keys = {k for cls in GROUP_CLASSES for k in cls.known_keys()} | set(COMMAND_CONFIG_KEYS)
    if registries:
        keys |= {k for cls in GROUP_CLASSES for k in cls.registry_keys()}
    return frozenset(keys)


def warn_unknown_keys(table: Mapping[str, Any], path: Path | None) -> None:
    """One warning (once per file and process) naming the keys of the config file that no command
    reads, with the nearest known key: a misspelt key would otherwise be silently unused. Keys
    are compared with ``-`` read as ``_``, as :func:`~trtq._core.config.setting` reads them."""
    if path is None or path in _warned or not table:
        return
    _warned.add(path)
    known = known_config_keys(registries=False)  # the usual case: no registry loaded at start-up
    unknown = [k for k in table if k.replace("-", "_") not in known]
    if unknown:
        known = known_config_keys()
        unknown = [k for k in unknown if k.replace("-", "_") not in known]
    if not unknown:
        return
    import difflib
    import logging

    where = f"{path.name} [tool.trtq]" if path.name == "pyproject.toml" else path.name
    parts = []
    for key in unknown:
        near = difflib.get_close_matches(key.replace("-", "_"), sorted(known), n=1, cutoff=0.75)
        parts.append(f"'{key}'" + (f" (did you mean '{near[0]}'?)" if near else ""))
    logging.getLogger("trtq").warning(
        f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(parts)} ignored; "
        "the keys are the flags' names (README.md, 'Config')"
    )


def resolve_groups(
    opts: Options,
    *groups: ArgGroup,
    config: tuple[Mapping[str, Any], Path | None] | None = None,
    check_paths: bool = True,
) -> tuple[Any, ...]:
    """Resolve each group: defaults < config file < flags. The config file is read once (``config``:
    an already read ``find_config()``), and not at all when no group has config keys.

    Then, unless ``check_paths`` is off, the output files (the groups' and :data:`EXTRA_OUTPUTS`)
    are checked before any work: writable, distinct, none an input
    (:func:`trtq._core.outputs.check_outputs`)."""
    if config is None:
        config = find_config() if any(g.config_keys for g in groups) else ({}, None)
    table, path = config
    warn_unknown_keys(table, path)
    try:
        resolved = tuple(g.resolve(opts, table, path) for g in groups)
    except InputError as exc:  # a config value's error: name the file it came from
        if path is None or not str(exc).startswith(CONFIG_ERROR):
            raise
        where = f"{path.name} [tool.trtq]" if path.name == "pyproject.toml" else path.name
        raise InputError(f"{where}: {str(exc).removeprefix(CONFIG_ERROR)}") from exc
    if check_paths:
        from trtq._core.outputs import check_outputs

        outputs = {flag: opts.get(key) for key, flag in EXTRA_OUTPUTS.items()}
        inputs: dict[str, Any] = {}
        for key, flag in EXTRA_INPUTS.items():
            given = opts.get(key)
            for i, one in enumerate(given if isinstance(given, (list, tuple)) else [given]):
                inputs[f"{flag} #{i + 1}" if isinstance(given, (list, tuple)) else flag] = one
        for group, settings in zip(groups, resolved, strict=True):
            more_out, more_in = group.paths(settings)
            outputs.update(more_out)
            inputs.update(more_in)
        check_outputs(outputs, inputs)
    return resolved


# -- model ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSettings:
    path: str  # the ONNX file: the MODEL argument, else the config's ``model`` (relative to its file)


class ModelArgs(ArgGroup):
    """``MODEL``: the ONNX model, a positional argument; without it, ``model`` of the config file.
    ``usage`` is the example command shown when neither gives one."""

    config_keys = ("model",)

    def __init__(self, usage: str) -> None:
        self.usage = usage

    def decorators(self) -> list[Callable[[Callable], Callable]]:
        return [click.argument("model", required=False, type=click.Path(dir_okay=False))]

    def resolve(self, opts: Options, config: Mapping[str, Any], config_path: Path | None) -> ModelSettings:
        return ModelSettings(model_from(opts.get("model"), config, config_path, self.usage))

    def paths(self, settings: ModelSettings) -> tuple[dict[str, str | None], dict[str, str | None]]:
        return {}, {"MODEL": settings.path}


# -- runtime --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeSettings:
    backend: str  # a name in trtq.runtime's registry (built-ins and entry points)
    threads: int | None  # None: the backend's default


class RuntimeArgs(ArgGroup):
    """``--backend NAME`` (resolved through :mod:`trtq.runtime`'s registry, entry points included,
    when the command runs, so that ``--help`` imports no backend) and ``--threads N``."""

    def __init__(
        self, backend_help: str | None, threads_help: str = "Threads for the backend (default: all cores)."
    ) -> None:
        self.backend_help = backend_help  # None: the command runs ONNX Runtime only (no --backend)
        self.threads_help = threads_help

    @property
    def config_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("backend", "threads") if self.backend_help else ("threads",)

    @classmethod
    def known_keys(cls) -> tuple[str, ...]:
        return ("backend", "threads")

    def decorators(self) -> list[Callable[[Callable], Callable]]:
        decos = [click.option("--threads", type=click.IntRange(min=1), default=None, help=self.threads_help)]
        if self.backend_help:
            decos.insert(
                0, click.option("--backend", type=BackendName(), default=None, help=self.backend_help)
            )
        return decos

    def resolve(self, opts: Options, config: Mapping[str, Any], config_path: Path | None) -> RuntimeSettings:
        from trtq._core.errors import InputError

        backend = setting(opts, config, "backend", "onnxruntime") if self.backend_help else "onnxruntime"
        if self.backend_help and opts.get("backend") is None and "backend" in config:
            from trtq.runtime import available_backends

            if backend not in available_backends():
                raise InputError(
                    f"config file: backend {backend!r} is unknown; choose one of: {', '.join(available_backends())}"
                )
        threads = setting(opts, config, "threads")
        return RuntimeSettings(str(backend), None if threads is None else int(threads))


# -- output ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputSettings:
    output: str | None  # -o FILE: the file the command makes
    json: str | None  # --json PATH: the result document; "-" = stdout
    report: str | None  # --report FILE: HTML report

    @property
    def json_to_stdout(self) -> bool:
        """True when stdout carries the JSON document (tables and progress bars then stay off)."""
        return self.json == "-"

    def write_json(self, doc: Any) -> None:
        """Write the result document to ``--json`` (nothing without it)."""
        if self.json:
            from trtq._core.jsonio import write_json

            write_json(self.json, doc)


class OutputArgs(ArgGroup):
    """Where results go, one meaning per flag in every command:

    - ``-o/--output FILE``: the file the command makes (pins.json, an ONNX, merged histograms, the
      HTML of ``reports build``); ``output`` is its help text, ``None`` = the command has no ``-o``;
    - ``--json PATH``: the machine-readable result (docs/SCHEMA.md); ``-`` prints it on stdout;
    - ``--report FILE``: a self-contained HTML report (``report=True``).

    ``output_required`` (True, or an example file name for the message) makes ``-o`` required;
    ``json=None`` leaves ``--json`` out (a command with no result document).
    """

    def __init__(
        self,
        output: str | None = None,
        *,
        output_required: bool | str = False,
        json: str | None = "Write the result as JSON (docs/SCHEMA.md) to PATH; '-' = stdout.",
        report: bool = False,
    ) -> None:
        self.output, self.output_required, self.json, self.report = output, output_required, json, report

    def decorators(self) -> list[Callable[[Callable], Callable]]:
        decos = []
        if self.output:
            decos.append(
                click.option(
                    "-o",
                    "--output",
                    "output",
                    type=click.Path(dir_okay=False),
                    default=None,
                    help=self.output,
                )
            )
        if self.json:
            decos.append(click.option("--json", "json_path", metavar="PATH|-", default=None, help=self.json))
        if self.report:
            decos.append(
                click.option(
                    "--report",
                    "report_path",
                    type=click.Path(dir_okay=False),
                    default=None,
                    help="Write an HTML report.",
                )
            )
        return decos

    def resolve(self, opts: Options, config: Mapping[str, Any], config_path: Path | None) -> OutputSettings:
        from trtq._core.errors import InputError

        output = opts.get("output")
        if self.output_required and not output:
            example = self.output_required if isinstance(self.output_required, str) else "FILE"
            raise InputError(f"no output file: give -o {example}")
        return OutputSettings(output and str(output), opts.get("json_path"), opts.get("report_path"))

    def paths(self, settings: OutputSettings) -> tuple[dict[str, str | None], dict[str, str | None]]:
        return {"-o": settings.output, "--json": settings.json, "--report": settings.report}, {}
