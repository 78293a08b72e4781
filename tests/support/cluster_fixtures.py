"""Real genq processes around a real Redis: front ends, workers, and what kills them.

A ``Cluster`` starts ``genq serve --no-workers`` and ``genq worker`` subprocesses for
``apps.cluster_app:app`` against one store URL, waits until each is ready (a front end
answers /readyz; a worker has reported itself to the store), keeps their output in log
files for failure messages, and kills, pauses and resumes them like an operator (or the
OOM killer) would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import redis

from tests.support.http_fixtures import cli_env, free_port, wait_until

APP = "apps.cluster_app:app"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, like a crash or the OOM killer."""
        self.signal(signal.SIGKILL)
        self.popen.wait(10)


@dataclass
class Cluster:
    store_url: str
    logs: Path
    procs: list[Proc] = field(default_factory=list)
    app: str = APP  # what the processes serve, as "module:attribute" under tests/

    def _spawn(self, name: str, args: list[str], port: int | None = None) -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        log_file = log_path.open("wb")
        popen = subprocess.Popen([sys.executable, "-m", "genq.cli", *args],
                                 stdout=log_file, stderr=subprocess.STDOUT,
                                 env=cli_env(), cwd=self.logs)
        proc = Proc(name, popen, log_path, log_file, port)
        self.procs.append(proc)
        return proc

    def front_end(self, name: str, *extra: str) -> Proc:
        port = free_port()
        proc = self._spawn(name, ["serve", self.app, "--store", self.store_url, "--no-workers",
                                  "--port", str(port), "--heartbeat", "0.5",
                                  "--log-level", "warning", *extra], port)

        def healthy() -> bool:
            if proc.popen.poll() is not None:
                raise AssertionError(f"{name} exited:\n{proc.log()}")
            try:
                return httpx.get(f"{proc.url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 60, 0.1, what=f"{name} to answer /readyz")
        return proc

    def worker(self, name: str, *extra: str) -> Proc:
        proc = self._spawn(name, ["worker", self.app, "--store", self.store_url, *extra])

        def reported() -> bool:
            if proc.popen.poll() is not None:
                raise AssertionError(f"{name} exited:\n{proc.log()}")
            return proc.pid in self.worker_pids()

        wait_until(reported, 60, 0.1, what=f"{name} to report to the store")
        return proc

    def worker_pids(self) -> set[int]:
        """The pids of the workers the store currently knows of (any machine)."""
        # Without genq's own query parameters (retry_for...), which redis-py refuses.
        with redis.Redis.from_url(self.store_url.split("?", 1)[0]) as r:
            reports = r.hgetall("genq:workers")
        return {json.loads(v)["pid"] for v in reports.values()}

    def close(self) -> None:
        for proc in self.procs:
            proc.signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            proc.signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            proc.log_file.close()
