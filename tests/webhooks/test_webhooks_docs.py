"""The receiver of docs/webhooks.md runs as written: read from the file, started in a
fresh interpreter with GENQ_WEBHOOK_SECRET and PORT, and fed by a genq server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import standardwebhooks

from genq.webhooks.signing import signed_headers
from tests.support.http_fixtures import ServerFactory, cli_env, free_port, wait_until
from tests.webhooks.test_webhooks import FAST_HOOKS, SECRET

ROOT = Path(__file__).resolve().parents[2]


def receiver_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs/webhooks.md").read_text(),
                        flags=re.S)
    [receiver] = [b for b in blocks if "ThreadingHTTPServer" in b]
    return receiver


def test_the_docs_receiver_verifies_and_deduplicates(make_server: ServerFactory,
                                                     tmp_path: Path) -> None:
    script = tmp_path / "receiver.py"
    script.write_text(receiver_example())
    port = free_port()
    env = cli_env(GENQ_WEBHOOK_SECRET=SECRET, PORT=str(port))
    # standardwebhooks from wherever this interpreter has it (the venv, or a path).
    env["PYTHONPATH"] += os.pathsep + str(Path(standardwebhooks.__file__).parents[1])
    server = make_server(webhooks=FAST_HOOKS)
    with subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_until(lambda: _answers(url), what="the docs receiver to listen")
            job = httpx.post(f"{server.url}/api/jobs", json={
                "function": "add", "input": {"x": 40, "y": 2}, "webhook": url}).json()
            wait_until(lambda: httpx.get(f"{server.url}/api/jobs/{job['id']}/webhooks")
                       .json()["webhook"]["done"], what="delivered")
            report = httpx.get(f"{server.url}/api/jobs/{job['id']}/webhooks").json()
            assert report["attempts"][-1]["status"] == 204
            # A forged delivery is refused 401; one sent twice is handled once.
            forged = httpx.post(url, content=b'{"type":"job.completed"}', headers={
                "webhook-id": "msg_x", "webhook-timestamp": "1",
                "webhook-signature": "v1,AAAA"})
            assert forged.status_code == 401
            body = '{"type":"job.completed","data":{"id":"again","status":"failed","result":null}}'
            for _ in range(2):
                again = httpx.post(url, content=body, headers=signed_headers(
                    SECRET, "msg_again", body, time.time()))
                assert again.status_code == 204
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=10)
    assert out.splitlines() == [f"job.completed {job['id']} succeeded 42",
                                "job.completed again failed None"], err


def _answers(url: str) -> bool:
    try:
        return httpx.post(url, content=b"{}", headers={"webhook-id": "probe"}).status_code == 401
    except httpx.TransportError:
        return False
