"""Real parts for the browser tests: a ``genq serve`` subprocess and headless Chromium.

The server is a separate process (not a thread) so a test can SIGKILL it mid-job and
start it again on the same port and database, the way a crash and a restart happen.
The browser is Debian's Chromium driven by Playwright (never ``playwright install``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.http_fixtures import serves

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
UI_APP = Path(__file__).parents[1] / "apps" / "ui_app.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``genq serve APP --port P --db F`` in a subprocess; start, kill, restart."""

    def __init__(self, db: Path, *, app: str = f"{UI_APP}:app", port: int | None = None,
                 api_keys: str | None = None, api_key: str | None = None,
                 log: Path | None = None, log_level: str = "warning") -> None:
        self.db = db
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or db.with_suffix(".log")
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.env.pop("GENQ_API_KEYS", None)
        if api_keys is not None:
            self.env["GENQ_API_KEYS"] = api_keys
        self.proc: subprocess.Popen[bytes] | None = None
        # the key the test helpers below send: given, or the first entry's (KEY=OWNER form)
        self.api_key = api_key or (api_keys.split("=", 1)[0] if api_keys else None)
        self.log_level = log_level

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None, "already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "genq.cli", "serve", self.app, "--port", str(self.port),
                 "--db", str(self.db), "--log-level", self.log_level, "--heartbeat", "5"],
                stdout=log, stderr=subprocess.STDOUT, env=self.env,
                cwd=Path(__file__).parents[2],
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"genq serve exited with {code}:\n{self.log_text()}")
            try:
                if serves(httpx.get(f"{self.url}/readyz", timeout=2)):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"genq serve did not start:\n{self.log_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, like a crash or the OOM killer."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM: a graceful shutdown (running jobs get 10 s, then go back to the queue)."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def log_text(self) -> str:
        return self.log_text_all()[-4000:]

    def log_text_all(self) -> str:
        """Everything the server printed (its access log, at --log-level info)."""
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    # -- the API, for what a test checks behind the page's back -------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", headers=self._headers(), timeout=10)
        response.raise_for_status()
        return response.json()

    def submit(self, function: str, **inputs: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/api/jobs", json={"function": function,
                                                            "input": inputs},
                              headers=self._headers(), timeout=10)
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        return job

    def cancel(self, job_id: str) -> None:
        httpx.post(f"{self.url}/api/jobs/{job_id}/cancel", headers=self._headers(),
                   timeout=10).raise_for_status()
        self.wait_result(job_id)

    def wait_result(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            response = httpx.get(f"{self.url}/api/jobs/{job_id}/result?wait=5",
                                 headers=self._headers(), timeout=15)
            if response.status_code == 200:
                job: dict[str, Any] = response.json()
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not finish")


@contextlib.contextmanager
def running_server(db: Path, **kwargs: Any) -> Iterator[ServerProcess]:
    server = ServerProcess(db, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


# -- fixtures of the browser tests (imported by conftest.py) -------------------------------
@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Any) -> Iterator[Any]:
    """Debian's Chromium, once per test module."""
    browser = launch_chromium(playwright)
    try:
        yield browser
    finally:
        browser.close()


PAGE_TIMEOUT_MS = 20_000  # what a page's actions and expectations wait, at most
PageFactory = Callable[..., Any]  # (**context options) -> a playwright Page


@pytest.fixture
def new_page(browser: Any) -> Iterator[PageFactory]:
    """Pages in fresh browser contexts (each its own storage: another browser); fails
    the test on any uncaught page error."""
    contexts: list[Any] = []
    errors: list[str] = []

    def make(**context_options: Any) -> Any:
        context = browser.new_context(**{"viewport": {"width": 1280, "height": 860},
                                         **context_options})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
