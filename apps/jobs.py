"""Run analyses off the UI thread, with a progress bar the page polls and errors shown as one-line messages.

All sessions share ONE worker thread: heavy jobs on a 2-core machine would only slow each other down, so a
second job waits in the queue (and says so) instead of freezing anything. The worker only writes the latest
``(done, total, message)`` into a slot; the page's periodic callback reads it on the UI thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import panel as pn

from diag.errors import DiagError
from diag.progress import Progress

T = TypeVar("T")
log = logging.getLogger("diag.apps")
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diag-job")
_POLL_MS = 250


def error_line(exc: BaseException) -> str:
    """What the user sees for a failure: DiagError's own line, otherwise the type and first line of the message."""
    if isinstance(exc, DiagError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def notify_error(message: str) -> None:
    if pn.state.notifications is not None:
        pn.state.notifications.error(message, duration=10000)


class _Slot:
    """Latest progress report from the worker (a single attribute write is atomic across threads)."""

    def __init__(self) -> None:
        self.latest: tuple[int, int, str] | None = None
        self.started = threading.Event()

    def __call__(self, done: int, total: int, message: str = "") -> None:
        self.started.set()
        self.latest = (done, total, message)


class JobPanel(pn.viewable.Viewer):
    """A progress bar, a status line and an error alert for jobs launched from one page."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.bar = pn.indicators.Progress(value=0, max=100, visible=False, sizing_mode="stretch_width",
                                          height=14, bar_color="primary")
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10), css_classes=["job-status"])
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width",
                                   css_classes=["job-error"])
        self.busy = False
        self._layout = pn.Column(self.bar, self.status, self.alert, sizing_mode="stretch_width")

    def __panel__(self) -> pn.Column:
        return self._layout

    def show_error(self, message: str) -> None:
        self.alert.object = message
        self.alert.visible = True
        notify_error(message)

    async def run(self, label: str, work: Callable[[Progress], T]) -> T | None:
        """Run ``work(progress)`` on the worker thread; returns its value, or None after showing the error."""
        if self.busy:
            self.show_error("A job from this page is still running; wait for it to finish.")
            return None
        self.busy = True
        self.alert.visible = False
        self.bar.visible, self.bar.value = True, -1
        self.status.object = f"**{label}**: queued (one job runs at a time on this server)"
        slot = _Slot()
        started = time.monotonic()

        def poll() -> None:
            elapsed = time.monotonic() - started
            if slot.latest is None:
                if slot.started.is_set():
                    self.status.object = f"**{label}**: starting ({elapsed:.0f} s)"
                return
            done, total, message = slot.latest
            self.bar.value = int(100 * done / total) if total > 0 else -1
            stage = f"{message}: " if message else ""
            self.status.object = f"**{label}**: {stage}{done}/{total} ({elapsed:.0f} s)"

        def work_with_start(progress: Progress) -> T:
            slot.started.set()
            return work(progress)

        callback = pn.state.add_periodic_callback(poll, period=_POLL_MS)
        try:
            value = await asyncio.get_running_loop().run_in_executor(_WORKER, work_with_start, slot)
        except Exception as exc:  # shown as a message; a bug's traceback goes to the server log only
            if isinstance(exc, DiagError):
                log.warning("job %s refused: %s", label, exc)
            else:
                log.exception("job %s failed", label)
            self.status.object = f"**{label}**: failed after {time.monotonic() - started:.0f} s"
            self.show_error(error_line(exc))
            return None
        finally:
            callback.stop()
            self.bar.visible = False
            self.busy = False
        self.status.object = f"**{label}**: done in {time.monotonic() - started:.1f} s"
        return value
