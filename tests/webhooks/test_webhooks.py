"""Webhooks end to end: a real genq server (SQLite) posting to a real receiver on a
loopback port (allowed by the private-address setting), signatures checked with the
standardwebhooks reference library."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import genq
import genq.errors
import genq.webhooks
from genq.downloads.policy import DownloadPolicy
from genq.server.auth import ApiKeys
from genq.webhooks.settings import WebhookSettings
from tests.support.http_fixtures import (
    GENQ_BIN,
    LiveServer,
    ServerFactory,
    cli_env,
    error_of,
    wait_until,
)
from tests.webhooks.receiver import Receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the spec's example, 24 bytes
KEY_SECRET = genq.webhooks.new_secret()
LOOPBACK = DownloadPolicy(allow_private=True, max_bytes=None)
FAST_HOOKS = WebhookSettings(secret=SECRET, policy=LOOPBACK, backoff_base=0.2,
                             backoff_cap=0.5, timeout=2.0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def hooked(make_server: ServerFactory) -> LiveServer:
    return make_server(webhooks=FAST_HOOKS)


def submit(server: LiveServer, function: str, inputs: dict[str, Any], url: str,
           events: list[str] | None = None, headers: dict[str, str] | None = None
           ) -> dict[str, Any]:
    body: dict[str, Any] = {"function": function, "input": inputs, "webhook": url}
    if events is not None:
        body["webhook_events"] = events
    response = httpx.post(f"{server.url}/api/jobs", json=body, headers=headers)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def completed(receiver: Receiver, job_id: str) -> list[Any]:
    """The job's deliveries once its job.completed one has arrived."""
    return wait_until(lambda: (d := receiver.delivered(job_id)) and
                      d[-1].type == "job.completed" and d, what="job.completed delivery")


def attempts(server: LiveServer, job_id: str, **kwargs: Any) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/jobs/{job_id}/webhooks", **kwargs)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def test_completed_is_delivered_signed_as_standard_webhooks_say(
        hooked: LiveServer, receiver: Receiver) -> None:
    job = submit(hooked, "add", {"x": 2, "y": 3}, receiver.url)
    [delivery] = completed(receiver, job["id"])

    # The reference library accepts it, and genq.webhooks.verify agrees.
    payload = Webhook(SECRET).verify(delivery.body, delivery.headers)
    assert genq.webhooks.verify(delivery.headers, delivery.body, SECRET) == payload
    assert payload["type"] == "job.completed"
    assert payload["data"]["id"] == job["id"]
    assert payload["data"]["status"] == "succeeded" and payload["data"]["result"] == 5
    assert payload["data"]["event"]["type"] == "succeeded"
    assert delivery.headers["webhook-id"] == f"msg_{job['id']}_{payload['data']['event']['id']}"
    assert delivery.headers["content-type"] == "application/json"
    # A changed body or another secret is refused.
    with pytest.raises(WebhookVerificationError):
        genq.webhooks.verify(delivery.headers, delivery.body.replace(b"5", b"6"), SECRET)
    with pytest.raises(WebhookVerificationError):
        Webhook(genq.webhooks.new_secret()).verify(delivery.body, delivery.headers)

    report = attempts(hooked, job["id"])
    assert report["webhook"]["url"] == receiver.url
    assert report["webhook"]["events"] == ["completed"]
    wait_until(lambda: attempts(hooked, job["id"])["webhook"]["done"], what="done")
    [attempt] = attempts(hooked, job["id"])["attempts"]
    assert attempt["outcome"] == "delivered" and attempt["status"] == 200
    assert attempt["webhook_id"] == delivery.id and attempt["type"] == "job.completed"


def test_a_signature_made_by_the_reference_library_verifies() -> None:
    body = '{"type":"job.completed","timestamp":"2026-01-01T00:00:00Z","data":{}}'
    now = time.time()
    from datetime import UTC, datetime

    signature = Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(int(now), tz=UTC), body)
    headers = {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(int(now)),
               "Webhook-Signature": signature}
    assert genq.webhooks.verify(headers, body, SECRET)["type"] == "job.completed"
    old = {**headers, "Webhook-Timestamp": str(int(now) - 3600)}
    with pytest.raises(WebhookVerificationError):
        genq.webhooks.verify(old, body, SECRET)


def test_the_filter_is_honoured_and_completed_is_always_sent(
        hooked: LiveServer, receiver: Receiver) -> None:
    quiet = submit(hooked, "slow", {"seconds": 0.5}, receiver.url)
    loud = submit(hooked, "tokens", {"n": 3, "delay": 0.05}, receiver.url,
                  ["started", "output"])
    assert [d.type for d in completed(receiver, quiet["id"])] == ["job.completed"]
    kinds = [d.type for d in completed(receiver, loud["id"])]
    assert kinds[0] == "job.started" and kinds[-1] == "job.completed"
    assert set(kinds[1:-1]) == {"job.output"}
    assert "job.progress" not in kinds


def test_progress_is_coalesced_to_the_latest_state(hooked: LiveServer,
                                                   receiver: Receiver) -> None:
    job = submit(hooked, "slow", {"seconds": 2.0}, receiver.url, ["progress"])
    deliveries = completed(receiver, job["id"])
    progress = [d.payload["data"] for d in deliveries if d.type == "job.progress"]
    log = httpx.get(f"{hooked.url}/api/jobs/{job['id']}/events?format=json").json()["events"]
    reported = [e for e in log if e["type"] == "progress"]
    # 40 events in about 2 s, one delivery per 0.5 s at most: however busy the machine
    # (a slower job only spreads its events), deliveries stand for several events each.
    assert len(reported) >= 10
    assert 1 <= len(progress) < len(reported)
    assert max(p["coalesced"] for p in progress) > 1
    # Every progress event is accounted for once, and the last delivery has the last state.
    assert sum(p["coalesced"] for p in progress) == len(reported)
    assert progress[-1]["event"]["id"] == reported[-1]["id"]
    assert progress[-1]["event"]["data"] == reported[-1]["data"]


def test_failed_attempts_are_retried_with_the_same_webhook_id(
        hooked: LiveServer, receiver: Receiver) -> None:
    receiver.hang_for = 4.0  # past the 2 s attempt timeout
    receiver.answers = [500, 503, "hang", 200]
    job = submit(hooked, "add", {"x": 1}, receiver.url)
    wait_until(lambda: attempts(hooked, job["id"])["webhook"]["done"], what="delivered")
    requests = receiver.of_job(job["id"])
    assert len(requests) == 4
    assert len({r.id for r in requests}) == 1  # one delivery, four attempts
    assert len({r.body for r in requests}) == 1
    for request in requests:
        Webhook(SECRET).verify(request.body, request.headers)
    log = attempts(hooked, job["id"])["attempts"]
    assert [(a["outcome"], a["status"]) for a in log] == [
        ("failed", 500), ("failed", 503), ("failed", None), ("delivered", 200)]
    assert "the receiver answered 500" in log[0]["error"]
    assert "no answer within 2 s" in log[2]["error"]


def test_a_restart_mid_retry_loses_no_delivery(make_server: ServerFactory,
                                               receiver: Receiver) -> None:
    receiver.answers = [500] * 1000
    server = make_server(webhooks=FAST_HOOKS)
    job = submit(server, "add", {"x": 7}, receiver.url)
    wait_until(lambda: len(receiver.of_job(job["id"])) >= 2, what="two failed attempts")
    server.stop()
    failed = receiver.of_job(job["id"])
    receiver.answers = []  # the receiver is fixed while genq is down
    server.start()
    delivered = wait_until(lambda: attempts(server, job["id"])["webhook"]["done"]
                           and receiver.of_job(job["id"]), what="delivery after restart")
    assert {r.id for r in delivered} == {failed[0].id}
    assert Webhook(SECRET).verify(delivered[-1].body, delivered[-1].headers)["data"][
        "result"] == 7
    assert attempts(server, job["id"])["attempts"][-1]["outcome"] == "delivered"


def test_deliveries_of_a_job_arrive_in_order(hooked: LiveServer,
                                             receiver: Receiver) -> None:
    receiver.answers = [500, 500]  # the first delivery (started) needs three tries
    job = submit(hooked, "tokens", {"n": 6, "delay": 0.1}, receiver.url,
                 ["started", "progress", "output"])
    completed(receiver, job["id"])
    # Whatever the retries, no delivery reached the receiver before an earlier one
    # succeeded: the event ids of the requests never go back.
    ids = [r.payload["data"]["event"]["id"] for r in receiver.of_job(job["id"])]
    assert ids == sorted(ids)
    assert ids[0] == ids[1] == ids[2]  # started, three times


def test_private_addresses_are_refused_unless_allowed(make_server: ServerFactory,
                                                      receiver: Receiver) -> None:
    server = make_server(webhooks=WebhookSettings(secret=SECRET, backoff_base=0.2))
    # An address in the URL: refused at submit.
    response = httpx.post(f"{server.url}/api/jobs", json={
        "function": "add", "input": {"x": 1}, "webhook": receiver.url})
    error = error_of(response, 400, "bad_request")
    assert error["field"] == "webhook" and "loopback" in error["message"]
    # A name: resolved when the delivery connects, and refused there.
    job = submit(server, "add", {"x": 1}, f"http://localhost:{receiver.port}/hooks")
    log = wait_until(lambda: attempts(server, job["id"])["attempts"], what="an attempt")
    assert log[0]["outcome"] == "failed"
    assert "refused to connect to localhost" in log[0]["error"]
    assert "GENQ_WEBHOOK_ALLOW_PRIVATE" in log[0]["error"]
    assert receiver.requests == []


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"webhook": "ftp://example.com/x"}, "webhook", "http or https"),
    ({"webhook": "https://user:pw@example.com/x"}, "webhook", "credentials"),
    ({"webhook": "not a url"}, "webhook", "http or https"),
    ({"webhook": 5}, "webhook", "URL"),
    ({"webhook": "https://example.com/", "webhook_events": ["finished"]},
     "webhook_events", "finished"),
    ({"webhook": "https://example.com/", "webhook_events": "started"},
     "webhook_events", "list"),
    ({"webhook_events": ["started"]}, "webhook", "URL"),
])
def test_invalid_webhooks_are_refused_at_submit(hooked: LiveServer, body: dict[str, Any],
                                                field: str, words: str) -> None:
    response = httpx.post(f"{hooked.url}/api/jobs",
                          json={"function": "add", "input": {"x": 1}, **body})
    error = error_of(response, 400, "bad_request")
    assert error["field"] == field and words in error["message"]


def test_a_server_without_a_secret_refuses_webhooks(make_server: ServerFactory) -> None:
    server = make_server(webhooks=WebhookSettings())
    response = httpx.post(f"{server.url}/api/jobs", json={
        "function": "add", "input": {"x": 1}, "webhook": "https://example.com/hook"})
    assert "--webhook-secret" in error_of(response, 400, "bad_request")["message"]


def test_deliveries_are_signed_with_the_keys_secret_and_owner_checked(
        make_server: ServerFactory, receiver: Receiver) -> None:
    keys = ApiKeys.parse(f"key-a owner=alice webhook_secret={KEY_SECRET}\n"
                         "key-b owner=bob")
    server = make_server(keys=keys, webhooks=FAST_HOOKS)
    alice = {"Authorization": "Bearer key-a"}
    bob = {"Authorization": "Bearer key-b"}
    mine = submit(server, "add", {"x": 1}, receiver.url, headers=alice)
    theirs = submit(server, "add", {"x": 2}, receiver.url, headers=bob)
    [a] = completed(receiver, mine["id"])
    [b] = completed(receiver, theirs["id"])
    Webhook(KEY_SECRET).verify(a.body, a.headers)
    Webhook(SECRET).verify(b.body, b.headers)  # bob's key has none: the server's
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(a.body, a.headers)
    assert attempts(server, mine["id"], headers=alice)["webhook"]["url"] == receiver.url
    response = httpx.get(f"{server.url}/api/jobs/{mine['id']}/webhooks", headers=bob)
    error_of(response, 404, "job_not_found")


def test_a_job_without_a_webhook_reports_none(hooked: LiveServer) -> None:
    job = httpx.post(f"{hooked.url}/api/jobs", json={"function": "add",
                                                     "input": {"x": 1}}).json()
    assert attempts(hooked, job["id"]) == {"webhook": None, "attempts": []}


def test_the_clients_take_a_webhook(hooked: LiveServer, receiver: Receiver) -> None:
    with genq.Client(hooked.url) as client:
        job = client.submit("tokens", n=2, webhook=receiver.url, webhook_events=["output"])
        job.result()
    kinds = [d.type for d in completed(receiver, job.id)]
    assert kinds[-1] == "job.completed" and "job.output" in kinds
    assert "job.started" not in kinds


def test_genq_run_takes_a_webhook(hooked: LiveServer, receiver: Receiver) -> None:
    done = subprocess.run([str(GENQ_BIN), "run", "--server", hooked.url, "--webhook",
                           receiver.url, "add", "--x", "4"], capture_output=True, text=True,
                          timeout=60, env=cli_env(), stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4"
    job_id = done.stderr.split("job ", 1)[1].split()[0]
    [delivery] = completed(receiver, job_id)
    assert Webhook(SECRET).verify(delivery.body, delivery.headers)["data"]["result"] == 4

    refused = subprocess.run([str(GENQ_BIN), "run", "--server", hooked.url, "--webhook",
                              "ftp://example.com/hook", "add", "--x", "4"], capture_output=True,
                             text=True, timeout=60, env=cli_env(), stdin=subprocess.DEVNULL)
    assert refused.returncode == 1
    assert "http or https" in refused.stderr


def test_genq_serve_refuses_a_secret_not_in_the_whsec_form() -> None:
    env = cli_env(GENQ_WEBHOOK_SECRET="hunter2")
    env["PYTHONPATH"] += os.pathsep + str(Path(standardwebhooks.__file__).parents[1])
    done = subprocess.run([str(GENQ_BIN), "serve", "apps.http_app:app", "--port", "0"],
                          capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "whsec_" in done.stderr and "GENQ_WEBHOOK_SECRET" in done.stderr


def test_a_delivery_refused_past_retry_for_expires_and_the_next_one_follows(
        make_server: ServerFactory, receiver: Receiver) -> None:
    server = make_server(webhooks=replace(FAST_HOOKS, retry_for=1.5))
    receiver.refused_types = {"job.started"}
    job = submit(server, "add", {"x": 1}, receiver.url, ["started"])
    wait_until(lambda: attempts(server, job["id"])["webhook"]["done"], what="done")
    log = attempts(server, job["id"])["attempts"]
    started = [a for a in log if a["type"] == "job.started"]
    assert [a["outcome"] for a in started[:-1]] == ["failed"] * (len(started) - 1)
    assert len(started) >= 3  # retried while it could be
    assert started[-1]["outcome"] == "expired" and "given up" in started[-1]["error"]
    assert log[-1]["type"] == "job.completed" and log[-1]["outcome"] == "delivered"
    assert [d.type for d in receiver.delivered(job["id"])] == ["job.started", "job.completed"]


def test_app_local_refuses_webhooks(tmp_path: Path) -> None:
    from tests.apps.http_app import app

    with app.local(tmp_path / "local.sqlite3", workers=False) as client:
        with pytest.raises(genq.errors.BadRequest, match="genq serve"):
            client.submit("add", x=1, webhook="https://example.com/hook")


def test_a_killed_genq_serve_resends_the_pending_delivery_at_start(
        tmp_path: Path, receiver: Receiver) -> None:
    from tests.support.http_fixtures import free_port, serves

    port = free_port()
    env = cli_env(GENQ_WEBHOOK_SECRET=SECRET, GENQ_WEBHOOK_ALLOW_PRIVATE="1")
    env["PYTHONPATH"] += os.pathsep + str(Path(standardwebhooks.__file__).parents[1])
    command = [str(GENQ_BIN), "serve", "apps.http_app:app", "--port", str(port),
               "--db", str(tmp_path / "jobs.sqlite3")]
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return serves(httpx.get(f"{url}/readyz"))
        except httpx.TransportError:
            return False

    receiver.answers = [500] * 1000
    with subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as first:
        try:
            wait_until(up, 30, what="genq serve")
            job = httpx.post(f"{url}/api/jobs", json={
                "function": "add", "input": {"x": 9}, "webhook": receiver.url}).json()
            wait_until(lambda: receiver.of_job(job["id"]), what="a failed attempt")
        finally:
            first.kill()  # SIGKILL: no chance to hand anything back
    receiver.answers = []
    with subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as second:
        try:
            wait_until(up, 30, what="genq serve, again")
            wait_until(lambda: httpx.get(f"{url}/api/jobs/{job['id']}/webhooks").json()[
                "webhook"]["done"], what="delivered after the restart")
        finally:
            second.terminate()
    requests = receiver.of_job(job["id"])
    assert len({r.id for r in requests}) == 1
    assert Webhook(SECRET).verify(requests[-1].body, requests[-1].headers)["data"][
        "result"] == 9
