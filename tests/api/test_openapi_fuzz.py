"""The API fuzzed from its own /openapi.json: schemathesis generates requests (valid and
invalid) for every documented operation and sends them to a real uvicorn server.

What must hold for every request: no 5xx (each mistake a caller can make is a 4xx JSON
naming the problem), the status is one the document lists for the operation, and JSON
bodies and content types match the schemas it documents. Three callers: a server
without API keys; a server with keys, called with a valid key; and one called with
none, where nothing but the public endpoints may answer 2xx.

The servers run without workers: fuzzed submissions stay queued (a fuzzed ``slow`` job
must not hold a worker for minutes), and /readyz answers its documented 503
``not_ready``; what runs is covered by tests/test_http_*.py.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from pydantic import BaseModel
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import genq
from genq.server import ApiKeys
from genq.server.openapi import openapi_document
from tests.apps.http_app import app as http_app
from tests.support.http_fixtures import FAST, LiveServer

MAX_EXAMPLES = 60  # per operation and caller: the module takes ~15-30 s on 2 cores
KEY = "fuzz-key"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# Answer 2xx without a key: liveness, readiness, this document, and signing out of the UI
# (which only clears the session cookie of whoever calls).
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/openapi.json"),
          ("DELETE", "/api/session")}
# Each call's content is read whole, so an endless stream cannot be fuzzed; its 401,
# 404 and live behaviour are in tests/test_http_api.py and tests/test_ui.py.
ENDLESS = "/api/events"

# The document as the server builds it for the test app. schemathesis' lazy loader
# (``schemathesis.pytest.from_fixture``, which would fetch it from the live server) does
# not run on pytest 9 (it sets ``Function._nodeid``, which pytest 9 no longer has), so the
# schema is built here and test_the_served_document_is_the_fuzzed_one proves it is the
# one /openapi.json serves.
schema = schemathesis.openapi.from_dict(openapi_document(http_app)).exclude(path=ENDLESS)
schema.config.generation.update(max_examples=MAX_EXAMPLES, database="none")


@dataclass
class Caller:
    live: LiveServer
    headers: dict[str, str]  # what each fuzzed call carries
    job_id: str  # a real (cancelled) job of the key's owner


@pytest.fixture(scope="module", params=["open", "with-key", "without-key"])
def caller(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Caller]:
    """A live server and how it is called. Each caller has a server of its own: calls
    without a key count as wrong keys, and an address that sends too many is refused
    (429) even with a good key."""
    mode = str(request.param)
    keys = ApiKeys() if mode == "open" else ApiKeys({KEY: "fuzzer"})
    db: Path = tmp_path_factory.mktemp(f"fuzz-{mode}") / "genq.sqlite3"
    server = LiveServer(http_app, db, replace(FAST, workers=False, keys=keys)).start()
    try:
        auth = {"Authorization": f"Bearer {KEY}"} if keys.enabled else {}
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as http:
            job = http.post("/api/jobs", json={"function": "add", "input": {"x": 1}})
            assert job.status_code == 201, job.text
            # Cancelled, so that fuzzed waits, streams and cancels of it end at once.
            assert http.post(f"/api/jobs/{job.json()['id']}/cancel").status_code == 200
        yield Caller(server, {} if mode == "without-key" else auth, job.json()["id"])
    finally:
        server.stop()


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


def test_the_served_document_is_the_fuzzed_one(caller: Caller,
                                               session: requests.Session) -> None:
    response = session.get(f"{caller.live.url}/openapi.json", headers=caller.headers,
                           timeout=30)
    assert response.status_code == 200
    assert response.json() == schema.raw_schema


@schema.parametrize()
def test_no_server_errors_and_only_documented_answers(case: Any, caller: Caller,
                                                      session: requests.Session) -> None:
    # A server without workers is honestly not ready: /readyz's documented 503 not_ready
    # is its answer, not a server error (the status and body are still checked).
    readyz = (case.method.upper(), case.path) == ("GET", "/readyz")
    checks = [c for c in CHECKS if c is not not_a_server_error] if readyz else CHECKS
    responses = [case.call_and_validate(base_url=caller.live.url, session=session,
                                        headers=caller.headers, checks=checks, timeout=30)]
    if readyz:
        assert responses[0].status_code == 503, responses[0].text
        assert responses[0].json()["error"]["code"] == "not_ready"
    if "job_id" in (case.path_parameters or {}):
        # A generated id names no job, so the same request again on a real one: its
        # query and headers then reach the store (an event id past 2^63 once did: 500).
        case.path_parameters["job_id"] = caller.job_id
        responses.append(case.call_and_validate(
            base_url=caller.live.url, session=session, headers=caller.headers,
            checks=CHECKS, timeout=30))
    if (caller.live.settings.keys.enabled and not caller.headers
            and (case.method.upper(), case.path) not in PUBLIC):
        for response in responses:
            assert not 200 <= response.status_code < 300, f"answered without a key: {case}"
            if response.status_code == 401:
                assert response.json()["error"]["code"] == "unauthorized"


# -- the document itself ---------------------------------------------------------------
class Style(enum.Enum):
    PHOTO = "photo"
    SKETCH = "sketch"


class Size(BaseModel):
    width: int
    height: int


nested = genq.App("nested-inputs")


@nested.function()
def draw(style: Style, size: Size) -> str:
    """Inputs with an enum and a nested model: pydantic puts both under $defs."""
    return f"{style.value} {size.width}x{size.height}"


@nested.function(name="paint")
def paint(style: Style) -> str:
    """A second function with a model of the same name."""
    return style.value


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_reference_in_the_document_resolves() -> None:
    for app in (http_app, nested):
        document = openapi_document(app)
        refs = set(_refs(document))
        assert refs, "the document refers to its components"
        for ref in refs:
            assert ref.startswith("#/components/schemas/"), ref
            assert ref.removeprefix("#/components/schemas/") in document["components"][
                "schemas"], f"{app.name}: {ref} does not resolve"
    schemas = openapi_document(nested)["components"]["schemas"]
    assert schemas["draw.Style"]["enum"] == ["photo", "sketch"]
    assert set(schemas["draw.Size"]["required"]) == {"width", "height"}
    assert schemas["paint.Style"] == schemas["draw.Style"]


# -- what fuzzing found, pinned down -----------------------------------------------------
def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    return error


def test_a_priority_past_32_bits_is_refused_and_the_store_lives_on(
        idle_http: httpx.Client) -> None:
    # 2^70 once stopped the SQLite writer thread: every later write hung.
    for priority in (2**70, -(2**31) - 1, 2**31):
        error = _error(idle_http.post("/api/jobs", json={
            "function": "add", "input": {"x": 1}, "priority": priority}), 422, "invalid_input")
        assert error["errors"][0]["field"] == "priority" and "2147483647" in error["message"]
    error = _error(idle_http.post("/api/jobs", json={
        "function": "add", "input": {"x": 1}, "priority": True}), 400, "bad_request")
    assert error["field"] == "priority"
    top = idle_http.post("/api/jobs", json={"function": "add", "input": {"x": 1},
                                            "priority": 2**31 - 1}, timeout=10)
    assert top.status_code == 201 and top.json()["priority"] == 2**31 - 1


@pytest.mark.parametrize(("body", "says"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"function": "add", "input": {"x": 1, "y": NaN}}', "NaN is not a JSON value"),
    (b'{"function": "add", "input": {"x": Infinity}}', "Infinity is not a JSON value"),
])
def test_bodies_json_cannot_carry_are_refused_by_name(idle_http: httpx.Client, body: bytes,
                                                      says: str) -> None:
    response = idle_http.post("/api/jobs", content=body,
                              headers={"Content-Type": "application/json"})
    assert says in _error(response, 400, "bad_request")["message"]


def test_resume_points_and_cursors_out_of_range_are_refused_by_name(
        idle_http: httpx.Client) -> None:
    job = idle_http.post("/api/jobs", json={"function": "add", "input": {"x": 1}}).json()
    path = f"/api/jobs/{job['id']}/events"
    for request in ({"headers": {"Last-Event-ID": str(2**63)}},
                    {"params": {"after": str(2**63), "format": "json"}}):
        error = _error(idle_http.get(path, **request), 400, "bad_request")
        assert error["field"] == "last_event_id" and str(2**63 - 1) in error["message"]
    page = idle_http.get(path, params={"after": str(2**63 - 1), "format": "json"})
    assert page.status_code == 200 and page.json() == {"events": []}
    for before in ("nan", "inf", "-1e999", "soon"):
        error = _error(idle_http.get("/api/jobs", params={"before": before}), 400,
                       "bad_request")
        assert error["field"] == "before"


def test_a_wrong_method_is_answered_with_the_allowed_ones(idle_http: httpx.Client) -> None:
    response = idle_http.delete("/api/jobs")
    _error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
