"""Clients left open never hold a script at exit (issue 9).

Each test runs a real script in a subprocess (this interpreter, default warning settings
unless it says otherwise) against a real server on a loopback port. A script that hung at
exit fails the test through the subprocess timeout; ``EXIT_BOUND`` is a generous bound on
a script that takes about a second, not a performance target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx

from tests.support.http_fixtures import LiveServer, finished, wait_until

EXIT_BOUND = 20.0  # seconds; the old behaviour was to hang forever
# What Python prints when a loop or a generator is torn down badly.
NOISE = ("Task was destroyed but it is pending", "Exception ignored",
         "already running", "error occurred during closing", "Traceback")


def run_script(tmp_path: Path, source: str, *args: str, dev: bool = False
               ) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONWARNINGS", "PYTHONDEVMODE", "PYTHONASYNCIODEBUG")}
    command = [sys.executable, *(["-X", "dev"] if dev else []), str(script), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env,
                          timeout=EXIT_BOUND)


def jobs_of(http: httpx.Client, n: int) -> list[dict[str, Any]]:
    response = http.get("/api/jobs", params={"function": "tokens", "limit": 100})
    assert response.status_code == 200, response.text
    return [job for job in response.json()["jobs"] if job["input"].get("n") == n]


# A stream of 10,000 chunks (500 s) read part way, and a job followed part way: both are
# left open, with the client, in module globals.
SYNC_SCRIPT = """
    import sys
    import genq

    client = genq.Client(sys.argv[1])
    print(client.run("add", x=1, y=2))
    stream = client.stream("tokens", n=10000, delay=0.05)
    print("".join(next(stream) for _ in range(3)))
    job = client.submit("tokens", n=40, delay=0.05)
    events = job.events()
    print([next(events).type.value for _ in range(2)])
    print("done", job.id, flush=True)
"""


def test_client_never_closed_exits_promptly(server: LiveServer, http: httpx.Client,
                                            tmp_path: Path) -> None:
    done = run_script(tmp_path, SYNC_SCRIPT, server.url)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[:2] == ["3", "t0 t1 t2 "]
    followed = lines[-1].split()[-1]
    # The stream left part way is cancelled at exit, as leaving a stream early promises;
    # the job only watched is not the script's to cancel and runs to the end.
    stream_job = wait_until(
        lambda: next((j for j in jobs_of(http, 10000) if j["status"] == "cancelled"), None),
        what="the abandoned stream's job to be cancelled")
    assert stream_job["function"] == "tokens"
    assert finished(http, followed)["status"] == "succeeded"


def test_client_never_closed_is_quiet_in_dev_mode(server: LiveServer, tmp_path: Path
                                                  ) -> None:
    """``-X dev`` shows ResourceWarnings and asyncio debug output: none of it concerns
    the client's own loop, which closes its connections and generators in order."""
    done = run_script(tmp_path, SYNC_SCRIPT, server.url, dev=True)
    assert done.returncode == 0, done.stderr
    assert "done" in done.stdout
    for text in (*NOISE, "ResourceWarning"):
        assert text not in done.stderr, done.stderr


ASYNC_SCRIPT = """
    import asyncio
    import sys
    import genq

    kept = []

    async def main() -> None:
        client = genq.AsyncClient(sys.argv[1])
        print(await client.run("add", x=1, y=2))
        stream = client.stream("tokens", n=10000, delay=0.05)
        print("".join([await anext(stream) for _ in range(3)]))
        job = await client.submit("tokens", n=40, delay=0.05)
        events = job.events()
        print([(await anext(events)).type.value for _ in range(2)])
        kept.extend([client, stream, events])  # outlive the loop, never closed
        print("done", job.id, flush=True)

    asyncio.run(main())
"""


def test_async_client_never_closed_exits_quietly(server: LiveServer, http: httpx.Client,
                                                 tmp_path: Path) -> None:
    done = run_script(tmp_path, ASYNC_SCRIPT, server.url)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[:2] == ["3", "t0 t1 t2 "]
    wait_until(lambda: any(j["status"] == "cancelled" for j in jobs_of(http, 10000)),
               what="the abandoned stream's job to be cancelled")
    assert finished(http, lines[-1].split()[-1])["status"] == "succeeded"
    # In dev mode too, nothing is torn down badly (Python still reports the sockets of a
    # client never closed, as for any httpx.AsyncClient: that is what ``async with`` is for).
    dev = run_script(tmp_path, ASYNC_SCRIPT, server.url, dev=True)
    assert dev.returncode == 0, dev.stderr
    for text in NOISE:
        assert text not in dev.stderr, dev.stderr


def test_client_lifecycle_releases_its_thread(server: LiveServer, tmp_path: Path) -> None:
    done = run_script(tmp_path, """
        import gc
        import json
        import sys
        import threading
        import genq

        url = sys.argv[1]
        counts = {"baseline": threading.active_count()}

        client = genq.Client(url)
        stream = client.stream("tokens", n=10000, delay=0.05)
        next(stream)
        counts["open"] = threading.active_count()
        del client, stream  # garbage, with a stream left part way
        gc.collect()
        counts["collected"] = threading.active_count()

        job = genq.Client(url).submit("add", x=2, y=5)  # the job keeps its client
        counts["temporary client's job"] = job.result(timeout=30)
        del job
        gc.collect()
        counts["job collected"] = threading.active_count()

        with genq.Client(url) as client:
            counts["with"] = client.run("add", x=1, y=1)
        client.close()  # again: harmless
        counts["closed"] = threading.active_count()
        try:
            client.run("add", x=1)
        except RuntimeError:
            counts["after close"] = "RuntimeError"
        print(json.dumps(counts))
    """, server.url)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    counts = json.loads(done.stdout)
    baseline = counts["baseline"]
    assert counts["open"] == baseline + 1
    assert counts["collected"] == baseline
    assert counts["temporary client's job"] == 7
    assert counts["job collected"] == baseline
    assert counts["with"] == 2
    assert counts["closed"] == baseline
    assert counts["after close"] == "RuntimeError"
