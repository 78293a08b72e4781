"""Who is calling and what they sent: the first steps of every request, native (``/api``)
or OpenAI-compatible (``/v1``), written once so both surfaces lock out wrong keys, charge
rate limits and bound bodies alike.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from genq.errors import BadRequest, PayloadTooLarge
from genq.server.auth import Caller, WrongApiKey
from genq.server.ratelimit import Rate

if TYPE_CHECKING:
    from genq.server.api import ServerState

# Wrong API keys one client address may send: ten, then one a minute (answered 429).
AUTH_FAILURES = Rate(1 / 60, burst=10)


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.genq
    return state


def authenticate(request: Request) -> tuple[ServerState, Caller]:
    """Who is calling, charged one request against their key's rate limit.

    The key is checked first, so a valid key is never refused for what others at its
    address did. Only a wrong key counts toward the address's lockout (a request with
    no key is answered 401 and not counted), and once an address is locked out its wrong
    keys are answered 429 instead of 401."""
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


async def read_json_body(request: Request, limit: int) -> Any:
    """The JSON value sent, refused (413) past ``limit`` bytes and (400) when not JSON."""
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
        return json.loads(body or b"{}", parse_constant=_not_json)
    except ValueError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:  # json recurses per level: "[[[[...]]]]" exhausts the stack
        raise BadRequest("the request body is nested too deeply") from None


def _not_json(name: str) -> Any:
    """NaN and Infinity are not JSON; accepted, they would come back in job views as
    tokens no JSON parser reads."""
    raise ValueError(f"{name} is not a JSON value")
