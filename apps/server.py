"""Serve the app: one Panel page per analysis plus the Runs page, and ``/report/RUN_ID`` for HTML reports."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from typing import Any

import panel as pn
from panel.io.resources import LOCAL_DIST
from tornado.web import RequestHandler

from apps.shell import GENERATED, pages
from diag.errors import DiagError

log = logging.getLogger("diag.apps")


def page_builder(slug: str) -> Callable[[], Any]:
    """Import a page module only when a session asks for it (pages import torch-heavy analysis code)."""

    def build() -> Any:
        # Panel points a component's stylesheets at its CDN unless the session's document already names a
        # local dist URL, which it only does once the page HTML is written: components built before that
        # (or by a callback racing it) kept CDN links (seen 1 in 8 concurrent sessions). Name it first.
        pn.state.curdoc._template_variables["dist_url"] = LOCAL_DIST
        if slug.startswith(GENERATED):
            return importlib.import_module("apps.pages.generic").page(slug.removeprefix(GENERATED))
        return importlib.import_module(f"apps.pages.{slug}").page()

    return build


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
        extra_patterns=[(r"/report/([A-Za-z0-9_.\-]+)", ReportHandler), (r"/", RootHandler)],
    )


def serve(port: int = 5006, host: str = "127.0.0.1", origins: list[str] | None = None) -> None:
    """Run the app until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = make_server(port, host, origins)
    server.start()
    log.info("diag app on http://%s:%d/runs", host, port)
    server.io_loop.start()
