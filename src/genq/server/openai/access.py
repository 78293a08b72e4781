"""What every ``/v1`` endpoint does before and after its own work: find the caller (the
same keys, wrong-key throttling and per-key rate limits as the native API), read the
JSON body within the server's size limit, and answer errors in OpenAI's shape.

OpenAI clients read ``{"error": {"message", "type", "param", "code"}}`` and pick their
exception class by status, so genq's errors keep their status here except where OpenAI
says otherwise: invalid input is 400 (``BadRequestError``), not genq's 422.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from genq.errors import (
    BadRequest,
    GenqError,
    InvalidInput,
    PayloadTooLarge,
    StoreUnavailable,
    TryLater,
)
from genq.jsoncodec import compact_json
from genq.server.auth import Caller, WrongApiKey
from genq.server.ratelimit import Rate

if TYPE_CHECKING:
    from genq.server.api import ServerState

# As the native API's AUTH_FAILURES (server/api.py): ten wrong keys, then one a minute.
AUTH_FAILURES = Rate(1 / 60, burst=10)

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


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.genq
    return state


def authenticate(request: Request) -> tuple[ServerState, Caller]:
    """The caller, charged one request against their key's rate limit; a wrong key is
    counted against its address (as ``server/api.py`` does for the native API)."""
    state = server_state(request)
    try:
        caller = state.settings.keys.caller_for(request)
    except WrongApiKey:
        address = f"addr:{request.client.host if request.client else '?'}"
        state.limiter.charge(address, AUTH_FAILURES, "requests with a wrong API key")
        raise
    rate = caller.rate or state.settings.rate_limit
    if rate is not None:
        state.limiter.charge(f"key:{caller.key_id}", rate)
    return state, caller


async def read_body(request: Request, limit: int) -> dict[str, Any]:
    """The JSON object sent, refused past ``limit`` bytes or when not an object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is {declared} bytes; the limit is {limit}",
                              limit=limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes",
                                  limit=limit)
    try:
        data = json.loads(body or b"{}", parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
