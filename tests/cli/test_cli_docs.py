"""The genq command as README.md and docs/api.md ("The genq command") show it, run as
written against the demo app on a live server: the download whose ``--url`` input used
to be taken for the server's address, and ``render`` with ``-i`` and ``-o``."""

from __future__ import annotations

import functools
import hashlib
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from genq.demo import app as demo_app
from tests.support.http_fixtures import FAST, GENQ_BIN, LiveServer, cli_env

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(demo_app, tmp_path_factory.mktemp("cli-docs") / "jobs.sqlite3",
                      FAST).start()
    yield live
    live.stop()


def genq_in(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GENQ_BIN), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, env=cli_env(**env), stdin=subprocess.DEVNULL)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """A real HTTP server on loopback serving ``m.gguf``; its URL and bytes."""
    root = tmp_path / "site"
    root.mkdir()
    blob = bytes(range(256)) * 1024
    (root / "m.gguf").write_bytes(blob)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/m.gguf", blob
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_model_takes_its_url_input(demo: LiveServer, files: tuple[str, bytes],
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/api.md: genq run --server URL download_model --url https://.../m.gguf (here
    a loopback file server, which the demo's download policy is told to allow)."""
    url, blob = files
    monkeypatch.setenv("GENQ_DOWNLOADS", str(tmp_path / "downloads"))
    monkeypatch.setenv("GENQ_DOWNLOAD_ALLOW_NETWORKS", "127.0.0.0/8")
    done = genq_in(tmp_path, "run", "--server", demo.url, "download_model", "--url", url,
                   "--sha256", hashlib.sha256(blob).hexdigest())
    assert done.returncode == 0, done.stderr
    assert "<html" not in done.stdout + done.stderr
    assert (tmp_path / "downloads" / "m.gguf").read_bytes() == blob


def test_render_with_inputs_before_and_after_the_function_name(demo: LiveServer,
                                                               tmp_path: Path) -> None:
    # genq run -i prompt="a red fox" render: the image saved under its own name.
    done = genq_in(tmp_path, "run", "-i", "prompt=a red fox", "render",
                   GENQ_URL=demo.url)
    assert done.returncode == 0, done.stderr
    saved = [p for p in tmp_path.iterdir() if p.suffix == ".png"]
    assert len(saved) == 1 and saved[0].read_bytes().startswith(PNG_SIGNATURE)
    # genq run -o fox.png render --prompt "a red fox": the same picture (a cached job).
    done = genq_in(tmp_path, "run", "-o", "fox.png", "render", "--prompt", "a red fox",
                   GENQ_URL=demo.url)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fox.png").read_bytes() == saved[0].read_bytes()
