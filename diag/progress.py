"""Progress reporting that works the same for the CLI (tqdm), the app (a widget) and tests (nothing)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Called by long jobs as ``progress(done, total, message)``."""

    def __call__(self, done: int, total: int, message: str = "") -> None: ...


def no_progress(done: int, total: int, message: str = "") -> None:
    """Default sink: long jobs report, nobody listens."""


class TqdmProgress:
    """Adapter from the ``Progress`` protocol to a tqdm bar (one bar per message stage)."""

    def __init__(self) -> None:
        self._bar = None
        self._stage = None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm

        if self._bar is None or message != self._stage or total != self._bar.total:
            self.close()
            self._bar = tqdm(total=total, desc=message or None, leave=False)
            self._stage = message
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
