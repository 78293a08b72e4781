"""Functions whose every word is a hostile payload, for tests/test_ui_security.py.

Descriptions, field titles and choices, streamed chunks, progress and log messages,
results, errors and artifact names and contents all try to run ``window.__pwned = 1``
in the web UI; served by a real ``genq serve tests/apps/hostile_app.py:app``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

import genq
from genq.demo.png import encode_rgb

app = genq.App("hostile")

# Each would set window.__pwned if it ever became markup, a link or a script.
IMG = "<img src=x onerror=window.__pwned=1>"
SCRIPT = "<script>window.__pwned=1</script>"
LINK = '<a href="javascript:window.__pwned=1">click me</a>'
MARKDOWN = "[click me](javascript:window.__pwned=1)"
SVG_TAG = "<svg onload=window.__pwned=1></svg>"
HOSTILE = f"{IMG} {SCRIPT} {LINK} {MARKDOWN} {SVG_TAG}"

# A name that tries to end the Content-Disposition header and add one of its own.
ARTIFACT_NAME = f'evil"\r\nSet-Cookie: pwned=1; {IMG}.html'
HTML_PAGE = f"<!doctype html><html><body><h1>artifact</h1>{SCRIPT}{IMG}</body></html>"
SVG_IMAGE = ('<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" '
             'onload="window.__pwned=1"><script>window.__pwned=1</script>'
             '<rect width="16" height="16" fill="red"/></svg>')
PNG = encode_rgb(4, 4, [bytes((255, 0, 0)) * 4] * 4)


@app.function(concurrency=4)
def hostile_stream(text: Annotated[str, Field(description=HOSTILE, title=SCRIPT)] = HOSTILE,
                   choice: Literal["<img src=x onerror=window.__pwned=1>",
                                   "<script>window.__pwned=1</script>"] =
                   "<script>window.__pwned=1</script>",
                   release: str = "",
                   progress: genq.Progress = genq.Progress()) -> Iterator[object]:
    """<img src=x onerror=window.__pwned=1> <script>window.__pwned=1</script>
    [click me](javascript:window.__pwned=1) and `<b>code</b>`.

    Streams the payloads back as text, JSON, progress, log lines and artifacts, then
    waits until the file ``release`` exists, so a test sees the page mid-stream.
    """
    progress(0.5, desc=HOSTILE)
    progress.log(HOSTILE, level="<img src=x onerror=window.__pwned=1>")
    yield text
    yield f" {choice}"
    yield {"html": HOSTILE, "link": "javascript:window.__pwned=1"}
    yield genq.File(HTML_PAGE.encode(), name=ARTIFACT_NAME, content_type="text/html")
    yield genq.Image(SVG_IMAGE.encode(), content_type="image/svg+xml", name=f"{IMG}.svg")
    yield genq.File(HTML_PAGE.encode(), name="page.txt", content_type="text/plain")
    yield genq.File(HTML_PAGE.encode(), name="bad-type",
                    content_type="text/html\r\nX-Injected: 1")
    yield genq.Image(PNG, name=f"{SCRIPT}.png")
    deadline = time.monotonic() + 60
    while release and not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    progress(1.0, desc=SCRIPT)


@app.function
def hostile_result(text: str = HOSTILE) -> dict[str, object]:
    """Return the payload as a string inside JSON."""
    return {"echo": text, "href": "javascript:window.__pwned=1"}


@app.function
def hostile_text(text: str = HOSTILE) -> str:
    """Return the payload as the (non-streamed) string result."""
    return text


@app.function
def hostile_error(message: str = HOSTILE) -> str:
    """Fail with the payload as the error message."""
    raise ValueError(message)


@app.function
def hostile_chat(message: str, history: list[tuple[str, str]] = []  # noqa: B006
                 ) -> Iterator[str]:
    """A chat whose replies are the payloads."""
    yield f"{message} | {HOSTILE}"
