"""Slowloris against a real ``genq serve``: many half-sent requests from one address,
then legitimate requests from another, under the usual descriptor limit.

    .venv/bin/python bench/bench_slowloris.py [--attackers 1100] [--nofile 1024]
                                               [-- EXTRA GENQ SERVE OPTIONS]

The server runs with ``ulimit -n NOFILE``; ATTACKERS sockets from 127.0.0.1 each send
half a request line and stall; then, from 127.0.0.2, one request a second for a few
seconds. Printed: how many attackers the server still holds, and each legitimate
request's status and time (or its error). Never pass/fail: docs/api.md, "Slow clients",
and tests/api/test_slow_clients.py hold the promises.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
GENQ = str(Path(sys.executable).parent / "genq")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def still_open(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has neither closed nor answered."""
    count = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            count += not sock.recv(1)  # b"" is a close; data is an answer
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attackers", type=int, default=1100)
    parser.add_argument("--nofile", type=int, default=1024)
    parser.add_argument("--seconds", type=int, default=14)
    args, extra = parser.parse_known_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the attacker's own sockets
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="genq-slowloris-"))
    cmd = [GENQ, "serve", "bench/http_apps.py:app", "--port", str(port), "--db",
           str(tmp / "genq.sqlite3"), "--log-level", "critical", *extra]
    server = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard)))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        attackers = []
        for _ in range(args.attackers):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                            source_address=("127.0.0.1", 0))
            sock.sendall(b"GET /api/jobs HT")
            attackers.append(sock)
        print(f"{' '.join(cmd[2:])}\nulimit -n {args.nofile}: {args.attackers} half-sent "
              f"requests from 127.0.0.1")
        with httpx.Client(timeout=3, transport=httpx.HTTPTransport(
                local_address="127.0.0.2")) as neighbour:
            for second in range(args.seconds):
                started = time.monotonic()
                try:
                    status = str(neighbour.get(f"{url}/api/jobs").status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                took = (time.monotonic() - started) * 1000
                print(f"  t={second:2d} s: attackers held {still_open(attackers):4d}; "
                      f"a request from 127.0.0.2: {status} in {took:.0f} ms")
                time.sleep(max(0.0, 1 - (time.monotonic() - started)))
        for sock in attackers:
            sock.close()
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
