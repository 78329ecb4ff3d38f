"""Serve the app: one Panel page per analysis plus the Runs page, and ``/report/RUN_ID`` for HTML reports."""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import panel as pn
from panel.io.resources import LOCAL_DIST
from tornado.web import RequestHandler

from apps.shell import FIGURE_ROUTE, GENERATED, pages
from diag.errors import DiagError

log = logging.getLogger("diag.apps")


def page_module(slug: str) -> str:
    """The module that builds a page: the page's own, or the generic one for a generated analysis page."""
    return "apps.pages.generic" if slug.startswith(GENERATED) else f"apps.pages.{slug}"


def page_builder(slug: str) -> Callable[[], Any]:
    """Import a page module only when a session asks for it (pages import torch-heavy analysis code)."""

    def build() -> Any:
        # Panel points a component's stylesheets at its CDN unless the session's document already names a
        # local dist URL, which it only does once the page HTML is written: components built before that
        # (or by a callback racing it) kept CDN links (seen 1 in 8 concurrent sessions). Name it first.
        pn.state.curdoc._template_variables["dist_url"] = LOCAL_DIST
        module = importlib.import_module(page_module(slug))
        return module.page(slug.removeprefix(GENERATED)) if slug.startswith(GENERATED) else module.page()

    return build


class ClosedTab(logging.Filter):
    """Turns the traceback of a tab that went away mid-exchange (closed or reloaded while the server, say a job's
    progress, was updating it) into one INFO line: the browser left, nothing on the server failed.

    Two races, both in the libraries: Panel queues each update's websocket writes as tasks, and when the session is
    destroyed mid-write the task's ``WebSocketClosedError`` (from tornado's ``StreamClosedError``) is never awaited,
    so asyncio or tornado log "Task exception was never retrieved" or "Uncaught exception GET /PAGE/ws"; and a
    message the tab sent just before closing reaches Bokeh after its connection was detached, which Bokeh's protocol
    handler logs as an ``AssertionError`` from ``ServerConnection.session``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from tornado.iostream import StreamClosedError
        from tornado.websocket import WebSocketClosedError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, StreamClosedError | WebSocketClosedError) or _detached(error):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "a browser tab went away mid-exchange with the server (%s)", (type(error).__name__,), None, None)
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _detached(error: BaseException | None) -> bool:
    """Bokeh's assertion that a message's connection still has its session (it does not once the tab closed)."""
    if not isinstance(error, AssertionError) or error.__traceback__ is None:
        return False
    frame = traceback.extract_tb(error.__traceback__)[-1]
    return frame.name == "session" and Path(frame.filename).match("bokeh/server/connection.py")


class ReportHandler(RequestHandler):
    """Render one run as the same self-contained HTML report that ``diag report`` writes."""

    def get(self, run_id: str) -> None:
        from diag.report.render import render_report
        from diag.runs import RunStore

        try:
            html = render_report([RunStore().get(run_id)], title=f"diag report: {run_id}")
        except DiagError as exc:
            self.set_status(404)
            self.finish(f"<p>{exc}</p>")
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(html)


class FigureHandler(RequestHandler):
    """One PNG figure a run saved, by run id and file stem: pages link to figures instead of inlining them, so a
    page's document stays small and its content renders before the images arrive (issue 18's first render)."""

    def get(self, run_id: str, stem: str) -> None:
        from diag.runs import RunStore

        try:
            run = RunStore().get(run_id, verify=False)  # hashing every array per image would cost seconds
            paths = {path.stem: path for path in run.figure_paths()}
        except DiagError as exc:
            self.set_status(404)
            self.finish(str(exc))
            return
        if stem not in paths:  # only a figure the run lists is served: no path is built from the request
            self.set_status(404)
            self.finish(f"run {run_id} has no figure {stem}")
            return
        problem = run.problem(full=True, only=frozenset({f"figures/{stem}.png"})) if run.finished else None
        if problem is not None:  # this figure checked against its hash, the other files by size
            self.set_status(404)
            self.finish(f"run {run_id} is corrupt: {problem}")
            return
        self.set_header("Content-Type", "image/png")
        self.set_header("Cache-Control", "private, max-age=3600")
        self.finish(paths[stem].read_bytes())


class RootHandler(RequestHandler):
    def get(self) -> None:
        self.redirect("/runs")


def make_server(port: int, host: str, origins: list[str] | None = None) -> Any:
    """A started-on-demand Bokeh server with every page; ``origins`` extends the allowed websocket hosts."""
    pn.config.notifications = True
    # Every page must load its CSS/JS from this server: offline machines cannot reach Panel's CDN, which
    # Panel falls back to whenever the resource mode is not pinned (seen under 8 concurrent sessions).
    os.environ["BOKEH_RESOURCES"] = "server"
    allowed = {f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}", *(origins or [])}
    return pn.serve(
        {slug: page_builder(slug) for slug, _ in pages()},
        port=port, address=host, websocket_origin=sorted(allowed), show=False, start=False, verbose=False,
        title={slug: f"diag · {label}" for slug, label in pages()},
        extra_patterns=[(r"/report/([A-Za-z0-9_.\-]+)", ReportHandler),
                        (rf"/{FIGURE_ROUTE}/([A-Za-z0-9_.\-]+)/([A-Za-z0-9_.\-]+)\.png", FigureHandler),
                        (r"/", RootHandler)],
    )


def warm_up() -> None:
    """Import every page's module (and so torch and the analyses) once, off the event loop, right after start.

    The server listens before this finishes (``diag serve`` is up in about a second), and a page opened later
    renders without paying for imports; a page opened sooner waits only for the modules it needs. No model is
    loaded here: pages load one when a job needs it.
    """
    started = time.monotonic()
    for slug, _ in pages():
        importlib.import_module(page_module(slug))
    log.info("pages imported in %.1f s", time.monotonic() - started)


def serve(port: int = 5006, host: str = "127.0.0.1", origins: list[str] | None = None) -> None:
    """Run the app until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # where a tab that went away is reported
    for name in ("asyncio", "tornado.application", "tornado.general", "bokeh.server.protocol_handler"):
        logging.getLogger(name).addFilter(ClosedTab())
    server = make_server(port, host, origins)
    server.start()
    log.info("diag app on http://%s:%d/runs", host, port)
    threading.Thread(target=warm_up, name="diag-warm-up", daemon=True).start()
    server.io_loop.start()
