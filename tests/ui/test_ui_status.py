"""What the job page says, in Chromium against a real ``genq serve``: retry notices that
name the attempts and say whether output started over (a download that resumed did not),
a page never queued and "running for" at once, a grey bar for a cancelled job, a chat
reply that says what it waits for before its first token and a Stop that keeps the
partial reply, copy buttons, the jobs list's input column, human rates, the tab title
and desktop notifications. The app is tests/apps/ui_status_app.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.flaky_http import FlakyFiles, serve_files
from tests.support.ui_fixtures import PageFactory, ServerProcess, running_server

STATUS_APP = f"{Path(__file__).parents[1] / 'apps' / 'ui_status_app.py'}:app"
TIMEOUT_MS = 20_000

# Records each Notification the page makes and each permission request, around the
# browser's own (the context's permission decides what the real ones answer).
NOTIFICATION_SPY = """
window.__notes = [];
window.__asked = 0;
const RealNotification = window.Notification;
class SpyNotification extends RealNotification {
  constructor(title, options) {
    window.__notes.push({ title, body: options && options.body });
    super(title, options);
  }
  static requestPermission() {
    window.__asked += 1;
    return RealNotification.requestPermission();
  }
}
window.Notification = SpyNotification;
"""

HIDE_TAB = """() => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("ui-status") / "genq.sqlite3",
                        app=STATUS_APP) as server:
        yield server





def job_id_from(page: Page) -> str:
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f]{32}$"))
    return page.url.rsplit("/", 1)[-1]


def run(page: Page, url: str, fields: dict[str, str], button: str = "Run") -> str:
    page.goto(url)
    for label, value in fields.items():
        page.get_by_label(label).fill(value)
    page.get_by_role("button", name=button, exact=True).click()
    return job_id_from(page)


# -- item 6: status messages say what happened ----------------------------------------
WATCH_QUEUED_AND_RUNNING = """() => {
    window.bothShown = [];
    new MutationObserver(() => {
        const queue = document.querySelector("section.job .notice-queue");
        const meta = document.querySelector("section.job .job-meta");
        if (queue && !queue.hidden && meta && meta.textContent.includes("running for")) {
            window.bothShown.push(queue.textContent + " | " + meta.textContent);
        }
    }).observe(document.body, {subtree: true, childList: true, characterData: true,
                               attributes: true});
}"""


def test_a_retry_without_output_names_its_attempts_and_does_not_start_over(
        new_page: PageFactory, server: ServerProcess, tmp_path: Path) -> None:
    page = new_page()
    page.goto(f"{server.url}/functions/flaky_setup")
    page.evaluate(WATCH_QUEUED_AND_RUNNING)
    page.get_by_label("Marker").fill(str(tmp_path / "setup-ran"))
    page.get_by_role("button", name="Run").click()
    job_id = job_id_from(page)
    job = page.locator("section.job")
    expect(job).to_have_attribute("data-status", "succeeded")

    notices = job.locator(".notices")
    expect(notices).to_contain_text(
        "Attempt 1 did not finish (RuntimeError: weights not reachable yet); attempt 2 starts in")
    expect(notices).to_contain_text("Running again (attempt 2 of 3).")
    assert "Started over" not in notices.inner_text()
    assert "?" not in notices.inner_text()
    final = server.get(f"/api/jobs/{job_id}")
    assert final["attempts"] == 2
    # the header, the notices and the job view agree on the attempt count
    expect(job.locator(".job-meta")).to_contain_text(f"attempt {final['attempts']} of 3")
    expect(job.locator(".job-meta")).to_contain_text(re.compile(r"ran \d"))
    assert page.evaluate("window.bothShown") == []


def test_a_retry_after_output_starts_over_and_the_text_copies(
        new_page: PageFactory, server: ServerProcess, tmp_path: Path) -> None:
    page = new_page(permissions=["clipboard-read", "clipboard-write"])
    job_id = run(page, f"{server.url}/functions/flaky_story",
                 {"Marker": str(tmp_path / "story-ran")})
    job = page.locator("section.job")
    expect(job).to_have_attribute("data-status", "succeeded")
    words = "".join(f"word{i} " for i in range(8))
    expect(job.locator(".stream-text")).to_have_text(words)
    expect(job.locator(".notices")).to_contain_text(
        "Attempt 1 did not finish (RuntimeError: lost the GPU); attempt 2 starts in")
    expect(job.locator(".notices")).to_contain_text(
        "Started over (attempt 2 of 2): the previous run's 3 output chunks were discarded.")
    assert server.get(f"/api/jobs/{job_id}")["attempts"] == 2

    copy = job.get_by_role("button", name="Copy the streamed text")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == words

    # a string result has its own copy button
    run(page, f"{server.url}/functions/render", {"Prompt": "stressed", "Seconds": "0"})
    expect(page.locator(".result-text")).to_have_text("desserts")
    page.get_by_role("button", name="Copy the result").click()
    assert page.evaluate("navigator.clipboard.readText()") == "desserts"


def test_a_download_resumed_after_a_crash_says_resumed_not_started_over(
        new_page: PageFactory, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 16384  # 4 MiB, sent in 64 KiB pieces 0.15 s apart
    files = FlakyFiles({"model.bin": blob}, chunk_delay=0.15)
    dest = tmp_path / "model.bin"
    server = ServerProcess(tmp_path / "crash.sqlite3", app=STATUS_APP)
    server.start()
    try:
        with serve_files(files) as base:
            page = new_page()
            run(page, f"{server.url}/functions/fetch",
                {"Url": f"{base}/model.bin", "Dest": str(dest)})
            job = page.locator("section.job")
            expect(job.locator(".progress-counts")).to_contain_text(
                re.compile(r"^(\d+\.\d kB|[0-2]\.\d MB) / 4\.2 MB"), timeout=TIMEOUT_MS)
            server.kill()  # mid-download: the part file stays, the job's run is lost
            expect(job.locator(".conn")).to_have_attribute("data-state", "reconnecting")
            server.start()  # the job runs again (retries=1) and resumes with Range
            expect(job).to_have_attribute("data-status", "succeeded", timeout=40_000)
            notices = job.locator(".notices")
            expect(notices).to_contain_text("Attempt 1 did not finish (worker lost")
            expect(notices).to_contain_text("Running again (attempt 2 of 2).")
            assert "Started over" not in notices.inner_text()
            expect(job.locator(".log-list")).to_contain_text("resumed from byte")
            expect(job.locator(".progress-desc")).to_contain_text("resumed from")
            expect(job.locator(".progress-counts")).to_contain_text("4.2 MB / 4.2 MB")
        assert files.range_requests >= 1
        assert dest.read_bytes() == blob
    finally:
        server.stop()


# the progress bar's fill and the theme's colours, as the browser computes them
BAR_COLORS = """() => {
    const probe = (value) => {
        const el = document.createElement("span");
        el.style.color = value;
        document.body.append(el);
        const color = getComputedStyle(el).color;
        el.remove();
        return color;
    };
    return { fill: getComputedStyle(document.querySelector(".bar-fill")).backgroundColor,
             muted: probe("var(--muted)"), ok: probe("var(--ok)"), err: probe("var(--err)") };
}"""


def test_tab_title_follows_the_job_and_a_cancelled_bar_is_grey(
        new_page: PageFactory, server: ServerProcess) -> None:
    page = new_page()
    job_id = run(page, f"{server.url}/functions/render", {"Prompt": "fox", "Seconds": "30"})
    expect(page).to_have_title(re.compile(r"^\d+% render · genq$"))
    page.locator("section.job").get_by_role("button", name="Cancel").click()
    expect(page).to_have_title("cancelled: render · genq")
    progress = page.locator("section.job .progress")
    expect(progress).to_have_attribute("data-outcome", "cancelled")
    colors = page.evaluate(BAR_COLORS)
    assert colors["fill"] == colors["muted"] != colors["ok"], colors
    assert server.get(f"/api/jobs/{job_id}")["status"] == "cancelled"

    page.goto(f"{server.url}/functions/doomed")
    page.get_by_role("button", name="Run").click()
    expect(page).to_have_title("failed: doomed · genq")
    expect(progress).to_have_attribute("data-outcome", "failed")
    colors = page.evaluate(BAR_COLORS)
    assert colors["fill"] == colors["err"], colors

    run(page, f"{server.url}/functions/render", {"Prompt": "owl", "Seconds": "0"})
    expect(page).to_have_title("done: render · genq")
    expect(progress).to_have_attribute("data-outcome", "succeeded")
    colors = page.evaluate(BAR_COLORS)
    assert colors["fill"] == colors["ok"], colors


# -- item 8: the chat view ---------------------------------------------------------------
def test_chat_says_what_it_waits_for_and_stop_keeps_the_partial_reply(
        new_page: PageFactory, server: ServerProcess) -> None:
    page = new_page(permissions=["clipboard-read", "clipboard-write"])
    blocker = server.submit("slow_chat", message="first in line", load=30)  # concurrency 1
    page.goto(f"{server.url}/functions/slow_chat")
    page.get_by_label("Load").fill("1.5")
    page.get_by_label("Words").fill("200")
    page.get_by_label("Delay").fill("0.1")
    page.get_by_label("Message").fill("hello")
    send = page.get_by_role("button", name="Send")
    send.click()
    first_id = job_id_from(page)
    reply = page.locator(".bubble-assistant").last
    status = reply.locator(".bubble-wait")
    expect(status).to_have_text(re.compile(r"^Queued · position 1 in the queue$"))
    server.cancel(blocker["id"])
    expect(status).to_have_text("loading model")  # the job's own progress description
    expect(reply.locator(".stream-text")).to_contain_text("reply3")
    expect(status).to_be_hidden()

    # while the reply streams, Send waits (the keyboard too) and Stop is offered
    expect(send).to_be_disabled()
    jobs_before = len(server.get("/api/jobs?function=slow_chat&limit=100")["jobs"])
    page.get_by_label("Message").fill("second")
    page.get_by_label("Message").press("Control+Enter")
    page.get_by_role("button", name="Stop").click()
    job = page.locator("section.job")
    expect(job).to_have_attribute("data-status", "cancelled")
    assert server.get(f"/api/jobs/{first_id}")["status"] == "cancelled"  # not orphaned
    assert len(server.get("/api/jobs?function=slow_chat&limit=100")["jobs"]) == jobs_before
    partial = reply.locator(".stream-text").inner_text()
    assert partial.startswith("To 'hello' (turn 1):") and "reply199" not in partial
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(page.locator(".history-note")).to_have_text("1 earlier turn")

    reply.get_by_role("button", name="Copy this reply").click()
    assert page.evaluate("navigator.clipboard.readText()") == partial

    page.get_by_label("Words").fill("3")
    page.get_by_label("Load").fill("0")
    send.click()
    second = page.locator('section.job[data-status="succeeded"]')
    expect(second.locator(".bubble")).to_have_count(4)
    expect(second.locator(".bubble-assistant").first.locator(".bubble-text")).to_have_text(partial)
    second_id = job_id_from(page)
    assert second_id != first_id
    assert server.get(f"/api/jobs/{second_id}")["input"]["history"] == [["hello", partial]]


# -- item 9: the jobs list ---------------------------------------------------------------
def test_jobs_list_shows_each_jobs_input_and_rates_in_human_units(
        new_page: PageFactory, server: ServerProcess) -> None:
    chats = [server.submit("slow_chat", message=m, load=0, words=1, delay=0)
             for m in ("alpha question", "beta question")]
    long_prompt = "a lighthouse at dusk, " * 10
    render = server.submit("render", prompt=long_prompt, seconds=0)
    for job in [*chats, render]:
        server.wait_result(job["id"])
    copying = server.submit("transfer", seconds=60)
    page = new_page()
    page.goto(f"{server.url}/jobs")
    # no text input: its fields
    expect(page.locator(f'tr[data-job-id="{copying["id"]}"] td[data-label="Input"]')
           ).to_have_text("seconds: 60")
    for job, text in zip(chats, ("alpha question", "beta question"), strict=True):
        row = page.locator(f'tr[data-job-id="{job["id"]}"]')
        expect(row.locator('td[data-label="Input"]')).to_have_text(text)
    cell = page.locator(f'tr[data-job-id="{render["id"]}"] td[data-label="Input"]')
    expect(cell).to_have_text(re.compile(r"^a lighthouse at dusk, a lighthouse .*…$"))
    assert len(cell.inner_text()) == 60
    expect(cell).to_have_attribute("title", long_prompt.strip())

    page.goto(f"{server.url}/jobs/{copying['id']}")
    counts = page.locator("section.job .progress-counts")
    expect(counts).to_have_text("12.0 MB / 100.0 MB · 4.0 MB/s")
    server.cancel(copying["id"])


# -- item 11: notifications ----------------------------------------------------------------
def test_a_job_ending_in_a_hidden_tab_notifies(new_page: PageFactory,
                                               server: ServerProcess) -> None:
    page = new_page(permissions=["notifications"])
    page.add_init_script(NOTIFICATION_SPY)
    page.goto(f"{server.url}/functions/render")
    toggle = page.get_by_label("Notify me")
    expect(toggle).not_to_be_checked()
    toggle.check()  # the permission is granted already: nothing to ask
    expect(toggle).to_be_checked()

    page.get_by_label("Seconds").fill("0.2")
    page.get_by_role("button", name="Run").click()  # ends while the tab is visible
    expect(page.locator("section.job")).to_have_attribute("data-status", "succeeded")
    assert page.evaluate("window.__notes") == []

    page.get_by_label("Prompt").fill("night owl")
    page.get_by_label("Seconds").fill("2")
    page.get_by_role("button", name="Run").click()
    job_id_from(page)
    expect(page.locator('section.job[data-status="running"]')).to_be_visible()
    page.evaluate(HIDE_TAB)
    expect(page.locator("section.job")).to_have_attribute("data-status", "succeeded")
    page.wait_for_function("window.__notes.length > 0")
    assert page.evaluate("window.__notes") == [
        {"title": "done: render · genq", "body": "Finished. Open the tab to see the result."}]
    assert page.evaluate("window.__asked") == 0

    # it ends while the tab shows the jobs list: the list's live feed notifies
    mine = run(page, f"{server.url}/functions/render", {"Prompt": "from the list", "Seconds": "4"})
    page.goto(f"{server.url}/jobs")
    row = page.locator(f'tr[data-job-id="{mine}"]')
    expect(row).to_have_attribute("data-status", "running")
    page.evaluate(HIDE_TAB)
    expect(row).to_have_attribute("data-status", "succeeded")
    page.wait_for_function("window.__notes.length > 0")
    assert page.evaluate("window.__notes") == [
        {"title": "done: render · genq", "body": "Finished. Open the tab to see the result."}]

    # a job this browser did not start does not notify, hidden tab or not
    other = server.submit("render", prompt="not mine", seconds=1.5)
    page.goto(f"{server.url}/jobs/{other['id']}")
    expect(page.get_by_label("Notify me")).to_be_checked()  # the choice is remembered
    page.evaluate(HIDE_TAB)
    expect(page.locator("section.job")).to_have_attribute("data-status", "succeeded")
    time.sleep(0.3)
    assert page.evaluate("window.__notes") == []


def test_notification_permission_is_asked_on_the_toggle_not_on_load(
        new_page: PageFactory, server: ServerProcess) -> None:
    page = new_page()  # no permission decided yet
    page.add_init_script(NOTIFICATION_SPY)
    page.goto(f"{server.url}/functions/render")
    expect(page.get_by_label("Notify me")).to_be_visible()
    page.get_by_label("Prompt").fill("quiet")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("section.job")).to_have_attribute("data-status", "succeeded")
    assert page.evaluate("window.__asked") == 0
    page.get_by_label("Notify me").click()
    page.wait_for_function("window.__asked === 1")
