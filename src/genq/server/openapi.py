"""The OpenAPI document: the fixed API plus one submit schema per registered function.

tests/test_openapi_fuzz.py fuzzes a live server from this document and holds every
answer to it: each status an operation can give is listed, with the schema of its body.
"""

from __future__ import annotations

from typing import Any

from genq.app import App
from genq.engine import PRIORITY_MAX, PRIORITY_MIN
from genq.models import EventType, JobStatus, SubmitReason
from genq.webhooks.target import EVENTS

_ERROR = {"$ref": "#/components/schemas/Error"}
_JOB = {"$ref": "#/components/schemas/Job"}
_CANCELLED_JOB = {"$ref": "#/components/schemas/CancelledJob"}
_NULLABLE_NUMBER = {"type": ["number", "null"]}
_PRIORITY = {"type": "integer", "minimum": PRIORITY_MIN, "maximum": PRIORITY_MAX}
_EVENT_ID = {"type": "integer", "maximum": (1 << 63) - 1}
_WEBHOOK_FIELDS = {
    "webhook": {"type": "string", "description": "A URL the job's events are posted to, "
                "signed (Standard Webhooks; docs/webhooks.md)"},
    "webhook_events": {"type": "array", "items": {"enum": list(EVENTS)},
                       "description": "Which events besides completed (always sent)"},
}
_WEBHOOKS = {"type": "object", "required": ["webhook", "attempts"], "properties": {
    "webhook": {"type": ["object", "null"]},
    "attempts": {"type": "array", "items": {
        "type": "object", "required": ["webhook_id", "type", "at", "outcome", "status",
                                       "error", "duration"],
        "properties": {"outcome": {"enum": ["delivered", "failed", "expired"]}}}}}}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


# What any /api/* operation may answer, whatever it does: with API keys configured, a
# missing or wrong key (401); a caller over its rate limit (429, Retry-After).
_CALLER_ERRORS = {
    "401": _error_response("API key missing or invalid (servers with API keys)"),
    "429": _error_response("Too many requests from this key, or too many wrong keys "
                           "from this address; see Retry-After"),
}
_BAD_QUERY = {"400": _error_response("A query parameter is malformed (names it)")}
_NO_JOB = {"404": _error_response("No such job (or another owner's)")}

_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "Job": {
        "type": "object",
        "required": ["id", "function", "input", "status", "priority", "created_at",
                     "started_at", "finished_at", "attempts", "max_attempts", "result",
                     "result_size", "result_url", "error", "last_event_id",
                     "queue_position"],
        "properties": {
            "id": {"type": "string"}, "function": {"type": "string"},
            "input": {"type": "object"},
            "status": {"enum": [s.value for s in JobStatus]},
            "priority": {"type": "integer"}, "created_at": {"type": "number"},
            "started_at": _NULLABLE_NUMBER, "finished_at": _NULLABLE_NUMBER,
            "attempts": {"type": "integer", "minimum": 0},
            "max_attempts": {"type": "integer", "minimum": 1},
            "result": {"description": "The function's return value, once succeeded; "
                                      "null when larger than 1 MiB (see result_url)"},
            "result_size": {"type": ["integer", "null"], "minimum": 0,
                            "description": "Set when the result is not inlined: its bytes"},
            "result_url": {"type": ["string", "null"],
                           "description": "Set when the result is not inlined: where "
                                          "GET serves it whole"},
            "error": {"type": ["object", "null"]},
            "last_event_id": {"type": "integer", "minimum": 0},
            "queue_position": {"type": ["integer", "null"], "minimum": 1},
            "ticket": {"type": ["string", "null"],
                       "description": "In a submission's answer: its own hold on the job; "
                                      "POST /cancel?ticket= lets go of it alone. Null in "
                                      "other views"},
        },
    },
    "SubmittedJob": {"allOf": [_JOB, {
        "type": "object", "required": ["submitted", "ticket"],
        "properties": {"submitted": {"enum": [r.value for r in SubmitReason
                                              if r is not SubmitReason.EXISTING]},
                       "ticket": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}}]},
    "CancelledJob": {"allOf": [_JOB, {
        "type": "object", "required": ["cancel_requested"],
        "properties": {"cancel_requested": {
            "type": "boolean",
            "description": "Whether the job is being cancelled: false when a running job "
                           "goes on for other submissions after ?ticket= let go of one"}}}]},
    "Event": {
        "type": "object", "required": ["job_id", "id", "type", "data", "ts"],
        "properties": {"job_id": {"type": "string"}, "id": {"type": "integer", "minimum": 1},
                       "type": {"enum": [t.value for t in EventType]},
                       "data": {"type": "object"}, "ts": {"type": "number"}},
    },
    # One message of a job's event stream, as schemathesis reads a text/event-stream
    # schema (OpenAPI 3.2's itemSchema): its fields, the data being the event as JSON.
    "JobStreamEvent": {
        "type": "object", "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^[1-9][0-9]*$"},
            "event": {"enum": [t.value for t in EventType]},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": {
                         "type": "object", "required": ["type", "data", "ts"],
                         "properties": {"type": {"enum": [t.value for t in EventType]},
                                        "data": {"type": "object"},
                                        "ts": {"type": "number"}}}},
            "retry": {"type": "integer"},
        },
    },
    "FeedEvent": {
        "type": "object", "required": ["event", "data"],
        "properties": {"event": {"enum": ["resync", "job"]},
                       "data": {"type": "string", "contentMediaType": "application/json"}},
    },
    "Function": {
        "type": "object",
        "required": ["name", "description", "kind", "streams", "input_schema", "options"],
        "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                       "kind": {"type": "string"}, "streams": {"type": "boolean"},
                       "input_schema": {"type": "object"}, "options": {"type": "object"}},
    },
}


def _paths(submit: dict[str, Any]) -> dict[str, Any]:
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    job = _json_response("The job", _JOB)
    text = {"schema": {"type": "string"}}
    return {
        "/api/functions": {"get": {
            "summary": "Registered functions and input schemas",
            "responses": {"200": _json_response("Functions", {
                "type": "object", "required": ["functions"], "properties": {
                    "functions": {"type": "array",
                                  "items": {"$ref": "#/components/schemas/Function"}}}}),
                **_CALLER_ERRORS}}},
        "/api/functions/{name}": {"get": {
            "summary": "One function and its input schema",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": _json_response("The function",
                                                {"$ref": "#/components/schemas/Function"}),
                          "404": _error_response("Unknown function"), **_CALLER_ERRORS}}},
        "/api/jobs": {
            "post": {
                "summary": "Submit a job",
                "parameters": [{"name": "Idempotency-Key", "in": "header",
                                "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": submit}}},
                "responses": {
                    "201": _json_response("Queued (or answered from the cache)",
                                          {"$ref": "#/components/schemas/SubmittedJob"}),
                    "200": _json_response("An existing job: idempotent replay or identical "
                                          "job in flight",
                                          {"$ref": "#/components/schemas/SubmittedJob"}),
                    "400": _error_response("Malformed body"),
                    "404": _error_response("Unknown function"),
                    "409": _error_response("Idempotency key reused for other input"),
                    "413": _error_response("Body too large"),
                    "422": _error_response("Invalid input (names the field)"),
                    **_CALLER_ERRORS,
                    "429": _error_response("Queue full, or too many requests; see "
                                           "Retry-After"),
                },
            },
            "get": {
                "summary": "List my jobs, newest first; page with ?before=<next>",
                "parameters": [
                    _query("function", {"type": "string"}, "Only this function's jobs"),
                    _query("status", {"enum": [s.value for s in JobStatus]},
                           "Only jobs in this status"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500},
                           "At most this many (default 50)"),
                    _query("before", {"type": "string",
                                      "pattern": r"^[^:]+(:.+)?$"},
                           "The previous page's next (the cursor \"<created_at>:<id>\"), "
                           "or a timestamp: only jobs created before it"),
                ],
                "responses": {"200": _json_response("Jobs, newest first", {
                    "type": "object", "required": ["jobs", "next"],
                    "properties": {"jobs": {"type": "array", "items": _JOB},
                                   "next": {"type": ["string", "null"],
                                            "description": "?before= of the next page; "
                                            "null on the last"}}}),
                    **_BAD_QUERY, **_CALLER_ERRORS}},
        },
        "/api/jobs/{job_id}": {"get": {"summary": "A job", "parameters": [job_id],
                                       "responses": {"200": job, **_NO_JOB,
                                                     **_CALLER_ERRORS}}},
        "/api/jobs/{job_id}/webhooks": {"get": {
            "summary": "The job's webhook and every delivery attempt",
            "parameters": [job_id],
            "responses": {"200": _json_response("Webhook and attempts", _WEBHOOKS),
                          **_NO_JOB, **_CALLER_ERRORS}}},
        "/api/jobs/{job_id}/cancel": {"post": {
            "summary": "Cancel a job; with ?ticket=, let go of that submission only (the "
                       "job is cancelled once no submission holds it)",
            "parameters": [job_id, _query("ticket", {"type": "string",
                                                     "pattern": "^[0-9a-f]{32}$"},
                                          "The ticket a submission answered")],
            "responses": {"200": _json_response("The job, and whether it is being "
                                                "cancelled", _CANCELLED_JOB),
                          **_BAD_QUERY,
                          "404": _error_response("No such job (or another owner's), or "
                                                 "no such ticket of it (unknown_ticket)"),
                          **_CALLER_ERRORS}}},
        "/api/jobs/{job_id}/result": {"get": {
            "summary": "Wait up to ?wait= seconds for the job to finish",
            "parameters": [job_id, _query("wait", {"type": "number"},
                                          "Seconds to wait (at most 60; default 0)")],
            "responses": {
                "200": _json_response("Terminal job with result or error", _JOB),
                "202": _json_response("Not finished yet", _JOB),
                **_BAD_QUERY, **_NO_JOB, **_CALLER_ERRORS}}},
        "/api/jobs/{job_id}/result/value": {"get": {
            "summary": "The result of a succeeded job as JSON, streamed whatever its size",
            "parameters": [job_id],
            "responses": {
                "200": {"description": "The result's JSON",
                        "content": {"application/json": {"schema": {}}}},
                "409": _error_response("The job has not succeeded (no_result)"),
                **_NO_JOB, **_CALLER_ERRORS}}},
        "/api/jobs/{job_id}/events": {"get": {
            "summary": "Server-Sent Events from Last-Event-ID (header or query) on; "
                       "?format=json for one page of the log",
            "parameters": [
                job_id,
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"},
                 "description": "Resume after this event id"},
                _query("last_event_id", _EVENT_ID,
                       "Resume after this event id (for EventSource)"),
                _query("after", _EVENT_ID, "Same as last_event_id"),
                _query("format", {"enum": ["json"]}, "json: one page of the log"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 10_000},
                       "With format=json: at most this many events (default 1000)"),
            ],
            "responses": {
                "200": {"description": "text/event-stream (id = event id, ending after "
                                       "the terminal event), or with format=json a page",
                        "content": {"text/event-stream": {"schema": {
                            "$ref": "#/components/schemas/JobStreamEvent"}},
                            "application/json": {
                            "schema": {"type": "object", "required": ["events"],
                                       "properties": {"events": {"type": "array", "items": {
                                           "$ref": "#/components/schemas/Event"}}}}}}},
                **_BAD_QUERY, **_NO_JOB, **_CALLER_ERRORS}}},
        "/api/events": {"get": {
            "summary": "Server-Sent Events of my jobs' status changes (resync, then job)",
            "responses": {"200": {"description": "text/event-stream, endless",
                                  "content": {"text/event-stream": {"schema": {
                                      "$ref": "#/components/schemas/FeedEvent"}}}},
                          **_CALLER_ERRORS}}},
        "/api/artifacts/{artifact_id}": {"get": {
            "summary": "Download an artifact",
            "parameters": [{"name": "artifact_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The bytes, with their content type",
                                  "content": {"*/*": {"schema": {}}}},
                          "404": _error_response("No such artifact (or another owner's)"),
                          **_CALLER_ERRORS}}},
        "/api/stats": {"get": {
            "summary": "Queues, running jobs, throughput, latency and workers of the cluster",
            "responses": {"200": _json_response("Figures", {
                "type": "object", "required": ["functions", "workers", "streams", "uptime"],
                "properties": {"functions": {"type": "object"},
                               "workers": {"type": "array"},
                               "streams": {"type": "integer"}, "uptime": {"type": "number"}}}),
                **_CALLER_ERRORS}}},
        "/api/session": {
            "post": {
                "summary": "Trade the API key (sent in the Authorization header, never the "
                           "URL) for the web UI's session cookie, good for reads",
                "responses": {"200": _json_response("The session (and a Set-Cookie)", {
                    "type": "object", "required": ["owner", "admin", "expires_at"],
                    "properties": {"owner": {"type": "string"}, "admin": {"type": "boolean"},
                                   "expires_at": _NULLABLE_NUMBER}}),
                    **_CALLER_ERRORS}},
            "delete": {"summary": "End the web UI's session (clears its cookie)",
                       "responses": {"204": {"description": "The cookie is cleared"}}},
        },
        "/healthz": {"get": {"summary": "Liveness: answers at once, reads nothing from the "
                                        "store (this process's figures for an admin key)",
                             "responses": {"200": _json_response("ok", {
                                 "type": "object", "required": ["status"],
                                 "properties": {"status": {"const": "ok"}}}),
                                 **_CALLER_ERRORS}}},
        "/readyz": {"get": {"summary": "Readiness: the store answers within 1 s and every "
                                       "function has a ready worker (per-function "
                                       "states; cluster figures for an admin key)",
                            "responses": {"200": _json_response("ready", {
                                "type": "object", "required": ["status"],
                                "properties": {"status": {"const": "ready"}}}),
                                "503": _error_response("store_unavailable: the store did "
                                                       "not answer within 1 s; not_ready: "
                                                       "a function has no ready worker"),
                                **_CALLER_ERRORS}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (an admin key)",
                             "responses": {"200": {"description": "Prometheus text format",
                                                   "content": {"text/plain": text}},
                                           "403": _error_response("Not an admin key"),
                                           **_CALLER_ERRORS}}},
        "/openapi.json": {"get": {"summary": "This document",
                                  "responses": {"200": _json_response("OpenAPI 3.1",
                                                                      {"type": "object"})}}},
    }


def openapi_document(app: App) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    submit_variants = []
    for name, spec in app.functions.items():
        schema_name = f"{name}_input"
        # pydantic refers to nested models and enums as "#/$defs/X", which means nothing
        # inside this document: they become components of their own, named per function.
        schema = spec.input_model.model_json_schema(
            ref_template=f"#/components/schemas/{name}.{{model}}")
        for model, definition in schema.pop("$defs", {}).items():
            inputs[f"{name}.{model}"] = definition
        inputs[schema_name] = schema
        submit_variants.append({
            "type": "object", "title": name, "required": ["function"],
            "properties": {"function": {"const": name}, "priority": _PRIORITY,
                           "input": {"$ref": f"#/components/schemas/{schema_name}"},
                           **_WEBHOOK_FIELDS},
        })
    submit = {"oneOf": submit_variants} if submit_variants else {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"genq: {app.name}", "version": "1"},
        "paths": _paths(submit),
        "components": {"schemas": {**_SCHEMAS, **inputs}},
    }
