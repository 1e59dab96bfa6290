"""Project configuration: defaults < config file < command-line flags.

The config file is the ``[tool.trtq]`` table of ``./pyproject.toml`` or the top level of
``./trtq.toml`` (the latter wins if both exist). A ``trtq.toml`` holding only a ``[tool.trtq]``
table (a snippet copied from a pyproject.toml) is read as that table; one mixing it with
top-level settings is refused, since one of the two would be silently ignored. Sub-tables group settings per concern, e.g.::

    [tool.trtq]
    model = "models/det.onnx"
    shape = ["x:1x3x640x640"]

    [tool.trtq.preprocess]
    resize = "letterbox"
    mean = [0.485, 0.456, 0.406]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from trtq._core.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def find_config(cwd: str | Path | None = None) -> tuple[dict[str, Any], Path | None]:
    """Return ``(settings, path)`` from ``trtq.toml`` or ``pyproject.toml`` in ``cwd``.

    Returns ``({}, None)`` when neither file has trtq settings. Relative paths in the settings
    are *not* resolved here; :func:`resolve_path` does that against the config file's folder.
    """
    base = Path(cwd or Path.cwd())
    for name in ("trtq.toml", "pyproject.toml"):
        path = base / name
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid TOML: {exc}") from exc
        table = _trtq_toml_table(data, path) if name == "trtq.toml" else data.get("tool", {}).get("trtq")
        if table:
            return dict(table), path
    return {}, None


def _trtq_toml_table(data: dict[str, Any], path: Path) -> dict[str, Any]:
    tool = data.get("tool")
    if not (isinstance(tool, dict) and "trtq" in tool):
        return data
    if set(data) != {"tool"} or set(tool) != {"trtq"}:
        raise InputError(
            f"{path}: has both a [tool.trtq] table and other settings; in trtq.toml put the settings "
            "at the top level (or only under [tool.trtq]), not both"
        )
    return tool["trtq"]


def resolve_path(value: str | None, config_path: Path | None) -> str | None:
    """Resolve a path taken from a config file relative to that file's folder."""
    if value is None or config_path is None:
        return value
    p = Path(value)
    return str(p if p.is_absolute() else (config_path.parent / p))


#: The type each config key must have (checked when a command reads it; keys not listed are
#: checked where they are read, e.g. the data keys in :mod:`trtq.datasets.cli_options`).
CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "cache": (str,),
    "method": (str,),
    "percentile": (int, float),
    "num_bins": (int,),
    "trt_version": (str,),
    "cache_algorithm": (str,),
    "backend": (str,),
    "threads": (int,),
    "batch_size": (int,),
    "precision": (str,),
}
#: Keys whose value must also be at least 1.
_POSITIVE = {"num_bins", "threads", "batch_size"}


_KIND_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def of_type(key: str, value: Any, kinds: tuple[type, ...]) -> Any:
    """``value`` of config key ``key`` when it is one of ``kinds`` (a bool is no number), else
    :class:`InputError` naming the key; ``None`` passes."""
    if value is None:
        return None
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        name = _KIND_NAMES.get(kinds[0], "a number") if len(kinds) == 1 else "a number"
        raise InputError(f"config file: {key} must be {name}, got {value!r}")
    return value


def checked(key: str, value: Any) -> Any:
    """``value`` of config key ``key`` when it has the type :data:`CONFIG_TYPES` gives it
    (:func:`of_type`), else :class:`InputError` naming the key."""
    kinds = CONFIG_TYPES.get(key.replace("-", "_"))
    if value is None or kinds is None:
        return value
    of_type(key, value, kinds)
    if key in _POSITIVE and value < 1:
        raise InputError(f"config file: {key} must be at least 1, got {value!r}")
    return value


def setting(flags: dict[str, Any], config: dict[str, Any], key: str, default: Any = None) -> Any:
    """``flags[key]`` if given (not None), else the config's ``key`` (spelled with ``-`` or
    ``_``, its type checked: :func:`checked`), else ``default``: the defaults < config file <
    flags rule."""
    value = flags.get(key)
    if value is not None:
        return value
    given = config.get(key.replace("_", "-"), config.get(key))
    return default if given is None else checked(key, given)


def model_from(flag: str | None, config: dict[str, Any], config_path: Path | None, usage: str) -> str:
    """The model path: the command-line argument, else ``model`` of the config file (relative to
    that file); neither raises :class:`InputError` showing ``usage``, an example command."""
    model = flag or resolve_path(checked("model", config.get("model")), config_path)
    if not model:
        raise InputError(
            f'no model given: pass MODEL ({usage}) or set model = "path.onnx" '
            "under [tool.trtq] in ./pyproject.toml or in ./trtq.toml"
        )
    return model
