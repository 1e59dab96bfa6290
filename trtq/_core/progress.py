"""Progress reporting from library code, decoupled from any widget.

Library functions take ``progress: ProgressFn`` and call ``progress(0, total=N, description=...)``
once to announce the work, then ``progress(k)`` as ``k`` more units are done. The CLI adapts this
to a rich progress bar; library users can pass their own callable or nothing.
"""

from __future__ import annotations

from typing import Protocol


class ProgressFn(Protocol):
    def __call__(
        self, advance: int = 1, *, total: int | None = None, description: str | None = None
    ) -> None: ...


def null_progress(advance: int = 1, *, total: int | None = None, description: str | None = None) -> None:
    """A progress callback that does nothing."""
