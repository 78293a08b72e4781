"""Security headers on every response, and how an artifact may be served.

Job input and output are untrusted: a function echoes prompts, streams model text and
stores files users uploaded. The web UI never turns them into markup (app.js builds the
DOM with text nodes only); these headers are the second line of defence:

- ``X-Content-Type-Options: nosniff`` so a browser never guesses HTML in JSON or text;
- a ``Content-Security-Policy`` on every response: the UI's own (``ui.py``: scripts and
  styles from this origin only, no inline code), and for everything else a policy that
  lets nothing load or run, should a response ever be opened as a page;
- ``Referrer-Policy: no-referrer`` (URLs may carry ``?api_key=``) and framing refused.

Artifacts are bytes a function chose, with a content type it chose. Only media types a
browser shows without running code (raster images, audio, video, plain text, JSON) are
served ``inline``; anything else (HTML, SVG, XML, scripts, unknown) is an ``attachment``,
and every artifact response carries a ``sandbox`` CSP as well.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# For responses that are data, not pages (the API, SSE, metrics, static assets).
API_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
# An artifact opened in a tab: no script (sandbox without allow-scripts, opaque origin),
# nothing loaded but itself. style-src lets a browser's own media viewer style the page.
ARTIFACT_CSP = ("sandbox; default-src 'none'; img-src 'self'; media-src 'self'; "
                "style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'")

_DEFAULT_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", API_CSP.encode()),
)

# Shown in a tab as they are: a browser renders these without running any code.
INLINE_TYPES = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp",
    "text/plain", "text/csv", "application/json", "application/octet-stream",
})
INLINE_PREFIXES = ("audio/", "video/")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_UNSAFE_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")


class SecurityHeaders:
    """ASGI middleware: adds each default header a response did not set itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in _DEFAULT_HEADERS if n not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class SecureStarlette(Starlette):
    """A Starlette app with ``SecurityHeaders`` outermost: even the 500 answer of an
    unhandled error (sent by Starlette's own outermost middleware) carries the headers."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def artifact_media_type(content_type: str) -> str:
    """The declared content type if it is a well-formed header value, else octet-stream."""
    essence = content_type.split(";", 1)[0].strip().lower()
    if not _MEDIA_TYPE.fullmatch(essence) or not _PRINTABLE.fullmatch(content_type):
        return "application/octet-stream"
    return content_type.strip()


def served_inline(media_type: str) -> bool:
    essence = media_type.split(";", 1)[0].strip().lower()
    return essence in INLINE_TYPES or essence.startswith(INLINE_PREFIXES)


def content_disposition(disposition: str, name: str) -> str:
    """``inline``/``attachment`` with the file name quoted per RFC 6266: a plain ASCII
    ``filename`` (quotes, backslashes, controls replaced) and, when the name needs it, the
    exact UTF-8 name as ``filename*``. Nothing in a name can end the header or add one."""
    clean = _UNSAFE_NAME_CHARS.sub("_", name).strip() or "artifact"
    fallback = "".join(c if " " <= c <= "~" and c not in '"%' else "_" for c in clean)
    value = f'{disposition}; filename="{fallback}"'
    if fallback != clean:
        value += f"; filename*=UTF-8''{quote(clean, safe='')}"
    return value


def artifact_headers(content_type: str, name: str) -> tuple[str, dict[str, str]]:
    """The media type and headers to serve an artifact with (see the module docstring)."""
    media_type = artifact_media_type(content_type)
    disposition = "inline" if served_inline(media_type) else "attachment"
    return media_type, {"Content-Disposition": content_disposition(disposition, name),
                        "Content-Security-Policy": ARTIFACT_CSP}
