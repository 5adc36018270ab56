"""The HTML report, opened in headless Chromium, behaves as a self-contained page.

One report of the tiny model's overview (with a hostile sample text and title) is
opened once; the tests then check that the page logs no errors or warnings (CSP
violations would show up there), requests nothing but its own file, runs no
injected script, renders every plotly figure, and sorts a table on a header click.
A last test needs no browser: the same results give byte-identical HTML.

Needs Debian's Chromium at /usr/bin/chromium and the ``playwright`` package;
the browser tests are skipped otherwise. Nothing here touches the network.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import workbench as wb

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SKIP_MESSAGE = "needs headless Chromium and Playwright: apt-get install chromium && pip install playwright"
HOSTILE_TEXT = "<script>alert(1)</script>"
HOSTILE_TITLE = "<b>t</b>"


@pytest.fixture(scope="module")
def overview(tiny_llama):  # tiny_llama: the session fixture in conftest.py
    return wb.model_overview(tiny_llama, sample_text=HOSTILE_TEXT, cache=False)


@pytest.fixture(scope="module")
def loaded(overview, tmp_path_factory):
    """The report open in Chromium, with everything the page did while loading."""
    if not CHROMIUM.exists():
        pytest.skip(SKIP_MESSAGE)
    sync_api = pytest.importorskip("playwright.sync_api", reason=SKIP_MESSAGE)
    path = wb.report([overview], tmp_path_factory.mktemp("report") / "report.html", title=HOSTILE_TITLE)
    url = path.as_uri()
    events = SimpleNamespace(url=url, console=[], requests=[], dialogs=[])
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context()  # a fresh, temporary profile
        # Safety net: whatever the page asks for besides its own file is refused, not fetched.
        context.route("**/*", lambda route: route.continue_() if route.request.url == url else route.abort())
        context.on("request", lambda request: events.requests.append(request.url))
        pg = context.new_page()
        pg.on("console", lambda msg: events.console.append(f"{msg.type}: {msg.text}"))
        pg.on("pageerror", lambda exc: events.console.append(f"pageerror: {exc}"))
        pg.on("websocket", lambda ws: events.requests.append(ws.url))
        pg.on("dialog", lambda dialog: (events.dialogs.append(dialog.message), dialog.dismiss()))
        pg.goto(url, wait_until="load")
        pg.wait_for_timeout(500)  # let late errors and requests arrive
        events.page = pg
        yield events
        browser.close()


@pytest.mark.browser
def test_no_console_errors_or_warnings(loaded):
    bad = [m for m in loaded.console if m.split(":", 1)[0] in ("error", "warning", "pageerror")]
    assert bad == []


@pytest.mark.browser
def test_no_request_but_the_file_itself(loaded):
    assert loaded.requests, "the page's own load was not seen"
    assert set(loaded.requests) == {loaded.url}
    assert not [u for u in loaded.requests if u.startswith(("http:", "https:", "ws:", "wss:"))]


@pytest.mark.browser
def test_hostile_strings_are_shown_as_text(loaded):
    assert loaded.dialogs == []
    page = loaded.page
    assert HOSTILE_TEXT in page.inner_text("body")
    assert page.title() == HOSTILE_TITLE
    assert page.inner_text("h1") == HOSTILE_TITLE
    assert page.locator("h1 b").count() == 0


@pytest.mark.browser
def test_every_figure_rendered(loaded, overview):
    lengths = loaded.page.evaluate(
        "() => Array.from(document.querySelectorAll('.js-plotly-plot'),"
        " el => [Array.isArray(el.data) ? el.data.length : -1, !!el.querySelector('svg.main-svg')])"
    )
    assert len(lengths) == len(overview.figures())
    assert all(n > 0 and has_svg for n, has_svg in lengths), lengths


@pytest.mark.browser
def test_header_click_sorts_table(loaded):
    page = loaded.page
    details = page.locator("details", has=page.locator("summary", has_text="Table parameters"))
    details.locator("summary").click()
    assert details.evaluate("el => el.open")
    table = details.locator("table.sortable")

    def column(name):
        names = table.locator("thead th").all_inner_texts()
        return table.locator(f"tbody tr td:nth-child({names.index(name) + 1})").all_inner_texts()

    before = [int(v) for v in column("parameters")]
    table.locator("thead th", has_text="parameters").first.click()
    ascending = [int(v) for v in column("parameters")]
    assert ascending == sorted(before) and ascending != before
    table.locator("thead th", has_text="parameters").first.click()
    assert [int(v) for v in column("parameters")] == sorted(before, reverse=True)
    table.locator("thead th", has_text="component").click()
    assert column("component") == sorted(column("component"))


def test_report_is_byte_identical_when_rebuilt(overview, tmp_path):
    first = wb.report([overview], tmp_path / "a.html", title=HOSTILE_TITLE)
    second = wb.report([overview], tmp_path / "b.html", title=HOSTILE_TITLE)
    assert first.read_bytes() == second.read_bytes()
