"""No job input or output ever runs in the web UI; every response carries the headers.

A real ``genq serve tests/apps/hostile_app.py:app`` subprocess and real headless
Chromium. Every string the app hands the UI (descriptions, field titles and choices,
streamed text and JSON, progress, logs, results, errors, artifact names and contents)
tries to run ``window.__pwned = 1``. The page's own code must stop all of it by never
making markup of data: each test also asserts the UI raised no Content-Security-Policy
violation and no console error, so the CSP is a second line, not the one that held.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Error,
    Page,
    expect,
)

from genq.server.security import API_CSP, ARTIFACT_CSP
from genq.server.ui import CONTENT_SECURITY_POLICY as UI_CSP
from tests.apps import hostile_app as hostile
from tests.support.ui_fixtures import CHROMIUM, ServerProcess, running_server

if not Path(CHROMIUM).exists():  # scripts/setup.sh installs it: missing is a failure
    raise RuntimeError(f"{CHROMIUM} is not installed (run scripts/setup.sh)")

TIMEOUT_MS = 20_000
HOSTILE_APP = Path(__file__).parents[1] / "apps" / "hostile_app.py"

# Runs in every document before its own scripts: reports a write to window.__pwned and
# every CSP violation to the test, whichever page (or navigation) it happens on.
WATCH = """
Object.defineProperty(window, "__pwned", {
  configurable: false,
  get() { return undefined; },
  set(value) { window.__genqReport("pwned: " + String(value)); },
});
document.addEventListener("securitypolicyviolation", (e) => {
  window.__genqReport(`csp: ${e.violatedDirective} blocked ${e.blockedURI} ${e.sample}`);
});
"""


class Watch:
    """What the pages of one browser context did that they must not."""

    def __init__(self) -> None:
        self.pwned: list[str] = []
        self.violations: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.requests: list[str] = []
        self.expected_console: list[re.Pattern[str]] = []

    def report(self, _source: Any, message: str) -> None:
        (self.pwned if message.startswith("pwned") else self.violations).append(message)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def markup_requests(self) -> list[str]:
        """Requests for ``x``: the ``<img src=x>`` of a payload that became markup."""
        return [url for url in self.requests if re.search(r"/x(\?|$)", url)]

    def assert_clean(self) -> None:
        assert not self.pwned, f"a payload ran: {self.pwned}"
        assert not self.markup_requests(), f"a payload became markup: {self.markup_requests()}"
        assert not self.violations, f"the page broke its own CSP: {self.violations}"
        unexpected = [m for m in self.console_errors
                      if not any(p.search(m) for p in self.expected_console)]
        assert not unexpected, f"console errors: {unexpected}"
        assert not self.page_errors, f"uncaught errors in the page: {self.page_errors}"


# -- fixtures ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("hostile") / "genq.sqlite3"
    with running_server(db, app=f"{HOSTILE_APP}:app") as server:
        yield server


WatchedPage = Callable[[], tuple[Page, Watch]]


@pytest.fixture
def watched(browser: Browser) -> Iterator[WatchedPage]:
    """Pages whose every run of a payload, CSP violation and console error is recorded."""
    contexts: list[Any] = []

    def make() -> tuple[Page, Watch]:
        watch = Watch()
        context = browser.new_context(viewport={"width": 1280, "height": 860},
                                      accept_downloads=True)
        contexts.append(context)
        context.expose_binding("__genqReport", watch.report)
        context.add_init_script(WATCH)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", watch.on_console)
        page.on("pageerror", lambda error: watch.page_errors.append(str(error)))
        page.on("request", lambda request: watch.requests.append(request.url))
        return page, watch

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page_and_watch(watched: WatchedPage) -> Iterator[tuple[Page, Watch]]:
    page, watch = watched()
    yield page, watch
    watch.assert_clean()


def text_of(page: Page, selector: str) -> Any:
    return page.locator(selector).first.evaluate("el => el.textContent")


def assert_no_live_markup(page: Page) -> None:
    """Nothing a payload spells exists as an element or attribute anywhere on the page."""
    found = page.evaluate("""() => [
        ...document.querySelectorAll(
            'body script, iframe, object, embed, [onerror], [onload], [onclick], '
            + 'a[href^="javascript:" i], img[src="x"], main svg[onload]')
    ].map((el) => el.outerHTML)""")
    assert found == []


def poll(page: Page, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Wait for something the page reports to the test (bindings run between calls)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        page.wait_for_timeout(20)
    return True


def job_id_from(page: Page) -> str:
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f]{32}$"))
    return page.url.rsplit("/", 1)[-1]


def finished_stream_job(server: ServerProcess) -> dict[str, Any]:
    job = server.wait_result(server.submit("hostile_stream")["id"])
    assert job["status"] == "succeeded"
    return job


def artifacts_of(server: ServerProcess, job_id: str) -> dict[str, dict[str, Any]]:
    """The artifacts a job streamed, by content type."""
    events = server.get(f"/api/jobs/{job_id}/events?format=json")["events"]
    refs = [e["data"]["chunk"]["artifact"] for e in events
            if e["type"] == "output" and isinstance(e["data"].get("chunk"), dict)
            and "artifact" in e["data"]["chunk"]]
    return {ref["content_type"]: ref for ref in refs}


# -- the browser ---------------------------------------------------------------------
def test_function_form_shows_hostile_schema_text_literally(
        page_and_watch: tuple[Page, Watch], server: ServerProcess) -> None:
    page, _ = page_and_watch
    page.goto(f"{server.url}/")
    card = page.locator('.fn-card[href="/functions/hostile_stream"]')
    expect(card).to_contain_text(hostile.IMG)
    expect(card).to_contain_text(hostile.SCRIPT)

    page.goto(f"{server.url}/functions/hostile_stream")
    description = page.locator(".fn-description")
    expect(description).to_contain_text(hostile.MARKDOWN)
    expect(description.locator("code").first).to_have_text("<b>code</b>")  # as text
    field = page.locator('[data-field="text"]')
    expect(field.locator("label")).to_have_text(re.compile(re.escape(hostile.SCRIPT)))
    expect(field.locator(".hint")).to_contain_text(hostile.HOSTILE)
    expect(page.get_by_label(hostile.SCRIPT)).to_have_value(hostile.HOSTILE)  # the default
    options = page.locator('[data-field="choice"] option').all_text_contents()
    assert hostile.IMG in options and hostile.SCRIPT in options
    assert_no_live_markup(page)


def test_job_page_shows_every_streamed_payload_as_text(
        page_and_watch: tuple[Page, Watch], server: ServerProcess, tmp_path: Path) -> None:
    page, watch = page_and_watch
    release = tmp_path / "release"
    page.goto(f"{server.url}/functions/hostile_stream")
    page.get_by_label("Release").fill(str(release))
    page.get_by_role("button", name="Run").click()
    job_id = job_id_from(page)
    job = page.locator("section.job")

    # Mid-stream: the job waits for the release file, so all of this is live output.
    expected_text = f"{hostile.HOSTILE} {hostile.SCRIPT}"
    expect(job.locator(".stream-text")).to_have_text(expected_text)
    expect(job.locator(".gallery img")).to_have_count(2)
    expect(job.locator(".artifacts li")).to_have_count(3)
    assert job.get_attribute("data-status") == "running"
    expect(job.locator(".progress-desc")).to_have_text(hostile.HOSTILE)
    expect(job.locator(".log li")).to_contain_text(hostile.HOSTILE)
    expect(job.locator(".chunks pre")).to_contain_text('"link": "javascript:window.__pwned=1"')
    names = job.locator(".artifacts .artifact-name").evaluate_all(
        "els => els.map((el) => el.textContent)")
    assert names == [hostile.ARTIFACT_NAME, "page.txt", "bad-type"]
    expect(job.locator(".artifacts li").first).to_contain_text("text/html")
    # The SVG (with its script) shows as an image: an <img> never runs an SVG's script.
    svg = job.locator(f'.gallery img[alt^="{hostile.IMG}.svg"]')
    page.wait_for_function("img => img.complete && img.naturalWidth === 16",
                           arg=svg.element_handle())
    assert job.locator(".gallery figcaption .mono").all_text_contents() == [
        f"{hostile.IMG}.svg", f"{hostile.SCRIPT}.png"]
    # Every link the job view made is a URL of this server, none a javascript: link.
    hrefs = job.locator("a").evaluate_all("els => els.map((a) => a.href)")
    assert hrefs and all(h.startswith(f"{server.url}/") for h in hrefs), hrefs
    assert_no_live_markup(page)

    release.touch()
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(job.locator(".stream-text")).to_have_text(expected_text)
    expect(job.locator(".progress-desc")).to_have_text(hostile.SCRIPT)
    expect(job.locator(".input-details pre")).to_contain_text(hostile.SCRIPT)

    page.reload()  # the same job replayed from its stored history
    expect(page.locator("section.job")).to_have_attribute("data-status", "succeeded")
    expect(page.locator(".stream-text")).to_have_text(expected_text)
    expect(page.locator(".artifacts li")).to_have_count(3)
    expect(page.get_by_label(hostile.SCRIPT)).to_have_value(hostile.HOSTILE)
    assert_no_live_markup(page)

    page.goto(f"{server.url}/jobs")
    expect(page.locator(f'tr[data-job-id="{job_id}"]')).to_contain_text("hostile_stream")
    page.goto(f"{server.url}/dashboard")
    expect(page.locator('tr[data-fn="hostile_stream"]')).to_be_visible()
    assert_no_live_markup(page)
    assert not watch.pwned


@pytest.mark.parametrize(("function", "selector", "expected"), [
    ("hostile_text", ".result-text", hostile.HOSTILE),
    ("hostile_result", ".result-json", None),
    ("hostile_error", ".job-error .error-message", hostile.HOSTILE),
])
def test_results_and_errors_show_as_text(page_and_watch: tuple[Page, Watch],
                                         server: ServerProcess, function: str,
                                         selector: str, expected: str | None) -> None:
    page, _ = page_and_watch
    job = server.submit(function)
    server.wait_result(job["id"])
    page.goto(f"{server.url}/jobs/{job['id']}")
    shown = page.locator(selector)
    expect(shown).to_be_visible()
    if expected is None:  # JSON: the payloads inside it, as JSON text
        expect(shown).to_contain_text('"href": "javascript:window.__pwned=1"')
        expect(shown).to_contain_text(hostile.IMG)
    else:
        assert text_of(page, selector) == expected
    if function == "hostile_error":
        page.locator(".job-error summary").click()
        expect(page.locator(".traceback")).to_contain_text(hostile.SCRIPT)
    assert_no_live_markup(page)


def test_chat_bubbles_show_hostile_messages_as_text(page_and_watch: tuple[Page, Watch],
                                                   server: ServerProcess) -> None:
    page, _ = page_and_watch
    page.goto(f"{server.url}/functions/hostile_chat")
    page.get_by_label("Message").fill(hostile.LINK)
    page.get_by_role("button", name="Send").click()
    job_id_from(page)
    expect(page.locator("section.job")).to_have_attribute("data-status", "succeeded")
    assert text_of(page, ".bubble-user .bubble-text") == hostile.LINK
    assert text_of(page, ".bubble-assistant .bubble-text") == (
        f"{hostile.LINK} | {hostile.HOSTILE}")
    assert_no_live_markup(page)


def test_hostile_urls_show_as_text(page_and_watch: tuple[Page, Watch],
                                   server: ServerProcess) -> None:
    page, watch = page_and_watch
    # The page asks the API for the unknown job; Chromium logs the 404 answer.
    watch.expected_console.append(re.compile(r"status of 404 \(Not Found\)"))
    page.goto(f"{server.url}/functions/{quote(hostile.IMG, safe='')}")
    expect(page.locator("h1")).to_have_text("Unknown function")
    expect(page.locator(".error-message")).to_contain_text(hostile.IMG)
    page.goto(f"{server.url}/jobs/{quote(hostile.IMG, safe='')}")
    expect(page.locator("h1")).to_have_text("Job not found")
    expect(page.locator(".error-message")).to_contain_text(hostile.IMG)
    assert_no_live_markup(page)


def test_csp_stops_markup_that_slips_into_the_page(watched: WatchedPage,
                                                   server: ServerProcess) -> None:
    """The second line: were app.js ever to let markup through, it still would not run."""
    page, watch = watched()
    page.goto(f"{server.url}/functions/hostile_stream")
    expect(page.locator(".fn-description")).to_be_visible()
    # An HTML string into the DOM, or an inline handler: refused by Trusted Types.
    with pytest.raises(Error, match="TrustedHTML"):
        page.evaluate("() => { document.body.insertAdjacentHTML('beforeend', "
                      "'<img src=x onerror=\"window.__pwned = 1\">'); }")
    with pytest.raises(Error, match="TrustedScript"):
        page.evaluate("() => document.createElement('img').setAttribute('onerror', "
                      "'window.__pwned = 1')")
    # A javascript: link followed: refused (no 'unsafe-inline', no Trusted Types policy).
    page.evaluate("""() => {
        const a = document.createElement("a");
        a.href = "javascript:window.__pwned = 1";
        a.textContent = "hostile link";
        document.body.append(a);
    }""")
    page.get_by_text("hostile link").click()
    assert poll(page, lambda: len(watch.violations) >= 3), watch.violations
    assert {v.split()[1] for v in watch.violations} <= {
        "require-trusted-types-for", "script-src-elem", "script-src"}, watch.violations
    assert not watch.pwned
    assert not watch.markup_requests()


def test_artifacts_open_safely_in_a_tab(watched: WatchedPage, server: ServerProcess) -> None:
    page, watch = watched()
    job = finished_stream_job(server)
    refs = artifacts_of(server, job["id"])

    def url(content_type: str) -> str:
        return f"{server.url}/api/artifacts/{refs[content_type]['id']}"

    # HTML and SVG are downloads, never pages of this origin.
    for content_type, suffix in [("text/html", ".html"), ("image/svg+xml", ".svg")]:
        with page.expect_download() as download_info, pytest.raises(Error, match="Download"):
            page.goto(url(content_type))
        download = download_info.value
        assert download.suggested_filename.endswith(suffix)
        assert "\n" not in download.suggested_filename
        assert download.path().read_bytes() in (hostile.HTML_PAGE.encode(),
                                                 hostile.SVG_IMAGE.encode())
    assert page.context.cookies() == []  # the name's "Set-Cookie" stayed inside the name

    # HTML labelled text/plain shows as text (nosniff: the browser never guesses HTML).
    page.goto(url("text/plain"))
    assert page.evaluate("document.body.innerText") == hostile.HTML_PAGE
    assert page.evaluate("document.querySelectorAll('script, img, h1').length") == 0

    # A PNG opens as an image.
    page.goto(url("image/png"))
    page.wait_for_function("document.images.length === 1 && document.images[0].naturalWidth === 4")
    watch.assert_clean()


# -- HTTP headers ----------------------------------------------------------------------
COMMON = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
          "x-frame-options": "DENY"}


def assert_common(response: httpx.Response, csp: str) -> None:
    for name, value in COMMON.items():
        assert response.headers.get(name) == value, (response.url, name)
    assert response.headers["content-security-policy"] == csp


def test_every_response_carries_the_security_headers(server: ServerProcess) -> None:
    job = finished_stream_job(server)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for path in ["/", "/functions/hostile_stream", "/jobs", "/dashboard"]:
            response = http.get(path)
            assert response.status_code == 200 and "text/html" in response.headers["content-type"]
            assert_common(response, UI_CSP)
        assert "'unsafe-inline'" not in UI_CSP and "'unsafe-eval'" not in UI_CSP
        for path, status in [("/api/functions", 200), (f"/api/jobs/{job['id']}", 200),
                             ("/api/jobs?limit=1", 200), ("/openapi.json", 200),
                             ("/healthz", 200), ("/readyz", 200),
                             ("/static/app.js", 200), ("/static/app.css", 200),
                             ("/api/jobs/nope", 404), ("/nowhere", 404)]:
            response = http.get(path)
            assert response.status_code == status, path
            assert_common(response, API_CSP)
        for path in [f"/api/jobs/{job['id']}/events", "/api/events"]:
            with http.stream("GET", path) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                assert_common(response, API_CSP)


def test_artifacts_are_inline_only_when_safe(server: ServerProcess) -> None:
    refs = artifacts_of(server, finished_stream_job(server)["id"])
    with httpx.Client(base_url=server.url, timeout=10) as http:
        def get(content_type: str) -> httpx.Response:
            response = http.get(f"/api/artifacts/{refs[content_type]['id']}")
            assert response.status_code == 200
            assert_common(response, ARTIFACT_CSP)
            return response

        html = get("text/html")
        assert html.headers["content-type"].startswith("text/html")
        disposition = html.headers["content-disposition"]
        assert disposition.startswith("attachment; ")
        assert "set-cookie" not in html.headers
        assert html.content == hostile.HTML_PAGE.encode()
        # RFC 6266: an ASCII fallback and the exact name (line breaks made "_") as filename*
        match = re.fullmatch(r'attachment; filename="([ -~]+)"; filename\*=UTF-8\'\'(\S+)',
                             disposition)
        assert match, disposition
        assert '"' not in match[1] and "\\" not in match[1]
        assert unquote(match[2]) == hostile.ARTIFACT_NAME.replace("\r", "_").replace("\n", "_")

        assert get("image/svg+xml").headers["content-disposition"].startswith("attachment; ")
        bad = get("text/html\r\nX-Injected: 1")
        assert bad.headers["content-type"] == "application/octet-stream"
        assert "x-injected" not in bad.headers
        assert bad.headers["content-disposition"] == 'inline; filename="bad-type"'
        assert get("text/plain").headers["content-disposition"] == 'inline; filename="page.txt"'
        png = get("image/png")
        assert png.headers["content-type"] == "image/png"
        assert png.headers["content-disposition"].startswith("inline; ")
