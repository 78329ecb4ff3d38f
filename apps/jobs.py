"""Run analyses off the UI thread, one worker per browser session, cancellable, with live progress and metrics.

Each session (one open page) has its own worker thread, so one user's long job never queues another's; jobs of
one session run in order. The worker only writes into a ``JobSink`` (the latest ``(done, total, message)`` and
the metric points ``diag.progress.report_metrics`` sends); the page's periodic callback reads it on the UI thread
and draws the bar, the status line and a live curve. Cancel is cooperative: the sink raises
``diag.progress.Cancelled`` at the job's next report, and the run store keeps the run as ``cancelled`` with its
checkpoint, so launching the same config again resumes it. A session that ends (tab closed or reloaded) cancels
its jobs the same way: nobody could cancel them any more, and their checkpoints keep the work.
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
from diag.progress import Cancelled, Progress

T = TypeVar("T")
log = logging.getLogger("diag.apps")
_POLL_MS = 250
LIVE_CURVE = "job-live-curve"  # the live figure's Bokeh name (the browser test finds it by it)
_COLOURS = ("#2f5d8a", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e")


def error_line(exc: BaseException) -> str:
    """What the user sees for a failure: DiagError's own line, otherwise the type and first line of the message."""
    if isinstance(exc, DiagError):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def notify_error(message: str) -> None:
    if pn.state.notifications is not None:
        pn.state.notifications.error(message, duration=10000)


class JobSink:
    """What a job tells its page (latest progress, metric points) and the page's request to stop it.

    The worker writes (single attribute writes and list appends, atomic across threads); the UI thread reads.
    """

    def __init__(self) -> None:
        self.latest: tuple[int, int, str] | None = None
        self.points: list[tuple[int, dict[str, float]]] = []
        self.stop = threading.Event()

    def __call__(self, done: int, total: int, message: str = "") -> None:
        self.check()
        self.latest = (done, total, message)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.check()
        self.points.append((step, values))

    def check(self) -> None:
        """Raise ``Cancelled`` if the page asked the job to stop (called at every report)."""
        if not self.stop.is_set():
            return
        if self.latest is None:
            raise Cancelled("cancelled from the app before its first step")
        done, total, message = self.latest
        raise Cancelled(f"cancelled from the app at {message + ' ' if message else ''}{done}/{total}")


class SessionJobs:
    """One session's worker thread and the sinks of its jobs; ``close`` stops them when the session ends."""

    def __init__(self) -> None:
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diag-job")
        self.sinks: set[JobSink] = set()  # of the jobs submitted and not ended: while any, a new one queues
        self.closed = False

    def close(self, *_: Any) -> None:
        self.closed = True
        for sink in list(self.sinks):
            sink.stop.set()
        self.worker.shutdown(wait=False)  # queued jobs still start, see the stop and end at once


_SESSIONS: dict[str, SessionJobs] = {}
_LOCAL = "(no session)"  # pages built outside a server (unit tests, notebooks) share one worker


def session_jobs() -> SessionJobs:
    """The current session's jobs, created with the session's first job and closed when the session is destroyed."""
    doc = pn.state.curdoc
    context = doc.session_context if doc is not None else None
    key = context.id if context is not None else _LOCAL
    jobs = _SESSIONS.get(key)
    if jobs is None:
        jobs = _SESSIONS[key] = SessionJobs()
        if context is not None:
            def destroyed(_: Any) -> None:
                _SESSIONS.pop(key, None)
                jobs.close()

            doc.on_session_destroyed(destroyed)
    return jobs


class LiveMetrics(pn.viewable.Viewer):
    """A small live curve per metric a job reports, and the latest values as one line of text."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.text = pn.pane.Markdown("", margin=(0, 10), css_classes=["job-metrics"])
        self._figure: Any = None  # built with the first point: most jobs report none
        self._sources: dict[str, Any] = {}
        self._layout = pn.Column(self.text, sizing_mode="stretch_width")

    def __panel__(self) -> pn.Column:
        return self._layout

    def reset(self) -> None:
        self.text.object, self._figure, self._sources = "", None, {}
        self._layout[:] = [self.text]

    def add(self, points: list[tuple[int, dict[str, float]]]) -> None:
        """Append new points (step, {metric: value}) to their curves and show the latest values.

        Streaming into a Bokeh source needs the document's lock, which the code after a job's ``await`` does not
        hold although Panel judges it safe to write there (``pn.state.execute`` ran the draw at once, and it raised
        "no document lock"): on a server the draw is always scheduled for the next tick, which holds the lock.
        """
        if points:
            pn.state.execute(lambda: self._draw(points), schedule=True)

    def _draw(self, points: list[tuple[int, dict[str, float]]]) -> None:
        from bokeh.models import ColumnDataSource
        from bokeh.plotting import figure

        if self._figure is None:
            self._figure = figure(height=170, sizing_mode="stretch_width", toolbar_location=None,
                                  x_axis_label="step", title="live metrics", name=LIVE_CURVE)
            self._figure.xaxis.ticker.min_interval = 1  # steps are whole numbers
            self._layout.append(pn.pane.Bokeh(self._figure, sizing_mode="stretch_width"))
        new: dict[str, dict[str, list[float]]] = {}
        for step, values in points:
            for name, value in values.items():
                column = new.setdefault(name, {"step": [], "value": []})
                column["step"].append(step)
                column["value"].append(value)
        for name, data in new.items():
            if name not in self._sources:
                self._sources[name] = ColumnDataSource({"step": [], "value": []})
                self._figure.line("step", "value", source=self._sources[name], legend_label=name, line_width=2,
                                  color=_COLOURS[(len(self._sources) - 1) % len(_COLOURS)])
                self._figure.legend.location, self._figure.legend.label_text_font_size = "top_right", "11px"
            self._sources[name].stream(data)
        step, values = points[-1]
        latest = " · ".join(f"{name} {value:.4g}" for name, value in values.items())
        self.text.object = f"step {step}: {latest}"


class JobPanel(pn.viewable.Viewer):
    """A progress bar, a status line, live metrics, a Cancel button and an error alert for one page's jobs."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.bar = pn.indicators.Progress(value=0, max=100, visible=False, sizing_mode="stretch_width",
                                          height=14, bar_color="primary")
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10), css_classes=["job-status"])
        self.cancel = pn.widgets.Button(label="Cancel", color="warning", variant="outline", width=100,
                                        visible=False, css_classes=["job-cancel"])
        self.live = LiveMetrics()
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width",
                                   css_classes=["job-error"])
        self.busy = False
        self._sink: JobSink | None = None
        self.cancel.on_click(self._cancel)
        self._layout = pn.Column(pn.Row(self.bar, self.cancel, sizing_mode="stretch_width"), self.status, self.live,
                                 self.alert, sizing_mode="stretch_width")

    def __panel__(self) -> pn.Column:
        return self._layout

    def show_error(self, message: str) -> None:
        self.alert.object = message
        self.alert.visible = True
        notify_error(message)

    def _cancel(self, _: Any) -> None:
        if self._sink is not None:
            self._sink.stop.set()
            self.cancel.disabled = True
            self.cancel.label = "Cancelling…"

    async def run(self, label: str, work: Callable[[Progress], T], note: str = "") -> T | None:
        """Run ``work(progress)`` on this session's worker; returns its value, or None once cancelled or failed
        (a failure shown as one line). ``note`` (say, that it resumes a run) is said beside its status until it ends."""
        if self.busy:
            self.show_error("A job from this page is still running; wait for it or cancel it.")
            return None
        jobs = session_jobs()
        sink = JobSink()
        self.busy, self._sink = True, sink
        queued = bool(jobs.sinks)
        jobs.sinks.add(sink)
        self.alert.visible = False
        self.live.reset()
        self.bar.visible, self.bar.value = True, -1
        self.cancel.param.update(visible=True, disabled=False, label="Cancel")
        began = threading.Event()
        extra = f" · {note}" if note else ""
        self.status.object = f"**{label}**: {'waiting for the job this page started first' if queued else 'starting'}" \
            + extra
        started = time.monotonic()
        seen = 0

        def poll() -> None:
            nonlocal seen
            if jobs.closed:
                return
            elapsed = time.monotonic() - started
            points = sink.points[seen:]
            seen += len(points)
            self.live.add(points)
            if sink.stop.is_set():
                self.status.object = f"**{label}**: cancelling at the job's next progress report ({elapsed:.0f} s)"
            elif sink.latest is None:
                if began.is_set():
                    self.status.object = f"**{label}**: loading model and data ({elapsed:.0f} s){extra}"
            else:
                self.bar.value, line = _progress_view(label, *sink.latest, elapsed)
                self.status.object = line + extra

        def work_when_started(progress: Progress) -> T:
            began.set()
            sink.check()  # cancelled (or its session closed) while it waited in the queue
            return work(progress)

        callback = pn.state.add_periodic_callback(poll, period=_POLL_MS)
        try:
            value = await asyncio.get_running_loop().run_in_executor(jobs.worker, work_when_started, sink)
        except Cancelled as stop:
            if not jobs.closed:
                self.live.add(sink.points[seen:])
                self.status.object = f"**{label}**: {stop} after {time.monotonic() - started:.0f} s"
            log.info("job %s: %s", label, stop)
            return None
        except Exception as exc:  # shown as a message; a bug's traceback goes to the server log only
            if isinstance(exc, DiagError):
                log.warning("job %s refused: %s", label, exc)
            else:
                log.exception("job %s failed", label)
            if not jobs.closed:
                self.status.object = f"**{label}**: failed after {time.monotonic() - started:.0f} s"
                self.show_error(error_line(exc))
            return None
        finally:
            callback.stop()
            jobs.sinks.discard(sink)
            self.busy, self._sink = False, None
            if not jobs.closed:
                self.bar.visible = self.cancel.visible = False
        if not jobs.closed:
            self.live.add(sink.points[seen:])
            self.status.object = f"**{label}**: done in {time.monotonic() - started:.1f} s"
        return value


def _progress_view(label: str, done: int, total: int, message: str, elapsed: float) -> tuple[int, str]:
    """The bar's value and the status line for one progress report.

    A stage the job names after itself is not repeated ("capture: 0/1", not "capture: capture: 0/1"), and a
    one-step stage that has not finished is an indeterminate bar with its name and time, not a bar stuck at 0/1.
    """
    stage = message if message and message != label else ""
    if total <= 1 and done < max(total, 1):
        return -1, f"**{label}**: {stage or 'working'} ({elapsed:.0f} s)"
    return int(100 * done / total), f"**{label}**: {stage + ': ' if stage else ''}{done}/{total} ({elapsed:.0f} s)"
