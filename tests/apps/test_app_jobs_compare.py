"""The app's jobs and comparisons in a real Chromium: first render of every page (measured and printed), overlaid
curves and bars for 2-6 runs of one analysis, a job cancelled from the page that resumes from its checkpoint when
launched again, live training metrics, and a tab reloaded mid-job without a traceback in the server log.

Fixtures (a store of cheap real runs of every analysis, one ``diag serve``, Chromium) come from
``test_app_browser``; this module gets its own server, so the first test sees every page rendered for the first time.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import test_app_browser as shared
import torch
from playwright.sync_api import expect
from test_app_browser import EXPECTED, Watched, server_errors

from apps.compare import CHART_NAME, LEGEND_NAME
from apps.jobs import LIVE_CURVE
from apps.shell import PAGES
from diag import contract
from diag.cdas import toy
from diag.run_files import CHECKPOINT_FILE
from diag.runs import RunStore

pytestmark = pytest.mark.slow
app_home, server, browser = shared.app_home, shared.server, shared.browser  # the fixtures, requested by name below


def wait_for_log(log_path: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_path.read_text():
        assert time.monotonic() < deadline, f"{text!r} not in the server log:\n{log_path.read_text()[-3000:]}"
        time.sleep(0.2)


def seconds_until_visible(page, text: str, started: float, timeout: float = 60) -> float:
    """Seconds from ``started`` until ``text`` is visible, polled every 20 ms: ``expect``'s retries back off to
    1 s apart, which would add up to a second to a page that renders in two."""
    locator = page.get_by_text(text).first
    while not locator.is_visible():
        assert time.monotonic() - started < timeout, f"{text!r} not visible after {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - started


def test_first_render_of_every_page_is_measured_and_printed(browser, server) -> None:
    """From navigation to the page's own content visible, each page opened for the first time since the server
    started (its modules imported by the server's warm-up, not by the page), in one browser as a user would."""
    base, log_path = server
    wait_for_log(log_path, "pages imported in")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    load = subprocess.run(["uptime"], check=True, capture_output=True, text=True).stdout.strip()
    timings = {}
    for slug, _ in PAGES:
        page = context.new_page()
        started = time.monotonic()
        page.goto(f"{base}/{slug}", wait_until="commit")
        timings[slug] = seconds_until_visible(page, EXPECTED[slug][0], started)
        page.close()
    context.close()
    print(f"\nfirst render per page (s), machine load: {load}")
    for slug, seconds in timings.items():
        print(f"  {slug:10s} {seconds:5.2f}")
    assert server_errors(log_path) == []


def bokeh_models(page, name: str) -> list[dict]:
    """The Bokeh models called ``name`` in the page's documents: legends' labels and figures' glyph counts."""
    return page.evaluate("""name => {
        const out = [];
        for (const doc of Bokeh.documents) for (const m of doc.all_models) if (m.name === name) out.push({
            labels: m.items ? m.items.map(i => i.label.value) : null,
            glyphs: m.renderers ? m.renderers.filter(r => r.glyph).length : null,
            title: m.title && m.title.text ? m.title.text : null});
        return out }""", name)


def test_compare_overlays_one_curve_or_bar_set_per_run_with_a_legend_by_name(browser, server, app_home) -> None:
    base, log_path = server
    store = RunStore(app_home / "runs")
    for seed in (1, 2):
        contract.run(toy.ANALYSIS, toy.Config(mlp_steps=300, dii_steps=20, eval_pairs=200, objectives=("cdas",),
                                              seed=seed), store=store)
    ids = [info.run_id for info in store.list(analysis="cdas-toy")]
    assert len(ids) == 3
    store.label(ids[0], name="seed two")
    watched = Watched(browser, base)
    page = watched.page
    page.goto(f"{base}/runs?compare={','.join(ids)}", wait_until="networkidle")
    expect(page.locator(".compare-overlay")).to_be_visible(timeout=60000)
    expect(page.locator(".compare-config")).to_contain_text("seed", timeout=30000)  # the config diff, beside
    names = ["seed two", ids[1], ids[2]]
    page.wait_for_function(f"() => Bokeh.documents.some(d => [...d.all_models].some(m => m.name === '{LEGEND_NAME}'))",
                           timeout=30000)
    legends, charts = bokeh_models(page, LEGEND_NAME), bokeh_models(page, CHART_NAME)
    titles = {c["title"] for c in charts}
    assert {"IIA of the aligned variables", "cdas IIA by layer", "training loss: cdas_wx"} <= titles
    assert len(legends) == len(charts) >= 5
    assert all(legend["labels"] == names for legend in legends)  # one entry per run, named by label or id
    # one glyph per run (bars or a line; intervals are annotations and bands under it, never legend entries)
    assert all(c["glyphs"] in (len(ids), 2 * len(ids)) for c in charts)
    assert sum(c["glyphs"] == len(ids) for c in charts) >= 3
    page.screenshot(path=str(Path(__file__).resolve().parents[2] / "reports" / "screenshots" / "runs-overlay.png"),
                    full_page=True)
    # Two runs of different analyses: the tables stay, the overlay says why it is not drawn.
    page.goto(f"{base}/runs?compare={ids[0]},{store.list(analysis='tir')[0].run_id}", wait_until="networkidle")
    expect(page.locator(".compare-overlay-none")).to_contain_text("overlays compare runs of one analysis",
                                                                  timeout=30000)
    assert watched.errors == [] and server_errors(log_path) == []
    page.close()


def launch_steer(browser, base: str, model: Path, steps: int, seed: int) -> Watched:
    """A tab on the CDAS page whose training form, set for a small model and ``steps`` cheap steps, is launched."""
    watched = Watched(browser, base)
    watched.open("cdas")
    for label, value in (("model", str(model)), ("concepts (comma-separated)", "dogs"), ("layer", "1"),
                         ("steps", str(steps)), ("train tokens", "4"), ("alphas (comma-separated)", "1.0"),
                         ("eval prompts", "2"), ("max new tokens", "4"), ("seed", str(seed)), ("device", "cpu")):
        watched.page.get_by_label(label, exact=True).fill(value)
    watched.page.get_by_role("button", name="Train and evaluate").click()
    return watched


def first_training_step(status, timeout: float = 120) -> int:
    """The first training step the status line shows (polled: the line moves on within seconds)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = status.evaluate("e => (e.shadowRoot || e).textContent")  # Panel renders markdown in a shadow root
        match = re.search(r"train rank-1 DII: (\d+)/", text)
        if match:
            return int(match.group(1))
        time.sleep(0.1)
    raise AssertionError(f"no training step shown in {timeout} s: {text!r}")


def test_cancelled_job_leaves_a_cancelled_run_that_resumes_when_launched_again(browser, server, app_home,
                                                                              tiny_llama_dir) -> None:
    base, log_path = server
    store = RunStore(app_home / "runs")
    steps = 40
    watched = launch_steer(browser, base, tiny_llama_dir, steps, seed=3)
    page = watched.page
    # Live metrics: the training loop's losses stream to the page as text and a curve.
    expect(page.locator(".job-metrics").first).to_contain_text("das loss", timeout=120000)
    page.wait_for_function(f"() => Bokeh.documents.some(d => [...d.all_models].some(m => m.name === '{LIVE_CURVE}'))",
                           timeout=30000)
    (curve,) = bokeh_models(page, LIVE_CURVE)
    # one curve per trained objective: the form starts from the audit budget, which trains CDAS only (no DAS)
    assert curve["glyphs"] == 1 and curve["title"] == "live metrics"
    status = page.locator(".job-status", has_text="cdas-steer")  # the launcher's (the page has two job panels)
    expect(status).to_contain_text(re.compile(r"train rank-1 DII: (1\d|[23]\d)/"), timeout=120000)  # 2+ checkpoints
    page.locator(".job-cancel button").filter(visible=True).click()
    expect(status).to_contain_text("cancelled from the app at train rank-1 DII", timeout=60000)
    expect(status).to_contain_text("keeps its checkpoint: run it again to resume")
    cancelled = store.list(analysis="cdas-steer", status="cancelled")
    assert len(cancelled) == 1, [(i.run_id, i.status) for i in store.list(analysis="cdas-steer")]
    run_dir = cancelled[0].path
    saved = torch.load(run_dir / CHECKPOINT_FILE, weights_only=False)["loop_step"]
    assert 10 <= saved < steps and saved % 5 == 0
    # The Runs page lists it as cancelled, with where it stopped.
    runs = browser.new_page()
    runs.goto(f"{base}/runs?status=cancelled", wait_until="networkidle")
    expect(runs.locator(".runs-table")).to_contain_text(cancelled[0].run_id, timeout=60000)
    expect(runs.locator(".runs-table")).to_contain_text("resumes from its checkpoint")
    runs.close()
    # Launched again with the same form: it says it resumes, starts after the checkpoint, and finishes the run.
    page.get_by_role("button", name="Train and evaluate").click()
    expect(status).to_contain_text(f"resuming {cancelled[0].run_id} from its checkpoint", timeout=60000)
    assert first_training_step(status) > saved  # it did not start over
    expect(status).to_contain_text("done in", timeout=240000)
    finished = store.info(cancelled[0].run_id)
    assert finished.status == "finished" and not (run_dir / CHECKPOINT_FILE).exists()
    curves = store.get(finished.run_id).read_json("steer.json")["curves"]
    assert list(curves) == ["cdas"] and len(curves["cdas"]) == steps  # the checkpoint's steps plus the resumed ones
    assert watched.errors == [] and server_errors(log_path) == []
    page.close()


def test_reloading_a_tab_mid_job_logs_no_traceback_and_cancels_the_orphaned_job(browser, server, app_home,
                                                                             tiny_llama_dir) -> None:
    base, log_path = server
    store = RunStore(app_home / "runs")
    watched = launch_steer(browser, base, tiny_llama_dir, steps=4000, seed=4)  # far longer than a session drop
    page = watched.page
    expect(page.locator(".job-metrics").first).to_contain_text("das loss", timeout=120000)
    (running,) = store.list(analysis="cdas-steer", status="running")
    page.reload(wait_until="networkidle")
    page.locator("nav a.active").wait_for(timeout=60000)
    # The old session ends once Bokeh drops it (15-30 s after its socket closed): its job is then cancelled.
    deadline = time.monotonic() + 120
    while store.info(running.run_id).status != "cancelled":
        assert time.monotonic() < deadline, store.info(running.run_id)
        time.sleep(1)
    assert (running.path / CHECKPOINT_FILE).exists()
    page.close()
    text = log_path.read_text()
    assert "Traceback" not in text and "StreamClosedError" not in text and "Uncaught exception" not in text, text
    assert server_errors(log_path) == []
