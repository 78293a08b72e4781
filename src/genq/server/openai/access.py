"""What every ``/v1`` endpoint does around its own work: read a JSON object body within
the server's size limit, and answer errors in OpenAI's shape. The caller is found as on
the native API, by ``genq.server.caller`` (the same keys, wrong-key lockout and rate
limits).

OpenAI clients read ``{"error": {"message", "type", "param", "code"}}`` and pick their
exception class by status, so genq's errors keep their status here except where OpenAI
says otherwise: invalid input is 400 (``BadRequestError``), not genq's 422.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from genq.errors import (
    BadRequest,
    GenqError,
    InvalidInput,
    StoreUnavailable,
    TryLater,
)
from genq.jsoncodec import compact_json
from genq.server.caller import read_json_body

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "invalid_request_error",
               409: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error"}


class OpenAIError(Exception):
    """An error only the OpenAI surface has (an unknown model name, a field genq cannot
    serve), answered like any other."""

    def __init__(self, status: int, message: str, *, code: str,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def error_body(status: int, message: str, code: str, param: str | None = None
               ) -> dict[str, Any]:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"),
                      "param": param, "code": code}}


def as_openai(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) of an error raised while serving a ``/v1`` call."""
    if isinstance(exc, OpenAIError):
        return exc.status, error_body(exc.status, exc.message, exc.code, exc.param), {}
    assert isinstance(exc, GenqError)
    status = 400 if isinstance(exc, InvalidInput) else exc.status
    param = exc.detail.get("field")
    if isinstance(exc, InvalidInput) and exc.detail.get("errors"):
        param = str(exc.detail["errors"][0].get("field"))
    headers: dict[str, str] = {}
    if isinstance(exc, TryLater | StoreUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return status, error_body(status, exc.message, exc.code, param), headers


def json_response(data: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(compact_json(data), status, headers=headers,
                    media_type="application/json")


Endpoint = Callable[[Request], Awaitable[Response]]


def openai_endpoint(handler: Endpoint) -> Endpoint:
    """Answer the handler's genq and OpenAI errors in OpenAI's shape."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except (GenqError, OpenAIError) as exc:
            status, body, headers = as_openai(exc)
            return json_response(body, status, headers)

    return endpoint




async def read_body(request: Request, limit: int) -> dict[str, Any]:
    """The JSON object sent, refused past ``limit`` bytes or when not an object."""
    data = await read_json_body(request, limit)
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data
