"""A real HTTP file server on loopback that drops connections mid-body, for download tests.

It honours ``Range`` + ``If-Range`` (unless ``ranges=False``) and counts every body byte
it sends, so tests can compare what a resuming client cost against starting over.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FlakyFiles:
    files: dict[str, bytes]
    drop_probability: float = 0.0  # chance that a response is cut short
    ranges: bool = True
    seed: int = 1
    etag_suffix: str = ""  # change it to make the "same" URL a different file
    chunk_delay: float = 0.0  # seconds between 64 KiB pieces (a slow link)
    sent: int = 0  # body bytes sent over all requests
    requests: int = 0
    dropped: int = 0
    range_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def etag(self, name: str) -> str:
        return f'"{name}-{len(self.files[name])}{self.etag_suffix}"'


class _Handler(BaseHTTPRequestHandler):
    state: FlakyFiles
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        state = self.state
        name = self.path.lstrip("/")
        body = state.files.get(name)
        if body is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        use_range = (state.ranges and match is not None
                     and (if_range is None or if_range == state.etag(name)))
        with state.lock:
            state.requests += 1
            if use_range:
                state.range_requests += 1
            drop = bool(state.drop_probability) and state.random.random() < state.drop_probability
            fraction = state.random.random()
        if use_range and match is not None:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("ETag", state.etag(name))
        if state.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        # A dropped response is cut somewhere inside what this request asked for.
        end = start + max(1, int(fraction * (len(body) - start))) if drop else len(body)
        view = memoryview(body)[start:end]
        for i in range(0, len(view), 64 * 1024):
            piece = view[i:i + 64 * 1024]
            self.wfile.write(piece)
            if state.chunk_delay:
                time.sleep(state.chunk_delay)
            with state.lock:
                state.sent += len(piece)
        if end < len(body):
            with state.lock:
                state.dropped += 1
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)


@contextmanager
def serve_files(state: FlakyFiles) -> Iterator[str]:
    """Serve ``state.files`` on a free loopback port; yields the base URL."""
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
