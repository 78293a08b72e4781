"""The Gradio adapter in real Chromium, through reloads: the README's snippet as written,
and ``chat_interface``.

What a visitor notices: a reload mid-job brings the output and the progress bar back
(its text giving the job's age); Stop cancels the job in genq, also from the reloaded
page, and the page says it was cancelled; the page that went away gave back its slot in
Gradio's queue, so a new Run is not held up behind it; a reload mid-reply in the chat
shows the reply still streaming, with a stop button that cancels it.

The README's snippet is read from README.md at test time (so the test breaks when the
README drifts) and run in this process, in a thread, so the test can ask its own genq
client about the jobs. The one change made to it: ``demo.launch()`` launches on a free
loopback port, quietly, instead of Gradio's default port 7860.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

import genq
from genq.gradio import SESSION_COOKIE, chat_interface

# Gradio's environment (no analytics, Hub or SSR), its warnings filter and helpers; the
# fixture that closes the event loops Gradio leaves behind is autouse.
from tests.adapters.test_gradio_adapter import (  # noqa: F401
    _close_gradio_loops,
    launched,
)
from tests.support.ui_fixtures import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
TIMEOUT_MS = 60_000

pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*:UserWarning:gradio"),
]


def readme_gradio_snippet() -> str:
    """The python block of README.md's "### Gradio" section, as written."""
    text = README.read_text()
    section = text[text.index("### Gradio\n"):]
    section = section[:section.index("\n## ")]
    found = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert found, "README.md's Gradio section has no python block"
    return found.group(1)


@contextlib.contextmanager
def running_snippet(db: Path, monkeypatch: pytest.MonkeyPatch
                    ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Run the README's snippet in a thread until the test is done; its URL and names."""
    code = readme_gradio_snippet()
    assert code.count("demo.launch()") == 1
    port = free_port()
    # The only change: a free loopback port instead of 7860 (and no banner).
    code = code.replace("demo.launch()", f"demo.launch(server_name='127.0.0.1', "
                                         f"server_port={port}, quiet=True)")
    monkeypatch.setenv("GENQ_DB", str(db))  # where ``app.local()`` keeps its jobs
    names: dict[str, Any] = {"__name__": "readme_gradio"}
    failed: list[BaseException] = []

    def run() -> None:
        try:
            exec(compile(code, f"{README} (Gradio section)", "exec"), names)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, name="readme-gradio", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        assert not failed, failed
        with contextlib.suppress(httpx.HTTPError):
            if "demo" in names and httpx.get(url, timeout=5).status_code == 200:
                break
        assert time.monotonic() < deadline, "the README's Gradio demo did not start"
        time.sleep(0.2)
    try:
        yield url, names
    finally:
        names["demo"].close()
        thread.join(60)
        assert not thread.is_alive() and not failed, failed


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A browser profile: its cookies survive reloads, as a visitor's do."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()


def visitor_job(context: Any, fn: Any) -> str:
    """The id of the job the adapter remembers for this browser."""
    cookie = next(c["value"] for c in context.cookies() if c["name"] == SESSION_COOKIE)
    entry = fn.memory.get(f"cookie:{cookie}", fn.function)
    assert entry is not None, "the adapter remembers no job for this browser"
    return entry.job_id


def ready(page: Any) -> Any:
    """Wait until the page is up and has run its load events (the one setting the
    visitor's cookie among them), so what the test types is not typed into a page that
    is still being built. Returns ``page``."""
    page.wait_for_function(f"document.cookie.includes('{SESSION_COOKIE}=')")
    return page


def field(page: Any, label: str) -> Any:
    """The visible input labelled ``label`` (Gradio keeps hidden copies of some)."""
    return page.get_by_label(label, exact=True).filter(visible=True).first


def wait_status(client: genq.Client, job_id: str, *statuses: genq.JobStatus,
                timeout: float = 60) -> genq.JobStatus:
    deadline = time.monotonic() + timeout
    while (status := client.get(job_id).status) not in statuses:
        assert time.monotonic() < deadline, f"job {job_id} is {status}, not {statuses}"
        time.sleep(0.1)
    return status


def test_readme_snippet_survives_a_reload_and_stop_cancels(
        browser: Any, context: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_snippet(tmp_path / "genq.sqlite3", monkeypatch) as (url, names):
        client, countdown = names["client"], names["countdown"]
        page = context.new_page()
        page.goto(url)
        ready(page)
        # A reload mid-job: the progress comes back, then the output.
        field(page, "Seconds").fill("6")
        page.get_by_role("button", name="Run").click()
        page.get_by_text(re.compile(r"\d+ s left")).first.wait_for()
        short = visitor_job(context, countdown)
        page.reload()
        page.get_by_text(re.compile(r"\d+ s left · job age \d+ s")).first.wait_for()
        expect(field(page, "Result")).to_have_value("counted 6 seconds", timeout=TIMEOUT_MS)
        assert client.get(short).status is genq.JobStatus.SUCCEEDED

        field(page, "Seconds").fill("40")
        page.get_by_role("button", name="Run").click()
        page.get_by_text(re.compile(r"\b3[0-7] s left")).first.wait_for()  # 3+ s counted
        first = visitor_job(context, countdown)

        page.reload()
        # The progress comes back, with the job's age: the 3+ seconds it counted before
        # the reload at least, not the time since the reload.
        aged = page.get_by_text(re.compile(r"\d+ s left · job age \d+ s")).first
        aged.wait_for()
        age = re.search(r"job age (\d+) s", aged.text_content() or "")
        assert age and int(age.group(1)) >= 3, aged.text_content()
        assert client.get(first).status is genq.JobStatus.RUNNING  # the reload left it

        page.get_by_role("button", name="Stop").click()
        assert wait_status(client, first, genq.JobStatus.CANCELLED, genq.JobStatus.SUCCEEDED
                           ) is genq.JobStatus.CANCELLED
        # The page says so: the output is marked "Error", and a toast titled "Cancelled"
        # explains, and stays until closed.
        toast = page.get_by_test_id("toast-body").filter(has_text="Cancelled")
        expect(toast).to_contain_text("The countdown job was cancelled.", timeout=TIMEOUT_MS)
        expect(page.get_by_text("Error", exact=True).first).to_be_visible(timeout=TIMEOUT_MS)

        # A job whose page goes away (a reload) keeps running; the call that page made
        # frees its slot in Gradio's queue, so a new Run is not stuck behind it.
        field(page, "Seconds").fill("600")
        page.get_by_role("button", name="Run").click()
        page.get_by_text(re.compile(r"\d+ s left")).first.wait_for()
        orphaned = visitor_job(context, countdown)
        page.reload()
        page.get_by_text(re.compile(r"job age \d+ s")).first.wait_for()
        field(page, "Seconds").fill("2")
        page.get_by_role("button", name="Run").click()
        expect(field(page, "Result")).to_have_value("counted 2 seconds", timeout=TIMEOUT_MS)
        assert visitor_job(context, countdown) != orphaned
        assert client.get(orphaned).status is genq.JobStatus.RUNNING

        # The same when the tab is closed: a new tab's Run is not stuck behind its call.
        field(page, "Seconds").fill("600")
        page.get_by_role("button", name="Run").click()
        page.get_by_text(re.compile(r"\d+ s left")).first.wait_for()
        closed = visitor_job(context, countdown)
        page.close()
        page = context.new_page()
        page.goto(url)
        ready(page)
        field(page, "Seconds").fill("3")
        page.get_by_role("button", name="Run").click()
        expect(field(page, "Result")).to_have_value("counted 3 seconds", timeout=TIMEOUT_MS)
        assert client.get(closed).status is genq.JobStatus.RUNNING
        for job in (orphaned, closed):
            client.cancel(job)
            wait_status(client, job, genq.JobStatus.CANCELLED)


# -- chat_interface ------------------------------------------------------------------------
app = genq.App("gradio-browser-test")
REPLY = "you said hello: " + "la " * 30


@app.function(concurrency=2)
def chat(message: str, history: list[tuple[str, str]] = [],  # noqa: B006
         delay: float = 0.3) -> Iterator[str]:
    for word in f"you said {message}: {'la ' * 30}".split():
        time.sleep(delay)
        yield word + " "


def test_chat_reply_resumes_after_reload_and_stop_cancels(context: Any, tmp_path: Path
                                                          ) -> None:
    with app.local(tmp_path / "chat.sqlite3") as local:
        demo = chat_interface(local, "chat")
        fn = demo.genq_function
        with launched(demo) as url:
            page = context.new_page()
            page.goto(url)
            ready(page)
            box = page.get_by_role("textbox").first
            box.fill("hello")
            box.press("Enter")
            reply = page.locator(".message.bot").last
            expect(reply).to_contain_text("you said hello: la", timeout=TIMEOUT_MS)
            job = visitor_job(context, fn)

            page.reload()
            # The conversation comes back, the reply still growing, the stop button shown.
            reply = page.locator(".message.bot").last
            expect(page.locator(".message.user").last).to_have_text("hello",
                                                                    timeout=TIMEOUT_MS)
            expect(reply).to_contain_text("you said hello: la", timeout=TIMEOUT_MS)
            assert local.get(job).status is genq.JobStatus.RUNNING
            grown = len(reply.text_content() or "")
            expect(reply).not_to_have_text(reply.text_content() or "", timeout=TIMEOUT_MS)
            assert len(reply.text_content() or "") > grown  # still streaming

            page.get_by_test_id("stop-button").click()
            assert wait_status(local, job, genq.JobStatus.CANCELLED,
                               genq.JobStatus.SUCCEEDED) is genq.JobStatus.CANCELLED
            # The reply stops short of the whole, and the send button is back.
            expect(page.get_by_test_id("stop-button")).to_be_hidden(timeout=TIMEOUT_MS)
            shown = " ".join((reply.text_content() or "").split())
            assert REPLY.startswith(shown) and shown != REPLY.strip()
