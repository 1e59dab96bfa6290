"""What every trtq command-line tool shares: error handling, output modes, progress bars.

Only CLI modules (``*/cli.py`` and this one) import click and rich. A command body raises
:class:`~trtq._core.errors.TrtqError` for user errors; :func:`run_command` prints it as one line
(``error: ...``) and exits with its code. Tracebacks appear only with ``--debug``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from trtq._core.atomic import output_group
from trtq._core.errors import CheckFailed, TrtqError
from trtq._core.progress import ProgressFn, null_progress

T = TypeVar("T")


class OneLineErrors(click.Group):
    """A click group whose own usage errors read like trtq's: one line, ``error: <message> (see
    '<command> --help')`` on stderr, exit code 2 (click prints three: usage, hint, error)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # the tool alone: its help, as click shows it
            click.echo(exc.ctx.get_help(), err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            path = exc.ctx.command_path if exc.ctx is not None else self._command_path(args, kwargs)
            hint = f" (see '{path} --help')" if path else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # `| head`: stop quietly, as click's standalone mode does
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the interpreter's exit flushes it
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def _command_path(self, args: tuple, kwargs: dict[str, Any]) -> str | None:
        """``<tool> <command>`` from the arguments, for an error click raises before it has a
        context (an option missing its value): the first argument naming one of the commands."""
        argv = kwargs.get("args", args[0] if args else None)
        argv = list(sys.argv[1:] if argv is None else argv)
        name = kwargs.get("prog_name") or (args[1] if len(args) > 1 else None)
        name = name or (os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else self.name)
        command = next((a for a in argv if a in self.commands), None)
        return f"{name} {command}" if command and name else None


def common_options(fn: Callable) -> Callable:
    """Add ``--quiet`` and ``--debug`` to a click command."""
    fn = click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")(fn)
    fn = click.option("-q", "--quiet", is_flag=True, help="No progress bars or tables; errors only.")(fn)
    return fn


class _OncePerCommand(logging.Filter):
    """Let each distinct warning through once: a command judges many models (bisect's
    evaluations, quantize's two data sets) and the library warns where it notices, every time."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.levelno, record.getMessage())
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


def setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else (logging.ERROR if quiet else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_OncePerCommand())
    # Library warnings go to stderr as one line each; third-party chatter stays at WARNING.
    for noisy in ("matplotlib", "PIL", "numba", "polygraphy"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def run_command(body: Callable[[], T], *, debug: bool = False) -> T:
    """Run a command body, turning :class:`TrtqError` into one line on stderr and an exit code.

    The body's outputs are one :func:`~trtq._core.atomic.output_group`: a command that fails
    leaves every output file as it found it. A failed check (:class:`CheckFailed`, exit 1) keeps
    them: it is a verdict on complete outputs.
    """
    try:
        with output_group(keep_on=(CheckFailed,)):
            return body()
    except TrtqError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


def echo_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout (NaN/Inf written as null)."""
    from trtq._core.jsonio import dumps

    click.echo(dumps(obj))


def stderr_console(quiet: bool = False):
    from rich.console import Console

    return Console(stderr=True, quiet=quiet)


@contextmanager
def progress_bar(quiet: bool = False, unit: str = "items") -> Iterator[ProgressFn]:
    """Yield a :class:`ProgressFn` drawing a rich bar (rate, ETA) on stderr.

    Off when ``quiet`` or when stderr is not a terminal: scripts and CI logs get no bar.
    """
    if quiet or not sys.stderr.isatty():
        yield null_progress
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class _Rate(TextColumn):
        def render(self, task):  # type: ignore[override]
            speed = task.finished_speed or task.speed
            return super().render(task) if speed is None else f"{speed:.2f} {unit}/s"

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _Rate(""),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=False,
    ) as bar:
        task_id = None

        def update(advance: int = 1, *, total: int | None = None, description: str | None = None) -> None:
            nonlocal task_id
            if task_id is None or (total is not None and description is not None):
                if task_id is not None:
                    bar.update(task_id, completed=bar.tasks[task_id].total or 0)
                task_id = bar.add_task(description or "working", total=total)
            elif total is not None or description is not None:
                kwargs: dict[str, Any] = {}
                if total is not None:
                    kwargs["total"] = total
                if description is not None:
                    kwargs["description"] = description
                bar.update(task_id, **kwargs)
            if advance:
                bar.advance(task_id, advance)

        yield update


class BackendName(click.ParamType):
    """A backend name, checked against the registry (built-ins and ``trtq.backends`` entry points)
    when the command runs, so that ``--help`` imports no backend. ``--backend`` itself belongs to
    :class:`trtq._core.args.RuntimeArgs`."""

    name = "backend"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        from trtq.runtime import available_backends

        choices = available_backends()
        if value not in choices:
            self.fail(f"unknown backend {value!r}; choose one of: {', '.join(choices)}", param, ctx)
        return value
