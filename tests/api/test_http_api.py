"""The REST API over a real uvicorn server, a real SQLite file and real httpx.

What a caller of the HTTP API sees: status codes, JSON bodies, headers, and the effects
(a job that runs once, a queue that refuses, metrics that move).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.apps import http_app
from tests.support.http_fixtures import (
    LiveServer,
    ServerFactory,
    error_of,
    event_log,
    finished,
    iter_sse,
    seed_jobs,
    submit,
    wait_until,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- submit, idempotency, get ----------------------------------------------------------
def test_submit_runs_the_job_and_get_shows_it(http: httpx.Client) -> None:
    response = http.post("/api/jobs", json={"function": "add", "input": {"x": 2, "y": 3}})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["function"] == "add" and job["input"] == {"x": 2, "y": 3}
    assert job["submitted"] == "new" and "owner" not in job
    assert response.headers["location"] == f"/api/jobs/{job['id']}"

    done = finished(http, job["id"])
    assert done["status"] == "succeeded" and done["result"] == 5
    got = http.get(f"/api/jobs/{job['id']}")
    assert got.status_code == 200
    assert got.json()["status"] == "succeeded" and got.json()["result"] == 5
    assert got.json()["queue_position"] is None
    assert got.json()["last_event_id"] == len(event_log(http, job["id"]))


def test_idempotency_key_replays_the_same_job_and_runs_it_once(http: httpx.Client) -> None:
    tag = "idem-1"
    key = {"Idempotency-Key": "k-123"}
    first = submit(http, "counted", 201, headers=key, tag=tag)
    finished(http, first["id"])
    replay = submit(http, "counted", 200, headers=key, tag=tag)
    assert replay["id"] == first["id"]
    assert replay["submitted"] == "idempotent"
    assert replay["status"] == "succeeded" and replay["result"] == tag
    assert http_app.calls[tag] == 1
    ids = [j["id"] for j in http.get("/api/jobs", params={"function": "counted"})
           .json()["jobs"]]
    assert ids == [first["id"]]


def test_idempotency_key_reused_for_other_input_is_a_conflict(http: httpx.Client) -> None:
    key = {"Idempotency-Key": "k-conflict"}
    first = submit(http, "add", 201, headers=key, x=1)
    response = http.post("/api/jobs", json={"function": "add", "input": {"x": 2}},
                         headers=key)
    error = error_of(response, 409, "idempotency_conflict")
    assert error["job_id"] == first["id"]
    response = http.post("/api/jobs", json={"function": "counted", "input": {"tag": "x"}},
                         headers=key)
    error_of(response, 409, "idempotency_conflict")


# -- listing ---------------------------------------------------------------------------
def test_list_filters_by_function_and_status(http: httpx.Client) -> None:
    adds = [submit(http, "add", x=i)["id"] for i in range(3)]
    failed = submit(http, "fail")["id"]
    for job_id in [*adds, failed]:
        finished(http, job_id)

    def ids(**params: Any) -> list[str]:
        response = http.get("/api/jobs", params=params)
        assert response.status_code == 200, response.text
        return [j["id"] for j in response.json()["jobs"]]

    assert ids(function="add") == adds[::-1]  # newest first
    assert ids(status="failed") == [failed]
    assert ids(function="add", status="failed") == []
    assert set(ids(status="succeeded")) == set(adds)
    assert ids() == [failed, *adds[::-1]]
    error = error_of(http.get("/api/jobs", params={"status": "done"}), 400, "bad_request")
    assert error["field"] == "status"
    error_of(http.get("/api/jobs", params={"limit": "0"}), 400, "bad_request")


def test_list_pages_with_next_and_before(idle_http: httpx.Client) -> None:
    created = [submit(idle_http, "add", x=i)["id"] for i in range(5)]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    pages = 0
    while True:
        body = idle_http.get("/api/jobs", params=params).json()
        seen += [j["id"] for j in body["jobs"]]
        pages += 1
        if body["next"] is None:
            break
        params["before"] = body["next"]
        assert pages < 10
    assert seen == created[::-1]  # every job once, newest first, across pages
    assert pages == 3


def test_list_pages_through_jobs_of_one_instant(make_server: ServerFactory,
                                                tmp_path: Path) -> None:
    """Many jobs created in the same instant, paged two at a time with ``next``: each
    comes exactly once, newest first (ties by id). A plain timestamp still works as
    ``before``; a malformed one is a 400 naming the parameter."""
    instant = time.time() - 100
    db = tmp_path / "ties.sqlite3"
    newest_first = seed_jobs(db, [instant - 1] * 2 + [instant] * 9 + [instant + 1])
    live = make_server(db=db, workers=False)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        seen: list[str] = []
        params: dict[str, Any] = {"limit": 2}
        for _ in range(20):
            body = http.get("/api/jobs", params=params).json()
            seen += [j["id"] for j in body["jobs"]]
            if body["next"] is None:
                break
            assert isinstance(body["next"], str)
            params["before"] = body["next"]
        assert seen == newest_first
        body = http.get("/api/jobs", params={"before": repr(instant)}).json()
        assert [j["id"] for j in body["jobs"]] == newest_first[-2:]
        for bad in ("yesterday", "nan", "inf", f"{instant!r}:", ":abc"):
            error = error_of(http.get("/api/jobs", params={"before": bad}), 400,
                             "bad_request")
            assert error["field"] == "before"


# -- cancel and result -----------------------------------------------------------------
def test_cancel_a_queued_job(idle_http: httpx.Client) -> None:
    job = submit(idle_http, "add", x=1)
    assert job["status"] == "queued" and job["queue_position"] == 1
    response = idle_http.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert idle_http.get(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"
    assert [e["type"] for e in event_log(idle_http, job["id"])] == ["queued", "cancelled"]
    # Cancelling again is harmless and answers the job as it is.
    assert idle_http.post(f"/api/jobs/{job['id']}/cancel").json()["status"] == "cancelled"


def test_cancel_a_running_job(http: httpx.Client) -> None:
    job = submit(http, "slow", seconds=60)
    wait_until(lambda: http.get(f"/api/jobs/{job['id']}").json()["status"] == "running",
               what="the job to start")
    response = http.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] in ("running", "cancelled")
    done = finished(http, job["id"])
    assert done["status"] == "cancelled"
    assert event_log(http, job["id"])[-1]["type"] == "cancelled"


def test_result_long_poll(idle_http: httpx.Client, http: httpx.Client) -> None:
    queued = submit(idle_http, "add", x=1)
    response = idle_http.get(f"/api/jobs/{queued['id']}/result", params={"wait": 0.3})
    assert response.status_code == 202
    assert response.json()["status"] == "queued" and response.json()["result"] is None

    job = submit(http, "slow", seconds=0.3)
    response = http.get(f"/api/jobs/{job['id']}/result", params={"wait": 60})
    assert response.status_code == 200  # answered when the job ended, inside the wait
    assert response.json()["status"] == "succeeded"
    assert response.json()["result"] == "slept 0.3 s"

    failed = submit(http, "fail", message="no luck")
    body = finished(http, failed["id"])
    assert body["status"] == "failed"
    assert body["error"]["type"] == "ValueError" and body["error"]["message"] == "no luck"
    error = error_of(http.get(f"/api/jobs/{job['id']}/result", params={"wait": "soon"}),
                     400, "bad_request")
    assert error["field"] == "wait"


# -- artifacts, functions, OpenAPI, health ----------------------------------------------
def test_artifact_download_has_its_content_type(http: httpx.Client) -> None:
    job = submit(http, "image", side=8)
    result = finished(http, job["id"])["result"]
    ref = result["artifact"]
    assert ref["content_type"] == "image/png" and ref["name"] == "tile.png"
    response = http.get(f"/api/artifacts/{ref['id']}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert 'filename="tile.png"' in response.headers["content-disposition"]
    assert response.content.startswith(PNG_SIGNATURE)
    assert len(response.content) == ref["size"]
    assert http_app.image(side=8).data == response.content
    error_of(http.get("/api/artifacts/nope"), 404, "job_not_found")


def test_functions_list_their_input_schemas(http: httpx.Client) -> None:
    response = http.get("/api/functions")
    assert response.status_code == 200
    functions = {f["name"]: f for f in response.json()["functions"]}
    assert set(functions) == set(http_app.app.functions)
    add = functions["add"]
    assert add["description"] == "Add two integers."
    assert add["streams"] is False and functions["tokens"]["streams"] is True
    schema = add["input_schema"]
    assert schema["properties"]["x"]["type"] == "integer"
    assert schema["required"] == ["x"] and schema["additionalProperties"] is False
    assert "progress" not in functions["slow"]["input_schema"]["properties"]
    assert functions["bounded"]["options"]["max_queue"] == 2
    one = http.get("/api/functions/tokens")
    assert one.status_code == 200 and one.json()["input_schema"]["properties"]["n"][
        "maximum"] == 10_000
    error_of(http.get("/api/functions/nope"), 404, "unknown_function")


def test_openapi_document(http: httpx.Client) -> None:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    for path in ("/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/events",
                 "/api/jobs/{job_id}/result", "/api/jobs/{job_id}/cancel", "/healthz",
                 "/readyz"):
        assert path in doc["paths"], path
    schemas = doc["components"]["schemas"]
    variants = doc["paths"]["/api/jobs"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["oneOf"]
    assert {v["title"] for v in variants} == set(http_app.app.functions)
    for variant in variants:  # every $ref resolves to that function's input schema
        ref = variant["properties"]["input"]["$ref"]
        name = ref.removeprefix("#/components/schemas/")
        assert name == f"{variant['title']}_input" and name in schemas
    assert schemas["add_input"]["properties"]["x"]["type"] == "integer"
    assert schemas["echo_input"]["properties"]["text"]["type"] == "string"
    assert set(doc["paths"]["/api/jobs"]["post"]["responses"]) >= {
        "200", "201", "400", "404", "409", "413", "422", "429"}


def test_healthz(http: httpx.Client, server: LiveServer) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["functions"] == len(http_app.app.functions)
    assert body["worker"]["running"] == 0
    assert body["worker"]["id"] == server.state.engine.workers[0].id


def test_readyz(http: httpx.Client) -> None:
    response = http.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready" and body["store"] == "sqlite"
    assert body["workers"] == 1 and body["running"] == 0  # the store's view of the cluster


# -- metrics ---------------------------------------------------------------------------
def metrics(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus samples by (name, sorted labels)."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def sample(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def metrics_when(http: httpx.Client, expected: list[tuple[float, str, dict[str, str]]]
                 ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Poll /metrics until every (value, name, labels) holds; the samples then."""
    def check() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        values = metrics(http)
        ok = all(sample(values, name, **labels) == value for value, name, labels in expected)
        return values if ok else None

    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = wait_until(
        check, what=f"metrics {expected}")
    return found


def test_metrics_move_as_jobs_run(http: httpx.Client, idle_http: httpx.Client) -> None:
    before = metrics(http)
    assert sample(before, "genq_event_streams") == 0
    assert sample(before, "genq_jobs_finished_total", function="add", status="succeeded") == 0
    for i in range(3):
        finished(http, submit(http, "add", x=i)["id"])
    finished(http, submit(http, "fail")["id"])
    # The worker counts a job just after recording its end: poll until it has.
    after = metrics_when(http, [
        (1, "genq_jobs_finished_total", {"function": "fail", "status": "failed"}),
        (3, "genq_jobs_finished_total", {"function": "add", "status": "succeeded"})])
    assert sample(after, "genq_jobs_submitted_total", function="add") == 3
    assert sample(after, "genq_job_run_seconds_count", function="add") == 3
    assert sample(after, "genq_job_queue_seconds_count", function="add") == 3
    assert sample(after, "genq_job_run_seconds_bucket", function="add", le="+Inf") == 3

    # Running, and connected streams, while a job runs and a client follows it.
    job = submit(http, "slow", seconds=60)
    with http.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
        lines = stream.iter_lines()
        wait_until(lambda: "started" in next(lines), what="the started event")
        now = metrics(http)
        assert sample(now, "genq_jobs_running", function="slow") == 1
        assert sample(now, "genq_event_streams") == 1
    http.post(f"/api/jobs/{job['id']}/cancel")
    finished(http, job["id"])
    end = metrics_when(http, [
        (0, "genq_event_streams", {}), (0, "genq_jobs_running", {"function": "slow"}),
        (1, "genq_jobs_finished_total", {"function": "slow", "status": "cancelled"})])
    assert sample(end, "genq_jobs_finished_total", function="add", status="succeeded") == 3

    # Queue depth, on a server whose jobs stay queued.
    for i in range(2):
        submit(idle_http, "add", x=i)
    assert sample(metrics(idle_http), "genq_queue_depth", function="add") == 2


# -- errors ----------------------------------------------------------------------------
def test_unknown_function(http: httpx.Client) -> None:
    error = error_of(http.post("/api/jobs", json={"function": "nope", "input": {}}),
                     404, "unknown_function")
    assert error["function"] == "nope"
    assert "add" in error["message"]  # names the known functions


def test_invalid_input_names_the_field(http: httpx.Client) -> None:
    error = error_of(http.post("/api/jobs", json={"function": "add", "input": {"x": "abc"}}),
                     422, "invalid_input")
    assert [e["field"] for e in error["errors"]] == ["x"]
    assert "x" in error["message"]
    error = error_of(http.post("/api/jobs", json={"function": "add", "input": {}}),
                     422, "invalid_input")
    assert error["errors"][0]["field"] == "x" and error["errors"][0]["type"] == "missing"
    error = error_of(http.post("/api/jobs",
                               json={"function": "add", "input": {"x": 1, "z": 2}}),
                     422, "invalid_input")
    assert error["errors"][0]["field"] == "z"
    error = error_of(http.post("/api/jobs", json={"function": "tokens",
                                                  "input": {"n": 10_001}}),
                     422, "invalid_input")
    assert error["errors"][0]["field"] == "n"
    assert http.get("/api/jobs").json()["jobs"] == []  # nothing was queued


def test_oversize_body_is_refused(make_server: Any) -> None:
    live = make_server(max_body=1024)
    body = b'{"function": "echo", "input": {"text": "' + b"a" * 4096 + b'"}}'
    with httpx.Client(base_url=live.url, timeout=30) as http:
        # With a Content-Length header: refused before the body is read.
        response = http.post("/api/jobs", content=body,
                             headers={"content-type": "application/json"})
        error = error_of(response, 413, "payload_too_large")
        assert error["limit"] == 1024

        # Chunked (no Content-Length): refused once the streamed body passes the limit.
        def chunks() -> Any:
            for i in range(0, len(body), 256):
                yield body[i:i + 256]

        response = http.post("/api/jobs", content=chunks(),
                             headers={"content-type": "application/json"})
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        error_of(response, 413, "payload_too_large")

        # A body under the limit still works, and nothing oversize was queued.
        ok = http.post("/api/jobs", json={"function": "echo", "input": {"text": "hi"}})
        assert ok.status_code == 201
        assert [j["id"] for j in http.get("/api/jobs").json()["jobs"]] == [ok.json()["id"]]


def test_malformed_json_is_a_bad_request(http: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    error = error_of(http.post("/api/jobs", content=b'{"function": "add", ', headers=headers),
                     400, "bad_request")
    assert "JSON" in error["message"]
    error_of(http.post("/api/jobs", content=b"[1, 2]", headers=headers), 400, "bad_request")
    error_of(http.post("/api/jobs", json={"function": "add", "input": [1]}),
             400, "bad_request")
    error_of(http.post("/api/jobs", json={"function": "add", "input": {"x": 1},
                                          "priority": "high"}), 400, "bad_request")


def test_full_queue_is_429_with_retry_after(idle_http: httpx.Client) -> None:
    submit(idle_http, "bounded", x=1)
    submit(idle_http, "bounded", x=2)
    response = idle_http.post("/api/jobs", json={"function": "bounded", "input": {"x": 3}})
    error = error_of(response, 429, "queue_full")
    assert int(response.headers["retry-after"]) >= 1
    assert error["max_queue"] == 2 and error["function"] == "bounded"
    assert len(idle_http.get("/api/jobs", params={"function": "bounded"}).json()["jobs"]) == 2
    values = metrics(idle_http)
    assert sample(values, "genq_jobs_rejected_total", function="bounded",
                  code="queue_full") == 1
    # Other functions' queues are not affected.
    submit(idle_http, "add", x=1)


def test_unknown_job_is_404(http: httpx.Client) -> None:
    for method, path in (("GET", "/api/jobs/nope"), ("POST", "/api/jobs/nope/cancel"),
                         ("GET", "/api/jobs/nope/result"), ("GET", "/api/jobs/nope/events")):
        error = error_of(http.request(method, path), 404, "job_not_found")
        assert error["job_id"] == "nope"
    error_of(http.get("/api/nothing-here"), 404, "not_found")


# -- API keys and owners ---------------------------------------------------------------
def test_api_key_is_required(keyed_server: LiveServer) -> None:
    with httpx.Client(base_url=keyed_server.url, timeout=30) as http:
        response = http.get("/api/jobs")
        error_of(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        error_of(http.get("/api/jobs", headers={"Authorization": "Bearer wrong"}),
                 401, "unauthorized")
        error_of(http.post("/api/jobs", json={"function": "add", "input": {"x": 1}}),
                 401, "unauthorized")
        error_of(http.get("/api/functions"), 401, "unauthorized")
        assert http.get("/api/jobs", headers={"Authorization": "Bearer key-a"}
                        ).status_code == 200
        assert http.get("/api/jobs", headers={"X-API-Key": "key-b"}).status_code == 200
        assert http.get("/healthz").status_code == 200  # liveness needs no key
        # EventSource cannot send headers: the key may come as ?api_key= for streams.
        job = submit(http, "add", headers={"Authorization": "Bearer key-a"}, x=1)
        path = f"/api/jobs/{job['id']}/events"
        with http.stream("GET", path, params={"api_key": "key-a"}) as response:
            assert response.status_code == 200
            assert [m.event for m in iter_sse(response) if m.event][-1] == "succeeded"
        error_of(http.get(path, params={"api_key": "key-b"}), 404, "job_not_found")
        error_of(http.get(path), 401, "unauthorized")


def test_an_owner_cannot_see_another_owners_jobs(keyed_server: LiveServer) -> None:
    alice = {"Authorization": "Bearer key-a"}
    bob = {"Authorization": "Bearer key-b"}
    with httpx.Client(base_url=keyed_server.url, timeout=30) as http:
        image = submit(http, "image", headers=alice)
        art = finished(http, image["id"], headers=alice)["result"]["artifact"]["id"]
        slow = submit(http, "slow", headers=alice, seconds=60)
        slow_id = slow["id"]
        for method, path in (("GET", f"/api/jobs/{slow_id}"),
                             ("POST", f"/api/jobs/{slow_id}/cancel"),
                             ("GET", f"/api/jobs/{slow_id}/result"),
                             ("GET", f"/api/jobs/{slow_id}/events"),
                             ("GET", f"/api/jobs/{slow_id}/events?format=json"),
                             ("GET", f"/api/artifacts/{art}")):
            error_of(http.request(method, path, headers=bob), 404, "job_not_found")
        assert http.get("/api/jobs", headers=bob).json()["jobs"] == []
        mine = {j["id"] for j in http.get("/api/jobs", headers=alice).json()["jobs"]}
        assert mine == {image["id"], slow_id}
        # Bob's cancel did nothing: alice's job is still going, and still hers to cancel.
        assert http.get(f"/api/jobs/{slow_id}", headers=alice).json()["status"] in (
            "queued", "running")
        assert http.get(f"/api/artifacts/{art}", headers=alice).status_code == 200
        http.post(f"/api/jobs/{slow_id}/cancel", headers=alice)
        assert finished(http, slow_id, headers=alice)["status"] == "cancelled"
        # The same idempotency key is per owner: bob's submit is his own job.
        key = {"Idempotency-Key": "shared"}
        a = submit(http, "add", headers={**alice, **key}, x=1)
        b = submit(http, "add", headers={**bob, **key}, x=1)
        assert a["id"] != b["id"]
