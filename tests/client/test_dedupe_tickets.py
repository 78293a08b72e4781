"""Two submissions that de-duplication joined into one job do not share one fate.

Each submission gets its own ticket; a job handle's ``cancel()`` lets go of its own
submission only, and the job is cancelled once every submission holding it has. Run
through the Python clients over HTTP (a real server, on SQLite and on Redis) and in
process (``app.local()``), and on the wire (``POST /api/jobs/{id}/cancel?ticket=``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import genq
from genq import JobStatus
from tests.support.http_fixtures import FAST, LiveServer, error_of, wait_until
from tests.support.store_fixtures import StoreMaker

started = threading.Event()
release = threading.Event()

app = genq.App("tickets")


@app.function(concurrency=2, dedupe=True)
def render(prompt: str) -> str:
    started.set()
    release.wait(30)
    return prompt.upper()


@app.function(concurrency=2, dedupe=True)
def tell(prompt: str) -> Iterator[str]:
    yield f"{prompt}: "
    release.wait(30)
    yield "done"


@pytest.fixture(autouse=True)
def gates() -> Iterator[None]:
    started.clear()
    release.clear()
    yield
    release.set()  # no job of a failed test holds a worker past it


def pair(client: genq.Client) -> tuple[genq.Job, genq.Job]:
    first = client.submit("render", prompt="a fox")
    second = client.submit("render", prompt="a fox")
    assert second.id == first.id and second.reason == "deduplicated"
    assert first.ticket and second.ticket and first.ticket != second.ticket
    return first, second


def test_one_caller_cancelling_leaves_the_job_to_the_other(
        tmp_path: Path, stores: StoreMaker) -> None:
    live = LiveServer(app, tmp_path / "unused.sqlite3", FAST, make_store=stores).start()
    try:
        with genq.Client(live.url) as client:
            first, second = pair(client)
            assert started.wait(30)  # running
            assert first.cancel().status is JobStatus.RUNNING  # only the first let go
            release.set()
            assert second.result(timeout=30) == "A FOX"
            assert first.result(timeout=30) == "A FOX"  # the job itself was not cancelled

            release.clear()
            third, fourth = pair(client)  # a new job: the first one finished
            assert third.id != first.id
            third.cancel()
            fourth.cancel()  # the last holder lets go: cancelled
            with pytest.raises(genq.JobCancelled):
                fourth.result(timeout=30)
    finally:
        live.stop()


def test_in_process_handles_and_streams_let_go_of_their_own_submission(
        tmp_path: Path) -> None:
    with app.local(tmp_path / "db.sqlite3") as client:
        # A stream joins a submitted job with the same input; leaving it early lets go
        # of the stream's own submission, not of the job.
        story = client.submit("tell", prompt="owl")
        stream = client.stream("tell", prompt="owl")
        assert next(iter(stream)) == "owl: "
        stream.close()  # (before tickets, this cancelled the job under ``story``)
        release.set()
        assert story.result(timeout=30) == "owl: done"

        release.clear()
        third, fourth = pair(client)
        fourth.cancel()
        assert third.info().status in (JobStatus.QUEUED, JobStatus.RUNNING)
        client.job(third.id).cancel()  # a handle with no ticket: cancels outright
        with pytest.raises(genq.JobCancelled):
            third.result(timeout=30)


def test_the_cancel_route_takes_a_ticket(tmp_path: Path) -> None:
    live = LiveServer(app, tmp_path / "db.sqlite3", FAST).start()
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            def submit() -> dict:
                response = http.post("/api/jobs", json={"function": "render",
                                                        "input": {"prompt": "owl"}})
                assert response.status_code in (200, 201), response.text
                return response.json()

            first, second = submit(), submit()
            assert second["id"] == first["id"] and second["submitted"] == "deduplicated"
            assert first["ticket"] != second["ticket"]
            job_id = first["id"]
            url = f"/api/jobs/{job_id}/cancel"

            error = error_of(http.post(url, params={"ticket": "not-a-ticket"}), 400,
                             "bad_request")
            assert "ticket" in error["message"]
            error = error_of(http.post(url, params={"ticket": "0" * 32}), 404,
                             "unknown_ticket")
            assert job_id in error["message"]

            detached = http.post(url, params={"ticket": first["ticket"]})
            assert detached.status_code == 200
            assert detached.json()["status"] in ("queued", "running")
            assert detached.json()["cancel_requested"] is False  # it goes on for the others
            assert detached.json()["ticket"] is None  # views other than a submit's: none
            again = http.post(url, params={"ticket": first["ticket"]})  # a retried call
            assert again.json()["status"] in ("queued", "running")
            assert http.get(f"/api/jobs/{job_id}").json()["ticket"] is None

            # A submission retried with its Idempotency-Key (its first answer lost) is
            # the same holder, not one more that nobody would let go of.
            def retried() -> dict:
                response = http.post("/api/jobs", headers={"Idempotency-Key": "k-3"},
                                     json={"function": "render", "input": {"prompt": "owl"}})
                assert response.status_code == 200, response.text
                return response.json()

            third, third_again = retried(), retried()
            assert third["id"] == job_id and third["submitted"] == "deduplicated"
            assert third_again["ticket"] == third["ticket"] != second["ticket"]
            kept = http.post(url, params={"ticket": second["ticket"]}).json()
            assert kept["status"] in ("queued", "running") and not kept["cancel_requested"]

            last = http.post(url, params={"ticket": third["ticket"]}).json()
            assert last["status"] == "cancelled" or last["cancel_requested"] is True

            def cancelled() -> bool:
                return http.get(f"/api/jobs/{job_id}").json()["status"] == "cancelled"

            wait_until(cancelled, what="the job to be cancelled")
    finally:
        live.stop()
