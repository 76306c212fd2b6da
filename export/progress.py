"""Progress display for ``rayfront export``: one rich line per step, on stderr.

stdout is reserved for the result (the new version's path), so the display, like the
exporters' chatter, goes to stderr. With ``enabled=False`` (library use, tests) the same
calls do nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class Steps:
    """Named steps with optional per-item progress (e.g. parity cases)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self._progress: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> Steps:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    @contextlib.contextmanager
    def step(self, description: str, total: int = 1) -> Iterator[StepHandle]:
        """A step shown while it runs and marked complete when it ends without error."""
        if self._progress is None:
            yield StepHandle(None, None)
            return
        task = self._progress.add_task(description, total=total)
        handle = StepHandle(self._progress, task)
        yield handle
        self._progress.update(task, completed=total)


class StepHandle:
    """Advance a running step."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: int = 1) -> None:
        """Mark ``amount`` more items of this step done."""
        if self._progress is not None:
            self._progress.advance(self._task, amount)
