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

Who may talk to the server at all (``ExposureGuard``, inside the headers): a server on
loopback without API keys trusts whoever reaches it, and a web page in the user's
browser reaches it too. Two attacks are refused, as local AI servers learned to
(Ollama's ``OLLAMA_ORIGINS``, Jupyter's ``allow_origin`` and ``local_hostnames``):

- *DNS rebinding*: a page of ``rebind.evil.example`` re-resolves its own name to
  127.0.0.1 and reads the API as same-origin. Its requests carry ``Host:
  rebind.evil.example``, so every request whose Host is not a loopback name, the
  address the server listens on, or a name in ``--allowed-hosts`` is refused (403
  ``host_not_allowed``). The probes ``/healthz`` and ``/readyz`` answer any Host: load
  balancers and Kubernetes ask them by IP address.
- *Cross-site requests*: a page's ``fetch("http://127.0.0.1:7860/api/jobs", {method:
  "POST", body})`` with a "simple" content type is sent without a CORS preflight. A
  state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` (else the origin
  of its ``Referer``) is neither the server's own nor in ``--allowed-origins`` is
  refused (403 ``origin_not_allowed``). A request with neither header (curl, genq's
  clients, other servers) is not a browser's and passes.

Starlette's ``TrustedHostMiddleware`` is not used for the first: it answers plain-text
400s and its patterns cannot say "any 127.x address".
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genq.errors import GenqError, HostNotAllowed, OriginNotAllowed

# For responses that are data, not pages (the API, SSE, metrics, static assets).
API_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
# An artifact opened in a tab: no script (sandbox without allow-scripts, opaque origin),
# nothing loaded but itself. style-src lets a browser's own media viewer style the page.
ARTIFACT_CSP = ("sandbox; default-src 'none'; img-src 'self'; media-src 'self'; "
                "style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'")

DEFAULT_HEADERS = (
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
                headers += [(n, v) for n, v in DEFAULT_HEADERS if n not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PROBES = frozenset({"/healthz", "/readyz"})  # answered whatever the Host


def is_loopback(host: str) -> bool:
    """``localhost``, any 127.x address or ``::1`` (``host`` without brackets or port)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str | None:
    """The name in a ``Host`` header value (lowercase, IPv6 without brackets, no port),
    or None when it is not one."""
    if "@" in host or "/" in host:
        return None
    try:
        parts = urlsplit(f"//{host}")
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return None
    return parts.hostname or None


def _host_pattern(pattern: str) -> str:
    """An ``--allowed-hosts`` entry as compared: ``*``, ``*.example.com``, or a name."""
    pattern = pattern.strip().lower()
    if pattern == "*" or pattern.startswith("*."):
        return pattern
    try:
        return str(ipaddress.ip_address(pattern.strip("[]")))
    except ValueError:
        return host_name(pattern) or pattern


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of an Origin or Referer value, lowercase; ``null`` for
    one that names none (``Origin: null``)."""
    parts = urlsplit(url.strip().lower())
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "null"


def _origin_entry(entry: str) -> str:
    """An ``--allowed-origins`` entry as compared: ``*``, ``null`` or an origin."""
    entry = entry.strip().lower()
    if entry in ("*", "null"):
        return entry
    origin = _origin(entry)
    if origin == "null":
        raise ValueError(f"{entry!r} is not an origin: scheme://host[:port], null or *")
    return origin


@dataclass(frozen=True)
class Exposure:
    """The Host names and web-page origins the server answers besides its own (see the
    module docstring). ``hosts``: names, ``*.example.com`` or ``*`` (any); ``origins``:
    ``scheme://host[:port]`` or ``*`` (any)."""

    hosts: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts", tuple(_host_pattern(h) for h in self.hosts if h))
        object.__setattr__(self, "origins", tuple(
            _origin_entry(o) for o in self.origins if o.strip()))

    def host_allowed(self, host: str) -> bool:
        name = host_name(host)
        if name is None:
            return False
        return is_loopback(name) or any(
            p == "*" or p == name or (p.startswith("*.") and name.endswith(p[1:]))
            for p in self.hosts)

    def origin_allowed(self, origin: str, host: str) -> bool:
        """``origin`` (normalised by ``_origin``) is the server's own (the same host and
        port as the request's Host; the scheme a proxy may have changed) or listed."""
        return (origin.partition("://")[2] == host.lower() or "*" in self.origins
                or origin in self.origins)

    def refusal(self, scope: Scope) -> GenqError | None:
        """Why this request is refused, or None."""
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if scope["path"] not in PROBES and not self.host_allowed(host):
            return HostNotAllowed(
                f"this server does not answer to the host name {host!r}: a guard against "
                "DNS rebinding (a web page reaching a local server under its own name). "
                "If the name is yours, add it with --allowed-hosts or $GENQ_ALLOWED_HOSTS",
                host=host)
        if scope["method"] not in STATE_CHANGING:
            return None
        declared = headers.get("origin") or headers.get("referer")
        if declared is None:
            return None  # not sent by a browser
        origin = _origin(declared)
        if self.origin_allowed(origin, host):
            return None
        return OriginNotAllowed(
            f"a web page at {origin} may not change anything on this server: a guard "
            "against cross-site requests. If the page is yours, add its origin with "
            "--allowed-origins or $GENQ_ALLOWED_ORIGINS", origin=origin)


class ExposureGuard:
    """ASGI middleware: refuses what ``Exposure.refusal`` names, with genq's JSON error."""

    def __init__(self, app: ASGIApp, exposure: Exposure) -> None:
        self.app = app
        self.exposure = exposure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = self.exposure.refusal(scope) if scope["type"] == "http" else None
        if error is None:
            await self.app(scope, receive, send)
            return
        response = JSONResponse({"error": error.to_dict()}, error.status)
        await response(scope, receive, send)


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
