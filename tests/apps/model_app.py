"""An app whose functions need a model that loads slowly or fails, under the test's
control: what readiness (/readyz, the job view's ``waiting``, the CLI, the dashboard)
is tested with, in-process and in ``genq serve`` / ``genq worker`` subprocesses.

Two files, named by environment variables read at load time, steer the loader:

* ``GENQ_TEST_MODEL_GATE``: the load waits until this file exists (at most a minute),
  so "loading" lasts exactly as long as the test wants, with no timing guess;
* ``GENQ_TEST_MODEL_BROKEN``: while this file exists the load raises ``OSError``
  (a weights file not there yet), so its setup is retried until the test removes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import genq

app = genq.App("model-test")

GATE_SECONDS = 60.0  # the longest a load waits for its gate (a test that forgot it)


@app.model()
def weights(device: str) -> dict[str, int]:
    broken = os.environ.get("GENQ_TEST_MODEL_BROKEN")
    if broken and Path(broken).exists():
        raise OSError(f"weights file {Path(broken).name} is not readable yet")
    gate = os.environ.get("GENQ_TEST_MODEL_GATE")
    deadline = time.monotonic() + GATE_SECONDS
    while gate and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"scale": 2}


@app.function()
def scale(x: int, w: Annotated[dict[str, int], weights]) -> int:
    """Multiply ``x`` by the model's scale."""
    return x * w["scale"]


@app.function()
def chat(message: str, w: Annotated[dict[str, int], weights],
         history: list[tuple[str, str]] = []) -> Iterator[str]:  # noqa: B006 (pydantic copies)
    """Echo the message back, word by word (the web UI shows it as a chat)."""
    for word in f"echo: {message}".split():
        yield word + " "
