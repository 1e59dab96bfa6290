"""One exception family for user-facing failures.

Library code raises a :class:`TrtqError` subclass for anything the user can fix (bad input,
missing dependency, a check that failed). The CLI turns it into one line on stderr and the
exception's ``exit_code``; any other exception is an internal error and keeps its traceback.
"""

from __future__ import annotations


class TrtqError(Exception):
    """A failure the user can act on; printed as one line by the CLI. Exit code 1."""

    exit_code = 1


class InputError(TrtqError):
    """Bad usage or bad input (file, flag, model, data). Exit code 2."""

    exit_code = 2


class MissingDependencyError(TrtqError):
    """An optional dependency (tensorrt, cuda-python, a GPU) is not available. Exit code 2."""

    exit_code = 2


class CheckFailed(TrtqError):
    """The tool ran correctly but the result failed the user's criterion. Exit code 1."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty
    (for one-line errors wrapping third-party exceptions)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
