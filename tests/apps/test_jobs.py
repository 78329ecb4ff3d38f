"""The app's job machinery without a browser: what the status line says, how a sink stops a job, how a run
launched from a page is cancelled and resumed, and how a closed tab's failed write is logged."""

from __future__ import annotations

import asyncio
import logging

import pytest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError

from apps.jobs import JobPanel, JobSink, _progress_view
from apps.server import ClosedTab
from diag.progress import Cancelled, report_metrics


def test_status_line_names_a_stage_once_and_a_one_step_stage_is_indeterminate() -> None:
    assert _progress_view("capture", 0, 1, "capture", 3.2) == (-1, "**capture**: working (3 s)")
    assert _progress_view("capture", 1, 1, "capture", 4.0) == (100, "**capture**: 1/1 (4 s)")
    assert _progress_view("cdas-steer", 0, 1, "alpha sweep", 9.0) == (-1, "**cdas-steer**: alpha sweep (9 s)")
    assert _progress_view("tir", 3, 8, "rollouts", 12.0) == (37, "**tir**: rollouts: 3/8 (12 s)")


def test_a_sink_stops_its_job_at_the_next_report_and_says_where() -> None:
    sink = JobSink()
    sink(2, 10, "train")
    report_metrics(sink, 2, loss=0.5)
    assert sink.latest == (2, 10, "train") and sink.points == [(2, {"loss": 0.5})]
    sink.stop.set()
    with pytest.raises(Cancelled, match="cancelled from the app at train 2/10"):
        sink(3, 10, "train")
    with pytest.raises(Cancelled, match="at train 2/10"):
        report_metrics(sink, 3, loss=0.4)
    fresh = JobSink()
    fresh.stop.set()
    with pytest.raises(Cancelled, match="before its first step"):
        fresh.check()


def test_a_job_cancelled_from_its_panel_returns_none_and_says_so() -> None:
    panel = JobPanel()

    def work(progress) -> str:
        for step in range(1, 1000):
            progress(step, 999, "steps")
            if step == 3:
                panel._cancel(None)  # the Cancel button, pressed while the job runs
        return "finished"

    assert asyncio.run(panel.run("job", work)) is None
    assert panel.status.object.startswith("**job**: cancelled from the app at steps 3/999 after")
    assert not panel.busy and not panel.cancel.visible
    assert asyncio.run(panel.run("job", lambda progress: "again")) == "again"  # the panel takes the next job
    assert panel.status.object.startswith("**job**: done in")


def detached_session_error() -> AssertionError:
    """What Bokeh raises for a message from a tab whose connection it already detached (a real connection)."""
    from bokeh.server.connection import ServerConnection

    connection = ServerConnection.__new__(ServerConnection)
    connection._session = None
    try:
        connection.session  # noqa: B018 - the property asserts
    except AssertionError as error:
        return error
    raise AssertionError("bokeh's ServerConnection.session no longer asserts: revisit ClosedTab")


@pytest.mark.parametrize("error", [WebSocketClosedError(), StreamClosedError(), detached_session_error()])
def test_a_tab_gone_mid_exchange_is_one_info_line_not_a_traceback(error: BaseException) -> None:
    record = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "Task exception was never retrieved", None,
                               (type(error), error, error.__traceback__))
    assert ClosedTab().filter(record)
    assert record.levelname == "INFO" and record.exc_info is None
    assert record.getMessage() == f"a browser tab went away mid-exchange with the server ({type(error).__name__})"


def test_other_errors_keep_their_traceback() -> None:
    try:
        assert 1 + 1 == 3, "a bug of ours"
    except AssertionError as error:
        ours = error
    for error in (ValueError("boom"), ours):
        record = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "boom", None,
                                   (type(error), error, error.__traceback__))
        assert ClosedTab().filter(record) and record.levelname == "ERROR" and record.exc_info is not None
