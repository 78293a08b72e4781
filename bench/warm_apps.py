"""The app of bench_warm_routing.py: a keyed model family whose load takes 1 s, at most
two held per worker replica, and a 0.1 s job that says whether it had to load its model.

``GENQ_BENCH_WARM_WAIT`` sets the function's ``warm_wait`` in the worker processes: the
default 30 s routes jobs to warm workers; 0 makes every claim plain FIFO (a job that has
waited 0 s is overdue, so the first one queued is taken; genq.store.routing).
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

import genq

LOAD_SECONDS = 1.0
JOB_SECONDS = 0.1
MAX_MODELS = 2
WARM_WAIT = float(os.environ.get("GENQ_BENCH_WARM_WAIT", "30"))

app = genq.App("bench-warm-routing")
_fresh: set[str] = set()  # models loaded whose first job has not run yet


@app.model(key="checkpoint", max_models=MAX_MODELS)
def checkpoints(name: str) -> str:
    time.sleep(LOAD_SECONDS)
    _fresh.add(name)
    return name


@app.function(concurrency=1, warm_wait=WARM_WAIT)
def generate(checkpoint: str, pipe: Annotated[str, checkpoints]) -> dict[str, Any]:
    loaded = pipe in _fresh  # concurrency 1: the first job after the load
    _fresh.discard(pipe)
    time.sleep(JOB_SECONDS)
    return {"pid": os.getpid(), "loaded": loaded}
