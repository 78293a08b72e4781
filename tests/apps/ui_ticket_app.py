"""The app of the browser tests about cancelling a shared job (tests/ui/test_ui_tickets.py):
functions with ``dedupe=True`` that run until the test opens their gate, so identical
submissions from two browsers join one job that stays live as long as the test needs.

Served by a real ``genq serve tests/apps/ui_ticket_app.py:app`` subprocess.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import genq

app = genq.App("ui-ticket-test")

GATE_LIMIT = 120.0  # seconds: a test that never opens the gate does not hang the server


def wait_for(gate: str, progress: genq.Progress) -> None:
    """Until the file ``gate`` exists (or GATE_LIMIT); a cancel stops the wait."""
    deadline = time.monotonic() + GATE_LIMIT
    while not Path(gate).exists() and time.monotonic() < deadline:
        progress.check()
        time.sleep(0.05)


@app.function(dedupe=True, concurrency=4)
def gated(gate: str, progress: genq.Progress = genq.Progress()) -> str:
    """Waits until the file ``gate`` exists, then returns "opened"."""
    progress(None, desc="waiting for the gate")
    wait_for(gate, progress)
    return "opened"


@app.function(dedupe=True, concurrency=4)
def gated_chat(message: str, history: list[tuple[str, str]] = [],  # noqa: B006
               progress: genq.Progress = genq.Progress()) -> Iterator[str]:
    """A chat that says one word, then waits for the file named by ``message``."""
    yield "waiting"
    wait_for(message, progress)
    yield " opened"
