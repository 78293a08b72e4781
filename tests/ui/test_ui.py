"""The web UI, end to end: a real ``genq serve`` subprocess and a real headless Chromium.

Each test drives the page the way a person would (labels, buttons, the keyboard) and
checks what the server says behind its back. The app is tests/apps/ui_app.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support.ui_fixtures import CHROMIUM, PageFactory, ServerProcess, running_server

if not Path(CHROMIUM).exists():  # scripts/setup.sh installs it: missing is a failure
    raise RuntimeError(f"{CHROMIUM} is not installed (run scripts/setup.sh)")

TIMEOUT_MS = 20_000


def story_text(words: int) -> str:
    return "".join(f"word{i} " for i in range(words))


# -- fixtures ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("ui") / "genq.sqlite3") as server:
        yield server





@pytest.fixture
def page(new_page: PageFactory) -> Page:
    return new_page()


def job_id_from(page: Page) -> str:
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f]{32}$"))
    return page.url.rsplit("/", 1)[-1]


def job_status(page: Page) -> Any:
    return page.locator("section.job")


def run_from_form(page: Page, url: str, fields: dict[str, str]) -> str:
    """Open a function's page, fill its form by label, run it: the new job's id."""
    page.goto(url)
    for label, value in fields.items():
        page.get_by_label(label).fill(value)
    page.get_by_role("button", name="Run").click()
    return job_id_from(page)


# -- tests ---------------------------------------------------------------------------
def test_form_submit_follows_progress_to_100(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/functions/steps")
    # Record every value the progress bar takes, from before the job view exists.
    page.evaluate("""() => {
        window.progressSeen = [];
        new MutationObserver((records) => {
            for (const r of records) {
                window.progressSeen.push(Number(r.target.getAttribute("aria-valuenow")));
            }
        }).observe(document.body,
                   {subtree: true, attributes: true, attributeFilter: ["aria-valuenow"]});
    }""")
    page.get_by_label("N", exact=True).fill("10")  # the field is found by its label
    page.get_by_label("Delay").fill("0.15")
    page.get_by_role("button", name="Run").click()
    job_id = job_id_from(page)

    job = job_status(page)
    bar = job.get_by_role("progressbar", name="Job progress")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(job.locator(".progress-desc")).to_have_text("step 10 of 10")
    expect(job.locator(".progress-counts")).to_contain_text("10 / 10 steps")
    expect(job.locator(".result-text")).to_have_text("finished 10 steps")
    expect(job.get_by_role("button", name="Cancel")).to_be_hidden()

    seen = page.evaluate("window.progressSeen")
    assert seen[-1] == 100
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert any(0 < value < 100 for value in seen), f"no intermediate progress: {seen}"
    assert server.get(f"/api/jobs/{job_id}")["status"] == "succeeded"


def test_streamed_text_grows_before_the_job_ends(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/functions/story")
    page.get_by_label("Words").fill("40")
    page.get_by_label("Delay").fill("0.1")
    page.get_by_role("button", name="Run").click()
    job_id_from(page)
    job = job_status(page)
    text = job.locator(".stream-text")

    lengths = []  # lengths read while the job is still running
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, length = page.evaluate("""() => [
            document.querySelector("section.job").dataset.status,
            document.querySelector(".stream-text").textContent.length]""")
        if status != "running" and lengths:
            break
        if status == "running" and length and (not lengths or length != lengths[-1]):
            lengths.append(length)
        time.sleep(0.05)
    assert len(lengths) >= 3, f"the text did not grow while running: {lengths}"
    assert lengths == sorted(lengths)

    expect(job).to_have_attribute("data-status", "succeeded")
    expect(text).to_have_text(story_text(40))
    # the result is the same text: it is not shown a second time
    expect(job.locator(".result")).to_be_hidden()


def test_image_result_appears(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/functions/image")
    page.get_by_label("Size").fill("48")
    page.get_by_label("Color").select_option("red")
    page.get_by_role("button", name="Run").click()
    job_id = job_id_from(page)

    image = job_status(page).locator(".gallery img")
    expect(image).to_be_visible()
    expect(image).to_have_attribute("src", re.compile(r"^/api/artifacts/[0-9a-f]+$"))
    page.wait_for_function("() => document.querySelector('.gallery img').naturalWidth > 0")
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [48, 48]
    expect(job_status(page).get_by_role("link", name="Download")).to_have_attribute(
        "download", "red-48.png")
    result = server.get(f"/api/jobs/{job_id}")["result"]
    assert result["artifact"]["content_type"] == "image/png"


def test_images_appear_as_they_are_streamed(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/functions/frames")
    page.get_by_label("Count").fill("3")
    page.get_by_label("Delay").fill("0.6")
    page.get_by_role("button", name="Run").click()
    job_id = job_id_from(page)
    job = job_status(page)
    images = job.locator(".gallery img")
    expect(images).to_have_count(1)  # the first frame is on screen while the job runs...
    assert job.get_attribute("data-status") == "running"
    expect(images).to_have_count(3)  # ...and the others join it as they are yielded
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(images).to_have_count(3)  # the result lists the same artifacts: not shown twice
    assert images.evaluate_all("imgs => imgs.map(i => i.alt.split(' ')[0])") == [
        "frame-0.png", "frame-1.png", "frame-2.png"]

    download = job.locator(".artifacts").get_by_role("link", name="Download")
    expect(download).to_have_attribute("download", "frames.csv")
    response = page.request.get(f"{server.url}{download.get_attribute('href')}")
    assert response.ok and response.headers["content-type"].startswith("text/csv")
    assert response.text() == "frame,shade\n0,85\n1,170\n2,255\n"
    expect(job.locator(".log summary")).to_have_text("Log (3)")
    assert server.get(f"/api/jobs/{job_id}")["status"] == "succeeded"


def test_cancel_button_cancels_the_job(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/functions/sleeper")
    page.get_by_label("Seconds").fill("60")
    page.get_by_role("button", name="Run").click()
    job_id = job_id_from(page)
    job = job_status(page)
    expect(job).to_have_attribute("data-status", "running")
    expect(job.locator(".progress-desc")).to_have_text("sleeping")

    job.get_by_role("button", name="Cancel").click()
    expect(job).to_have_attribute("data-status", "cancelled")
    expect(job.locator(".status")).to_have_text("cancelled")
    expect(job.get_by_role("button", name=re.compile("Cancel"))).to_be_hidden()
    assert server.get(f"/api/jobs/{job_id}")["status"] == "cancelled"


def test_invalid_input_shows_the_fields_error(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/functions/steps")
    before = len(server.get("/api/jobs?function=steps&limit=500")["jobs"])
    n = page.get_by_label("N", exact=True)
    n.fill("500")
    n.press("Enter")  # the keyboard submits the form

    field = page.locator('[data-field="n"]')
    expect(field.locator(".field-error")).to_contain_text("less than or equal to 100")
    expect(n).to_have_attribute("aria-invalid", "true")
    expect(n).to_be_focused()
    expect(page.get_by_role("alert").first).to_contain_text("not valid")
    assert page.url.endswith("/functions/steps")  # no job was made
    assert len(server.get("/api/jobs?function=steps&limit=500")["jobs"]) == before

    # a required field left empty, on a form with every kind of field, all labelled
    page.goto(f"{server.url}/functions/kitchen_sink")
    unlabelled = page.evaluate("""() => [...document.querySelectorAll(
        "form.fn-form input, form.fn-form select, form.fn-form textarea")]
        .filter((el) => el.type !== "range" && !el.labels.length && !el.getAttribute("aria-label"))
        .map((el) => el.outerHTML)""")
    assert unlabelled == []
    expect(page.get_by_label("Prompt")).to_have_js_property("tagName", "TEXTAREA")
    expect(page.get_by_label("Mode")).to_have_js_property("tagName", "SELECT")
    expect(page.get_by_label("Upscale")).to_have_attribute("type", "checkbox")
    expect(page.get_by_label("Photo")).to_have_attribute("type", "file")
    page.get_by_role("button", name="Run").click()
    expect(page.locator('[data-field="title"] .field-error')).to_have_text("Field required")

    # now a valid submission with a list and an uploaded file
    page.get_by_label("Title").fill("hello")
    page.get_by_role("button", name="Add an item to Tags").click()
    page.get_by_label("Tags item", exact=True).fill("blue")
    page.get_by_label("Photo").set_input_files(
        files=[{"name": "pixel.png", "mimeType": "image/png", "buffer": b"\x89PNG fake bytes"}])
    expect(page.locator('[data-field="photo"] .file-preview')).to_contain_text("pixel.png")
    page.get_by_label("Upscale").check()
    page.get_by_role("button", name="Run").click()
    job_id = job_id_from(page)
    expect(job_status(page)).to_have_attribute("data-status", "succeeded")
    result = server.get(f"/api/jobs/{job_id}")["result"]
    assert result == {"title": "hello", "prompt": "", "count": 3, "ratio": 0.5,
                      "mode": "balanced", "upscale": True, "tags": ["blue"],
                      "photo_bytes": len(b"\x89PNG fake bytes")}


def test_failed_job_shows_its_error(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/functions/broken")
    page.get_by_label("Message").fill("the disk is on fire")
    page.get_by_role("button", name="Run").click()
    job_id_from(page)
    job = job_status(page)
    expect(job).to_have_attribute("data-status", "failed")
    error = job.locator(".job-error")
    expect(error.locator(".error-type")).to_have_text("ValueError")
    expect(error.locator(".error-message")).to_have_text("the disk is on fire")
    expect(error.locator("summary")).to_have_text("Traceback")


def test_reload_mid_job_replays_the_whole_history(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/functions/story")
    page.get_by_label("Words").fill("50")
    page.get_by_label("Delay").fill("0.08")
    page.get_by_role("button", name="Run").click()
    job_id = job_id_from(page)
    text = page.locator(".stream-text")
    expect(text).to_contain_text("word5 ")
    assert server.get(f"/api/jobs/{job_id}")["status"] == "running"

    page.reload()  # the URL is the job's: the page comes back to it
    job = job_status(page)
    expect(job).to_have_attribute("data-job-id", job_id)
    expect(text).to_contain_text("word0 word1 word2 word3 word4 word5 ")
    expect(job).to_have_attribute("data-status", "succeeded")
    expect(text).to_have_text(story_text(50))  # every word once: nothing lost, nothing twice
    expect(page.get_by_label("Words")).to_have_value("50")  # the form shows the job's input


def test_page_recovers_after_the_server_is_killed_and_restarted(
        new_page: PageFactory, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "crash.sqlite3")
    server.start()
    try:
        page = new_page()
        page.goto(f"{server.url}/functions/durable_story")
        page.get_by_label("Words").fill("40")
        page.get_by_label("Delay").fill("0.1")
        page.get_by_role("button", name="Run").click()
        job_id = job_id_from(page)
        job = job_status(page)
        conn = job.locator(".conn")
        text = page.locator(".stream-text")
        expect(conn).to_have_attribute("data-state", "live")
        expect(text).to_contain_text("word3 ")

        server.kill()  # SIGKILL mid-stream: no goodbye to the browser
        expect(conn).to_have_attribute("data-state", "reconnecting")
        expect(text).to_contain_text("word3 ")  # what arrived stays on screen

        server.start()  # same port, same database: the job is retried (retries=1)
        expect(conn).to_have_attribute("data-state", "live")
        expect(job).to_have_attribute("data-status", "succeeded")
        expect(text).to_have_text(story_text(40))  # the new attempt's text, once
        expect(job.locator(".notices")).to_contain_text("worker lost")
        history = conn.get_attribute("data-history") or ""
        assert re.search(r"live.*reconnecting.*live", history), history

        final = server.get(f"/api/jobs/{job_id}")
        assert final["status"] == "succeeded" and final["attempts"] == 2
        assert final["result"] == story_text(40)
    finally:
        server.stop()


def test_page_follows_a_job_through_a_graceful_restart(new_page: PageFactory,
                                                       tmp_path: Path) -> None:
    """A deploy: SIGTERM lets the job run 10 s, then puts it back in the queue (same
    attempt number); after the restart it runs again from the start. The page shows the
    new run's text once, not the old run's words followed by the new ones."""
    server = ServerProcess(tmp_path / "restart.sqlite3")
    server.start()
    try:
        page = new_page()
        page.goto(f"{server.url}/functions/slow_first_story")
        page.get_by_label("Marker").fill(str(tmp_path / "ran-once"))
        page.get_by_role("button", name="Run").click()
        job_id = job_id_from(page)
        job = job_status(page)
        text = page.locator(".stream-text")
        expect(text).to_contain_text("word1 ")

        server.stop(timeout=30)  # waits out the 10 s grace period, then requeues the job
        expect(job.locator(".conn")).to_have_attribute("data-state", "reconnecting")
        server.start()
        expect(job).to_have_attribute("data-status", "succeeded")
        expect(text).to_have_text(story_text(20))
        expect(job.locator(".notices")).to_contain_text("worker shut down")
        assert server.get(f"/api/jobs/{job_id}")["attempts"] == 1
    finally:
        server.stop()


# A key as `openssl rand -base64 16` prints it, and what a URL would make of it.
UI_KEY = "q0Zb3kJx9u1mYc2LwQe7Hg=="
UI_KEY_FORMS = [UI_KEY, UI_KEY.rstrip("="), quote(UI_KEY, safe=""), quote_plus(UI_KEY)]


def test_api_key_prompt(new_page: PageFactory, tmp_path: Path) -> None:
    """The page asks for the key, checks it, and never puts it in a URL: EventSource,
    images and downloads ride on the session cookie, so neither the browser's requests
    nor the server's access log hold the key."""
    with running_server(tmp_path / "keys.sqlite3", api_keys=f"{UI_KEY} owner=alice",
                        api_key=UI_KEY, log_level="info") as server:
        page = new_page()
        requested: list[str] = []
        page.context.on("request", lambda request: requested.append(request.url))
        page.goto(f"{server.url}/")
        dialog = page.get_by_role("dialog", name="API key required")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("an API key is required")

        dialog.get_by_label("API key").fill("wrong")
        dialog.get_by_role("button", name="Save key").click()
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("not valid")

        dialog.get_by_label("API key").fill(UI_KEY)
        dialog.get_by_role("button", name="Save key").click()
        expect(dialog).to_be_hidden()
        expect(page.locator(".fn-card")).to_have_count(10)
        assert page.evaluate("localStorage.getItem('genq.apiKey')") == UI_KEY
        cookies = page.context.cookies()
        assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
            ("genq_session", True, "Strict")]

        # The event stream, the streamed images and the download work on the cookie.
        job_id = run_from_form(page, f"{server.url}/functions/frames", {"Count": "2"})
        job = job_status(page)
        expect(job).to_have_attribute("data-status", "succeeded")
        expect(job.locator(".gallery img")).to_have_count(2)
        page.wait_for_function("() => [...document.querySelectorAll('.gallery img')]"
                               ".every(img => img.naturalWidth === 16)")
        download = job.locator(".artifacts").get_by_role("link", name="Download")
        response = page.request.get(f"{server.url}{download.get_attribute('href')}")
        assert response.ok and response.text().startswith("frame,shade\n")
        image_job = run_from_form(page, f"{server.url}/functions/image", {"Size": "16"})
        expect(job_status(page)).to_have_attribute("data-status", "succeeded")
        page.wait_for_function("() => document.querySelector('.gallery img')?.naturalWidth === 16")
        assert server.get(f"/api/jobs/{job_id}")["status"] == "succeeded"
        assert server.get(f"/api/jobs/{image_job}")["status"] == "succeeded"
        assert any("/events" in url for url in requested)
        assert any("/api/artifacts/" in url for url in requested)

        # Scripts may still send ?api_key= (however encoded): it works, and is redacted.
        for name in ("api_key", "api%5Fkey"):
            script = httpx.get(f"{server.url}/api/jobs?limit=1&{name}={quote(UI_KEY)}",
                               timeout=10)
            assert script.status_code == 200, script.text
    log = server.log_text_all()
    assert f"/api/jobs/{job_id}/events" in log  # the access log was on
    assert "api_key=[redacted]" in log and "api%5Fkey=[redacted]" in log
    for form in UI_KEY_FORMS:
        assert form not in log
        assert not [url for url in requested if form in url]


def test_jobs_list_filters_and_updates_live(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/jobs")
    page.get_by_label("Function", exact=True).select_option("steps")
    expect(page).to_have_url(re.compile(r"/jobs\?function=steps$"))
    expect(page.locator(".page-head .conn")).to_have_attribute("data-state", "live")

    job = server.submit("steps", n=6, delay=0.2)  # not from this page: it must show up live
    row = page.locator(f'tr[data-job-id="{job["id"]}"]')
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-status", "succeeded")
    functions = page.locator(".jobs-table tbody td[data-label=Function]").all_text_contents()
    assert functions and set(functions) == {"steps"}

    failed = server.submit("broken")
    server.wait_result(failed["id"])
    page.get_by_label("Function", exact=True).select_option("")
    page.get_by_label("Status", exact=True).select_option("failed")
    expect(page).to_have_url(re.compile(r"/jobs\?status=failed$"))
    failed_row = page.locator(f'tr[data-job-id="{failed["id"]}"]')
    expect(failed_row).to_be_visible()
    # The list of every status (after clearing the function) may still be on screen for
    # a moment: wait for the filtered one rather than reading rows mid-swap.
    expect(page.locator('.jobs-table tbody tr:not([data-status="failed"])')).to_have_count(0)
    statuses = page.locator(".jobs-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.status)")
    assert statuses and set(statuses) == {"failed"}
    failed_row.get_by_role("link").click()
    expect(page).to_have_url(f"{server.url}/jobs/{failed['id']}")
    expect(job_status(page).locator(".error-type")).to_have_text("ValueError")


def test_dashboard_numbers_change_after_jobs_run(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/dashboard")
    succeeded = page.locator('tr[data-fn="steps"] [data-metric="succeeded"]')
    expect(succeeded).to_have_text(re.compile(r"^\d+$"))
    before = int(succeeded.inner_text())
    expect(page.locator(".worker .health")).to_have_text("healthy")
    expect(page.locator('.tile[data-metric="streams"] .tile-value')).not_to_have_text("0")

    slow = server.submit("sleeper", seconds=30)
    expect(page.locator('tr[data-fn="sleeper"] [data-metric="running"]')).to_contain_text("1/2")
    for _ in range(2):
        server.wait_result(server.submit("steps", n=2, delay=0.05)["id"])
    expect(succeeded).to_have_text(str(before + 2))
    expect(page.locator('tr[data-fn="steps"] [data-metric="run"]')).to_contain_text(" s")
    server.cancel(slow["id"])
    expect(page.locator('tr[data-fn="sleeper"] [data-metric="running"]')).to_contain_text("0/2")


def test_chat_view_keeps_the_conversation(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/functions/echo_chat")
    message = page.get_by_label("Message")
    message.fill("hello there")
    page.get_by_role("button", name="Send").click()
    job_id_from(page)
    expect(job_status(page)).to_have_attribute("data-status", "succeeded")
    expect(page.locator(".bubble-assistant").last).to_contain_text(
        "You said: hello there (turn 1)")

    message.fill("and again")
    page.get_by_role("button", name="Send").click()
    second = page.locator('section.job[data-status="succeeded"]')
    expect(second.locator(".bubble")).to_have_count(4)
    expect(second.locator(".bubble-assistant").last).to_have_text(
        re.compile(r"You said: and again \(turn 2\)$"))
    job_id = job_id_from(page)
    assert server.get(f"/api/jobs/{job_id}")["input"]["history"] == [
        ["hello there", "You said: hello there (turn 1)"]]


def test_phone_width_has_no_horizontal_scroll(new_page: PageFactory,
                                               server: ServerProcess) -> None:
    page = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                    device_scale_factor=2)
    image = server.submit("image", size=32)
    server.wait_result(image["id"])
    server.wait_result(server.submit("broken")["id"])
    for path, ready in [("/", ".fn-card"), ("/functions/kitchen_sink", "form.fn-form"),
                        (f"/jobs/{image['id']}", ".gallery img"),
                        ("/jobs", ".jobs-table tbody tr"),
                        ("/dashboard", ".stats-table tbody tr")]:
        page.goto(f"{server.url}{path}")
        expect(page.locator(ready).first).to_be_visible()
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"{path} scrolls sideways: {widths}"
        expect(page.locator(".sidebar")).to_be_hidden()
        expect(page.get_by_role("navigation", name="Main")).to_be_visible()
