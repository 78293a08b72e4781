"""The OpenAPI document: the fixed API plus one submit schema per registered function."""

from __future__ import annotations

from typing import Any

from genq.app import App

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def openapi_document(app: App) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    submit_variants = []
    for name, spec in app.functions.items():
        schema_name = f"{name}_input"
        inputs[schema_name] = spec.input_schema()
        submit_variants.append({
            "type": "object", "title": name, "required": ["function"],
            "properties": {"function": {"const": name}, "priority": {"type": "integer"},
                           "input": {"$ref": f"#/components/schemas/{schema_name}"}},
        })
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    errors = {"401": _error_response("API key missing or invalid"),
              "404": _error_response("Unknown job")}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"genq: {app.name}", "version": "1"},
        "paths": {
            "/api/functions": {"get": {"summary": "Registered functions and input schemas",
                                       "responses": {"200": {"description": "Functions"}}}},
            "/api/jobs": {
                "post": {
                    "summary": "Submit a job",
                    "parameters": [{"name": "Idempotency-Key", "in": "header",
                                    "schema": {"type": "string"}}],
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"oneOf": submit_variants} if submit_variants else {}}}},
                    "responses": {
                        "201": {"description": "Queued (or answered from the cache)"},
                        "200": {"description": "An existing job: idempotent replay or "
                                               "identical job in flight"},
                        "400": _error_response("Malformed body"),
                        "404": _error_response("Unknown function"),
                        "409": _error_response("Idempotency key reused for other input"),
                        "413": _error_response("Body too large"),
                        "422": _error_response("Invalid input (names the field)"),
                        "429": _error_response("Queue full; see Retry-After"),
                    },
                },
                "get": {"summary": "List my jobs (function, status, limit, before)",
                        "responses": {"200": {"description": "Jobs, newest first"}}},
            },
            "/api/jobs/{job_id}": {"get": {"summary": "A job", "parameters": [job_id],
                                           "responses": {"200": {"description": "Job"},
                                                         **errors}}},
            "/api/jobs/{job_id}/cancel": {"post": {"summary": "Cancel a job",
                                                   "parameters": [job_id],
                                                   "responses": {"200": {"description": "Job"},
                                                                 **errors}}},
            "/api/jobs/{job_id}/result": {"get": {
                "summary": "Wait up to ?wait= seconds for the job to finish",
                "parameters": [job_id], "responses": {
                    "200": {"description": "Terminal job with result or error"},
                    "202": {"description": "Not finished yet"}, **errors}}},
            "/api/jobs/{job_id}/events": {"get": {
                "summary": "Server-Sent Events from Last-Event-ID (header or query) on",
                "parameters": [job_id], "responses": {
                    "200": {"description": "text/event-stream; id = event id"}, **errors}}},
            "/api/artifacts/{artifact_id}": {"get": {"summary": "Download an artifact",
                                                     "responses": {"200": {"description":
                                                                           "The bytes"}}}},
            "/healthz": {"get": {"summary": "Liveness",
                                 "responses": {"200": {"description": "ok"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "text"}}}},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
            **inputs,
        }},
    }
