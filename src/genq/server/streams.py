"""Event-stream responses, native or ``/v1``, counted the one way: every open stream is
in the ``genq_event_streams`` gauge and in its owner's count (``streams_by_owner``, what
limits streams per owner), kept alive by heartbeats, and given up on when a client
stops reading for 30 s."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from genq.server.caller import server_state

SEND_TIMEOUT = 30.0  # seconds a client may leave a frame unread before it is dropped


def counted_stream(request: Request, owner: str,
                   frames: AsyncIterator[ServerSentEvent | bytes], *,
                   first: ServerSentEvent | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """``frames`` as an SSE response of ``owner``, after ``first`` (e.g. a retry hint)."""
    state = server_state(request)

    async def counted() -> AsyncIterator[ServerSentEvent | bytes]:
        state.metrics.stream_opened()
        state.streams_by_owner[owner] += 1
        try:
            if first is not None:
                yield first
            async for frame in frames:
                yield frame
        finally:
            state.metrics.stream_closed()
            state.streams_by_owner[owner] -= 1
            if not state.streams_by_owner[owner]:
                del state.streams_by_owner[owner]

    return EventSourceResponse(counted(), ping=state.settings.heartbeat,
                               headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                        **(headers or {})}, send_timeout=SEND_TIMEOUT)
