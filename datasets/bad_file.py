"""The internal signal that one file cannot be used; the dataset turns it into a skip or an error."""

from __future__ import annotations


class BadFile(Exception):
    """Raised by a loader for a file that cannot be used; ``str(exc)`` is the reason (one line)."""
