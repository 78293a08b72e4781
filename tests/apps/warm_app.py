"""The app behind the warm routing cluster test (tests/cluster/test_warm_routing.py).

One keyed model family, one checkpoint per replica (``max_models=1``), whose load takes
0.3 s; each job says which process ran it and whether it had to load its checkpoint, so
the test can tell where jobs went and what they cost. ``warm_wait`` is short, so a job
whose warm worker is busy goes to the other one within the test's time.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

import genq

WARM_WAIT = 2.0  # seconds a job waits for the busy worker that holds its checkpoint

app = genq.App("warm-routing-tests")
_fresh: set[str] = set()  # checkpoints loaded whose first job has not run yet


@app.model(key="checkpoint", max_models=1)
def checkpoints(name: str) -> str:
    time.sleep(0.3)
    _fresh.add(name)
    return name


@app.function(concurrency=1, warm_wait=WARM_WAIT)
def generate(checkpoint: str, pipe: Annotated[str, checkpoints],
             seconds: float = 0.0) -> dict[str, Any]:
    loaded = pipe in _fresh  # one job at a time: the first job after its load
    _fresh.discard(pipe)
    time.sleep(seconds)
    return {"pid": os.getpid(), "loaded": loaded, "checkpoint": pipe}
