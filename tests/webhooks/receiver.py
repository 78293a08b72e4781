"""A real webhook receiver for tests: an HTTP server on a free loopback port, in a thread,
recording every delivery and answering with the statuses it is told to (``answers``,
``refused_types``).

    with Receiver() as receiver:
        receiver.answers = [500, 500, "hang", 200]  # then 200 for every later request
        ...receiver.url...
        receiver.deliveries  # [Delivery(headers, body, payload, at)], in arrival order
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def type(self) -> str:
        return str(self.payload["type"])


class Receiver:
    """``answers``: what the next requests get, in order (a status, or ``"hang"``: no
    answer for ``hang_for`` s); 200 once they run out. Every request is recorded."""

    def __init__(self, hang_for: float = 5.0) -> None:
        self.answers: list[int | str] = []
        self.refused_types: set[str] = set()  # deliveries of these types always get 500
        self.hang_for = hang_for
        self.requests: list[Delivery] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                delivery = Delivery({k.lower(): v for k, v in self.headers.items()}, body,
                                    time.time())
                with receiver._lock:
                    receiver.requests.append(delivery)
                    answer = receiver.answers.pop(0) if receiver.answers else 200
                    if delivery.type in receiver.refused_types:
                        answer = 500
                if answer == "hang":
                    receiver._released.wait(receiver.hang_for)
                    return
                self.send_response(int(answer))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def of_job(self, job_id: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.requests if d.payload["data"]["id"] == job_id]

    def delivered(self, job_id: str) -> list[Delivery]:
        """The job's deliveries, once each (the last request of each webhook-id), in
        the order they were first received."""
        seen: dict[str, Delivery] = {}
        for delivery in self.of_job(job_id):
            seen[delivery.id] = delivery
        return list(seen.values())

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
