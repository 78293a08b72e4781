"""No "Task was destroyed but it is pending" at shutdown.

A script starts ``app.local()`` (the sync and the async variant), gets long jobs of all
four kinds running, and leaves the ``with`` block with a short ``shutdown_grace``. It runs
in a subprocess under ``python -X dev -W error`` with asyncio debug mode, so a task
destroyed while pending, a coroutine never awaited, a call on a closed loop or any
exception swallowed in ``__del__`` shows up on stderr. Then the database is reopened:
the interrupted jobs are queued again (with a ``retrying`` event saying why) and run to
completion after a restart, and a job that finished within the grace period succeeded.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import genq
from genq import JobStatus

LONG = ["long_def", "long_gen", "long_async", "long_agen"]

SCRIPT = textwrap.dedent('''
    import asyncio
    import contextlib
    import json
    import sys
    import time
    from pathlib import Path

    import genq

    MODE, DB = sys.argv[1], Path(sys.argv[2])
    LONG = ["long_def", "long_gen", "long_async", "long_agen"]
    STARTED = (genq.EventType.STARTED,)
    app = genq.App()


    @app.function(concurrency=2)
    def long_def(progress: genq.Progress = genq.Progress()) -> str:
        for _ in range(6000):
            progress(desc="working")
            time.sleep(0.005)
        return "finished"


    @app.function(concurrency=2)
    def long_gen():
        for i in range(6000):
            time.sleep(0.005)
            yield f"{i} "


    @app.function(concurrency=2)
    async def long_async() -> str:
        await asyncio.sleep(30)
        return "finished"


    @app.function(concurrency=2)
    async def long_agen():
        for i in range(6000):
            await asyncio.sleep(0.005)
            yield f"{i} "


    @app.function(concurrency=2)
    def quick(seconds: float) -> str:
        time.sleep(seconds)
        return "quick done"


    def run_sync() -> dict:
        with app.local(DB, shutdown_grace=1.0) as client:
            jobs = {name: client.submit(name) for name in LONG}
            jobs["quick"] = client.submit("quick", seconds=0.3)
            for job in jobs.values():
                with contextlib.closing(job.events()) as events:
                    for event in events:
                        if event.type in STARTED:
                            break
            # a stream left half-read, and a result wait that times out
            stream = client.stream("long_gen")
            first = next(stream)
            with contextlib.suppress(genq.ResultTimeout):
                jobs["long_def"].result(timeout=0.01)
        return {"ids": {n: j.id for n, j in jobs.items()}, "first": first}


    async def run_async() -> dict:
        async with app.local(DB, shutdown_grace=1.0) as client:
            jobs = {name: await client.submit(name) for name in LONG}
            jobs["quick"] = await client.submit("quick", seconds=0.3)
            for job in jobs.values():
                async with contextlib.aclosing(job.events()) as events:
                    async for event in events:
                        if event.type in STARTED:
                            break
            # fire-and-forget style: a task that waits on a result, never awaited
            waiter = asyncio.ensure_future(jobs["long_async"].result())
            with contextlib.suppress(genq.ResultTimeout):
                await jobs["long_def"].result(timeout=0.01)
            # a stream left half-read, still referenced after the block
            stream = client.stream("long_agen")
            first = await stream.__anext__()
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await waiter
        del stream
        return {"ids": {n: j.id for n, j in jobs.items()}, "first": first}


    if MODE == "sync":
        out = run_sync()
    else:
        out = asyncio.run(run_async(), debug=True)
    print(json.dumps(out))
''')

FORBIDDEN = ["Task was destroyed", "was never awaited", "Event loop is closed",
             "Exception ignored", "Traceback", "ResourceWarning"]


def run_script(tmp_path: Path, mode: str) -> tuple[dict[str, str], Path]:
    script = tmp_path / "shutdown_script.py"
    script.write_text(SCRIPT)
    db = tmp_path / "db.sqlite3"
    env = {**os.environ, "PYTHONASYNCIODEBUG": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", str(script), mode, str(db)],
        capture_output=True, text=True, timeout=90, env=env, cwd=tmp_path,
    )
    for marker in FORBIDDEN:
        assert marker not in proc.stderr, f"{marker!r} on stderr:\n{proc.stderr}"
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["first"] == "0 "
    ids: dict[str, str] = out["ids"]
    return ids, db


def read_db(db: Path) -> tuple[dict[str, tuple[str, int]], dict[str, list[tuple[str, dict]]]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        jobs = {i: (s, a) for i, s, a in conn.execute("SELECT id, status, attempts FROM jobs")}
        events: dict[str, list[tuple[str, dict]]] = {}
        for job_id, etype, data in conn.execute(
                "SELECT job_id, type, data FROM events ORDER BY job_id, id"):
            events.setdefault(job_id, []).append((etype, json.loads(data)))
    return jobs, events


def restart_app() -> genq.App:
    """The same function names, now quick: what a restarted server would run."""
    app = genq.App()
    for name in [*LONG, "quick"]:
        def fn(seconds: float = 0.0) -> str:
            return "finished after restart"
        app.function(name=name)(fn)
    return app


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_graceful_shutdown_leaves_no_pending_tasks_and_loses_no_work(
        tmp_path: Path, mode: str) -> None:
    ids, db = run_script(tmp_path, mode)
    jobs, events = read_db(db)

    # the job that could finish within the grace period did
    assert jobs[ids["quick"]][0] == "succeeded"
    assert events[ids["quick"]][-1][0] == "succeeded"

    # the interrupted ones are back in the queue, their attempt not used up, with a
    # retrying event that says the worker shut down
    for name in LONG:
        status, attempts = jobs[ids[name]]
        assert status == "queued", name
        assert attempts == 0, name
        etype, data = events[ids[name]][-1]
        assert etype == "retrying", name
        assert "shut down" in data["reason"], name
    # the half-read stream's job was stopped with its consumer, or requeued at shutdown
    extra = [i for i in jobs if i not in ids.values()]
    assert len(extra) == 1
    assert jobs[extra[0]][0] in ("cancelled", "queued")

    # a restart picks the interrupted jobs up again: no accepted work is lost
    with restart_app().local(db) as client:
        for name in LONG:
            assert client.result(ids[name], timeout=30) == "finished after restart"
        assert client.result(ids["quick"], timeout=5) == "quick done"
        assert client.get(ids["long_def"]).status is JobStatus.SUCCEEDED
        assert client.get(ids["long_def"]).attempts == 1
