"""The job page of the web UI shows the job's webhook deliveries (Chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support.http_fixtures import ServerFactory, wait_until
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_webhooks import FAST_HOOKS


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def test_the_job_page_lists_webhook_attempts(make_server: ServerFactory, page: Page) -> None:
    server = make_server(webhooks=FAST_HOOKS)
    with Receiver() as receiver:
        receiver.answers = [500]
        job = httpx.post(f"{server.url}/api/jobs", json={
            "function": "add", "input": {"x": 1}, "webhook": receiver.url}).json()
        wait_until(lambda: len(receiver.of_job(job["id"])) == 2, what="two attempts")
        plain = httpx.post(f"{server.url}/api/jobs", json={
            "function": "add", "input": {"x": 2}}).json()

        page.goto(f"{server.url}/jobs/{job['id']}")
        block = page.get_by_role("region", name="Webhook deliveries")
        expect(block).to_contain_text(receiver.url)
        expect(block).to_contain_text("the receiver answered 500")
        expect(block).to_contain_text("delivered")
        expect(block.locator("tbody tr")).to_have_count(2)

        with page.expect_response(lambda r: r.url.endswith(f"{plain['id']}/webhooks")):
            page.goto(f"{server.url}/jobs/{plain['id']}")
        expect(page.get_by_role("region", name="Webhook deliveries")).to_have_count(0)
