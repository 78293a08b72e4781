"""Models in real genq processes: one copy per device replica, jobs spread over them,
teardown when the process is told to stop (SIGTERM), and devices this machine does not
have refused at start-up with a sentence naming them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.http_fixtures import cli_env, free_port, wait_until

APP = "apps.replica_app:app"


def _lines(log: Path, prefix: str) -> list[str]:
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if line.startswith(prefix)]


def test_replicas_load_their_own_copy_share_the_jobs_and_tear_down_on_sigterm(
        tmp_path: Path) -> None:
    log, port = tmp_path / "model.log", free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "genq.cli", "serve", APP, "--db", str(tmp_path / "j.db"),
         "--port", str(port), "--devices", "cpu,cpu", "--log-level", "warning"],
        env=cli_env(MODEL_APP_LOG=str(log)), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: len(_lines(log, "setup ")) == 2, timeout=30,
                   what="both replicas to load their model")
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            wait_until(lambda: _answers(http), what="the server to listen")
            # Two jobs of 1 s at once on a function of concurrency 1: only two replicas
            # run them side by side, each with its own copy.
            ids = [http.post("/api/jobs", json={"function": "where", "input": {
                "seconds": 1.0}}).json()["id"] for _ in range(2)]
            results = [http.get(f"/api/jobs/{i}/result", params={"wait": 20}).json()
                       for i in ids]
        copies = {line.split(" ", 1)[1] for line in _lines(log, "setup ")}
        assert {r["result"] for r in results} == copies
        assert len(copies) == 2
        assert _lines(log, "teardown ") == []
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert proc.returncode in (0, -signal.SIGTERM), output
        assert {line.split(" ", 1)[1] for line in _lines(log, "teardown ")} == copies
        # Teardown comes after the last job, never under it.
        lines = log.read_text().splitlines()
        assert max(i for i, line in enumerate(lines) if line.startswith("job ")) < min(
            i for i, line in enumerate(lines) if line.startswith("teardown "))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _answers(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def test_a_device_this_machine_lacks_is_refused_at_start(tmp_path: Path) -> None:
    for devices, expected in [("cuda:7", "device cuda:7: torch sees 0 CUDA device(s)"),
                              ("gpu0", "unknown device 'gpu0'")]:
        done = subprocess.run(
            [sys.executable, "-m", "genq.cli", "worker", APP, "--db",
             str(tmp_path / "j.db"), "--devices", devices],
            env=cli_env(MODEL_APP_LOG=str(tmp_path / "m.log")), cwd=tmp_path,
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert expected in " ".join(done.stderr.split()), done.stderr
    assert not (tmp_path / "m.log").exists()  # nothing was loaded
