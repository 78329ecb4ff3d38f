"""The Panel app in a real headless Chromium: every page loads cleanly, a run launched from the UI appears,
bad input shows one line (never a traceback), and eight concurrent sessions are served without errors.

One ``diag serve`` subprocess serves a run store pre-filled with cheap real runs; screenshots of every page
go to ``reports/screenshots/`` (test artifacts, not in git).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright import sync_api as playwright_api
from playwright.sync_api import expect

from apps.shell import FIGURE_ROUTE, PAGES
from diag import capture, contract
from diag.boundary import analysis as boundary
from diag.boundary import episodes
from diag.cdas import steer, toy
from diag.credit import analysis as credit
from diag.runs import RunStore
from diag.tir import analysis as tir

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "reports" / "screenshots"
pytestmark = pytest.mark.slow
# Messages Chromium prints for every Bokeh page that are not errors of ours.
BENIGN = ("[bokeh",)
# A resource a page would fetch from outside this server (Panel's and Bokeh's CDNs, any other).
CDN_URL = re.compile(r"https?://(?:cdn\.holoviz\.org|cdn\.bokeh\.org|cdn\.jsdelivr\.net|unpkg\.com)[^\s\"')]*")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_home(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    """A run store with cheap real runs of every analysis the app shows (tiny budgets, shipped models).

    ``DIAG_SCREENSHOT_HOME=DIR`` serves an existing store instead (runs at a readable budget, e.g. ``diag audit``'s),
    for refreshing docs/screenshots: ``pytest tests/apps/test_app_browser.py -k screenshotted``.
    """
    if os.environ.get("DIAG_SCREENSHOT_HOME"):
        return Path(os.environ["DIAG_SCREENSHOT_HOME"])
    home = tmp_path_factory.mktemp("app_home")
    store = RunStore(home / "runs")
    seeded = [
        (capture, capture.Config(prompt="The capital of France is", layers=(0, 15, 29), device="cpu")),
        (capture, capture.Config(model=str(tiny_llama_dir), prompt="One two three", layers=(0, 1), device="cpu")),
        (boundary, boundary.Config(policies=("roadrunner-vanilla",), episodes=2, max_steps=6, conditions=("blur",),
                                   attribution_states=2, ig_steps=2)),
        (episodes, episodes.Config(episodes=1, max_steps=20, random_baseline=False)),
        (credit, credit.Config(n_pairs=2, seeds=(0,), captum_steps=0, n_boot=50, device="cpu")),
        (steer, steer.Config(concepts=("dogs",), steps=1, alphas=(1.0,), eval_prompts=2, max_new_tokens=4,
                             train_tokens=4)),
        (toy, toy.Config(mlp_steps=300, dii_steps=20, eval_pairs=200, objectives=("cdas",))),
    ]
    for module, config in seeded:
        contract.run(module.ANALYSIS, config, store=store)
    contract.run(tir.ANALYSIS, tir.Config(per_cell=1, families=("arithmetic",), levels=(1,), n_samples=2,
                                          max_new_tokens=24, problems_per_batch=1, workers=1, n_bootstrap=100),
                 store=store)
    return home


@pytest.fixture(scope="module")
def server(app_home: Path) -> Iterator[tuple[str, Path]]:
    """``diag serve`` on a free port; yields (base URL, server log path)."""
    port = free_port()
    log_path = app_home / "serve.log"
    env = {**os.environ, "DIAG_HOME": str(app_home)}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "diag.cli", "serve", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{base}/runs", timeout=30).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"diag serve did not come up:\n{log_path.read_text()}")
            time.sleep(0.5)
    yield base, log_path
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Watched:
    """A page with its console errors, uncaught exceptions and failed requests recorded."""

    def __init__(self, browser, base: str) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1800})
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and not m.text.startswith(BENIGN)
                     and self.errors.append(f"console: {m.text} ({m.location.get('url')})"))
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))

    def open(self, slug: str) -> None:
        self.page.goto(f"{self.base}/{slug}", wait_until="networkidle")
        self.page.locator("nav a.active").wait_for(timeout=30000)

    def body(self) -> str:
        return self.page.locator("body").inner_text()


def server_errors(log_path: Path) -> list[str]:
    """Error records in the server log, except a closed tab's websocket (the browser left, the server is fine)."""
    records: list[str] = []
    for line in log_path.read_text().splitlines():
        if re.match(r"\d{4}-\d\d-\d\d |[A-Z]+:", line) or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    return [r for r in records if ("Traceback" in r or " ERROR " in r) and "WebSocketClosedError" not in r]


# What each page must show once it has rendered the pre-filled store's runs.
EXPECTED = {
    "runs": ["runs shown", "boundary-episodes-"],
    "capture": ["predicts the next token", "mean token norm"],
    "boundary": ["Λ across shifts", "Step 0 of", "G_S overlay opacity"],
    "credit": ["rejected answer", "Localisation of the known span", "preference accuracy"],
    "tir": ["Support sets", "With the tool", "Expected answer", "tool solved"],
    "cdas": ["Held-out judge scores", "Stored held-out generations", "Ground truth: does DAS/CDAS",
             "Generate with and without"],
}


FIGURES_SHOWN = {"cdas", "boundary", "credit", "tir"}  # pages showing the selected run's saved figures


def assert_figures_loaded(page, timeout: float = 30) -> None:
    """Every saved figure on the page (``<img>`` from the figure route, inside Panel's shadow roots) has loaded."""
    images = page.locator(f"img[src*='{FIGURE_ROUTE}/']")
    expect(images.first).to_be_attached(timeout=30000)
    deadline = time.monotonic() + timeout
    while True:
        widths = images.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : -1)")
        if all(w > 0 for w in widths):
            return
        assert time.monotonic() < deadline and 0 not in widths, widths  # 0: loaded but broken (a 404)
        time.sleep(0.2)


def test_figure_route_serves_only_figures_a_run_lists(server, app_home) -> None:
    base, _ = server
    run = RunStore(app_home / "runs").list(analysis="boundary")[0]
    stem = RunStore(app_home / "runs").get(run.run_id).figure_paths()[0].stem
    with urllib.request.urlopen(f"{base}/{FIGURE_ROUTE}/{run.run_id}/{stem}.png", timeout=30) as reply:
        assert reply.headers["Content-Type"] == "image/png" and reply.read(8) == b"\x89PNG\r\n\x1a\n"
    for bad in (f"{run.run_id}/nothing", f"boundary-0123456789abcdef/{stem}", f"../{stem}"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{base}/{FIGURE_ROUTE}/{bad}.png", timeout=30)
        assert caught.value.code == 404, bad


@pytest.mark.parametrize("slug", [slug for slug, _ in PAGES])
def test_page_loads_without_errors_and_is_screenshotted(browser, server, slug: str) -> None:
    base, log_path = server
    watched = Watched(browser, base)
    watched.open(slug)
    watched.page.wait_for_timeout(1500)  # let Bokeh finish layout before the screenshot
    for text in EXPECTED[slug]:
        expect(watched.page.get_by_text(text).first).to_be_visible(timeout=30000)
    assert "Traceback" not in watched.body()
    assert watched.errors == []
    assert watched.page.locator("nav a.active").inner_text() == dict(PAGES)[slug]
    if slug in FIGURES_SHOWN:  # stored figures are linked from the server, and every one arrives
        assert_figures_loaded(watched.page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    watched.page.screenshot(path=str(SHOTS / f"{slug}.png"), full_page=True)
    assert (SHOTS / f"{slug}.png").stat().st_size > 10_000
    assert server_errors(log_path) == []
    watched.page.close()


def test_capture_launched_from_the_ui_appears_with_its_stored_result(browser, server, app_home,
                                                                      tiny_llama_dir) -> None:
    base, log_path = server
    watched = Watched(browser, base)
    watched.open("capture")
    page = watched.page
    page.get_by_label("model").fill(str(tiny_llama_dir))
    page.get_by_label("prompt").fill("Seven eight nine ten")
    page.get_by_label("layers (comma-separated)").fill("1")
    page.get_by_role("button", name="Run capture").click()
    page.get_by_text("“Seven eight nine ten”").wait_for(timeout=120000)
    runs = [r for r in RunStore(app_home / "runs").list(analysis="capture")
            if r.summary.get("sites", {}).keys() == {"L1.resid_post"}]
    assert len(runs) == 1 and runs[0].status == "finished"
    # The page shows the stored prediction and says the job finished (progress went through the worker).
    expect(page.get_by_text("predicts the next token")).to_contain_text(
        f"predicts the next token {runs[0].summary['next_token'].strip()}")
    expect(page.locator(".job-status")).to_contain_text("capture: done in")
    assert watched.errors == [] and server_errors(log_path) == []
    page.close()


def test_live_steering_from_the_ui_shows_answers_with_and_without_the_clamp(browser, server) -> None:
    base, log_path = server
    watched = Watched(browser, base)
    watched.open("cdas")
    page = watched.page
    page.get_by_label("Prompt", exact=True).fill("Write one sentence about your morning.")
    page.get_by_label("New tokens", exact=True).fill("8")
    page.get_by_role("button", name="Generate with and without steering").click()
    answers = page.locator(".steer-answers")
    expect(answers.get_by_text("Without steering")).to_be_visible(timeout=120000)
    expect(answers.get_by_text("With steering: elicit dogs with cdas")).to_be_visible()
    texts = [t.strip() for t in answers.locator(".answer p").all_inner_texts()]
    assert len(texts) == 2 and all(texts)
    expect(page.locator(".job-status").last).to_contain_text("steer: done in")
    assert watched.errors == [] and server_errors(log_path) == []
    page.close()


def test_bad_input_is_one_line_message_not_a_traceback(browser, server) -> None:
    base, log_path = server
    watched = Watched(browser, base)
    watched.open("capture")
    page = watched.page
    page.get_by_label("layers (comma-separated)").fill("0, 99")
    page.get_by_role("button", name="Run capture").click()
    alert = page.locator(".job-error")
    expect(alert.get_by_text("out of range")).to_contain_text("layer(s) [99] out of range", timeout=60000)
    assert "Traceback" not in watched.body()
    page.get_by_label("layers (comma-separated)").fill("zero")
    page.get_by_role("button", name="Run capture").click()
    alert.get_by_text("comma-separated int").wait_for(timeout=10000)
    assert watched.errors == [] and server_errors(log_path) == []
    page.close()


def test_runs_page_compares_runs_and_opens_a_report(browser, server, app_home) -> None:
    base, _ = server
    watched = Watched(browser, base)
    watched.open("runs")
    page = watched.page
    stored = RunStore(app_home / "runs").list(analysis="capture", status="finished")
    assert len(stored) >= 2
    page.get_by_label("Analysis").select_option("capture")  # the filter: only capture runs stay listed
    rows = page.locator(".runs-table .tabulator-row")
    expect(rows).to_have_count(len(stored), timeout=30000)
    shown_ids = [rows.nth(i).locator("[tabulator-field=run]").inner_text() for i in range(2)]
    assert set(shown_ids) <= {info.run_id for info in stored} and len(set(shown_ids)) == 2
    for i in range(2):
        rows.nth(i).locator("input[type=checkbox]").check()
    header = page.locator(".compare-table .tabulator-header")
    for run_id in shown_ids:
        expect(header).to_contain_text(run_id, timeout=30000)
    expect(page.locator(".compare-table")).to_contain_text("predicted next token")
    page.screenshot(path=str(SHOTS / "runs-compare.png"), full_page=True)
    report = browser.new_page()
    report.goto(f"{base}/report/{shown_ids[0]}")
    predicted = RunStore(app_home / "runs").get(shown_ids[0]).summary["next_token"].strip()
    assert shown_ids[0] in report.title() and predicted in report.locator("body").inner_text()
    assert watched.errors == []
    report.close()
    page.close()


def test_eight_concurrent_sessions_are_served_without_errors(server) -> None:
    base, log_path = server
    from playwright.async_api import async_playwright

    slugs = [slug for slug, _ in PAGES]

    async def visit(browser, index: int) -> str:
        context = await browser.new_context(viewport={"width": 1200, "height": 800})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(f"{m.text} ({m.location.get('url')})"))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.on("request", lambda r: external(r.url) and errors.append(f"external request: {r.url}"))
        bodies: list[str] = []  # the page, its CSS/JSON and the websocket frames that carry the document
        page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: bodies.append(str(frame))))
        responses = []
        page.on("response", lambda r: responses.append(r))
        slug = slugs[index % len(slugs)]
        await page.goto(f"{base}/{slug}", wait_until="networkidle", timeout=120000)
        await page.locator("nav a.active").wait_for(timeout=120000)
        text = await page.locator("body").inner_text()
        for response in responses:
            kind = response.headers.get("content-type", "")
            if any(k in kind for k in ("html", "css", "json")):
                bodies.append(await response.text())
        await context.close()
        assert not errors and "Traceback" not in text, (slug, errors)
        leaks = sorted({m.group(0) for body in bodies for m in CDN_URL.finditer(body)})
        assert not leaks, (slug, leaks)
        return slug

    async def main() -> list[str]:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                return await asyncio.gather(*(visit(browser, i) for i in range(8)))
            finally:
                await browser.close()

    def external(url: str) -> bool:
        return url.startswith(("http:", "https:", "ws:", "wss:")) and not url.split("//", 1)[1].startswith(
            base.split("//", 1)[1])

    # The module's sync Playwright owns this thread's event loop: drive the async sessions from another thread.
    # Repeated: a CDN link showed up in one session of eight, once in a while.
    for _ in range(2):
        with ThreadPoolExecutor(1) as pool:
            visited = pool.submit(asyncio.run, main()).result(timeout=240)
        assert len(visited) == 8
    assert server_errors(log_path) == []


def test_no_report_element_is_wider_than_its_section_at_1400px(browser, app_home, tmp_path) -> None:
    """Every stored run in one report, opened from disk as an auditor would: nothing overflows its card."""
    from diag.report.render import render_report

    store = RunStore(app_home / "runs")
    runs = [store.get(info.run_id) for info in store.list(status="finished")]
    path = tmp_path / "all.html"
    path.write_text(render_report(runs, title="every run"))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(path.as_uri())
    overflowing = page.evaluate("""() => [...document.querySelectorAll('main .panel')]
        .filter(p => p.scrollWidth > p.clientWidth + 1)
        .map(p => `${p.id || p.querySelector('h2')?.innerText}: ${p.scrollWidth} > ${p.clientWidth}`)""")
    sections = page.locator("main .panel").count()
    page.close()
    assert sections > len(runs), sections  # one card per run at least, plus the rest
    assert overflowing == [], overflowing


def query(url: str) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(url).query))


def test_deep_link_to_a_credit_pair_restores_that_view_and_its_downloads(browser, server, app_home) -> None:
    from diag import export

    base, log_path = server
    store = RunStore(app_home / "runs")
    (info,) = store.list(analysis="credit")
    pairs = sorted({item.pair for item in credit.Result.load(store.get(info.run_id)).items})
    assert len(pairs) >= 2  # by default the page shows the first two; the link asks for the last alone
    watched = Watched(browser, base)
    page = watched.page
    page.goto(f"{base}/credit?run={info.run_id[:14]}&pair={pairs[-1]}", wait_until="networkidle")
    prompts = page.locator(".token-heatmap .prompt")
    expect(prompts).to_have_count(1, timeout=60000)
    expect(prompts).to_contain_text(f"pair {pairs[-1]}")
    page.wait_for_function(f"() => location.search.includes('run={info.run_id}')", timeout=30000)  # written async
    assert query(page.url) == {"run": info.run_id, "pair": str(pairs[-1])}  # the full id: the link is canonical
    # The run's tables download as the same bytes `diag runs export` writes.
    page.get_by_text("Downloads: tables, arrays, everything").click()
    name = min(export.tables(store.get(info.run_id)))
    with page.expect_download(timeout=60000) as download:
        page.locator(".download-tables").get_by_role("button", name="CSV").click()
    assert download.value.suggested_filename == f"{info.run_id}.{name}.csv"
    assert Path(download.value.path()).read_bytes() == export.table_csv(export.tables(store.get(info.run_id))[name])
    assert watched.errors == [] and server_errors(log_path) == []
    page.close()


def test_deep_link_to_a_tir_problem_restores_that_view(browser, server, app_home, tmp_path) -> None:
    base, log_path = server
    lines = [json.dumps({"problem_id": pid, "mode": mode, "sample": s, "response": f"Answer: {pid}-{mode}-{s}",
                         "correct": ok}) + "\n"
             for pid, tool_ok, text_ok in (("p0", True, False), ("p1", False, True), ("p2", True, True))
             for mode, ok in (("tool", tool_ok), ("text", text_ok)) for s in range(2)]
    path = tmp_path / "rollouts.jsonl"
    path.write_text("".join(lines))
    store = RunStore(app_home / "runs")
    run_id, _ = contract.run(tir.ANALYSIS, tir.import_config(path, n_bootstrap=50), store=store)
    watched = Watched(browser, base)
    page = watched.page
    page.goto(f"{base}/tir?run={run_id}&problem=p1", wait_until="networkidle")  # the page alone would open on p0
    expect(page.get_by_text("Problem p1 (shrinkage)")).to_be_visible(timeout=60000)
    expect(page.locator(".rollouts-tool")).to_contain_text("Answer: p1-tool-1")
    assert query(page.url) == {"run": run_id, "problem": "p1"}
    page.get_by_text("p2", exact=True).click()  # picking another problem rewrites the link
    expect(page.get_by_text("Problem p2 (")).to_be_visible(timeout=30000)
    page.wait_for_function("() => location.search.includes('problem=p2')", timeout=30000)
    assert watched.errors == [] and server_errors(log_path) == []
    page.close()


def test_deep_link_to_a_boundary_frame_restores_that_view(browser, server, app_home) -> None:
    base, log_path = server
    (recorded,) = RunStore(app_home / "runs").list(analysis="boundary-episodes")
    watched = Watched(browser, base)
    page = watched.page
    page.goto(f"{base}/boundary?episodes={recorded.run_id}&frame=7", wait_until="networkidle")
    expect(page.get_by_text("Step 7 of 20 in episode 0")).to_be_visible(timeout=60000)
    page.wait_for_function("() => location.search.includes('episode=')", timeout=30000)  # written async
    params = query(page.url)
    assert params["episodes"] == recorded.run_id and params["frame"] == "7" and params["episode"] == "0"
    assert params["run"] == RunStore(app_home / "runs").list(analysis="boundary")[0].run_id
    assert watched.errors == [] and server_errors(log_path) == []
    page.close()


def test_runs_page_link_search_label_and_delete(browser, server, app_home) -> None:
    base, log_path = server
    store = RunStore(app_home / "runs")
    compared = [i.run_id for i in store.list(analysis="capture", status="finished")][:2]
    run = store.open("capture", {"model": "nowhere", "prompt": "labelled in the browser"})
    run.finish({"next_token": " x"})
    watched = Watched(browser, base)
    page = watched.page
    page.goto(f"{base}/runs?compare={','.join(compared)}", wait_until="networkidle")
    header = page.locator(".compare-table .tabulator-header")
    for run_id in compared:
        expect(header).to_contain_text(run_id, timeout=60000)
    page.locator(".runs-search input").fill(run.run_id[-10:])
    page.locator(".runs-search input").press("Enter")
    rows = page.locator(".runs-table .tabulator-row")
    expect(rows).to_have_count(1, timeout=30000)
    rows.first.locator("input[type=checkbox]").check()
    editor = page.locator(".label-editor")
    editor.get_by_label("Name").fill("browser baseline")
    editor.get_by_label("Tags (space- or comma-separated)").fill("paper, cpu")
    editor.get_by_role("button", name="Save label").click()
    expect(rows.first).to_contain_text("browser baseline", timeout=30000)
    assert store.info(run.run_id).label.tags == ("paper", "cpu")
    assert query(page.url) == {"q": run.run_id[-10:], "compare": run.run_id}
    page.locator(".label-editor").get_by_role("button", name="Delete run…").click()
    page.get_by_role("button", name=f"Delete {run.run_id} and its files").click()
    expect(rows).to_have_count(0, timeout=30000)
    assert not run.dir.exists() and run.run_id not in {i.run_id for i in store.list()}
    assert watched.errors == [] and server_errors(log_path) == []
    page.close()
