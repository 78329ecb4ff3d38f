"""A job's last metric points, drawn after its ``await`` on a real Bokeh server: they must be drawn under the
document's lock (the first fix drew them at once, raised "no document lock" and froze the page; CI caught it).

The job reports its metrics and returns at once, so the page's 250 ms poll has not drawn them yet: each launch
exercises the path, where a browser test of a long job only does when a point lands after the last poll.
"""

from __future__ import annotations

import io
import logging
import threading
import time

import panel as pn
import pytest
import test_app_browser as shared
from playwright.sync_api import expect
from test_app_browser import free_port

from apps.jobs import JobPanel
from diag.progress import report_metrics

pytestmark = pytest.mark.slow
browser = shared.browser


def job_page() -> pn.Column:
    job = JobPanel()
    button = pn.widgets.Button(name="go")

    def work(progress) -> int:
        for step in (1, 2, 3):
            time.sleep(0.4)
            progress(step, 3, "steps")
            report_metrics(progress, step, loss=1.0 / step)
        return step  # right after its last metrics: not drawn by the poll yet

    async def go(_) -> None:
        await job.run("lock", work)

    button.on_click(go)
    return pn.Column(button, job)


def test_metrics_drawn_after_a_job_ends_reach_the_page_without_a_lock_error(browser) -> None:
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger().addHandler(handler)
    port = free_port()
    server = pn.serve({"jobs": job_page}, port=port, show=False, start=False)
    threading.Thread(target=lambda: (server.start(), server.io_loop.start()), daemon=True).start()
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/jobs", wait_until="networkidle")
        for _ in range(3):
            page.get_by_role("button", name="go").click()
            expect(page.locator(".job-status")).to_contain_text("done in", timeout=30000)
            expect(page.locator(".job-metrics")).to_contain_text("step 3: loss 0.3333")  # the undrawn last point
        page.close()
    finally:
        server.io_loop.add_callback(server.stop)
        logging.getLogger().removeHandler(handler)
    assert "Traceback" not in log.getvalue() and "document lock" not in log.getvalue(), log.getvalue()
