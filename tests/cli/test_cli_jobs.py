"""The job commands' contract, with the real ``genq`` as a subprocess: inputs and options
never collide, a server that is not genq is one line, Ctrl-C means what each command is
for, a server restart is ridden out, and a second process on a SQLite store is refused
in one line (exit 8)."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps import cli_app
from tests.cli.support import genq, serving
from tests.support.http_fixtures import (
    GENQ_BIN,
    LiveServer,
    ServerFactory,
    cli_env,
    finished,
    free_port,
    serves,
    submit,
    wait_until,
)


# -- inputs after the function name, options before it -----------------------------------
def test_inputs_named_like_options_reach_the_function(make_server: ServerFactory) -> None:
    server = make_server(cli_app.app)
    done = genq("run", "--server", server.url, "fetch", "--url", "https://example.com/m",
                "--output", "m.gguf", "--server", "s1", "--retries", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "url=https://example.com/m output=m.gguf server=s1 retries=2"

    # The server from $GENQ_URL; -i name=value before or after the function name.
    done = genq("run", "-i", "url=https://a.example/x=1", "fetch", "-i", "retries=3",
                "--output=o", GENQ_URL=server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "url=https://a.example/x=1 output=o server=none retries=3"

    # --url before the function name is the deprecated spelling of --server.
    done = genq("run", "--url", server.url, "fetch", "--url", "u")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "url=u output=- server=none retries=0"
    assert "--url is deprecated: use --server" in done.stderr


def test_an_option_after_the_function_name_is_refused_naming_where_it_goes(
        make_server: ServerFactory) -> None:
    server = make_server(cli_app.app)
    late = genq("run", "--server", server.url, "fetch", "--url", "u", "--priority", "3")
    assert late.returncode == 2
    assert "--priority is not an input of fetch" in late.stderr
    assert "options go before the function name" in late.stderr
    short = genq("run", "--server", server.url, "fetch", "--url", "u", "-o", "out.bin")
    assert short.returncode == 2 and "-o after the function name" in short.stderr
    with httpx.Client(base_url=server.url) as http:  # nothing was submitted
        assert http.get("/api/jobs").json()["jobs"] == []


def test_the_old_url_after_the_function_name_says_where_the_server_goes(
        server: LiveServer) -> None:
    old = genq("run", "add", "--url", server.url, "--x", "1", GENQ_URL=server.url)
    assert old.returncode == 2
    assert "--url is not an input of add" in old.stderr
    assert "options go before the function name" in old.stderr
    # A word after the function name that is no input: not taken for an app to import.
    stray = genq("run", "--server", server.url, "add", "5")
    assert stray.returncode == 2 and "no module named 'add'" in stray.stderr
    assert "Traceback" not in stray.stderr


# -- a server that is not there, or not genq ----------------------------------------------
def test_a_server_that_never_answers_is_reported_unreachable() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    done = genq("run", "--server", nobody, "add", "--x", "1")
    assert done.returncode == 6
    assert "no answer (ConnectError)" in done.stderr
    assert "server unreachable" in done.stderr and nobody in done.stderr
    assert "Traceback" not in done.stderr


class _NotGenq(BaseHTTPRequestHandler):
    """Some other web server: 404 pages (``/api``), a 200 HTML page (``/ok``), or another
    web API's JSON 404 (``/json``, as FastAPI answers)."""

    def _answer(self) -> None:
        if self.path.startswith("/json/"):
            body = b'{"detail": "Not Found"}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/ok/"):
            body = b"<!doctype html><html><body>Welcome to nginx!</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)  # an HTML page

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def not_genq() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _NotGenq)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_server_that_is_not_genq_is_one_line(not_genq: str) -> None:
    for args in (["run", "--server", not_genq, "add", "--x", "1"],
                 ["watch", "--server", not_genq, "0123abcd"],
                 ["jobs", "--server", not_genq],
                 ["cancel", "--server", not_genq, "0123abcd"]):
        done = genq(*args)
        assert done.returncode == 6, (args, done.stderr)
        assert done.stderr.strip() == (f"{not_genq} answered 404 with text/html: not a "
                                       "genq server? (check --server)"), args
    # A 200 that is a web page, not genq's JSON.
    done = genq("jobs", "--server", f"{not_genq}/ok")
    assert done.returncode == 6
    assert done.stderr.strip() == (f"{not_genq}/ok answered 200 with text/html: not a "
                                   "genq server? (check --server)")
    done = genq("run", "--server", f"{not_genq}/json", "add", "--x", "1")
    assert done.returncode == 6
    assert done.stderr.strip() == (f"{not_genq}/json answered 404 with application/json: "
                                   "not a genq server? (check --server)")


# -- Ctrl-C -------------------------------------------------------------------------------
def _until_started(proc: subprocess.Popen[str]) -> str:
    """What ``proc`` printed on stderr up to its 'started' line."""
    assert proc.stderr is not None
    seen = ""
    for line in proc.stderr:
        seen += line
        if line.startswith("started (attempt"):
            return seen
    raise AssertionError(f"the CLI ended before the job started: {seen}")


def test_ctrl_c_stops_watch_and_leaves_the_job_running(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as http:
        job = submit(http, "slow", seconds=120)
        with subprocess.Popen([str(GENQ_BIN), "watch", job["id"], "--server", server.url],
                              env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as proc:
            try:
                _until_started(proc)
                proc.send_signal(signal.SIGINT)
                _, stderr = proc.communicate(timeout=60)
            finally:
                proc.kill()
        assert proc.returncode == 130, stderr
        assert (f"stopped watching; job {job['id']} keeps running (to cancel it: genq "
                f"cancel {job['id']})") in stderr
        assert "Traceback" not in stderr
        assert http.get(f"/api/jobs/{job['id']}").json()["status"] == "running"
        cancelled = genq("cancel", job["id"], "--server", server.url)
        assert cancelled.returncode == 0, cancelled.stderr
        assert finished(http, job["id"])["status"] == "cancelled"


def test_ctrl_c_on_run_cancels_its_job_and_says_so(server: LiveServer) -> None:
    with subprocess.Popen([str(GENQ_BIN), "run", "--server", server.url, "slow",
                           "--seconds", "120"], env=cli_env(), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            seen = _until_started(proc)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
    match = re.search(r"job ([0-9a-f]+)", seen)
    assert match is not None, seen
    job_id = match.group(1)
    assert proc.returncode == 130, stderr
    assert f"cancelled job {job_id}" in stderr
    with httpx.Client(base_url=server.url) as http:
        assert finished(http, job_id)["status"] == "cancelled"


# -- a server restart ---------------------------------------------------------------------
def _serve(port: int, db: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([str(GENQ_BIN), "serve", "apps.http_app:app", "--port",
                             str(port), "--db", str(db), "--log-level", "warning"],
                            env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def healthy() -> bool:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            return serves(httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5))
        except httpx.TransportError:
            return False

    wait_until(healthy, 30, what="genq serve to answer")
    return proc


def _tokens(text: str) -> list[int]:
    return [int(token[1:]) for token in text.split()]


def test_run_and_watch_ride_out_a_server_restart(tmp_path: Path) -> None:
    """SIGTERM stops the server gracefully (its worker gives the job 10 s, then puts it
    back in the queue), a new server starts on the same port and database, and both
    commands carry on from their last event: each token of the first run once, the
    restart notice, then every token of the second."""
    port, db = free_port(), tmp_path / "db.sqlite3"
    url = f"http://127.0.0.1:{port}"
    first = _serve(port, db)
    second: subprocess.Popen[str] | None = None
    popen: dict[str, Any] = dict(env=cli_env(), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = subprocess.Popen([str(GENQ_BIN), "run", "--server", url, "tokens", "--n", "60",
                            "--delay", "0.25"], **popen)
    watch: subprocess.Popen[str] | None = None
    try:
        with httpx.Client(base_url=url) as http:
            job = wait_until(lambda: http.get("/api/jobs").json()["jobs"], 30,
                             what="the job")[0]
            watch = subprocess.Popen([str(GENQ_BIN), "watch", job["id"], "--server", url],
                                     **popen)
        # Both follow the running job before the server stops.
        seen = {"run": _until_started(run), "watch": _until_started(watch)}
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
        second = _serve(port, db)
        outputs = {}
        for name, proc in (("run", run), ("watch", watch)):
            stdout, stderr = proc.communicate(timeout=120)
            outputs[name] = stdout, seen[name] + stderr
        for name, proc in (("run", run), ("watch", watch)):
            stdout, stderr = outputs[name]
            assert proc.returncode == 0, (name, stderr)
            assert "reconnecting…" in stderr and "reconnected" in stderr, (name, stderr)
            assert stderr.count("output so far discarded") == 1, (name, stderr)
            tokens = _tokens(stdout)
            lost = tokens[:len(tokens) - 60]
            assert lost == list(range(len(lost))) and 0 < len(lost) < 60, (name, stdout)
            assert tokens[len(lost):] == list(range(60)), (name, stdout)
        assert outputs["run"][0] == outputs["watch"][0]
    finally:
        for proc in (run, watch, first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()


# -- one process per SQLite store ---------------------------------------------------------
def test_a_second_process_on_a_sqlite_store_is_refused_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    port = free_port()
    with serving(port, "apps.http_app:app", "--port", str(port), "--db", str(db),
                 "--log-level", "warning") as served:
        expected = (f"store locked by pid {served.proc.pid}; stop it or use another --db")
        for args in (["serve", "apps.http_app:app", "--port", str(free_port())],
                     ["worker", "apps.http_app:app"],
                     ["run", "apps.http_app:app", "add", "--x", "1"]):
            done = genq(*args[:1], "--db", str(db), *args[1:], timeout=60)
            assert done.returncode == 8, (args, done.stderr)
            assert done.stderr.strip() == expected, args
        # The running server was not disturbed.
        job = submit(served.http, "add", x=2)
        assert finished(served.http, job["id"])["result"] == 2
