"""A private ``redis-server`` for tests and benchmarks: its own free loopback port and its
own data directory, never the machine's shared server on 6379.

    with RedisServer(tmp_path / "redis") as redis:      # appendonly yes, fsync always
        url = redis.url                                  # redis://127.0.0.1:<port>/0
        redis.kill()                                     # SIGKILL, like a crash
        redis.start()                                    # same port, same data dir

``scripts/setup.sh`` installs Debian's redis-server when it is missing.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis-server is not installed: run scripts/setup.sh")
    return found


class RedisServer:
    """One redis-server process. ``appendfsync``: "always" (no acknowledged write is
    lost), "everysec" (Redis's default with AOF) or None (no persistence at all)."""

    def __init__(self, data_dir: Path, *, appendfsync: str | None = "always",
                 port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.appendfsync = appendfsync
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        persistence = (["--appendonly", "no"] if self.appendfsync is None else
                       ["--appendonly", "yes", "--appendfsync", self.appendfsync])
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.data_dir), "--save", "", *persistence,
                "--protected-mode", "yes", "--daemonize", "no",
                "--logfile", str(self.data_dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.data_dir / "redis.log")
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server did not start on {self.port}:\n{tail}")
            time.sleep(0.02)
        return self

    def _answers(self) -> bool:
        """True once the server answers PING and has loaded its data (not LOADING)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: what a crash or a power cut does to the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

