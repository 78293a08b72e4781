"""An app with a model, for the tests that run ``genq serve`` / ``genq worker`` as
processes (tests/serving/test_model_processes.py, test_model_metrics.py).

The loader and its teardown append a line to the file $MODEL_APP_LOG, so the test reads
what happened in the worker process: which replica loaded on which device, and whether
the teardown ran when the process was told to stop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Annotated

import genq

app = genq.App("model-app")


def _note(line: str) -> None:
    with open(os.environ["MODEL_APP_LOG"], "a") as log:
        log.write(f"{line}\n")


class Loaded:
    def __init__(self, device: str) -> None:
        self.device = device


@app.model()
def weights(device: str) -> Iterator[Loaded]:
    time.sleep(float(os.environ.get("MODEL_APP_LOAD_SECONDS", "0.2")))
    loaded = Loaded(device)
    _note(f"setup {device} {id(loaded)}")
    yield loaded
    _note(f"teardown {device} {id(loaded)}")


@app.function(concurrency=1)
def where(model: Annotated[Loaded, weights], seconds: float = 0.0) -> str:
    """Which loaded copy ran the job, after ``seconds`` of work."""
    time.sleep(seconds)
    _note(f"job {model.device} {id(model)}")
    return f"{model.device} {id(model)}"
