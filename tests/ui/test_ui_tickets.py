"""Cancelling a job that identical submissions share (dedupe), in Chromium against a real
``genq serve``: the job page's Cancel (and the chat's Stop) lets go of this browser's own
submission (its ticket, kept in localStorage so a reload keeps it), so the job goes on for
another browser that joined it and the page says so; it is cancelled once every browser
has let go, or at once from a page that holds no ticket or by "Cancel for everyone".
The app is tests/apps/ui_ticket_app.py; each browser is its own context (own storage).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.ui_fixtures import PageFactory, ServerProcess, running_server

TICKET_APP = f"{Path(__file__).parents[1] / 'apps' / 'ui_ticket_app.py'}:app"
TIMEOUT_MS = 20_000
LET_GO = "You let go of this job; it goes on for another submission of the same input."
JOINED = "Joined an identical job that was already queued or running."



@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("ui-tickets") / "genq.sqlite3",
                        app=TICKET_APP) as server:
        yield server



def submit_gated(page: Page, server: ServerProcess, gate: Path) -> str:
    """Run ``gated`` with this gate on the function's page; the job's id."""
    page.goto(f"{server.url}/functions/gated")
    page.get_by_role("textbox", name="Gate").fill(str(gate))
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f]{32}$"))
    expect(page.locator("section.job")).to_have_attribute("data-status", "running")
    return page.url.rsplit("/", 1)[-1]


def cancel_button(page: Page, name: str = "Cancel") -> Any:
    return page.locator("section.job").get_by_role("button", name=name, exact=True)


def cancel_answer(page: Page, button: Any) -> Any:
    """Press ``button``; the answer of the cancel request it made."""
    with page.expect_response(lambda r: "/cancel" in r.url) as info:
        button.click()
    return info.value


def test_one_browser_lets_go_and_the_job_goes_on_for_the_other(
        new_page: PageFactory, server: ServerProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    a, b = new_page(), new_page()
    job_id = submit_gated(a, server, gate)
    assert submit_gated(b, server, gate) == job_id
    expect(b.locator("section.job")).to_contain_text(JOINED)

    a.reload()  # the ticket is kept in this browser's storage, not only in the page
    expect(a.locator("section.job")).to_have_attribute("data-status", "running")
    answer = cancel_answer(a, cancel_button(a))
    assert "?ticket=" in answer.url
    assert answer.json()["status"] == "running"
    assert answer.json()["cancel_requested"] is False
    expect(a.locator("section.job .notices")).to_have_text(LET_GO)
    expect(cancel_button(a, "Cancel for everyone")).to_be_enabled()
    expect(a.locator("section.job .status")).to_have_text("running")
    assert server.get(f"/api/jobs/{job_id}")["status"] == "running"

    gate.touch()
    for page in (b, a):  # both follow the job to its end
        expect(page.locator("section.job")).to_have_attribute("data-status", "succeeded")
        expect(page.locator("section.job .result")).to_contain_text("opened")
    assert server.get(f"/api/jobs/{job_id}")["status"] == "succeeded"


def test_the_job_is_cancelled_once_both_browsers_let_go(
        new_page: PageFactory, server: ServerProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    a, b = new_page(), new_page()
    job_id = submit_gated(a, server, gate)
    assert submit_gated(b, server, gate) == job_id

    cancel_button(a).click()
    expect(a.locator("section.job .notices")).to_have_text(LET_GO)
    assert server.get(f"/api/jobs/{job_id}")["status"] == "running"
    answer = cancel_answer(b, cancel_button(b))
    assert "?ticket=" in answer.url
    assert answer.json()["cancel_requested"] is True
    for page in (a, b):
        expect(page.locator("section.job")).to_have_attribute("data-status", "cancelled")
    expect(b.locator("section.job .notices")).not_to_contain_text("goes on")
    assert server.get(f"/api/jobs/{job_id}")["status"] == "cancelled"


def test_a_page_without_a_ticket_cancels_the_job_outright(
        new_page: PageFactory, server: ServerProcess, tmp_path: Path) -> None:
    a, other = new_page(), new_page()
    job_id = submit_gated(a, server, tmp_path / "gate")
    # another browser opens the job from the jobs list: it made no submission of it
    other.goto(f"{server.url}/jobs")
    other.locator(f'a[href="/jobs/{job_id}"]').first.click()
    expect(other.locator("section.job")).to_have_attribute("data-status", "running")
    assert "ticket" not in cancel_answer(other, cancel_button(other)).url
    for page in (other, a):
        expect(page.locator("section.job")).to_have_attribute("data-status", "cancelled")
    assert server.get(f"/api/jobs/{job_id}")["status"] == "cancelled"


def test_cancel_for_everyone_cancels_the_job_the_other_browser_holds(
        new_page: PageFactory, server: ServerProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    a, b = new_page(), new_page()
    job_id = submit_gated(a, server, gate)
    assert submit_gated(b, server, gate) == job_id
    cancel_button(a).click()
    expect(a.locator("section.job .notices")).to_have_text(LET_GO)
    cancel_button(a, "Cancel for everyone").click()
    for page in (a, b):
        expect(page.locator("section.job")).to_have_attribute("data-status", "cancelled")
    assert server.get(f"/api/jobs/{job_id}")["status"] == "cancelled"


def test_the_chats_stop_lets_go_of_this_browsers_reply_only(
        new_page: PageFactory, server: ServerProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    a, b = new_page(), new_page()
    ids = []
    for page in (a, b):
        page.goto(f"{server.url}/functions/gated_chat")
        page.get_by_role("textbox", name="Message").fill(str(gate))
        page.get_by_role("button", name="Send", exact=True).click()
        page.wait_for_url(re.compile(r"/jobs/[0-9a-f]{32}$"))
        expect(page.locator("section.job")).to_contain_text("waiting")
        ids.append(page.url.rsplit("/", 1)[-1])
    assert ids[0] == ids[1]

    a.get_by_role("button", name="Stop", exact=True).click()
    expect(a.locator("section.job .notices")).to_have_text(LET_GO)
    assert server.get(f"/api/jobs/{ids[0]}")["status"] == "running"
    gate.touch()
    for page in (b, a):
        expect(page.locator("section.job")).to_have_attribute("data-status", "succeeded")
        expect(page.locator("section.job")).to_contain_text("waiting opened")
