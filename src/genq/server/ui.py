"""The web UI: static assets shipped in the package, served as a single-page app.

``index.html`` answers every UI path (``/``, ``/functions/{name}``, ``/jobs``,
``/jobs/{id}``, ``/dashboard``); the browser's history API does the rest. The page talks
only to the public REST + SSE API, so it needs no server-side state and no build step.
Asset URLs carry a hash of their content, so an upgrade is never served from a stale cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
UI_PATHS = ("/", "/functions/{name}", "/jobs", "/jobs/{job_id}", "/dashboard")

# Everything the page loads comes from this origin; images may also be data: (upload
# previews) or blob: URLs. No inline script or style, no third-party request. Trusted
# Types with no policy: any HTML string sink (innerHTML, document.write...) throws, so
# job output can never become markup even through a future slip in app.js.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)


def _asset_version() -> str:
    digest = hashlib.sha256()
    for name in ("app.js", "app.css"):
        digest.update((STATIC / name).read_bytes())
    return digest.hexdigest()[:12]


def ui_routes() -> list[BaseRoute]:
    """Routes of the web UI: ``/static/*`` and index.html on each UI path."""
    html = (STATIC / "index.html").read_text(encoding="utf-8").replace(
        "__ASSET_VERSION__", _asset_version())
    # nosniff, Referrer-Policy and the rest come from security.SecurityHeaders
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": CONTENT_SECURITY_POLICY}

    async def index(request: Request) -> Response:
        return HTMLResponse(html, headers=headers)

    routes: list[BaseRoute] = [Mount("/static", app=StaticFiles(directory=STATIC),
                                     name="static")]
    routes += [Route(path, index, methods=["GET", "HEAD"]) for path in UI_PATHS]
    return routes
