"""Plumbing for the HTTP benchmarks (not a benchmark itself).

A server under test runs alone in a child process on a free loopback port: genq through
its own command (``genq serve``), a peer through ``python bench/_httpbench.py serve
FILE:ATTR --port P``, which calls ``uvicorn.run`` with the settings ``genq serve`` uses
(uvloop and httptools when installed, one process, one event loop). Load comes from other
child processes. The parent reads the server's CPU time and resident memory from /proc.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
GENQ = str(Path(sys.executable).with_name("genq"))


def raise_nofile(want: int = 65536) -> int:
    """Lift this process's open-file limit as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    db: Path | None
    log: Path

    @property
    def gc_log(self) -> Path:
        return self.log.with_name("gc.log")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return proc_cpu(self.pid)

    def rss_kib(self) -> int:
        return proc_rss_kib(self.pid)

    def cleanup(self) -> None:
        """Remove the server's temporary directory (database, logs); after it stopped."""
        import shutil

        shutil.rmtree(self.log.parent, ignore_errors=True)


def _wait_ready(server: Server, path: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited ({server.proc.returncode}):\n"
                               + server.log.read_text()[-3000:])
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + path, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} did not start in {timeout} s:\n"
                               + server.log.read_text()[-3000:])
        time.sleep(0.1)


@contextlib.contextmanager
def serve(name: str, target: str, *, genq: bool, heartbeat: float = 15.0,
          host: str = "127.0.0.1", ready_path: str | None = None,
          extra_env: dict[str, str] | None = None, kill: bool = False,
          startup_timeout: float = 60.0, store: str | None = None) -> Iterator[Server]:
    """Run one server process; ``target`` is FILE:ATTR. genq gets a fresh SQLite file,
    unless ``store`` names one (then the server runs no workers: see ``redis_cluster``).
    Ready once ``ready_path`` answers 200 (default: genq's /readyz, the peers' /healthz).

    Every benchmark client connects from 127.0.0.1, thousands of streams at once in
    bench_sse_idle.py: genq runs without its per-address connection cap, as it would
    behind a load balancer."""
    tmp = Path(tempfile.mkdtemp(prefix=f"genq-http-bench-{name}-"))
    port = free_port(host)
    db = tmp / "genq.sqlite3" if genq and store is None else None
    if genq:
        where = ["--db", str(db)] if store is None else ["--store", store, "--no-workers"]
        cmd = [GENQ, "serve", target, "--host", host, "--port", str(port), *where,
               "--heartbeat", str(heartbeat), "--log-level", "warning",
               "--max-connections-per-client", "0"]
    else:
        cmd = [PYTHON, str(BENCH / "_httpbench.py"), "serve", target, "--host", host,
               "--port", str(port)]
    log = tmp / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(extra_env or {})}
    if genq:
        env["GENQ_BENCH_GC_LOG"] = str(tmp / "gc.log")
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    server = Server(name, f"http://{host}:{port}", proc, db, log)
    try:
        _wait_ready(server, ready_path or ("/readyz" if genq else "/healthz"),
                    startup_timeout)
        yield server
    finally:
        stop(proc, kill=kill)


@contextlib.contextmanager
def redis_cluster(target: str, workers: int = 1) -> Iterator[str]:
    """A private redis-server (AOF, fsync every second) and ``workers`` ``genq worker``
    processes for ``target`` on it; yields the store URL for ``serve(store=...)``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from redis_server import RedisServer

    tmp = Path(tempfile.mkdtemp(prefix="genq-redis-bench-"))
    with RedisServer(tmp / "redis", appendfsync="everysec") as redis:
        procs = []
        try:
            for i in range(workers):
                with (tmp / f"worker-{i}.log").open("wb") as out:
                    procs.append(subprocess.Popen(
                        [GENQ, "worker", target, "--store", redis.url], stdout=out,
                        stderr=subprocess.STDOUT, cwd=ROOT))
            yield redis.url
        finally:
            for proc in procs:
                stop(proc)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


def stop(proc: subprocess.Popen[Any], timeout: float = 20.0, kill: bool = False) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_json(args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run ``python args...`` and parse the JSON on the last line of its output."""
    proc = subprocess.run([PYTHON, *args], capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def start_json(args: Sequence[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([PYTHON, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)


def collect_json(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"a load process ran past {timeout} s:\n{err[-3000:]}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"a load process failed ({proc.returncode}):\n{err[-4000:]}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def gc_pauses(path: Path, start: float = 0.0, end: float = float("inf")
              ) -> dict[str, float]:
    """Summary of the pauses logged by http_apps' GENQ_BENCH_GC_LOG between start and end
    (time.time()): count and longest full (generation 2) collection, total of all."""
    full: list[float] = []
    total = 0.0
    if path.exists():
        for line in path.read_text().splitlines():
            at, generation, pause = line.split()
            if start <= float(at) <= end:
                total += float(pause)
                if generation == "2":
                    full.append(float(pause))
    return {"full_gcs": len(full), "longest_full_gc": max(full, default=0.0),
            "gc_pause_total": total}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


class RawHTTP:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, for load generation.

    httpx costs ~0.5 ms of client CPU per request on this machine (and its connection
    pool grows quadratically with the connections it holds), so a load generator built on
    it runs out of CPU before a fast server does. This one costs a few tens of us: one
    connection, one request at a time, Content-Length or chunked bodies.
    """

    def __init__(self, host: str, port: int, local_ip: str | None = None) -> None:
        self.host, self.port, self.local_ip = host, port, local_ip
        self._reader: Any = None
        self._writer: Any = None

    async def request(self, method: str, path: str, body: bytes | None = None,
                      content_type: str = "application/json") -> tuple[int, bytes]:
        import asyncio

        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port,
                local_addr=None if self.local_ip is None else (self.local_ip, 0))
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + (body or b""))
        reader = self._reader
        header = await reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        chunked = close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(data[:-2])
            data = b"".join(parts)
        elif length is not None:
            data = await reader.readexactly(length)
        else:
            data = await reader.read()
            close = True
        if close:
            await self.aclose()
        return status, data

    async def aclose(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _serve_main(argv: list[str]) -> None:
    """``_httpbench.py serve FILE:ATTR [--host H] [--port P]``: a peer, as genq serves."""
    import argparse
    import importlib.util

    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    raise_nofile()
    file, _, attr = args.target.partition(":")
    path = Path(file).resolve()
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    asgi = getattr(module, attr.rstrip("()"))
    if attr.endswith("()"):
        asgi = asgi()
    # The same call as genq.cli.run_server makes.
    uvicorn.run(asgi, host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=15)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        _serve_main(sys.argv[2:])
    else:
        sys.exit("usage: _httpbench.py serve FILE:ATTR --port P")
