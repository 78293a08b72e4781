"""``genq demo`` on a machine without the ``llm`` extra: the app still starts and serves
its other functions; ``chat`` and ``embed`` wait in the queue while the worker reports
their models failed, with what to install, and tries again with backoff.

transformers and sentence-transformers are installed here, so their absence is made by
``sys.modules[name] = None`` (what Python does for a package it cannot import: ``import``
raises ImportError): the one thing this test cannot have for real.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from genq.demo import app
from genq.engine import Engine
from genq.models import JobStatus
from genq.serving import host as host_module
from genq.store.sqlite import SQLiteStore

OWNER = "local"


@pytest.mark.anyio
async def test_the_demo_runs_without_the_llm_extra_and_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    monkeypatch.setattr(host_module, "SETUP_RETRY_FIRST", 0.1)
    engine = Engine(app, SQLiteStore(tmp_path / "jobs.sqlite3"), shutdown_grace=1.0)
    async with anyio.create_task_group() as tg:
        await tg.start(engine.serve)
        chat = (await engine.jobs.submit(OWNER, "chat", {"message": "hi"})).job
        primes = (await engine.jobs.submit(OWNER, "primes", {"limit": 30, "delay": 0})).job
        with anyio.fail_after(30):
            done = await engine.jobs.wait(OWNER, primes.id)
        assert done.status is JobStatus.SUCCEEDED
        assert await engine.jobs.result_value(OWNER, primes.id) == (
            "2 3 5 7 11 13 17 19 23 29 ")

        states = await _states_once_retried(engine)
        chat_model = states["chat"]["models"][0]
        assert states["chat"]["state"] == "failed"
        assert chat_model["model"] == "smollm2" and chat_model["attempts"] >= 2
        assert chat_model["error"] == ("ModelUnavailable: the chat model needs transformers "
                                       "and torch: pip install 'genq[llm]'")
        assert chat_model["retry_at"] is not None
        embed_model = states["embed"]["models"][0]
        assert embed_model["error"] == ("ModelUnavailable: embeddings need "
                                        "sentence-transformers: pip install 'genq[llm]'")
        assert states["render"]["state"] == "ready"
        # The chat was not failed for it: another worker may have the extra.
        assert (await engine.jobs.get(OWNER, chat.id)).status is JobStatus.QUEUED
        await engine.stop()


async def _states_once_retried(engine: Engine) -> dict[str, Any]:
    """The worker's report, once both models have failed at least twice."""
    with anyio.fail_after(30):
        while True:
            cluster = await engine.cluster(queue_depths=False)
            states = {k: dict(v) for k, v in cluster.workers[0].states.items()}
            if all(states.get(f, {}).get("models") and
                   states[f]["models"][0]["attempts"] >= 2 and
                   states[f]["state"] == "failed" for f in ("chat", "embed")):
                return states
            await anyio.sleep(0.05)
