"""What the CLI tests share: ``genq`` as a subprocess, and ``genq serve`` running."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from tests.support.http_fixtures import GENQ_BIN, cli_env, serves, wait_until


def genq(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GENQ_BIN), *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(**env), stdin=subprocess.DEVNULL)


@dataclass
class Served:
    """A ``genq serve`` subprocess answering /readyz; ``stderr`` once it has stopped."""

    proc: subprocess.Popen[str]
    url: str
    http: httpx.Client
    stderr: str = ""


@contextlib.contextmanager
def serving(port: int, *args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """Run ``genq serve ARGS`` (which must listen on ``port``) until the block ends, then
    stop it with SIGTERM as a service manager would."""
    proc = subprocess.Popen([str(GENQ_BIN), "serve", *args], env=env or cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    served = Served(proc, url, httpx.Client(base_url=url, timeout=5))
    try:
        def healthy() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                return serves(served.http.get("/readyz"))
            except httpx.TransportError:
                return False

        wait_until(healthy, 30, what="genq serve to answer")
        yield served
    finally:
        served.http.close()
        proc.send_signal(signal.SIGTERM)
        try:
            _, served.stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
