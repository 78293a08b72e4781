"""Readiness in the browser (Chromium against a real ``genq serve``): a job queued behind
a loading model says so on its page ("model loading (N s so far)") and then shows its
result; a chat reply says it waits instead of staying blank; the dashboard lists the
worker with its device, its per-function state (loading, then ready) and, once loaded,
its model and how long it took. The model loads when the test creates a gate file
(tests/apps/model_app.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.ui_fixtures import ServerProcess

MODEL_APP = Path(__file__).parents[1] / "apps" / "model_app.py"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def test_pages_say_the_model_loads_then_show_the_result(
        browser: Browser, page: Page, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = ServerProcess(tmp_path / "genq.sqlite3", app=f"{MODEL_APP}:app")
    server.env["GENQ_TEST_MODEL_GATE"] = str(gate)
    server.start()
    try:
        dashboard = browser.new_page()
        dashboard.set_default_timeout(20_000)
        dashboard.goto(f"{server.url}/dashboard")
        worker = dashboard.locator(".worker")
        expect(worker.locator(".worker-device")).to_have_text("cpu")
        expect(worker.locator('.worker-state[data-fn="scale"]')).to_contain_text(
            re.compile(r"loading \d"))

        page.goto(f"{server.url}/functions/scale")
        page.locator('input[name="x"]').fill("21")
        page.get_by_role("button", name="Run").click()
        job = page.locator("section.job")
        expect(job).to_have_attribute("data-status", "queued")
        expect(job.locator(".notice-queue")).to_contain_text(
            re.compile(r"model loading \(\d+ s so far\)"))

        gate.touch()
        expect(job).to_have_attribute("data-status", "succeeded")
        expect(job.locator(".result")).to_contain_text("42")
        expect(job.locator(".notice-queue")).to_be_hidden()
        expect(worker.locator('.worker-state[data-fn="scale"]')).to_have_attribute(
            "data-state", "ready")
        expect(worker.locator('.worker-model[data-model="weights"]')).to_contain_text(
            "loaded in")
        dashboard.close()

        gate.unlink()  # a new process loads the model again, behind the gate
        server.stop()
        server.start()
        page.goto(f"{server.url}/functions/chat")
        page.get_by_label("Message").fill("hello there")
        page.get_by_role("button", name="Send").click()
        reply = page.locator(".bubble-assistant").last
        expect(reply.locator(".bubble-wait")).to_contain_text("model loading")
        gate.touch()
        expect(page.locator("section.job")).to_have_attribute("data-status", "succeeded")
        expect(reply).to_contain_text("echo: hello there")
        expect(reply.locator(".bubble-wait")).to_be_hidden()
    finally:
        server.stop()
